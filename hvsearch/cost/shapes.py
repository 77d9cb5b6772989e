"""FLOPs counted from shapes while the model runs eagerly: fvcore's numbers in milliseconds.

fvcore traces the model with the TorchScript tracer (1–8 s per model here) and counts the traced
graph. The same convention can be applied to an ordinary eager forward pass: a
:class:`~torch.overrides.TorchFunctionMode` sees every torch call at the level the tracer records
it (``F.linear``, ``torch.matmul``, ``torch.einsum``, ``F.layer_norm``, not their decompositions),
counts it with fvcore's formula, and for the costly ops (convolutions, linear layers, matmuls,
einsums, attention) returns zeros of the right shape instead of computing them. What is left to
run is element-wise work at batch 1, so counting costs little more than building the model.

The op classes match :mod:`hvsearch.cost.flops` one for one; the test-suite checks the totals and
the per-stage numbers against fvcore on every seed and on sampled architectures of every space.
Like fvcore in strict mode, an op that is neither counted nor known to be free raises
:class:`~hvsearch.errors.UncountedOpError` naming it.
"""
from __future__ import annotations

import types
from collections import Counter
from math import prod
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# Calls that cost no multiply-adds under the convention of hvsearch.cost.flops (the eager names of
# its FREE_OPS) and the calls that only read or move data.
FREE_CALLS = frozenset({
    # tensor attributes and queries
    "shape", "ndim", "dtype", "device", "is_cuda", "is_meta", "requires_grad", "layout", "T", "mT",
    "data", "dim", "size", "numel", "stride", "is_contiguous", "element_size", "__len__",
    "__bool__", "__index__", "__int__", "__format__", "__hash__", "__eq__", "__ne__", "__lt__", "__gt__",
    "__le__", "__ge__", "eq", "ne", "lt", "gt", "le", "ge",
    # views and data movement
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "flatten", "unflatten",
    "unsqueeze", "squeeze", "split", "chunk", "unbind", "narrow", "__getitem__", "__setitem__",
    "contiguous", "to", "type_as", "float", "expand", "expand_as", "repeat", "repeat_interleave",
    "roll", "pad", "cat", "concat", "stack", "flip", "clone", "detach", "pixel_shuffle",
    "pixel_unshuffle", "masked_fill", "new_zeros", "new_ones", "new_empty", "zeros", "ones",
    "zeros_like", "ones_like", "empty", "empty_like", "arange", "movedim", "index_select", "gather",
    # element-wise arithmetic
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "addcmul", "addcmul_",
    "pow", "sqrt", "rsqrt", "exp", "clamp", "clamp_min", "clamp_", "fill_", "zero_", "lerp", "abs",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__",
    "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__neg__", "__pow__",
    # activations
    "gelu", "silu", "sigmoid", "hardswish", "tanh", "softmax", "log_softmax", "relu", "relu_",
    "gelu_", "silu_", "sigmoid_",
    # reductions (adds only) and pooling without weights
    "mean", "sum", "amax", "max_pool2d", "avg_pool2d",
    # regularisers that are identity in eval
    "dropout", "dropout2d", "feature_alpha_dropout", "alpha_dropout",
})


def _numel(t: torch.Tensor) -> int:
    return prod(t.shape)


def _conv_out(x: torch.Tensor, w: torch.Tensor, stride, padding, dilation) -> list[int]:
    n = x.dim() - 2
    def tup(v):
        return (v,) * n if isinstance(v, int) else tuple(v)
    if isinstance(padding, str):
        if padding == "same":  # torch allows it only at stride 1: the size is kept
            spatial = list(x.shape[2:])
        else:  # "valid"
            padding = 0
    if not isinstance(padding, str):
        s, p, d = tup(stride), tup(padding), tup(dilation)
        spatial = [(size + 2 * p[i] - d[i] * (w.shape[2 + i] - 1) - 1) // s[i] + 1
                   for i, size in enumerate(x.shape[2:])]
    return [x.shape[0], w.shape[0], *spatial]


def _conv(args, kwargs):
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args), **kwargs)
    x, w = a["input"], a["weight"]
    out = _conv_out(x, w, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1))
    # fvcore: batch · prod(weight shape) · prod(output spatial) (the weight holds C_in / groups)
    return x.shape[0] * _numel(w) * prod(out[2:]), x.new_zeros(out)


