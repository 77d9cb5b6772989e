"""The embedded default data set: "parts", a 10-class 32×32 task generated from a seed.

Every image is a 4×4 grid of 8-pixel cells on a random background colour with pixel noise. Two
*key parts* fill two cells of one row or one column: 8×8 patches of the same texture. A *decoy*,
a third patch of that texture, sits in a cell that shares neither a row nor a column with either
key part; zero to two *distractors* in other cells are flat squares of a random colour. The class
is

    class = 2 · texture + relation

with ``texture`` one of five (horizontal stripes, vertical stripes, diagonal stripes of either
direction, a checkerboard, concentric rings; each with a random period of 3–5 px, phase and
colour) and ``relation`` 0 when the two key parts share a row, 1 when they share a column. The
distance between them, 1, 2 or 3 cells (8 to 24 px), is uniform and independent of the class.

The task has parts of different difficulty, which is what lets it grade architectures instead of
splitting them into "learns / stays at chance":

* the texture is local and high-contrast (three patches of it): any model with a
  nonlinearity picks it up within the first epochs, which alone is worth 50% (the five textures
  told apart, the relation guessed);
* the relation needs the model to find the aligned pair and relate two parts up to 24 px apart
  wherever they are. Global average pooling of local features cannot tell a row from a column,
  and the decoy defeats counting "textured cells per row or column": the model has to find
  which two of three patches are aligned, 8 to 24 px apart, so accuracy between 50% and 100%
  rises with how far and how well a model relates positions.

Version 1 (until 2026-11) had two low-contrast 6×6 stripe textures and five relation groups, so
nothing was learnable before the relation was: every model first sat at chance, and whether it
left chance within a proxy's budget was close to a lottery over training seeds (README, "The
embedded default", has the two side by side).

Classes are invariant under horizontal flips (a row stays a row, diagonal stripes of either
direction are one texture, the other textures are symmetric), so flipping is a valid augmentation;
crops are not (they cut parts off), so the data set's default is no crop. Every pattern has a
uniformly random phase and the distractors a random sign, so every pixel has the same expected
value in every class: a linear classifier on pixels stays near chance.

Generation is vectorised NumPy from ``numpy.random.Generator(PCG64([seed, stream]))``; the result
is cached as a ``.npz`` under ``$HVSEARCH_CACHE`` (default ``~/.cache/hvsearch``), written
atomically so that parallel trials can share it. Bump :data:`VERSION` whenever the generated
images change: it is part of the cache key.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

VERSION = 2
NUM_CLASSES = 10
IMAGE_SIZE = 32
GRID = 4
CELL = IMAGE_SIZE // GRID
PART = 8  # a part fills its cell: textures line up with every patch grid of stride 2-8
MAX_DISTRACTORS = 2
#: Share of images with a decoy: a third part of the key texture, aligned with neither key part.
#: Measured while designing v2: with decoys in half of the images most sampled architectures
#: reached 97–100% within 8 epochs (no spread left to rank on); with one in every image a plain
#: CNN and local mixers stop at the texture's 50% while global mixers go on.
DECOY_SHARE = 1.0
NOISE_STD = 0.04
#: Peak amplitude of a part's pattern (uniform in this range, times a TINT share per channel).
CONTRAST = (0.45, 0.6)
#: Range of each image's background colour (per channel) and of a part's colour share per channel.
BACKGROUND = (0.4, 0.6)
TINT = (0.8, 1.0)
TEST_SIZE = 1000  # the data set's own evaluation split (used when data.val_split is 0)
#: Per-channel pixel mean and std of the generated images (measured on 6000 images of seed 0).
MEAN = (0.5, 0.5, 0.5)
STD = (0.182, 0.182, 0.182)
TEXTURES = ("horizontal", "vertical", "diagonal", "checker", "rings")
RELATIONS = ("row", "column")
CLASSES = tuple(f"{texture}-{rel}" for texture in TEXTURES for rel in RELATIONS)


def key_cells(relation: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat cell indices of the two key parts and of the decoy. The key parts share a row
    (relation 0) or a column (1), a distance of 1 to GRID-1 cells apart drawn uniformly, the line
    and the position along it uniform; the decoy shares neither a row nor a column with either
    (uniform among those cells), so exactly one pair of the three is aligned."""
    n = len(relation)
    distance = rng.integers(1, GRID, size=n)
    line = rng.integers(0, GRID, size=n)
    first = np.floor(rng.random(n) * (GRID - distance)).astype(np.int64)
    swap = rng.random(n) < 0.5
    a = np.where(swap, first + distance, first)
    b = np.where(swap, first, first + distance)
    # decoy: another line, and a position along it that is neither a's nor b's (a random order
    # of the positions with a and b sorted last; the first is uniform among the others)
    other_line = (line + rng.integers(1, GRID, size=n)) % GRID
    taken = (np.arange(GRID)[None] == a[:, None]) | (np.arange(GRID)[None] == b[:, None])
    free = np.argsort(rng.random((n, GRID)) + taken, axis=1)[:, 0]
    row = relation == 0
    cell_a = np.where(row, line * GRID + a, a * GRID + line)
    cell_b = np.where(row, line * GRID + b, b * GRID + line)
    cell_c = np.where(row, other_line * GRID + free, free * GRID + other_line)
    return cell_a, cell_b, cell_c


