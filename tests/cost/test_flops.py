"""The cost convention: SDPA is counted, nothing costly is skipped, params are exact."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hvsearch.cost import Cost, UncountedOpError, count, count_spec
from hvsearch.models import get_seed


class Attn(nn.Module):
    def __init__(self, heads, dqk, dv):
        super().__init__()
        self.heads, self.dqk, self.dv = heads, dqk, dv

    def forward(self, x):  # x: (1, C, H, W) → tokens N = H·W
        B, C, H, W = x.shape
        n = H * W
        q = x.flatten(2).transpose(1, 2)[..., : self.heads * self.dqk].reshape(B, n, self.heads, self.dqk)
        q = q.transpose(1, 2)
        k = q[:, :, : n // 2]
        v = torch.ones(B, self.heads, n // 2, self.dv)
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_counted_as_both_matmuls():
    heads, dqk, dv, h, w = 2, 4, 3, 4, 6
    cost = count(Attn(heads, dqk, dv), (h, w), in_chans=heads * dqk)
    nq, nk = h * w, h * w // 2
    assert cost.flops == heads * nq * nk * (dqk + dv)


def test_conv_and_linear_are_multiply_adds():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 5 * 5, 10))
    cost = count(m, 5)
    assert cost.flops == 3 * 8 * 9 * 25 + 8 * 25 * 10
    assert cost.params == 3 * 8 * 9 + 8 * 25 * 10 + 10


class Costly(nn.Module):
    def forward(self, x):  # addbmm does multiply-adds and fvcore has no handle for it
        b = x.flatten(2)
        return torch.addbmm(torch.zeros(b.shape[1], b.shape[1]), b, b.transpose(1, 2))


def test_uncounted_costly_op_raises_instead_of_undercounting():
    with pytest.raises(UncountedOpError, match="addbmm"):
        count(Costly(), 4)
    assert isinstance(count(Costly(), 4, strict=False), Cost)


def test_per_stage_breakdown_and_fvcore_param_count_agree():
    from fvcore.nn import parameter_count

    from hvsearch.models import build_model

    spec = get_seed("cmt_ti").spec
    model = build_model(spec)
    cost = count(model, spec.resolution)
    assert parameter_count(model)[""] == cost.params
    assert set(cost.by_stage) == {"stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"}
    assert all(v > 0 for v in cost.by_stage.values())


def test_count_restores_training_mode_and_counts_at_other_sizes():
    spec = get_seed("cmt_ti").spec
    from hvsearch.models import build_model

    model = build_model(spec).train()
    small = count(model, 64)
    assert model.training
    native = count_spec(spec)
    # attention and convs shrink with the map: cost at 64 px is far below the 160 px cost
    assert small.flops < native.flops / 4
    assert small.params == native.params
