"""Part configs shared by several families: plain downsampling layers, the MLP FFN, a pooled head."""
from __future__ import annotations

from dataclasses import dataclass

from hvsearch.arch.components import (
    Component,
    StageContext,
    hidden_width,
    register_component,
    require,
    require_hidden,
    require_norm,
    require_positive,
)


@register_component("stem")
@dataclass(frozen=True)
class ConvStemConfig(Component):
    """One k×k stride-4 conv, optional norm and ReLU: Hire-MLP (k7 p2, bias, BN, ReLU) and
    TransXNet (k7 p3, no bias, BN)."""

    type = "conv"
    stride = 4
    width: int = 64
    kernel: int = 7
    padding: int = 3
    bias: bool = False
    norm: str = "batchnorm"
    act: bool = False

    def check(self, ctx, path):
        require_positive(self.width, f"{path}.width")
        require(self.kernel >= self.stride, f"{path}.kernel", f"must be >= the stride {self.stride}", self.kernel)
        require(0 <= self.padding < self.kernel, f"{path}.padding", f"must be in [0, kernel {self.kernel})",
                self.padding)
        require_norm(self.norm, f"{path}.norm")

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel) // self.stride + 1

    def cost(self, t, in_chans, size):
        size = t.conv(in_chans, self.width, self.kernel, size, self.stride, self.padding, bias=self.bias)
        t.norm(self.norm, self.width, size[0] * size[1])
        return size


@register_component("stem")
@dataclass(frozen=True)
class PatchStemConfig(Component):
    """Non-overlapping 4×4 stride-4 conv (bias) then a norm: Container's patch embedding."""

    type = "patch"
    stride = 4
    width: int = 64
    norm: str = "layernorm"

    def check(self, ctx, path):
        require_positive(self.width, f"{path}.width")
        require_norm(self.norm, f"{path}.norm")

    def out_size(self, size: int) -> int:
        return size // self.stride

    def cost(self, t, in_chans, size):
        size = t.conv(in_chans, self.width, self.stride, size, self.stride, 0)
        t.norm(self.norm, self.width, size[0] * size[1])
        return size


@register_component("downsample")
@dataclass(frozen=True)
class NoDownsampleConfig(Component):
    """Keep the incoming map (the first stage after a stride-4 stem). Needs equal widths."""

    type = "none"

    def check(self, ctx: StageContext | None, path: str) -> None:
        require(ctx.in_dim == ctx.dim, path,
                f"`none` keeps the {ctx.in_dim} incoming channels, so the stage width must be "
                f"{ctx.in_dim}; use a downsample that projects, stage width", ctx.dim)

    def cost(self, t, in_dim, out_dim, size):
        return size


@register_component("downsample")
@dataclass(frozen=True)
class PatchDownsampleConfig(Component):
    """Non-overlapping k×k stride-k conv (bias) then a norm: CMT's and Container's patch embed."""

    type = "patch"
    stride = 2
    norm: str = "layernorm"

    def check(self, ctx, path):
        require_norm(self.norm, f"{path}.norm")

    def out_size(self, size: int) -> int:
        return size // self.stride

    def cost(self, t, in_dim, out_dim, size):
        size = t.conv(in_dim, out_dim, self.stride, size, self.stride, 0)
        t.norm(self.norm, out_dim, size[0] * size[1])
        return size


@register_component("downsample")
@dataclass(frozen=True)
class ConvDownsampleConfig(Component):
    """Overlapping 3×3 stride-2 conv, optional norm and ReLU: Hire-MLP, TransXNet, ConvMLP."""

    type = "conv3"
    stride = 2
    bias: bool = True
    norm: str = "none"
    act: bool = False

    def check(self, ctx, path):
        require_norm(self.norm, f"{path}.norm")

    def out_size(self, size: int) -> int:
        return (size - 1) // 2 + 1

    def cost(self, t, in_dim, out_dim, size):
        size = t.conv(in_dim, out_dim, 3, size, 2, 1, bias=self.bias)
        t.norm(self.norm, out_dim, size[0] * size[1])
        return size


@register_component("ffn")
@dataclass(frozen=True)
class MlpFFNConfig(Component):
    """Two 1×1 layers with a GELU between; hidden width ``int(dim · ratio)``."""

    type = "mlp"
    ratio: float = 4.0
    bias: bool = True

    def check(self, ctx, path):
        require_hidden(self.ratio, ctx.dim, f"{path}.ratio")

    def cost(self, t, dim, ctx, size):
        hidden, n = hidden_width(dim, self.ratio), size[0] * size[1]
        t.linear(n, dim, hidden, self.bias)
        t.linear(n, hidden, dim, self.bias)


@register_component("ffn")
@dataclass(frozen=True)
class NoFFNConfig(Component):
    """No channel sub-layer (the block is its mixer alone)."""

    type = "none"

    def cost(self, t, dim, ctx, size):
        pass


@register_component("head")
@dataclass(frozen=True)
class NormPoolHeadConfig(Component):
    """norm → global average pool → dropout → linear classifier."""

    type = "norm_pool"
    norm: str = "batchnorm"
    dropout: float = 0.0

    def check(self, ctx, path):
        require_norm(self.norm, f"{path}.norm")
        require(0.0 <= self.dropout < 1.0, f"{path}.dropout", "must be in [0, 1)", self.dropout)

    def cost(self, t, in_dim, num_classes, size):
        t.norm(self.norm, in_dim, size[0] * size[1])
        if num_classes > 0:
            t.linear(1, in_dim, num_classes)