def _linear(args, kwargs):
    a = dict(zip(("input", "weight", "bias"), args), **kwargs)
    x, w = a["input"], a["weight"]
    return _numel(x) * w.shape[0], x.new_zeros(*x.shape[:-1], w.shape[0])


def _matmul(args, kwargs):
    a, b = args[0], args[1]
    if a.dim() < 2 or b.dim() < 2:  # vector products: computed, counted as the MACs they are
        out = torch.matmul(a, b)
        return _numel(out) * a.shape[-1], out
    # fvcore's matmul handle: prod(a) · b[-1], whatever broadcasting does to a
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return _numel(a) * b.shape[-1], a.new_zeros(*batch, a.shape[-2], b.shape[-1])


def _addmm(args, kwargs):
    a, b = args[1], args[2]
    return a.shape[0] * a.shape[1] * b.shape[1], a.new_zeros(a.shape[0], b.shape[1])


def _einsum(args, kwargs):
    equation = args[0].replace(" ", "")
    operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    shapes = [tuple(t.shape) for t in operands]
    # fvcore renames the letters in order of appearance, then special-cases two batched matmuls
    order = dict.fromkeys(c for c in equation if c.isalpha())
    canon = equation.translate({ord(c): 97 + i for i, c in enumerate(order)})
    if canon == "abc,abd->acd":
        n, c, t = shapes[0]
        flops = n * c * t * shapes[-1][-1]
    elif canon == "abc,adc->adb":
        n, t, g = shapes[0]
        flops = n * t * g * shapes[-1][1]
    else:
        arrays = [np.broadcast_to(np.zeros(()), s) for s in shapes]  # shapes only, no memory
        path = np.einsum_path(equation, *arrays, optimize="optimal")[1]
        line = next(ln for ln in path.split("\n") if "optimized flop" in ln.lower())
        flops = int(np.floor(float(line.split(":")[-1]) / 2))
    if "..." in equation or "->" not in equation:
        return flops, torch.einsum(equation, *operands)
    inputs, output = equation.split("->")
    sizes = {c: n for term, s in zip(inputs.split(","), shapes) for c, n in zip(term, s)}
    return flops, operands[0].new_zeros([sizes[c] for c in output])


def _sdpa(args, kwargs):
    q, k, v = (args + tuple(kwargs[n] for n in ("query", "key", "value")[len(args):]))[:3]
    *batch, nq, dqk = q.shape
    return prod(batch) * nq * k.shape[-2] * (dqk + v.shape[-1]), q.new_zeros(*q.shape[:-1], v.shape[-1])


# A norm keeps its input's shape, and the values flowing through the counting pass mean nothing
# (the costly ops give zeros), so the norm handles hand the input on instead of normalising it.
def _affine_norm(weight_index: int):
    def handle(args, kwargs):
        weight = args[weight_index] if len(args) > weight_index else kwargs.get("weight")
        return _numel(args[0]) * (5 if weight is not None else 4), args[0]
    return handle


def _batch_norm(args, kwargs):
    names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    a = dict(zip(names, args), **kwargs)
    affine = a.get("weight") is not None
    if a.get("training", False):
        return _numel(a["input"]) * (5 if affine else 4), a["input"]
    return _numel(a["input"]) * (2 if affine else 1), a["input"]


def _adaptive_avg_pool(args, kwargs, func):
    return _numel(args[0]), func(*args, **kwargs)


def _interpolate(args, kwargs, func):
    out = func(*args, **kwargs)
    mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
    scale = {"nearest": 1, "bilinear": 4, "bicubic": 0}.get(mode)
    if scale is None:
        return None, out
    return _numel(out) * scale, out


# Counted calls handled from shapes alone: each returns (FLOPs, a tensor of the output's shape) ...
SHAPE_HANDLES: dict[str, Callable] = {
    "conv1d": _conv, "conv2d": _conv, "conv3d": _conv, "linear": _linear, "matmul": _matmul,
    "__matmul__": _matmul, "mm": _matmul, "bmm": _matmul, "addmm": _addmm, "einsum": _einsum,
    "scaled_dot_product_attention": _sdpa,
    "layer_norm": _affine_norm(2), "group_norm": _affine_norm(2), "instance_norm": _affine_norm(3),
    "batch_norm": _batch_norm,
}
# ... and the counted calls that run (cheap, and their output shape takes the op's own rules):
# adaptive average pooling, resizing.
RUN_HANDLES: dict[str, Callable] = {
    "adaptive_avg_pool2d": _adaptive_avg_pool, "interpolate": _interpolate, "upsample": _interpolate,
}
# Free calls that keep their first argument's shape: handed on unchanged, not computed.
SHAPE_KEEPING = frozenset({
    "gelu", "silu", "sigmoid", "hardswish", "tanh", "softmax", "log_softmax", "relu", "relu_", "gelu_",
    "silu_", "sigmoid_", "dropout", "dropout2d", "feature_alpha_dropout", "alpha_dropout", "contiguous",
})


