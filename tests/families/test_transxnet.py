"""TransXNet parts: IDConv's per-sample dynamic conv against a per-sample loop, its G=1 and
equal-kernel reductions to a static depthwise conv, OSRA against an explicit attention reference
(with the resized relative-position encoding), sizes at odd inputs, the multi-scale depthwise conv,
the kernel mix's two forms and their FLOPs, validation messages, and a mixed TransXNet/CMT model that trains."""
import pytest
import torch
import torch.nn.functional as F

from hvsearch.arch import ModelSpec, StageContext, StageSpec
from hvsearch.arch.common import NoDownsampleConfig
from hvsearch.families.transxnet.config import DMixerConfig, MSFFNConfig
from hvsearch.cost import FREE_CALLS, FREE_OPS, count
from hvsearch.cost.flops import EXTRA_HANDLES
from hvsearch.errors import SpecError
from hvsearch.families.transxnet.layers import DMixer, IDConv, MSFFN, MultiScaleDWConv
from hvsearch.models import HybridBackbone, build_model


def _ctx(dim, size=14, index=0):
    return StageContext(index=index, dim=dim, in_dim=dim, height=size, width=size, stride=4, depth=1)


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


def _randomise_bn(module):
    """Give every BN non-trivial running statistics, so eval-mode checks see real affine maps."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.2)


def _sharpen(idconv):
    """Scale up the squeeze weights: at init (std 0.02) the mix is nearly uniform over G, which
    would let a wrong per-sample indexing pass unnoticed."""
    with torch.no_grad():
        idconv.attn[0].weight.normal_(0, 0.5)
        idconv.attn[-1].weight.normal_(0, 1.0)


# ---- IDConv ----------------------------------------------------------------------------------

def test_idconv_dynamic_conv_equals_per_sample_loop():
    m = IDConv(dim=8, kernel=3, groups=3).eval()
    _randomise_bn(m)
    _sharpen(m)
    x = torch.randn(3, 8, 5, 6)
    with torch.no_grad():
        weight, bias = m.dynamic_kernels(x)
        out = m(x)
        ref = torch.cat([F.conv2d(x[i:i + 1], weight[i].unsqueeze(1), bias[i], padding=1, groups=8)
                         for i in range(3)])
    assert weight.shape == (3, 8, 3, 3) and bias.shape == (3, 8)
    torch.testing.assert_close(out, ref)
    # The kernels really depend on the sample.
    assert (weight[0] - weight[1]).abs().max() > 0.1 * weight.abs().max()


@pytest.mark.parametrize("batch", [1, 3])
def test_idconv_block_diagonal_form_equals_the_grouped_one(batch):
    """The export's form for a dynamic batch (one conv of C groups, B×B diagonal kernel blocks)
    gives the grouped conv's numbers, forward and backward, and only export attempts switch to it."""
    m = IDConv(dim=8, kernel=3, groups=3).eval()
    _randomise_bn(m)
    _sharpen(m)
    x = torch.randn(batch, 8, 5, 6, requires_grad=True)
    outs, grads = [], []
    for impl in ("grouped", "blockdiag"):
        m.apply_impl = impl
        out = m(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-5)
    assert m.export_impls(frozenset({"batch"})) == {"apply_impl": "blockdiag"}
    assert m.export_impls(frozenset()) == {"apply_impl": "grouped"}


def test_idconv_kernels_match_separate_squeeze_calls():
    # The reference squeezes the pooled map and the global mean in two calls; one call over both
    # must give the same mix in eval mode.
    m = IDConv(dim=8, kernel=3, groups=2).eval()
    _randomise_bn(m)
    _sharpen(m)
    x = torch.randn(2, 8, 7, 9)
    B, C, G, K = 2, 8, 2, 3
    with torch.no_grad():
        weight, bias = m.dynamic_kernels(x)
        a_w = m.attn(F.adaptive_avg_pool2d(x, K)).view(B, G, C, K, K).softmax(1)
        a_b = m.attn(x.mean((2, 3), keepdim=True)).view(B, G, C).softmax(1)
        ref_w = sum(a_w[:, g] * m.weight[g] for g in range(G))
        ref_b = sum(a_b[:, g] * m.bias[g] for g in range(G))
    torch.testing.assert_close(weight, ref_w)
    torch.testing.assert_close(bias, ref_b)


