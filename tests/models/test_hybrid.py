"""Any mixer at any stage: one model whose four stages come from four different families."""
import torch

from hvsearch.arch import ModelSpec
from hvsearch.cost import FREE_CALLS, count_spec
from hvsearch.models import build_model

FOUR_FAMILIES = {
    "resolution": 32, "num_classes": 4,
    "stem": {"type": "conv", "width": 16, "kernel": 7, "padding": 3},
    "head": {"type": "norm_pool", "norm": "layernorm"},
    "stages": [
        {"depth": 1, "width": 16, "downsample": "none", "mixer": {"type": "hire", "region": 2, "step_dilation": 0},
         "ffn": {"type": "mlp", "ratio": 2.0}},
        {"depth": 1, "width": 32, "downsample": {"type": "conv3", "norm": "batchnorm"},
         "mixer": {"type": "container", "heads": 2}, "ffn": {"type": "mlp", "ratio": 2.0}},
        {"depth": 2, "width": 48, "downsample": {"type": "conv3", "norm": "batchnorm"},
         "mixer": {"type": "dmixer", "heads": 2, "sr_ratio": 1, "groups": 2, "kernel": 3},
         "ffn": {"type": "msffn", "ratio": 2.0}},
        {"depth": 1, "width": 64, "downsample": "patch", "mixer": {"type": "cmt_attn", "heads": 2},
         "ffn": {"type": "irffn", "ratio": 2.0}},
    ],
}


def test_four_families_in_one_model_train_and_are_counted(fit_batch):
    spec = ModelSpec.from_dict(FOUR_FAMILIES)
    assert spec.families == ("hire", "container", "transxnet", "cmt")
    cost, shapes = count_spec(spec), count_spec(spec, counter="shapes")  # from the spec; on the model, strictly
    assert set(shapes.free_ops) <= FREE_CALLS and all(cost.by_stage[f"stages.{i}"] > 0 for i in range(4))
    assert (cost.params, cost.flops, cost.by_stage) == (shapes.params, shapes.flops, shapes.by_stage)

    torch.manual_seed(0)
    model = build_model(spec)
    # a learnable toy task: the class is which quadrant holds a bright patch
    x = torch.randn(32, 3, 32, 32) * 0.1
    y = torch.arange(32) % 4
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, 16 * r: 16 * r + 16, 16 * c: 16 * c + 16] += 1.0
    losses = fit_batch(model, x, y, steps=25, lr=3e-3)
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
