"""Training and data configs: frozen, typed, documented defaults; no torch.

A search-space YAML embeds these as its ``train:`` and ``data:`` sections, and ``hvsearch train
--config`` reads the same two sections::

    train: {epochs: 10, resolution: 32, fraction: 0.5, batch_size: 128, lr: 2.0e-3}
    data:  {name: cifar10, root: ~/data/cifar10, val_split: 0.1}

``from_dict`` rejects unknown keys and wrong types with a :class:`~hvsearch.errors.SpecError`
naming the key path (``train.lr must be > 0, got -1``); ``to_dict`` gives the plain mapping back.
Rules that need the data or the hardware (does the root exist, is CUDA there) are checked when a
run starts, by :mod:`hvsearch.train.data` and :mod:`hvsearch.train.proxy`.

A relative ``data.root`` in a file means relative to that file's folder: whoever reads the file
anchors it there (:meth:`DataConfig.anchored`), so that Ray trials, which run in a folder of
their own, find the data.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hvsearch.arch.components import coerce
from hvsearch.arch.spec import TOTAL_STRIDE
from hvsearch.errors import SpecError
from hvsearch.values import is_number

#: The 28×28 grey-scale sets in IDX files (read by :mod:`hvsearch.train.idx`, which finds their
#: files without a root).
IDX_DATASETS = ("fashion_mnist", "mnist", "kmnist")
DATASETS = ("synthetic", "cifar10", "cifar100", "imagefolder", *IDX_DATASETS)
DEVICES = ("auto", "cpu", "cuda")
RESOLUTION_MULTIPLE = TOTAL_STRIDE  # every stage map of every backbone an integer size
#: What proxy training reports after every epoch (hvsearch.train.proxy), and a study's curves hold.
METRIC_KEYS = ("epoch", "train_loss", "val_top1", "val_top5", "images_per_s", "wall_time")


@dataclass(frozen=True)
class TrainConfig:
    """One proxy-training run. Defaults suit a 32-px proxy on CIFAR-sized data."""

    # -- schedule ---------------------------------------------------------------------------
    epochs: int = 10
    #: Optimizer steps per epoch at most (None = a full pass over the training subset).
    max_steps_per_epoch: int | None = None
    batch_size: int = 128
    #: Peak learning rate of AdamW (timm ``create_optimizer_v2``; no weight decay on norms/biases).
    lr: float = 2e-3
    weight_decay: float = 0.05
    #: Linear warm-up from ``warmup_lr`` towards ``lr``, in epochs (fractions allowed), over a cosine
    #: to ``min_lr`` that starts at step 0, as timm's ``train.py`` schedules it (``warmup_prefix``
    #: off): the warm-up ends on the cosine's value there, so with 1 warm-up epoch of 2 the rate
    #: peaks at 0.9 ``lr`` and then follows the cosine (0.5 ``lr`` half-way).
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    #: Clip the global gradient norm to this (0 = off).
    grad_clip: float = 5.0
    #: Seed of the weights, the batch order, the augmentations and drop-path.
    seed: int = 0

    # -- data seen by the model -------------------------------------------------------------
    #: Square input size; a multiple of 32 (the backbones' total stride).
    resolution: int = 32
    #: Class-balanced share of the training split used (nested: 0.25 ⊂ 0.5 for one data seed).
    fraction: float = 1.0
    #: Random-resized-crop area range; None = the data set's default (none for synthetic and the
    #: IDX sets, 0.35-1 for CIFAR, 0.08-1 for image folders).
    crop_scale: tuple[float, float] | None = None
    #: Horizontal-flip probability; None = the data set's default (0.5, but 0 for mnist and
    #: kmnist: a mirrored digit or character is another symbol).
    hflip: float | None = None
    #: Mixup / CutMix alpha (0 = off), through timm's ``Mixup`` with soft-target cross-entropy.
    mixup: float = 0.0
    cutmix: float = 0.0

    # -- regularisation ---------------------------------------------------------------------
    label_smoothing: float = 0.1
    #: Stochastic-depth rate; None = the architecture's own ``drop_path_rate``.
    drop_path: float | None = 0.0

    # -- hardware ---------------------------------------------------------------------------
    #: ``auto`` = CUDA when available, else CPU.
    device: str = "auto"
    #: bf16 autocast (CUDA only; ignored on CPU).
    amp: bool = True
    #: channels-last memory format (CUDA only).
    channels_last: bool = True
    #: ``torch.compile`` the model (a cold compile costs minutes on CPU).
    compile: bool = False
    #: DataLoader worker processes; None = 0 for in-memory sets, a few for image folders.
    workers: int | None = None

    def __post_init__(self) -> None:
        self.validate("train")

    def validate(self, path: str = "train") -> None:
        for key, high in LIMITS.items():
            value = getattr(self, key)
            if is_number(value) and value > high:
                raise SpecError(f"{path}.{key}", f"must be <= {high:g} (hvsearch's sanity bound)", value)
        _positive(self.epochs, f"{path}.epochs")
        if self.max_steps_per_epoch is not None:
            _positive(self.max_steps_per_epoch, f"{path}.max_steps_per_epoch")
        _positive(self.batch_size, f"{path}.batch_size")
        _positive(self.lr, f"{path}.lr")
        _at_least(self.weight_decay, 0, f"{path}.weight_decay")
        _at_least(self.warmup_epochs, 0, f"{path}.warmup_epochs")
        _at_least(self.warmup_lr, 0, f"{path}.warmup_lr")
        _at_least(self.min_lr, 0, f"{path}.min_lr")
        _at_least(self.grad_clip, 0, f"{path}.grad_clip")
        _positive(self.resolution, f"{path}.resolution")
        if self.resolution % RESOLUTION_MULTIPLE:
            raise SpecError(f"{path}.resolution", f"must be a multiple of {RESOLUTION_MULTIPLE} "
                            "(the backbones' total stride)", self.resolution)
        if not 0 < self.fraction <= 1:
            raise SpecError(f"{path}.fraction", "must be in (0, 1]", self.fraction)
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0 < lo <= hi <= 1:
                raise SpecError(f"{path}.crop_scale", "must be [low, high] with 0 < low <= high <= 1",
                                list(self.crop_scale))
        if self.hflip is not None and not 0 <= self.hflip <= 1:
            raise SpecError(f"{path}.hflip", "must be a probability in [0, 1]", self.hflip)
        _at_least(self.mixup, 0, f"{path}.mixup")
        _at_least(self.cutmix, 0, f"{path}.cutmix")
        if not 0 <= self.label_smoothing < 1:
            raise SpecError(f"{path}.label_smoothing", "must be in [0, 1)", self.label_smoothing)
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            raise SpecError(f"{path}.drop_path", "must be in [0, 1) (or null: the architecture's own)",
                            self.drop_path)
        _one_of(self.device, DEVICES, f"{path}.device")
        if self.workers is not None:
            _at_least(self.workers, 0, f"{path}.workers")

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or cutmix on)."""
        return self.mixup > 0 or self.cutmix > 0

    @classmethod
    def from_dict(cls, d: Any, path: str = "train") -> "TrainConfig":
        return _from_dict(cls, d, path)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how the validation split is made."""

    #: ``synthetic`` (embedded, no files), ``cifar10``, ``cifar100``, ``imagefolder``, or one of
    #: the IDX sets ``fashion_mnist``, ``mnist``, ``kmnist``.
    name: str = "synthetic"
    #: CIFAR: the ``cifar-10-batches-py`` / ``cifar-100-python`` folder or the folder holding it;
    #: image folder: the folder with ``train/<class>/*`` (and optionally ``val/<class>/*``); IDX
    #: sets: the folder with their four files (optional: ``$HVSEARCH_DATA/<name>`` and
    #: ``/usr/share/datasets/<name>`` are searched). Relative: to the file that sets it.
    root: str | None = None
    #: Share of the training images held out (class-balanced) to validate on. 0 = validate on
    #: the data set's own split (CIFAR and IDX test set, synthetic test set); a search should
    #: select on a held-out split, never on the test set. An image folder with a ``val/``
    #: folder validates on it, whatever this says.
    val_split: float = 0.1
    #: Seed of the held-out split, of the training subsets and of the synthetic images: fixed
    #: across a search's trials so every trial sees the same images.
    seed: int = 0
    #: Synthetic only: how many training images to generate (its test set has 1000).
    size: int = 6000
    #: Image folder only: the images are decoded to ``resolution / crop_pct`` pixels (short side,
    #: centre square), then cropped to ``resolution`` (centre for validation, random for training).
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        self.validate("data")

    def validate(self, path: str = "data") -> None:
        _one_of(self.name, DATASETS, f"{path}.name")
        if self.name not in ("synthetic", *IDX_DATASETS) and not self.root:
            raise SpecError(f"{path}.root", f"is required for the {self.name} data set "
                            "(the folder holding its files)", self.root)
        if not 0 <= self.val_split < 1:
            raise SpecError(f"{path}.val_split", "must be in [0, 1) (0 = the data set's own split)",
                            self.val_split)
        _positive(self.size, f"{path}.size")
        if self.size < 10:
            raise SpecError(f"{path}.size", "must be >= 10 (one image per class)", self.size)
        if not 0 < self.crop_pct <= 1:
            raise SpecError(f"{path}.crop_pct", "must be in (0, 1]", self.crop_pct)

    @classmethod
    def from_dict(cls, d: Any, path: str = "data") -> "DataConfig":
        return _from_dict(cls, d, path)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def replace(self, **changes: Any) -> "DataConfig":
        return dataclasses.replace(self, **changes)

    def anchored(self, folder: str | Path) -> "DataConfig":
        """A copy whose ``root`` is absolute: ``~`` expanded, a relative root taken relative to
        ``folder`` (the folder of the file that set it, or the current one for a command line)."""
        if not self.root:
            return self
        root = Path(self.root).expanduser()
        return self.replace(root=os.path.normpath(Path(folder).expanduser().absolute() / root))


# ---- parsing helpers ------------------------------------------------------------------------

def _from_dict(cls, d: Any, path: str):
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise SpecError(path, "must be a mapping of settings", d)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            raise SpecError(f"{path}.{key}", f"is not a setting (known: {', '.join(fields)})", value)
        kwargs[key] = coerce(value, hints[key], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except SpecError as e:  # __post_init__ validated under the default path; re-root it
        default = "train" if cls is TrainConfig else "data"
        if path != default and e.path.startswith(default + "."):
            raise SpecError(path + e.path[len(default):], e.rule, e.value) from None
        raise


def _to_dict(cfg) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


#: Upper bounds of the training settings: far above any real run, low enough that a slip (an
#: exponent too many) is an error at once instead of a run that allocates or loops for ever.
LIMITS = {"epochs": 100_000, "max_steps_per_epoch": 10**9, "batch_size": 65_536, "resolution": 8192,
          "lr": 10.0, "weight_decay": 100.0, "warmup_epochs": 100_000, "warmup_lr": 10.0, "min_lr": 10.0,
          "grad_clip": 1e6, "workers": 1024, "fraction": 1.0, "label_smoothing": 1.0, "mixup": 100.0,
          "cutmix": 100.0}


def _positive(value, path: str) -> None:
    if not value > 0:
        raise SpecError(path, "must be > 0", value)


def _at_least(value, low, path: str) -> None:
    if not value >= low:
        raise SpecError(path, f"must be >= {low}", value)


def _one_of(value, choices, path: str) -> None:
    if value not in choices:
        raise SpecError(path, f"must be one of {', '.join(choices)}", value)
