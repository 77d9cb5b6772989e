"""``hvsearch calibrate``: the stratified sample, the ceiling and flag rules, and the whole command
end to end on the tiny space (real Ray trials, real SQLite studies): re-run to check it continues
instead of retraining, with two reference seeds, and reusing another calibration's reference."""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from scipy import stats as sps

from hvsearch.arch import ModelSpec
from hvsearch.search.calibrate import (
    CalibrationError,
    ceiling_line,
    ceiling_row,
    count_params,
    dominant_mixer,
    seed_flags,
    stratified_sample,
)
from hvsearch.stats import bootstrap_ci, kendall
from hvsearch.space import load_space
from tests.conftest import search_env
from tests.search.conftest import TINY, run_cli, write_space

PROXY_EPOCHS = 2


def _short(d):
    d["train"]["epochs"] = PROXY_EPOCHS


def test_stratified_sample_is_deterministic_distinct_and_covers_every_stratum():
    space = load_space(TINY)
    a = stratified_sample(space, 8, seed=3, pool_factor=4)
    b = stratified_sample(space, 8, seed=3, pool_factor=4)
    assert [c.spec.arch_id for c in a] == [c.spec.arch_id for c in b]
    assert len({c.spec.arch_id for c in a}) == 8
    assert [c.label for c in a] == [f"c{i:02d}" for i in range(8)]
    # tiny has two mixer families and three size bins: 6 strata, all in a sample of 8
    cells = Counter(c.stratum for c in a)
    assert len(cells) == 6 and max(cells.values()) == 2
    for c in a:
        assert c.params == count_params(c.spec) <= space.constraints.max_params
        assert c.mixer == dominant_mixer(c.spec)
    assert [c.spec.arch_id for c in stratified_sample(space, 8, seed=4, pool_factor=4)] != [c.spec.arch_id for c in a]


def test_dominant_mixer_counts_blocks_and_breaks_ties_by_depth():
    spec = ModelSpec.from_dict(yaml.safe_load("""
    stem: {type: cmt, width: 8}
    head: norm_pool
    stages:
      - {depth: 3, width: 8, mixer: hire, ffn: mlp, downsample: patch}
      - {depth: 1, width: 16, mixer: cmt_attn, ffn: mlp, downsample: patch}
      - {depth: 1, width: 16, mixer: cmt_attn, ffn: mlp, downsample: patch}
      - {depth: 1, width: 32, mixer: cmt_attn, ffn: mlp, downsample: patch}
    """))
    assert dominant_mixer(spec) == "cmt_attn"  # 3 blocks each: the deeper stage's type wins
    deeper = spec.replace(stages=(dataclasses.replace(spec.stages[0], depth=4), *spec.stages[1:]))
    assert dominant_mixer(deeper) == "hire"


def test_too_small_a_sample_is_refused():
    with pytest.raises(CalibrationError, match="n >= 4"):
        stratified_sample(load_space(TINY), 3)


