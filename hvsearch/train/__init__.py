"""Proxy training and its data: configs, data sets, batch transforms, the training loop.

The configs import no torch, and neither does importing this package: the search-space schema
validates ``train:`` and ``data:`` sections with ``hvsearch.train.config`` alone. The other names
load on first use, after :func:`hvsearch._compat.patch_torchvision` (so timm imports on a CPU-only
torch, in Ray workers too).
"""
from __future__ import annotations

import importlib

from hvsearch.train.config import METRIC_KEYS, DataConfig, TrainConfig

_LAZY = {
    "DataSplits": "hvsearch.train.data",
    "load_data": "hvsearch.train.data",
    "make_loaders": "hvsearch.train.data",
    "pixel_linear_probe": "hvsearch.train.probe",
    "TrainResult": "hvsearch.train.proxy",
    "train_proxy": "hvsearch.train.proxy",
}

__all__ = ["DataConfig", "METRIC_KEYS", "TrainConfig", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from hvsearch._compat import patch_torchvision

    patch_torchvision()
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