def patterns(texture: np.ndarray, period: np.ndarray, phase: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """PART×PART patterns in [-1, 1], one per entry of ``texture`` (any shape S): returns S×PART×PART.
    ``period`` and ``direction`` (±1, the diagonal's) have shape S, ``phase`` S×2."""
    v, u = np.meshgrid(np.arange(PART), np.arange(PART), indexing="ij")  # row, column in the part
    c = (PART - 1) / 2
    radius = np.hypot(u - c, v - c)
    expand = (...,) + (None, None)
    w = (2 * np.pi / period)[expand]
    p0, p1 = phase[..., 0][expand], phase[..., 1][expand]
    stack = np.stack(np.broadcast_arrays(
        np.sin(w * v + p0),
        np.sin(w * u + p0),
        np.sin(w * (u + direction[expand] * v) / np.sqrt(2) + p0),
        np.sign(np.sin(w * u + p0) * np.sin(w * v + p1)),
        np.sin(w * radius + p0)))
    return np.take_along_axis(stack, texture[None, ..., None, None], axis=0)[0]


def generate(n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N×3×32×32) and labels (int64), exactly balanced when 10 divides n;
    ``stream`` picks an independent sequence for the same seed (0 = train, 1 = test)."""
    rng = np.random.Generator(np.random.PCG64([seed, stream]))
    labels = rng.permutation(np.arange(n) % NUM_CLASSES)
    texture, relation = labels // 2, labels % 2
    k = 3 + MAX_DISTRACTORS

    cells = np.empty((n, k), dtype=np.int64)
    cells[:, 0], cells[:, 1], cells[:, 2] = key_cells(relation, rng)
    # Distractor cells: the first free cells of a random order of the grid.
    order = rng.random((n, GRID * GRID))
    order[np.arange(n)[:, None], cells[:, :3]] = 2.0  # key cells sort last
    cells[:, 3:] = np.argsort(order, axis=1)[:, :MAX_DISTRACTORS]
    n_distract = rng.integers(0, MAX_DISTRACTORS + 1, size=n)
    present = np.ones((n, k), dtype=bool)
    present[:, 2] = rng.random(n) < DECOY_SHARE
    present[:, 3:] = np.arange(MAX_DISTRACTORS)[None, :] < n_distract[:, None]

    background = rng.uniform(*BACKGROUND, size=(n, 1, 1, 3))
    noise = rng.standard_normal(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    images = background + NOISE_STD * noise  # NHWC while parts are pasted
    keys = patterns(np.repeat(texture[:, None], 3, axis=1), rng.uniform(3.0, 5.0, size=(n, 3)),
                    rng.uniform(0, 2 * np.pi, size=(n, 3, 2)), rng.choice([-1, 1], size=(n, 3)))
    flat = np.broadcast_to(rng.uniform(-1, 1, size=(n, MAX_DISTRACTORS, 1, 1)), (n, MAX_DISTRACTORS, PART, PART))
    wave = np.concatenate([keys, flat], axis=1) * present[..., None, None]  # (n, k, PART, PART)
    amplitude = rng.uniform(*CONTRAST, size=(n, k, 1))
    colour = amplitude * rng.uniform(*TINT, size=(n, k, 3)) * rng.choice([-1, 1], size=(n, k, 3))
    offset = rng.integers(0, CELL - PART + 1, size=(n, k, 2))
    v, u = np.meshgrid(np.arange(PART), np.arange(PART), indexing="ij")
    top = (cells // GRID) * CELL + offset[..., 0]
    left = (cells % GRID) * CELL + offset[..., 1]
    rows = np.arange(n)[:, None, None]
    for j in range(k):  # parts sit in distinct cells, so one part per image per pass
        ys = top[:, j, None, None] + v
        xs = left[:, j, None, None] + u
        images[rows, ys, xs] += wave[:, j, :, :, None] * colour[:, j, None, None, :]
    images = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels.astype(np.int64)


def cache_dir() -> Path:
    """``$HVSEARCH_CACHE`` or ``~/.cache/hvsearch``."""
    env = os.environ.get("HVSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hvsearch"


def load(size: int, seed: int) -> dict[str, np.ndarray]:
    """The ``size`` training images and the fixed test split of the data set with this seed,
    from the cache or generated (then cached): keys ``train_x, train_y, test_x, test_y``."""
    path = cache_dir() / "synthetic" / f"parts-v{VERSION}-seed{seed}-n{size}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                return {key: f[key] for key in ("train_x", "train_y", "test_x", "test_y")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is regenerated below
    train_x, train_y = generate(size, seed, stream=0)
    test_x, test_y = generate(TEST_SIZE, seed, stream=1)
    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data
