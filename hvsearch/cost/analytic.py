"""Params and FLOPs from the spec alone: no torch, no model, microseconds per architecture.

Every part config (:class:`~hvsearch.arch.Component`) that knows its module's layers adds them to a
:class:`Tally` in its ``cost`` method, layer by layer as the module builds and runs them: a
convolution, a linear layer, a norm, an attention, a bare parameter. :func:`count_analytic` walks
the spec as :class:`~hvsearch.models.backbone.HybridBackbone` builds it (stem, then per stage the
downsample, the stage-shared module and each block's position encoding, norms, mixer, layer scales
and FFN, then the head) at the counting resolution's feature sizes. The formulas are fvcore's,
those of :mod:`hvsearch.cost.flops`:

* convolution: ``C_out · C_in/groups · k_h · k_w · H_out · W_out`` (bias free);
* linear layer on ``n`` tokens: ``n · C_in · C_out``; attention: ``heads · N_q · N_k · (d_qk + d_v)``;
* BatchNorm (eval, affine) 2 per element; LayerNorm and GroupNorm (affine) 5 per element;
  adaptive average pooling 1 per input element; everything else free.

The search's driver counts every draw this way, so it imports no torch (seconds of a search's
start on a small machine) unless the space measures latency or pre-screens with a zero-cost score. A part whose config has no ``cost`` (a family from another package may
bring none) raises :class:`NotCountable`, and :func:`hvsearch.cost.count_spec` then counts the
built model instead. The test-suite holds this count to fvcore's on every seed and on sampled
architectures of every space, at the build resolution and at another one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hvsearch.errors import NotCountable, SpecError

# fvcore's FLOPs per element of a norm in eval mode, with its affine (every norm here has one)
NORM_FLOPS = {"batchnorm": 2, "layernorm": 5, "groupnorm": 5, "none": 0}


@dataclass
class Cost:
    """Params (exact) and FLOPs (multiply-adds) of a model at ``resolution``, with a breakdown by
    top-level part (``stem``, ``stages.0`` … ``stages.3``, ``head``). ``free_ops`` lists what a model
    counter saw and counted as free (empty for an analytic count, which sees no ops)."""

    params: int
    flops: int
    resolution: tuple[int, int]
    by_stage: dict[str, int] = field(default_factory=dict)
    params_by_stage: dict[str, int] = field(default_factory=dict)
    free_ops: dict[str, int] = field(default_factory=dict)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


Size = tuple[int, int]


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """A convolution's (or pooling's) output length along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


class Tally:
    """Running params and FLOPs of the layers a part adds (see the module docstring)."""

    def __init__(self, where: str = ""):
        self.params = 0
        self.flops = 0
        self.where = where  # the part being counted, for errors

    def conv(self, cin: int, cout: int, kernel: int, size: Size, stride: int = 1, padding: int | None = None,
             groups: int = 1, bias: bool = True, weights: bool = True) -> Size:
        """A square ``kernel`` convolution on a ``size`` map (padding default ``kernel // 2``);
        returns the output size. ``weights=False``: a convolution with weights computed at run
        time (counted as FLOPs, its parameters are elsewhere)."""
        pad = kernel // 2 if padding is None else padding
        out = (conv_out(size[0], kernel, stride, pad), conv_out(size[1], kernel, stride, pad))
        if out[0] < 1 or out[1] < 1:
            raise SpecError(self.where, f"cannot run its {kernel}x{kernel} stride-{stride} convolution on the map "
                            "it gets at this resolution; map size", f"{size[0]}x{size[1]}")
        weight = cout * (cin // groups) * kernel * kernel
        if weights:
            self.params += weight + (cout if bias else 0)
        self.flops += weight * out[0] * out[1]
        return out

    def linear(self, tokens: int, cin: int, cout: int, bias: bool = True) -> None:
        """A linear layer (or a 1×1 convolution) applied to ``tokens`` positions."""
        self.params += cin * cout + (cout if bias else 0)
        self.flops += tokens * cin * cout

    def norm(self, kind: str, channels: int, tokens: int) -> None:
        """A norm of ``kind`` (``batchnorm``, ``layernorm``, ``groupnorm``, ``none``) over
        ``channels`` at ``tokens`` positions."""
        if kind != "none":
            self.params += 2 * channels
        self.flops += NORM_FLOPS[kind] * channels * tokens

    def attention(self, heads: int, nq: int, nk: int, d_qk: int, d_v: int) -> None:
        """``scaled_dot_product_attention`` at batch 1: the two matmuls."""
        self.flops += heads * nq * nk * (d_qk + d_v)

    def matmul(self, a_numel: int, n: int) -> None:
        """``a @ b`` with ``a_numel`` elements in ``a`` and ``n`` columns in ``b`` (fvcore's count)."""
        self.flops += a_numel * n

    def param(self, n: int) -> None:
        """A bare parameter of ``n`` elements (a table, a gate, a layer scale's vector)."""
        self.params += n


def _cost(part, t: Tally, *args):
    fn = getattr(part, "cost", None)
    if fn is None:
        raise NotCountable(f"{part.kind} {part.type!r} ({type(part).__qualname__}) has no analytic cost")
    return fn(t, *args)


def count_analytic(spec, resolution: int | Size | None = None) -> Cost:
    """The :class:`Cost` of ``spec`` at ``resolution`` (default its build resolution), counted from
    the spec. Raises :class:`NotCountable` if a part has no formula."""
    res = spec.resolution if resolution is None else resolution
    h, w = (res, res) if isinstance(res, int) else tuple(res)
    by_stage: dict[str, int] = {}
    params_by_stage: dict[str, int] = {}

    def close(name: str, t: Tally) -> None:
        by_stage[name], params_by_stage[name] = t.flops, t.params

    t = Tally("stem")
    size = _cost(spec.stem, t, spec.in_chans, (h, w))
    close("stem", t)
    in_dim = spec.stem_width
    build = spec.stage_contexts()
    for ctx, st in zip(build, spec.stages):
        t = Tally(ctx.path)
        dim = st.width
        size = _cost(st.downsample, t, in_dim, dim, size)
        tokens = size[0] * size[1]
        shared = getattr(st.mixer, "shared_cost", None)
        if shared is not None:
            shared(t, dim, ctx)
        owns = getattr(st.mixer, "owns_residual", False)
        for _ in range(st.depth):
            if st.pos_kernel:
                t.conv(dim, dim, st.pos_kernel, size, groups=dim)
            if owns:
                _cost(st.mixer, t, dim, ctx, size, st.norm)
            else:
                t.norm(st.norm, dim, tokens)
                _cost(st.mixer, t, dim, ctx, size, st.norm)
                if st.layer_scale:
                    t.param(2 * dim)
            if st.ffn.type != "none":
                t.norm(st.norm, dim, tokens)
                _cost(st.ffn, t, dim, ctx, size)
                if st.layer_scale:
                    t.param(2 * dim)
        close(ctx.path, t)
        in_dim = dim
    t = Tally("head")
    _cost(spec.head, t, in_dim, spec.num_classes, size)
    close("head", t)
    return Cost(params=sum(params_by_stage.values()), flops=sum(by_stage.values()), resolution=(h, w),
                by_stage=by_stage, params_by_stage=params_by_stage)
