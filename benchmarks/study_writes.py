"""Milliseconds per Optuna write to a SQLite study: SQLite's default journal against the study
storage hvsearch opens (:func:`hvsearch.search.study.open_storage`: write-ahead log,
``synchronous=NORMAL``).

A search writes each drawn knob, each result and each attribute in a transaction of its own (~40
per trial). Each round here makes a new study file per mode in ``--folder`` (the disk the studies
live on matters: default ``studies/``), asks ``--trials`` trials of ``--knobs`` integer knobs and
``--attrs`` attributes each and tells them, alternating the two modes round by round, so both see
the same machine. The row keeps the median milliseconds per write of each mode over ``--rounds``,
their ratio and the 1-minute load average before and after.

    python benchmarks/study_writes.py --out results/benchmarks/study-writes/study_writes.csv
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _report import report  # benchmarks/_report.py

MODES = ("default", "hvsearch")


def writes_ms(mode: str, folder: Path, trials: int, knobs: int, attrs: int) -> float:
    """Milliseconds per write: ``trials`` × (``knobs`` suggests + ``attrs`` attributes + a tell)."""
    import optuna

    from hvsearch.search.study import open_storage

    path = Path(tempfile.mkdtemp(dir=folder)) / "s.db"
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url) if mode == "default" else open_storage(url)
    study = optuna.create_study(study_name="w", storage=storage)
    t0 = time.perf_counter()
    for i in range(trials):
        trial = study.ask()
        for k in range(knobs):
            trial.suggest_int(f"k{k}", 0, 9)
        for a in range(attrs):
            trial.set_user_attr(f"a{a}", i)
        study.tell(trial, float(i))
    seconds = time.perf_counter() - t0
    storage.engine.dispose()
    return 1e3 * seconds / (trials * (knobs + attrs + 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=Path("studies"), help="where the study files are made")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--knobs", type=int, default=30)
    p.add_argument("--attrs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/study-writes/study_writes.csv"))
    args = p.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.folder, prefix=".bench-") as tmp:
        load_before = os.getloadavg()[0]
        ms: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                ms[mode].append(writes_ms(mode, Path(tmp), args.trials, args.knobs, args.attrs))
        default, ours = (statistics.median(ms[m]) for m in MODES)
        row = {"folder": str(args.folder), "writes_per_round": args.trials * (args.knobs + args.attrs + 1),
               "rounds": args.rounds, "default_ms": default, "hvsearch_ms": ours, "speedup": default / ours,
               "default_ms_min": min(ms["default"]), "default_ms_max": max(ms["default"]),
               "hvsearch_ms_min": min(ms["hvsearch"]), "hvsearch_ms_max": max(ms["hvsearch"]),
               "load_1min": load_before, "load_1min_after": os.getloadavg()[0]}
    report([row], args.out, float_format="{:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
