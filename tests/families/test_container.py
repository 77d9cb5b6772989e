"""Container's multi-head context aggregation: the gate, the branches computed by hand, exact
parameter and FLOP counts, the N×N static affinity at other sizes, spec validation, and a hybrid
Container + CMT model that learns."""
import math

import pytest
import torch
import torch.nn.functional as F

from hvsearch.arch import ModelSpec, StageContext, StageSpec
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTHeadConfig, CMTStemConfig, IRFFNConfig
from hvsearch.arch.common import MlpFFNConfig, PatchDownsampleConfig
from hvsearch.families.container.config import ContainerMixerConfig
from hvsearch.cost import count
from hvsearch.errors import SpecError
from hvsearch.families.container.layers import ContainerMixer, resize_affinity
from hvsearch.models import HybridBackbone, get_seed


def ctx(dim, size, index=3):
    return StageContext(index=index, dim=dim, in_dim=dim, height=size, width=size, stride=32, depth=1)


def mixer(dim=32, size=6, **knobs):
    return ContainerMixer(ContainerMixerConfig(**knobs), dim, ctx(dim, size)).eval()


def heads_view(t, heads):
    """(B, C, H, W) → (B, heads, N, d) with channel c = head·d + i."""
    B, C, H, W = t.shape
    return t.reshape(B, heads, C // heads, H * W).transpose(-1, -2)


def attention_by_hand(q, k, v):
    a = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
    return a @ v


def from_heads(t, shape):
    B, C, H, W = shape
    return t.transpose(-1, -2).reshape(B, C, H, W)


# ---- the gate and the branches -------------------------------------------------------------

@pytest.mark.parametrize("kv_pool", [1, 2])
def test_gate_at_init_is_an_even_mix_of_conv_and_attention(kv_pool):
    C, h = 32, 4
    m = mixer(C, 6, static="dwconv", dynamic=True, heads=h, kernel=5, kv_pool=kv_pool)
    assert m.alpha.item() == 0.0
    x = torch.randn(2, C, 7, 5)  # not the build size, odd sides: partial pooling windows
    with torch.no_grad():
        y = m.proj_in(x)
        q, k, v = y[:, :C], y[:, C:2 * C], y[:, 2 * C:]
        conv = m.static_conv(v)  # the static branch reads the value third only
        if kv_pool > 1:
            k, v = (F.avg_pool2d(t, kv_pool, kv_pool, ceil_mode=True) for t in (k, v))
        attn = from_heads(attention_by_hand(heads_view(q, h), heads_view(k, h), heads_view(v, h)), x.shape)
        expected = m.proj_out(0.5 * conv + 0.5 * attn)
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
        # the two branches differ, so an uneven gate would be seen
        assert (conv - attn).abs().max() > 0.1
        m.alpha.fill_(1.5)
        g = torch.sigmoid(torch.tensor(1.5))
        torch.testing.assert_close(m(x), m.proj_out(g * attn + (1 - g) * conv), rtol=1e-5, atol=1e-5)


def test_gate_learns():
    m = mixer(16, 4, static="dwconv", dynamic=True, heads=2).train()
    m(torch.randn(2, 16, 4, 4)).square().mean().backward()
    assert m.alpha.grad is not None and m.alpha.grad.abs().item() > 0


def test_static_mlp_branch_is_a_per_head_token_mixing_matrix():
    C, h, size = 12, 3, 4
    m = mixer(C, size, static="mlp", dynamic=False, heads=h)
    n = size * size
    assert m.static_affinity.shape == (h, n, n) and m.alpha is None
    x = torch.randn(2, C, size, size)
    with torch.no_grad():
        v = heads_view(m.proj_in(x), h)  # (B, h, N, d)
        mixed = torch.einsum("hqk,bhkd->bhqd", m.static_affinity, v)
        torch.testing.assert_close(m(x), m.proj_out(from_heads(mixed, x.shape)), rtol=1e-5, atol=1e-5)


def test_static_only_and_dynamic_only_paths():
    C, h = 16, 2
    x = torch.randn(1, C, 5, 5)
    att = mixer(C, 5, static="none", dynamic=True, heads=h)
    assert att.static_conv is None and att.static_affinity is None and att.alpha is None
    with torch.no_grad():
        y = att.proj_in(x)
        q, k, v = (heads_view(t, h) for t in y.split(C, 1))
        torch.testing.assert_close(att(x), att.proj_out(from_heads(attention_by_hand(q, k, v), x.shape)),
                                   rtol=1e-5, atol=1e-5)
    conv = mixer(C, 5, static="dwconv", dynamic=False, kernel=3)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), conv.proj_out(conv.static_conv(conv.proj_in(x))))


