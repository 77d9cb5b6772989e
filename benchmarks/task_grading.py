"""Does a data set grade architectures? Train a stratified sample of a space, and a plain CNN,
with several training seeds and record the validation accuracy after every epoch.

What it answers (the embedded default's design goals, README "The embedded default"):

* how many (architecture, seed) runs leave chance within the first epochs (``--chance-margin``:
  "left chance" means validation top-1 at least this many points above 100 / classes);
* how the final accuracies spread over the sample (range, quartiles) instead of splitting into
  "learns / at chance";
* how much the two training seeds of one architecture agree (Kendall τ between seeds of the final
  accuracy: the noise ceiling of any ranking on this task).

The sample is ``hvsearch calibrate``'s (stratified by dominant mixer × size, ``--n`` archs, seed
``--sample-seed``), trained with the space's ``train:`` and ``data:`` sections and ``--epochs``.
The plain CNN (label ``cnn``) is the sample's first architecture with every stage's mixer a
depthwise 3×3 convolution (Container's static affinity, no attention) and an MLP FFN.

Runs are resumable: every finished (architecture, seed) run is a row of ``runs.csv`` in ``--out``
and is not trained again; ``--shard i/k`` trains every k-th run, so ``k`` processes (one thread
each) can share the work. ``--report`` only reads the CSV and prints the summary.

    python benchmarks/task_grading.py spaces/hybrid.yaml --epochs 8 --shard 0/2 &
    python benchmarks/task_grading.py spaces/hybrid.yaml --epochs 8 --shard 1/2 &
    wait; python benchmarks/task_grading.py spaces/hybrid.yaml --epochs 8 --report
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import sys
import time
from pathlib import Path

import numpy as np

FIELDS = ("label", "stratum", "seed", "epoch", "val_top1", "train_loss", "params", "mixers", "arch_id",
          "seconds")


def plain_cnn(spec):
    from hvsearch.arch import ModelSpec

    d = spec.to_dict()
    for stage in d["stages"]:
        stage["mixer"] = {"type": "container", "static": "dwconv", "dynamic": False, "kernel": 3}
        stage["ffn"] = {"type": "mlp", "ratio": 3.0}
    return ModelSpec.from_dict(d)


def candidates(space, n: int, sample_seed: int):
    from hvsearch.search.calibrate import count_params, stratified_sample

    sample = stratified_sample(space, n, seed=sample_seed, out=sys.stderr)
    out = [(c.label, c.stratum, c.spec) for c in sample]
    cnn = plain_cnn(sample[0].spec)
    out.append(("cnn", f"cnn/{count_params(cnn)}", cnn))
    return out


def done_runs(path: Path, epochs: int) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {(r["label"], int(r["seed"])) for r in rows if int(r["epoch"]) == epochs}


def append_rows(path: Path, rows: list[dict]) -> None:
    with path.open("a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)


class _Stop(Exception):
    """Raised from the report callback to end a run after ``--stop-after`` epochs."""


def train_all(space, runs, epochs: int, out: Path, stop_after: int | None = None) -> None:
    import torch

    from hvsearch.search.calibrate import count_params
    from hvsearch.train.proxy import train_proxy

    torch.set_num_threads(1)
    csv_path = out / "runs.csv"
    last = stop_after or epochs
    for label, stratum, spec, seed in runs:
        if (label, seed) in done_runs(csv_path, last):
            continue
        t0 = time.perf_counter()
        train = dataclasses.replace(space.train, epochs=epochs, seed=seed)
        history: list[dict] = []

        def report(metrics: dict) -> None:
            history.append(metrics)
            if metrics["epoch"] == last:
                raise _Stop

        try:
            train_proxy(spec, train, space.data, report=report)
        except _Stop:  # raised after the last epoch wanted, so every run ends here
            pass
        params = count_params(spec)
        seconds = time.perf_counter() - t0
        mixers = "/".join(s.mixer.type for s in spec.stages)
        append_rows(csv_path, [{"label": label, "stratum": stratum, "seed": seed, "epoch": m["epoch"],
                                "val_top1": round(m["val_top1"], 3), "train_loss": round(m["train_loss"], 4),
                                "params": params, "mixers": mixers, "arch_id": spec.arch_id,
                                "seconds": round(seconds, 1)} for m in history])
        accs = " ".join(f"{m['val_top1']:.1f}" for m in history)
        print(f"{label} seed {seed}: {accs}  ({seconds:.0f} s)", file=sys.stderr, flush=True)


def summarise(out: Path, epochs: int, classes: int, margin: float, by_epoch: int) -> str:
    import pandas as pd

    from hvsearch.stats import bootstrap_ci, kendall

    df = pd.read_csv(out / "runs.csv")
    df = df[df.groupby(["label", "seed"])["epoch"].transform("max") >= epochs]
    chance = 100.0 / classes
    runs = df.groupby(["label", "seed"])
    early = runs.apply(lambda g: g[g.epoch <= by_epoch].val_top1.max() >= chance + margin)
    final = df[df.epoch == epochs].pivot(index="label", columns="seed", values="val_top1").dropna()
    mean = final.mean(axis=1)
    lines = [f"{len(final)} architectures x {final.shape[1]} seeds, {epochs} epochs ({out / 'runs.csv'})",
             f"left chance (val top-1 >= {chance + margin:.0f}%) by epoch {by_epoch}: "
             f"{int(early.sum())} of {len(early)} runs ({100 * early.mean():.0f}%); "
             f"architectures with every seed out: "
             f"{int(early.groupby(level=0).all().reindex(final.index).sum())} of {len(final)}",
             f"final accuracy (seed mean): min {mean.min():.1f}  q25 {mean.quantile(.25):.1f}  "
             f"median {mean.median():.1f}  q75 {mean.quantile(.75):.1f}  max {mean.max():.1f}  "
             f"(at chance +{margin:.0f}: {int((mean < chance + margin).sum())})"]
    if final.shape[1] >= 2:
        a, b = final.iloc[:, 0].to_numpy(), final.iloc[:, 1].to_numpy()
        lo, hi = bootstrap_ci(a, b, kendall)
        lines.append(f"seed agreement (noise ceiling): Kendall tau {kendall(a, b):.2f} [{lo:.2f}, {hi:.2f}] "
                     f"(n={len(a)}, seeds {final.columns[0]} and {final.columns[1]}); "
                     f"mean |difference| {np.mean(np.abs(a - b)):.1f} points")
        per_epoch = []
        for e in range(1, epochs + 1):
            p = df[df.epoch == e].pivot(index="label", columns="seed", values="val_top1").dropna()
            per_epoch.append(f"{e}: {kendall(p.iloc[:, 0].to_numpy(), p.iloc[:, 1].to_numpy()):.2f}")
        lines.append("seed agreement by epoch (Kendall tau): " + ", ".join(per_epoch))
    table = df.pivot_table(index="label", columns=["seed", "epoch"], values="val_top1")
    return "\n".join(lines) + "\n\n" + table.round(1).to_string()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("space", help="space file (its train: and data: sections are the recipe)")
    p.add_argument("--n", type=int, default=20, help="architectures sampled (plus the plain CNN)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", help="output folder (default results/benchmarks/task-grading-<space>)")
    p.add_argument("--shard", default="0/1", help="i/k: train every k-th run starting at i")
    p.add_argument("--chance-margin", type=float, default=10.0)
    p.add_argument("--by-epoch", type=int, default=2)
    p.add_argument("--stop-after", type=int, help="end each run after this many epochs (of the --epochs "
                   "schedule): enough to see which runs leave chance early")
    p.add_argument("--report", action="store_true", help="only summarise runs.csv")
    args = p.parse_args(argv)

    import hvsearch  # noqa: F401  (the torchvision import hook, before timm)
    from hvsearch.space.schema import load_space

    space = load_space(args.space)
    out = Path(args.out or f"results/benchmarks/task-grading-{space.name}")
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        i, k = (int(v) for v in args.shard.split("/"))
        runs = [(label, stratum, spec, seed) for label, stratum, spec in candidates(space, args.n, args.sample_seed)
                for seed in args.seeds]
        train_all(space, runs[i::k], args.epochs, out, args.stop_after)
    from hvsearch.train.sources import data_shape

    num_classes, _ = data_shape(space.data)
    print(summarise(out, args.stop_after or args.epochs, num_classes, args.chance_margin, args.by_epoch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
