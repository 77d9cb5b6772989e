"""Params and FLOPs, counted with fvcore under the papers' convention.

Convention (the one CMT, Hire-MLP, TransXNet and ConvMLP report, and fvcore implements):

* **FLOPs are multiply-adds** (one per MAC) of convolutions, linear layers, matmuls, einsums and
  attention, counted at batch 1 in eval mode at the model's build resolution.
* fvcore's own conventions are kept for norms (BatchNorm in eval: 1 per element, 2 with affine;
  LayerNorm/GroupNorm: 5 per element with affine) and adaptive average pooling (1 per element),
  so our numbers are comparable with published fvcore figures.
* ``scaled_dot_product_attention`` — which fvcore skips silently — is counted as
  batch·heads·N_q·N_k·(D_qk + D_v): the two attention matmuls.
* Everything in :data:`FREE_OPS` is free: element-wise arithmetic and activations (add, mul,
  GELU, softmax, ...), reductions, and data movement (roll, pad, reshape, permute, cat, pooling
  by max, resizing of position-bias tables, which depend on no input). No op that performs
  multiply-adds may be left uncounted: :func:`count` raises if fvcore meets an op that is neither
  handled nor listed here, and the test-suite checks every seed.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import nn

from hvsearch.errors import UncountedOpError

# Ops that cost no multiply-adds under the convention above (fvcore reports them as unsupported).
FREE_OPS = frozenset({
    # element-wise arithmetic
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_",
    "aten::div", "aten::div_", "aten::neg", "aten::addcmul", "aten::addcmul_", "aten::pow",
    "aten::sqrt", "aten::rsqrt", "aten::exp", "aten::clamp_min", "aten::fill_", "aten::lerp",
    # activations and normalisation of weights
    "aten::gelu", "aten::gelu_", "aten::silu", "aten::silu_", "aten::sigmoid", "aten::sigmoid_",
    "aten::hardswish", "aten::tanh", "aten::softmax", "aten::log_softmax", "aten::relu", "aten::relu_",
    # reductions (adds only) and pooling without weights
    "aten::mean", "aten::sum", "aten::max_pool2d", "aten::avg_pool2d", "aten::amax",
    # data movement
    "aten::roll", "aten::pad", "aten::constant_pad_nd", "aten::reflection_pad2d", "aten::circular_pad2d",
    "aten::replication_pad2d", "aten::pixel_shuffle", "aten::pixel_unshuffle", "aten::repeat",
    "aten::repeat_interleave", "aten::flip", "aten::unflatten", "aten::expand_as", "aten::masked_fill",
    "aten::new_zeros", "aten::type_as", "aten::clone",
    # resizing a parameter table to the feature size (independent of the input; cacheable)
    "aten::upsample_bicubic2d",
    # regularisers that are identity in eval
    "aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
})


def _sdpa_flop(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    *batch, nq, dqk = q
    nk, dv = k[-2], v[-1]
    return prod(batch) * nq * nk * (dqk + dv)


EXTRA_HANDLES = {"aten::scaled_dot_product_attention": _sdpa_flop}


@dataclass
class Cost:
    """Params (exact) and FLOPs (GMACs) of a model at ``resolution``, with a per-stage breakdown."""

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


def _analysis(model: nn.Module, inputs: torch.Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(model, inputs).set_op_handle(**EXTRA_HANDLES)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return fca


def count(model: nn.Module, resolution: int | tuple[int, int], in_chans: int = 3, strict: bool = True) -> Cost:
    """Count params and FLOPs of ``model`` on one ``in_chans × H × W`` input in eval mode.

    With ``strict`` (default) an op that fvcore does not count and that is not in FREE_OPS raises
    :class:`UncountedOpError` naming it, rather than silently under-counting.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, in_chans, h, w, device=p.device if p is not None else "cpu")
        fca = _analysis(model, x)
        with torch.no_grad():
            total = fca.total()
        unsupported = dict(fca.unsupported_ops())
        uncounted = sorted(set(unsupported) - FREE_OPS)
        if strict and uncounted:
            raise UncountedOpError(
                f"FLOPs would be under-counted: fvcore has no handle for {', '.join(uncounted)}; "
                f"add a handle in hvsearch.cost.flops.EXTRA_HANDLES or, if it costs no "
                f"multiply-adds, list it in FREE_OPS")
        by_module = fca.by_module()
        stage_names = [n for n, _ in model.named_children()]
        by_stage: dict[str, int] = {}
        for name in stage_names:
            if name == "stages":
                for i in range(len(model.stages)):
                    by_stage[f"stages.{i}"] = by_module.get(f"stages.{i}", 0)
            else:
                by_stage[name] = by_module.get(name, 0)
    finally:
        model.train(was_training)
    params_by_stage = {}
    for name, child in model.named_children():
        if name == "stages":
            for i, st in enumerate(child):
                params_by_stage[f"stages.{i}"] = sum(q.numel() for q in st.parameters())
        else:
            params_by_stage[name] = sum(q.numel() for q in child.parameters())
    params = sum(q.numel() for q in model.parameters())
    return Cost(params=params, flops=int(total), resolution=(h, w), by_stage=by_stage,
                params_by_stage=params_by_stage, free_ops=unsupported)


def count_spec(spec, resolution: int | tuple[int, int] | None = None, strict: bool = True) -> Cost:
    """Build ``spec`` and count it at ``resolution`` (default: its build resolution).

    A spec is a frozen description, so its cost is memoised per (spec, resolution): the catalog,
    scaling tables and space checks count each architecture once per process. The returned
    :class:`Cost` is shared: do not mutate it."""
    res = spec.resolution if resolution is None else resolution
    return _count_spec(spec, res if isinstance(res, int) else tuple(res), strict)


@functools.lru_cache(maxsize=512)
def _count_spec(spec, resolution, strict: bool) -> Cost:
    from hvsearch.models import build_model

    return count(build_model(spec), resolution, spec.in_chans, strict=strict)
