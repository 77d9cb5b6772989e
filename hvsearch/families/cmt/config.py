"""CMT part configs (Guo et al., "CMT: Convolutional Neural Networks Meet Vision Transformers",
CVPR 2022): the conv stem, the lightweight multi-head self-attention (LMHSA) mixer with its
local perception unit, the inverted residual FFN (IRFFN) and the 1280-wide conv head."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from hvsearch.arch.components import (
    Component,
    hidden_width,
    register_component,
    require,
    require_hidden,
    require_positive,
)


@register_component("stem")
@dataclass(frozen=True)
class CMTStemConfig(Component):
    """3×3 s2 conv then two 3×3 convs, each conv → GELU → BN; stride 2 (a patch embed follows)."""

    type = "cmt"
    stride = 2
    width: int = 32

    def check(self, ctx, path):
        require_positive(self.width, f"{path}.width")

    def out_size(self, size: int) -> int:
        return (size - 1) // 2 + 1

    def cost(self, t, in_chans, size):
        for i, cin in enumerate((in_chans, self.width, self.width)):
            size = t.conv(cin, self.width, 3, size, 2 if i == 0 else 1, 1)
            t.norm("batchnorm", self.width, size[0] * size[1])
        return size


@register_component("mixer")
@dataclass(frozen=True)
class CMTAttentionConfig(Component):
    """LMHSA: queries from every token; keys and values from a k×k depthwise stride-k reduction
    (+BN) of the map; a learnable relative position bias per stage, shared by its blocks, sized
    for the build resolution and resized to the feature size at run time. The block puts a 3×3
    depthwise local perception unit (LPU) before it."""

    type = "cmt_attn"
    default_norm = "layernorm"
    default_norm_eps = 1e-6
    default_pos_kernel = 3
    heads: int = 1
    sr_ratio: int = 1
    qkv_bias: bool = True
    rel_pos_bias: bool = True

    def check(self, ctx, path):
        require_positive(self.heads, f"{path}.heads")
        require(ctx.dim % self.heads == 0, f"{path}.heads",
                f"must divide the stage width {ctx.dim}", self.heads)
        require_positive(self.sr_ratio, f"{path}.sr_ratio")
        for axis, size in (("height", ctx.height), ("width", ctx.width)):
            require(size % self.sr_ratio == 0, f"{path}.sr_ratio",
                    f"must divide the stage's feature {axis} {size} at the build resolution",
                    self.sr_ratio)

    def width_multiple(self) -> int:
        return self.heads

    def cost(self, t, dim, ctx, size, norm):
        n = size[0] * size[1]
        t.linear(n, dim, dim, self.qkv_bias)  # q
        kv = size
        if self.sr_ratio > 1:  # depthwise k×k stride-k reduction + BN
            kv = t.conv(dim, dim, self.sr_ratio, size, self.sr_ratio, 0, groups=dim)
            t.norm("batchnorm", dim, kv[0] * kv[1])
        nk = kv[0] * kv[1]
        t.linear(nk, dim, 2 * dim, self.qkv_bias)  # k, v
        d = dim // self.heads
        t.attention(self.heads, n, nk, d, d)
        t.linear(n, dim, dim)  # proj

    def shared_cost(self, t, dim, ctx):
        if self.rel_pos_bias:  # heads × N_q × N_kv at the build size (resized at run time: free)
            t.param(self.heads * ctx.height * ctx.width * (ctx.height // self.sr_ratio) * (ctx.width // self.sr_ratio))

    def fit(self, ctx):
        # the largest reduction ratio <= the current one that divides both feature sides
        g = math.gcd(ctx.height, ctx.width)
        sr = max(d for d in range(1, min(self.sr_ratio, g) + 1) if g % d == 0)
        return self if sr == self.sr_ratio else dataclasses.replace(self, sr_ratio=sr)


@register_component("ffn")
@dataclass(frozen=True)
class IRFFNConfig(Component):
    """Inverted residual FFN: 1×1 expand → GELU → BN → (3×3 depthwise + skip) → GELU → BN →
    1×1 project → BN; hidden width ``int(dim · ratio)``."""

    type = "irffn"
    ratio: float = 4.0

    def check(self, ctx, path):
        require_hidden(self.ratio, ctx.dim, f"{path}.ratio")

    def cost(self, t, dim, ctx, size):
        hidden, n = hidden_width(dim, self.ratio), size[0] * size[1]
        t.linear(n, dim, hidden)
        t.norm("batchnorm", hidden, n)
        t.conv(hidden, hidden, 3, size, groups=hidden)
        t.norm("batchnorm", hidden, n)
        t.linear(n, hidden, dim)
        t.norm("batchnorm", dim, n)


@register_component("head")
@dataclass(frozen=True)
class CMTHeadConfig(Component):
    """1×1 conv to ``features`` → BN → Swish → global average pool → dropout → linear."""

    type = "cmt"
    features: int = 1280
    dropout: float = 0.1

    def check(self, ctx, path):
        require_positive(self.features, f"{path}.features")
        require(0.0 <= self.dropout < 1.0, f"{path}.dropout", "must be in [0, 1)", self.dropout)

    def cost(self, t, in_dim, num_classes, size):
        n = size[0] * size[1]
        t.linear(n, in_dim, self.features)  # the 1×1 conv
        t.norm("batchnorm", self.features, n)
        if num_classes > 0:
            t.linear(1, self.features, num_classes)
