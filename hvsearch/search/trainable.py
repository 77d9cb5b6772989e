"""What one Ray Tune trial runs, in a worker process: proxy-train an admitted architecture.

The driver has already validated the architecture and counted its cost (see
:mod:`hvsearch.search.searcher`); the worker builds it, trains it with
:func:`hvsearch.train.proxy.train_proxy` and reports every epoch to Tune, adding the cost and the
node it runs on. Errors propagate: Tune marks the trial ERROR and the searcher records the reason.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def train_trial(config: dict[str, Any], train: dict[str, Any], data: dict[str, Any],
                checkpoint_root: str | None = None) -> None:
    import hvsearch  # noqa: F401  (the import hook that makes timm importable, in this worker too)
    import ray
    from ray import tune

    from hvsearch.arch import ModelSpec
    from hvsearch.train.config import DataConfig, TrainConfig
    from hvsearch.train.proxy import train_proxy

    spec = ModelSpec.from_dict(config["arch"])
    extra = {"flops": config["flops"], "n_params": config["n_params"], "latency_ms": config.get("latency_ms"),
             "node_id": ray.get_runtime_context().get_node_id()}

    ckpt = Path(checkpoint_root) / config["arch_id"] if checkpoint_root else None
    # A re-queued trial resumes from its checkpoint; the epochs it holds go with the first report,
    # so the study gets the whole curve (one may have been saved but never reported).
    prior = _checkpointed_history(ckpt)
    reported = []

    def report(metrics: dict[str, Any]) -> None:
        first = {"prior_history": prior} if prior and not reported else {}
        reported.append(metrics["epoch"])
        tune.report({**metrics, **extra, **first})

    # A trial trains at the resolution its architecture is built for: the space's
    # train.resolution in a search, the candidate's own size in `scale --grid`.
    train_cfg = dataclasses.replace(TrainConfig.from_dict(train, path="train"), resolution=spec.resolution)
    result = train_proxy(spec, train_cfg, DataConfig.from_dict(data, path="data"),
                         report=report, checkpoint_dir=ckpt, resume=True)
    if not reported and result.history:
        # Re-queued after its last epoch was checkpointed but before the driver heard of it: the
        # checkpoint holds the finished run, so report its last epoch instead of training again.
        tune.report({**result.history[-1], **extra, "prior_history": result.history})


def _checkpointed_history(ckpt: Path | None) -> list[dict]:
    from hvsearch.train.proxy import CHECKPOINT_NAME

    if ckpt is None or not (ckpt / CHECKPOINT_NAME).is_file():
        return []
    import torch

    try:
        return list(torch.load(ckpt / CHECKPOINT_NAME, map_location="cpu", weights_only=True)["history"])
    except Exception:  # unreadable: train_proxy reports it properly when it tries to resume
        return []
