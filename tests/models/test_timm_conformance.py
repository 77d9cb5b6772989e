"""timm's model contract, checked the way timm's own ``tests/test_models.py`` checks its models
(written here, not copied; ``benchmarks/timm_conformance.py`` runs timm's file itself on all 16
seeds): default cfgs, num_classes=0 / global_pool, feature wrappers, forward_intermediates,
TorchScript and FX. The cheap checks run on every seed, the compiling ones on each family's
smallest."""
import math

import pytest
import timm
import torch
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from hvsearch.families import family
from hvsearch.models import TIMM_PREFIX, get_seed, seed_names

SEEDS = seed_names()
SMALLEST = [family(f).SEEDS[0] for f in sorted({get_seed(s).family for s in SEEDS})]


@pytest.mark.parametrize("name", SEEDS)
def test_default_cfg_heads_and_pooling(name):
    model = timm.create_model(TIMM_PREFIX + name).eval()
    cfg, spec = model.pretrained_cfg, model.spec
    assert cfg["input_size"] == (3, spec.resolution, spec.resolution)
    assert cfg["crop_pct"] == (0.95 if name == "transxnet_b" else 0.9)  # the official scripts' evaluation crop
    assert cfg["pool_size"] == (spec.resolution // 32,) * 2
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert state[cfg["first_conv"] + ".weight"].shape[1] == 3
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == cfg["input_size"]

    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape == (1, model.num_features, *cfg["pool_size"])
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, "")
        assert model(x).shape[-2:] == cfg["pool_size"] and model(x).ndim == 4
        bare = timm.create_model(TIMM_PREFIX + name, num_classes=0, global_pool="").eval()
        assert bare(x).shape[-2:] == cfg["pool_size"] and bare(x).ndim == 4


def test_the_keyword_arguments_timms_train_script_passes():
    """timm's train.py always passes drop_rate (0.0 by default) and img_size with --img-size:
    the head's dropout and the build size."""
    model = timm.create_model(TIMM_PREFIX + "cmt_ti", num_classes=7, drop_rate=0.25, drop_path_rate=0.05,
                              img_size=64).eval()
    assert model.spec.head.dropout == 0.25 and model.spec.resolution == 64 and model.spec.drop_path_rate == 0.05
    assert model.head.drop.p == 0.25
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(Exception, match="img_size must be square"):
        timm.create_model(TIMM_PREFIX + "cmt_ti", img_size=(64, 96))


@pytest.mark.parametrize("name", SMALLEST)
def test_features_and_intermediates(name):
    x = torch.randn(1, 3, 96, 64)
    for cls in ("getter", "list", "dict", "hook"):
        model = timm.create_model(TIMM_PREFIX + name, features_only=True, feature_cls=cls).eval()
        with torch.no_grad():
            out = model(x)
        out = list(out.values()) if isinstance(out, dict) else out
        assert model.feature_info.channels() == [o.shape[1] for o in out], cls
        assert model.feature_info.reduction() == [4, 8, 16, 32]
        for o, r in zip(out, model.feature_info.reduction()):
            assert o.shape[-2:] == (math.ceil(96 / r), math.ceil(64 / r))

    model = timm.create_model(TIMM_PREFIX + name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert [t.shape[1] for t in inter] == info.channels()
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2
        last, two = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert len(two) == 1 and last.shape[1] == info.channels()[1]
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], final)
    assert model.prune_intermediate_layers(2) == [2, 3] and model.num_classes == 0


@pytest.mark.parametrize("name", SMALLEST)
def test_torchscript(name):
    with timm.set_scriptable(True):
        model = timm.create_model(TIMM_PREFIX + name).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("name", SMALLEST)
def test_fx_forward_and_backward(name):
    kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                  param_shapes_constant=True)
    model = timm.create_model(TIMM_PREFIX + name, num_classes=42).eval()
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    fx = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                  tracer_kwargs=kwargs)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx(x).values())), model(x))
    fx.train()
    out = next(iter(fx(x).values()))
    assert out.shape == (2, 42)
    out.mean().backward()
    assert all(p.grad is not None for p in fx.parameters())
