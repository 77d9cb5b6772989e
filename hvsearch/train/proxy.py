"""Proxy training: train one architecture briefly, validate after every epoch.

:func:`train_proxy` reads top to bottom: data, model, optimizer and schedule, an optional resume,
then per epoch :func:`train_one_epoch`, :func:`evaluate`, a checkpoint and a report. The recipe is
timm's: AdamW from ``create_optimizer_v2`` (no weight decay on norms, biases and the model's
``no_weight_decay`` set), a per-step cosine schedule with linear warm-up from
``create_scheduler_v2``, label smoothing or mixup/CutMix, drop-path, gradient clipping; bf16
autocast and channels-last on CUDA; ``torch.compile`` on request.

Determinism: the weights come from ``train.seed``; each epoch re-seeds the batch order, the
augmentations, drop-path (torch's global RNG) and timm's ``Mixup`` (NumPy's global RNG) from
``(seed, epoch)``, so on CPU a run resumed from a checkpoint ends bit-identical to an
uninterrupted one. On CUDA the usual nondeterminism of some kernels remains.

Threads: the caller's ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` are left as they are.
Nothing is printed unless ``verbose`` (the CLI's progress bar and per-epoch lines, on stderr).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hvsearch._compat import patch_torchvision

patch_torchvision()  # before timm, whoever imports this module first

from timm.data import Mixup  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402
from torch import nn  # noqa: E402

from hvsearch.arch import ModelSpec  # noqa: E402
from hvsearch.errors import TrainingError  # noqa: E402
from hvsearch.models import build_model  # noqa: E402
from hvsearch.train.augment import EvalTransform, TrainTransform  # noqa: E402
from hvsearch.train.config import DataConfig, TrainConfig  # noqa: E402
from hvsearch.train.data import derive_seed, iterate, load_data, make_loaders  # noqa: E402

CHECKPOINT_NAME = "checkpoint.pt"
#: The running training loss is checked for NaN/inf every this many steps: one host sync each,
#: instead of one per step, which would stall a GPU's queue.
LOSS_CHECK_EVERY = 10
#: Settings that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {"train": ("device", "workers", "compile"), "data": ("root",)}


@dataclass
class TrainResult:
    """What a proxy run measured. ``metrics`` is the last epoch's report."""

    arch_id: str
    params: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_top1: float = 0.0
    checkpoint: Path | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def train_proxy(spec: ModelSpec, train: TrainConfig, data: DataConfig,
                report: Callable[[dict], Any] | None = None, checkpoint_dir: str | Path | None = None,
                resume: bool = True, *, verbose: bool = False) -> TrainResult:
    """Train ``spec`` with ``train`` on ``data``; call ``report(metrics)`` after every epoch.

    The model is ``spec`` with the data's class and channel counts (``num_classes``,
    ``in_chans``), built at ``spec.resolution`` and trained and validated at
    ``train.resolution``; that spec is what the checkpoint and :attr:`TrainResult.arch_id` name.

    ``metrics`` has exactly :data:`hvsearch.train.config.METRIC_KEYS`: ``epoch`` (1-based), ``train_loss`` (mean over
    the epoch), ``val_top1`` / ``val_top5`` (percent), ``images_per_s`` (training throughput,
    augmentation included) and ``wall_time`` (seconds since the run started, carried over a
    resume). With ``checkpoint_dir``, model, optimizer, epoch and history are saved there after
    every epoch and, with ``resume``, a run picks up from them; a finished run returns at once.

    Raises :class:`~hvsearch.errors.TrainingError` on a non-finite loss, CUDA running out of
    memory or a checkpoint from a different run; :class:`~hvsearch.errors.DataError` on bad data.
    """
    started = time.perf_counter()
    device = resolve_device(train.device)
    amp = train.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    channels_last = train.channels_last and device.type == "cuda"

    # -- data -------------------------------------------------------------------------------
    splits = load_data(data, train.resolution, train.fraction)
    spec = spec.replace(num_classes=splits.num_classes, in_chans=splits.in_chans)
    batch_size = fit_batch_size(train, len(splits.train))
    train_loader, val_loader, sampler = make_loaders(splits, batch_size, train.workers, device, train.seed)
    steps_per_epoch = min(len(train_loader), train.max_steps_per_epoch or len(train_loader))
    train_tf = TrainTransform(
        train.resolution, splits.mean, splits.std,
        crop_scale=train.crop_scale if train.crop_scale is not None else splits.crop_scale,
        hflip=train.hflip if train.hflip is not None else splits.hflip,
        mixup=Mixup(mixup_alpha=train.mixup, cutmix_alpha=train.cutmix, label_smoothing=train.label_smoothing,
                    num_classes=splits.num_classes) if train.mixes else None)
    eval_tf = EvalTransform(train.resolution, splits.mean, splits.std)

    # -- model, loss, optimizer, schedule ---------------------------------------------------
    model, forward, criterion, optimizer, scheduler = build_training(spec, train, splits.num_classes,
                                                                     steps_per_epoch, device)
    params = sum(p.numel() for p in model.parameters())

    # -- resume -----------------------------------------------------------------------------
    result = TrainResult(arch_id=spec.arch_id, params=params)
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start_epoch, wall_offset = 0, 0.0
    if ckpt is not None and resume and ckpt.exists():
        state = load_checkpoint(ckpt, model, optimizer, spec, train, data, device)
        start_epoch, result.history = state["epoch"], state["history"]
        wall_offset = result.history[-1]["wall_time"] if result.history else 0.0
    result.checkpoint = ckpt
    log = _Log(verbose, train.epochs, steps_per_epoch)
    log.start(spec, params, data, splits, batch_size, device, train.resolution, start_epoch)

    # -- epochs -----------------------------------------------------------------------------
    out_of_memory = None
    try:
        for epoch in range(start_epoch, train.epochs):
            generator = seed_epoch(train.seed, epoch, device)
            sampler.set_epoch(epoch)
            train_loss, images_per_s = train_one_epoch(
                model, forward, train_loader, steps_per_epoch, train_tf, criterion, optimizer, scheduler,
                epoch=epoch, device=device, amp=amp, channels_last=channels_last, grad_clip=train.grad_clip,
                generator=generator, log=log)
            val_top1, val_top5 = evaluate(forward, val_loader, eval_tf, device=device, amp=amp,
                                          channels_last=channels_last)
            metrics = {"epoch": epoch + 1, "train_loss": train_loss, "val_top1": val_top1, "val_top5": val_top5,
                       "images_per_s": images_per_s, "wall_time": wall_offset + time.perf_counter() - started}
            result.history.append(metrics)
            if ckpt is not None:
                save_checkpoint(ckpt, model, optimizer, spec, train, data, epoch + 1, result.history)
            log.epoch(metrics)
            if report is not None:
                report(dict(metrics))
    except torch.OutOfMemoryError as e:
        # Leave the except block before freeing: its traceback holds the batch's tensors.
        out_of_memory = str(e).splitlines()[0]
    if out_of_memory is not None:
        del forward, model, optimizer
        torch.cuda.empty_cache()
        raise TrainingError(f"CUDA out of memory at batch size {batch_size}, resolution {train.resolution} "
                            f"({out_of_memory}); lower train.batch_size or train.resolution")
    result.best_val_top1 = max((m["val_top1"] for m in result.history), default=0.0)
    return result


