"""CPU seconds a search spends before its trials can train, by part: the floor under its start-up.

A search's start-up is CPU-bound on a small machine: the driver's imports, Ray's own processes
and each trial worker's imports all run on the same cores. This measures, in a fresh process
per repeat, as a search does it:

* ``driver``  — the driver's CPU from its interpreter's start through its imports (the CLI, Optuna,
  the study; Ray Tune, the searcher and the trainable) and its side of ``ray.init``;
* ``ray``     — the CPU of the processes a local Ray instance starts (GCS, raylet, the autoscaler
  monitor, the log monitor, the API server, the dashboard and runtime-env agents), read once they
  are idle, per process;
* ``worker``  — one Tune-style trial worker, in a new Ray worker process (a Ray actor with 1 CPU, as
  Tune's trial actors are): its CPU from its process start until it could take its first training
  step, in steps: Ray's worker start-up, Ray Tune's function trainable, torch, the training code
  (timm, which imports torchvision, which imports ``torch._dynamo``), the optimiser (whose first
  ``add_param_group`` imports ``torch._dynamo`` where nothing did before).

``floor = (driver + ray + concurrency x worker) / cores``: a lower bound on the wall time before
``concurrency`` trials can train on these cores, with this design (a driver, Ray, one worker
process per slot; with many cores the bound is instead the longest serial chain, about the
driver's start plus one worker's). Compare it with ``search_overhead.py``'s ``first_epoch_s``
less one epoch. Also timed: ``stop_ray`` (the autoscaler monitor ended first, then
``ray.shutdown``) and, on a second instance, ``ray.shutdown`` alone.

    python benchmarks/startup_cpu.py --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import cpu_count, report  # noqa: E402

# Runs in a fresh interpreter: every figure is CPU (user + system) of a process, from its start.
PROBE = r"""
import json, os, resource, sys, time

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

marks = {"interpreter": cpu()}
import optuna  # noqa: F401
import hvsearch.cli  # noqa: F401
from hvsearch.search import runner, study  # noqa: F401
marks["cli_optuna_study"] = cpu()
from hvsearch.space import load_space
runner._import_search(load_space(sys.argv[1]))
marks["tune_searcher_trainable"] = cpu()
started = runner.init_ray(None, int(sys.argv[2]))
marks["ray_init_driver_side"] = cpu()
torch_in_driver = "torch" in sys.modules  # the driver counts costs from the spec: no torch

import psutil
import ray

time.sleep(float(sys.argv[3]))  # Ray's processes finish starting and go idle
ray_procs = {}
for p in psutil.Process().children(recursive=True):
    try:
        t = p.cpu_times()
        name = p.name()
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        continue
    for key, kind in (("gcs_server", "gcs"), ("raylet", "raylet"), ("log_monitor", "log monitor"),
                      ("monitor.py", "autoscaler monitor"), ("dashboard.py", "API server"),
                      ("DashboardAgent", "dashboard agent"), ("RuntimeEnvAgent", "runtime-env agent")):
        if key in name or key in cmd:
            break
    else:
        kind = name
    ray_procs[kind] = ray_procs.get(kind, 0.0) + t.user + t.system


@ray.remote(num_cpus=1)
class Worker:
    # what a trial worker does before its first step, in train_trial's order
    def __init__(self):
        self.marks = {"ray_worker_start": cpu()}

    def run(self):
        import ray.tune.trainable.function_trainable  # noqa: F401  (Tune's ImplicitFunc actor class)
        self.marks["ray_tune"] = cpu()
        import torch
        self.marks["torch"] = cpu()
        import hvsearch  # noqa: F401
        from hvsearch.train.proxy import train_proxy  # noqa: F401  (timm -> torchvision -> torch._dynamo)
        self.marks["training_code"] = cpu()
        torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
        self.marks["optimizer"] = cpu()
        return self.marks


worker = ray.get(Worker.remote().run.remote())
t = time.perf_counter()
runner.stop_ray(started)  # the autoscaler monitor ended first, then ray.shutdown
stop_ray_s = time.perf_counter() - t
# a second instance, shut down by ray.shutdown alone (Ray's SIGTERM to the monitor, which hangs)
started = runner.init_ray(None, int(sys.argv[2]))
time.sleep(float(sys.argv[3]))
t = time.perf_counter()
ray.shutdown()
plain_shutdown_s = time.perf_counter() - t
print(json.dumps({"driver": marks, "ray": ray_procs, "worker": worker, "torch_in_driver": torch_in_driver,
                  "stop_ray_s": stop_ray_s, "plain_shutdown_s": plain_shutdown_s}))
"""


def one(space: str, cpus: int, settle: float) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, space, str(cpus), str(settle)], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    if out.returncode:
        sys.exit(f"probe failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def steps(marks: dict[str, float]) -> dict[str, float]:
    """Cumulative CPU marks -> the CPU of each step (the first from the process's start)."""
    out, prev = {}, 0.0
    for key, value in marks.items():
        out[key] = value - prev
        prev = value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(ROOT / "spaces" / "hybrid.yaml"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=2, help="trials training at once (one worker each)")
    p.add_argument("--settle", type=float, default=4.0, help="seconds Ray's processes get to finish starting")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "startup_cpu.csv"))
    args = p.parse_args()
    cores = cpu_count()
    rows = []
    for r in range(args.repeats):
        load = os.getloadavg()[0]
        got = one(args.space, cores, args.settle)
        common = {"load_1min": load, "torch_in_driver": got["torch_in_driver"], "stop_ray_s": got["stop_ray_s"],
                  "plain_shutdown_s": got["plain_shutdown_s"]}
        parts = {"driver": steps(got["driver"]), "worker": steps(got["worker"]),
                 "ray": dict(sorted(got["ray"].items()))}
        rows += [{"repeat": r, "part": part, "step": step, "cpu_s": s, **common}
                 for part, by_step in parts.items() for step, s in by_step.items()]
        print(f"repeat {r}: driver {sum(steps(got['driver']).values()):.2f} s, ray "
              f"{sum(got['ray'].values()):.2f} s, worker {got['worker']['optimizer']:.2f} s of CPU; shutdown "
              f"{got['stop_ray_s']:.2f} s (ray.shutdown alone {got['plain_shutdown_s']:.2f} s)", flush=True)
    df = report(rows, args.out, "{:.2f}")
    per_repeat = df.groupby(["repeat", "part"])["cpu_s"].sum().unstack()
    med = {part: statistics.median(per_repeat[part]) for part in per_repeat.columns}
    total = med["driver"] + med["ray"] + args.concurrency * med["worker"]
    print(f"\nmedian CPU: driver {med['driver']:.2f} s + Ray {med['ray']:.2f} s + {args.concurrency} x worker "
          f"{med['worker']:.2f} s = {total:.2f} s; on {cores} core(s) the floor before {args.concurrency} trials "
          f"can train is {total / cores:.2f} s of wall time")
    shut = df.groupby("repeat")[["stop_ray_s", "plain_shutdown_s"]].first()
    print(f"shutdown (median): stop_ray {shut.stop_ray_s.median():.2f} s, ray.shutdown alone "
          f"{shut.plain_shutdown_s.median():.2f} s")


if __name__ == "__main__":
    main()
