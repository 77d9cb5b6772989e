"""The registries, not a list: every family found under ``hvsearch/families`` is complete, every
registered part config has its module under the same name, and every registered mixer type —
whichever family brings it — builds into a model that trains (forward, backward), is counted
strictly by fvcore and gets every zero-cost score. A new family is tested here without being
named here."""
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from hvsearch import families
from hvsearch.arch import KINDS, ModelSpec, StageSpec, component_types, get_component
from hvsearch.arch.common import (
    ConvDownsampleConfig,
    ConvStemConfig,
    MlpFFNConfig,
    NoDownsampleConfig,
    NormPoolHeadConfig,
)
from hvsearch.cost import count_spec
from hvsearch.layers import get_module, module_types
from hvsearch.layers.base import HeadModule, MixerModule
from hvsearch.models import build_model, get_seed, seed_names
from hvsearch.scaling.compound import fit_to_features
from hvsearch.zerocost import score, score_names

MIXERS = component_types("mixer")


def tiny_with(mixer_type: str) -> ModelSpec:
    """Conv stem, 4 stages of depth 2 (so per-block schedules such as Hire-MLP's shifts alternate)
    with the mixer's default knobs fitted to each stage's feature size, MLP FFNs, 32 px."""
    mixer = get_component("mixer", mixer_type)()
    base = math.lcm(mixer.width_multiple(), 16)
    stages = tuple(StageSpec(depth=2, width=base * (i + 1),
                             downsample=NoDownsampleConfig() if i == 0 else ConvDownsampleConfig(),
                             mixer=mixer, ffn=MlpFFNConfig(ratio=2.0)) for i in range(4))
    draft = ModelSpec(stem=ConvStemConfig(width=base), stages=stages, head=NormPoolHeadConfig(), resolution=32,
                      num_classes=10, name=f"tiny_{mixer_type}")
    spec, _ = fit_to_features(draft)
    return spec.validate()


def test_the_shipped_families_are_discovered_with_all_their_parts():
    # the five shipped ones (a family on PYTHONPATH may add to them: test_new_family.py)
    assert set(families.family_names()) >= {"cmt", "container", "convmlp", "hire", "transxnet"}
    for name in families.family_names():
        for part in families.PARTS:
            assert importlib.util.find_spec(f"{families.family(name).__name__}.{part}") is not None, (name, part)
        # the torch-free seed names are the seeds the family registers, in order
        assert [s for s in seed_names() if get_seed(s).family == name] == list(families.family(name).SEEDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_config_has_its_module_under_one_name(kind):
    # `ffn: none` is the only config without a module: the block leaves the FFN out
    assert set(module_types(kind)) == set(component_types(kind)) - ({"none"} if kind == "ffn" else set())
    for type_name in module_types(kind):
        config, module = get_component(kind, type_name), get_module(kind, type_name)
        assert config.__name__ == module.__name__ + "Config", (kind, type_name)
        assert families.family_of(config.__module__) == families.family_of(module.__module__), (kind, type_name)
        assert config().family == families.family_of(config.__module__)
        if kind == "mixer":
            assert issubclass(module, MixerModule)
            # the analytic count reads it from the config, the backbone from the module
            assert config.owns_residual == module.owns_residual, type_name
            assert config().family != families.COMMON  # a mixer is what makes a family
        if kind == "head":
            assert issubclass(module, HeadModule)


@pytest.mark.parametrize("mixer_type", MIXERS)
def test_every_mixer_trains_counts_and_scores(mixer_type):
    spec = tiny_with(mixer_type)
    torch.manual_seed(0)
    model = build_model(spec)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    mixer_params = [p for n, p in model.named_parameters() if ".mixer." in n]
    assert mixer_params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer_params)
    assert any(p.grad.abs().sum() > 0 for p in mixer_params)

    cost = count_spec(spec)  # from the spec where its parts have formulas, else on the model
    reference = count_spec(spec, counter="fvcore")  # strict: an op fvcore does not count fails here
    assert (cost.params, cost.flops, cost.by_stage) == (reference.params, reference.flops, reference.by_stage)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.flops > cost.params  # every weight is used at least once per pixel of a 32-px map

    for name in score_names():
        value = score(spec, name, seed=0, batch_size=8)
        assert math.isfinite(value), (mixer_type, name, value)
