"""Each family's seeds start as the family's own code starts them (seed_hyperparams.md, Init):
the parts the families share (the block's position conv, a per-token MLP, the stem and the
downsampling) take the scheme of the family whose mixer the stage has. Checked by the spread of
the initial weights (every tensor checked has 1,000+ values: within 15% of the scheme's std)."""
import math

import pytest
import torch
from torch import nn

from hvsearch.models import HybridBackbone, get_seed


def _std(scheme: str, m: nn.Module) -> float:
    w = m.weight
    area = math.prod(w.shape[2:]) if w.ndim == 4 else 1
    if scheme == "trunc_normal":
        return 0.02
    if scheme == "kaiming_fan_out":  # PyTorch's kaiming_normal_(mode="fan_out"): not divided by groups
        return math.sqrt(2.0 / (w.shape[0] * area))
    assert scheme == "torch_default"  # kaiming_uniform_(a=sqrt(5)): 1 / sqrt(3 fan_in)
    return 1.0 / math.sqrt(3 * w.shape[1] * area)


# seed -> [(module path, scheme, bias zero)]: the parts the review found off (CMT's depthwise
# convs were 13-37x too wide, its LPU and TransXNet's CPE at PyTorch's default)
EXPECTED = {
    "cmt_ti": [("stages.2.blocks.1.pos", "kaiming_fan_out", True), ("stages.3.blocks.0.pos", "kaiming_fan_out", True),
               ("stages.0.blocks.0.ffn.dw", "kaiming_fan_out", True),
               ("stages.1.blocks.0.mixer.reduce.0", "kaiming_fan_out", True),
               ("stages.1.downsample.0", "kaiming_fan_out", True)],
    "transxnet_t": [("stem.0", "trunc_normal", True), ("stages.1.downsample.0", "trunc_normal", True),
                    ("stages.2.blocks.0.pos", "trunc_normal", True)],
    "hire_mlp_tiny": [("stem.0", "trunc_normal", True), ("stages.1.downsample.0", "trunc_normal", True),
                      ("stages.0.blocks.0.ffn.0", "trunc_normal", True)],
    "container_light": [("stem.0", "torch_default", False), ("stages.1.downsample.0", "torch_default", False),
                        ("stages.2.blocks.0.pos", "torch_default", False),
                        ("stages.1.blocks.0.ffn.0", "torch_default", False),  # a conv stage's MLP: 1x1 convs
                        ("stages.3.blocks.0.ffn.0", "trunc_normal", True)],  # the attention stage's: Linear
}


@pytest.mark.parametrize("seed", sorted(EXPECTED))
def test_the_shared_parts_start_as_the_familys_code_starts_them(seed):
    torch.manual_seed(0)
    model = HybridBackbone(get_seed(seed).spec)
    modules = dict(model.named_modules())
    for path, scheme, zero_bias in EXPECTED[seed]:
        m = modules[path]
        assert m.weight.numel() >= 1000, path
        got, want = m.weight.std().item(), _std(scheme, m)
        assert abs(got / want - 1) < 0.15, (path, scheme, got, want)
        assert (m.bias is None or bool((m.bias == 0).all())) == zero_bias, path