# ---- the N×N affinity at other feature sizes -------------------------------------------------

def test_resized_affinity_keeps_the_sum_over_keys():
    # A constant affinity aggregates N·c of a constant value map; after resizing to another grid
    # (fewer or more keys) the aggregate must stay the same.
    table = torch.full((2, 36, 36), 0.25)
    for size in ((6, 6), (3, 3), (1, 1), (8, 12), (2, 5)):
        t = resize_affinity(table, (6, 6), size)
        n = size[0] * size[1]
        assert t.shape == (2, n, n)
        torch.testing.assert_close(t.sum(-1), torch.full((2, n), 36 * 0.25))
    assert resize_affinity(table, (6, 6), (6, 6)) is table


def test_resized_affinity_follows_positions():
    # An affinity that depends only on the key's column (a smooth ramp) stays a ramp in the key's
    # column after resizing, per query, and the same for every query.
    cols = torch.linspace(0, 1, 8).repeat(8)  # key k at column k % 8
    table = cols.expand(64, 64).unsqueeze(0).clone()
    t = resize_affinity(table, (8, 8), (4, 4)).reshape(4, 4, 4, 4)  # (qh, qw, kh, kw)
    ramp = t[0, 0, 0]
    assert torch.all(ramp[1:] > ramp[:-1])
    torch.testing.assert_close(t, ramp.expand(4, 4, 4, 4))


def test_mlp_static_runs_at_any_size_with_gradients():
    m = mixer(8, 4, static="mlp", dynamic=True, heads=2).train()
    for size in ((4, 4), (1, 1), (3, 7)):
        out = m(torch.randn(2, 8, *size))
        assert out.shape == (2, 8, *size)
        out.square().mean().backward()
    assert torch.isfinite(m.static_affinity.grad).all() and m.static_affinity.grad.abs().sum() > 0


# ---- exact parameter and FLOP counts ---------------------------------------------------------

def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_dynamic_off_drops_the_query_key_projection_and_the_gate():
    C, k = 64, 5
    light_conv = mixer(C, 8, static="dwconv", dynamic=False, kernel=k)
    mixed = mixer(C, 8, static="dwconv", dynamic=True, kernel=k, heads=16)
    # Container-Light's conv block: pw → dw5×5 → pw, all with bias
    assert n_params(light_conv) == 2 * (C * C + C) + (k * k * C + C)
    # its mixed block: pw C→3C, dw5×5 on V, pw C→C, one gate scalar
    assert n_params(mixed) == (3 * C * C + 3 * C) + (k * k * C + C) + (C * C + C) + 1
    assert n_params(mixed) - n_params(light_conv) == 2 * C * C + 2 * C + 1
    assert not any("alpha" in n for n, _ in light_conv.named_parameters())


