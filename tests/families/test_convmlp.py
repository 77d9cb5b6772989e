"""ConvMLP parts: tokenizer, conv-stage bottleneck, the conv-MLP block (its non-residual depthwise
connect), per-stage drop-path, init, validation messages, and a mixed ConvMLP/CMT model that trains."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hvsearch.arch import ModelSpec, StageContext, StageSpec
from hvsearch.families.cmt.config import CMTAttentionConfig, IRFFNConfig
from hvsearch.arch.common import (
    ConvDownsampleConfig,
    MlpFFNConfig,
    NoDownsampleConfig,
    NoFFNConfig,
    NormPoolHeadConfig,
    PatchDownsampleConfig,
)
from hvsearch.families.convmlp.config import ConvBottleneckConfig, ConvMLPMixerConfig, ConvMLPStemConfig
from hvsearch.errors import SpecError
from hvsearch.layers import build, make_norm
from hvsearch.families.convmlp.layers import ConvMLPMixer, ConvBottleneck, ConvMLPStem
from hvsearch.models import HybridBackbone, get_seed
from hvsearch.models.backbone import Block, drop_path_rates
from hvsearch.families.convmlp.seeds import convmlp_spec
from timm.layers import DropPath


def _ctx(dim, depth=1, index=1):
    return StageContext(index=index, dim=dim, in_dim=dim, height=8, width=8, stride=8, depth=depth)


def _mlp_stage(dim=8, ratio=2.0, depth=1):
    return StageSpec(depth=depth, width=dim, downsample=ConvDownsampleConfig(), mixer=ConvMLPMixerConfig(ratio=ratio),
                     ffn=MlpFFNConfig(ratio=ratio))


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


def _ln(x, norm):
    """Channels-last LayerNorm of an NHWC tensor with an NCHW norm module's parameters."""
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def _mlp(x, mlp):
    """The MLP as the official Linear layers on NHWC tokens, from our 1×1 conv weights."""
    fc1, fc2 = mlp[0], mlp[2]
    h = F.gelu(F.linear(x, fc1.weight.flatten(1), fc1.bias))
    return F.linear(h, fc2.weight.flatten(1), fc2.bias)


# ---- tokenizer --------------------------------------------------------------------------------

