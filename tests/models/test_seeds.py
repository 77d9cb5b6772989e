"""Every catalog seed, parametrised over the registry: cost against the reference table,
forward/backward at 32 px and at its build size, pyramid shapes, timm registry."""
import pytest
import timm
import torch

from hvsearch.cost import FREE_CALLS, count_spec
from hvsearch.models import TIMM_PREFIX, get_seed, seed_names

SEEDS = seed_names()


@pytest.mark.parametrize("name", SEEDS)
def test_cost_matches_reference(name):
    seed = get_seed(name)
    cost = count_spec(seed.spec)  # from the spec (hvsearch.cost.analytic)
    shapes = count_spec(seed.spec, counter="shapes")  # strict: raises on any uncounted costly op
    assert set(shapes.free_ops) <= FREE_CALLS
    # fvcore is the reference of the convention: both other counters give its numbers to the MAC
    reference = count_spec(seed.spec, counter="fvcore")
    for c in (cost, shapes):
        assert (c.flops, c.params, c.by_stage, c.params_by_stage) == (
            reference.flops, reference.params, reference.by_stage, reference.params_by_stage)
    p_tol, f_tol = seed.tolerances
    assert cost.params_m == pytest.approx(seed.ref_params_m, rel=p_tol), cost.params
    assert cost.gflops == pytest.approx(seed.ref_gflops, rel=f_tol), cost.flops
    assert sum(cost.by_stage.values()) == cost.flops
    assert sum(cost.params_by_stage.values()) == cost.params


@pytest.mark.parametrize("name", SEEDS)
def test_forward_backward(name):
    spec = get_seed(name).spec
    model = timm.create_model(TIMM_PREFIX + name, num_classes=7)
    for batch, res in ((2, 32), (1, spec.resolution)):
        model.zero_grad(set_to_none=True)
        out = model(torch.randn(batch, 3, res, res))
        assert out.shape == (batch, 7)
        out.float().pow(2).mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", SEEDS)
def test_pyramid_non_square(name):
    model = timm.create_model(TIMM_PREFIX + name, features_only=True).eval()
    h, w = 160, 224
    with torch.no_grad():
        feats = model(torch.randn(1, 3, h, w))
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    for f, c, r in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape == (1, c, h // r, w // r)


def test_forward_features_and_head_split():
    model = timm.create_model(TIMM_PREFIX + SEEDS[0], num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.spec.stages[-1].width
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[1] == model.num_features and pre.shape == (2, model.head_hidden_size)
        torch.testing.assert_close(model.forward_head(feats), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
