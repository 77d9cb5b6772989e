"""``hvsearch calibrate``: the stratified sample, and the whole command end to end on the tiny
space (real Ray trials, real SQLite studies), re-run to check it continues instead of retraining."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from scipy import stats as sps

from hvsearch.arch import ModelSpec
from hvsearch.proxies.calibrate import CalibrationError, count_params, dominant_mixer, stratified_sample
from hvsearch.space import load_space
from tests.search.conftest import TINY, run_cli, write_space

N = 6
PROXY_EPOCHS = 2
REF_EPOCHS = 4


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
        assert c.family == dominant_mixer(c.spec)
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


def test_calibrate_end_to_end_writes_the_table_and_continues(workdir):
    folder, env = workdir
    path = write_space(folder, _short, name="cal")
    args = ["calibrate", str(path), "-n", str(N), "--reference-epochs", str(REF_EPOCHS), "--bootstrap", "200"]
    out = run_cli(args, folder, env, timeout=600).stdout
    assert f"{N} architectures, proxy {PROXY_EPOCHS} epoch(s) vs reference {REF_EPOCHS} epoch(s) (2x)" in out
    assert "Kendall tau [95% CI]" in out and "written results/cal-calibrate/calibration.csv" in out

    import optuna

    storage = f"sqlite:///{folder / 'studies' / 'cal-calibrate.db'}"
    proxy = optuna.load_study(study_name="cal-calibrate-proxy", storage=storage)
    ref = optuna.load_study(study_name="cal-calibrate-reference", storage=storage)
    for study, epochs in ((proxy, PROXY_EPOCHS), (ref, REF_EPOCHS)):
        trials = study.get_trials()
        assert len(trials) == N and all(t.state == TrialState.COMPLETE for t in trials)
        assert all(sorted(t.intermediate_values) == list(range(1, epochs + 1)) for t in trials)
    assert {t.user_attrs["arch_id"] for t in proxy.trials} == {t.user_attrs["arch_id"] for t in ref.trials}
    assert len(proxy.user_attrs["zero_cost"]) == N

    res = folder / "results" / "cal-calibrate"
    archs = pd.read_csv(res / "archs.csv")
    table = pd.read_csv(res / "calibration.csv")
    assert len(archs) == N and archs["arch_id"].is_unique
    assert set(archs["family"]) == {"cmt_attn", "hire"}
    ref_acc = {t.user_attrs["arch_id"]: t.values[0] for t in ref.trials}
    assert archs["reference"].tolist() == [ref_acc[a] for a in archs["arch_id"]]
    assert set(table["score"]) == {"synflow", "naswot", "grad_norm", "snip", "params", "flops", "proxy@1", "proxy",
                                   "reference@2"}
    ref_curve = {t.user_attrs["arch_id"]: t.intermediate_values[2] for t in ref.trials}
    assert archs["reference@2"].tolist() == [ref_curve[a] for a in archs["arch_id"]]
    assert (table["n"] == N).all()
    for row in table.itertuples():
        if math.isnan(row.kendall_tau):  # a score constant over the sample (possible on tiny data)
            continue
        assert row.tau_lo <= row.kendall_tau + 1e-9 and row.kendall_tau <= row.tau_hi + 1e-9
        expected = sps.kendalltau(archs[row.score], archs["reference"]).statistic
        assert math.isclose(row.kendall_tau, expected, abs_tol=1e-9)
        rho = sps.spearmanr(archs[row.score], archs["reference"]).statistic
        assert math.isclose(row.spearman_rho, rho, abs_tol=1e-9)
    assert (res / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run trains nothing, scores nothing again, and gives the same table
    again = run_cli(args, folder, env, timeout=600).stdout
    assert "0 trial(s) to train" not in again and again.count("the trial budget") == 2
    assert "zero-cost scores" not in again
    pd.testing.assert_frame_equal(pd.read_csv(res / "calibration.csv"), table)


def test_calibrate_refuses_a_reference_no_longer_than_the_proxy(tmp_path, capsys):
    from hvsearch.cli import main

    path = write_space(tmp_path, _short, name="bad")
    code = main(["calibrate", str(path), "--reference-epochs", "2", "--studies-dir", str(tmp_path / "studies")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--reference-epochs must be an integer above the proxy's train.epochs 2" in err
    assert "got 2" in err
    assert not (tmp_path / "studies").exists(), "nothing is created for a refused run"