def test_tokenizer_shapes_and_params():
    cfg = ConvMLPStemConfig(width=64)
    stem = ConvMLPStem(cfg, 3).eval()
    # 3×3 convs 3→32→32→64 without bias, three BNs (weight + bias).
    assert sum(p.numel() for p in stem.parameters()) == 9 * (3 * 32 + 32 * 32 + 32 * 64) + 2 * (32 + 32 + 64)
    assert all(m.bias is None for m in stem.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        assert stem(torch.randn(1, 3, 224, 224)).shape == (1, 64, 56, 56)
        # Odd sizes round up at both stride-2 steps: 257 → 129 → 65.
        assert stem(torch.randn(1, 3, 257, 200)).shape == (1, 64, 65, 50)
    assert (cfg.out_size(224), cfg.out_size(257), cfg.out_size(200)) == (56, 65, 50)


# ---- conv stage -------------------------------------------------------------------------------

def test_conv_bottleneck_params_and_residual():
    block = ConvBottleneck(ConvBottleneckConfig(ratio=2.0), 64, _ctx(64))
    assert sum(p.numel() for p in block.parameters()) == (64 * 128 + 9 * 128 * 128 + 128 * 64
                                                          + 2 * (128 + 128 + 64))
    x = torch.randn(2, 64, 7, 7)
    out = block(x)
    # The branch ends in ReLU, so the residual can only add.
    assert (out - x).min() >= 0 and (out - x).max() > 0
    last_bn = block.branch[-1][1]
    with torch.no_grad():
        last_bn.weight.zero_()
        last_bn.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_conv_stage_has_no_drop_path_and_no_norm():
    spec = get_seed("convmlp_s").spec.replace(drop_path_rate=0.5)
    model = HybridBackbone(spec).train()
    stage0 = model.stages[0]
    assert not any(isinstance(m, (DropPath, nn.LayerNorm)) for b in stage0.blocks for m in b.mixer.modules())
    # the block's norms are Identity placeholders (for TorchScript) without parameters
    assert all(isinstance(b.norm1, nn.Identity) and isinstance(b.norm2, nn.Identity) for b in stage0.blocks)
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(stage0(x), stage0(x))  # deterministic under drop-path 0.5 in train
    # ... while the MLP stage behind it is stochastic (block 1 of stage 1 drops with p=0.5).
    y = torch.randn(8, 64, 8, 8)
    assert not torch.equal(model.stages[1](y), model.stages[1](y))


# ---- conv-MLP block ---------------------------------------------------------------------------

def _mixer(dim=8, ratio=2.0, drop=None):
    return ConvMLPMixer(ConvMLPMixerConfig(ratio=ratio), dim, _ctx(dim), None,
                              norm=lambda: make_norm("layernorm", dim, 1e-5), drop_path=drop or nn.Identity())


def test_convmlp_connect_is_not_residual():
    mixer = _mixer()
    x = torch.randn(2, 8, 5, 6)
    assert mixer(x).abs().sum() > 0
    with torch.no_grad():
        mixer.connect.weight.zero_()
    # The middle state is the depthwise conv's output alone: no skip carries x through.
    torch.testing.assert_close(mixer(x), torch.zeros_like(x), rtol=0, atol=0)
    block = Block(_mlp_stage(), _ctx(8), None, 0.0).eval()
    with torch.no_grad():
        block.mixer.connect.weight.zero_()
        torch.testing.assert_close(block(x), block(torch.randn_like(x)))


def test_convmlp_block_matches_channels_last_reference():
    stage = _mlp_stage(dim=12, ratio=3.0)
    block = Block(stage, _ctx(12), None, 0.0).eval()
    with torch.no_grad():  # move norms and biases off their 1/0 init so that they are checked too
        for p in block.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    assert block.mixer.mlp[0].out_channels == 36 and block.ffn[0].out_channels == 36
    x = torch.randn(2, 12, 5, 7)
    m = block.mixer
    with torch.no_grad():
        t = x.permute(0, 2, 3, 1)
        t = t + _mlp(_ln(t, m.norm1), m.mlp)
        t = F.conv2d(_ln(t, m.connect_norm).permute(0, 3, 1, 2), m.connect.weight, padding=1, groups=12)
        t = t.permute(0, 2, 3, 1)
        t = t + _mlp(_ln(t, block.norm2), block.ffn)
        torch.testing.assert_close(block(x), t.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert block.norm2.eps == m.norm1.eps == m.connect_norm.eps == 1e-5
    assert m.connect.bias is None and m.connect.groups == 12


def test_per_stage_drop_path_schedule():
    spec = get_seed("convmlp_s").spec
    assert (spec.drop_path_mode, spec.drop_path_rate) == ("per_stage", 0.1)
    expected = [[0.0, 0.1], [0.0, 0.1], [0.0, 0.1 / 3, 0.2 / 3, 0.1], [0.0, 0.1]]
    rates = drop_path_rates(spec)
    assert [len(r) for r in rates] == [len(e) for e in expected]
    for got, want in zip(rates, expected):
        assert got == pytest.approx(want, abs=1e-7)
    model = HybridBackbone(spec)
    for stage, want in zip(model.stages[1:], expected[1:]):
        probs = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in stage.blocks]
        assert probs == pytest.approx(want, abs=1e-7)
        # Both channel MLPs of a block share the block's rate.
        assert all(b.mixer.drop_path is b.drop_path for b in stage.blocks)


# ---- init -------------------------------------------------------------------------------------

def test_init_follows_reference():
    model = HybridBackbone(get_seed("convmlp_s").spec)
    m = model.stages[3].blocks[0].mixer
    # PyTorch's fan-out of a depthwise 3×3 is out_channels · 9 (groups are not divided out).
    assert m.connect.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.05)
    assert m.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert m.mlp[0].bias.abs().max() == 0 and m.mlp[2].bias.abs().max() == 0
    stem_conv = model.stem[2][0]  # 32 → 64: fan-out 64 · 9
    assert stem_conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    conv = model.stages[0].blocks[0].mixer.branch[1][0]  # 3×3, 128 → 128
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)


# ---- validation -------------------------------------------------------------------------------

def _message(fn):
    with pytest.raises(SpecError) as err:
        fn()
    return str(err.value)


