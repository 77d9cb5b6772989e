"""`hvsearch train`: a run folder with config, metrics CSV and checkpoint; resumption; errors as
one line with exit status 2."""
import csv
from pathlib import Path

import pytest
import yaml

from hvsearch.cli import main
from hvsearch.space.schema import load_space
from hvsearch.train.run import load_configs
from tests.train.builders import tiny_spec

ROOT = Path(__file__).resolve().parents[2]


def test_train_writes_the_run_folder_and_resumes(tmp_path, capsys):
    arch = tiny_spec().save(tmp_path / "tiny.yaml")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"train": {"batch_size": 16, "max_steps_per_epoch": 2},
                                      "data": {"size": 100}}))
    out = tmp_path / "run"
    argv = ["train", str(arch), "--config", str(config), "--epochs", "1", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "best val top-1" in printed.out and "epoch 1/1  loss" in printed.err
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_top1", "val_top5", "images_per_s", "wall_time"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["batch_size"] == 16 and saved["data"]["size"] == 100
    assert (out / "checkpoint.pt").is_file()
    # the same command again: the run is complete, nothing is trained
    assert main(argv) == 0
    assert "epoch 1/1  loss" not in capsys.readouterr().err
    # a changed schedule is refused (the folder's config is left as it was) ...
    assert main(argv[:-2] + ["--epochs", "2", "--out", str(out)]) == 2
    assert "--no-resume" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 1
    # ... unless asked to start over
    assert main(argv[:-2] + ["--epochs", "2", "--out", str(out), "--no-resume"]) == 0
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 2


def test_train_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "cmt_ti", "--data", "cifar10", "--data-root", str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hvsearch train: error: cifar10 root {tmp_path / 'none'} does not exist or is not a directory"
    assert not out.exists()  # a run that fails to start leaves no folder behind
    assert main(["train", "cmt_ti", "--data", "cifar10"]) == 2
    assert "data.root is required for the cifar10 data set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # checked as the command line is parsed
        main(["train", "cmt_ti", "--resolution", "40"])
    assert done.value.code == 2
    assert "argument --resolution: must be an integer in [32, 8192], a multiple of 32, got 40" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 1}\nsearhc: {trials: 3}\n")
    assert main(["train", "cmt_ti", "--config", str(bad)]) == 2
    assert "searhc is not a section of a training config" in capsys.readouterr().err


def test_a_space_file_is_a_config_its_recipe_is_read():
    """`hvsearch train best.yaml --config spaces/hybrid.yaml` trains with the search's recipe:
    the space's train: and data: sections, its other sections skipped."""
    train, data = load_configs(ROOT / "spaces" / "hybrid.yaml", {"epochs": 8})
    space = load_space(ROOT / "spaces" / "hybrid.yaml")
    assert train == space.train.replace(epochs=8)
    assert data == space.data
