"""`hvsearch scale --grid` end to end on tiny settings: real Ray trials, a real Optuna study,
every candidate trained once, a ranked table; and `--seed STUDY:best` reads the study back."""
import math

import pandas as pd
import pytest
import yaml

from hvsearch.scaling.compound import grid_constants
from hvsearch.space.candidates import CANDIDATE_PARAM
from tests.search.conftest import load, run_cli

TINY_SEED = {
    "name": "tinyseed", "resolution": 32, "num_classes": 10,
    "stem": {"type": "cmt", "width": 8}, "head": {"type": "norm_pool", "norm": "layernorm"},
    "stages": [
        {"depth": 1, "width": 8, "downsample": "patch", "mixer": {"type": "cmt_attn", "sr_ratio": 2},
         "ffn": {"type": "mlp", "ratio": 2.0}},
        {"depth": 1, "width": 16, "downsample": "patch", "mixer": "cmt_attn", "ffn": {"type": "mlp", "ratio": 2.0}},
        {"depth": 1, "width": 16, "downsample": "patch", "mixer": {"type": "hire", "region": 1, "step_dilation": 0},
         "ffn": {"type": "mlp", "ratio": 2.0}},
        {"depth": 1, "width": 32, "downsample": "patch", "mixer": {"type": "cmt_attn", "heads": 2},
         "ffn": {"type": "mlp", "ratio": 2.0}},
    ],
}
PROXY = {"data": {"name": "synthetic", "size": 240, "val_split": 0.25},
         "train": {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 32, "warmup_epochs": 0, "resolution": 32}}


def test_grid_constants_meet_the_constraint():
    rules = grid_constants(step=0.1, tol=0.05)
    assert all(abs(r.flops_base - 2.5) <= 0.125 + 1e-9 for r in rules)
    assert all(min(r.alpha, r.beta, r.gamma) >= 1 for r in rules)
    assert len({(r.alpha, r.beta, r.gamma) for r in rules}) == len(rules)
    assert (1.2, 1.3, 1.15) not in {(r.alpha, r.beta, r.gamma) for r in rules}  # 2.35: 6% off 2.5
    assert any((r.alpha, r.beta, r.gamma) == (2.5, 1.0, 1.0) for r in rules)


@pytest.mark.slow
def test_grid_runs_end_to_end_and_ranks_constants(workdir):
    folder, env = workdir
    (folder / "seed.yaml").write_text(yaml.safe_dump(TINY_SEED))
    (folder / "proxy.yaml").write_text(yaml.safe_dump(PROXY))
    rules = grid_constants(step=0.5, tol=0.25)
    assert len(rules) == 5
    proc = run_cli(["scale", "--seed", "seed.yaml", "--grid", "--grid-step", "0.5", "--grid-tol", "0.25",
                    "--config", "proxy.yaml", "--format", "csv"], folder, env, timeout=600)
    table = pd.read_csv(folder / "results" / "tinyseed-grid" / "grid.csv")
    printed = pd.read_csv(__import__("io").StringIO(proc.stdout[proc.stdout.index("rank,"):]))
    assert list(printed["rank"]) == list(table["rank"]) == [1, 2, 3, 4, 5]
    # every candidate trained exactly once, in a study of its own
    study = load(folder, "tinyseed-grid")
    labels = [t.params[CANDIDATE_PARAM] for t in study.trials]
    assert len(labels) == len(set(labels)) == 5
    assert (table["state"] == "trained").all()
    assert table["val_top1"].is_monotonic_decreasing
    by_trial = {t.number: t for t in study.trials}
    for row in table.itertuples():
        trial = by_trial[row.trial]
        assert math.isclose(trial.values[0], row.val_top1)
        # the phi=1 member: depth ~ alpha, width ~ beta, trained at 32·gamma snapped to 32
        assert row.proxy_res == max(32, round(32 * row.gamma / 32) * 32)
        assert len(trial.intermediate_values) == 1
    # the study's best architecture is a seed for scaling (and show/train)
    run_cli(["scale", "--seed", "tinyseed-grid:best", "--phi", "1", "--out", "fam"], folder, env)
    assert (folder / "fam").is_dir() and len(list((folder / "fam").glob("*.yaml"))) == 1
    best = min(table.itertuples(), key=lambda r: r.rank)
    shown = run_cli(["show", "tinyseed-grid:best", "--format", "yaml"], folder, env).stdout
    assert yaml.safe_load(shown)["name"] == f"tinyseed-grid-t{best.trial}"
    run_cli(["show", f"tinyseed-grid:{best.trial}"], folder, env)
    trained = run_cli(["train", "tinyseed-grid:best", "--config", "proxy.yaml", "--epochs", "1",
                       "--max-steps-per-epoch", "2", "--out", "tr"], folder, env).stdout
    assert "best val top-1" in trained and (folder / "tr" / "checkpoint.pt").exists()


def test_constants_that_round_to_one_member_are_one_candidate():
    """convmlp_s's 40 φ=1 candidates at step 0.1 are 34 models (depths and widths are rounded):
    34 trials, and the six other constants are listed with the trial of their twin."""
    from hvsearch.models import get_seed
    from hvsearch.search.scaling_grid import grid_space
    from hvsearch.train.config import DataConfig, TrainConfig

    rules = grid_constants(step=0.1, tol=0.05)
    space = grid_space(get_seed("convmlp_s").spec, rules, TrainConfig(), DataConfig(), name="g")
    same_as = space.raw["same_as"]
    assert len(rules) == 40 and space.search.trials == len(space.arch.archs) == 34 and len(same_as) == 6
    assert set(same_as.values()) <= set(space.arch.archs) and not set(same_as) & set(space.arch.archs)
    # ranked: a twin's row is its trained twin's (accuracy, trial), naming it
    import optuna

    from hvsearch.search import study as st
    from hvsearch.search.scaling_grid import rank

    study = optuna.create_study(direction="maximize")
    labels = list(space.arch.archs)
    dist = optuna.distributions.CategoricalDistribution(labels)
    for i, label in enumerate(labels):
        study.add_trial(optuna.trial.create_trial(params={CANDIDATE_PARAM: label}, distributions={CANDIDATE_PARAM: dist},
                                                  value=float(i), user_attrs={st.ATTR_STATUS: "trained"}))
    table = rank(study, rules, same_as)
    assert len(table) == 40 and table["val_top1"].notna().all() and (table["state"] == "trained").all()
    twins = table[table["same_as"].fillna("") != ""]
    assert len(twins) == 6
    for row in twins.itertuples():
        assert row.trial == labels.index(row.same_as) and row.val_top1 == float(row.trial)
