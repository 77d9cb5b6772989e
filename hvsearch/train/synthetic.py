"""The embedded default data set: "parts", a 10-class 32×32 task generated from a seed.

Every image is a 4×4 grid of 8-pixel cells on a random background colour with pixel noise. Two
*key parts* sit in two cells: 6×6 patches of stripes, both horizontal or both vertical. Zero to
two *distractor parts* in other cells carry diagonal stripes. Every part has a random period
(3–5 px), phase, colour, contrast and offset inside its cell. The class is

    class = 2 · relation + (0 if the key parts' stripes are horizontal else 1)

where ``relation`` is the grid offset (|Δrow|, |Δcol|) between the two key parts, in five groups:

    0 same row (0, 1–3)      1 same column (1–3, 0)      2 diagonal (1, 1) (2, 2) (3, 3)
    3 knight (1, 2) (2, 1)   4 far (1, 3) (3, 1) (2, 3) (3, 2)

So a model must (1) recognise a local texture, stripe orientation, which takes a nonlinearity
since the phase is random, (2) tell the key parts from the distractors by that texture, and (3)
relate two parts up to 24 px apart, wherever they are. Adjacent pairs can be read by local
filters; far pairs need a global reach, so mixers with local, shifted and global reach learn it at
different speeds. Classes are invariant under horizontal and vertical flips (flips keep every
relation group and stripe orientation), so flipping is a valid augmentation; crops are not (they
cut parts off), so the data set's default is no crop.

Each stripe pattern has a uniformly random phase, so every pixel has the same expected value in
every class: class-conditional pixel means are identical and a linear classifier on pixels can
only exploit second-order differences and noise. See the README for the measured numbers.

Generation is vectorised NumPy from ``numpy.random.Generator(PCG64([seed, stream]))``; the result
is cached as a ``.npz`` under ``$HVSEARCH_CACHE`` (default ``~/.cache/hvsearch``), written
atomically so that parallel trials can share it. Bump :data:`VERSION` whenever the generated
images change.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

VERSION = 1
NUM_CLASSES = 10
IMAGE_SIZE = 32
GRID = 4
CELL = IMAGE_SIZE // GRID
PART = 6
MAX_DISTRACTORS = 2
NOISE_STD = 0.04
TEST_SIZE = 1000  # the data set's own evaluation split (used when data.val_split is 0)
MEAN = (0.5, 0.5, 0.5)
STD = (0.2, 0.2, 0.2)
CLASSES = tuple(f"{rel}-{stripes}" for rel in ("row", "column", "diagonal", "knight", "far")
                for stripes in ("horizontal", "vertical"))


def relation(dr: int, dc: int) -> int:
    """The relation group (0–4) of two distinct cells ``dr`` rows and ``dc`` columns apart."""
    dr, dc = abs(dr), abs(dc)
    if dr == 0:
        return 0
    if dc == 0:
        return 1
    if dr == dc:
        return 2
    if {dr, dc} == {1, 2}:
        return 3
    return 4


def _pairs_by_relation() -> list[np.ndarray]:
    """For each relation, every ordered pair of distinct cells (as flat cell indices) in it."""
    out: list[list[tuple[int, int]]] = [[] for _ in range(5)]
    for a in range(GRID * GRID):
        for b in range(GRID * GRID):
            if a != b:
                out[relation(a // GRID - b // GRID, a % GRID - b % GRID)].append((a, b))
    return [np.array(p) for p in out]


def generate(n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N×3×32×32) and labels (int64), exactly balanced when 10 divides n;
    ``stream`` picks an independent sequence for the same seed (0 = train, 1 = test)."""
    rng = np.random.Generator(np.random.PCG64([seed, stream]))
    labels = rng.permutation(np.arange(n) % NUM_CLASSES)
    rel = labels // 2

    # Key-part cells: a uniformly random pair among those with the class's relation.
    pairs = _pairs_by_relation()
    cells = np.empty((n, 2 + MAX_DISTRACTORS), dtype=np.int64)
    for r, table in enumerate(pairs):
        idx = np.flatnonzero(rel == r)
        cells[idx, :2] = table[rng.integers(0, len(table), size=len(idx))]
    # Distractor cells: the first free cells of a random order of the grid.
    order = rng.random((n, GRID * GRID))
    order[np.arange(n)[:, None], cells[:, :2]] = 2.0  # key cells sort last
    cells[:, 2:] = np.argsort(order, axis=1)[:, :MAX_DISTRACTORS]
    n_distract = rng.integers(0, MAX_DISTRACTORS + 1, size=n)

    # Textures: 0 = horizontal, 1 = vertical stripes (key parts), 2 and 3 = the two diagonals.
    texture = np.empty((n, 2 + MAX_DISTRACTORS), dtype=np.int64)
    texture[:, 0] = texture[:, 1] = labels % 2
    texture[:, 2:] = rng.integers(2, 4, size=(n, MAX_DISTRACTORS))
    present = np.ones((n, 2 + MAX_DISTRACTORS), dtype=bool)
    present[:, 2:] = np.arange(MAX_DISTRACTORS)[None, :] < n_distract[:, None]

    k = 2 + MAX_DISTRACTORS
    background = rng.uniform(0.3, 0.7, size=(n, 1, 1, 3))
    noise = rng.standard_normal(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    images = background + NOISE_STD * noise  # NHWC while parts are pasted
    period = rng.uniform(3.0, 5.0, size=(n, k, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, k, 1, 1))
    contrast = rng.uniform(0.15, 0.28, size=(n, k, 1))
    colour = contrast * rng.uniform(0.4, 1.0, size=(n, k, 3))
    offset = rng.integers(0, CELL - PART + 1, size=(n, k, 2))
    v, u = np.meshgrid(np.arange(PART), np.arange(PART), indexing="ij")  # row, column in the part
    diagonal = np.where(texture[..., None, None] == 2, u + v, u - v) / np.sqrt(2)
    coord = np.where(texture[..., None, None] == 0, v, np.where(texture[..., None, None] == 1, u, diagonal))
    wave = np.sin(2 * np.pi * coord / period + phase) * present[..., None, None]  # (n, k, PART, PART)
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
