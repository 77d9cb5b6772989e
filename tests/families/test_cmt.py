"""CMT's layers: LMHSA computed by hand (projections, depthwise K/V reduction, the relative position
bias as an additive mask, scaled dot-product attention), the bias resized to other feature sizes,
IRFFN by hand, the conv stem's order and stride, exact parameter counts and the attention's FLOPs
(the seeds' published parameter counts are checked in tests/models/test_seeds.py)."""
import math

import pytest
import torch

from hvsearch.arch import StageContext
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTStemConfig, IRFFNConfig
from hvsearch.cost import count
from hvsearch.families.cmt.layers import CMTAttention, CMTStem, IRFFN, RelPosBias


def ctx(dim, size):
    return StageContext(index=2, dim=dim, in_dim=dim, height=size, width=size, stride=16, depth=1)


def attention(dim=16, size=4, **knobs):
    cfg = CMTAttentionConfig(**knobs)
    c = ctx(dim, size)
    return CMTAttention(cfg, dim, c, CMTAttention.build_shared(cfg, dim, c)).eval()


def lmhsa_by_hand(m, x):
    B, C, H, W = x.shape
    h = m.heads
    d = C // h
    tokens = x.flatten(2).transpose(1, 2)                       # (B, N, C)
    q = m.q(tokens).view(B, H * W, h, d).transpose(1, 2)        # (B, h, N, d)
    r = m.reduce(x)                                             # depthwise conv + BN, or identity
    kh, kw = r.shape[-2:]
    kv = m.kv(r.flatten(2).transpose(1, 2))                     # (B, Nk, 2C): keys then values
    k = kv[..., :C].reshape(B, kh * kw, h, d).transpose(1, 2)
    v = kv[..., C:].reshape(B, kh * kw, h, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    if m.rel_pos is not None:
        logits = logits + m.rel_pos((H, W), (kh, kw))
    out = logits.softmax(-1) @ v                                # (B, h, N, d)
    out = m.proj(out.transpose(1, 2).reshape(B, H * W, C))
    return out.transpose(1, 2).reshape(B, C, H, W)


@pytest.mark.parametrize("heads, sr, rel", [(1, 1, True), (2, 2, True), (4, 2, False), (2, 4, True)])
def test_lmhsa_is_attention_computed_by_hand(heads, sr, rel):
    m = attention(16, 8, heads=heads, sr_ratio=sr, rel_pos_bias=rel)
    with torch.no_grad():
        for bn in m.modules():  # a non-trivial eval BatchNorm in the reduction
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(x), lmhsa_by_hand(m, x), rtol=1e-5, atol=1e-5)
    if sr > 1:
        assert m.reduce(x).shape[-2:] == (8 // sr, 8 // sr)


def test_the_relative_position_bias_changes_the_output_and_learns():
    m = attention(8, 4, heads=2, sr_ratio=1).train()
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        before = m(x)
        m.rel_pos.bias.add_(torch.randn_like(m.rel_pos.bias))
        assert (m(x) - before).abs().max() > 1e-3
    m(x).square().mean().backward()
    assert m.rel_pos.bias.grad is not None and m.rel_pos.bias.grad.abs().sum() > 0


def test_the_bias_table_is_resized_as_a_function_of_positions():
    table = RelPosBias(3, (4, 4), (2, 2))
    # at its build size: the table itself, exactly (resized all the same, so that a traced or
    # exported graph holds the resize and runs at other sizes)
    assert torch.equal(table((4, 4), (2, 2)), table.bias)
    other = table((8, 6), (4, 3))
    assert other.shape == (3, 8 * 6, 4 * 3)
    # a constant table stays constant at any size (bicubic interpolation of a constant)
    with torch.no_grad():
        table.bias.fill_(0.25)
    torch.testing.assert_close(table((8, 6), (4, 3)), torch.full((3, 48, 12), 0.25))
    # the model runs at a feature size it was not built for
    m = attention(16, 4, heads=2, sr_ratio=2)
    with torch.no_grad():
        assert m(torch.randn(1, 16, 6, 8)).shape == (1, 16, 6, 8)


@pytest.mark.parametrize("dim, size, heads, sr, rel", [(16, 8, 2, 1, True), (16, 8, 2, 2, True), (32, 4, 4, 2, False)])
def test_lmhsa_parameters_and_flops_are_exact(dim, size, heads, sr, rel):
    m = attention(dim, size, heads=heads, sr_ratio=sr, rel_pos_bias=rel)
    n, nk = size * size, (size // sr) ** 2
    params = (dim * dim + dim) + (2 * dim * dim + 2 * dim) + (dim * dim + dim)  # q, kv, proj (biases)
    if sr > 1:
        params += dim * sr * sr + dim + 2 * dim  # depthwise sr×sr conv with bias, BatchNorm
    if rel:
        params += heads * n * nk
    cost = count(m, size, in_chans=dim)
    assert cost.params == params
    flops = n * dim * dim + nk * 2 * dim * dim + n * dim * dim  # q, kv and proj projections
    flops += n * nk * 2 * dim  # q·k and a·v: 2 · heads · N · Nk · d
    if sr > 1:
        flops += nk * dim * sr * sr + nk * dim * 2  # depthwise reduction, eval BatchNorm (fvcore: 2 per element)
    assert cost.flops == flops


def test_irffn_is_computed_by_hand_with_exact_parameters():
    dim, ratio = 12, 4.0
    m = IRFFN(IRFFNConfig(ratio=ratio), dim, ctx(dim, 4)).eval()
    hidden = int(dim * ratio)
    x = torch.randn(2, dim, 4, 4)
    with torch.no_grad():
        e = m.expand(x)  # 1×1 → GELU → BN
        torch.testing.assert_close(e, m.expand[2](torch.nn.functional.gelu(m.expand[0](x))))
        expected = m.project(m.mid(e + m.dw(e)))  # the depthwise 3×3 is a residual inside the FFN
        torch.testing.assert_close(m(x), expected)
    params = (dim * hidden + hidden) + 2 * hidden + (hidden * 9 + hidden) + 2 * hidden + (hidden * dim + dim) + 2 * dim
    assert sum(p.numel() for p in m.parameters()) == params


def test_the_stem_is_conv_gelu_bn_three_times_at_stride_two():
    m = CMTStem(CMTStemConfig(width=16), in_chans=3).eval()
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Conv2d", "GELU", "BatchNorm2d"] * 3
    assert [layer.stride for layer in m if isinstance(layer, torch.nn.Conv2d)] == [(2, 2), (1, 1), (1, 1)]
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 16, 16, 16)

