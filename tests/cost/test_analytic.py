"""The analytic counter (hvsearch.cost.analytic): the spec's params and FLOPs without building a
model, equal to fvcore's (every seed: tests/models/test_seeds.py; every mixer type:
tests/families/test_registry.py) on sampled architectures of every space, at the build resolution
and at others; and the search's driver counts with it without importing torch."""
import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from hvsearch.arch import Component
from hvsearch.cost import NotCountable, count_analytic, count_spec
from hvsearch.cost.analytic import Tally
from hvsearch.errors import SpecError
from hvsearch.space import RandomTrial, load_space

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted(ROOT.joinpath("spaces").glob("*.yaml"))


def _fields(cost):
    return cost.params, cost.flops, cost.by_stage, cost.params_by_stage


def _samples(path: Path, n: int, seed: int):
    space = load_space(path)
    rng, specs = random.Random(seed), []
    while len(specs) < n:
        try:
            specs.append(space.arch.sample(RandomTrial(rng)))
        except SpecError:
            continue
    return space, specs


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_sampled_architectures_count_as_fvcore(path):
    space, specs = _samples(path, 3, seed=11)
    for spec in specs:
        res = space.constraints.resolution or spec.resolution
        ours = count_spec(spec, res, counter="analytic")
        assert ours.flops > ours.params > 0
        assert _fields(ours) == _fields(count_spec(spec, res, counter="fvcore")), spec.arch_id


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_many_sampled_architectures_count_as_the_shape_counter(path):
    # the shape counter equals fvcore (tests/cost/test_shapes.py) and is ~50x faster: more draws,
    # and a resolution other than the build one (every size the model runs at is counted as run)
    space, specs = _samples(path, 12, seed=5)
    for i, spec in enumerate(specs):
        res = space.constraints.resolution or spec.resolution
        for r in (res, (res + 32, res + 64) if i % 2 else res * 2):
            assert _fields(count_analytic(spec, r)) == _fields(count_spec(spec, r, counter="shapes")), (spec.arch_id, r)


def test_a_seed_at_another_size_counts_as_fvcore():
    from hvsearch.models import get_seed

    for name in ("transxnet_t", "container_light", "hire_mlp_tiny"):
        spec = get_seed(name).spec
        assert _fields(count_analytic(spec, 96)) == _fields(count_spec(spec, 96, counter="fvcore")), name


def test_head_without_classifier_and_the_breakdown_adds_up():
    from hvsearch.models import get_seed

    spec = get_seed("cmt_ti").spec
    full, bare = count_analytic(spec), count_analytic(spec.replace(num_classes=0))
    features = spec.head.features
    assert full.params - bare.params == features * 1000 + 1000  # the classifier's weight and bias
    assert full.flops - bare.flops == features * 1000
    assert sum(full.by_stage.values()) == full.flops and sum(full.params_by_stage.values()) == full.params
    assert list(full.by_stage) == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert _fields(bare) == _fields(count_spec(spec.replace(num_classes=0), counter="shapes"))


def test_a_part_without_a_formula_is_counted_on_its_model():
    from hvsearch.models import get_seed

    @dataclasses.dataclass(frozen=True)
    class Formless(Component):  # the pooled head's config without a cost, as another package's may be
        kind: ClassVar[str] = "head"
        type: ClassVar[str] = "norm_pool"
        norm: str = "batchnorm"
        dropout: float = 0.0

    base = get_seed("convmlp_s").spec
    spec = base.replace(head=Formless(**dataclasses.asdict(base.head)))
    with pytest.raises(NotCountable, match="head 'norm_pool'"):
        count_analytic(spec)
    with pytest.raises(NotCountable):
        count_spec(spec, counter="analytic")
    # auto: built and counted by shapes, the same numbers
    assert _fields(count_spec(spec)) == _fields(count_analytic(base))


def test_a_map_too_small_for_a_convolution_is_a_spec_error():
    t = Tally("stages.2.downsample")
    with pytest.raises(SpecError, match=r"stages.2.downsample cannot run its 4x4 stride-4 convolution .*; map size, got '1x1'"):
        t.conv(8, 8, 4, (1, 1), stride=4, padding=0)
    assert (t.params, t.flops) == (0, 0)


def test_unknown_counter_is_refused():
    from hvsearch.models import get_seed

    with pytest.raises(ValueError, match="counter must be one of auto, analytic, shapes, fvcore"):
        count_spec(get_seed("cmt_ti").spec, counter="ptflops")


def test_the_search_driver_counts_without_importing_torch():
    # what hvsearch run imports in the driver (the runner, Ray Tune, the searcher, the trainable)
    # and counts a draw of the default space with: no torch, no timm (seconds of the start)
    code = f"""
import json, random, sys
import hvsearch.search.runner as runner
from hvsearch.space import RandomTrial, load_space
space = load_space({str(ROOT / 'spaces' / 'hybrid.yaml')!r})
runner._import_search(space)
spec = space.arch.sample(RandomTrial(random.Random(0)))
print(json.dumps([runner._cost_fn(space)(spec), sorted(m for m in ("torch", "timm", "torchvision", "tensorboardX")
                                                       if m in sys.modules)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    (params, flops, res), heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == []
    space = load_space(ROOT / "spaces" / "hybrid.yaml")
    spec = space.arch.sample(RandomTrial(random.Random(0)))
    ref = count_spec(spec, res, counter="shapes")
    assert (params, flops) == (ref.params, ref.flops)
