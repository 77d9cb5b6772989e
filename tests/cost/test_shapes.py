"""The shape counter (hvsearch.cost.shapes) against fvcore, the reference of the convention: equal
on sampled architectures of every space (every seed: tests/models/test_seeds.py), on the op
handles' corner cases, and strict in the same way."""
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hvsearch.cost import UncountedOpError, count, count_spec
from hvsearch.cost.shapes import build_for_counting
from hvsearch.errors import SpecError
from hvsearch.models import build_model, get_seed
from hvsearch.space import RandomTrial, load_space

SPACES = sorted(Path(__file__).parents[2].joinpath("spaces").glob("*.yaml"))


def _same(model: nn.Module, resolution, in_chans: int = 3):
    ours = count(model, resolution, in_chans)
    ref = count(model, resolution, in_chans, counter="fvcore")
    assert (ours.flops, ours.params, ours.by_stage) == (ref.flops, ref.params, ref.by_stage)
    return ours


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_sampled_architectures_of_every_space_count_as_fvcore(path):
    space = load_space(path)
    rng, specs = random.Random(7), []
    while len(specs) < 3:
        try:
            specs.append(space.arch.sample(RandomTrial(rng)))
        except SpecError:
            continue
    for spec in specs:
        res = space.constraints.resolution or spec.resolution
        ours, ref = count_spec(spec, res), count_spec(spec, res, counter="fvcore")
        assert ours.flops > 0
        assert (ours.flops, ours.params, ours.by_stage) == (ref.flops, ref.params, ref.by_stage), spec.arch_id


class Ops(nn.Module):
    """The handles' corner cases: string padding, dilation, groups, a broadcast matmul, both of
    fvcore's special einsums and its general one, a norm without affine, resizing, pooling."""

    def __init__(self):
        super().__init__()
        self.same = nn.Conv2d(4, 8, 3, padding="same", dilation=2, groups=2)
        self.strided = nn.Conv2d(8, 6, (3, 5), stride=(2, 3), padding=(1, 2))
        self.bn = nn.BatchNorm2d(6, affine=False)
        self.gn = nn.GroupNorm(2, 6)
        self.ln = nn.LayerNorm(6, elementwise_affine=False)
        self.proj = nn.Linear(6, 5)
        self.table = nn.Parameter(torch.zeros(1, 6, 3, 3))

    def forward(self, x):
        x = self.gn(self.bn(self.strided(self.same(x))))
        b, c, h, w = x.shape
        t = self.ln(x.flatten(2).transpose(1, 2))  # (b, hw, c)
        a = t @ t.transpose(1, 2)  # (b, hw, hw)
        y = torch.matmul(a, torch.ones(hw := h * w, c))  # broadcast: (hw, c) over the batch
        e1 = torch.einsum("bnc,bnd->bcd", t, t)
        e2 = torch.einsum("xyz,xwz->xwy", t, t)
        e3 = torch.einsum("bgcn,gcn->bcn", t.reshape(b, 2, 3, hw), torch.ones(2, 3, hw))
        bias = F.interpolate(self.table, size=(h, w), mode="bicubic", align_corners=False)
        up = F.interpolate(x, scale_factor=2, mode="bilinear") + F.interpolate(x, scale_factor=2, mode="nearest")
        pooled = F.adaptive_avg_pool2d(x + bias, 1).flatten(1)
        return self.proj(pooled + y.mean(1)) + e1.sum() + e2.sum() + e3.sum() + up.mean()


def test_handles_count_as_fvcore_on_corner_cases():
    cost = _same(Ops(), (11, 14), in_chans=4)
    assert cost.flops > 0


def test_sdpa_and_a_transxnet_seed_at_another_size():
    # at 96 px, not the build size: the shape counter follows the input, as fvcore does
    model = build_for_counting(lambda: build_model(get_seed("transxnet_t").spec))
    _same(model, 96)


def test_uncounted_call_named_and_non_strict_mode_goes_on():
    class Bilinear(nn.Module):
        def forward(self, x):
            return F.bilinear(x.flatten(1), x.flatten(1), torch.ones(2, 12, 12))

    with pytest.raises(UncountedOpError, match="bilinear"):
        count(Bilinear(), (2, 2))
    assert count(Bilinear(), (2, 2), strict=False).flops == 0


def test_built_for_counting_skips_initialisation_only_inside():
    spec = get_seed("cmt_ti").spec
    torch.manual_seed(0)
    counted = build_for_counting(lambda: build_model(spec))
    torch.manual_seed(0)
    a = build_model(spec)
    torch.manual_seed(0)
    b = build_model(spec)  # after a counting build, models initialise as before: the mode is gone
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert sum(p.numel() for p in counted.parameters()) == sum(p.numel() for p in a.parameters())
    # buffers a module computes (position indices) are real in the counting build
    for (name, buf), (_, ref) in zip(counted.named_buffers(), a.named_buffers()):
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(buf, ref), name


def test_counting_leaves_the_model_as_it_was():
    model = build_model(get_seed("container_light").spec).train()
    before = [p.clone() for p in model.parameters()]
    hooks = len(model._forward_hooks) + len(model._forward_pre_hooks)
    count(model, 64)
    assert model.training
    assert len(model._forward_hooks) + len(model._forward_pre_hooks) == hooks
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    out = model.eval()(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out).all()


def test_unknown_counter_is_refused():
    with pytest.raises(ValueError, match="counter must be one of shapes, fvcore"):
        count(nn.Linear(2, 2), 1, counter="ptflops")
