"""The typed spec: round trips, stable ids, and validation messages (path, rule, value)."""
import dataclasses
import json

import pytest
import yaml

from hvsearch.arch import ModelSpec, StageSpec, arch_id, component_types, parse_component, register_component
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTHeadConfig, CMTStemConfig, IRFFNConfig
from hvsearch.arch.common import PatchDownsampleConfig
from hvsearch.arch.components import Component
from hvsearch.errors import HVSearchError, RegistryError, SpecError


def tiny_spec(**over) -> ModelSpec:
    stages = tuple(
        StageSpec(depth=1, width=w, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=h, sr_ratio=sr),
                  ffn=IRFFNConfig(ratio=2.0))
        for w, h, sr in ((16, 1, 4), (32, 2, 2), (48, 2, 1), (64, 4, 1))
    )
    base = ModelSpec(stem=CMTStemConfig(width=8), stages=stages, head=CMTHeadConfig(features=64), resolution=64,
                     num_classes=10)
    return dataclasses.replace(base, **over)


def test_yaml_and_json_round_trip_keep_spec_and_id():
    spec = tiny_spec(name="tiny").validate()
    for back in (ModelSpec.from_yaml(spec.to_yaml()), ModelSpec.from_json(spec.to_json())):
        assert back == spec
        assert back.arch_id == spec.arch_id
        assert back.name == "tiny"


def test_save_and_load(tmp_path):
    spec = tiny_spec().validate()
    for suffix in (".yaml", ".json"):
        assert ModelSpec.load(spec.save(tmp_path / f"a{suffix}")) == spec


def test_derived_defaults_come_from_the_mixer():
    st = tiny_spec().stages[0]
    assert (st.norm, st.norm_eps, st.pos_kernel, st.layer_scale) == ("layernorm", 1e-6, 3, 0.0)
    # an explicit value overrides the mixer's default and survives the round trip
    st2 = dataclasses.replace(st, norm="batchnorm")
    assert StageSpec.from_dict(st2.to_dict(), "s").norm == "batchnorm"


def test_arch_id_is_stable_and_sensitive():
    a, b = tiny_spec(), tiny_spec(name="other label")
    assert arch_id(a) == arch_id(b)  # the name is a label, not architecture
    assert len(a.arch_id) == 12 and int(a.arch_id, 16) >= 0
    changed = dataclasses.replace(a, stages=(dataclasses.replace(a.stages[0], depth=2),) + a.stages[1:])
    assert arch_id(changed) != arch_id(a)
    # key order in the input does not matter
    d = a.to_dict()
    shuffled = dict(reversed(list(d.items())))
    assert ModelSpec.from_dict(shuffled).arch_id == a.arch_id


def test_int_and_float_spellings_share_one_id():
    a = tiny_spec()
    stages = tuple(dataclasses.replace(st, ffn=IRFFNConfig(ratio=2), layer_scale=0) for st in a.stages)
    b = dataclasses.replace(a, stages=stages, drop_path_rate=0)
    assert b == a and b.arch_id == a.arch_id
    assert isinstance(b.stages[0].ffn.ratio, float)


def test_frozen():
    spec = tiny_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.resolution = 32


def _err(spec_or_dict) -> SpecError:
    with pytest.raises(SpecError) as e:
        if isinstance(spec_or_dict, ModelSpec):
            spec_or_dict.validate()
        else:
            ModelSpec.from_dict(spec_or_dict)
    assert isinstance(e.value, HVSearchError)
    return e.value


def _with_stage(i, **changes):
    spec = tiny_spec()
    stages = list(spec.stages)
    stages[i] = dataclasses.replace(stages[i], **changes)
    return dataclasses.replace(spec, stages=tuple(stages))


def test_heads_must_divide_width():
    e = _err(_with_stage(2, mixer=CMTAttentionConfig(heads=5)))
    assert str(e) == "stages.2.mixer.heads must divide the stage width 48, got 5"


def test_reduction_ratio_must_divide_feature_size():
    # at 64 px stage 1 is 8x8: sr 3 does not divide it
    e = _err(_with_stage(1, mixer=CMTAttentionConfig(heads=2, sr_ratio=3)))
    assert e.path == "stages.1.mixer.sr_ratio" and e.value == 3
    assert "feature height 8" in str(e)


def test_resolution_must_be_multiple_of_total_stride():
    e = _err(tiny_spec(resolution=200))
    assert str(e) == "resolution must be a multiple of the total stride 32, got 200"


def test_stride_mismatch_names_the_downsample():
    from hvsearch.arch.common import NoDownsampleConfig

    e = _err(_with_stage(2, downsample=NoDownsampleConfig()))
    assert e.path == "stages.2.downsample"


@pytest.mark.parametrize("mutate, path, fragment", [
    (lambda d: d["stages"][0]["mixer"].update(type="transformerish"), "stages.0.mixer.type",
     "must be a registered mixer type"),
    (lambda d: d["stages"][1]["mixer"].update(region=4), "stages.1.mixer.region",
     "is not a knob of mixer 'cmt_attn'"),
    (lambda d: d["stages"][1]["mixer"].update(heads="two"), "stages.1.mixer.heads", "must be an integer"),
    (lambda d: d["stages"][1]["mixer"].update(qkv_bias=1), "stages.1.mixer.qkv_bias", "must be true or false"),
    (lambda d: d["stages"][3].update(depth=0), "stages.3.depth", "must be in [1, 1000]"),
    (lambda d: d["stages"][3].update(depth=100_000_000), "stages.3.depth", "must be in [1, 1000], got 100000000"),
    (lambda d: d["stages"][2].update(width=70_000), "stages.2.width", "must be in [1, 65536], got 70000"),
    (lambda d: d.update(resolution=2 ** 20), "resolution", "must be a positive integer <= 8192"),
    (lambda d: d["stages"][3].update(depth=2.5), "stages.3.depth", "must be an integer"),
    (lambda d: d["stages"][0].update(norm="rmsnorm"), "stages.0.norm", "must be one of"),
    (lambda d: d["stages"][0].update(colour="red"), "stages.0.colour", "is not a stage field"),
    (lambda d: d["stages"].pop(), "stages", "must list exactly 4 stages"),
    (lambda d: d["stages"][0].pop("ffn"), "stages.0.ffn", "is required"),
    (lambda d: d.update(drop_path_rate=1.5), "drop_path_rate", "must be in [0, 1)"),
    (lambda d: d["head"].update(dropout=-0.1), "head.dropout", "must be in [0, 1)"),
    (lambda d: d.update(stem="nope"), "stem.type", "must be a registered stem type"),
])
def test_malformed_dicts_give_one_clear_error(mutate, path, fragment):
    d = json.loads(tiny_spec().to_json())
    mutate(d)
    e = _err(d)
    assert e.path == path
    assert fragment in str(e)
    assert str(e).startswith(path)


def test_unknown_type_lists_known_ones():
    e = _err({**tiny_spec().to_dict(), "head": {"type": "mystery"}})
    for known in component_types("head"):
        assert known in str(e)


def test_invalid_yaml_is_a_spec_error():
    with pytest.raises(SpecError, match="is not valid YAML"):
        ModelSpec.from_yaml("stages: [\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        ModelSpec.from_yaml(yaml.safe_dump([1, 2]))


def test_parse_component_accepts_bare_type_name():
    assert parse_component("ffn", "none", "x").type == "none"


def test_duplicate_registration_fails_loudly():
    with pytest.raises(RegistryError, match="already registered"):
        @register_component("mixer")
        @dataclasses.dataclass(frozen=True)
        class Again(Component):
            type = "cmt_attn"