def test_idconv_single_group_is_a_static_depthwise_conv():
    m = IDConv(dim=8, kernel=5, groups=1)
    assert not hasattr(m, "attn")
    assert _n_params(m) == 8 * 25 + 8
    x = torch.randn(2, 8, 6, 7)
    ref = F.conv2d(x, m.weight[0].unsqueeze(1), m.bias[0], padding=2, groups=8)
    torch.testing.assert_close(m(x), ref)


def test_idconv_equal_static_kernels_give_that_kernel_at_batch_one_in_training():
    # The softmax mix sums to one, so G copies of one kernel must act as that kernel. Batch 1 in
    # training mode also checks the squeeze BN never sees a single value per channel.
    m = IDConv(dim=8, kernel=3, groups=4).train()
    with torch.no_grad():
        m.weight.copy_(m.weight[:1].expand_as(m.weight))
        m.bias.copy_(m.bias[:1].expand_as(m.bias))
    x = torch.randn(1, 8, 5, 5)
    ref = F.conv2d(x, m.weight[0].unsqueeze(1), m.bias[0], padding=1, groups=8)
    torch.testing.assert_close(m(x), ref)


@pytest.mark.parametrize("impl, mix_macs", [("mulsum", 0), ("einsum", 1 * 2 * 8 * (9 + 1))])
def test_idconv_kernel_mix_is_element_wise_and_free_unless_run_as_an_einsum(impl, mix_macs):
    from fvcore.nn import FlopCountAnalysis

    m = IDConv(dim=8, kernel=3, groups=2).eval()
    x = torch.randn(1, 8, 6, 6)
    default = m(x)
    m.mix_impl = impl
    torch.testing.assert_close(m(x), default)  # the same sums either way
    fca = FlopCountAnalysis(m, x).set_op_handle(**EXTRA_HANDLES)
    fca.unsupported_ops_warnings(False).tracer_warnings("none")
    ops = fca.by_operator()
    assert ops.get("einsum", 0) == mix_macs  # B·G·C·(K² kernel cells + bias) as an einsum
    # squeeze 8→2 and 2→16 over 10 cells, plus the dynamic 3×3 depthwise conv over 6×6
    assert ops["conv"] == 10 * 8 * 2 + 10 * 2 * 16 + 8 * 36 * 9
    assert set(fca.unsupported_ops()) <= FREE_OPS


# ---- OSRA and the D-Mixer --------------------------------------------------------------------

