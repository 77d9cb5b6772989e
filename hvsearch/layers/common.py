"""Small pieces every family uses: norms on NCHW maps, layer scale, init schemes, the generic
downsamples, the MLP FFN and the pooled head."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import nn

from hvsearch.arch.components import hidden_width
from hvsearch.arch.common import (
    ConvDownsampleConfig,
    ConvStemConfig,
    MlpFFNConfig,
    NoDownsampleConfig,
    NormPoolHeadConfig,
    PatchDownsampleConfig,
    PatchStemConfig,
)
from hvsearch.layers.base import HeadModule
from hvsearch.layers.registry import register_module

__all__ = ["DropPath", "LayerNorm2d", "LayerScale2d", "make_norm", "init_weights", "ConvBN"]


def make_norm(name: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """A norm over the channels of an NCHW map. ``groupnorm`` is GroupNorm with one group."""
    if name == "layernorm":
        return LayerNorm2d(dim, eps=eps)
    if name == "batchnorm":
        return nn.BatchNorm2d(dim, eps=eps)
    if name == "groupnorm":
        return nn.GroupNorm(1, dim, eps=eps)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}")


class LayerScale2d(nn.Module):
    """Per-channel affine ``x·γ + β`` on an NCHW map (γ starts at ``init``, β at 0)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim, 1, 1), float(init)))
        self.bias = nn.Parameter(torch.zeros(dim, 1, 1))

    def forward(self, x):
        return torch.addcmul(self.bias, x, self.weight)


class ConvBN(nn.Sequential):
    """conv → BN (→ act). ``bias`` defaults to off since BN follows."""

    def __init__(self, cin, cout, k=1, s=1, p=None, groups=1, bias=False, act: type[nn.Module] | None = None):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2 if p is None else p, groups=groups, bias=bias),
                  nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def init_weights(module: nn.Module, conv: str = "kaiming_fan_out", linear: str = "trunc_normal",
                 std: float = 0.02) -> None:
    """Initialise every Conv2d/Linear under ``module`` with a named scheme.

    Schemes: ``trunc_normal`` (std 0.02), ``kaiming_fan_out`` (He normal on fan-out as PyTorch's
    ``kaiming_normal_(mode="fan_out")`` counts it: out channels × kernel area, not divided by the
    groups — what CMT's and ConvMLP's code call; a depthwise conv starts small), both with biases
    0; ``torch_default`` (PyTorch's own initialisation again, biases included: Container's convs);
    ``default`` (leave the module as built).
    """
    for m in module.modules():
        scheme = conv if isinstance(m, nn.Conv2d) else linear if isinstance(m, nn.Linear) else None
        if scheme is None or scheme == "default":
            continue
        if scheme == "torch_default":
            m.reset_parameters()
            continue
        if scheme == "trunc_normal":
            trunc_normal_(m.weight, std=std)
        elif scheme == "kaiming_fan_out":
            fan_out = m.weight.shape[0] * math.prod(m.weight.shape[2:])
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@register_module("stem", "conv")
class ConvStem(nn.Sequential):
    def __init__(self, cfg: ConvStemConfig, in_chans: int):
        layers = [nn.Conv2d(in_chans, cfg.width, cfg.kernel, cfg.stride, cfg.padding, bias=cfg.bias),
                  make_norm(cfg.norm, cfg.width)]
        if cfg.act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        init_weights(self)


@register_module("stem", "patch")
class PatchStem(nn.Sequential):
    def __init__(self, cfg: PatchStemConfig, in_chans: int):
        super().__init__(nn.Conv2d(in_chans, cfg.width, cfg.stride, cfg.stride), make_norm(cfg.norm, cfg.width))
        init_weights(self)


@register_module("downsample", "none")
class NoDownsample(nn.Identity):
    def __init__(self, cfg: NoDownsampleConfig, in_dim: int, out_dim: int):
        super().__init__()


@register_module("downsample", "patch")
class PatchDownsample(nn.Sequential):
    def __init__(self, cfg: PatchDownsampleConfig, in_dim: int, out_dim: int):
        super().__init__(nn.Conv2d(in_dim, out_dim, cfg.stride, cfg.stride), make_norm(cfg.norm, out_dim))
        init_weights(self)


@register_module("downsample", "conv3")
class ConvDownsample(nn.Sequential):
    def __init__(self, cfg: ConvDownsampleConfig, in_dim: int, out_dim: int):
        layers = [nn.Conv2d(in_dim, out_dim, 3, 2, 1, bias=cfg.bias), make_norm(cfg.norm, out_dim)]
        if cfg.act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        init_weights(self)


@register_module("ffn", "mlp")
class MlpFFN(nn.Sequential):
    """Per-token MLP: 1×1 conv → GELU → 1×1 conv, the papers' two Linear layers.

    The parameters are those of the 1×1 convs (``0.weight`` is hidden × dim × 1 × 1, as the
    official conv-form code has them), but :attr:`layout` ``"linear"`` (the default) computes
    them as ``Linear`` layers on channels-last tokens: a 1×1 conv on the small maps of a 32-px
    proxy is 1.9–3.5× slower than the same matmul, and the permutes around it are views (a
    preceding ``LayerNorm2d`` already leaves channels-last memory). Same multiply-adds, same
    outputs to float rounding; ``"conv"`` keeps the conv form (``benchmarks/step_time.py
    --compare mlp-layout`` times the two; :func:`set_mlp_layout` switches a whole model)."""

    def __init__(self, cfg: MlpFFNConfig, dim: int, ctx):
        hidden = hidden_width(dim, cfg.ratio)
        super().__init__(nn.Conv2d(dim, hidden, 1, bias=cfg.bias), nn.GELU(),
                         nn.Conv2d(hidden, dim, 1, bias=cfg.bias))
        self.layout = "linear"
        # 1×1 convs are the papers' Linear layers: trunc-normal as every family inits those
        init_weights(self, conv="trunc_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "conv":
            return self[2](self[1](self[0](x)))
        x = F.linear(x.permute(0, 2, 3, 1), self[0].weight.flatten(1), self[0].bias)
        x = F.linear(self[1](x), self[2].weight.flatten(1), self[2].bias)
        return x.permute(0, 3, 1, 2)


def set_mlp_layout(model: nn.Module, layout: str) -> int:
    """Set every :class:`MlpFFN` under ``model`` to ``layout`` (``linear`` or ``conv``); returns
    how many it set. The parameters are the same in both, so a trained model can switch."""
    if layout not in ("linear", "conv"):
        raise ValueError(f"layout must be linear or conv, got {layout!r}")
    mlps = [m for m in model.modules() if isinstance(m, MlpFFN)]
    for m in mlps:
        m.layout = layout
    return len(mlps)


@register_module("head", "norm_pool")
class NormPoolHead(HeadModule):
    """norm → global average pool → dropout → linear classifier."""

    def __init__(self, cfg: NormPoolHeadConfig, in_dim: int, num_classes: int, global_pool: str = "avg"):
        super().__init__()
        self.num_features = in_dim
        self.norm = make_norm(cfg.norm, in_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.reset(num_classes, global_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)