def train_one_epoch(model: nn.Module, forward: Callable, loader, steps: int, transform: TrainTransform,
                    criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler, *, epoch: int,
                    device: torch.device, amp: bool, channels_last: bool, grad_clip: float,
                    generator: torch.Generator, log: "_Log | None" = None) -> tuple[float, float]:
    """``steps`` optimizer steps; returns (mean training loss, training images per second)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    images_seen = 0
    t0 = time.perf_counter()
    for step, (images, labels) in enumerate(islice(iterate(loader), steps)):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x, targets = transform(images, labels, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = criterion(forward(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step_update(num_updates=epoch * steps + step + 1)
        loss_sum += loss.detach().float()
        images_seen += images.shape[0]
        if (step + 1) % LOSS_CHECK_EVERY == 0 or step + 1 == steps:
            mean_loss = loss_sum.item() / (step + 1)
            if not math.isfinite(mean_loss):
                first = max(1, step + 2 - LOSS_CHECK_EVERY)
                raise TrainingError(
                    f"training loss became {mean_loss} in epoch {epoch + 1}, steps {first}-{step + 1} "
                    f"(lr {optimizer.param_groups[0]['lr']:.3g} at that step, peak "
                    f"{optimizer.param_groups[0].get('initial_lr', optimizer.param_groups[0]['lr']):.3g}); "
                    f"lower train.lr, lengthen train.warmup_epochs or set train.grad_clip")
            if log is not None:
                log.step(epoch, step + 1, mean_loss)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return loss_sum.item() / max(1, steps), images_seen / seconds


@torch.no_grad()
def evaluate(forward: Callable, loader, transform: EvalTransform, *, device: torch.device, amp: bool,
             channels_last: bool) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent) over the whole loader."""
    model = getattr(forward, "_orig_mod", forward)
    model.eval()
    top1 = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    total = 0
    for images, labels in iterate(loader):
        labels = labels.to(device, non_blocking=True)
        x = transform(images.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = forward(x)
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = best == labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        total += labels.shape[0]
    return 100.0 * top1.item() / total, 100.0 * top5.item() / total


# ---- set-up helpers -------------------------------------------------------------------------

def build_training(spec: ModelSpec, train: TrainConfig, num_classes: int, steps_per_epoch: int,
                   device: torch.device):
    """The model (weights from ``train.seed``, on ``device``), the callable that runs it
    (compiled if asked), the loss, AdamW and the per-step cosine schedule with warm-up."""
    torch.manual_seed(train.seed)
    model = build_model(spec, num_classes=num_classes, drop_path_rate=train.drop_path).to(device)
    if train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if train.compile else model
    if train.mixes:
        criterion = SoftTargetCrossEntropy()  # Mixup made smoothed soft targets
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=train.lr, weight_decay=train.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=train.epochs,
                                       warmup_epochs=train.warmup_epochs, warmup_lr=train.warmup_lr,
                                       min_lr=train.min_lr, step_on_epochs=False,
                                       updates_per_epoch=steps_per_epoch)
    return model, forward, criterion, optimizer, scheduler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise TrainingError(f"train.device is cuda, but no CUDA device is available (torch "
                            f"{torch.__version__}, {build}); use device cpu or auto")
    return torch.device(name)


