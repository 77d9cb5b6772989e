"""Space files: the shipped ones load, sampling is define-by-run, and every malformed file gives
one clear error (the key path, the rule, the value) and never a traceback."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hvsearch.cli import main
from hvsearch.errors import SpaceError
from hvsearch.space import Choice, Fixed, RandomTrial, load_space, parse_space

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "spaces").glob("*.yaml"))

BASE = """
name: t
data: {name: synthetic, size: 100}
train: {epochs: 2, batch_size: 16}
search: {sampler: random, trials: 3}
constraints: {max_params: 1M}
arch:
  stem: {type: cmt, width: 8}
  head: norm_pool
  stages:
    all:
      depth: {int: [1, 2]}
      downsample: patch
      mixer:
        choice:
          cmt_attn: {heads: {choice: [1, 2]}}
          hire: {region: 1, step_dilation: 0}
      ffn: {type: mlp, ratio: {float: [2.0, 4.0], step: 1.0}}
    each:
      - {width: {int: [8, 16], step: 8}}
      - {width: 16}
      - {width: 32}
      - {width: 32}
"""


def _space(edit=None):
    data = yaml.safe_load(BASE)
    if edit:
        edit(data)
    return parse_space(yaml.safe_dump(data))


def _mixer(data):
    return data["arch"]["stages"]["all"]["mixer"]


def test_shipped_spaces_load():
    assert {p.stem for p in SPACES} >= {"hybrid", "cmt_like", "tiny"}
    for path in SPACES:
        space = load_space(path)
        assert len(space.arch.stages) == 4


def test_hybrid_covers_all_five_families():
    space = load_space(ROOT / "spaces" / "hybrid.yaml")
    from hvsearch.arch import get_component
    from hvsearch.families import family_names

    families = {get_component("mixer", t)().family for t in space.arch.mixer_types()}
    assert families == set(family_names()) == {"cmt", "hire", "container", "transxnet", "convmlp"}


def test_sampling_is_define_by_run_and_conditional():
    space = _space()
    rng = random.Random(0)
    seen = set()
    for _ in range(40):
        trial = RandomTrial(rng)
        spec = space.arch.sample(trial)
        for i, st in enumerate(spec.stages):
            mixer = trial.params[f"stages.{i}.mixer.type"]
            assert st.mixer.type == mixer
            heads = f"stages.{i}.mixer.cmt_attn.heads"
            # a knob is drawn only when its mixer is
            assert (heads in trial.params) == (mixer == "cmt_attn")
            seen.add(mixer)
        assert spec.resolution == 32 and spec.num_classes == 10  # from train/data
    assert seen == {"cmt_attn", "hire"}


def test_shared_knob_is_drawn_once():
    def edit(d):
        d["arch"]["stages"]["all"]["depth"] = {"int": [1, 3], "shared": True}

    space = _space(edit)
    trial = RandomTrial(random.Random(1))
    spec = space.arch.sample(trial)
    assert "stages.*.depth" in trial.params and "stages.0.depth" not in trial.params
    assert len(set(spec.depths)) == 1


def test_space_size_and_params():
    space = _space()
    assert isinstance(space.arch.stages[0].parts["mixer"].types, Choice)
    assert isinstance(space.arch.stages[1].fields["width"], Fixed)
    # per stage: depth 2 x (cmt 2 + hire 1) x ratio 3; stage 0 width x2
    assert space.arch.size() == (2 * 3 * 3) ** 4 * 2


def _set(path, value):
    def edit(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _del(path):
    def edit(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


STAGE = ("arch", "stages", "all")
MALFORMED = [
    # (edit, path in the message, rule fragment)
    (_set(("arch", "stages", "all", "depth"), "two"), "arch.stages.all.depth", "must be an integer"),
    (_set(STAGE + ("depth",), {"int": [3, 1]}), "arch.stages.all.depth.int", "low <= high"),
    (_set(STAGE + ("depth",), {"int": [1, 4], "step": 0}), "arch.stages.all.depth.step", "positive integer"),
    (_set(STAGE + ("depth",), {"int": [1, 4], "step": 2}), "arch.stages.all.depth.int", "multiple of step"),
    (_set(STAGE + ("depth",), {"float": [1.0, 2.0]}), "arch.stages.all.depth", "integer knob"),
    (_set(STAGE + ("depth",), {"int": [0, 4], "log": True}), "arch.stages.all.depth.int", "log scale"),
    (_set(STAGE + ("depth",), {"choice": []}), "arch.stages.all.depth.choice", "non-empty list"),
    (_set(STAGE + ("depth",), {"choice": [1, 1]}), "arch.stages.all.depth.choice", "repeat"),
    (_set(STAGE + ("depth",), {"int": [1, 2], "choice": [1]}), "arch.stages.all.depth", "exactly one of"),
    (_set(STAGE + ("depth",), {"int": [1, 2], "stepp": 1}), "arch.stages.all.depth.stepp", "not a range option"),
    (_set(STAGE + ("ffn",), {"type": "mlp", "ratio": {"float": [4.0, 2.0]}}), "arch.stages.all.ffn.ratio.float",
     "low <= high"),
    (_set(STAGE + ("ffn",), {"type": "mlp", "ratio": {"float": [0.0, 2.0], "log": True}}),
     "arch.stages.all.ffn.ratio.float", "above 0"),
    (_set(STAGE + ("mixer",), {"choice": {"swin": {"window": 7}}}), "arch.stages.all.mixer.choice.swin",
     "registered mixer type"),
    (_set(STAGE + ("mixer",), {"type": "swin"}), "arch.stages.all.mixer.type", "registered mixer type"),
    (_set(STAGE + ("mixer",), {"region": 2}), "arch.stages.all.mixer", "cannot stand without their mixer"),
    (_set(STAGE + ("mixer",), {"choice": {"hire": None}, "region": 2}), "arch.stages.all.mixer.region",
     "knobs belong under their mixer type"),
    (_set(STAGE + ("mixer",), {"type": "cmt_attn", "region": 2}), "arch.stages.all.mixer.region",
     "not a knob of mixer 'cmt_attn'"),
    (_set(STAGE + ("mixer",), {"choice": {"cmt_attn": {"heads": {"choice": ["one"]}}}}),
     "arch.stages.all.mixer.choice.cmt_attn.heads.choice[0]", "must be an integer"),
    (_set(STAGE + ("mixer",), {"type": {"choice": ["hire"]}}), "arch.stages.all.mixer.type", "cannot be sampled"),
    (_set(STAGE + ("mixer",), 7), "arch.stages.all.mixer", "must be a mixer type name"),
    (_set(STAGE + ("ffn",), {"type": "mlp", "ratio": {"choice": [2.0]}, "bias": {"int": [0, 1]}}),
     "arch.stages.all.ffn.bias", "true or false"),
    (_set(STAGE + ("colour",), "red"), "arch.stages.all.colour", "not a stage field"),
    (_del(STAGE + ("ffn",)), "arch.stages.each[0].ffn", "required"),
    (_set(("arch", "stages", "each"), [{"width": 8}] * 3), "arch.stages.each", "exactly 4"),
    (_set(("arch", "stages"), [{"depth": 1}] * 5), "arch.stages", "exactly 4 stages"),
    (_set(("arch", "stem"), {"type": "cmt", "width": {"int": [8, 16], "shared": True}}), "arch.stem.width.shared",
     "only meaningful inside arch.stages"),
    (_set(("arch", "resolution"), 48), "arch.resolution", "must equal train.resolution"),
    (_set(("arch", "num_classes"), 100), "arch.num_classes", "class count"),
    (_set(("arch", "wings"), 2), "arch.wings", "not an arch field"),
    (_del(("arch", "head")), "arch.head", "is required"),
    (_del(("arch",)), "arch", "is required"),
    (_set(("extra",), 1), "extra", "not a section"),
    (_set(("name",), "has space"), "name", "study name"),
    (_set(("search", "sampler"), "grid"), "search.sampler", "one of tpe, random, nsga2"),
    (_set(("search", "objectives"), ["flops"]), "search.objectives", "start with accuracy"),
    (_set(("search", "objectives"), ["accuracy", "energy"]), "search.objectives[1]", "one of"),
    (_set(("search", "trials"), 0), "search.trials", "must be an integer in [1, 1000000]"),
    (_set(("search", "time_budget"), "soon"), "search.time_budget", "duration"),
    (_set(("search", "asha"), {"grace_period": 5}), "search.asha.grace_period", "<= train.epochs"),
    (_set(("search", "asha"), {"reduction_factor": 1}), "search.asha.reduction_factor", "in (1, 100]"),
    (_set(("search", "sampler_options"), {"seed": 3}), "search.sampler_options.seed", "search.seed"),
    (_set(("resources", ), {"gpus_per_trial": -1}), "resources.gpus_per_trial", "in [0, 1024]"),
    (_set(("resources", ), {"cpus": 2}), "resources.cpus", "not a resources setting"),
    (_set(("constraints",), {"max_params": -5}), "constraints.max_params", "in [1, 1e+15]"),
    (_set(("constraints",), {"max_flops": "lots"}), "constraints.max_flops", "a count"),
    (_set(("constraints",), {"resolution": 100}), "constraints.resolution", "multiple of the total stride"),
    (_set(("constraints",), {"max_latency_ms": 0}), "constraints.max_latency_ms", "positive number of milliseconds"),
    (_set(("latency",), {"batch": 2}), "latency", "nothing uses it"),
    (lambda d: d.update(constraints={"max_latency_ms": 5}, latency={"device": "tpu"}), "latency.device",
     "one of cpu, cuda"),
    (lambda d: d.update(constraints={"max_latency_ms": 5}, latency={"threads": 0}), "latency.threads",
     "must be an integer in [1, 4096]"),
    (lambda d: d.update(constraints={"max_latency_ms": 5}, latency={"resolution": 100}), "latency.resolution",
     "multiple of the total stride"),
    (lambda d: d.update(constraints={"max_latency_ms": 5}, latency={"warm": 1}), "latency.warm",
     "not a latency setting"),
    (_set(("train",), {"epochs": 0}), "train.epochs", "> 0"),
    (_set(("train",), {"lr_typo": 1}), "train.lr_typo", "not a setting"),
    (_set(("data",), {"name": "imagenet"}), "data.name", "one of"),
    (_set(STAGE + ("depth",), {"int": [1, 2 ** 53]}), "arch.stages.all.depth",
     "must not offer values above 1000 (an architecture's largest stage depth), got 9007199254740992"),
    (_set(("arch", "stages", "each"), [{"width": {"choice": [8, 100_000]}}, {"width": 16}, {"width": 32},
                                       {"width": 32}]), "arch.stages.each[0].width", "must not offer values above 65536"),
    (_set(("arch", "stages", "each"), [{"width": {"choice": [8, 16], "shared": True}},
                                       {"width": {"choice": [32, 64], "shared": True}}, {"width": 32}, {"width": 32}]),
     "arch.stages.1.width", "is shared (shared: true, the parameter stages.*.width) but stage 0 defines it as {8, 16}"),
    (lambda d: d["arch"]["stages"].update(each=[
        {"width": 8, "mixer": {"choice": ["hire", "cmt_attn"], "shared": True}},
        {"width": 16, "mixer": {"choice": ["hire", "conv_bottleneck"], "shared": True}},
        {"width": 32, "mixer": "hire"}, {"width": 32, "mixer": "hire"}]) or d["arch"]["stages"]["all"].pop("mixer"),
     "arch.stages.1.mixer.type", "is shared (shared: true, the parameter stages.*.mixer.type)"),
    (_set(("search", "objectives"), ["accuracy", ["flops"]]), "search.objectives[1]", "one of"),
    (_set(("name",), "a..b"), "name", "no `..`"),
]


@pytest.mark.parametrize("edit,path,rule", MALFORMED, ids=[f"{m[1]}:{m[2]}" for m in MALFORMED])
def test_malformed_space_gives_one_clear_error(edit, path, rule):
    with pytest.raises(SpaceError) as info:
        _space(edit)
    err = info.value
    assert err.path == path, str(err)
    assert rule in str(err), str(err)
    assert "\n" not in str(err)


def test_numbers_with_an_exponent_are_numbers():
    """YAML 1.1 (PyYAML) reads 1e-3 as text; every ML config means a number."""
    space = parse_space(BASE.replace("train: {epochs: 2, batch_size: 16}",
                                     "train: {epochs: 2, batch_size: 16, lr: 1e-3, weight_decay: 5E-2}"))
    assert space.train.lr == 0.001 and space.train.weight_decay == 0.05
    with pytest.raises(SpaceError, match=r"train.epochs must be a positive integer.*got 100.0|"
                                         r"train.epochs must be an integer.*got 100.0"):
        parse_space(BASE.replace("epochs: 2,", "epochs: 1e2,"))


def test_malformed_yaml_and_files(tmp_path):
    with pytest.raises(SpaceError, match=r"not valid YAML \(line 3, column 1: expected ','"):
        parse_space("arch:\n  stem: [1, 2\n")
    with pytest.raises(SpaceError, match="must be a mapping"):
        parse_space("- 1\n- 2\n")
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


def test_cli_check_prints_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(BASE)
    _set(STAGE + ("mixer",), {"choice": {"cmt_attn": None, "hire": {"regio": 2}}})(data)
    bad.write_text(yaml.safe_dump(data))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("hvsearch check: error: ") and str(bad) in err
    assert "arch.stages.all.mixer.choice.hire.regio is not a knob of mixer 'hire'" in err


def test_cli_check_flags_impossible_constraints(tmp_path, capsys):
    path = tmp_path / "tight.yaml"
    path.write_text(BASE.replace("max_params: 1M", "max_params: 100"))
    assert main(["check", str(path), "--samples", "3"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN: no valid sample meets the constraints" in out


def test_cli_check_reports_invalid_share(tmp_path, capsys):
    path = tmp_path / "mixed.yaml"
    # region 2 does not fit stage 3's 1x1 map: every draw with hire there is invalid
    path.write_text(BASE.replace("hire: {region: 1, step_dilation: 0}", "hire: {region: 2, step_dilation: 0}"))
    assert main(["check", str(path), "--samples", "30", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "invalid" in out and "stages.3.mixer.region must be <= the stage's feature size 1" in out


def test_import_and_check_start_no_ray():
    code = ("import sys, hvsearch, hvsearch.space, hvsearch.search, hvsearch.cli\n"
            "from hvsearch.space import load_space\n"
            f"load_space({str(ROOT / 'spaces' / 'tiny.yaml')!r})\n"
            "bad = [m for m in ('ray', 'torch', 'optuna', 'optuna_dashboard') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_latency_section_defaults_and_fingerprint():
    from hvsearch.space.schema import LatencySettings

    assert _space().latency is None
    objective = _space(lambda d: d["search"].update(objectives=["accuracy", "latency"]))
    assert objective.latency == LatencySettings() and objective.search.objectives == ("accuracy", "latency")
    limited = _space(lambda d: d.update(constraints={"max_latency_ms": 12.5}, latency={"threads": 2, "batch": 4}))
    assert limited.constraints.max_latency_ms == 12.5 and limited.constraints.describe() == "latency <= 12.5 ms"
    assert (limited.latency.threads, limited.latency.batch, limited.latency.resolution) == (2, 4, None)
    assert limited.constraints.latency_violations(12.5) == []
    assert limited.constraints.latency_violations(13.0) == [
        "latency 13 ms (median) exceeds constraints.max_latency_ms 12.5"]
    # where latency is measured defines its values: another thread count is another study
    other = _space(lambda d: d.update(constraints={"max_latency_ms": 12.5}, latency={"threads": 1, "batch": 4}))
    assert other.fingerprint() != limited.fingerprint()
    # `run --objectives` adds latency with its default settings, and drops settings nothing uses
    added = _space().with_overrides(objectives=("accuracy", "latency"))
    assert added.latency == LatencySettings() and added.fingerprint() == objective.fingerprint()
    assert objective.with_overrides(objectives=("accuracy",)).latency is None
    assert limited.with_overrides(objectives=("accuracy",)).latency == limited.latency  # the constraint uses it
