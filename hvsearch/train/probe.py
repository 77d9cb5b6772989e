"""A linear probe on raw pixels: how much of a data set a linear classifier can solve.

Multinomial logistic regression on standardised pixel values of the training subset, fitted in
full batch with L-BFGS for each of a few L2 strengths; the best validation top-1 is returned,
which flatters the probe (the strength is picked on the validation split). The embedded synthetic
set is built so that this stays at chance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hvsearch.train.config import DataConfig
from hvsearch.train.data import load_data

L2_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)


def _matrix(dataset, resolution: int, in_memory: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from hvsearch.train.augment import as_validated

    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    x = as_validated(torch.stack(images), resolution, in_memory).float()
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    return x.flatten(1), torch.tensor(labels)


def pixel_linear_probe(data: DataConfig, resolution: int = 32, iterations: int = 200,
                       l2_strengths=L2_STRENGTHS, seed: int = 0, fraction: float = 1.0) -> dict[str, float]:
    """Fit the probe on ``data``'s training split (the ``fraction`` a proxy run with
    ``train.fraction`` trains on) for each of ``l2_strengths``; return the best ``val_top1``
    with its ``train_top1`` (percent) and ``l2``. Any channel count: pixels are flattened."""
    splits = load_data(data, resolution, fraction)
    x_train, y_train = _matrix(splits.train, resolution, splits.in_memory)
    x_val, y_val = _matrix(splits.val, resolution, splits.in_memory)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    best = {"val_top1": -1.0}
    for l2 in l2_strengths:
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x_train.shape[1], splits.num_classes)
        opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(linear(x_train), y_train) + l2 * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            train_top1 = 100.0 * (linear(x_train).argmax(1) == y_train).float().mean().item()
            val_top1 = 100.0 * (linear(x_val).argmax(1) == y_val).float().mean().item()
        if val_top1 > best["val_top1"]:
            best = {"train_top1": train_top1, "val_top1": val_top1, "l2": l2}
    return best
