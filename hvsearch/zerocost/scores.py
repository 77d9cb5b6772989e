"""Training-free ("zero-cost") scores: how promising an architecture looks at initialisation.

Each score is one number from an untrained network and at most one mini-batch; higher means
"expected to train better". Used to rank sampled architectures against trained accuracy and to
pre-screen candidates before proxy training. One entry point, :func:`score`, and a registry,
:data:`SCORES`:

    score(spec, "synflow")                     # fresh model from spec (weights from seed 0)
    score(model, "naswot", (x, y), seed=1)     # a copy of a built model, a real batch

Every call works on its own model: built fresh from a spec (weights drawn from ``seed``, the
global RNG left untouched) or deep-copied from a model, so scores never see each other's changes
(abs'd or double weights, gradients, BatchNorm statistics) and the caller's model keeps its
weights, dtype, modes and gradients. Without a batch, a standard-normal batch of
``batch_size × in_chans × resolution²`` images with uniform labels is drawn from ``seed`` (a
stream apart from the weights'); a batch given without labels gets seeded random labels. So a
score is deterministic given the architecture, the batch and the seed.

The scores, and what each does with normalisation layers, attention and gates
-----------------------------------------------------------------------------
*Weights* below are every parameter except biases (names ending in ``bias``, which includes the
relative-position bias tables of CMT and TransXNet) and normalisation affines: Conv/Linear
weights, IDConv's static kernel tables, Container's dense affinity and gate logit α, layer-scale
γ. Sums run over every weight tensor.

``synflow`` (Tanaka et al., NeurIPS 2020, arXiv 2006.05467; as a NAS score: Abdelfattah et al.,
ICLR 2021, arXiv 2101.08134): every parameter (biases too) is replaced by its absolute value, the
network runs on one all-ones input in float64 (eval mode: dropout and drop-path off) and
``R = Σ logits``; the score is ``Σ_w Σ w ⊙ ∂R/∂w``, the synaptic flow through every weight. With
positive weights and input every path contributes a positive product, so the score is > 0 and a
layer that cuts all paths (a collapsed layer) sends it to 0. Two kinds of layer break that
positivity and are changed, in the scored copy only:

* Normalisation layers (BatchNorm, LayerNorm, LayerNorm2d, GroupNorm) are replaced by their
  affine part ``x·|γ| + |β|``, i.e. their statistics are dropped (what BatchNorm in eval mode is
  at initialisation, running mean 0 and variance 1): train-mode BN has no variance to normalise
  on one constant image, LN/GN subtract means and so send negative values down the paths, and a
  norm makes R invariant to the scale of the weights before it, which forces their
  ``Σ w·∂R/∂w`` to 0.
* Convex mixes — every softmax (attention probabilities inside ``scaled_dot_product_attention``,
  Hire-MLP's split attention, IDConv's kernel mix) and every sigmoid (Container's gate
  σ(α)) — are replaced by their value at equal logits: uniform over the (unmasked) keys or
  branches, σ = 1/2. That is what they are at an input without content, which is what the
  all-ones input stands for. Left as they are, their gradient is sign-indefinite (raising one
  logit moves weight away from the others) and, since the logits grow as the square of the
  all-positive activations, the saturated softmax's ± terms swamp the flow: a tiny Container
  scores negative. A convex mix conserves the flow it distributes, so the values path keeps
  its flow, and the weights that only compute mixing logits (attention queries and keys,
  Hire-MLP's reweighting MLP, IDConv's squeeze, the gate α) get zero saliency: synflow does
  not see them. Additive attention biases (relative-position tables) vanish with the logits.

Float64 keeps the path products from overflowing (CMT-B at 256 px reaches 3e188; the largest
float64 is 1.8e308), and a non-finite result is an error. Data-free: the batch only gives the input
shape. The magnitude depends strongly on init scales (TransXNet's 1e-5 layer scale gives its seeds
~1e10 where CMT's get ~1e83 at 32 px): compare ranks, or logs, not raw values.

``naswot`` (Mellor et al., ICML 2021, arXiv 2006.04647, the activation-pattern version): every
rectifying non-linearity (``nn.ReLU``, ``nn.GELU``, ``nn.SiLU``, ``nn.ReLU6``, ``nn.LeakyReLU``
modules) is hooked *before* it runs (so in-place ReLUs are read correctly) and gives each input
of the batch a binary code, one bit per unit: pre-activation ``> 0`` (GELU and SiLU are ≤ 0
exactly where ReLU is off, so the same bit marks their "on" half). With ``c`` the
N × N_A matrix of all codes, the kernel ``K = c cᵀ + (1−c)(1−c)ᵀ`` (N_A minus the Hamming
distances) is accumulated in float64 and the score is ``log det K``: high when the inputs fall
into different linear regions. ``-inf`` when ``K`` is singular, e.g. two inputs with identical
codes (a network blind to its input). Softmax (attention, Hire-MLP's split attention, IDConv's
kernel mix) and sigmoid gates have no "off" state, so they add no bits; they shape the codes of
the gates after them. Norms run as in the first training step: BatchNorm in train mode (batch
statistics; the running statistics of the scored copy change, the caller's do not), LN/GN as
always; dropout and drop-path off so that the codes are deterministic.

``grad_norm`` (Abdelfattah et al., ICLR 2021): ``Σ_w ‖∂L/∂w‖₂`` with L the mean cross-entropy
of the batch. ``snip`` (Lee et al., ICLR 2019, arXiv 1810.02340; as a NAS score: Abdelfattah et
al.): connection sensitivity ``Σ_w Σ |w ⊙ ∂L/∂w|``. Both run the first training step's forward:
BatchNorm in train mode with batch statistics, LN/GN as always, attention and gates as built,
dropout and drop-path off.

``params``: parameter count of the model (with its classifier); ``flops``: multiply-adds at
batch 1 at the scoring resolution, counted by :func:`hvsearch.cost.count` (fvcore, the papers'
convention). The size baselines every score above should beat; they ignore the seed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torch.overrides import TorchFunctionMode

from hvsearch.arch import ModelSpec
from hvsearch.errors import RegistryError, ScoreError
from hvsearch.layers.base import Gate, Norm
from hvsearch.values import is_int

# PyTorch's own; a family's own gate or norm declares itself by its base class (hvsearch.layers.base)
GATES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, Gate)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
NORMS = (*BATCH_NORMS, nn.LayerNorm, nn.GroupNorm, Norm)  # nn.LayerNorm includes timm's LayerNorm2d

# Streams of the seed (numpy SeedSequence keys), so that images, labels and weights are not drawn
# from the same random numbers.
_WEIGHTS_STREAM, _IMAGES_STREAM, _LABELS_STREAM, _DATA_STREAM = 0, 1, 2, 3


# ---- registry ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    """A registered score: ``fn(model, x, y) -> float`` on a model of its own (see :func:`score`).
    ``uses_data``: whether the batch's content matters (not just its shape)."""

    name: str
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
    uses_data: bool
    summary: str


