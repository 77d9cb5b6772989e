"""Container part configs (Gao et al., "Container: Context Aggregation Network", NeurIPS 2021,
arXiv 2106.01401): the multi-head context-aggregation token mixer.

The paper's unified view: a token mixer aggregates the values ``V`` of all tokens through an
affinity matrix per head. A *static* affinity is a learned parameter (a local depthwise kernel:
a convolution; a dense N×N matrix: an MLP-Mixer token-mixing layer); a *dynamic* affinity is
computed from the input (softmax attention of queries on keys: a Transformer). A Container block
mixes both with a learnable coefficient. The network around the mixer is built from generic parts
(:mod:`hvsearch.arch.common`): a 4×4 patch stem, 2×2 patch downsamples, the MLP FFN and a BN-pool
head; the block adds a 3×3 depthwise conditional position encoding before the mixer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hvsearch.arch.components import Component, StageContext, register_component, require, require_positive

STATIC_KINDS = ("dwconv", "mlp", "none")


@register_component("mixer")
@dataclass(frozen=True)
class ContainerMixerConfig(Component):
    """Multi-head context aggregation: ``pw → (static ⊕ dynamic affinity) · V → pw``.

    A 1×1 conv makes the values ``V`` (C channels) and, when ``dynamic``, queries and keys too
    (C → 3C, ``V`` the last third). Then:

    * ``static``: the learned affinity applied to ``V``.
      ``dwconv``: a ``kernel``×``kernel`` depthwise conv (Container-Light's form; any size runs).
      ``mlp``: one dense N×N token-mixing matrix per head (the paper's static affinity, MLP-Mixer
      style), N the stage's token count at the build resolution. At another feature size the
      matrix is resized as a function of (query position, key position) and rescaled by
      N_build / N_run, so that the sum over keys keeps its magnitude (it approximates the same
      integral over the image with a different number of samples).
      ``none``: no static branch (a plain Transformer mixer; needs ``dynamic``).
    * ``dynamic``: multi-head softmax attention of the queries on the keys, applied to ``V``
      (no position bias; the block's conditional position encoding carries position).
      ``kv_pool`` = s > 1 averages keys and values over s×s windows first (every query still
      sees the whole image): the affinity is then an N×N matrix constant over each key window,
      and its cost drops from 2·N²·C to 2·N²·C/s² multiply-adds. 1 = plain global attention
      (Container-Light's form). The paper does not pool; see ``hvsearch.families.container.seeds`` for
      why the full Container seed needs it at strides 4 and 8.
    * both on: ``σ(α)·dynamic + (1 − σ(α))·static`` with one learnable scalar α per block,
      initialised to 0 (an even mix at init).

    A 1×1 conv then fuses the heads. All convs have biases. ``heads`` splits the channels for
    the attention and for the ``mlp`` static affinity; with ``dwconv`` alone it is unused.
    """

    type = "container"
    default_norm = "batchnorm"
    default_norm_eps = 1e-5
    default_pos_kernel = 3
    default_layer_scale = 0.0
    static: str = "dwconv"
    dynamic: bool = True
    heads: int = 8
    kernel: int = 5
    kv_pool: int = 1

    @property
    def uses_heads(self) -> bool:
        return self.dynamic or self.static == "mlp"

    @property
    def mixes(self) -> bool:
        """Both branches on, so the block learns a mixing coefficient."""
        return self.dynamic and self.static != "none"

    def width_multiple(self) -> int:
        return self.heads if self.uses_heads else 1

    def cost(self, t, dim, ctx, size, norm):
        h, w = size
        n = h * w
        t.linear(n, dim, 3 * dim if self.dynamic else dim)  # proj_in
        if self.static == "dwconv":
            t.conv(dim, dim, self.kernel, size, groups=dim)
        elif self.static == "mlp":
            # one N×N table per head at the build size (resized at run time: free), applied as
            # (heads, d, N) @ (N, N)
            t.param(self.heads * (ctx.height * ctx.width) ** 2)
            t.matmul(dim * n, n)
        if self.dynamic:
            s = self.kv_pool  # s×s average pooling of keys and values, partial windows kept
            nk = -(-h // s) * -(-w // s)
            d = dim // self.heads
            t.attention(self.heads, n, nk, d, d)
        if self.mixes:
            t.param(1)  # the gate logit
        t.linear(n, dim, dim)  # proj_out

    def fit(self, ctx: StageContext):
        pool = min(self.kv_pool, ctx.height, ctx.width)
        return self if pool == self.kv_pool else dataclasses.replace(self, kv_pool=pool)

    def check(self, ctx: StageContext, path: str) -> None:
        require(self.static in STATIC_KINDS, f"{path}.static", f"must be one of {', '.join(STATIC_KINDS)}",
                self.static)
        require(self.dynamic or self.static != "none", f"{path}.static",
                "must be an affinity (dwconv or mlp) when dynamic is false, or the mixer aggregates "
                "nothing", self.static)
        require_positive(self.heads, f"{path}.heads")
        if self.uses_heads:
            require(ctx.dim % self.heads == 0, f"{path}.heads", f"must divide the stage width {ctx.dim}",
                    self.heads)
        require_positive(self.kv_pool, f"{path}.kv_pool")
        if self.kv_pool > 1:
            require(self.dynamic, f"{path}.kv_pool", "must be 1 when dynamic is false (it pools the "
                    "attention's keys and values)", self.kv_pool)
            size = min(ctx.height, ctx.width)
            require(self.kv_pool <= size, f"{path}.kv_pool",
                    f"must be <= the stage's feature size {size} at the build resolution", self.kv_pool)
        if self.static == "dwconv":
            require(self.kernel >= 1 and self.kernel % 2 == 1, f"{path}.kernel",
                    "must be an odd size >= 1 (the depthwise conv keeps the map size)", self.kernel)
