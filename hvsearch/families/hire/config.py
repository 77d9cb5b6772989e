"""Hire-MLP part configs (Guo et al., "Hire-MLP: Vision MLP via Hierarchical Rearrangement",
CVPR 2022, arXiv 2108.13341): the hierarchical-rearrangement token mixer.

The network around it is built from generic parts (:mod:`hvsearch.arch.common`): a 7×7 stride-4
conv stem, 3×3 stride-2 conv downsamples, the 4× MLP FFN and a BN-pool head.
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
    require_hidden,
    require_positive,
)

PAD_MODES = ("circular", "zeros")


@register_component("mixer")
@dataclass(frozen=True)
class HireMixerConfig(Component):
    """Hierarchical rearrangement: inner-region MLPs along H and along W plus a channel FC,
    mixed by split-attention weights, then a 1×1 projection.

    * ``region``: p, the number of consecutive rows (H branch) or columns (W branch) whose tokens
      are concatenated along channels and mixed by a C·p → C·hidden_ratio → C·p bottleneck.
    * ``step_stride`` / ``step_dilation``: block ``i`` of the stage rolls the map by
      ``s = (i mod step_stride) · step_dilation`` rows/columns before grouping (and back after), so
      consecutive blocks see differently aligned regions (cross-region communication).
      ``step_dilation = 0`` turns the shift off.
    * ``pad_mode``: how a feature size that ``region`` does not divide is padded up to a multiple
      of it (the padding is cropped off again): ``circular`` (the reference) or ``zeros``.
    * ``hidden_ratio``: bottleneck width of the inner-region MLPs relative to C (reference 0.5).
    """

    type = "hire"

    def fixed_export_axes(self) -> frozenset[str]:
        # the regions' padding and the shifts are computed for the build size; the exporters
        # trace them as constants (measured: no exporter gives a graph that is right at +32 px)
        return frozenset({"height", "width"})

    default_norm = "batchnorm"
    default_norm_eps = 1e-5
    default_pos_kernel = 0
    default_layer_scale = 0.0
    region: int = 2
    step_stride: int = 2
    step_dilation: int = 1
    pad_mode: str = "circular"
    hidden_ratio: float = 0.5

    def shift(self, block: int) -> int:
        """Rows/columns block ``block`` of its stage rolls its map by before grouping regions."""
        return (block % self.step_stride) * self.step_dilation

    def cost(self, t, dim, ctx, size, norm):
        h, w = size
        p, hidden = self.region, hidden_width(dim, self.hidden_ratio)
        # each branch pads its axis up to a multiple of p and stacks p rows (columns) per region
        for tokens in (-(-h // p) * w, h * -(-w // p)):
            t.linear(tokens, dim * p, hidden, bias=False)
            t.norm("batchnorm", hidden, tokens)
            t.linear(tokens, hidden, dim * p)
        t.linear(h * w, dim, dim)  # the channel branch
        t.linear(1, dim, dim // 4)  # split-attention reweighting, on the pooled map
        t.linear(1, dim // 4, 3 * dim)
        t.linear(h * w, dim, dim)  # proj

    def max_shift(self, depth: int) -> int:
        """The largest shift any of a stage's ``depth`` blocks uses."""
        return max(self.shift(i) for i in range(min(depth, self.step_stride)))

    def fit(self, ctx: StageContext) -> "HireMixerConfig":
        # a region larger than the map, or a shift that reaches the region size, is clipped
        out = dataclasses.replace(self, region=min(self.region, ctx.height, ctx.width))
        while out.step_dilation > 0 and out.max_shift(ctx.depth) >= out.region:
            out = dataclasses.replace(out, step_dilation=out.step_dilation - 1)
        return self if out == self else out

    def check(self, ctx: StageContext, path: str) -> None:
        require_positive(self.region, f"{path}.region")
        size = min(ctx.height, ctx.width)
        require(self.region <= size, f"{path}.region",
                f"must be <= the stage's feature size {size}", self.region)
        require_positive(self.step_stride, f"{path}.step_stride")
        require(self.step_dilation >= 0, f"{path}.step_dilation", "must be >= 0 (0 = no shift)",
                self.step_dilation)
        largest = self.max_shift(ctx.depth)
        # A shift of p or more regroups the same tokens as a shift of s mod p: wasted search space.
        require(largest < self.region, f"{path}.step_dilation",
                f"gives a largest per-block shift of {largest} (over the stage's {ctx.depth} blocks, "
                f"step_stride {self.step_stride}), which must be < region {self.region}",
                self.step_dilation)
        require(self.pad_mode in PAD_MODES, f"{path}.pad_mode", f"must be one of {', '.join(PAD_MODES)}",
                self.pad_mode)
        require_hidden(self.hidden_ratio, ctx.dim, f"{path}.hidden_ratio", "an inner-region hidden width")
        # The split-attention MLP squeezes C to C // 4 channels.
        require(ctx.dim >= 4, f"{ctx.path}.width",
                "must be >= 4 for a `hire` mixer (its reweighting MLP is C // 4 wide)", ctx.dim)
