"""``hvsearch train``'s work: merge the configs, train, keep the outputs in one folder.

A run folder (default ``results/train/<arch>-<data>-<arch id>/``) holds

* ``config.yaml``: the architecture and the resolved ``train:`` and ``data:`` sections;
* ``metrics.csv``: one row per epoch (the report's keys), appended as epochs finish;
* ``checkpoint.pt``: model, optimizer, epoch and history after the last finished epoch. Running
  the same command again resumes from it (or returns at once when the run is complete).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import yaml

from hvsearch.arch import ModelSpec
from hvsearch.errors import SpecError
from hvsearch.train.config import DataConfig, TrainConfig
from hvsearch.train.proxy import CHECKPOINT_NAME, METRIC_KEYS, TrainResult, train_proxy

RESULTS = Path("results") / "train"
CONFIG_SECTIONS = ("train", "data")


def load_configs(path: str | Path | None, train_overrides: Mapping[str, Any] | None = None,
                 data_overrides: Mapping[str, Any] | None = None) -> tuple[TrainConfig, DataConfig]:
    """The ``train:`` and ``data:`` sections of a YAML file (or the defaults), with overrides."""
    sections: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SpecError("", f"config file {p} does not exist", None, show_value=False)
        try:
            sections = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise SpecError("", f"config file {p} is not valid YAML: {e}", None, show_value=False) from None
        if not isinstance(sections, Mapping):
            raise SpecError("", f"config file {p} must be a mapping with `train:` and `data:` sections",
                            sections)
        for key in sections:
            if key not in CONFIG_SECTIONS:
                raise SpecError(key, f"is not a section of a training config ({', '.join(CONFIG_SECTIONS)})",
                                sections[key])
    train = {**(sections.get("train") or {}), **(train_overrides or {})}
    data = {**(sections.get("data") or {}), **(data_overrides or {})}
    return TrainConfig.from_dict(train, "train"), DataConfig.from_dict(data, "data")


def default_run_dir(spec: ModelSpec, data: DataConfig) -> Path:
    label = spec.name or "arch"
    return RESULTS / f"{label}-{data.name}-{spec.arch_id}"


def run_training(spec: ModelSpec, train: TrainConfig, data: DataConfig, run_dir: str | Path,
                 resume: bool = True, verbose: bool = True) -> TrainResult:
    """Train with the outputs in ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)  # created when the first epoch is saved: a run that fails to start leaves nothing
    metrics_csv = run_dir / "metrics.csv"
    if not (resume and (run_dir / CHECKPOINT_NAME).exists()):
        metrics_csv.unlink(missing_ok=True)

    def write_config() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(
            {"arch": spec.to_dict(), "train": train.to_dict(), "data": data.to_dict()}, sort_keys=False))

    def append(metrics: dict) -> None:
        if metrics["epoch"] == 1 or not (run_dir / "config.yaml").exists():
            write_config()  # not before: a run refused at resume must not overwrite its folder's config
        new = not metrics_csv.exists()
        with metrics_csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_KEYS)
            if new:
                writer.writeheader()
            writer.writerow(metrics)

    result = train_proxy(spec, train, data, report=append, checkpoint_dir=run_dir, resume=resume,
                         verbose=verbose)
    write_config()
    # The checkpoint's history is authoritative: it also covers epochs of an earlier, resumed
    # process, and drops rows appended after that process's last checkpoint.
    with metrics_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_KEYS)
        writer.writeheader()
        writer.writerows(result.history)
    return result
