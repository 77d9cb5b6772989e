"""The 28×28 grey-scale IDX data sets, Fashion-MNIST, MNIST and KMNIST: finding their four files
and reading them with NumPy (no torch).

Files read, each raw or gzip-compressed (``.gz``)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

in ``data.root`` itself or in torchvision's layout under it (``ROOT/FashionMNIST/raw/``,
``ROOT/MNIST/raw/``, ``ROOT/KMNIST/raw/``). Without ``data.root`` the data set is looked for in
``$HVSEARCH_DATA/<name>``, then in each of :data:`SYSTEM_DATA_DIRS` (``/usr/share/datasets/<name>``,
where Debian's ``dataset-fashion-mnist`` puts it), each under both spellings
(``fashion_mnist``, ``fashion-mnist``).

Why not torchvision's ``datasets.FashionMNIST`` (0.28): it reads only ``ROOT/FashionMNIST/raw/``
with the files already decompressed (``_check_exists`` looks for the names without ``.gz`` and
``read_sn3_pascalvincent_tensor`` opens them with a plain ``open``), so Debian's flat folder of
``.gz`` files is "Dataset not found" (a message without the path); and it checks a header with bare
``assert`` statements and a truncated file not at all (``strict=False``: the final ``view`` fails
with a shape error), and never checks the labels' range. Here every broken file is one
:class:`~hvsearch.errors.DataError` naming the file and the rule it breaks.

Images are zero-padded by 2 pixels on every side at load, to 32×32, and kept as one channel:
``N×1×32×32`` uint8, so the backbones' total stride of 32 divides them.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvsearch.errors import DataError

#: Folders holding data sets installed system-wide (``<folder>/<name>``), searched after
#: ``$HVSEARCH_DATA``.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
DATA_ENV = "HVSEARCH_DATA"
#: The four files, by role: (split, kind) -> file name without ``.gz``.
FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
         ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}
#: IDX magic numbers: 0x00, 0x00, element type 0x08 (unsigned byte), number of dimensions.
MAGIC = {"images": 0x00000803, "labels": 0x00000801}
SIDE = 28
PAD = 2  # 28 + 2·2 = 32, a multiple of the total stride
NUM_CLASSES = 10


@dataclass(frozen=True)
class IdxFormat:
    """One IDX data set. ``mean``/``std`` are of the *padded* 32×32 training images (the zero
    border lowers both), per channel on the 0–1 scale."""

    torchvision: str  # torchvision's class name: its files are in ROOT/<torchvision>/raw/
    classes: tuple[str, ...]
    mean: tuple[float]
    std: tuple[float]
    hflip: float
    get: str  # how to get the files, for the not-found message


# Fashion-MNIST: measured on the padded training images of the real files (0.2860 / 0.3530
# unpadded, as usually quoted). MNIST and KMNIST: computed the same way from their usual unpadded
# values, MNIST 0.1307 / 0.3081 (PyTorch's MNIST example) and KMNIST 0.1918 / 0.3483 (the values
# KMNIST training code commonly uses), not measured here: padding keeps 784 of 1024 pixels, so
# mean' = r·mean and std' = sqrt(r·(std² + mean²) − mean'²) with r = 784/1024; on Fashion-MNIST
# that formula reproduces the measured padded values to 4 digits.
IDX = {
    "fashion_mnist": IdxFormat(
        "FashionMNIST", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"), (0.2190,), (0.3318,),
        hflip=0.5,  # clothes stay what they are when mirrored
        get="apt-get install dataset-fashion-mnist (Debian), or download the four IDX files into "
            f"${DATA_ENV}/fashion_mnist"),
    "mnist": IdxFormat(
        "MNIST", tuple(str(d) for d in range(10)), (0.1001,), (0.2752,),
        hflip=0.0,  # a mirrored digit is another symbol (or none)
        get=f"download the four IDX files of MNIST into ${DATA_ENV}/mnist"),
    "kmnist": IdxFormat(
        "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), (0.1468,), (0.3154,),
        hflip=0.0,  # so is a mirrored character
        get=f"download the four IDX files of Kuzushiji-MNIST into ${DATA_ENV}/kmnist"),
}


# ---- finding the files ----------------------------------------------------------------------

def candidate_roots(name: str, root: str | Path | None) -> list[Path]:
    """Where ``name`` is looked for: ``root`` alone when given, else ``$HVSEARCH_DATA/<name>``
    and ``<system folder>/<name>``, each also with ``-`` for ``_``."""
    if root:
        return [Path(root).expanduser()]
    bases = [Path(os.environ[DATA_ENV]).expanduser()] if os.environ.get(DATA_ENV) else []
    bases += list(SYSTEM_DATA_DIRS)
    spellings = dict.fromkeys((name, name.replace("_", "-")))
    return [base / s for base in bases for s in spellings]


def find_files(name: str, root: str | Path | None = None) -> dict[tuple[str, str], Path]:
    """The four files of ``name`` (raw preferred to ``.gz`` when a folder has both), from the
    first folder that holds all four; a :class:`DataError` naming every folder looked at if none."""
    fmt = IDX[name]
    looked, partial = [], []
    for candidate in candidate_roots(name, root):
        for folder in (candidate, candidate / fmt.torchvision / "raw"):
            looked.append(str(folder))
            found = {role: _existing(folder, stem) for role, stem in FILES.items()}
            if all(found.values()):
                return found
            if any(found.values()):
                missing = [FILES[role] for role, path in found.items() if path is None]
                partial.append(f"{folder} lacks {', '.join(missing)}")
    expected = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
    msg = f"{name} not found: looked in {', '.join(looked)} for {expected}"
    if partial:
        msg += f" ({'; '.join(partial)})"
    where = "" if root else " (or set data.root to their folder)"
    raise DataError(f"{msg}; to get it: {fmt.get}{where}")


def _existing(folder: Path, stem: str) -> Path | None:
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


# ---- reading --------------------------------------------------------------------------------

def read_idx(path: Path, kind: str) -> np.ndarray:
    """The uint8 array of one IDX file (``kind`` ``images``: N×28×28, ``labels``: N), after
    checking its magic number, dimensions and length."""
    data = _read_bytes(path)
    ndim = MAGIC[kind] & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise DataError(f"{path}: corrupt IDX header: the file has {len(data)} bytes, fewer than the "
                        f"{header}-byte header of an IDX {kind} file")
    magic = int.from_bytes(data[:4], "big")
    if magic != MAGIC[kind]:
        raise DataError(f"{path}: corrupt IDX header: magic number 0x{magic:08x}, expected 0x{MAGIC[kind]:08x} "
                        f"(unsigned bytes in {ndim} dimension{'s' if ndim > 1 else ''}, IDX {kind})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if kind == "images" and dims[1:] != (SIDE, SIDE):
        raise DataError(f"{path}: images must be N×{SIDE}×{SIDE}, the header says {'×'.join(map(str, dims))}")
    need, have = int(np.prod(dims, dtype=np.int64)), len(data) - header
    if have != need:
        what = "truncated file" if have < need else "trailing bytes"
        raise DataError(f"{path}: {what}: the header's {'×'.join(map(str, dims))} needs {need} data bytes, "
                        f"the file has {have}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: bad gzip file ({e}); download it again") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images padded to N×1×32×32 and labels (int64) of one split, after checking that the
    counts agree and every label is a class."""
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}")
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: labels must be in [0, {NUM_CLASSES}), got {labels.min()}..{labels.max()}")
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD)))[:, None]
    return padded, labels.astype(np.int64)


def read_set(name: str, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """``train_x, train_y, test_x, test_y`` of IDX data set ``name`` (see the module docstring)."""
    files = find_files(name, root)
    out = {}
    for split in ("train", "test"):
        out[f"{split}_x"], out[f"{split}_y"] = read_split(files[(split, "images")], files[(split, "labels")])
    return out
