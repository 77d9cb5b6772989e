"""Framework overhead of a search: wall time against the trials' own training time.

Runs ``hvsearch run`` in a fresh process (a throwaway study under a temporary folder; the time
budget of the space is kept, so choose a space that finishes) and compares

* ``wall``   — the whole command: imports, opening the study, starting Ray, sampling, validating and
  counting costs in the driver, starting trial workers, training, recording, writing results;
* ``train``  — the sum over trained trials of their ``wall_time`` (what ``train_proxy`` measured
  from its start: data, model build, epochs, evaluations, checkpoints);
* ``ideal``  — ``train / concurrency``, the wall time a zero-overhead scheduler would need;

and reports ``overhead = wall - ideal`` (absolute and as a share of ``wall``) in three parts: the
time from the command's start to the first trial's start (imports, Ray start-up, the first draw),
the overhead between the first trial's start and the last one's end (hand-overs, the driver's
work, a slot idle while the last trial finishes) and the time after the last trial (Ray's shutdown,
writing results, exiting); the times are those at which the run's progress lines arrive. A trial
starts when Tune's worker for it is up; the worker then imports torch and the models, so
``first_epoch`` (when the first epoch of any trial is reported) is also given. Also the
driver's own time per trial (median and max of the trials' ``driver_time_s``: drawing,
validating, counting, recording). ``ideal`` assumes the trials pack perfectly; ``same_order``
is the makespan of a zero-overhead scheduler handing the same trials, in the same order, to the
first free slot, so ``overhead_vs_same_order`` is what the framework itself costs. The 1-minute load average is recorded
before and after: other processes on a small machine distort everything here.

    python benchmarks/search_overhead.py                          # spaces/tiny.yaml, 8 trials
    python benchmarks/search_overhead.py --space spaces/hybrid.yaml --trials 6 --repeats 2
    python benchmarks/search_overhead.py --space spaces/hybrid.yaml --trials 10 --address 127.0.0.1:6390
"""
from __future__ import annotations

import argparse
import heapq
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from hvsearch.errors import HVSearchError
from hvsearch.search import study as st
from hvsearch.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def one_run(space_path: str, args, workdir: Path, index: int) -> dict:
    """One ``hvsearch run`` in a fresh process, as a user runs it (cold imports, a new Ray)."""
    name = f"bench{index}"
    cmd = [sys.executable, "-m", "hvsearch.cli", "run", space_path, "--study", name, "--trials", str(args.trials),
           "--max-concurrent", str(args.max_concurrent), "--studies-dir", str(workdir / "studies"),
           "--results-dir", str(workdir / "results")] + (["--address", args.address] if args.address else [])
    load_before = os.getloadavg()[0]
    lines: list[tuple[float, str]] = []  # (seconds since the command started, progress line)
    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        for line in proc.stdout:  # the lines are flushed as they happen: their arrival times them
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
        proc.wait()
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    stdout = "\n".join(text for _, text in lines)
    if proc.returncode:
        sys.exit(f"hvsearch run failed ({proc.returncode}):\n{stdout}\n{stderr}")
    if args.log_dir:  # the run's own progress lines, each with the second it arrived
        log = Path(args.log_dir) / f"{Path(space_path).stem}-run{index}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"{at:7.2f} {text}\n" for at, text in lines))
    starts, ends, first_epoch = timeline(lines)
    study = st.load_study(name, st.storage_url(name, None, workdir / "studies", create=False))
    trials = [t for t in study.get_trials() if t.user_attrs.get(st.ATTR_STATUS) in st.TRAINED_STATUSES]
    train = sum(float(t.user_attrs.get(st.ATTR_TRAIN_TIME, 0.0)) for t in trials)
    ideal = train / args.max_concurrent
    # a zero-overhead scheduler running the same trials in the same order (each to the first free
    # slot): what no scheduler can avoid when the last trials finish at different times
    slots = [0.0] * args.max_concurrent
    for t in sorted(trials, key=lambda t: t.number):
        heapq.heapreplace(slots, slots[0] + float(t.user_attrs.get(st.ATTR_TRAIN_TIME, 0.0)))
    packed = max(slots)
    driver = [float(t.user_attrs[st.ATTR_DRIVER_TIME]) for t in trials if st.ATTR_DRIVER_TIME in t.user_attrs]
    return {
        "run": index, "trials": len(trials), "epochs_trained": sum(int(t.user_attrs.get(st.ATTR_EPOCHS, 0)) for t in trials),
        "pruned": sum(t.user_attrs.get(st.ATTR_STATUS) == "pruned" for t in trials),
        "wall_s": wall, "train_sum_s": train, "concurrency": args.max_concurrent, "ideal_s": ideal,
        "overhead_s": wall - ideal, "overhead_%": 100 * (wall - ideal) / wall,
        "same_order_s": packed, "overhead_vs_same_order_s": wall - packed,
        "overhead_vs_same_order_%": 100 * (wall - packed) / wall,
        "first_trial_s": starts[0] if starts else None,
        "first_epoch_s": first_epoch,
        # between the first start and the last end: hand-overs, the driver, a slot left idle at the end
        "middle_overhead_s": (ends[-1] - starts[0]) - ideal if starts and ends else None,
        "after_last_trial_s": wall - ends[-1] if ends else None,
        "driver_per_trial_s": statistics.median(driver) if driver else None,
        "driver_max_s": max(driver) if driver else None,
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }


def timeline(lines: list[tuple[float, str]]) -> tuple[list[float], list[float], float | None]:
    """From a run's (arrival second, progress line) pairs: when trials started (Tune's worker up),
    when they ended (trained, pruned or failed), and when the first epoch of any trial was reported
    (its worker's imports, data, model and one epoch after its start)."""
    starts = [at for at, text in lines if re.search(r"\] trial \d+ start", text)]
    ends = [at for at, text in lines if re.search(r"\] trial \d+ (trained|pruned|failed) after", text)]
    epochs = [at for at, text in lines if re.search(r"\] trial \d+ epoch 1/", text)]
    return starts, ends, (epochs[0] if epochs else None)


def _edited_space(path: str, changes: list[str], folder: Path) -> Path:
    """A copy of the space file with ``section.key=value`` changes (values read as YAML)."""
    import yaml

    from hvsearch.errors import SpaceError
    from hvsearch.yamlio import load_yaml

    data = yaml.safe_load(Path(path).read_text())
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or "." not in key:
            sys.exit(f"--set {change!r}: expected SECTION.KEY=VALUE, e.g. train.fraction=0.3")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            sys.exit(f"--set {change!r}: {'.'.join(parents)} is not a section of {path}")
        try:
            node[leaf] = load_yaml(value, SpaceError, where=f"--set {key}")
        except SpaceError as e:
            sys.exit(f"--set {change!r}: {e}")
    out = folder / Path(path).name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(ROOT / "spaces" / "tiny.yaml"))
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "search_overhead.csv"))
    p.add_argument("--log-dir", default=None, help="keep each run's progress lines here")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change the space for this benchmark, e.g. train.fraction=0.3 (longer trials)")
    p.add_argument("--address", help="join this running Ray instance (`ray start --head ...`) instead of each "
                   "run starting and stopping its own: what the framework costs without Ray's start-up")
    args = p.parse_args()

    load_space(args.space)  # a broken space fails here, not in the first run
    space_path = args.space
    if os.getloadavg()[0] > (os.cpu_count() or 1) * 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores before the "
              "benchmark; timings will be inflated", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hvs-bench-") as tmp:
        if args.set:
            space_path = str(_edited_space(args.space, args.set, Path(tmp)))
            try:
                load_space(space_path)
            except HVSearchError as e:  # named by the user's file and flags, not the edited copy
                sys.exit(f"{args.space} with --set {' '.join(args.set)}: {str(e).removeprefix(space_path + ': ')}")
        for i in range(args.repeats):
            rows.append(one_run(space_path, args, Path(tmp), i))
            print(f"run {i}: {rows[-1]['wall_s']:.1f} s wall, {rows[-1]['train_sum_s']:.1f} s of training",
                  flush=True)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format="{:.2f}".format))
    if len(rows) > 1:
        print(f"median overhead {statistics.median(df['overhead_s']):.1f} s "
              f"({statistics.median(df['overhead_%']):.0f}% of wall)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.assign(space=Path(args.space).name, changes=" ".join(args.set),
              ray="joined a running instance" if args.address else "own local instance").to_csv(out, index=False)
    print(f"written {out}")


if __name__ == "__main__":
    main()