def test_flops_of_each_branch():
    C, H, W, k = 32, 8, 8, 5
    N = H * W
    proj = (3 * C + C) * C * N  # pw in (q, k, v) and pw out
    for pool in (1, 2, 4):
        m = mixer(C, 8, static="dwconv", dynamic=True, heads=4, kernel=k, kv_pool=pool)
        cost = count(m, (H, W), in_chans=C)
        attn = 2 * N * (N // pool ** 2) * C  # the two attention matmuls against pooled keys
        assert cost.flops == proj + k * k * C * N + attn
    m = mixer(C, 8, static="mlp", dynamic=False, heads=4)
    assert count(m, (H, W), in_chans=C).flops == 2 * C * C * N + N * N * C


def test_container_light_parameters_are_exactly_the_released_models():
    assert count(HybridBackbone(get_seed("container_light").spec), 224).params == 20_633_643


# ---- spec validation -------------------------------------------------------------------------

def _spec(**knobs):
    base = get_seed("container_light").spec.to_dict()
    base["stages"][3]["mixer"].update(knobs)
    return base


@pytest.mark.parametrize("knobs, message", [
    ({"heads": 12}, "stages.3.mixer.heads must divide the stage width 512, got 12"),
    ({"heads": 0}, "stages.3.mixer.heads must be > 0, got 0"),
    ({"kernel": 4}, "stages.3.mixer.kernel must be an odd size >= 1 (the depthwise conv keeps the map size), got 4"),
    ({"static": "conv"}, "stages.3.mixer.static must be one of dwconv, mlp, none, got 'conv'"),
    ({"static": "none", "dynamic": False}, "stages.3.mixer.static must be an affinity (dwconv or mlp) when "
                                           "dynamic is false, or the mixer aggregates nothing, got 'none'"),
    ({"kv_pool": 2, "dynamic": False}, "stages.3.mixer.kv_pool must be 1 when dynamic is false"),
    ({"kv_pool": 8}, "stages.3.mixer.kv_pool must be <= the stage's feature size 7 at the build resolution, got 8"),
    ({"kv_pool": 0}, "stages.3.mixer.kv_pool must be > 0, got 0"),
    ({"dynamic": 1}, "stages.3.mixer.dynamic must be true or false, got 1"),
    ({"sr_ratio": 2}, "stages.3.mixer.sr_ratio is not a knob of mixer 'container'"),
])
def test_validation_names_path_rule_and_value(knobs, message):
    with pytest.raises(SpecError) as e:
        ModelSpec.from_dict(_spec(**knobs))
    assert message in str(e.value)


def test_heads_only_checked_where_used():
    # A conv-only mixer has no heads, so a head count that does not divide the width is harmless.
    ModelSpec.from_dict(_spec(static="dwconv", dynamic=False, heads=12))


def test_stage_defaults_come_from_the_mixer():
    st = get_seed("container_light").spec.stages[0]
    assert (st.norm, st.norm_eps, st.pos_kernel, st.layer_scale) == ("batchnorm", 1e-5, 3, 0.0)


def test_spec_round_trip():
    spec = get_seed("container").spec
    again = ModelSpec.from_yaml(spec.to_yaml())
    assert again.arch_id == spec.arch_id and again.stages[0].mixer == spec.stages[0].mixer


# ---- a hybrid with CMT stages learns -----------------------------------------------------------

def hybrid_spec() -> ModelSpec:
    down = PatchDownsampleConfig(norm="layernorm")
    return ModelSpec(
        stem=CMTStemConfig(width=8),
        stages=(
            StageSpec(depth=1, width=16, downsample=down, mixer=ContainerMixerConfig(static="dwconv", dynamic=False),
                      ffn=MlpFFNConfig(ratio=2)),
            StageSpec(depth=1, width=24, downsample=down, mixer=CMTAttentionConfig(heads=2, sr_ratio=2),
                      ffn=IRFFNConfig(ratio=2)),
            StageSpec(depth=2, width=32, downsample=down,
                      mixer=ContainerMixerConfig(static="mlp", dynamic=True, heads=4), ffn=MlpFFNConfig(ratio=2)),
            StageSpec(depth=1, width=48, downsample=down,
                      mixer=ContainerMixerConfig(static="dwconv", dynamic=True, heads=4, kv_pool=2),
                      ffn=IRFFNConfig(ratio=2)),
        ),
        head=CMTHeadConfig(features=64, dropout=0.0), resolution=64, num_classes=3,
    )


def test_hybrid_container_cmt_model_trains(fit_batch):
    model = HybridBackbone(hybrid_spec()).train()
    assert model.spec.families == ("container", "cmt", "container", "container")
    x = torch.randn(8, 3, 64, 64)
    y = torch.arange(8) % 3
    losses = fit_batch(model, x, y, steps=10, lr=2e-3)
    assert losses[-1] < 0.6 * losses[0], losses
    gates = [m.alpha for m in model.modules() if isinstance(m, ContainerMixer) and m.alpha is not None]
    assert len(gates) == 3 and all(g.item() != 0.0 for g in gates)  # the gates moved
    model.eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 96, 64), intermediates_only=True)  # not the build size
    assert [f.shape[-2:] for f in feats] == [(24, 16), (12, 8), (6, 4), (3, 2)]
