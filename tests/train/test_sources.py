"""The class and channel counts come from the data everywhere (space defaults, costs, `hvsearch
train`'s config and checkpoint); relative data roots are anchored to the file that sets them; a
missing data set stops `check` and `run` with one line before any study exists."""
import random
from pathlib import Path

import pytest
import torch
import yaml

from hvsearch.arch import ModelSpec
from hvsearch.cli import main
from hvsearch.cost import count_spec
from hvsearch.errors import SpaceError
from hvsearch.models import build_model
from hvsearch.space import RandomTrial, load_space
from hvsearch.train import DataConfig, TrainConfig, idx, load_data, train_proxy
from hvsearch.train.proxy import CHECKPOINT_NAME
from hvsearch.train.run import load_configs
from hvsearch.train.sources import check_data, data_shape
from tests.train.builders import tiny_spec, write_cifar, write_idx, write_image_folder

SPACE = """
name: shaped
data: {DATA}
train: {epochs: 1, max_steps_per_epoch: 1, batch_size: 8, warmup_epochs: 0, resolution: 32}
search: {sampler: random, trials: 1}
arch:
  stem: {type: cmt, width: 8}
  head: norm_pool
  stages:
    all: {depth: 1, downsample: patch, mixer: {type: cmt_attn, heads: 1}, ffn: {type: mlp, ratio: 2.0}}
    each: [{width: 8}, {width: 16}, {width: 16}, {width: 32}]
"""


def _space_file(folder, data: dict):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    path.write_text(SPACE.replace("{DATA}", yaml.safe_dump(data, default_flow_style=True).strip()))
    return path


def test_data_shape_agrees_with_the_loaded_data(tmp_path):
    write_cifar(tmp_path / "c10")
    write_cifar(tmp_path / "c100", "cifar100")
    write_idx(tmp_path / "idx", n_train=20)
    write_image_folder(tmp_path / "folder", classes=("a", "b", "c", "d"))
    for cfg in (DataConfig(size=100), DataConfig(name="cifar10", root=str(tmp_path / "c10")),
                DataConfig(name="cifar100", root=str(tmp_path / "c100"), val_split=0.0),
                DataConfig(name="kmnist", root=str(tmp_path / "idx")),
                DataConfig(name="imagefolder", root=str(tmp_path / "folder"))):
        check_data(cfg)
        splits = load_data(cfg, 32)
        assert data_shape(cfg) == (splits.num_classes, splits.in_chans) == (len(splits.classes),
                                                                            splits.train[0][0].shape[0])
    assert [data_shape(DataConfig(name=n, root=str(tmp_path / "c100"))) for n in ("cifar10", "cifar100")] == \
        [(10, 3), (100, 3)]
    assert data_shape(DataConfig(name="imagefolder", root=str(tmp_path / "folder"))) == (4, 3)


def test_image_folder_classes_reach_the_space_its_costs_and_training(tmp_path):
    write_image_folder(tmp_path / "images")  # 3 classes, with val/
    space = load_space(_space_file(tmp_path / "spaces", {"name": "imagefolder", "root": "../images"}))
    assert space.data.root == str(tmp_path / "images")  # relative to the space file, stored absolute
    spec = space.arch.sample(RandomTrial(random.Random(0)))
    assert (spec.num_classes, spec.in_chans) == (3, 3)
    model = build_model(spec)
    assert model.head.fc.out_features == 3
    counted = count_spec(spec).params  # what the driver records and checks constraints.max_params on
    assert counted == sum(p.numel() for p in model.parameters())
    assert counted < count_spec(spec.replace(num_classes=1000)).params
    result = train_proxy(spec, space.train.replace(device="cpu"), space.data)
    assert result.params == counted and result.arch_id == spec.arch_id


def test_idx_space_is_one_channel(tmp_path, monkeypatch, no_installed_data):
    monkeypatch.setenv(idx.DATA_ENV, str(tmp_path / "data"))
    write_idx(tmp_path / "data" / "fashion_mnist", n_train=20)
    path = _space_file(tmp_path, {"name": "fashion_mnist"})
    space = load_space(path)
    spec = space.arch.sample(RandomTrial(random.Random(0)))
    assert (spec.num_classes, spec.in_chans) == (10, 1) and space.data.root is None
    assert count_spec(spec).params == sum(p.numel() for p in build_model(spec).parameters())
    path.write_text(path.read_text().replace("arch:\n", "arch:\n  in_chans: 3\n"))
    with pytest.raises(SpaceError, match=r"arch\.in_chans must equal the data's channel count \(1\); leave it out"):
        load_space(path)


