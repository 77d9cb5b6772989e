"""Forward+backward time per catalog seed on the current device.

Prints a table (seed, device, batch, resolution, ms per step, images/s) and writes it as CSV under
results/benchmarks/. Each measurement is the median of ``--repeats`` timed steps after warm-up;
on CPU the 1-minute load average is recorded, since other processes on a small machine distort
the numbers.

    python benchmarks/step_time.py                      # every seed, 32 px and native, batch 8
    python benchmarks/step_time.py --seeds cmt_s hire_mlp_tiny --batch 32 --device cuda --amp

``--compare NAME`` times two implementations of a layer inside the same model side by side: the
steps alternate between the two (so both see the same machine), each seed with the layer gets the
median of each and their ratio, and the outputs of the two are checked to agree. ``mlp-layout``:
the channel MLPs (:class:`hvsearch.layers.common.MlpFFN`) as 1×1 convs on NCHW maps vs as
``Linear`` on channels-last tokens (the default)::

    python benchmarks/step_time.py --compare mlp-layout --resolutions 32 native --batch 64 \
        --out results/benchmarks/step-time/mlp_layout.csv
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


def _mlp_layout(model, variant: str) -> int:
    from hvsearch.layers.common import set_mlp_layout

    return set_mlp_layout(model, variant)


def _idconv_mix(model, variant: str) -> int:
    from hvsearch.families.transxnet.layers import IDConv

    layers = [m for m in model.modules() if isinstance(m, IDConv) and m.groups > 1]
    for m in layers:
        m.mix_impl = variant
    return len(layers)


# name -> (the two variants, the setter: (model, variant) -> how many layers it switched)
COMPARISONS = {"mlp-layout": (("conv", "linear"), _mlp_layout), "idconv-mix": (("einsum", "mulsum"), _idconv_mix)}


def compare_step(model, x, variants, setter, repeats: int, warmup: int, amp: bool) -> dict[str, float]:
    """Median seconds per forward+backward step of each variant, the steps interleaved."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(warmup + repeats):
        for v in variants if i % 2 == 0 else variants[::-1]:
            setter(model, v)
            times[v].append(time_step(model, x, 1, 0, amp))
    return {v: statistics.median(t[warmup:]) for v, t in times.items()}


def run_compare(args, device) -> None:
    variants, setter = COMPARISONS[args.compare]
    rows = []
    for name in args.seeds or seed_names():
        spec = get_seed(name).spec
        model = build_model(spec, num_classes=10).to(device)
        if not setter(model, variants[0]):
            print(f"{name:16s} has no {args.compare} layer: skipped", flush=True)
            continue
        for r in args.resolutions:
            res = spec.resolution if r == "native" else int(r)
            x = torch.randn(args.batch, 3, res, res, device=device)
            model.eval()
            with torch.no_grad():
                outs = [(setter(model, v), model(x))[1] for v in variants]
            diff = float((outs[0] - outs[1]).abs().max())
            model.train()
            load = os.getloadavg()[0] if device.type == "cpu" else float("nan")
            sec = compare_step(model, x, variants, setter, args.repeats, args.warmup, args.amp)
            a, b = variants
            row = {"seed": name, "device": device.type, "threads": torch.get_num_threads(), "batch": args.batch,
                   "resolution": res, f"{a}_ms": 1e3 * sec[a], f"{b}_ms": 1e3 * sec[b],
                   "speedup": sec[a] / sec[b], "max_abs_diff": diff, "load_1min": load,
                   "load_1min_after": os.getloadavg()[0] if device.type == "cpu" else float("nan")}
            rows.append(row)
            print(f"{name:16s} {res:4d}px  {a} {1e3 * sec[a]:8.1f} ms  {b} {1e3 * sec[b]:8.1f} ms  "
                  f"{a}/{b} {sec[a] / sec[b]:.2f}x  (outputs differ by {diff:.1e})", flush=True)
    report(rows, args.out, float_format="{:.3g}")


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
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compare", choices=sorted(COMPARISONS), help="time two implementations of a layer side "
                    "by side (see above)")
    ap.add_argument("--out", default=None, help="CSV path (default results/benchmarks/step_time.csv, with "
                    "--compare results/benchmarks/step-time/<name>.csv)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or (f"results/benchmarks/step-time/{args.compare}.csv" if args.compare
                            else "results/benchmarks/step_time.csv")

    device = torch.device(args.device)
    if args.compare:
        return run_compare(args, device)
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
