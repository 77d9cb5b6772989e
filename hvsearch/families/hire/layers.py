"""Hire-MLP token mixer (Guo et al., CVPR 2022, arXiv 2108.13341): hierarchical rearrangement.

Inner-region rearrangement: along H, every ``p`` consecutive rows form a region whose tokens are
stacked along channels (index ``c·p + i`` for channel ``c`` of the region's ``i``-th row), so one
1×1 conv bottleneck mixes the ``p`` tokens of each region in every column at once; the W branch
does the same with columns. Cross-region rearrangement: blocks alternate a circular roll of the
map by ``s`` rows/columns before grouping (rolled back after), so a region straddles two regions
of the previous block. All of it is reshapes/permutes around 1×1 convs on NCHW maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from hvsearch.arch.components import hidden_width
from hvsearch.families.hire.config import HireMixerConfig
from hvsearch.layers.base import MixerModule
from hvsearch.layers.common import init_weights
from hvsearch.layers.registry import register_module

ROWS, COLS = 2, 3  # NCHW axes the H and W branches rearrange (written as literals inside the functions:
# TorchScript reads no global ints, and FX cannot branch on x.ndim)


@register_notrace_function  # FX: kept as a call (it branches on the run-time size)
def pad_to_multiple(x: torch.Tensor, axis: int, p: int, mode: str) -> torch.Tensor:
    """Pad ``x`` at the end of ``axis`` (ROWS or COLS) up to a multiple of ``p``."""
    n = x.shape[axis]
    pad = -n % p
    if pad == 0:
        return x
    spec = (0, 0, 0, pad) if axis == 2 else (0, pad, 0, 0)  # 2: ROWS
    if mode == "zeros":
        return F.pad(x, spec)
    if pad <= n:
        return F.pad(x, spec, mode="circular")
    # F.pad's circular mode wraps at most once; at tiny run-time sizes (a 1-row map, p = 3) the
    # padding is the map tiled, which is what wrapping repeatedly means.
    reps = [1, 1, 1, 1]
    reps[axis] = -(-(n + pad) // n)
    return x.repeat(reps).narrow(axis, 0, n + pad)


@register_notrace_function  # FX: kept as a call (it branches on the run-time size)
def crop_to(y: torch.Tensor, axis: int, n: int) -> torch.Tensor:
    """The first ``n`` rows (columns) of ``y`` along ``axis``: what padding added is cut off."""
    return y.narrow(axis, 0, n) if y.shape[axis] != n else y


def group_regions(x: torch.Tensor, axis: int, p: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C·p, H/p, W) for ROWS, (B, C·p, H, W/p) for COLS; channel c·p + i
    holds channel c of the region's i-th row (column). ``x.shape[axis]`` must be a multiple of p."""
    B, C, H, W = x.shape
    if axis == 2:  # ROWS
        return x.reshape(B, C, H // p, p, W).permute(0, 1, 3, 2, 4).reshape(B, C * p, H // p, W)
    return x.reshape(B, C, H, W // p, p).permute(0, 1, 4, 2, 3).reshape(B, C * p, H, W // p)


def ungroup_regions(y: torch.Tensor, axis: int, p: int) -> torch.Tensor:
    """Inverse of :func:`group_regions`."""
    B, Cp, h, w = y.shape
    C = Cp // p
    if axis == 2:  # ROWS
        return y.reshape(B, C, p, h, w).permute(0, 1, 3, 2, 4).reshape(B, C, h * p, w)
    return y.reshape(B, C, p, h, w).permute(0, 1, 3, 4, 2).reshape(B, C, h, w * p)


def _region_mlp(dim: int, p: int, hidden: int) -> nn.Sequential:
    # No bias before the BN (it would be cancelled); the output conv keeps its bias.
    return nn.Sequential(nn.Conv2d(dim * p, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, dim * p, 1))


@register_module("mixer", "hire")
class HireMixer(MixerModule):
    """Hire module: H-branch and W-branch inner-region MLPs (with this block's cross-region
    shift), a channel FC branch, split-attention reweighting of the three, 1×1 projection."""

    @staticmethod
    def part_init(cfg) -> dict[str, str]:
        # Hire-MLP's code: Linear and Conv2d trunc-normal 0.02, bias 0 (stem, downsampling too)
        return {"downsample": "trunc_normal", "stem": "trunc_normal"}

    def __init__(self, cfg: HireMixerConfig, dim: int, ctx, shared=None):
        super().__init__()
        self.region, self.pad_mode = cfg.region, cfg.pad_mode
        self.shift = cfg.shift(ctx.block)
        hidden = hidden_width(dim, cfg.hidden_ratio)
        self.mlp_h = _region_mlp(dim, cfg.region, hidden)
        self.mlp_w = _region_mlp(dim, cfg.region, hidden)
        self.mlp_c = nn.Conv2d(dim, dim, 1)
        self.reweight = nn.Sequential(nn.Linear(dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, 3 * dim))
        self.proj = nn.Conv2d(dim, dim, 1)
        init_weights(self, conv="trunc_normal", linear="trunc_normal")

    # One inner-region branch along an axis: shift, pad, group (_regions), the branch's MLP, then
    # ungroup, crop, unshift (_restore). Split in two so that the MLP is called from forward
    # (TorchScript takes no module as an argument).
    def _regions(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        if self.shift:
            x = torch.roll(x, self.shift, axis)
        return group_regions(pad_to_multiple(x, axis, self.region, self.pad_mode), axis, self.region)

    def _restore(self, y: torch.Tensor, axis: int, n: int) -> torch.Tensor:
        y = crop_to(ungroup_regions(y, axis, self.region), axis, n)
        if self.shift:
            y = torch.roll(y, -self.shift, axis)
        return y

    @torch.jit.unused
    def branch(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """The inner-region branch along ``axis`` (ROWS: the H branch, COLS: the W branch) alone."""
        mlp = self.mlp_h if axis == ROWS else self.mlp_w
        return self._restore(mlp(self._regions(x, axis)), axis, x.shape[axis])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        h = self._restore(self.mlp_h(self._regions(x, 2)), 2, x.shape[2])  # 2, 3: ROWS, COLS
        w = self._restore(self.mlp_w(self._regions(x, 3)), 3, x.shape[3])
        c = self.mlp_c(x)
        # Split attention: per-channel softmax over the three branches from their pooled sum.
        a = self.reweight((h + w + c).mean((2, 3))).view(B, C, 3).softmax(-1)
        a = a.view(B, C, 3, 1, 1)
        return self.proj(h * a[:, :, 0] + w * a[:, :, 1] + c * a[:, :, 2])

    def extra_repr(self) -> str:
        return f"region={self.region}, shift={self.shift}, pad_mode={self.pad_mode!r}"
