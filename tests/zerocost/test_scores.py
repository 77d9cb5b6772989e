"""Zero-cost scores: closed forms on toy networks, every score on every mixer family (finite,
deterministic under a seed), crippled networks ranked below healthy ones, and isolation (the
caller's model and RNG untouched)."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hvsearch.cost import count_spec
from hvsearch.errors import HVSearchError, RegistryError
from hvsearch.models import build_model
from hvsearch.zerocost import SCORES, ScoreError, random_batch, score, score_names
from hvsearch.zerocost.scores import _synflow_saliencies, _UniformMixing
from tests.zerocost.specs import FAMILIES, tiny

BATCH = 8  # small batches keep the folder fast; the scores' default is 64
SEED_FREE = {"params", "flops"}  # size baselines: the seed changes the weights, not the counts


def test_registry_names_every_score_and_unknown_names_list_them():
    assert score_names() == ["synflow", "naswot", "grad_norm", "snip", "params", "flops"]
    assert {n for n, s in SCORES.items() if s.uses_data} == {"naswot", "grad_norm", "snip"}
    with pytest.raises(RegistryError, match="unknown zero-cost score 'jacov'; known scores: synflow, naswot, "
                                            "grad_norm, snip, params, flops"):
        score(tiny("hire"), "jacov")


# ---- closed forms on toy networks -----------------------------------------------------------------

def _mlp(bn: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), *([nn.BatchNorm1d(6)] if bn else []), nn.ReLU(),
                         nn.Linear(6, 3))


def test_synflow_is_the_path_norm_flow_of_a_relu_mlp_with_norm_statistics_dropped():
    net = _mlp(bn=True)
    lin1, norm, lin2 = net[1], net[2], net[4]
    with torch.no_grad():  # signs, a non-trivial affine and running statistics that must be ignored
        norm.weight.copy_(torch.linspace(-2, 2, 6))
        norm.bias.copy_(torch.linspace(-1, 1, 6))
        norm.running_var.fill_(9.0)
        norm.running_mean.fill_(5.0)
    W1, b1, W2 = (t.detach().double().abs() for t in (lin1.weight, lin1.bias, lin2.weight))
    g, beta = norm.weight.detach().double().abs(), norm.bias.detach().double().abs()
    ones = torch.ones(12, dtype=torch.float64)
    hidden = g * (W1 @ ones + b1) + beta  # all positive: the ReLU passes everything
    # R = Σ logits. W1's saliency Σ W1 ⊙ ∂R/∂W1 counts each path through W1 once: 1ᵀ|W2| diag|γ| |W1| 1;
    # W2's counts every path into the logits except through b2: 1ᵀ|W2| hidden. Biases and γ, β are
    # not weights.
    expected = (W2.sum(0) * g * (W1 @ ones)).sum() + (W2 @ hidden).sum()
    x = torch.randn(4, 3, 2, 2)
    assert score(net, "synflow", x, num_classes=3) == pytest.approx(expected.item(), rel=1e-12)


def test_synflow_mixing_is_uniform_over_unmasked_keys_and_branches():
    q, v = torch.randn(2, 3, 3, 4), torch.randn(2, 3, 3, 4)
    with _UniformMixing():
        causal = F.scaled_dot_product_attention(q, q, v, is_causal=True)
        masked = F.scaled_dot_product_attention(q, q, v, attn_mask=torch.tensor([True, False, True]))
        biased = F.scaled_dot_product_attention(q, q, v, attn_mask=torch.tensor([0.0, -math.inf, 5.0]))
        branches = torch.randn(2, 5).softmax(-1)
        gate = torch.sigmoid(torch.randn(3))
    counts = torch.arange(1, 4, dtype=v.dtype)[:, None]
    torch.testing.assert_close(causal, v.cumsum(-2) / counts)
    outer_keys = ((v[..., 0, :] + v[..., 2, :]) / 2)[..., None, :].expand_as(v)
    torch.testing.assert_close(masked, outer_keys)
    torch.testing.assert_close(biased, outer_keys)  # additive biases vanish; -inf still masks
    assert torch.equal(branches, torch.full((2, 5), 0.2)) and torch.equal(gate, torch.full((3,), 0.5))


def test_naswot_is_the_log_det_of_the_hamming_kernel_of_relu_codes_under_batch_statistics():
    net = _mlp(bn=True)
    with torch.no_grad():  # running statistics an eval-mode BatchNorm would use (and get other codes)
        net[2].running_mean.fill_(0.5)
    x = torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    h = net[1](x.flatten(1)).detach()
    pre = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + net[2].eps)  # γ = 1, β = 0
    codes = (pre > 0).double()  # (7, 6): one bit per hidden unit
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1).double()
    sign, logdet = torch.linalg.slogdet(codes.shape[1] - hamming)
    assert sign > 0
    assert score(net, "naswot", x, num_classes=3) == pytest.approx(logdet.item(), rel=1e-12)
    assert not torch.equal(codes, (net.eval()[2](h) > 0).double())  # the test tells the modes apart


def test_grad_norm_runs_batchnorm_on_batch_statistics():
    net = _mlp(bn=True)
    with torch.no_grad():
        net[2].running_var.fill_(4.0)
    x, y = torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    reference = {}
    for mode in ("train", "eval"):
        ref = _mlp(bn=True)
        ref.load_state_dict(net.state_dict())
        ref.train(mode == "train")
        F.cross_entropy(ref(x), y).backward()
        reference[mode] = (ref[1].weight.grad.norm() + ref[4].weight.grad.norm()).item()
    assert score(net, "grad_norm", (x, y), num_classes=3) == pytest.approx(reference["train"], rel=1e-5)
    assert reference["train"] != pytest.approx(reference["eval"], rel=1e-3)


def test_grad_norm_and_snip_of_a_linear_classifier_match_the_cross_entropy_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x = torch.randn(6, 3, 2, 2)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    W, b = net[1].weight.detach(), net[1].bias.detach()
    p = torch.softmax(x.flatten(1) @ W.T + b, dim=1)
    G = (p - F.one_hot(y, 4)).T @ x.flatten(1) / len(y)  # ∂(mean CE)/∂W; the bias is not a weight
    assert score(net, "grad_norm", (x, y), num_classes=4) == pytest.approx(G.norm().item(), rel=1e-5)
    assert score(net, "snip", (x, y), num_classes=4) == pytest.approx((W * G).abs().sum().item(), rel=1e-5)


# ---- every score on every family ------------------------------------------------------------------

def _zero_classifier(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model.get_classifier().weight.zero_()
    return model


def _blind_stem(model: nn.Module) -> nn.Module:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # the stem's first conv
    with torch.no_grad():
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
    return model


VARIANTS = {
    "healthy": lambda f: tiny(f),
    "wider": lambda f: tiny(f, widths=(32, 64, 96, 128)),
    "deeper": lambda f: tiny(f, depth=2),
    "bottleneck": lambda f: tiny(f, widths=(16, 32, 8, 64)),  # stage 3 squeezed from 48 to 8 channels
    "zero_classifier": lambda f: _zero_classifier(_built(f)),
    "blind_stem": lambda f: _blind_stem(_built(f)),
}


def _built(family: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(tiny(family), num_classes=10)


@functools.lru_cache(maxsize=None)
def _score(family: str, variant: str, name: str, seed: int = 0) -> float:
    return score(VARIANTS[variant](family), name, seed=seed, batch_size=BATCH)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_score_is_finite_and_deterministic_under_a_seed(family):
    spec = tiny(family)
    for name in SCORES:
        first = _score(family, "healthy", name)
        assert math.isfinite(first) and first > 0, name
        if name == "flops":  # a second fvcore trace is slow; the next test recounts it independently
            continue
        assert score(spec, name, seed=0, batch_size=BATCH) == first, name  # a fresh build, same value
        other = _score(family, "healthy", name, seed=1)
        if name in SEED_FREE:
            assert other == first, name
        else:
            assert other != first, name


@pytest.mark.parametrize("family", FAMILIES)
def test_size_baselines_are_the_cost_modules_counts(family):
    cost = count_spec(tiny(family))  # built at 32 px with 10 classes, as the scores are
    assert _score(family, "healthy", "params") == cost.params
    assert _score(family, "healthy", "flops") == cost.flops


# Each score is crippled where its definition bites:
# * synflow, snip: a zeroed classifier cuts every path from the weights to the logits (synflow's
#   "layer collapse"), and every gradient but the classifier's own, which meets a zero weight: 0.
# * grad_norm: with a zeroed classifier only the classifier itself gets a gradient; the backbone's
#   weights receive none, so the sum loses all its backbone terms (but stays > 0).
# * naswot: a zeroed stem conv makes the network blind to its input: every image gets the same
#   activation codes, the kernel is rank one and log det = -inf. (For grad_norm and snip that
#   crippling is meaningless: BatchNorm over a constant map amplifies gradients by 1/sqrt(eps).)
# * params, flops: a 48 → 8 channel bottleneck in stage 3 (synflow drops too: fewer paths).
CRIPPLED = {
    "synflow": ("zero_classifier", "bottleneck"),
    "snip": ("zero_classifier",),
    "grad_norm": ("zero_classifier",),
    "naswot": ("blind_stem",),
    "params": ("bottleneck",),
    "flops": ("bottleneck",),
}

# (flops: fvcore traces are the slowest part of the folder; params makes the same point)
LARGER = {"synflow": ("wider", "deeper"), "naswot": ("wider", "deeper"), "params": ("wider", "deeper"),
          "flops": (), "grad_norm": (), "snip": ()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(CRIPPLED))
def test_crippled_network_ranks_below_healthy_and_larger_ones_above(name, family):
    healthy = _score(family, "healthy", name)
    for variant in CRIPPLED[name]:
        assert _score(family, variant, name) < healthy, variant
    if name in ("synflow", "snip"):
        assert _score(family, "zero_classifier", name) == 0.0
    if name == "grad_norm":
        assert _score(family, "zero_classifier", name) > 0.0
    if name == "naswot":
        assert _score(family, "blind_stem", name) == -math.inf
    # Wider (2× every stage) and deeper (2 blocks per stage) healthy siblings rank above where the
    # definition implies it: more paths (synflow), more units coding the inputs (naswot), more
    # weights and multiply-adds. Gradient magnitudes (grad_norm, snip) need not grow with size.
    for variant in LARGER[name]:
        assert _score(family, variant, name) > healthy, variant


@pytest.mark.parametrize("family", FAMILIES)
def test_synflow_flow_is_non_negative_everywhere_and_skips_mixing_logits(family):
    torch.manual_seed(0)
    saliency = _synflow_saliencies(build_model(tiny(family), num_classes=10), (3, 32, 32))
    assert min(s.min().item() for s in saliency.values()) >= 0.0  # norms and softmaxes would break this
    assert sum(s.sum().item() for s in saliency.values()) > 0.0
    # Weights that only compute softmax/sigmoid logits route the flow and carry none of it.
    routing = {"cmt_attn": "stages.2.blocks.0.mixer.q.weight",
               "hire": "stages.0.blocks.0.mixer.reweight.0.weight",
               "container": "stages.3.blocks.0.mixer.alpha",
               "dmixer": "stages.1.blocks.0.mixer.glob.q.weight",
               "convmlp": None}[family]
    if routing:
        assert saliency[routing].abs().max().item() == 0.0


# ---- batches ------------------------------------------------------------------------------------

def test_given_batch_equals_the_seeded_random_batch_and_labels_are_drawn_when_missing():
    spec = tiny("container")
    x, y = random_batch(BATCH, 32, 10, seed=0)
    for name in ("naswot", "grad_norm", "snip"):
        assert score(spec, name, (x, y)) == _score("container", "healthy", name)
    assert score(spec, "snip", x) == score(spec, "snip", (x, y))  # labels from the same seed
    assert score(spec, "snip", (x, (y + 1) % 10)) != score(spec, "snip", (x, y))


def test_naswot_cannot_tell_identical_images_apart():
    x, _ = random_batch(BATCH, 32, 10, seed=0)
    x[1] = x[0]
    assert score(tiny("dmixer"), "naswot", x) == -math.inf


# ---- isolation ---------------------------------------------------------------------------------

def test_scoring_leaves_the_callers_model_and_rng_untouched():
    torch.manual_seed(0)
    model = build_model(tiny("cmt_attn"), num_classes=10).train()
    model.stages[1].eval()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()
    for name in SCORES:
        score(model, name, batch_size=BATCH)
        score(tiny("hire"), name, batch_size=BATCH)
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in state.items())
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert type(model.stages[0].blocks[0].norm1).__name__ == "LayerNorm2d"  # synflow swapped a copy's


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch, match", [
    (torch.randn(4, 1, 32, 32), r"batch must have the model's 3 input channels, image shape, got \(4, 1, 32, 32\)"),
    (torch.randn(1, 3, 32, 32), r"batch must hold at least 2 images .* batch size, got 1"),
    (torch.randn(3, 32, 32), r"batch must be float images \(N, C, H, W\) .* got torch.Size\(\[3, 32, 32\]\)"),
    ((torch.randn(2, 3, 32, 32), torch.tensor([0, 10])), r"batch labels must lie in \[0, 10\) .* got \(0, 10\)"),
    ((torch.randn(2, 3, 32, 32), torch.tensor([0])), r"batch labels must be 2 integer class indices"),
])
def test_bad_batches_are_named_with_rule_and_value(batch, match):
    with pytest.raises(ScoreError, match=match):
        score(tiny("convmlp"), "snip", batch)


def test_bad_arguments_and_unscorable_models_raise_hvsearch_errors():
    with pytest.raises(ScoreError, match="batch_size must be an integer >= 2 .* got 1"):
        score(tiny("convmlp"), "naswot", batch_size=1)
    with pytest.raises(ScoreError, match="seed must be an integer >= 0, got -1"):
        score(tiny("convmlp"), "params", seed=-1)
    features = build_model(tiny("convmlp"), features_only=True)
    with pytest.raises(ScoreError, match="model output must be logits .* got 'list'"):
        score(features, "synflow")
    with pytest.raises(ScoreError, match="model has no classifier .* num_classes, got 0"):
        headless = build_model(tiny("convmlp"))
        headless.reset_classifier(0)
        score(headless, "synflow")
    with pytest.raises(ScoreError, match="naswot needs rectifying non-linearities"):
        score(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), "naswot", torch.randn(4, 3, 2, 2), num_classes=3)
    with pytest.raises(ScoreError, match="arch must be a ModelSpec, .* got 'int'"):
        score(3, "params")
    assert issubclass(ScoreError, HVSearchError)
