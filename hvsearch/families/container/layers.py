"""Container layers (Gao et al., NeurIPS 2021, arXiv 2106.01401): multi-head context aggregation
with a static affinity (depthwise conv or dense N×N token mixing), a dynamic one (attention), or
both mixed by a learnable gate.

Container-Light's two block mixers are both this module: its conv block (stages 1-3) is
``static=dwconv, dynamic=false`` (1×1 → dw5×5 → 1×1) and its mixed block (stage 4) is
``static=dwconv, dynamic=true`` (1×1 C→3C → {attention on q/k/v, dw5×5 on v} → gate → 1×1), with
the same parameters as the released model.

Layout: NCHW maps in and out. Per-head tensors use channel ``c = head·d + i`` (d = C/heads)
everywhere, so the conv branch, the attention branch and the N×N branch all agree on which
channels belong to which head without any shuffling. Convs keep PyTorch's default init, as the
reference does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, trunc_normal_
from torch import nn

from hvsearch.families.container.config import ContainerMixerConfig
from hvsearch.layers.base import MixerModule
from hvsearch.layers.registry import register_module


@register_notrace_function  # FX: kept as a call (it branches on the run-time size)
def resize_affinity(table: torch.Tensor, build_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Resize a (heads, N_q, N_k) affinity built on a ``build_size`` grid to a ``size`` grid.

    The table is treated as a function of (query position, key position): resized bicubically
    over the query grid, then over the key grid. It is then scaled by N_build / N_run because it
    is applied as a sum over keys, whose magnitude would otherwise grow or shrink with the
    number of keys.
    """
    if tuple(size) == tuple(build_size):
        return table
    heads = table.shape[0]
    (h0, w0), (h1, w1) = build_size, size
    n0, n1 = h0 * w0, h1 * w1
    # queries on the grid, keys as channels
    t = table.reshape(heads, h0, w0, n0).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(h1, w1), mode="bicubic", align_corners=False)
    # keys on the grid, (resized) queries as channels
    t = t.reshape(heads, h0, w0, n1).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(h1, w1), mode="bicubic", align_corners=False)
    return t.reshape(heads, n1, n1) * (n0 / n1)


@register_module("mixer", "container")
class ContainerMixer(MixerModule):
    """Multi-head context aggregation (see :class:`~hvsearch.families.container.config.ContainerMixerConfig`)."""

    @staticmethod
    def part_init(cfg) -> dict[str, str]:
        # Container's code leaves convs at PyTorch's default (stem, patch embeddings, CPE) and
        # initialises Linear layers trunc-normal: a conv-only stage's MLP is 1x1 convs (default),
        # an attention stage's is Linear layers
        return {"stem": "torch_default", "downsample": "torch_default", "pos": "torch_default",
                "ffn": "trunc_normal" if cfg.dynamic else "torch_default"}

    def __init__(self, cfg: ContainerMixerConfig, dim: int, ctx, shared=None):
        super().__init__()
        self.dim, self.heads, self.dynamic, self.static = dim, cfg.heads, cfg.dynamic, cfg.static
        self.kv_pool = cfg.kv_pool
        # Queries and keys exist only for the attention; the values are always the last C channels.
        self.proj_in = nn.Conv2d(dim, 3 * dim if cfg.dynamic else dim, 1)
        self.static_conv = self.static_affinity = None
        self.build_size = (ctx.height, ctx.width)  # the static affinity's table size
        if cfg.static == "dwconv":
            self.static_conv = nn.Conv2d(dim, dim, cfg.kernel, 1, cfg.kernel // 2, groups=dim)
        elif cfg.static == "mlp":
            n = ctx.height * ctx.width
            # A dense token-mixing matrix is a Linear layer over tokens; Container initialises its
            # Linear layers trunc-normal 0.02, so this gets the same. Stored as (heads, N_q, N_k).
            self.static_affinity = nn.Parameter(trunc_normal_(torch.empty(cfg.heads, n, n), std=0.02))
        # Gate logit α: σ(0) = 0.5 starts the two branches at an even mix.
        self.alpha = nn.Parameter(torch.zeros(1)) if cfg.mixes else None
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def _static(self, v: torch.Tensor) -> torch.Tensor:
        B, C, H, W = v.shape
        if self.static_conv is not None:
            return self.static_conv(v)
        affinity = self.static_affinity
        assert affinity is not None  # static "mlp" (the forward reaches here only with a static part)
        table = resize_affinity(affinity, self.build_size, (H, W)).to(v.dtype)
        # (B, h, d, N_k) @ (h, N_k, N_q): out[b, h, i, q] = Σ_k A[h, q, k] v[b, h, i, k]. Keeping
        # the batch in the first operand also lets fvcore's matmul handle count it.
        out = v.reshape(B, self.heads, C // self.heads, H * W) @ table.transpose(-1, -2)
        return out.reshape(B, C, H, W)

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        B, C3, H, W = qkv.shape
        C, h = C3 // 3, self.heads
        if self.kv_pool == 1:
            q, k, v = qkv.reshape(B, 3, h, C // h, H * W).transpose(-1, -2).unbind(1)
        else:
            q = qkv[:, :C].reshape(B, h, C // h, H * W).transpose(-1, -2)
            # ceil_mode: a partial window at the border averages the tokens it has, so any map
            # size (down to 1×1) keeps every token in some key.
            kv = F.avg_pool2d(qkv[:, C:], self.kv_pool, self.kv_pool, ceil_mode=True)
            k, v = kv.reshape(B, 2, h, C // h, -1).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return out.transpose(-1, -2).reshape(B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_in(x)
        v = y[:, -self.dim:] if self.dynamic else y
        if self.static == "none":
            out = self._attention(y)
        elif not self.dynamic:
            out = self._static(v)
        else:
            # σ(α)·attention + (1 − σ(α))·static
            alpha = self.alpha
            assert alpha is not None  # both parts: the gate exists
            out = torch.lerp(self._static(v), self._attention(y), torch.sigmoid(alpha))
        return self.proj_out(out)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, static={self.static}, dynamic={self.dynamic}"
                + (f", kv_pool={self.kv_pool}" if self.kv_pool > 1 else "")
                + (f", build_size={self.build_size}" if self.static == "mlp" else ""))
