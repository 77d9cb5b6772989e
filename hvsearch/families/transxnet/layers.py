"""TransXNet layers (Lou et al., arXiv 2310.19380): the dual dynamic token mixer (IDConv + OSRA +
squeezed token enhancer) and the multi-scale FFN.

Layout: every module takes and returns NCHW maps. OSRA works on (B, heads, N, d) views and goes
through ``F.scaled_dot_product_attention`` with the relative-position encoding as an additive
float mask. IDConv runs each sample's own depthwise kernel as one grouped conv over B·C groups.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module, trunc_normal_
from torch import nn

from hvsearch.families.transxnet.config import (
    IDCONV_REDUCTION,
    MSFFN_KERNELS,
    DMixerConfig,
    MSFFNConfig,
    msffn_splits,
)
from hvsearch.layers.base import MixerModule
from hvsearch.layers.common import init_weights
from hvsearch.layers.registry import register_module


class IDConv(nn.Module):
    """Input-dependent depthwise conv: each sample gets its own K×K kernel (and bias) per channel,
    a softmax-weighted mix of ``groups`` static ones.

    The mixing weights come from a squeeze (1×1 → BN → GELU → 1×1) applied to the input
    adaptive-average-pooled to K×K (one weight per kernel position) and to its global mean (the
    bias weights). Both go through the squeeze in one call, the mean as a (K²+1)-th position:
    the reference calls it twice, which fails at batch 1 in training because BN then sees a
    single value per channel. With ``groups == 1`` the mix is the identity, so no squeeze is built
    and the layer is a static depthwise conv.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.dim, self.kernel, self.groups = dim, kernel, groups
        self.weight = nn.Parameter(torch.empty(groups, dim, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(groups, dim))
        self.mix_impl = "mulsum"  # or "einsum": the same sums (see dynamic_kernels)
        # How each sample's kernels are applied: "grouped", the batch folded into the channels as
        # one depthwise conv of B·C groups (the fastest; training and PyTorch inference), or
        # "blockdiag", one conv of C groups whose B×B kernel blocks are diagonal (sample b's kernel
        # on the diagonal, zeros elsewhere): the same sums with a conv `group` — a constant in
        # ONNX — that does not depend on the batch, so an export can leave the batch open (at
        # batch B it multiplies B× as many zeros; unfold + matmul and shifted sums, the other
        # forms tried, ran 3.3× and 1.3× slower in ONNX Runtime: see README, Export).
        self.apply_impl = "grouped"
        if groups > 1:
            squeeze = dim // IDCONV_REDUCTION
            self.pool = nn.AdaptiveAvgPool2d(kernel)
            self.attn = nn.Sequential(nn.Conv2d(dim, squeeze, 1, bias=False), nn.BatchNorm2d(squeeze), nn.GELU(),
                                      nn.Conv2d(squeeze, groups * dim, 1))
            init_weights(self.attn, conv="trunc_normal")
        trunc_normal_(self.weight, std=0.02)
        trunc_normal_(self.bias, std=0.02)

    def dynamic_kernels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's kernels (B, C, K, K) and biases (B, C)."""
        B, C = x.shape[:2]
        G, K = self.groups, self.kernel
        cells = torch.cat([self.pool(x).flatten(2), x.mean((2, 3)).unsqueeze(-1)], dim=2)
        mix = self.attn(cells.unsqueeze(2)).view(B, G, C, K * K + 1).softmax(dim=1)
        # Bias rides along as the last "kernel position", so one weighted sum over the G static
        # tables gives kernels and biases. Element-wise (``mix_impl`` "mulsum", the default) it is
        # free under the cost convention, as in fvcore's count of the reference code; as an
        # einsum ("einsum") torch runs it as a bmm of C·(K²+1) tiny (B×G)·(G×1) products, 8–12%
        # slower per training step at the proxy's 32 px (``step_time.py --compare idconv-mix``)
        # and counted as B·G·C·(K²+1) multiply-adds.
        table = torch.cat([self.weight.flatten(2), self.bias.unsqueeze(-1)], dim=2)
        if self.mix_impl == "einsum":
            mixed = torch.einsum("bgcn,gcn->bcn", mix, table)
        else:
            mixed = (mix * table).sum(1)
        return mixed[..., :-1].reshape(B, C, K, K), mixed[..., -1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        K = self.kernel
        if self.groups == 1:
            return F.conv2d(x, self.weight.view(C, 1, K, K), self.bias.view(C), padding=K // 2, groups=C)
        weight, bias = self.dynamic_kernels(x)
        if self.apply_impl == "blockdiag":
            eye = torch.eye(B, dtype=x.dtype, device=x.device)
            blocks = (weight.transpose(0, 1).unsqueeze(2) * eye.view(1, B, B, 1, 1)).reshape(C * B, B, K, K)
            out = F.conv2d(x.transpose(0, 1).reshape(1, C * B, H, W), blocks, bias.transpose(0, 1).reshape(C * B),
                           padding=K // 2, groups=C)
            return out.view(C, B, H, W).transpose(0, 1)
        # Folding the batch into the channels makes every sample's kernels one grouped conv.
        out = F.conv2d(x.reshape(1, B * C, H, W), weight.reshape(B * C, 1, K, K), bias.reshape(B * C),
                       padding=K // 2, groups=B * C)
        return out.view(B, C, H, W)

    def export_impls(self, dynamic: frozenset[str]) -> dict[str, str]:
        """The implementation an ONNX export leaving ``dynamic`` open needs (see ``apply_impl``)."""
        return {"apply_impl": "blockdiag" if "batch" in dynamic else "grouped"}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel={self.kernel}, groups={self.groups}"


@register_notrace_module  # FX: a leaf (it branches on the run-time size)
class RelPosEncoding(nn.Module):
    """OSRA's learnable additive attention bias, one per (head, query, key) at the build size.

    At another size the (N_q, N_kv) table is resized bicubically as if it were an image, as the
    reference does (it does not unflatten the token grids), so a model built at 224 px runs at
    32 px or 160×224 and matches the reference's behaviour there.
    """

    def __init__(self, heads: int, num_q: int, num_kv: int):
        super().__init__()
        # Zero start: attention begins as plain dot-product attention.
        self.bias = nn.Parameter(torch.zeros(heads, num_q, num_kv))

    def forward(self, num_q: int, num_kv: int) -> torch.Tensor:
        if self.bias.shape[1] == num_q and self.bias.shape[2] == num_kv:
            return self.bias
        return F.interpolate(self.bias.unsqueeze(0), size=(num_q, num_kv), mode="bicubic",
                             align_corners=False).squeeze(0)

    def extra_repr(self) -> str:
        h, nq, nk = self.bias.shape
        return f"heads={h}, num_q={nq}, num_kv={nk}"


class OSRA(nn.Module):
    """Overlapping spatial-reduction attention: queries from every token; keys and values from an
    overlapping depthwise reduction of the map plus a 3×3 depthwise local refinement. No output
    projection: the D-Mixer's token enhancer follows."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, rel_pos: RelPosEncoding | None):
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(dim, dim, 1)
        if sr_ratio > 1:
            k = sr_ratio + 3
            self.reduce = nn.Sequential(
                nn.Conv2d(dim, dim, k, sr_ratio, k // 2, groups=dim, bias=False), nn.BatchNorm2d(dim), nn.GELU(),
                nn.Conv2d(dim, dim, 1, groups=dim, bias=False), nn.BatchNorm2d(dim))
        else:
            self.reduce = nn.Identity()
        self.local = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.rel_pos = rel_pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h, d = self.heads, C // self.heads
        q = self.q(x).view(B, h, d, H * W).transpose(-1, -2)
        t = self.reduce(x)
        t = t + self.local(t)
        nkv = t.shape[-2] * t.shape[-1]
        k, v = self.kv(t).view(B, 2, h, d, nkv).transpose(-1, -2).unbind(1)
        mask = None if self.rel_pos is None else self.rel_pos(H * W, nkv).unsqueeze(0).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(-1, -2).reshape(B, C, H, W)


@register_module("mixer", "dmixer")
class DMixer(MixerModule):
    """IDConv on the first half of the channels, OSRA on the second, then the squeezed token
    enhancer (STE): y = x + [dw3×3 → GELU → BN → 1×1 squeeze → GELU → BN → 1×1 → BN](x)."""

    @staticmethod
    def part_init(cfg) -> dict[str, str]:
        # TransXNet's code: every conv trunc-normal 0.02, bias 0 (CPE, stem, downsampling too)
        return {"pos": "trunc_normal", "downsample": "trunc_normal", "stem": "trunc_normal"}

    def __init__(self, cfg: DMixerConfig, dim: int, ctx, shared: RelPosEncoding | None):
        super().__init__()
        half = dim // 2
        inner = cfg.ste_width(dim)
        self.local = IDConv(half, cfg.kernel, cfg.groups)
        self.glob = OSRA(half, cfg.heads, cfg.sr_ratio, shared)
        self.ste = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.GELU(), nn.BatchNorm2d(dim),
            nn.Conv2d(dim, inner, 1), nn.GELU(), nn.BatchNorm2d(inner),
            nn.Conv2d(inner, dim, 1), nn.BatchNorm2d(dim))
        init_weights(self.glob, conv="trunc_normal")
        init_weights(self.ste, conv="trunc_normal")

    @staticmethod
    def build_shared(cfg: DMixerConfig, dim: int, ctx) -> RelPosEncoding | None:
        if not cfg.rel_pos:
            return None
        num_kv = cfg.kv_size(ctx.height) * cfg.kv_size(ctx.width)
        return RelPosEncoding(cfg.heads, ctx.height * ctx.width, num_kv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        x = torch.cat([self.local(a), self.glob(b)], dim=1)
        return x + self.ste(x)


class MultiScaleDWConv(nn.Module):
    """Depthwise convs of kernels 1/3/5/7 on four channel groups (the first takes the remainder).

    Four convs on channel slices rather than one 7×7 conv with zero-padded smaller kernels: the
    padded form would spend 49 multiply-adds per channel and pixel where the mix needs 21 on
    average (about 7% more FLOPs for a TransXNet-T) and store dead weights. The four branches are
    a fixed part of the architecture, not a loop over data.
    """

    def __init__(self, dim: int, kernels: tuple[int, ...] = MSFFN_KERNELS):
        super().__init__()
        self.splits = msffn_splits(dim, len(kernels))
        self.convs = nn.ModuleList(nn.Conv2d(c, c, k, 1, k // 2, groups=c) for c, k in zip(self.splits, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.splits, dim=1)
        out = []
        for i, conv in enumerate(self.convs):  # one depthwise conv per kernel size (4), not per token
            out.append(conv(parts[i]))
        return torch.cat(out, dim=1)


@register_module("ffn", "msffn")
class MSFFN(nn.Module):
    def __init__(self, cfg: MSFFNConfig, dim: int, ctx):
        super().__init__()
        hidden = cfg.hidden(dim)
        self.expand = nn.Sequential(nn.Conv2d(dim, hidden, 1, bias=False), nn.GELU(), nn.BatchNorm2d(hidden))
        self.dw = MultiScaleDWConv(hidden)
        self.mid = nn.Sequential(nn.GELU(), nn.BatchNorm2d(hidden))
        self.project = nn.Sequential(nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim))
        init_weights(self, conv="trunc_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)
        return self.project(self.mid(x + self.dw(x)))
