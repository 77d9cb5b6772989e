"""Data for proxy training, all offline: the embedded synthetic set, CIFAR-10/100 in their python
pickle format, Fashion-MNIST, MNIST and KMNIST in their IDX files, and ImageNet-style image
folders decoded with Pillow.

Every data set comes out as datasets of ``(uint8 CHW tensor, int label)`` (C = 3, or 1 for the
grey-scale IDX sets: :attr:`DataSplits.in_chans`); random-resized crop, flip, normalisation and
mixup then run on whole batches on the training device (:mod:`hvsearch.train.augment`). The
validation split is held out of the training images, class-balanced, from ``data.seed``; the
training subset (``train.fraction``) is class-balanced and nested, from the same seed, so all
trials of a search see the same images.

Layouts read:

* ``cifar10``: ``data_batch_1`` … ``data_batch_5``, ``test_batch``, ``batches.meta`` in ``root`` or
  in ``root/cifar-10-batches-py`` (the "python version" archive, extracted).
* ``cifar100``: ``train``, ``test``, ``meta`` in ``root`` or ``root/cifar-100-python``; fine labels.
* ``fashion_mnist``, ``mnist``, ``kmnist``: the four IDX files, see :mod:`hvsearch.train.idx`
  (found without a root too); 28×28 padded to 32×32.
* ``imagefolder``: ``root/train/<class>/**/*.{jpg,jpeg,png,bmp,webp,...}`` and optionally
  ``root/val/<class>/...`` (its classes must be among train's); when ``val/`` is there it is the
  validation split.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from hvsearch.errors import DataError
from hvsearch.train import idx, synthetic
from hvsearch.train.config import DataConfig
from hvsearch.train.sources import CIFAR, RGB, CifarFormat, cifar_folder, class_folders, image_folder_train

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    """The training subset and the validation split, and how to present them to a model.

    ``image_size`` is the side of the square uint8 images ``train`` yields (32 for the in-memory
    sets; the decode size for image folders); ``val`` yields images of ``val_size``; both have
    ``in_chans`` channels, and ``mean``/``std`` one value per channel. The crop and flip defaults
    apply where the training config leaves them unset. ``notes`` are things a user should know
    about how the splits were made (e.g. a setting that was ignored).
    """

    train: Dataset
    val: Dataset
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    val_size: int
    crop_scale: tuple[float, float] | None
    hflip: float
    in_memory: bool
    in_chans: int
    notes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---- datasets -------------------------------------------------------------------------------

class TensorImages(Dataset):
    """Images already in memory as one uint8 N×C×H×W tensor (synthetic, CIFAR, IDX)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray):
        self.images, self.labels = images, labels
        self.indices = torch.from_numpy(np.asarray(indices, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        return self.images[j], int(self.labels[j])


class FolderImages(Dataset):
    """Image files decoded with Pillow: the short side resized to ``short``, a centre square of
    ``crop`` kept. JPEGs are decoded at reduced size when that is enough (Pillow's draft mode)."""

    def __init__(self, samples: Sequence[tuple[str, int]], short: int, crop: int):
        self.samples, self.short, self.crop = list(samples), short, crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return decode_image(path, self.short, self.crop), label


def decode_image(path: str | Path, short: int, crop: int) -> torch.Tensor:
    """A uint8 3×crop×crop tensor: short side resized to ``short`` (bicubic), centre crop."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (short, short))
            im = im.convert("RGB")
            w, h = im.size
            scale = short / min(w, h)
            im = im.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BICUBIC)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None
    w, h = im.size
    left, top = (w - crop) // 2, (h - crop) // 2
    im = im.crop((left, top, left + crop, top + crop))
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


# ---- loading each data set ------------------------------------------------------------------

def load_data(cfg: DataConfig, resolution: int, fraction: float = 1.0) -> DataSplits:
    """The training subset (``fraction`` of the training split) and the validation split."""
    splits = _load_folder(cfg, resolution, fraction) if cfg.name == "imagefolder" else _load_arrays(cfg, fraction)
    if len(splits.val) == 0:
        where = cfg.root or f"the {cfg.name} set"
        raise DataError(f"the validation split of {where} is empty (a class needs two or more training "
                        "images to give one to validation); add images, or set data.val_split to 0 to "
                        "validate on the data set's own split")
    return splits


#: The arrays of the last in-memory data set this process read, under the key that identifies
#: them (:func:`_arrays_key`): a Ray worker re-used from trial to trial (``reuse_actors``) reads
#: the files once instead of at every trial (Fashion-MNIST's four ``.gz`` files: 0.31 s of each
#: trial's load, measured). One entry, so a process holds at most one data set beyond what its
#: trial uses; the arrays are only ever indexed (copies), never written.
_ARRAYS: dict[tuple, tuple[dict[str, np.ndarray], tuple[str, ...]]] = {}


def _file_stamp(path: Path) -> tuple:
    """Path, inode, size and times of ``path``; the path alone when it is missing (its reader
    then says so)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (str(path),)
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _arrays_key(cfg: DataConfig) -> tuple:
    """What identifies the arrays ``cfg`` reads: for files, each file's resolved path, inode,
    size and times (a file replaced, or written again, is read again)."""
    if cfg.name == "synthetic":
        return ("synthetic", cfg.size, cfg.seed, synthetic.VERSION)
    if cfg.name in idx.IDX:
        files = idx.find_files(cfg.name, cfg.root)
        return (cfg.name, *sorted(_file_stamp(f) for f in files.values()))
    fmt = CIFAR[cfg.name]
    folder = cifar_folder(cfg.root, cfg.name)
    names = [*fmt.train_files, *fmt.test_files, fmt.meta_file]
    return (cfg.name, *(_file_stamp(folder / f) for f in names))


def _read_arrays(cfg: DataConfig) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """``train_x, train_y, test_x, test_y`` and the class names, from this process's cache when
    the same files were read before."""
    key = _arrays_key(cfg)
    if key in _ARRAYS:
        return _ARRAYS[key]
    if cfg.name == "synthetic":
        arrays, classes = synthetic.load(cfg.size, cfg.seed), synthetic.CLASSES
    elif cfg.name in idx.IDX:
        arrays, classes = idx.read_set(cfg.name, cfg.root), idx.IDX[cfg.name].classes
    else:
        arrays, classes = read_cifar(cfg.root, cfg.name)
    _ARRAYS.clear()
    _ARRAYS[key] = arrays, tuple(classes)
    return _ARRAYS[key]


def _load_arrays(cfg: DataConfig, fraction: float) -> DataSplits:
    arrays, classes = _read_arrays(cfg)
    if cfg.name == "synthetic":
        mean, std = synthetic.MEAN, synthetic.STD
        # Crops cut parts off and change the class; flips keep every class (see synthetic.py).
        crop_scale, hflip = None, 0.5
    elif cfg.name in idx.IDX:
        fmt = idx.IDX[cfg.name]
        # 28 px of object in 32: a random crop would cut into it; flips: see idx.IDX.
        mean, std, crop_scale, hflip = fmt.mean, fmt.std, None, fmt.hflip
    else:
        fmt = CIFAR[cfg.name]
        mean, std, crop_scale, hflip = fmt.mean, fmt.std, (0.35, 1.0), 0.5
    train_x = torch.from_numpy(arrays["train_x"])
    train_y = torch.from_numpy(arrays["train_y"])
    train_idx, val_idx = split_indices(arrays["train_y"], cfg.val_split, fraction, cfg.seed)
    train = TensorImages(train_x, train_y, train_idx)
    if cfg.val_split > 0:
        val = TensorImages(train_x, train_y, val_idx)
    else:
        test_y = arrays["test_y"]
        val = TensorImages(torch.from_numpy(arrays["test_x"]), torch.from_numpy(test_y), np.arange(len(test_y)))
    size = train_x.shape[-1]
    return DataSplits(train=train, val=val, classes=tuple(classes), mean=mean, std=std, image_size=size,
                      val_size=size, crop_scale=crop_scale, hflip=hflip, in_memory=True,
                      in_chans=train_x.shape[1])


def _load_folder(cfg: DataConfig, resolution: int, fraction: float) -> DataSplits:
    train_dir = image_folder_train(cfg.root)
    root, val_dir = train_dir.parent, train_dir.parent / "val"
    classes, samples = scan_image_folder(train_dir)
    labels = np.array([label for _, label in samples])
    notes = ()
    if val_dir.is_dir():
        train_idx, _ = split_indices(labels, 0.0, fraction, cfg.seed)
        _, val_samples = scan_image_folder(val_dir, classes)
        if cfg.val_split > 0:
            notes = (f"validating on {val_dir} ({len(val_samples)} images); data.val_split "
                     f"{cfg.val_split:g} is ignored",)
    elif cfg.val_split > 0:
        train_idx, val_idx = split_indices(labels, cfg.val_split, fraction, cfg.seed)
        val_samples = [samples[i] for i in val_idx]
    else:
        raise DataError(f"{root} has no val/ folder; set data.val_split > 0 to hold out part of train/")
    load = round(resolution / cfg.crop_pct)
    return DataSplits(
        train=FolderImages([samples[i] for i in train_idx], short=load, crop=load),
        val=FolderImages(val_samples, short=load, crop=resolution),
        classes=tuple(classes), mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=load,
        val_size=resolution, crop_scale=(0.08, 1.0), hflip=0.5, in_memory=False, in_chans=RGB, notes=notes)


def scan_image_folder(split_dir: Path, classes: Sequence[str] | None = None
                      ) -> tuple[list[str], list[tuple[str, int]]]:
    """Class folders of ``split_dir`` (sorted) and every image file under each (recursively).

    With ``classes`` given (a validation folder), every class folder must be one of them.
    """
    folders = class_folders(split_dir)
    if classes is None:
        classes = folders
    else:
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise DataError(f"{split_dir / unknown[0]} is not a class of the training folder "
                            f"({len(classes)} classes)")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in folders:
        found = []
        for dirpath, dirnames, filenames in os.walk(split_dir / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
        if not found:
            raise DataError(f"class folder {split_dir / name} has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, index[name]) for path in found]
    return list(classes), samples


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts, lists, numpy arrays) and nothing that can run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy >= 2 renamed it; skip the deprecation shim
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path} is not a CIFAR python batch file (cannot unpickle it: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch file (holds a {type(obj).__name__}, not a dict)")
    return obj


def _read_batch(path: Path, fmt: CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or fmt.label_key not in d:
        raise DataError(f"{path} is not a {fmt.folder} batch: it lacks the 'data' and "
                        f"'{fmt.label_key}' entries (keys: {', '.join(map(str, d))})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[fmt.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 N×3072 (32×32 RGB rows), "
                        f"got {data.dtype} {'×'.join(map(str, data.shape))}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise DataError(f"{path}: labels must be in [0, {fmt.num_classes}), got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar(root: str | Path, name: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """CIFAR-10/100 train and test arrays (``train_x, train_y, test_x, test_y``) and class names."""
    fmt = CIFAR[name]
    folder = cifar_folder(root, name)
    out = {}
    for split, files in (("train", fmt.train_files), ("test", fmt.test_files)):
        parts = [_read_batch(folder / f, fmt) for f in files]
        out[f"{split}_x"] = np.concatenate([p[0] for p in parts])
        out[f"{split}_y"] = np.concatenate([p[1] for p in parts])
    classes = [str(i) for i in range(fmt.num_classes)]
    if (folder / fmt.meta_file).exists():
        names = _unpickle(folder / fmt.meta_file).get(fmt.names_key)
        if isinstance(names, list) and len(names) == fmt.num_classes:
            classes = [str(n) for n in names]
    return out, classes


# ---- splits and subsets ---------------------------------------------------------------------

def split_indices(labels: np.ndarray, val_split: float, fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced, deterministic (training subset, held-out validation) indices.

    Each class's images are put in one random order drawn from ``seed``: the first
    ``round(val_split · n)`` are held out (at least one when ``val_split`` > 0 and the class has
    two or more), the first ``ceil(fraction · rest)`` of the rest are trained on. The order does
    not depend on ``fraction``, so smaller subsets are contained in larger ones.
    """
    labels = np.asarray(labels)
    rng = np.random.Generator(np.random.PCG64([seed, 0x5B17]))
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(val_split * len(idx))
        if val_split > 0 and n_val == 0 and len(idx) > 1:
            n_val = 1
        rest = idx[n_val:]
        val.append(idx[:n_val])
        train.append(rest[:max(1, math.ceil(fraction * len(rest)))])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ---- loaders --------------------------------------------------------------------------------

def derive_seed(*keys: int) -> int:
    """A 32-bit seed from a tuple of integers (e.g. run seed, epoch, purpose)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class EpochSampler(Sampler[int]):
    """A new random order every epoch, drawn from (seed, epoch) alone, so a resumed run sees the
    same batches as an uninterrupted one. Call :meth:`set_epoch` before iterating."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loaders(splits: DataSplits, batch_size: int, workers: int | None, device: torch.device,
                 seed: int) -> tuple[DataLoader, DataLoader, EpochSampler]:
    """Training loader (shuffled by an :class:`EpochSampler`, full batches only) and validation
    loader. ``workers=None``: none for in-memory sets (nothing to decode), else up to 8."""
    if workers is None:
        workers = 0 if splits.in_memory else min(8, max(1, _cpu_count() - 1))
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    sampler = EpochSampler(len(splits.train), seed)
    # Each loader draws its workers' base seed from a generator of its own: from torch's global
    # one it would take a number whenever an iterator is made, which with persistent workers is
    # at the first epoch only (and at the epoch a run resumes at), shifting drop-path's and
    # dropout's masks (seed_epoch) between a resumed run and an uninterrupted one.
    def own(stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(seed, 0, stream))

    train = DataLoader(splits.train, batch_size=batch_size, sampler=sampler, drop_last=True, generator=own(5),
                       **common)
    val = DataLoader(splits.val, batch_size=batch_size, shuffle=False, generator=own(6), **common)
    return train, val, sampler


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def iterate(loader: DataLoader) -> Iterator:
    """Iterate ``loader``; a DataError raised in a worker process comes back as its own one-line
    message rather than wrapped in the worker's traceback."""
    try:
        yield from loader
    except DataError as e:
        last = str(e).strip().splitlines()[-1]
        prefix = f"{DataError.__module__}.{DataError.__name__}: "
        if last.startswith(prefix):
            raise DataError(last[len(prefix):]) from None
        raise
