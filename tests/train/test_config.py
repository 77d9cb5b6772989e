"""TrainConfig / DataConfig: defaults, round trips, and errors that name the key path."""
import subprocess
import sys

import pytest

from hvsearch.errors import SpecError
from hvsearch.train.config import DataConfig, TrainConfig


def test_defaults_round_trip():
    for cls in (TrainConfig, DataConfig):
        cfg = cls()
        assert cls.from_dict(cfg.to_dict()) == cfg
    t = TrainConfig.from_dict({"crop_scale": [0.2, 1.0], "drop_path": None, "lr": 1})
    assert t.crop_scale == (0.2, 1.0) and t.drop_path is None and t.lr == 1.0
    assert t.to_dict()["crop_scale"] == [0.2, 1.0]
    assert TrainConfig.from_dict(None) == TrainConfig()


@pytest.mark.parametrize("cls, data, path, message", [
    (TrainConfig, {"lrr": 0.1}, "train.lrr", "is not a setting"),
    (TrainConfig, {"epochs": 2.5}, "train.epochs", "must be an integer"),
    (TrainConfig, {"epochs": 0}, "train.epochs", "must be > 0"),
    (TrainConfig, {"compile": "yes"}, "train.compile", "must be true or false"),
    (TrainConfig, {"resolution": 48}, "train.resolution", "multiple of 32"),
    (TrainConfig, {"fraction": 0}, "train.fraction", "(0, 1]"),
    (TrainConfig, {"crop_scale": [0.5]}, "train.crop_scale", "list of 2"),
    (TrainConfig, {"crop_scale": [0.9, 0.5]}, "train.crop_scale", "low <= high"),
    (TrainConfig, {"device": "tpu"}, "train.device", "auto, cpu, cuda"),
    (TrainConfig, {"label_smoothing": 1.0}, "train.label_smoothing", "[0, 1)"),
    (DataConfig, {"name": "svhn"}, "data.name", "synthetic, cifar10, cifar100, imagefolder, fashion_mnist, mnist"),
    (DataConfig, {"name": "cifar10"}, "data.root", "is required for the cifar10"),
    (DataConfig, {"name": "imagefolder"}, "data.root", "is required for the imagefolder"),
    (DataConfig, {"val_split": 1.0}, "data.val_split", "[0, 1)"),
    (DataConfig, {"folder": "x"}, "data.folder", "is not a setting"),
])
def test_errors_name_the_key_path(cls, data, path, message):
    with pytest.raises(SpecError) as err:
        cls.from_dict(data)
    assert err.value.path == path
    assert message in str(err.value)


def test_error_path_follows_the_embedding_section():
    with pytest.raises(SpecError) as err:
        TrainConfig.from_dict({"lr": -1.0}, path="space.train")
    assert err.value.path == "space.train.lr" and str(err.value) == "space.train.lr must be > 0, got -1.0"
    with pytest.raises(SpecError, match=r"^space\.data\.typo is not a setting"):
        DataConfig.from_dict({"typo": 1}, path="space.data")
    with pytest.raises(SpecError, match=r"^train must be a mapping"):
        TrainConfig.from_dict([1, 2])


def test_configs_import_no_torch():
    code = ("import sys, hvsearch.train.config, hvsearch.train; "
            "from hvsearch.train import TrainConfig, DataConfig; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