def test_hvsearch_train_records_the_data_shape_and_both_resolutions(tmp_path):
    root = write_image_folder(tmp_path / "images")
    out = tmp_path / "run"
    assert main(["train", "cmt_ti", "--data", "imagefolder", "--data-root", str(root), "--epochs", "1",
                 "--max-steps-per-epoch", "1", "--batch-size", "6", "--device", "cpu", "--out", str(out)]) == 0
    text = (out / "config.yaml").read_text()
    assert text.startswith("# built at 160 px (arch.resolution: sizes such as position-bias tables are for it), "
                           "trained and validated at 32 px (train.resolution)\n")
    saved = yaml.safe_load(text)
    assert (saved["arch"]["num_classes"], saved["arch"]["in_chans"], saved["arch"]["resolution"]) == (3, 3, 160)
    assert saved["train"]["resolution"] == 32
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert state["arch"] == saved["arch"] and state["arch_id"] == ModelSpec.from_dict(saved["arch"]).arch_id
    assert state["model"]["head.fc.weight"].shape[0] == 3


def test_relative_roots_in_a_config_file_and_on_the_command_line(tmp_path, monkeypatch):
    config = tmp_path / "configs" / "train.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"data": {"name": "cifar10", "root": "../data/c10"}}))
    _, data = load_configs(config)
    assert data.root == str(tmp_path / "data" / "c10")
    monkeypatch.chdir(tmp_path / "configs")
    _, data = load_configs(config, data_overrides={"root": "here"})  # --data-root: the current folder
    assert data.root == str(tmp_path / "configs" / "here")
    _, data = load_configs(None, data_overrides={"name": "cifar10", "root": "~/c10"})
    assert data.root == str(Path.home() / "c10")
    write_cifar(tmp_path / "data" / "c10")
    check_data(load_configs(config)[1])


def test_image_folder_val_is_the_validation_split(tmp_path):
    root = write_image_folder(tmp_path / "with_val")  # 3 classes × 6 train, × 2 val
    splits = load_data(DataConfig(name="imagefolder", root=str(root), val_split=0.25), 32)
    assert len(splits.val) == 6 and len(splits.train) == 18  # val/ used, nothing held out of train/
    assert splits.notes == (f"validating on {root / 'val'} (6 images); data.val_split 0.25 is ignored",)
    assert load_data(DataConfig(name="imagefolder", root=str(root), val_split=0.0), 32).notes == ()
    bare = write_image_folder(tmp_path / "bare", val=False)
    held = load_data(DataConfig(name="imagefolder", root=str(bare), val_split=0.34), 32)
    assert len(held.val) == 6 and len(held.train) == 12 and held.notes == ()


def test_train_log_prints_the_notes(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images")
    train_proxy(tiny_spec(), TrainConfig(epochs=1, max_steps_per_epoch=1, batch_size=6, device="cpu"),
                DataConfig(name="imagefolder", root=str(root)), verbose=True)
    err = capsys.readouterr().err
    assert f"note: validating on {root / 'val'} (6 images); data.val_split 0.1 is ignored" in err
    assert "3 classes, 3 channels" in err


@pytest.mark.parametrize("command", ["check", "run", "calibrate"])
def test_check_and_run_stop_on_missing_data_before_any_study(tmp_path, monkeypatch, capsys, command,
                                                             no_installed_data):
    monkeypatch.chdir(tmp_path)
    space = _space_file(tmp_path, {"name": "fashion_mnist", "root": "nowhere"})
    assert main([command, str(space)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hvsearch {command}: error: fashion_mnist not found: looked in "
                                                   f"{tmp_path / 'nowhere'}, {tmp_path / 'nowhere' / 'FashionMNIST' / 'raw'}")
    assert not (tmp_path / "studies").exists() and not (tmp_path / "results").exists()
