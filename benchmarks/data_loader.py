"""Training-loader throughput beside the training step's: can the data keep up with the model?

For each data set (default: the embedded synthetic set and Fashion-MNIST) at 32 px:

* ``loader_img_s``: images/s of the training loader alone, as :func:`hvsearch.train.proxy.train_proxy`
  uses it: the DataLoader of :func:`hvsearch.train.data.make_loaders` (epoch sampler, full
  batches, the proxy's choice of workers unless ``--workers``) and the data set's
  :class:`~hvsearch.train.augment.TrainTransform` (its default crop, flip, normalisation);
* ``step_img_s``: images/s of the proxy's training step on batches already in memory
  (:func:`hvsearch.train.proxy.train_one_epoch`: transform, forward, loss, backward, clipping,
  AdamW), for one small hybrid (default: the ``cmt_ti`` seed rebuilt at 32 px for the data's
  classes and channels);
* ``loader/step``: their ratio. Above 1 the loader outruns the step; with workers=0 the two run
  one after the other, so a proxy epoch runs at about ``1 / (1/loader + 1/step)`` images/s (the
  transform is in both numbers: this slightly undercounts); far above 1, loading is not what to
  optimise.

One untimed warm-up pass each, then ``--repeats`` timed passes of ``--steps`` batches; medians.
The CPU's 1-minute load average is recorded before each pass and the run waits (up to
``--max-wait`` s) for it to fall below the core count, as in ``train_throughput.py``.

    python benchmarks/data_loader.py --threads 1
    python benchmarks/data_loader.py --datasets fashion_mnist --data-root ~/data/fashion_mnist --steps 50
"""
from __future__ import annotations

import argparse
import statistics
import time

import hvsearch  # noqa: F401  (before timm)
import torch
from torch.utils.data import DataLoader

from hvsearch.arch_ref import resolve
from hvsearch.train import DataConfig, TrainConfig
from hvsearch.train.augment import TrainTransform
from hvsearch.train.data import iterate, load_data, make_loaders
from hvsearch.train.proxy import build_training, train_one_epoch

from _report import report  # benchmarks/_report.py
from train_throughput import wait_for_quiet  # benchmarks/train_throughput.py

RESOLUTION = 32


def timed_passes(one_pass, repeats: int, max_wait: float) -> tuple[list[float], list[float]]:
    """Run ``one_pass`` (returning images/s) once untimed, then ``repeats`` times; rates and the
    load averages before each."""
    one_pass()  # warm-up: allocator, lazy initialisation, worker start
    rates, loads = [], []
    for _ in range(repeats):
        loads.append(wait_for_quiet(max_wait))
        rates.append(one_pass())
    return rates, loads


def measure_loader(splits, batch: int, steps: int, workers: int | None, repeats: int, max_wait: float) -> dict:
    device = torch.device("cpu")
    loader, _, sampler = make_loaders(splits, batch, workers, device, seed=0)
    transform = TrainTransform(RESOLUTION, splits.mean, splits.std, crop_scale=splits.crop_scale, hflip=splits.hflip)
    generator = torch.Generator().manual_seed(0)
    steps = min(steps, len(loader))
    epoch = 0

    def one_pass() -> float:
        nonlocal epoch
        sampler.set_epoch(epoch)
        epoch += 1
        seen = 0
        t0 = time.perf_counter()
        for i, (images, labels) in enumerate(iterate(loader)):
            x, _ = transform(images, labels, generator)
            seen += x.shape[0]
            if i + 1 == steps:
                break
        return seen / (time.perf_counter() - t0)

    rates, loads = timed_passes(one_pass, repeats, max_wait)
    return {"workers": loader.num_workers, "loader_img_s": statistics.median(rates), "load_1min": max(loads)}


def measure_step(arch: str, splits, batch: int, steps: int, repeats: int, max_wait: float) -> dict:
    device = torch.device("cpu")
    spec = resolve(arch).replace(resolution=RESOLUTION, num_classes=splits.num_classes,
                                       in_chans=splits.in_chans).validate()
    train = TrainConfig(resolution=RESOLUTION, batch_size=batch, device="cpu", epochs=1)
    model, forward, criterion, optimizer, scheduler = build_training(spec, train, splits.num_classes, steps, device)
    first = [splits.train[i] for i in range(min(len(splits.train), batch * steps))]
    batches = list(DataLoader(first, batch_size=batch, drop_last=True))  # in memory: no loading timed
    transform = TrainTransform(RESOLUTION, splits.mean, splits.std, crop_scale=splits.crop_scale, hflip=splits.hflip)
    generator = torch.Generator().manual_seed(0)

    def one_pass() -> float:
        return train_one_epoch(model, forward, batches, len(batches), transform, criterion, optimizer, scheduler,
                               epoch=0, device=device, amp=False, channels_last=False, grad_clip=train.grad_clip,
                               generator=generator)[1]

    rates, loads = timed_passes(one_pass, repeats, max_wait)
    return {"arch": arch, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "step_img_s": statistics.median(rates), "step_load_1min": max(loads)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=["synthetic", "fashion_mnist"])
    ap.add_argument("--data-root", default=None, help="root of the (single) non-synthetic data set; "
                    "default: the data set's own lookup ($HVSEARCH_DATA, /usr/share/datasets)")
    ap.add_argument("--arch", default="cmt_ti", help="seed or architecture file whose training step is timed (rebuilt at 32 px), "
                    "e.g. a search's best.yaml")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="batches per timed pass")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per measurement")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the proxy's choice)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--max-wait", type=float, default=60.0, help="longest wait for a quiet CPU, seconds")
    ap.add_argument("--out", default="results/benchmarks/data_loader.csv")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for name in args.datasets:
        root = args.data_root if name != "synthetic" else None
        splits = load_data(DataConfig(name=name, root=root, val_split=0.1), RESOLUTION)
        row = {"dataset": name, "in_chans": splits.in_chans, "train_images": len(splits.train),
               "threads": torch.get_num_threads(), "batch": args.batch}
        row.update(measure_loader(splits, args.batch, args.steps, args.workers, args.repeats, args.max_wait))
        row.update(measure_step(args.arch, splits, args.batch, args.steps, args.repeats, args.max_wait))
        row["loader/step"] = row["loader_img_s"] / row["step_img_s"]
        row["load_1min"] = max(row.pop("load_1min"), row.pop("step_load_1min"))
        rows.append(row)
        print(f"{name:14s} loader {row['loader_img_s']:9.0f} img/s  {args.arch} step {row['step_img_s']:7.1f} img/s  "
              f"ratio {row['loader/step']:.1f}  (load {row['load_1min']:.1f})", flush=True)
    report(rows, args.out)


if __name__ == "__main__":
    main()