def _functional_names() -> dict[int, str]:
    """Names of torch.nn.functional's callables by identity: several are wrappers whose own
    ``__name__`` says nothing (``F.max_pool2d`` and ``F.adaptive_max_pool2d`` are both ``fn``)."""
    return {id(obj): name for name, obj in vars(F).items() if callable(obj) and not name.startswith("_")}


_F_NAMES: dict[int, str] | None = None


def call_name(func: Callable) -> str:
    global _F_NAMES
    if _F_NAMES is None:
        _F_NAMES = _functional_names()
    owner = getattr(func, "__self__", None)
    if isinstance(owner, (types.GetSetDescriptorType, property)):  # Tensor.shape and friends
        return getattr(owner, "__name__", None) or owner.fget.__name__
    name = _F_NAMES.get(id(func))
    return name if name is not None else getattr(func, "__name__", repr(func))


class _Counting(TorchFunctionMode):
    def __init__(self, strict: bool):
        super().__init__()
        self.strict = strict
        self.scope: list[str] = [""]
        self.by_module: Counter[str] = Counter()
        self.free: Counter[str] = Counter()
        self.uncounted: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = call_name(func)
        shape_handle = SHAPE_HANDLES.get(name)
        if shape_handle is not None:
            flops, out = shape_handle(args, kwargs)
            self.by_module[self.scope[-1]] += flops
            return out
        run_handle = RUN_HANDLES.get(name)
        if run_handle is not None:
            flops, out = run_handle(args, kwargs, func)
            if flops is None:
                self.uncounted[name] += 1
            else:
                self.by_module[self.scope[-1]] += flops
            return out
        (self.free if name in FREE_CALLS else self.uncounted)[name] += 1
        if name in SHAPE_KEEPING and args and isinstance(args[0], torch.Tensor):
            return args[0]
        return func(*args, **kwargs)


def count_calls(model: nn.Module, x: torch.Tensor, strict: bool = True):
    """Run ``model(x)`` under the counting mode; returns ``(flops by module name, free calls,
    uncounted calls)``. As fvcore's ``by_module`` (its default owner mode): an op belongs to the
    innermost module running it and to that module's ancestors by name (the first name
    :meth:`nn.Module.named_modules` gives a shared module); ``""`` is the total."""
    mode = _Counting(strict)
    def enter(name):
        def hook(module, args):
            mode.scope.append(name)
        return hook

    def leave(module, args, output):  # returns None: a hook's return value would replace the output
        mode.scope.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad(), mode:
            model(x)
    finally:
        for h in handles:
            h.remove()
    by_module: Counter[str] = Counter({"": 0})
    for name, flops in mode.by_module.items():
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):
            by_module[".".join(parts[:i])] += flops
    return by_module, mode.free, mode.uncounted


class _SkipInit(TorchFunctionMode):
    """Builds a model without initialising its parameters: every ``torch.nn.init`` call and every
    in-place method on an ``nn.Parameter`` (timm's ``trunc_normal_`` fills the weight with
    ``uniform_``, ``erfinv_``, ``mul_``, ...) is skipped, so a parameter's memory is allocated but
    never written. Counting needs shapes and the buffers modules compute (position indices), not
    weights, and writing them is most of the time of building a large model. A model built this
    way holds garbage: it is for counting only."""

    INIT = frozenset(name for name in dir(nn.init) if name.endswith("_") and not name.startswith("_"))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")
        if isinstance(target, nn.Parameter) and name.endswith("_") and not name.endswith("__"):
            return target
        if name in self.INIT and getattr(func, "__module__", None) == nn.init.__name__:
            return target
        return func(*args, **kwargs)


def build_for_counting(build: Callable[[], nn.Module]) -> nn.Module:
    with _SkipInit():
        return build()
