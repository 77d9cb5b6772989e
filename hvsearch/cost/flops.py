"""Params and FLOPs under the papers' convention, counted on a model from shapes or by fvcore.

Three counters give the same numbers: ``analytic`` (:mod:`hvsearch.cost.analytic`) adds up each
part's layers from the spec alone (no torch, under a millisecond; what
:func:`hvsearch.cost.count_spec` uses where every part has a formula); on a model, ``shapes`` (the
default of :func:`count`, :mod:`hvsearch.cost.shapes`) counts each call's multiply-adds from its
shapes during one eager pass on a model whose weights were never drawn (milliseconds); ``fvcore``
traces the model with fvcore, the reference the test-suite holds the other two to on every seed
and on sampled architectures of every space.

Convention (the one CMT, Hire-MLP, TransXNet and ConvMLP report, and fvcore implements):

* **FLOPs are multiply-adds** (one per MAC) of convolutions, linear layers, matmuls, einsums and
  attention, counted at batch 1 in eval mode at the model's build resolution.
* fvcore's own conventions are kept for norms (BatchNorm in eval: 1 per element, 2 with affine;
  LayerNorm/GroupNorm: 5 per element with affine) and adaptive average pooling (1 per element),
  so our numbers are comparable with published fvcore figures.
* ``scaled_dot_product_attention`` — which fvcore skips silently — is counted as
  batch·heads·N_q·N_k·(D_qk + D_v): the two attention matmuls. A convolution with string
  padding (``padding="same"``, ``aten::_convolution_mode``, also skipped by fvcore) is counted
  like any other convolution.
* Everything in :data:`FREE_OPS` is free: element-wise arithmetic and activations (add, mul,
  GELU, softmax, ...), reductions, and data movement (roll, pad, reshape, permute, cat, pooling
  by max, resizing of position-bias tables, which depend on no input). No op that performs
  multiply-adds may be left uncounted: :func:`count` raises if fvcore meets an op that is neither
  handled nor listed here, and the test-suite checks every seed.
"""
from __future__ import annotations

import warnings
from math import prod
from typing import Any

from hvsearch._compat import patch_torchvision

patch_torchvision()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hvsearch.cost.analytic import Cost  # noqa: E402
from hvsearch.errors import UncountedOpError  # noqa: E402

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


def _conv_mode_flop(inputs: list[Any], outputs: list[Any]) -> int:
    """A convolution with string padding (``padding="same"``), which fvcore skips: counted as its
    ``aten::_convolution``, batch · prod(weight shape) · prod(output spatial size)."""
    from fvcore.nn.jit_handles import get_shape

    x, w, out = get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0])
    return x[0] * prod(w) * prod(out[2:])


EXTRA_HANDLES = {"aten::scaled_dot_product_attention": _sdpa_flop, "aten::_convolution_mode": _conv_mode_flop}


def _analysis(model: nn.Module, inputs: torch.Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(model, inputs).set_op_handle(**EXTRA_HANDLES)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return fca


COUNTERS = ("shapes", "fvcore")


def count(model: nn.Module, resolution: int | tuple[int, int], in_chans: int = 3, strict: bool = True,
          counter: str = "shapes") -> Cost:
    """Count params and FLOPs of ``model`` on one ``in_chans × H × W`` input in eval mode.

    ``counter`` ``shapes`` (default) counts during an eager pass that skips the costly arithmetic
    (:mod:`hvsearch.cost.shapes`, milliseconds); ``fvcore`` traces the model with fvcore, the
    reference the test-suite holds the first to (equal on every seed and sampled architecture).
    With ``strict`` (default) an op that may cost multiply-adds and that nothing counts raises
    :class:`UncountedOpError` naming it, rather than silently under-counting.
    """
    if counter not in COUNTERS:
        raise ValueError(f"counter must be one of {', '.join(COUNTERS)}, got {counter!r}")
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, in_chans, h, w, device=p.device if p is not None else "cpu")
        if counter == "shapes":
            from hvsearch.cost.shapes import count_calls

            by_module, free, uncounted_calls = count_calls(model, x, strict)
            total = by_module[""]
            uncounted = sorted(uncounted_calls)
            unsupported = dict(free) | dict(uncounted_calls)
            where = "hvsearch.cost.shapes (SHAPE_HANDLES or RUN_HANDLES)"
            free_list = "FREE_CALLS"
        else:
            fca = _analysis(model, x)
            with torch.no_grad():
                total = fca.total()
            unsupported = dict(fca.unsupported_ops())
            uncounted = sorted(set(unsupported) - FREE_OPS)
            by_module = fca.by_module()
            where = "hvsearch.cost.flops.EXTRA_HANDLES"
            free_list = "FREE_OPS"
        if strict and uncounted:
            raise UncountedOpError(
                f"FLOPs would be under-counted: the {counter} counter has no handle for "
                f"{', '.join(uncounted)}; add one in {where} or, if it costs no multiply-adds, "
                f"list it in {free_list}")
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
