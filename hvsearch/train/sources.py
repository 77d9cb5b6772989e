"""What a data set is before any image is read: its class and channel counts, where its files are,
and whether they are there. No torch, so the space schema and the CLI's checks can use it.

:func:`data_shape` is the one home of "how many classes, how many channels": the space's
``arch`` defaults, ``scale --grid`` and ``hvsearch train`` take them from it, and
:func:`hvsearch.train.data.load_data` yields data of that shape. :func:`check_data` finds the
files a run will read without reading them, so that a search refuses to start (rather than every
trial failing) when they are missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hvsearch.errors import DataError
from hvsearch.train import idx, synthetic
from hvsearch.train.config import DataConfig

RGB = 3  # synthetic, CIFAR and decoded image files; the IDX sets are grey-scale (1)


@dataclass(frozen=True)
class CifarFormat:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR = {
    "cifar10": CifarFormat("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           "batches.meta", "labels", "label_names", 10,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": CifarFormat("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names",
                            100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def data_shape(cfg: DataConfig) -> tuple[int, int]:
    """``(num_classes, in_chans)`` of the data ``cfg`` names. Fixed for the built-in sets; an
    image folder's classes are the class folders of ``ROOT/train`` (listed, not read)."""
    if cfg.name == "synthetic":
        return synthetic.NUM_CLASSES, RGB
    if cfg.name in idx.IDX:
        return len(idx.IDX[cfg.name].classes), 1
    if cfg.name in CIFAR:
        return CIFAR[cfg.name].num_classes, RGB
    return len(class_folders(image_folder_train(cfg.root))), RGB


def check_data(cfg: DataConfig) -> None:
    """Raise :class:`DataError` (naming the path) unless the files a run of ``cfg`` reads are
    there: the IDX files found, CIFAR's first training batch present, an image folder's
    ``train/`` holding class folders. Reads no image."""
    if cfg.name in idx.IDX:
        idx.find_files(cfg.name, cfg.root)
    elif cfg.name in CIFAR:
        cifar_folder(cfg.root, cfg.name)
    elif cfg.name == "imagefolder":
        class_folders(image_folder_train(cfg.root))


def cifar_folder(root: str | Path, name: str) -> Path:
    """The folder holding ``name``'s batch files: ``root`` or the extracted archive's folder in it."""
    fmt = CIFAR[name]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{name} root {root} does not exist or is not a directory")
    folder = root / fmt.folder if (root / fmt.folder).is_dir() else root
    if not (folder / fmt.train_files[0]).exists():
        raise DataError(f"no {name} files under {root}: expected {fmt.train_files[0]} in {root} or in "
                        f"{root / fmt.folder} (the extracted python version of the data set)")
    return folder


def image_folder_train(root: str | Path) -> Path:
    """``ROOT/train`` of an image folder, after checking that both exist."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder root {root} does not exist or is not a directory")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root} has no train/ folder (expected the ImageNet layout: "
                        "train/<class>/*.jpg|png, optionally val/<class>/...)")
    return train_dir


def class_folders(split_dir: Path) -> list[str]:
    """The class folders of an image folder's split (sorted; hidden ones skipped); at least one."""
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{split_dir} has no class folders (expected {split_dir}/<class>/*.jpg)")
    return folders
