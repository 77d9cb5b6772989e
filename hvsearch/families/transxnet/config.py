"""TransXNet part configs (Lou et al., "TransXNet: Learning Both Global and Local Dynamics with a
Dual Dynamic Token Mixer for Visual Recognition", arXiv 2310.19380): the dual dynamic token mixer
(D-Mixer) and the multi-scale FFN (MS-FFN).

The network around them is built from generic parts (:mod:`hvsearch.arch.common`): a 7×7 stride-4
conv stem (padding 3, no bias, BN), 3×3 stride-2 conv downsamples (no bias, BN) and a GN(1)-pool
head. The block's 7×7 depthwise position encoding, GN(1) norms and layer scale (weight + bias)
come from the D-Mixer's stage defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hvsearch.arch.components import (
    Component,
    StageContext,
    hidden_width,
    register_component,
    require,
    require_positive,
)

MSFFN_KERNELS = (1, 3, 5, 7)


def msffn_splits(hidden: int, n: int = len(MSFFN_KERNELS)) -> list[int]:
    """The channels of MS-FFN's hidden map each of its ``n`` kernels gets (the first takes the
    remainder)."""
    return [hidden - (n - 1) * (hidden // n)] + [hidden // n] * (n - 1)


# IDConv squeezes its C/2 input channels by this factor before predicting the kernel attention.
IDCONV_REDUCTION = 4


@register_component("mixer")
@dataclass(frozen=True)
class DMixerConfig(Component):
    """Dual dynamic token mixer: the channels are split in half; one half goes through IDConv (an
    input-dependent depthwise conv), the other through OSRA (overlapping spatial-reduction
    attention); the halves are concatenated and refined by the squeezed token enhancer (STE).

    * ``heads``: OSRA heads over the C/2 attention channels.
    * ``sr_ratio``: OSRA's key/value reduction stride; sr > 1 uses an overlapping depthwise conv
      of kernel sr+3, stride sr, padding (sr+3)//2; sr = 1 keeps the full map.
    * ``groups``: G, the number of static kernels IDConv mixes per sample (G = 1: a static
      depthwise conv, no attention branch).
    * ``kernel``: IDConv's depthwise kernel size K (odd, so that padding K//2 keeps the size).
    * ``rel_pos``: OSRA's learnable relative-position bias (zero-initialised, one per stage
      shared by its blocks, sized heads × N_q × N_kv at the build resolution).
    """

    type = "dmixer"
    default_norm = "groupnorm"
    default_norm_eps = 1e-5
    default_pos_kernel = 7
    default_layer_scale = 1e-5
    heads: int = 1
    sr_ratio: int = 1
    groups: int = 2
    kernel: int = 7
    rel_pos: bool = True

    def kv_size(self, size: int) -> int:
        """OSRA's key/value map size along one axis for a ``size``-pixel feature axis."""
        if self.sr_ratio == 1:
            return size
        k = self.sr_ratio + 3
        return (size + 2 * (k // 2) - k) // self.sr_ratio + 1

    def width_multiple(self) -> int:
        return 2 * self.heads  # even, and the OSRA half divisible by the heads

    @staticmethod
    def ste_width(dim: int) -> int:
        """The squeezed token enhancer's inner width at stage width ``dim``."""
        return max(16, dim // 8)

    def cost(self, t, dim, ctx, size, norm):
        half, n = dim // 2, size[0] * size[1]
        # IDConv: G static K×K depthwise kernels (and biases) mixed per sample
        g, k = self.groups, self.kernel
        t.param(g * half * k * k + g * half)
        if g > 1:  # the squeeze predicting the mix, on the K×K pooled map and the global mean
            squeeze, cells = half // IDCONV_REDUCTION, k * k + 1
            t.flops += half * n  # adaptive average pooling: 1 per input element
            t.linear(cells, half, squeeze, bias=False)
            t.norm("batchnorm", squeeze, cells)
            t.linear(cells, squeeze, g * half)
        t.conv(half, half, k, size, groups=half, weights=False)  # each sample's own kernels
        # OSRA on the other half
        t.linear(n, half, half)  # q
        kv = size
        if self.sr_ratio > 1:
            kk = self.sr_ratio + 3
            kv = t.conv(half, half, kk, size, self.sr_ratio, kk // 2, groups=half, bias=False)
            t.norm("batchnorm", half, kv[0] * kv[1])
            t.conv(half, half, 1, kv, groups=half, bias=False)
            t.norm("batchnorm", half, kv[0] * kv[1])
        t.conv(half, half, 3, kv, groups=half)  # local refinement
        nk = kv[0] * kv[1]
        t.linear(nk, half, 2 * half)  # k, v
        d = half // self.heads
        t.attention(self.heads, n, nk, d, d)
        # squeezed token enhancer
        inner = self.ste_width(dim)
        t.conv(dim, dim, 3, size, groups=dim)
        t.norm("batchnorm", dim, n)
        t.linear(n, dim, inner)
        t.norm("batchnorm", inner, n)
        t.linear(n, inner, dim)
        t.norm("batchnorm", dim, n)

    def shared_cost(self, t, dim, ctx):
        if self.rel_pos:  # heads × N_q × N_kv at the build size (resized at run time: free)
            t.param(self.heads * ctx.height * ctx.width * self.kv_size(ctx.height) * self.kv_size(ctx.width))

    def fit(self, ctx: StageContext):
        sr = min(self.sr_ratio, ctx.height, ctx.width)
        return self if sr == self.sr_ratio else dataclasses.replace(self, sr_ratio=sr)

    def check(self, ctx: StageContext, path: str) -> None:
        require(ctx.dim % 2 == 0, path,
                "splits the channels in half between IDConv and OSRA, so the stage width must be "
                "even; stage width", ctx.dim)
        half = ctx.dim // 2
        require(half // IDCONV_REDUCTION >= 1, path,
                f"squeezes its {half} IDConv channels by {IDCONV_REDUCTION}, so the stage width "
                f"must be >= {2 * IDCONV_REDUCTION}; stage width", ctx.dim)
        require_positive(self.heads, f"{path}.heads")
        require(half % self.heads == 0, f"{path}.heads",
                f"must divide half the stage width ({half} OSRA channels)", self.heads)
        require_positive(self.sr_ratio, f"{path}.sr_ratio")
        size = min(ctx.height, ctx.width)
        # Beyond the feature size every ratio gives the same one-token key map.
        require(self.sr_ratio <= size, f"{path}.sr_ratio",
                f"must be <= the stage's feature size {size} at the build resolution", self.sr_ratio)
        require(self.groups >= 1, f"{path}.groups", "must be >= 1", self.groups)
        require(self.kernel >= 1 and self.kernel % 2 == 1, f"{path}.kernel",
                "must be an odd size >= 1", self.kernel)


@register_component("ffn")
@dataclass(frozen=True)
class MSFFNConfig(Component):
    """Multi-scale FFN: 1×1 expand (no bias) → GELU → BN; h + multi-scale depthwise conv(h)
    (kernels 1/3/5/7 on four channel groups, the first takes the remainder) → GELU → BN →
    1×1 project (no bias) → BN; hidden width ``int(dim · ratio)``."""

    type = "msffn"
    ratio: float = 4.0

    def hidden(self, dim: int) -> int:
        return hidden_width(dim, self.ratio)

    def cost(self, t, dim, ctx, size):
        hidden, n = self.hidden(dim), size[0] * size[1]
        t.linear(n, dim, hidden, bias=False)
        t.norm("batchnorm", hidden, n)
        for c, k in zip(msffn_splits(hidden), MSFFN_KERNELS):
            t.conv(c, c, k, size, groups=c)
        t.norm("batchnorm", hidden, n)
        t.linear(n, hidden, dim, bias=False)
        t.norm("batchnorm", dim, n)

    def check(self, ctx, path):
        require_positive(self.ratio, f"{path}.ratio")
        n = len(MSFFN_KERNELS)
        require(self.hidden(ctx.dim) >= n, f"{path}.ratio",
                f"gives a hidden width {self.hidden(ctx.dim)} at stage width {ctx.dim}, but the "
                f"multi-scale conv needs >= {n} channels (one per kernel size)", self.ratio)
