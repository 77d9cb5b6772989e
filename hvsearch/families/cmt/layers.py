"""CMT layers (Guo et al., CVPR 2022, arXiv 2107.06263): conv stem, LMHSA with depthwise K/V
reduction and a resizable relative position bias, IRFFN, and the conv head.

Layout: every module takes and returns NCHW maps; attention works on (B, heads, N, d) views and
goes through ``F.scaled_dot_product_attention`` with the bias as an additive mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from hvsearch.arch.components import hidden_width
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTHeadConfig, CMTStemConfig, IRFFNConfig
from hvsearch.layers.base import HeadModule, MixerModule
from hvsearch.layers.common import init_weights
from hvsearch.layers.registry import register_module


def _conv_gelu_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    # CMT orders conv → GELU → BN (not conv → BN → act).
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GELU(), nn.BatchNorm2d(cout)]


@register_module("stem", "cmt")
class CMTStem(nn.Sequential):
    def __init__(self, cfg: CMTStemConfig, in_chans: int):
        super().__init__(*_conv_gelu_bn(in_chans, cfg.width, 2), *_conv_gelu_bn(cfg.width, cfg.width, 1),
                         *_conv_gelu_bn(cfg.width, cfg.width, 1))
        init_weights(self)


@register_notrace_module  # FX: a leaf (it branches on the run-time size)
class RelPosBias(nn.Module):
    """A learnable bias per (head, query position, key position), built for one feature size.

    At another feature size the table is resized as a function of positions: bicubically over
    the query grid, then over the key grid, so a model built at 224 px runs at 32 px or 160×224.
    The resize runs at the build size too (where bicubic interpolation is an exact copy): a
    branch on the size would be traced as a constant, and an exported model would then not run
    at any other size.
    """

    def __init__(self, heads: int, q_size: tuple[int, int], kv_size: tuple[int, int]):
        super().__init__()
        self.heads, self.q_size, self.kv_size = heads, tuple(q_size), tuple(kv_size)
        # CMT initialises the table from a standard normal and never re-initialises it.
        self.bias = nn.Parameter(torch.randn(heads, q_size[0] * q_size[1], kv_size[0] * kv_size[1]))

    def forward(self, q_size: tuple[int, int], kv_size: tuple[int, int]) -> torch.Tensor:
        h, (qh0, qw0), (kh0, kw0) = self.heads, self.q_size, self.kv_size
        nq, nk = q_size[0] * q_size[1], kv_size[0] * kv_size[1]
        b = self.bias.view(h, qh0, qw0, kh0 * kw0).permute(0, 3, 1, 2)
        b = F.interpolate(b, size=q_size, mode="bicubic", align_corners=False)
        b = b.reshape(h, kh0, kw0, nq).permute(0, 3, 1, 2)
        b = F.interpolate(b, size=kv_size, mode="bicubic", align_corners=False)
        return b.reshape(h, nq, nk)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, q_size={self.q_size}, kv_size={self.kv_size}"


@register_module("mixer", "cmt_attn")
class CMTAttention(MixerModule):
    """Lightweight multi-head self-attention (the LPU is the block's position encoding)."""

    @staticmethod
    def part_init(cfg) -> dict[str, str]:
        # CMT's code initialises every conv with kaiming_normal_(mode="fan_out"), bias 0: the LPU
        # (the block's position conv) too; its patch embeddings are the common ones' already
        return {"pos": "kaiming_fan_out"}

    def __init__(self, cfg: CMTAttentionConfig, dim: int, ctx, shared: RelPosBias | None):
        super().__init__()
        self.heads, self.sr = cfg.heads, cfg.sr_ratio
        self.q = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=cfg.qkv_bias)
        self.reduce = (nn.Sequential(nn.Conv2d(dim, dim, self.sr, self.sr, groups=dim), nn.BatchNorm2d(dim))
                       if self.sr > 1 else nn.Identity())
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = shared
        init_weights(self)

    @staticmethod
    def build_shared(cfg: CMTAttentionConfig, dim: int, ctx) -> RelPosBias | None:
        if not cfg.rel_pos_bias:
            return None
        return RelPosBias(cfg.heads, (ctx.height, ctx.width), (ctx.height // cfg.sr_ratio, ctx.width // cfg.sr_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h, d = self.heads, C // self.heads
        q = self.q(x.flatten(2).transpose(1, 2)).view(B, H * W, h, d).transpose(1, 2)
        r = self.reduce(x)
        kh, kw = r.shape[-2:]
        k, v = self.kv(r.flatten(2).transpose(1, 2)).view(B, kh * kw, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        bias = None if self.rel_pos is None else self.rel_pos((H, W), (kh, kw)).unsqueeze(0).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        # A copy, then a view: reshape would copy or view by the strides of the attention kernel's
        # output, which torch.export records from the fused kernel and the ONNX exporter's
        # decomposition then does not reproduce (a view it cannot take).
        out = self.proj(out.transpose(1, 2).clone(memory_format=torch.contiguous_format).view(B, H * W, C))
        return out.transpose(1, 2).reshape(B, C, H, W)


@register_module("ffn", "irffn")
class IRFFN(nn.Module):
    def __init__(self, cfg: IRFFNConfig, dim: int, ctx):
        super().__init__()
        hidden = hidden_width(dim, cfg.ratio)
        self.expand = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.BatchNorm2d(hidden))
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.mid = nn.Sequential(nn.GELU(), nn.BatchNorm2d(hidden))
        self.project = nn.Sequential(nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim))
        init_weights(self)

    def forward(self, x):
        x = self.expand(x)
        return self.project(self.mid(x + self.dw(x)))


@register_module("head", "cmt")
class CMTHead(HeadModule):
    """1×1 conv to ``features`` channels → BN → SiLU → global average pool → dropout → linear."""

    def __init__(self, cfg: CMTHeadConfig, in_dim: int, num_classes: int, global_pool: str = "avg"):
        super().__init__()
        self.num_features = cfg.features
        self.pre = nn.Sequential(nn.Conv2d(in_dim, cfg.features, 1), nn.BatchNorm2d(cfg.features), nn.SiLU())
        self.drop = nn.Dropout(cfg.dropout)
        self.reset(num_classes, global_pool)
        init_weights(self.pre)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre(x)