@pytest.mark.parametrize("sr", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("size", [(13, 17), (7, 7), (9, 4)])
def test_osra_key_size_rule_matches_the_reduction_and_output_keeps_odd_sizes(sr, size):
    cfg = DMixerConfig(heads=2, sr_ratio=sr, groups=2, kernel=3)
    m = DMixer(cfg, 16, _ctx(16), DMixer.build_shared(cfg, 16, _ctx(16))).eval()
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        t = m.glob.reduce(x[:, 8:])
        out = m(x)
    assert t.shape[-2:] == (cfg.kv_size(size[0]), cfg.kv_size(size[1]))
    assert out.shape == x.shape


def test_rel_pos_is_zero_initialised_and_sized_for_the_build_resolution():
    cfg = DMixerConfig(heads=2, sr_ratio=4, groups=2, kernel=7)
    rel = DMixer.build_shared(cfg, 32, _ctx(32, size=14))
    # 14 → (14 + 6 − 7)//4 + 1 = 4 key rows/columns
    assert rel.bias.shape == (2, 196, 16)
    assert rel.bias.abs().sum() == 0
    assert DMixer.build_shared(DMixerConfig(heads=2, sr_ratio=4, rel_pos=False), 32, _ctx(32)) is None


@pytest.mark.parametrize("size", [(14, 14), (11, 9)])
def test_osra_equals_explicit_attention_with_the_position_encoding(size):
    cfg = DMixerConfig(heads=2, sr_ratio=2, groups=2, kernel=3)
    rel = DMixer.build_shared(cfg, 16, _ctx(16, size=14))
    m = DMixer(cfg, 16, _ctx(16, size=14), rel).eval()
    _randomise_bn(m)
    with torch.no_grad():
        rel.bias.normal_()
    osra = m.glob
    x = torch.randn(2, 8, *size)
    B, C, (H, W), h, d = 2, 8, size, 2, 4
    with torch.no_grad():
        q = osra.q(x).flatten(2).view(B, h, d, H * W).transpose(-1, -2)
        t = osra.reduce(x)
        t = t + osra.local(t)
        kv = osra.kv(t).flatten(2)
        k = kv[:, :C].reshape(B, h, d, -1).transpose(-1, -2)
        v = kv[:, C:].reshape(B, h, d, -1).transpose(-1, -2)
        pos = rel.bias.unsqueeze(0)
        if pos.shape[2:] != (H * W, k.shape[2]):
            pos = F.interpolate(pos, size=(H * W, k.shape[2]), mode="bicubic", align_corners=False)
        attn = (q @ k.transpose(-1, -2) * d ** -0.5 + pos).softmax(-1)
        ref = (attn @ v).transpose(-1, -2).reshape(B, C, H, W)
        out = osra(x)
    torch.testing.assert_close(out, ref)


def test_dmixer_splits_channels_and_adds_the_token_enhancer():
    cfg = DMixerConfig(heads=1, sr_ratio=2, groups=2, kernel=3)
    m = DMixer(cfg, 16, _ctx(16, size=8), DMixer.build_shared(cfg, 16, _ctx(16, size=8))).eval()
    _randomise_bn(m)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = torch.cat([m.local(x[:, :8]), m.glob(x[:, 8:])], dim=1)
        torch.testing.assert_close(m(x), y + m.ste(y))
    # STE inner width is max(16, C//8); the squeeze of IDConv is (C/2)//4.
    assert m.ste[3].out_channels == 16
    assert m.local.attn[0].out_channels == 2


# ---- MS-FFN ----------------------------------------------------------------------------------

def test_multiscale_dwconv_equals_one_conv_with_zero_padded_kernels():
    m = MultiScaleDWConv(10)
    assert m.splits == [4, 2, 2, 2]
    assert _n_params(m) == 4 * (1 + 1) + 2 * (9 + 1) + 2 * (25 + 1) + 2 * (49 + 1)
    big = torch.cat([F.pad(c.weight, [(7 - c.kernel_size[0]) // 2] * 4) for c in m.convs])
    bias = torch.cat([c.bias for c in m.convs])
    x = torch.randn(2, 10, 6, 5)
    torch.testing.assert_close(m(x), F.conv2d(x, big, bias, padding=3, groups=10))


def test_msffn_hidden_width_and_residual_depthwise():
    m = MSFFN(MSFFNConfig(ratio=2.5), 8, _ctx(8)).eval()
    _randomise_bn(m)
    assert m.expand[0].out_channels == 20 and m.dw.splits == [5, 5, 5, 5]
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        h = m.expand(x)
        torch.testing.assert_close(m(x), m.project(m.mid(h + m.dw(h))))


# ---- validation ------------------------------------------------------------------------------

def _tiny(dmixer=None, width=16, msffn=None, resolution=64) -> dict:
    return {
        "resolution": resolution, "num_classes": 5,
        "stem": {"type": "conv", "width": width},
        "stages": [
            {"depth": 1, "width": width, "downsample": "none",
             "mixer": {"type": "dmixer", **(dmixer or {"heads": 1, "sr_ratio": 4, "kernel": 3})},
             "ffn": {"type": "msffn", **(msffn or {"ratio": 2})}},
            {"depth": 1, "width": 32, "downsample": {"type": "patch"},
             "mixer": {"type": "cmt_attn", "heads": 2, "sr_ratio": 2}, "ffn": {"type": "irffn", "ratio": 2}},
            {"depth": 1, "width": 48, "downsample": {"type": "conv3", "bias": False, "norm": "batchnorm"},
             "mixer": {"type": "dmixer", "heads": 2, "sr_ratio": 2, "groups": 3, "kernel": 5},
             "ffn": {"type": "msffn", "ratio": 2}},
            {"depth": 1, "width": 64, "downsample": {"type": "patch"},
             "mixer": {"type": "cmt_attn", "heads": 2, "sr_ratio": 1}, "ffn": {"type": "irffn", "ratio": 2}},
        ],
        "head": {"type": "norm_pool", "norm": "groupnorm"},
    }


@pytest.mark.parametrize("data, message", [
    (_tiny(width=17, dmixer={"heads": 1}),
     "stages.0.mixer splits the channels in half between IDConv and OSRA, so the stage width must be even; "
     "stage width, got 17"),
    (_tiny(width=6, dmixer={"heads": 1}), "stages.0.mixer squeezes its 3 IDConv channels by 4, so the stage "
                                          "width must be >= 8; stage width, got 6"),
    (_tiny(dmixer={"heads": 3}), "stages.0.mixer.heads must divide half the stage width (8 OSRA channels), got 3"),
    (_tiny(dmixer={"heads": 0}), "stages.0.mixer.heads must be > 0, got 0"),
    (_tiny(dmixer={"sr_ratio": 0}), "stages.0.mixer.sr_ratio must be > 0, got 0"),
    (_tiny(dmixer={"sr_ratio": 17}),
     "stages.0.mixer.sr_ratio must be <= the stage's feature size 16 at the build resolution, got 17"),
    (_tiny(dmixer={"groups": 0}), "stages.0.mixer.groups must be >= 1, got 0"),
    (_tiny(dmixer={"kernel": 4}), "stages.0.mixer.kernel must be an odd size >= 1, got 4"),
    (_tiny(dmixer={"kernel": "7"}), "stages.0.mixer.kernel must be an integer, got '7'"),
    (_tiny(msffn={"ratio": 0.2}), "stages.0.ffn.ratio gives a hidden width 3 at stage width 16, but the "
                                  "multi-scale conv needs >= 4 channels (one per kernel size), got 0.2"),
    (_tiny(msffn={"ratio": -1}), "stages.0.ffn.ratio must be > 0, got -1.0"),
])
def test_validation_messages(data, message):
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data)
    assert str(err.value) == message


def test_stage_defaults_come_from_the_dmixer():
    spec = ModelSpec.from_dict(_tiny())
    st = spec.stages[0]
    assert (st.norm, st.norm_eps, st.pos_kernel, st.layer_scale) == ("groupnorm", 1e-5, 7, 1e-5)
    assert spec.families == ("transxnet", "cmt", "transxnet", "cmt")


# ---- a mixed model ---------------------------------------------------------------------------

def test_rel_pos_is_shared_by_a_stage_and_counted_once():
    spec = ModelSpec.from_dict(_tiny()).replace(stages=tuple(
        s if i else StageSpec(depth=3, width=16, downsample=NoDownsampleConfig(), mixer=DMixerConfig(heads=2, sr_ratio=4),
                              ffn=MSFFNConfig(ratio=2.0))
        for i, s in enumerate(ModelSpec.from_dict(_tiny()).stages))).validate()
    model = HybridBackbone(spec)
    blocks = model.stages[0].blocks
    assert all(b.mixer.glob.rel_pos.bias is model.stages[0].shared.bias for b in blocks)
    # 16×16 queries, (16 + 6 − 7)//4 + 1 = 4 → 16 keys, 2 heads
    n_rel = 2 * 256 * 16
    per_block = _n_params(blocks[0]) - n_rel
    assert _n_params(model.stages[0]) == 3 * per_block + n_rel


def test_mixed_transxnet_cmt_model_trains_and_runs_at_other_sizes(fit_batch):
    spec = ModelSpec.from_dict(_tiny())
    model = HybridBackbone(spec)
    cost = count(model, 64)
    assert set(cost.free_ops) <= FREE_CALLS and cost.flops > 0
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    losses = fit_batch(model, x, y, steps=8, lr=2e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["stages.0.shared.bias"].abs().sum() > 0
    assert grads["stages.2.blocks.0.mixer.local.weight"].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 5)
        feats = build_model(spec, features_only=True).eval()(torch.randn(1, 3, 80, 96))
    assert [f.shape[-2:] for f in feats] == [(20, 24), (10, 12), (5, 6), (2, 3)]
