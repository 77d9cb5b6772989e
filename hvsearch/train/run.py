"""``hvsearch train``'s work: merge the configs, train, keep the outputs in one folder.

A run folder (default ``results/train/<arch>-<data>-<arch id>/``) holds

* ``config.yaml``: the architecture as trained (with the data's ``num_classes`` and ``in_chans``,
  whatever the seed or file said) and the resolved ``train:`` and ``data:`` sections; a comment
  on top says at which resolution the model was built (``arch.resolution``) and trained
  (``train.resolution``) when they differ;
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
from hvsearch.train.config import METRIC_KEYS, DataConfig, TrainConfig
from hvsearch.train.proxy import CHECKPOINT_NAME, TrainResult, train_proxy
from hvsearch.train.sources import data_shape

RESULTS = Path("results") / "train"
CONFIG_SECTIONS = ("train", "data")
#: Sections of a space file or of a run's config.yaml that a training config skips: such a file
#: can be given as it is, and its recipe (``train:`` and ``data:``) is what is read.
SKIPPED_SECTIONS = ("arch", "name", "description", "search", "resources", "constraints")


def load_configs(path: str | Path | None, train_overrides: Mapping[str, Any] | None = None,
                 data_overrides: Mapping[str, Any] | None = None) -> tuple[TrainConfig, DataConfig]:
    """The ``train:`` and ``data:`` sections of a YAML file (or the defaults), with overrides.
    The file may be a space file or a run's ``config.yaml``: their other sections are skipped,
    so ``hvsearch train best.yaml --config spaces/hybrid.yaml`` trains with the search's recipe.

    A relative ``data.root`` is taken relative to the file's folder, or, given as an override
    (the command line's ``--data-root``), to the current folder."""
    sections: dict[str, Any] = {}
    folder = Path.cwd()
    if path is not None:
        from hvsearch.yamlio import load_yaml, read_text

        p = Path(path)
        sections = load_yaml(read_text(p, "config file", SpecError), SpecError, where=f"config file {p}") or {}
        if not isinstance(sections, Mapping):
            raise SpecError("", f"config file {p} must be a mapping with `train:` and `data:` sections",
                            sections)
        for key in sections:
            if key not in CONFIG_SECTIONS + SKIPPED_SECTIONS:
                raise SpecError(key, f"is not a section of a training config ({', '.join(CONFIG_SECTIONS)}; "
                                f"a space file's or a run's other sections are skipped)", sections[key])
        if "root" not in (data_overrides or {}):
            folder = p.parent
    train = {**(sections.get("train") or {}), **(train_overrides or {})}
    data = {**(sections.get("data") or {}), **(data_overrides or {})}
    return TrainConfig.from_dict(train, "train"), DataConfig.from_dict(data, "data").anchored(folder)


def for_data(spec: ModelSpec, data: DataConfig) -> ModelSpec:
    """``spec`` with the class and channel counts of ``data`` (a seed says 1000 and 3)."""
    num_classes, in_chans = data_shape(data)
    return spec.replace(num_classes=num_classes, in_chans=in_chans)


def default_run_dir(spec: ModelSpec, data: DataConfig) -> Path:
    """``results/train/<name>-<data>-<arch id>`` of ``spec`` as trained on ``data``."""
    label = spec.file_stem if spec.name else "arch"  # a name never becomes a folder outside RESULTS
    return RESULTS / f"{label}-{data.name}-{for_data(spec, data).arch_id}"


def run_training(spec: ModelSpec, train: TrainConfig, data: DataConfig, run_dir: str | Path | None = None,
                 resume: bool = True, verbose: bool = True) -> TrainResult:
    """Train with the outputs in ``run_dir`` (default :func:`default_run_dir`; see the module
    docstring); the result's ``checkpoint`` is in that folder."""
    # The folder is made when the first epoch is saved: a run that fails to start leaves nothing.
    run_dir = Path(run_dir or default_run_dir(spec, data))
    spec = for_data(spec, data)  # what train_proxy builds, so what config.yaml must say
    metrics_csv = run_dir / "metrics.csv"
    if not (resume and (run_dir / CHECKPOINT_NAME).exists()):
        metrics_csv.unlink(missing_ok=True)

    header = ""
    if spec.resolution != train.resolution:
        header = (f"# built at {spec.resolution} px (arch.resolution: sizes such as position-bias tables are "
                  f"for it), trained and validated at {train.resolution} px (train.resolution)\n")

    def write_config() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(header + yaml.safe_dump(
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