def fit_batch_size(train: TrainConfig, n_train: int) -> int:
    """``train.batch_size``, lowered to the training subset's size when that is smaller (a small
    ``fraction`` of a small set), and even when mixing (timm's Mixup pairs images)."""
    batch_size = min(train.batch_size, n_train)
    if train.mixes:
        batch_size -= batch_size % 2
    if batch_size < (2 if train.mixes else 1):
        raise TrainingError(f"the training subset has {n_train} image(s), too few for a batch; "
                            "raise train.fraction or lower data.val_split")
    return batch_size


def seed_epoch(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """Seed everything random in an epoch from (seed, epoch); returns the augmentation generator."""
    torch.manual_seed(derive_seed(seed, epoch, 2))  # drop-path, dropout
    np.random.seed(derive_seed(seed, epoch, 3))  # timm's Mixup draws from NumPy's global RNG
    return torch.Generator(device=device).manual_seed(derive_seed(seed, epoch, 4))


# ---- checkpoints ----------------------------------------------------------------------------

def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, spec: ModelSpec,
                    train: TrainConfig, data: DataConfig, epoch: int, history: list[dict]) -> None:
    """Model, optimizer, completed epochs and history, plus what the run was (arch, configs);
    written to a temporary file and renamed, so an interrupted save never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "history": history, "arch": spec.to_dict(), "arch_id": spec.arch_id,
             "train": train.to_dict(), "data": data.to_dict()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, spec: ModelSpec,
                    train: TrainConfig, data: DataConfig, device: torch.device) -> dict:
    """Restore model and optimizer from ``path`` after checking it was written by this run."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        keys = ("model", "optimizer", "epoch", "history", "arch_id", "train", "data")
        missing = [k for k in keys if k not in state]
        if missing:
            raise KeyError(", ".join(missing))
    except Exception as e:  # torch.load raises many types on a damaged or foreign file
        raise TrainingError(f"cannot resume from {path}: not a readable hvsearch checkpoint ({e}); "
                            "delete it or start over without resuming (CLI: --no-resume)") from None
    if state["arch_id"] != spec.arch_id:
        raise TrainingError(f"cannot resume from {path}: it was written for architecture "
                            f"{state['arch_id']}, not {spec.arch_id}; start over without resuming "
                            "(CLI: --no-resume) or use another checkpoint folder")
    for section, now in (("train", train.to_dict()), ("data", data.to_dict())):
        then = state[section]
        for key, value in now.items():
            if key not in RESUMABLE_CHANGES[section] and then.get(key) != value:
                raise TrainingError(f"cannot resume from {path}: it was written with {section}.{key} = "
                                    f"{then.get(key)!r}, this run has {value!r}; start over without "
                                    "resuming (CLI: --no-resume) or use another checkpoint folder")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


