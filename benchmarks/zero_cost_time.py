"""Seconds per zero-cost score, for the smallest seed of each mixer family.

Prints a table (score × family: seconds per score, model build included, as :func:`score` builds
a fresh model per call) and writes every measurement as CSV under results/benchmarks/. Each
figure is the median of ``--repeats`` calls (default one: a brief measurement); on CPU the
1-minute load average is recorded, since other processes on a small machine inflate the numbers.

    python benchmarks/zero_cost_time.py                          # 5 seeds × 6 scores, 32 px, batch 64
    python benchmarks/zero_cost_time.py --seeds cmt_s --resolution 224 --batch-size 32 --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import hvsearch  # noqa: F401  (before timm)
import pandas as pd
import torch

from hvsearch.models import get_seed
from hvsearch.zerocost import random_batch, score, score_names

SMALLEST = ("cmt_ti", "hire_mlp_tiny", "container_light", "transxnet_t", "convmlp_s")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="*", default=list(SMALLEST))
    ap.add_argument("--scores", nargs="*", default=score_names())
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="results/benchmarks/zero_cost_time.csv")
    args = ap.parse_args()

    device = torch.device(args.device)
    batch = tuple(t.to(device) for t in random_batch(args.batch_size, args.resolution, 10))
    rows = []
    for seed_name in args.seeds:
        seed = get_seed(seed_name)
        for name in args.scores:
            times, value = [], None
            for _ in range(args.repeats):
                _sync(device)
                t0 = time.perf_counter()
                value = score(seed.spec, name, batch, num_classes=10, device=device)
                _sync(device)
                times.append(time.perf_counter() - t0)
            sec = statistics.median(times)
            rows.append({"family": seed.family, "seed": seed_name, "score": name, "value": value,
                         "seconds": sec, "device": device.type, "threads": torch.get_num_threads(),
                         "batch": args.batch_size, "resolution": args.resolution,
                         "load_1min": os.getloadavg()[0] if device.type == "cpu" else float("nan")})
            print(f"{seed_name:16s} {name:10s} {sec:8.2f} s   {value:.4g}", flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    table = df.pivot(index="score", columns="family", values="seconds").reindex(args.scores)
    print(f"\nseconds per score ({device.type}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.resolution} px; seeds {', '.join(args.seeds)})")
    print(table.to_string(float_format="{:.2f}".format))
    if device.type == "cpu" and (df["load_1min"] > os.cpu_count()).any():
        print(f"\nwarning: load average above {os.cpu_count()} during the run; numbers are inflated")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