SCORES: dict[str, Score] = {}


def register_score(name: str, *, uses_data: bool, summary: str):
    """Function decorator: register ``fn(model, x, y) -> float`` as score ``name``."""

    def wrap(fn):
        if name in SCORES:
            raise RegistryError(f"score {name!r} is already registered by {SCORES[name].fn.__qualname__}")
        SCORES[name] = Score(name, fn, uses_data, summary)
        return fn

    return wrap


def score_names() -> list[str]:
    return list(SCORES)


def get_score(name: str) -> Score:
    try:
        return SCORES[name]
    except KeyError:
        raise RegistryError(f"unknown zero-cost score {name!r}; known scores: {', '.join(SCORES)}") from None


# ---- entry point -------------------------------------------------------------------------------

def score(arch: ModelSpec | nn.Module | str, name: str, batch=None, *, seed: int = 0, resolution: int = 32,
          num_classes: int = 10, batch_size: int = 64, device: str | torch.device | None = None) -> float:
    """Score ``arch`` with the zero-cost score ``name`` (one of :data:`SCORES`).

    Args:
        arch: a :class:`ModelSpec`, a seed name or architecture file (built with ``num_classes``
            outputs, weights drawn from ``seed``), or an ``nn.Module`` mapping images to logits
            (deep-copied; ``num_classes`` is then the model's own).
        batch: images ``(N, C, H, W)`` or a pair ``(images, labels)``; None draws a seeded
            standard-normal batch of ``batch_size`` images at ``resolution``.
        seed: weights (when built here), the random batch and missing labels.
        device: where to run; default the model's device, CPU for a spec.
    """
    entry = get_score(name)
    if not is_int(seed) or seed < 0:
        raise ScoreError("seed", "must be an integer >= 0", seed)
    model, num_classes, in_chans = _own_model(arch, seed, num_classes, device)
    dev = next(model.parameters()).device
    x, y = _batch(batch, seed, resolution, batch_size, num_classes, in_chans, dev)
    value = float(entry.fn(model, x, y))
    # -inf is a value (naswot: log det of a singular kernel); NaN and +inf are overflow
    if math.isnan(value) or value == math.inf:
        raise ScoreError(f"score {name!r}", "must be finite or -inf, but the computation overflowed (e.g. "
                         "gradients through a normalisation layer over a constant input)", value)
    return value