# ---- progress -------------------------------------------------------------------------------

class _Log:
    """The CLI's view of a run on stderr: a header, progress within each epoch
    (:class:`~hvsearch.progress.Progress`: a bar on a terminal, a line every
    ``HVSEARCH_PROGRESS_S`` seconds in a log) and one line per epoch. Silent unless ``enabled``."""

    def __init__(self, enabled: bool, epochs: int, steps: int):
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self._bar = None
        self._bar_epoch = -1

    def _print(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def start(self, spec, params, data, splits, batch_size, device, resolution, start_epoch) -> None:
        if not self.enabled:
            return
        name = spec.name or spec.arch_id
        built = f"built at {spec.resolution} px, " if spec.resolution != resolution else ""
        self._print(f"{name}: {params / 1e6:.3f} M params ({built}trained at {resolution} px); {data.name}: "
                    f"{len(splits.train)} train / {len(splits.val)} val images, {splits.num_classes} classes, "
                    f"{splits.in_chans} channel{'s' if splits.in_chans > 1 else ''}; "
                    f"batch {batch_size}, {self.steps} steps/epoch on {device}")
        for note in splits.notes:
            self._print(f"note: {note}")
        if start_epoch:
            self._print(f"resuming after epoch {start_epoch}/{self.epochs}")

    def step(self, epoch: int, step: int, loss: float) -> None:
        if not self.enabled:
            return
        if self._bar_epoch != epoch:
            from hvsearch.progress import Progress

            self._close()
            self._bar = Progress(self.steps, f"epoch {epoch + 1}/{self.epochs}: step", unit="step",
                                 last_line=False)
            self._bar_epoch = epoch
        self._bar.update(step - self._bar.n, note=f"loss {loss:.4f}")

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def epoch(self, m: dict) -> None:
        if not self.enabled:
            return
        self._close()
        self._print(f"epoch {m['epoch']}/{self.epochs}  loss {m['train_loss']:.4f}  "
                    f"val top-1 {m['val_top1']:.2f}%  top-5 {m['val_top5']:.2f}%  "
                    f"{m['images_per_s']:.0f} img/s  {m['wall_time']:.0f} s")
