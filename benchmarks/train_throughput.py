"""Proxy-training throughput per catalog seed: training images/s at the proxy resolution (32 px)
and at each seed's native resolution, on CPU and, when present, on CUDA.

Each measurement runs the proxy's own epoch loop (:func:`hvsearch.train.proxy.train_one_epoch`:
batch transform, forward, loss, backward, gradient clipping, AdamW, schedule) on random uint8
images held in memory, so it is what a proxy trial's ``images_per_s`` would be without data
loading. One untimed warm-up pass, then ``--repeats`` timed passes of ``--steps`` steps; the table
gives the median and the range. The CPU's 1-minute load average is recorded before each pass and
the run waits (up to ``--max-wait`` s) for it to fall below the core count: other processes on a
small machine inflate step times.

On CUDA the proxy's defaults apply (bf16 autocast, channels-last); a batch that does not fit is
recorded as ``OOM``.

    python benchmarks/train_throughput.py                          # every seed, cpu (+ cuda)
    python benchmarks/train_throughput.py --seeds cmt_ti hire_mlp_tiny --devices cpu --threads 1
    python benchmarks/train_throughput.py --resolutions 32 --threads 1 --out results/benchmarks/t1.csv
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import hvsearch  # noqa: F401  (before timm)
import torch
from torch.utils.data import DataLoader, TensorDataset

from hvsearch.models import get_seed, seed_names
from hvsearch.train import TrainConfig
from hvsearch.train.augment import TrainTransform
from hvsearch.train.proxy import build_training, train_one_epoch

from _report import cpu_count, report  # benchmarks/_report.py

NUM_CLASSES = 10  # like CIFAR-10 and the synthetic set; the head's size barely matters


def wait_for_quiet(max_wait: float) -> float:
    """Wait until the 1-minute load average is below the core count (or ``max_wait`` passed);
    return the load average then."""
    cores = cpu_count()
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= cores and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def measure(spec, resolution: int, batch: int, device: torch.device, steps: int, repeats: int,
            max_wait: float) -> dict:
    train = TrainConfig(resolution=resolution, batch_size=batch, device=device.type, epochs=1)
    model, forward, criterion, optimizer, scheduler = build_training(spec, train, NUM_CLASSES, steps, device)
    images = torch.randint(0, 256, (batch * steps, 3, resolution, resolution), dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (batch * steps,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch, drop_last=True,
                        pin_memory=device.type == "cuda")
    transform = TrainTransform(resolution, (0.5,) * 3, (0.25,) * 3, crop_scale=(0.35, 1.0), hflip=0.5)
    amp = train.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    channels_last = train.channels_last and device.type == "cuda"
    generator = torch.Generator(device=device).manual_seed(0)

    def one_pass() -> float:
        return train_one_epoch(model, forward, loader, steps, transform, criterion, optimizer, scheduler,
                               epoch=0, device=device, amp=amp, channels_last=channels_last,
                               grad_clip=train.grad_clip, generator=generator)[1]

    one_pass()  # warm-up: allocator, kernels, lazy initialisation
    rates, loads = [], []
    for _ in range(repeats):
        loads.append(wait_for_quiet(max_wait) if device.type == "cpu" else float("nan"))
        rates.append(one_pass())
    return {"params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "images_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "ms_per_step": 1e3 * batch / statistics.median(rates), "load_1min": max(loads)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="*", default=None, help="default: every seed")
    ap.add_argument("--devices", nargs="*", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    ap.add_argument("--resolutions", nargs="*", default=["32", "native"], help="sizes: numbers or `native`")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--proxy-batch", type=int, nargs=2, default=(64, 256), metavar=("CPU", "CUDA"),
                    help="batch at 32 px on CPU and on CUDA (default 64 256)")
    ap.add_argument("--native-batch", type=int, nargs=2, default=(8, 64), metavar=("CPU", "CUDA"),
                    help="batch at native resolution on CPU and on CUDA (default 8 64)")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed pass")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per measurement")
    ap.add_argument("--max-wait", type=float, default=60.0, help="longest wait for a quiet CPU, seconds")
    ap.add_argument("--out", default="results/benchmarks/train_throughput.csv")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for name in args.seeds or seed_names():
        seed = get_seed(name)
        for dev in args.devices:
            device = torch.device(dev)
            col = 0 if dev == "cpu" else 1
            for r in args.resolutions:
                res = seed.spec.resolution if r == "native" else int(r)
                batch = (args.native_batch if r == "native" else args.proxy_batch)[col]
                row = {"seed": name, "family": seed.family, "device": dev,
                       "threads": torch.get_num_threads() if dev == "cpu" else None,
                       "resolution": res, "batch": batch}
                try:
                    row.update(measure(seed.spec, res, batch, device, args.steps, args.repeats, args.max_wait))
                except torch.OutOfMemoryError:
                    row.update({"images_per_s": "OOM"})
                    torch.cuda.empty_cache()
                rows.append(row)
                rate = row["images_per_s"]
                print(f"{name:16s} {dev:4s} {res:4d}px batch {batch:4d}  "
                      + (f"{rate:9.1f} img/s  (load {row['load_1min']:.1f})" if rate != "OOM" else "OOM"),
                      flush=True)
    report(rows, args.out)


if __name__ == "__main__":
    main()
