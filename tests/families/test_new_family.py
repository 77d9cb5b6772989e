"""Adding a family touches only its own files: a sixth, toy family in a package of its own
(``hvsearch_toy``, declared by an installed distribution's ``hvsearch.families`` entry point, here
a minimal ``.dist-info`` on ``PYTHONPATH``; nothing in the repository changes) is discovered,
samples from a space, and is picked up by every registry-parametrised test."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOY = {
    "__init__.py": '''
        """A toy mixer for the test-suite: depthwise k×k conv → 1×1 projection."""
        TITLE = "Toy"
        SEEDS = ()
    ''',
    "config.py": '''
        from dataclasses import dataclass

        from hvsearch.arch.components import Component, register_component, require


        @register_component("mixer")
        @dataclass(frozen=True)
        class ToyMixConfig(Component):
            type = "toy_mix"
            kernel: int = 3

            def check(self, ctx, path):
                require(self.kernel % 2 == 1, f"{path}.kernel", "must be odd", self.kernel)
    ''',
    "layers.py": '''
        from torch import nn

        from hvsearch.layers.base import MixerModule
        from hvsearch.layers.registry import register_module


        @register_module("mixer", "toy_mix")
        class ToyMix(MixerModule):
            def __init__(self, cfg, dim, ctx, shared=None):
                super().__init__()
                self.dw = nn.Conv2d(dim, dim, cfg.kernel, 1, cfg.kernel // 2, groups=dim)
                self.proj = nn.Conv2d(dim, dim, 1)

            def forward(self, x):
                return self.proj(self.dw(x))
    ''',
    "seeds.py": '''
        """No published variants."""
    ''',
}

SPACE = """
name: toy-space
train: {resolution: 32}
arch:
  stem: {type: conv, width: 16}
  head: norm_pool
  stages:
    all:
      depth: 2
      downsample: conv3
      mixer:
        choice:
          toy_mix: {kernel: {choice: [3, 5]}}
          hire: {region: 1, step_dilation: 0}
      ffn: {type: mlp, ratio: 2.0}
    each:
      - {width: 16, downsample: none}
      - {width: 32}
      - {width: 48}
      - {width: 64}
"""


def test_a_sixth_family_in_its_own_folder_is_picked_up_everywhere(tmp_path):
    plugins = tmp_path / "plugins"
    (plugins / "hvsearch_toy").mkdir(parents=True)
    for name, text in TOY.items():
        (plugins / "hvsearch_toy" / name).write_text(textwrap.dedent(text).lstrip())
    dist = plugins / "hvsearch_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hvsearch-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hvsearch.families]\ntoy = hvsearch_toy\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(plugins), "OMP_NUM_THREADS": "1"}

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-k", "toy or every_config or discovered",
         str(ROOT / "tests" / "families" / "test_registry.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "PASSED tests/families/test_registry.py::test_every_mixer_trains_counts_and_scores[toy_mix]" in out.stdout
    assert "PASSED tests/families/test_registry.py::test_every_config_has_its_module_under_one_name[mixer]" in out.stdout

    (tmp_path / "toy.yaml").write_text(SPACE)
    code = ("import random\n"
            "from hvsearch.families import family_names\n"
            "from hvsearch.space import load_space, RandomTrial\n"
            f"space = load_space({str(tmp_path / 'toy.yaml')!r})\n"
            "used = {s.mixer.family for i in range(8) for s in space.arch.sample(RandomTrial(random.Random(i))).stages}\n"
            "print(' '.join(family_names()), '|', ' '.join(sorted(used)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "cmt container convmlp hire toy transxnet | hire toy"
