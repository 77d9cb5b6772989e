"""ConvMLP layers (Li et al., arXiv 2109.04454): the convolutional tokenizer, the conv-stage
bottleneck and the conv-MLP mixer.

Layout: NCHW maps between layers; the channel MLPs are the generic :class:`MlpFFN`, whose
parameters are 1×1 convs but which runs them as the official code's channels-last ``Linear``
layers (the same multiply-adds; much faster on a proxy's small maps).

Init follows the official code: Conv2d weights Kaiming-normal on fan-out for ReLU with PyTorch's
fan computation (out_channels · k², *not* divided by groups, so the depthwise connect starts
small) and biases left at PyTorch's default; layers that stand for Linear get trunc-normal 0.02
and zero bias; norms 1/0 (PyTorch's default).
"""
from __future__ import annotations

import torch
from torch import nn

from hvsearch.arch.components import hidden_width
from hvsearch.arch.common import MlpFFNConfig
from hvsearch.families.convmlp.config import ConvBottleneckConfig, ConvMLPMixerConfig, ConvMLPStemConfig
from hvsearch.layers.base import MixerModule
from hvsearch.layers.common import ConvBN, MlpFFN, init_weights
from hvsearch.layers.registry import register_module


def _kaiming_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@register_module("stem", "convmlp")
class ConvMLPStem(nn.Sequential):
    def __init__(self, cfg: ConvMLPStemConfig, in_chans: int):
        half = cfg.width // 2
        super().__init__(
            ConvBN(in_chans, half, 3, 2, act=nn.ReLU),
            ConvBN(half, half, 3, 1, act=nn.ReLU),
            ConvBN(half, cfg.width, 3, 1, act=nn.ReLU),
            nn.MaxPool2d(3, 2, 1),
        )
        _kaiming_convs(self)


@register_module("mixer", "conv_bottleneck")
class ConvBottleneck(MixerModule):
    """x + branch(x); the branch ends in ReLU (after its last BN), as in the official code."""

    owns_residual = True

    def __init__(self, cfg: ConvBottleneckConfig, dim: int, ctx, shared=None, norm=None, drop_path=None):
        super().__init__()
        # `norm` and `drop_path` are the block's generic ones; the official conv stage uses its
        # own BatchNorms and no stochastic depth, so both are deliberately unused.
        hidden = hidden_width(dim, cfg.ratio)
        self.branch = nn.Sequential(
            ConvBN(dim, hidden, 1, act=nn.ReLU),
            ConvBN(hidden, hidden, 3, act=nn.ReLU),
            ConvBN(hidden, dim, 1, act=nn.ReLU),
        )
        _kaiming_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


@register_module("mixer", "convmlp")
class ConvMLPMixer(MixerModule):
    """x ← x + DropPath(MLP₁(norm(x))); return dw3×3(norm(x)). The block adds MLP₂ with its own
    residual. ``drop_path`` is the block's module (same rate for both MLPs, as in the official
    block)."""

    owns_residual = True

    def __init__(self, cfg: ConvMLPMixerConfig, dim: int, ctx, shared=None, *, norm, drop_path: nn.Module):
        super().__init__()
        self.norm1 = norm()
        self.mlp = MlpFFN(MlpFFNConfig(ratio=cfg.ratio), dim, ctx)
        self.connect_norm = norm()
        self.connect = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.drop_path = drop_path
        init_weights(self.mlp, conv="trunc_normal")  # 1×1 convs standing for Linear layers
        _kaiming_convs(self.connect)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mlp(self.norm1(x)))
        return self.connect(self.connect_norm(x))
