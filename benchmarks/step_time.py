"""Forward+backward time per catalog seed on the current device.

Prints a table (seed, device, batch, resolution, ms per step, images/s) and writes it as CSV under
results/benchmarks/. Each measurement is the median of ``--repeats`` timed steps after warm-up;
on CPU the 1-minute load average is recorded, since other processes on a small machine distort
the numbers.

    python benchmarks/step_time.py                      # every seed, 32 px and native, batch 8
    python benchmarks/step_time.py --seeds cmt_s hire_mlp_tiny --batch 32 --device cuda --amp
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import hvsearch  # noqa: F401  (before timm)
import torch

from hvsearch.models import build_model, get_seed, seed_names

from _report import report  # benchmarks/_report.py


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(model, x, repeats: int, warmup: int, amp: bool) -> float:
    """Median seconds of one forward+backward step."""
    device = x.device
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out.float().mean().backward()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="*", default=None, help="default: every seed")
    ap.add_argument("--resolutions", nargs="*", default=["32", "native"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/step_time.csv")
    args = ap.parse_args()

    device = torch.device(args.device)
    rows = []
    for name in args.seeds or seed_names():
        spec = get_seed(name).spec
        model = build_model(spec, num_classes=10).to(device).train()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        for r in args.resolutions:
            res = spec.resolution if r == "native" else int(r)
            x = torch.randn(args.batch, 3, res, res, device=device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            load = os.getloadavg()[0] if device.type == "cpu" else float("nan")
            sec = time_step(model, x, args.repeats, args.warmup, args.amp)
            row = {"seed": name, "device": device.type, "threads": torch.get_num_threads(),
                   "batch": args.batch, "resolution": res, "amp": args.amp, "ms_per_step": 1e3 * sec,
                   "images_per_s": args.batch / sec, "load_1min": load}
            rows.append(row)
            print(f"{name:16s} {res:4d}px  {1e3 * sec:9.1f} ms  {args.batch / sec:9.1f} img/s", flush=True)
    report(rows, args.out)


if __name__ == "__main__":
    main()