def test_calibrate_refuses_a_reference_no_longer_than_the_proxy(tmp_path, capsys):
    from hvsearch.cli import main

    path = write_space(tmp_path, _short, name="bad")
    code = main(["calibrate", str(path), "--reference-epochs", "2", "--studies-dir", str(tmp_path / "studies")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert ("--reference-epochs must be an integer whose training (epochs x fraction 1) exceeds the proxy's "
            "(2 x 1): the reference is the longer training, got 2") in err
    assert not (tmp_path / "studies").exists(), "nothing is created for a refused run"


# ---- the ceiling and the flags on given numbers -----------------------------------------------

def _seeds_frame(*runs) -> pd.DataFrame:
    frame = pd.DataFrame({f"reference_seed{k}": r for k, r in enumerate(runs)}, dtype=float)
    frame["reference"] = frame.mean(axis=1)
    frame["reference_spread"] = frame.max(axis=1) - frame.min(axis=1)
    return frame


def test_ceiling_is_the_seeds_agreement_and_its_interval_that_of_the_mean_over_pairs():
    s0, s1, s2 = [30, 55, 12, 70, 41, 64], [35, 50, 20, 61, 48, 67], [28, 60, 11, 44, 52, 73]
    two = ceiling_row(_seeds_frame(s0, s1), n_boot=300, seed=5)
    assert two["score"] == "ceiling: reference seed 1 vs seed 0" and two["kind"] == "ceiling" and two["n"] == 6
    assert math.isclose(two["kendall_tau"], sps.kendalltau(s0, s1).statistic, abs_tol=1e-12)
    assert math.isclose(two["spearman_rho"], sps.spearmanr(s0, s1).statistic, abs_tol=1e-12)
    # two seeds: exactly the bootstrap of the one pair
    assert (two["tau_lo"], two["tau_hi"]) == bootstrap_ci(np.array(s1, float), np.array(s0, float), kendall,
                                                          n_boot=300, seed=5)
    # one seed's top quarter (2 of 6) in the other's better half (3 of 6), both ways
    assert two["top_kept"] == 1.0

    three = ceiling_row(_seeds_frame(s0, s1, s2), n_boot=300, seed=5)
    pairs = [sps.kendalltau(a, b).statistic for a, b in itertools.combinations((s0, s1, s2), 2)]
    assert three["score"] == "ceiling: reference seeds, mean of 3 pairs"
    assert math.isclose(three["kendall_tau"], float(np.mean(pairs)), abs_tol=1e-12)
    assert three["tau_lo"] <= three["kendall_tau"] <= three["tau_hi"]
    assert ceiling_row(_seeds_frame(s0), n_boot=300) is None
    assert ceiling_line(pd.DataFrame({"kind": ["score"], "kendall_tau": [0.3]})).startswith(
        "no ceiling: one reference seed")


def test_one_reference_seed_gives_no_ceiling_row_and_no_shares():
    from hvsearch.search.calibrate import correlation_table

    one = _seeds_frame([60.0, 70.0, 55.0, 80.0, 65.0]).assign(params=[1.0, 3.0, 2.0, 5.0, 4.0])
    assert (one["reference"] == one["reference_seed0"]).all() and (one["reference_spread"] == 0).all()
    table = correlation_table(one, n_boot=200)
    assert list(table["score"]) == ["params"] and (table["kind"] != "ceiling").all()
    assert table["tau_of_ceiling"].isna().all() and table["toc_lo"].isna().all()
    assert table["kendall_tau"].iloc[0] == pytest.approx(sps.kendalltau(one["params"], one["reference"]).statistic)
    assert ceiling_line(table).startswith("no ceiling: one reference seed")


def test_a_scores_share_of_the_ceiling_compares_like_with_like_with_a_paired_interval():
    """The score against each seed alone over the seeds against each other: a score that is seed
    0's accuracy itself gets (1 + c) / 2c, c the ceiling; its interval holds the point."""
    from hvsearch.search.calibrate import share_of_ceiling

    s0, s1 = [30, 55, 12, 70, 41, 64, 22, 58], [35, 50, 20, 61, 48, 67, 15, 66]
    archs = _seeds_frame(s0, s1).assign(score=s0)
    c = sps.kendalltau(s0, s1).statistic
    point, lo, hi = share_of_ceiling(archs, "score", n_boot=400, seed=3)
    assert math.isclose(point, (1 + c) / (2 * c), abs_tol=1e-12) and lo <= point <= hi
    # against a ceiling that a resample can make non-positive, the interval is unbounded there
    flat = _seeds_frame([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]).assign(score=[1, 2, 3, 4, 5])
    _, _, hi = share_of_ceiling(flat, "score", n_boot=400, seed=3)
    assert hi == math.inf


def test_flags_follow_the_chance_and_disagreement_rule():
    # ten classes: chance 10%, flagged below 15; spreads 2, 4, 30, 3, 10, 12: median 7, limit max(20, 21)
    frame = _seeds_frame([10, 40, 20, 50, 14, 30], [12, 44, 50, 47, 4, 42])
    frame.loc[6] = [60.0, math.nan, math.nan, math.nan]  # a seed did not finish: no flag
    flags = seed_flags(frame, num_classes=10).tolist()
    assert flags == ["never leaves chance", "", "seeds disagree", "", "never leaves chance", "", ""]
    # a sample of wild seeds raises the bar: spreads 30-40 are under 3x their median, 35
    wild = _seeds_frame([10, 40, 20, 50], [40, 80, 50, 10])
    assert seed_flags(wild, num_classes=10).tolist() == ["", "", "", ""]


# ---- two reference seeds, and a reference reused by another calibration (real Ray + SQLite) ---

SEEDED_N = 4


def _seeded_edit(epochs):
    def edit(d):
        d["train"].update(epochs=epochs, max_steps_per_epoch=2)
    return edit


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, cache_dir):
    """The tiny space calibrated on 4 architectures: a 1-epoch proxy, a 3-epoch reference trained
    with 2 seeds (the default). Shared by the tests below: it is the expensive part."""
    folder = tmp_path_factory.mktemp("seeded")
    env = search_env(cache_dir)
    path = write_space(folder, _seeded_edit(1), name="seeded")
    out = run_cli(["calibrate", str(path), "-n", str(SEEDED_N), "--reference-epochs", "3", "--bootstrap", "200"],
                  folder, env, timeout=600).stdout
    return folder, env, out


def _studies(folder, db):
    import optuna

    url = f"sqlite:///{folder / 'studies' / db}"
    return url, {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}


def test_calibrate_with_two_reference_seeds_has_the_ceiling_and_flags(seeded):
    import optuna

    folder, _, out = seeded
    assert f"{SEEDED_N} architectures, proxy 1 epoch(s) vs reference 3 epoch(s) (3x the proxy's training images), 2 reference seed(s)" in out
    assert "reference training, seed 1 (train.seed 1)" in out
    url, studies = _studies(folder, "seeded-calibrate.db")
    assert studies == {"seeded-calibrate-proxy": SEEDED_N, "seeded-calibrate-reference": SEEDED_N,
                       "seeded-calibrate-reference-seed1": SEEDED_N}
    refs = [optuna.load_study(study_name=name, storage=url)
            for name in ("seeded-calibrate-reference", "seeded-calibrate-reference-seed1")]
    for ref in refs:
        assert all(t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == [1, 2, 3] for t in ref.trials)
    proxy = optuna.load_study(study_name="seeded-calibrate-proxy", storage=url)
    assert all(t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == [1] for t in proxy.trials)
    assert {t.user_attrs["arch_id"] for t in proxy.trials} == {t.user_attrs["arch_id"] for t in refs[0].trials}
    assert len(proxy.user_attrs["zero_cost"]) == SEEDED_N
    stamps = {ref.user_attrs["calibration_fingerprint"] for ref in refs}
    assert len(stamps) == 1 and len(stamps.pop()) == 12
    assert refs[0].user_attrs["calibration_setup"]["reference epochs"] == 3

    res = folder / "results" / "seeded-calibrate"
    archs = pd.read_csv(res / "archs.csv", keep_default_na=False, na_values=[""])
    table = pd.read_csv(res / "calibration.csv")
    for k, ref in enumerate(refs):
        final = {t.user_attrs["arch_id"]: t.values[0] for t in ref.trials}
        assert archs[f"reference_seed{k}"].tolist() == [final[a] for a in archs["arch_id"]]
    seeds = archs[["reference_seed0", "reference_seed1"]]
    assert np.allclose(archs["reference"], seeds.mean(axis=1))
    assert np.allclose(archs["reference_spread"], (seeds["reference_seed0"] - seeds["reference_seed1"]).abs())
    curves = [{t.user_attrs["arch_id"]: t.intermediate_values for t in ref.trials} for ref in refs]
    for k in (1, 2):
        assert np.allclose(archs[f"reference@{k}"], [np.mean([c[a][k] for c in curves]) for a in archs["arch_id"]])

    # the rule, on the measured numbers (10 classes: chance 10%)
    limit = max(20.0, 3 * archs["reference_spread"].median())
    expected = ["never leaves chance" if (row.reference_seed0 < 15 and row.reference_seed1 < 15)
                else "seeds disagree" if row.reference_spread > limit else "" for row in archs.itertuples()]
    assert archs["flag"].fillna("").tolist() == expected
    assert "flags: " in out

    ceiling = table.iloc[0]
    assert ceiling["score"] == "ceiling: reference seed 1 vs seed 0" and ceiling["kind"] == "ceiling"
    assert (table["kind"] == "ceiling").sum() == 1 and ceiling["n"] == SEEDED_N
    tau = sps.kendalltau(archs["reference_seed0"], archs["reference_seed1"]).statistic
    rho = sps.spearmanr(archs["reference_seed0"], archs["reference_seed1"]).statistic
    # NaN only if a seed's accuracies are all equal (possible on tiny data); then both agree on it
    assert np.allclose([ceiling["kendall_tau"], ceiling["spearman_rho"]], [tau, rho], atol=1e-9, equal_nan=True)
    assert "ceiling: reference seed 1 vs seed 0" in out and "tau / ceiling" in out
    scores = table.iloc[1:]
    assert set(scores["score"]) == {"synflow", "naswot", "grad_norm", "snip", "params", "flops", "proxy",
                                    "reference@1", "reference@2"}
    assert (table["n"] == SEEDED_N).all() and archs["arch_id"].is_unique and len(archs) == SEEDED_N
    for row in scores.itertuples():
        if math.isnan(row.kendall_tau):  # a score constant over the sample (possible on tiny data)
            continue
        assert row.tau_lo <= row.kendall_tau + 1e-9 and row.kendall_tau <= row.tau_hi + 1e-9
        assert math.isclose(row.kendall_tau, sps.kendalltau(archs[row.score], archs["reference"]).statistic,
                            abs_tol=1e-9)
        assert math.isclose(row.spearman_rho, sps.spearmanr(archs[row.score], archs["reference"]).statistic,
                            abs_tol=1e-9)
    assert (res / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if tau > 0:
        assert np.allclose(scores["tau_of_ceiling"], scores["kendall_tau"] / tau, equal_nan=True)
    else:
        assert table["tau_of_ceiling"].isna().all()


def test_a_second_run_trains_and_scores_nothing_and_gives_the_same_table(seeded):
    folder, env, _ = seeded
    _, before = _studies(folder, "seeded-calibrate.db")
    table = pd.read_csv(folder / "results" / "seeded-calibrate" / "calibration.csv")
    again = run_cli(["calibrate", str(folder / "seeded.yaml"), "-n", str(SEEDED_N), "--reference-epochs", "3",
                     "--bootstrap", "200"], folder, env, timeout=600).stdout
    # the proxy and both reference seeds: each study's budget already spent
    assert "0 trial(s) to train" not in again and again.count("the trial budget") == 3
    assert "zero-cost scores" not in again
    assert _studies(folder, "seeded-calibrate.db")[1] == before
    pd.testing.assert_frame_equal(pd.read_csv(folder / "results" / "seeded-calibrate" / "calibration.csv"), table)


def test_a_calibration_reuses_another_reference_and_trains_only_its_proxy(seeded):
    folder, env, _ = seeded
    _, before = _studies(folder, "seeded-calibrate.db")
    path = write_space(folder, _seeded_edit(2), name="longer")
    out = run_cli(["calibrate", str(path), "-n", str(SEEDED_N), "--bootstrap", "200",
                   "--reference-study", "seeded-calibrate"], folder, env, timeout=600).stdout
    assert "proxy 2 epoch(s) vs reference 3 epoch(s) (1.5x the proxy's training images), 2 reference seed(s)" in out
    assert "(calibration seeded-calibrate's, reused)" in out
    assert out.count("has its 4 trainings, reused as it is") == 2 and "reference training" not in out
    assert _studies(folder, "seeded-calibrate.db")[1] == before
    assert _studies(folder, "longer-calibrate.db")[1] == {"longer-calibrate-proxy": SEEDED_N}

    first = pd.read_csv(folder / "results" / "seeded-calibrate" / "archs.csv")
    second = pd.read_csv(folder / "results" / "longer-calibrate" / "archs.csv")
    same = ["arch_id", "reference_seed0", "reference_seed1", "reference", "reference_spread", "flag", "reference@2"]
    pd.testing.assert_frame_equal(second[same], first[same])
    assert "proxy@1" in second and "reference@1" not in second
    table = pd.read_csv(folder / "results" / "longer-calibrate" / "calibration.csv").set_index("score")
    if not math.isnan(table.loc["proxy@1", "kendall_tau"]):  # NaN only for a constant curve (tiny data)
        assert table.loc["proxy@1", "kendall_tau"] == pytest.approx(
            sps.kendalltau(second["proxy@1"], second["reference"]).statistic, abs=1e-9)
    assert pd.read_csv(folder / "results" / "longer-calibrate" / "calibration.csv").iloc[0]["kind"] == "ceiling"


def test_a_proxy_on_a_smaller_subset_is_judged_by_the_reused_reference(seeded):
    """The reused reference keeps its own fraction (read from its stamp); only the proxy trains,
    on half the training split."""
    import optuna

    folder, env, _ = seeded

    def half(d):
        _seeded_edit(2)(d)
        d["train"]["fraction"] = 0.5

    path = write_space(folder, half, name="half")
    out = run_cli(["calibrate", str(path), "-n", str(SEEDED_N), "--bootstrap", "200",
                   "--reference-study", "seeded-calibrate"], folder, env, timeout=600).stdout
    assert ("proxy 2 epoch(s) on 50% of the training split vs reference 3 epoch(s) (3x the proxy's training "
            "images), 2 reference seed(s)") in out
    assert out.count("has its 4 trainings, reused as it is") == 2 and "reference training" not in out
    url, studies = _studies(folder, "half-calibrate.db")
    assert studies == {"half-calibrate-proxy": SEEDED_N}
    proxy = optuna.load_study(study_name="half-calibrate-proxy", storage=url)
    assert proxy.user_attrs["train"]["fraction"] == 0.5 and proxy.user_attrs["train"]["epochs"] == 2
    reference = optuna.load_study(study_name="seeded-calibrate-reference",
                                  storage=_studies(folder, "seeded-calibrate.db")[0])
    assert reference.user_attrs["train"]["fraction"] == 1.0 and reference.user_attrs["train"]["epochs"] == 3
    first = pd.read_csv(folder / "results" / "seeded-calibrate" / "archs.csv")
    second = pd.read_csv(folder / "results" / "half-calibrate" / "archs.csv")
    pd.testing.assert_frame_equal(second[["arch_id", "reference"]], first[["arch_id", "reference"]])


@pytest.mark.parametrize("edit, extra, message", [
    (lambda d: d["data"].update(size=480), [],
     "differs from this calibration in its data (data.size 240 there, 480 here)"),
    (None, ["--reference-epochs", "4"],
     "differs from this calibration in its reference epochs (reference epochs 3 there, 4 here)"),
    (None, ["--reference-fraction", "0.5"],
     "differs from this calibration in its recipe (recipe.fraction 1.0 there, 0.5 here)"),
    (None, ["--reference-seeds", "3"],
     "--reference-study seeded-calibrate has 2 reference seed(s) in sqlite:///"),
])
def test_a_reference_of_another_setup_is_refused_in_one_line(seeded, tmp_path, capsys, edit, extra, message):
    from hvsearch.cli import main

    folder, _, _ = seeded
    _, before = _studies(folder, "seeded-calibrate.db")

    def space(d):
        _seeded_edit(1)(d)
        if edit:
            edit(d)

    path = write_space(tmp_path, space, name="other")
    code = main(["calibrate", str(path), "-n", str(SEEDED_N), "--reference-study", "seeded-calibrate",
                 "--studies-dir", str(folder / "studies"), "--results-dir", str(tmp_path / "results"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert message in err
    if "differs" in message:
        assert "study 'seeded-calibrate-reference' in sqlite:///" in err
    assert _studies(folder, "seeded-calibrate.db")[1] == before
    assert not (folder / "studies" / "other-calibrate.db").exists() and not (tmp_path / "results").exists()
