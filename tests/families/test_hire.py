"""Hire-MLP mixer: the vectorised rearrangement against a per-region reference computed token by
token, padding and shift paths, the per-block shift schedule, spec validation messages, and a
hybrid Hire + CMT model that trains."""
import pytest
import torch
import torch.nn.functional as F

from hvsearch.arch import ModelSpec, StageContext, StageSpec
from hvsearch.families.cmt.config import CMTAttentionConfig
from hvsearch.arch.common import (
    ConvDownsampleConfig,
    ConvStemConfig,
    MlpFFNConfig,
    NoDownsampleConfig,
    NormPoolHeadConfig,
    PatchDownsampleConfig,
)
from hvsearch.families.hire.config import HireMixerConfig
from hvsearch.errors import SpecError
from hvsearch.families.hire.layers import COLS, ROWS, HireMixer, group_regions, pad_to_multiple, ungroup_regions
from hvsearch.models import HybridBackbone, get_seed


def _ctx(dim, block=0, size=8, depth=4):
    return StageContext(index=0, dim=dim, in_dim=dim, height=size, width=size, stride=4, depth=depth, block=block)


def _module(dim=4, region=3, block=0, step_stride=2, step_dilation=1, pad_mode="circular"):
    cfg = HireMixerConfig(region=region, step_stride=step_stride, step_dilation=step_dilation, pad_mode=pad_mode)
    m = HireMixer(cfg, dim, _ctx(dim, block)).double().eval()
    # Non-trivial eval BN statistics so the reference must apply them too.
    with torch.no_grad():
        for bn in (m.mlp_h[1], m.mlp_w[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m


def reference_rows(x, mlp, p, s, pad_mode):
    """The H branch one region and one column at a time, straight from the definition: block
    rows are the map rolled down by s (row r of the rolled map is x[(r - s) mod H]), padded at
    the bottom up to a multiple of p; the p rows of region j, column w, stacked c-major
    (entry c·p + i = channel c of the region's row i), go through the MLP as one token; the
    outputs of real rows are written back at their un-rolled position."""
    B, C, H, W = x.shape
    out = torch.zeros_like(x)
    n_regions = -(-H // p)
    for j in range(n_regions):
        rows = [j * p + i for i in range(p)]
        for col in range(W):
            parts = []
            for c in range(C):
                for r in rows:
                    if r < H or pad_mode == "circular":
                        parts.append(x[:, c, ((r % H) - s) % H, col])
                    else:
                        parts.append(torch.zeros_like(x[:, c, 0, col]))
            token = torch.stack(parts, 1).view(B, C * p, 1, 1)
            y = mlp(token).view(B, C, p)
            for i, r in enumerate(rows):
                if r < H:
                    out[:, :, (r - s) % H, col] = y[:, :, i]
    return out


def reference_cols(x, mlp, p, s, pad_mode):
    return reference_rows(x.transpose(2, 3), mlp, p, s, pad_mode).transpose(2, 3)


def reference_hire(m, x):
    """The whole mixer from its definition, with the branch references above."""
    p, s = m.region, m.shift
    h = reference_rows(x, m.mlp_h, p, s, m.pad_mode)
    w = reference_cols(x, m.mlp_w, p, s, m.pad_mode)
    c = F.conv2d(x, m.mlp_c.weight, m.mlp_c.bias)
    pooled = (h + w + c).mean((2, 3))
    logits = m.reweight(pooled)  # (B, 3C): entry 3·c + k weighs branch k for channel c
    B, C = x.shape[:2]
    out = torch.zeros_like(x)
    for ch in range(C):
        a = torch.softmax(logits[:, 3 * ch:3 * ch + 3], dim=1)
        out[:, ch] = a[:, 0, None, None] * h[:, ch] + a[:, 1, None, None] * w[:, ch] + a[:, 2, None, None] * c[:, ch]
    return F.conv2d(out, m.proj.weight, m.proj.bias)


@pytest.mark.parametrize("shape,region,block,pad_mode", [
    ((2, 4, 6, 9), 3, 0, "circular"),   # both sizes multiples of p, no shift
    ((2, 4, 7, 5), 3, 1, "circular"),   # padding on both axes, shift 1
    ((1, 4, 8, 6), 4, 1, "circular"),   # H divisible, W padded by 2, shift 1
    ((2, 4, 7, 5), 3, 1, "zeros"),      # zero padding
    ((2, 4, 1, 2), 3, 1, "circular"),   # padding larger than the map: wraps more than once
])
def test_branches_and_mixer_match_per_region_reference(shape, region, block, pad_mode):
    m = _module(dim=shape[1], region=region, block=block, pad_mode=pad_mode)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        h = m.branch(x, ROWS)
        w = m.branch(x, COLS)
        torch.testing.assert_close(h, reference_rows(x, m.mlp_h, region, m.shift, pad_mode))
        torch.testing.assert_close(w, reference_cols(x, m.mlp_w, region, m.shift, pad_mode))
        out = m(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, reference_hire(m, x))


def test_group_layout_is_channel_major_and_ungroup_inverts():
    B, C, H, W, p = 1, 2, 6, 4, 3
    x = torch.arange(B * C * H * W, dtype=torch.float32).view(B, C, H, W)
    g = group_regions(x, ROWS, p)
    assert g.shape == (B, C * p, H // p, W)
    # channel c·p + i of region j, column w = x[c, j·p + i, w]
    assert g[0, 1 * p + 2, 1, 3] == x[0, 1, 1 * p + 2, 3]
    assert g[0, 0 * p + 1, 0, 2] == x[0, 0, 1, 2]
    gw = group_regions(x, COLS, 2)
    assert gw.shape == (B, C * 2, H, W // 2)
    assert gw[0, 1 * 2 + 1, 4, 1] == x[0, 1, 4, 1 * 2 + 1]
    torch.testing.assert_close(ungroup_regions(g, ROWS, p), x)
    torch.testing.assert_close(ungroup_regions(gw, COLS, 2), x)


def test_circular_padding_wraps_and_zero_padding_fills():
    x = torch.arange(7, dtype=torch.float32).view(1, 1, 7, 1)
    assert pad_to_multiple(x, ROWS, 3, "circular").flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert pad_to_multiple(x, ROWS, 3, "zeros").flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 0]
    y = torch.tensor([5.0, 7.0]).view(1, 1, 1, 2)
    assert pad_to_multiple(y, COLS, 5, "circular").flatten().tolist() == [5, 7, 5, 7, 5]
    assert pad_to_multiple(x, ROWS, 7, "circular") is x


def test_shift_is_a_roll_that_is_undone():
    """With H, W multiples of p, a shifted branch is the unshifted branch on the rolled map,
    rolled back; the shift really regroups tokens (the outputs differ)."""
    shifted = _module(dim=4, region=3, block=1, step_dilation=2)
    plain = _module(dim=4, region=3, block=0)
    plain.load_state_dict(shifted.state_dict())
    assert (shifted.shift, plain.shift) == (2, 0)
    x = torch.randn(2, 4, 6, 9, dtype=torch.float64)
    with torch.no_grad():
        for axis in (ROWS, COLS):
            got = shifted.branch(x, axis)
            want = torch.roll(plain.branch(torch.roll(x, 2, axis), axis), -2, axis)
            torch.testing.assert_close(got, want)
            assert not torch.allclose(got, plain.branch(x, axis))


def test_padding_path_keeps_shape_and_backprops():
    m = HireMixer(HireMixerConfig(region=3, step_stride=3, step_dilation=1), 8, _ctx(8, block=2))
    x = torch.randn(2, 8, 7, 11, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_param_count_and_init():
    dim, p = 64, 4
    m = HireMixer(HireMixerConfig(region=p), dim, _ctx(dim))
    hid = dim // 2
    branch = dim * p * hid + 2 * hid + hid * dim * p + dim * p  # conv (no bias), BN, conv (bias)
    reweight = dim * (dim // 4) + dim // 4 + (dim // 4) * 3 * dim + 3 * dim
    expected = 2 * branch + (dim * dim + dim) + reweight + (dim * dim + dim)
    assert sum(q.numel() for q in m.parameters()) == expected == 46_032
    # timm's trunc_normal_ truncates at ±2 absolute (as the reference), so at std 0.02 it is
    # effectively a plain normal: check the spread, not a ±2σ bound.
    for w in (m.mlp_h[0].weight, m.mlp_w[3].weight, m.reweight[0].weight):
        assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert m.proj.bias.abs().sum() == 0 and m.reweight[2].bias.abs().sum() == 0


def test_seed_shift_schedule_matches_reference_table():
    model = HybridBackbone(get_seed("hire_mlp_small").spec)
    shifts = [[b.mixer.shift for b in st.blocks] for st in model.stages]
    assert shifts == [[0, 2, 0], [0, 2, 0, 2], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0], [0, 1, 0]]
    assert [st.blocks[0].mixer.region for st in model.stages] == [4, 3, 3, 2]
    assert isinstance(model.stages[0].blocks[0].norm1, torch.nn.BatchNorm2d)
    assert model.stages[0].blocks[0].pos is None


def _hire_spec(mixers, resolution=224):
    base = get_seed("hire_mlp_tiny").spec
    stages = tuple(StageSpec(depth=s.depth, width=s.width, downsample=s.downsample, mixer=mx, ffn=s.ffn)
                   for s, mx in zip(base.stages, mixers))
    return base.replace(stages=stages, resolution=resolution)


def _mixers(**changes):
    stage, knobs = changes.pop("stage"), changes
    out = [HireMixerConfig(region=p, step_stride=ss, step_dilation=sd)
           for p, ss, sd in zip((4, 3, 3, 2), (2, 2, 3, 2), (2, 2, 1, 1))]
    out[stage] = HireMixerConfig(**{**dict(region=out[stage].region, step_stride=out[stage].step_stride,
                                     step_dilation=out[stage].step_dilation), **knobs})
    return out


@pytest.mark.parametrize("stage,knobs,message", [
    (1, dict(region=32), "stages.1.mixer.region must be <= the stage's feature size 28, got 32"),
    (3, dict(region=8), "stages.3.mixer.region must be <= the stage's feature size 7, got 8"),
    (0, dict(region=0), "stages.0.mixer.region must be > 0, got 0"),
    (0, dict(step_stride=0), "stages.0.mixer.step_stride must be > 0, got 0"),
    (0, dict(step_dilation=-1), "stages.0.mixer.step_dilation must be >= 0 (0 = no shift), got -1"),
    (0, dict(region=2, step_dilation=2),
     "stages.0.mixer.step_dilation gives a largest per-block shift of 2 (over the stage's 2 blocks, "
     "step_stride 2), which must be < region 2, got 2"),
    (2, dict(step_stride=3, step_dilation=2),
     "stages.2.mixer.step_dilation gives a largest per-block shift of 4 (over the stage's 4 blocks, "
     "step_stride 3), which must be < region 3, got 2"),
    (0, dict(pad_mode="reflect"), "stages.0.mixer.pad_mode must be one of circular, zeros, got 'reflect'"),
    (0, dict(hidden_ratio=0.0), "stages.0.mixer.hidden_ratio must be > 0, got 0.0"),
])
def test_validation_messages(stage, knobs, message):
    with pytest.raises(SpecError) as err:
        _hire_spec(_mixers(stage=stage, **knobs)).validate()
    assert str(err.value) == message


def test_validation_uses_shifts_the_stage_really_has_and_parses_knobs():
    # step_stride 3 with dilation 2 would reach shift 4 >= region 3, but a 2-block stage only
    # uses shifts 0 and 2.
    ok = _hire_spec(_mixers(stage=3, region=3, step_stride=3, step_dilation=2)).validate()
    assert ok.stages[3].mixer.max_shift(2) == 2
    data = get_seed("hire_mlp_tiny").spec.to_dict()
    data["stages"][1]["mixer"]["region"] = 32
    with pytest.raises(SpecError, match=r"stages\.1\.mixer\.region must be <= the stage's feature size 28"):
        ModelSpec.from_dict(data)
    data["stages"][1]["mixer"] = {"type": "hire", "shift": 1}
    with pytest.raises(SpecError, match=r"stages\.1\.mixer\.shift is not a knob of mixer 'hire'"):
        ModelSpec.from_dict(data)
    data["stages"][1]["mixer"] = {"type": "hire", "region": 3, "pad_mode": "zeros"}
    spec = ModelSpec.from_dict(data)
    assert spec.stages[1].mixer == HireMixerConfig(region=3, pad_mode="zeros")
    assert ModelSpec.from_yaml(spec.to_yaml()) == spec


def test_width_too_small_for_reweighting():
    stages = list(_hire_spec(_mixers(stage=0)).stages)
    stages[0] = StageSpec(depth=1, width=2, downsample=NoDownsampleConfig(), mixer=HireMixerConfig(region=2), ffn=MlpFFNConfig())
    spec = get_seed("hire_mlp_tiny").spec.replace(stages=tuple(stages), stem=ConvStemConfig(width=2, kernel=7, padding=2))
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert str(err.value) == ("stages.0.width must be >= 4 for a `hire` mixer (its reweighting MLP is C // 4 "
                              "wide), got 2")


def test_hybrid_hire_cmt_model_trains(fit_batch):
    """Stage 1 Hire-MLP (BN, conv stem), stages 2-4 CMT attention (LN, LPU, patch embeds)."""
    torch.manual_seed(0)
    stages = (
        StageSpec(depth=2, width=16, downsample=NoDownsampleConfig(),
                  mixer=HireMixerConfig(region=3, step_stride=2, step_dilation=1), ffn=MlpFFNConfig(ratio=2.0)),
        StageSpec(depth=1, width=32, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=1, sr_ratio=2),
                  ffn=MlpFFNConfig(ratio=2.0)),
        StageSpec(depth=1, width=32, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=2, sr_ratio=1),
                  ffn=MlpFFNConfig(ratio=2.0)),
        StageSpec(depth=1, width=64, downsample=ConvDownsampleConfig(norm="batchnorm", act=True),
                  mixer=CMTAttentionConfig(heads=2, sr_ratio=1), ffn=MlpFFNConfig(ratio=2.0)),
    )
    spec = ModelSpec(stem=ConvStemConfig(width=16, kernel=7, padding=2, bias=True, norm="batchnorm", act=True),
                     stages=stages, head=NormPoolHeadConfig(), resolution=64, num_classes=4).validate()
    assert spec.families == ("hire", "cmt", "cmt", "cmt")
    assert (spec.stages[0].norm, spec.stages[1].norm) == ("batchnorm", "layernorm")
    model = HybridBackbone(spec)
    assert isinstance(model.stages[0].blocks[1].mixer, HireMixer) and model.stages[0].blocks[1].mixer.shift == 1
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 4
    losses = fit_batch(model, x, y, steps=12, lr=2e-3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.75