def test_validation_errors_name_path_rule_value():
    spec = get_seed("convmlp_s").spec
    st = list(spec.stages)
    assert _message(lambda: spec.replace(stem=ConvMLPStemConfig(width=1)).validate()) == (
        "stem.width must be >= 2 (the tokenizer's first convs use width // 2), got 1")
    bad0 = StageSpec(depth=2, width=64, downsample=NoDownsampleConfig(), mixer=ConvBottleneckConfig(ratio=0.0), ffn=NoFFNConfig())
    assert _message(lambda: spec.replace(stages=(bad0, *st[1:])).validate()) == (
        "stages.0.mixer.ratio must be > 0, got 0.0")
    bad1 = _mlp_stage(dim=128, ratio=0.001)
    assert _message(lambda: spec.replace(stages=(st[0], bad1, *st[2:])).validate()) == (
        "stages.1.mixer.ratio gives a hidden width below 1 at stage width 128, got 0.001")
    data = spec.to_dict()
    data["stages"][2]["mixer"]["kernel"] = 5
    assert _message(lambda: ModelSpec.from_dict(data)) == (
        "stages.2.mixer.kernel is not a knob of mixer 'convmlp' (knobs: ratio), got 5")
    data = spec.to_dict()
    data["stages"][0]["mixer"]["ratio"] = "2"
    assert _message(lambda: ModelSpec.from_dict(data)) == "stages.0.mixer.ratio must be a number, got '2'"


def test_seed_spec_round_trips_and_knobs_change_the_network():
    spec = get_seed("convmlp_m").spec
    again = ModelSpec.from_yaml(spec.to_yaml())
    assert again == spec and again.arch_id == spec.arch_id
    assert spec.stages[0].mixer == ConvBottleneckConfig(ratio=2.0) and spec.stages[0].depth == 3
    deeper = convmlp_spec(64, 4, (3, 6, 3), (128, 256, 512), 3.0)
    assert deeper.arch_id != spec.arch_id
    extra = _n_params(build("mixer", ConvBottleneckConfig(ratio=2.0), 64, _ctx(64), None))
    assert _n_params(HybridBackbone(deeper)) - _n_params(HybridBackbone(spec)) == extra


# ---- a mixed model trains ---------------------------------------------------------------------

def test_convmlp_cmt_hybrid_trains(fit_batch):
    spec = ModelSpec(
        stem=ConvMLPStemConfig(width=16),
        stages=(
            StageSpec(depth=1, width=16, downsample=NoDownsampleConfig(), mixer=ConvBottleneckConfig(ratio=1.5), ffn=NoFFNConfig()),
            StageSpec(depth=2, width=24, downsample=ConvDownsampleConfig(), mixer=ConvMLPMixerConfig(ratio=2.0),
                      ffn=MlpFFNConfig(ratio=2.0)),
            StageSpec(depth=1, width=32, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=2, sr_ratio=2),
                      ffn=IRFFNConfig(ratio=2.0)),
            StageSpec(depth=1, width=48, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=4, sr_ratio=1),
                      ffn=IRFFNConfig(ratio=2.0)),
        ),
        head=NormPoolHeadConfig(norm="layernorm"), resolution=32, num_classes=4, drop_path_rate=0.1,
        drop_path_mode="per_stage",
    ).validate()
    assert spec.families == ("convmlp", "convmlp", "cmt", "cmt")
    model = HybridBackbone(spec).train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    losses = fit_batch(model, x, y, steps=15, lr=3e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] == pytest.approx(math.log(4), rel=0.3)
    assert sum(losses[-3:]) / 3 < 0.25 * losses[0], losses


@pytest.mark.parametrize("bias", [True, False])
def test_mlp_linear_layout_has_conv_params_and_outputs(bias, monkeypatch):
    """The channel MLP runs as Linear on channels-last tokens, with the 1×1 convs' parameters:
    same names, shapes and count as the conv form, the same outputs and gradients to rounding."""
    from hvsearch.layers.common import MlpFFN

    torch.manual_seed(0)
    mlp = MlpFFN(MlpFFNConfig(ratio=3.0, bias=bias), 16, _ctx(16))
    assert mlp.layout == "linear"
    assert [(n, tuple(p.shape)) for n, p in mlp.named_parameters()] == \
        [("0.weight", (48, 16, 1, 1))] + [("0.bias", (48,))] * bias + [("2.weight", (16, 48, 1, 1))] + [("2.bias", (16,))] * bias
    assert _n_params(mlp) == 2 * 16 * 48 + bias * (48 + 16)
    x = torch.randn(3, 16, 5, 7, requires_grad=True)
    out = mlp(x)
    out.square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in mlp.parameters()]
    x.grad = None
    mlp.zero_grad()
    monkeypatch.setattr(mlp, "layout", "conv")
    ref = F.conv2d(F.gelu(F.conv2d(x, mlp[0].weight, mlp[0].bias)), mlp[2].weight, mlp[2].bias)
    torch.testing.assert_close(mlp(x), ref)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    ref.square().sum().backward()
    for got, want in zip(grads, [x.grad] + [p.grad for p in mlp.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