def random_batch(batch_size: int, resolution: int, num_classes: int, *, in_chans: int = 3,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch :func:`score` draws when none is given: standard-normal images (normalised data
    has zero mean and unit variance per channel) and uniform labels, from ``seed``. The labels
    are those :func:`score` gives a batch passed without labels."""
    _check_int(batch_size, "batch_size", 2, "(NASWOT compares inputs; train-mode BatchNorm needs "
               "more than one value per channel)")
    _check_int(resolution, "resolution", 1)
    g = torch.Generator().manual_seed(_derive(seed, _IMAGES_STREAM))
    x = torch.randn(batch_size, in_chans, resolution, resolution, generator=g)
    return x, random_labels(batch_size, num_classes, seed)


def data_batch(data, resolution: int, batch_size: int = 64, *, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``batch_size`` images of the training split of ``data`` (a :class:`~hvsearch.train.DataConfig`),
    drawn from ``seed`` and normalised as evaluation sees them at ``resolution``; their labels
    and the data set's number of classes. What the pre-screen and ``calibrate`` score on."""
    from hvsearch.train.augment import EvalTransform, as_validated
    from hvsearch.train.data import load_data

    _check_int(batch_size, "batch_size", 2, "(NASWOT compares inputs; train-mode BatchNorm needs "
               "more than one value per channel)")
    splits = load_data(data, resolution)
    n = len(splits.train)
    if n < 2:
        raise ScoreError("data", "must hold at least 2 training images to score on; training images", n)
    g = torch.Generator().manual_seed(_derive(seed, _DATA_STREAM))
    idx = torch.randperm(n, generator=g)[:batch_size].tolist()
    items = [splits.train[i] for i in idx]
    images = as_validated(torch.stack([im for im, _ in items]), resolution, splits.in_memory)
    x = EvalTransform(resolution, splits.mean, splits.std)(images)
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    return x, y, splits.num_classes


def random_labels(n: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    _check_int(num_classes, "num_classes", 1)
    g = torch.Generator().manual_seed(_derive(seed, _LABELS_STREAM))
    return torch.randint(0, num_classes, (n,), generator=g)


def _derive(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _check_int(value: Any, what: str, low: int, why: str = "") -> None:
    if not is_int(value) or value < low:
        raise ScoreError(what, f"must be an integer >= {low}" + (f" {why}" if why else ""), value)


def _own_model(arch, seed: int, num_classes: int, device) -> tuple[nn.Module, int, int]:
    """A model only this score touches, its number of classes and of input channels."""
    if isinstance(arch, str):
        from hvsearch.arch_ref import resolve

        arch = resolve(arch)
    if isinstance(arch, ModelSpec):
        from hvsearch.models import build_model

        _check_int(num_classes, "num_classes", 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derive(seed, _WEIGHTS_STREAM))
            model = build_model(arch, num_classes=num_classes)
        return model.to(device or "cpu"), num_classes, arch.in_chans
    if isinstance(arch, nn.Module):
        if next(arch.parameters(), None) is None:
            raise ScoreError("model", "must have parameters to score", type(arch).__name__)
        model = copy.deepcopy(arch)
        if device is not None:
            model = model.to(device)
        spec = getattr(model, "spec", None)
        classes = getattr(model, "num_classes", None)
        if classes == 0:
            raise ScoreError("model", "has no classifier (num_classes 0), but every score reads logits; "
                             "num_classes", classes)
        return model, classes if classes is not None else num_classes, getattr(spec, "in_chans", 3)
    raise ScoreError("arch", "must be a ModelSpec, a seed name, an architecture file or an nn.Module",
                     type(arch).__name__)


def _batch(batch, seed, resolution, batch_size, num_classes, in_chans, device):
    if batch is None:
        x, y = random_batch(batch_size, resolution, num_classes, in_chans=in_chans, seed=seed)
        return x.to(device), y.to(device)
    x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()):
        raise ScoreError("batch", "must be float images (N, C, H, W) or a pair (images, labels)",
                         getattr(x, "shape", type(x).__name__))
    if x.shape[0] < 2:
        raise ScoreError("batch", "must hold at least 2 images (NASWOT compares inputs; train-mode "
                         "BatchNorm needs more than one value per channel); batch size", x.shape[0],)
    if x.shape[1] != in_chans:
        raise ScoreError("batch", f"must have the model's {in_chans} input channels, image shape",
                         tuple(x.shape))
    if y is None:
        y = random_labels(x.shape[0], num_classes, seed)
    elif not (isinstance(y, torch.Tensor) and y.shape == (x.shape[0],) and not y.is_floating_point()):
        raise ScoreError("batch labels", f"must be {x.shape[0]} integer class indices, one per image",
                         getattr(y, "shape", type(y).__name__))
    elif y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ScoreError("batch labels", f"must lie in [0, {num_classes}) (the model's classes), range",
                         (int(y.min()), int(y.max())))
    return x.to(device, torch.float32), y.to(device, torch.long)


# ---- what the scores share ---------------------------------------------------------------------

def _weights(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every parameter but biases and normalisation affines (see the module docstring)."""
    for module in model.modules():
        if isinstance(module, (*NORMS, _NormAffine)):
            continue
        for name, p in module.named_parameters(recurse=False):
            if not name.endswith("bias"):
                yield p


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == x.shape[0] and out.shape[1] >= 1):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ScoreError("model output", f"must be logits (batch {x.shape[0]}, classes >= 1); a model "
                         "without classifier or in features-only mode cannot be scored, output", shape)
    return out


def _first_step_modes(model: nn.Module) -> None:
    """Norms as in the first training step (BatchNorm on batch statistics), but nothing random:
    dropout and drop-path off."""
    model.eval()
    for m in model.modules():
        if isinstance(m, BATCH_NORMS):
            m.train()


def _loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, ∂L/∂weight) for every weight; L the batch's mean cross-entropy."""
    _first_step_modes(model)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(_logits(model, x).float(), y).backward()
    return [(w.detach(), torch.zeros_like(w) if w.grad is None else w.grad) for w in _weights(model)]


def _total(values: list[torch.Tensor]) -> float:
    return torch.stack(values).sum().item() if values else 0.0


# ---- the scores --------------------------------------------------------------------------------

class _NormAffine(nn.Module):
    """A normalisation layer without its statistics: ``x·γ + β`` (what is left of BatchNorm in
    eval mode when its running statistics are 0/1)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight, self.bias = norm.weight, norm.bias
        # nn.LayerNorm's γ already has the shape of the trailing dims; the others act on dim 1
        # (a family's own Norm says where its channels are)
        self.channels_last = isinstance(norm, nn.LayerNorm) and not isinstance(norm, LayerNorm2d)
        self.channel_dim = norm.channel_dim if isinstance(norm, Norm) else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            x = x * self._along_channels(self.weight, x.ndim)
        if self.bias is not None:
            x = x + self._along_channels(self.bias, x.ndim)
        return x

    def _along_channels(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        if self.channels_last:
            return t
        return t.view(-1, *[1] * (ndim - 1 - self.channel_dim)) if self.channel_dim > 0 else t


def _drop_norm_statistics(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, NORMS):
                setattr(parent, child_name, _NormAffine(child))


class _UniformMixing(TorchFunctionMode):
    """Inside this mode every softmax and sigmoid returns its value at equal logits (uniform;
    1/2), and attention averages the values over its unmasked keys (see synflow above)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAXES:
            x = args[0]
            dim = args[1] if len(args) > 1 else kwargs["dim"]
            return torch.full_like(x, 1.0 / x.shape[dim], dtype=kwargs.get("dtype") or x.dtype)
        if func in _SIGMOIDS:
            return torch.full_like(args[0], 0.5)
        if func is F.scaled_dot_product_attention:
            return _uniform_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _uniform_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    # scaled_dot_product_attention's signature; the scale only scales logits, which are all equal
    # here, and dropout is off in eval mode
    if enable_gqa:
        raise ScoreError("synflow", "does not support grouped-query attention (enable_gqa=True)", enable_gqa)
    allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device)
    if is_causal:
        allowed = allowed.tril()
    if attn_mask is not None:  # boolean: keep where True; additive: -inf masks a key out
        allowed = allowed & (attn_mask if attn_mask.dtype == torch.bool else attn_mask > float("-inf"))
    weights = allowed.to(v.dtype)
    return (weights / weights.sum(-1, keepdim=True)) @ v


_SOFTMAXES = frozenset({torch.softmax, torch.Tensor.softmax, F.softmax, torch.special.softmax})
_SIGMOIDS = frozenset({torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.special.expit})


def _synflow_saliencies(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """``w ⊙ ∂R/∂w`` of every weight (by name), on ``model`` turned into the synflow network."""
    _drop_norm_statistics(model)
    model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones((1, *image_shape), dtype=torch.float64, device=next(model.parameters()).device)
    with _UniformMixing():
        R = _logits(model, ones).sum()
    R.backward()
    weights = {id(w) for w in _weights(model)}
    return {name: w.detach() * w.grad if w.grad is not None else torch.zeros_like(w)
            for name, w in model.named_parameters() if id(w) in weights}


@register_score("synflow", uses_data=False,
                summary="Σ w·∂R/∂w: |w|, all-ones input, float64, norms reduced to their affine, uniform softmax")
def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    value = _total([s.sum() for s in _synflow_saliencies(model, tuple(x.shape[1:])).values()])
    if not math.isfinite(value):
        raise ScoreError("synflow", "overflowed float64 (the path products of this network exceed "
                         "1e308 at init); compare by params instead or score a smaller variant", value)
    return value


@register_score("naswot", uses_data=True,
                summary="log det of the inputs' binary activation-code kernel (ReLU/GELU/SiLU on = input > 0)")
def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    _first_step_modes(model)
    gates = [m for m in model.modules() if isinstance(m, GATES)]
    if not gates:
        raise ScoreError("naswot", "needs rectifying non-linearities to read codes from "
                         f"({', '.join(g.__name__ for g in GATES)} modules); the model has none",
                         type(model).__name__, show_value=False)
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def record(module: nn.Module, args: tuple) -> None:
        pre = args[0]
        if pre.shape[0] != n:
            raise ScoreError(f"naswot ({type(module).__name__})", f"expects the batch ({n}) on the "
                             "first axis of every activation, shape", tuple(pre.shape))
        code = (pre > 0).flatten(1).to(torch.float64)
        on = code.sum(1)
        # c cᵀ + (1 − c)(1 − c)ᵀ = 2 c cᵀ − |c_i| − |c_j| + N_A, without materialising 1 − c
        kernel.add_(2 * code @ code.T - on[:, None] - on[None, :] + code.shape[1])

    handles = [g.register_forward_pre_hook(record) for g in gates]
    try:
        with torch.no_grad():
            _logits(model, x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return logdet.item() if sign.item() > 0 else float("-inf")


@register_score("grad_norm", uses_data=True,
                summary="Σ ‖∂L/∂w‖₂ over weight tensors (cross-entropy, train-mode BN)")
def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return _total([g.norm() for _, g in _loss_gradients(model, x, y)])


@register_score("snip", uses_data=True, summary="Σ |w·∂L/∂w| (cross-entropy, train-mode BN)")
def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return _total([(w * g).abs().sum() for w, g in _loss_gradients(model, x, y)])


@register_score("params", uses_data=False, summary="parameter count (baseline)")
def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(sum(p.numel() for p in model.parameters()))


@register_score("flops", uses_data=False, summary="multiply-adds at batch 1 at the batch's resolution (baseline)")
def flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from hvsearch.cost import count

    return float(count(model, tuple(x.shape[2:]), in_chans=x.shape[1]).flops)
