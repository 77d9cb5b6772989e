"""ConvMLP part configs (Li et al., "ConvMLP: Hierarchical Convolutional MLPs for Vision",
arXiv 2109.04454): the convolutional tokenizer stem, the residual conv bottleneck of the conv stage
and the conv-MLP mixer (channel MLP, then a depthwise 3×3 "connect" that replaces the token).

ConvMLP maps onto the 4-stage spec as: stem = tokenizer (stride 4); stage 0 = the conv stage at
stride 4 (``conv_bottleneck`` mixer, no FFN, downsample ``none``); stages 1-3 = the conv-MLP stages,
each behind a 3×3 stride-2 conv with bias (``conv3``, the official code's trailing downsample of
the previous stage), with ``convmlp`` mixers and the ``mlp`` FFN as the block's second MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

from hvsearch.arch.components import Component, hidden_width, register_component, require, require_hidden


@register_component("stem")
@dataclass(frozen=True)
class ConvMLPStemConfig(Component):
    """Tokenizer: 3×3 s2 conv (→ width//2), 3×3 conv (→ width//2), 3×3 conv (→ width), each
    without bias and followed by BN and ReLU, then a 3×3 s2 max-pool (padding 1): stride 4."""

    type = "convmlp"
    stride = 4
    width: int = 64

    def check(self, ctx, path):
        # The first two convs run at width // 2 channels, which must not vanish.
        require(self.width >= 2, f"{path}.width", "must be >= 2 (the tokenizer's first convs use width // 2)",
                self.width)

    def out_size(self, size: int) -> int:
        # Both the stride-2 conv (k3 p1) and the max-pool (k3 s2 p1) map n to ceil(n / 2).
        return (((size - 1) // 2 + 1) - 1) // 2 + 1

    def cost(self, t, in_chans, size):
        half = self.width // 2
        for cin, cout, stride in ((in_chans, half, 2), (half, half, 1), (half, self.width, 1)):
            size = t.conv(cin, cout, 3, size, stride, bias=False)
            t.norm("batchnorm", cout, size[0] * size[1])
        return tuple((n - 1) // 2 + 1 for n in size)  # the 3×3 stride-2 max-pool (padding 1): free


@register_component("mixer")
@dataclass(frozen=True)
class ConvBottleneckConfig(Component):
    """ConvMLP's conv-stage block as a mixer that owns its residual:
    x ← x + ReLU(BN(pw(ReLU(BN(conv3×3(ReLU(BN(pw(x))))))))), hidden width ``int(dim · ratio)``.

    The official hidden width is the next stage's width (ratio 2 in all published variants). The
    stage's norm is not used (the branch's norms are BatchNorm, as in the official code), there is
    no drop-path (the official conv stage has none), and the stage should have ``ffn: none``.
    """

    type = "conv_bottleneck"
    default_norm = "batchnorm"
    owns_residual = True
    ratio: float = 2.0

    def check(self, ctx, path):
        require_hidden(self.ratio, ctx.dim, f"{path}.ratio")

    def cost(self, t, dim, ctx, size, norm):
        hidden, n = hidden_width(dim, self.ratio), size[0] * size[1]
        t.linear(n, dim, hidden, bias=False)
        t.norm("batchnorm", hidden, n)
        t.conv(hidden, hidden, 3, size, bias=False)
        t.norm("batchnorm", hidden, n)
        t.linear(n, hidden, dim, bias=False)
        t.norm("batchnorm", dim, n)


@register_component("mixer")
@dataclass(frozen=True)
class ConvMLPMixerConfig(Component):
    """The first half of a ConvMLP block, owning its residual:
    x ← x + DropPath(MLP(norm(x))); x ← dw3×3(norm(x)) (no bias and, unlike every other mixer,
    no residual around the depthwise conv). MLP = pw (dim → int(dim · ratio)) → GELU → pw, with
    bias. The block's FFN (``mlp``) is the second channel MLP."""

    type = "convmlp"
    default_norm = "layernorm"
    default_norm_eps = 1e-5
    owns_residual = True
    ratio: float = 2.0

    def check(self, ctx, path):
        require_hidden(self.ratio, ctx.dim, f"{path}.ratio")

    def cost(self, t, dim, ctx, size, norm):
        hidden, n = hidden_width(dim, self.ratio), size[0] * size[1]
        t.norm(norm, dim, n)
        t.linear(n, dim, hidden)
        t.linear(n, hidden, dim)
        t.norm(norm, dim, n)
        t.conv(dim, dim, 3, size, groups=dim, bias=False)  # the depthwise connect
