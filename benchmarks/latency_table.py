"""Latency of every seed at batch 1, native resolution: PyTorch and ONNX Runtime on the CPU, 1 and
2 threads, and how far FLOPs rank them as latency does (Kendall τ with its bootstrap interval).

Two phases, so that only the second needs the machine to itself: ``--prepare`` exports (and
checks) every seed's ONNX file into ``--onnx-dir``; the timing phase then measures every
(seed, runtime, threads) with :func:`hvsearch.latency.measure` (warm-up, ``--repeats`` timed runs,
median and p90, the load average before and after) and writes ``latency.csv`` and ``tau.csv``
under ``--out``. A row flagged ``busy`` was measured beside another job: rerun it.

    python benchmarks/latency_table.py --prepare --onnx-dir exports/latency-onnx
    python benchmarks/latency_table.py --onnx-dir exports/latency-onnx --out results/benchmarks/latency
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hvsearch  # noqa: F401  (before timm)
import numpy as np

from _report import report  # benchmarks/_report.py


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="*", default=None, help="default: every seed")
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--onnx-dir", type=Path, default=Path("exports/latency-onnx"))
    p.add_argument("--prepare", action="store_true", help="only export the ONNX files (no timing)")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/latency"))
    args = p.parse_args(argv)
    import torch

    from hvsearch.cost import count_spec
    from hvsearch.latency import measure, onnx_path
    from hvsearch.models import get_seed, seed_names
    from hvsearch.stats import bootstrap_ci, kendall

    seeds = args.seeds or seed_names()
    if args.prepare:
        for name in seeds:
            spec = get_seed(name).spec
            x = torch.zeros(1, spec.in_chans, spec.resolution, spec.resolution)
            print(f"{name:16s} {onnx_path(spec, x, args.onnx_dir)}", flush=True)
        return 0
    rows = []
    for name in seeds:
        spec = get_seed(name).spec
        cost = count_spec(spec)
        for runtime in args.runtimes:
            for threads in args.threads:
                m = measure(spec, runtime=runtime, threads=threads, repeats=args.repeats, warmup=args.warmup,
                            onnx_dir=args.onnx_dir)
                rows.append({"seed": name, "resolution": spec.resolution, "gflops": cost.flops / 1e9,
                             "params_M": cost.params / 1e6, "runtime": runtime, "threads": threads,
                             "median_ms": m.median_ms, "p90_ms": m.p90_ms, "min_ms": m.min_ms,
                             "flags": ",".join(m.flags), "others_cpu": m.others_cpu, "load_1min": m.load_before, "load_1min_after": m.load_after})
                print(f"{name:16s} {runtime:12s} {threads} thread(s): {m.median_ms:8.2f} ms (p90 {m.p90_ms:.2f}) "
                      f"{','.join(m.flags)}", flush=True)
    df = report(rows, args.out / "latency.csv", float_format="{:.3g}")
    taus = []
    for (runtime, threads), g in df.groupby(["runtime", "threads"]):
        flops, ms = g.gflops.to_numpy(), g.median_ms.to_numpy()
        lo, hi = bootstrap_ci(flops, ms, kendall, n_boot=2000, seed=0)
        taus.append({"runtime": runtime, "threads": threads, "n": len(g), "kendall_tau": kendall(flops, ms),
                     "ci_low": lo, "ci_high": hi,
                     "ms_per_gflop_min": float(np.min(ms / flops)), "ms_per_gflop_max": float(np.max(ms / flops))})
    report(taus, args.out / "tau.csv", float_format="{:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
