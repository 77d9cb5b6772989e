"""``hvsearch finalize``: a search's top architectures re-trained longer with two seeds (real Ray,
real SQLite), the pick by their mean, and a repeat that trains nothing more."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from hvsearch.search import study as st
from hvsearch.search.finalize import study_names, top_trials
from tests.search.conftest import load, run_cli, write_space


def _no_asha(d):
    d["search"]["asha"] = {"grace_period": 3, "reduction_factor": 2}  # every trial trains to the end


@pytest.mark.slow
def test_finalize_retrains_the_top_and_picks_by_the_mean(workdir):
    folder, env = workdir
    space = write_space(folder, _no_asha)
    run_cli(["run", str(space)], folder, env)
    search = load(folder, "tiny")
    top = top_trials(search, 2)
    assert len(top) == 2 and top[0].values[0] >= top[1].values[0]
    from hvsearch.search.results import best_trial

    assert top[0].number == best_trial(search).number  # proxy rank 1 is the search's best.yaml
    assert len({t.user_attrs[st.ATTR_ARCH_ID] for t in top}) == 2

    args = ["finalize", str(space), "--top", "2", "--epochs", "4", "--seeds", "2", "--format", "csv"]
    done = run_cli(args, folder, env)
    table = pd.read_csv(folder / "results" / "tiny" / "finalists.csv")
    printed = pd.read_csv(__import__("io").StringIO(done.stdout))
    assert list(printed["trial"]) == list(table["trial"]) and len(table) == 2
    assert sorted(table["trial"]) == sorted(t.number for t in top)
    assert table["final_mean"].is_monotonic_decreasing and list(table["final_rank"]) == [1, 2]
    for row in table.itertuples():
        assert row.final_mean == pytest.approx((row.final_seed0 + row.final_seed1) / 2)
        assert row.final_spread == pytest.approx(abs(row.final_seed0 - row.final_seed1))
    # one study per seed in the search's storage, each architecture trained once, 4 epochs
    names = study_names("tiny", [t.user_attrs[st.ATTR_ARCH_ID] for t in top], 4, 1.0, 2)
    url = f"sqlite:///{folder / 'studies' / 'tiny.db'}"  # the search's own storage
    for name in names:
        trials = st.load_study(name, url).get_trials()
        assert len(trials) == 2 and {len(t.intermediate_values) for t in trials} == {4}
        assert {t.user_attrs[st.ATTR_ARCH_ID] for t in trials} == {t.user_attrs[st.ATTR_ARCH_ID] for t in top}
    pick = yaml.safe_load((folder / "results" / "tiny" / "final.yaml").read_text())
    assert pick["trial"] == table["trial"][0] and pick["final_top1"] == pytest.approx(table["final_mean"][0])
    assert pick["arch"]["stages"] and pick["final_budget"] == "4 epoch(s) on 100% of the training split"

    # a repeat trains nothing more and reports the same
    again = run_cli(args, folder, env)
    assert pd.read_csv(__import__("io").StringIO(again.stdout)).equals(printed)
    for name in names:
        assert len(st.load_study(name, url).get_trials()) == 2


def test_finalize_before_any_search_is_one_line(workdir):
    folder, env = workdir
    space = write_space(folder)
    import subprocess

    from tests.search.conftest import hvsearch_cmd

    proc = subprocess.run(hvsearch_cmd("finalize", str(space), "--epochs", "3"), cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no study storage" in proc.stderr  # no search yet: named before any budget rule


def _trained(study, spec, value, status="trained", reason=None):
    """A finished trial of ``spec`` in ``study``, as the search or a re-evaluation records it."""
    import json

    import optuna
    from optuna.trial import TrialState

    attrs = {st.ATTR_STATUS: status, st.ATTR_ARCH_ID: spec.arch_id, st.ATTR_ARCH: json.dumps(spec.to_dict()),
             st.ATTR_FLOPS: 1e6}
    if reason:
        attrs[st.ATTR_REASON] = reason
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE if status == "trained" else TrialState.FAIL,
        values=[value] if status == "trained" else None, user_attrs=attrs))


def test_a_finalist_whose_training_failed_ranks_last_and_the_rest_are_picked(tmp_path):
    """A failed re-evaluation is not retried (it counts against its study's budget, as in a
    search), so it must not hold the pick back forever: it ranks last with its reason; while a
    finalist is untrained there is no pick, and a stale final.yaml is removed."""
    import optuna

    from hvsearch.search.calibrate import stratified_sample
    from hvsearch.search.finalize import run_finalize
    from hvsearch.space import load_space
    from tests.search.conftest import TINY

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(TINY)
    a, b, c = (cand.spec for cand in stratified_sample(space, 4, seed=0)[:3])
    url = st.storage_url("tiny", None, tmp_path / "studies")
    opened = st.open_for_run(space, "tiny", url, resume=False)
    for spec, value in ((a, 80.0), (b, 79.0), (c, 78.0)):
        _trained(opened.study, spec, value)
    st.release_host_lock(url, opened.study.study_name)
    names = study_names("tiny", [a.arch_id, b.arch_id, c.arch_id], 10, 1.0, 2)
    storage = st.open_storage(url)
    seed0, seed1 = (optuna.create_study(study_name=n, storage=storage) for n in names)
    _trained(seed0, a, 70.0)
    _trained(seed0, b, 75.0)
    _trained(seed0, c, 0.0, status="failed", reason="the loss became nan at epoch 3")
    _trained(seed1, b, 77.0)
    _trained(seed1, b, 0.0, status="duplicate")  # a later draw that never trained does not undo a result,
    _trained(seed1, b, 0.0, status="interrupted", reason="stopped")  # nor a later unfinished training of it

    results = tmp_path / "results"
    (results / "tiny").mkdir(parents=True)
    (results / "tiny" / "final.yaml").write_text("stale: true\n")
    kw = dict(top=3, epochs=10, fraction=1.0, seeds=2, studies_dir=tmp_path / "studies", results_dir=results,
              train=False)
    done = run_finalize(space, out=__import__("io").StringIO(), **kw)
    assert done.pending == 1 and done.pick is None  # a: seed 1 not trained yet
    assert not (results / "tiny" / "final.yaml").exists()
    row = done.table.set_index("arch_id")
    assert row.loc[c.arch_id, "failed"] == "seed 0: the loss became nan at epoch 3"
    assert row.loc[b.arch_id, "final_seed1"] == 77.0 and row.loc[b.arch_id, "failed"] == ""

    _trained(seed1, a, 72.0)
    said = __import__("io").StringIO()
    done = run_finalize(space, out=said, **kw)
    assert done.pending == 0 and done.pick["arch_id"] == b.arch_id and done.pick["final_mean"] == 76.0
    assert list(done.table["arch_id"]) == [b.arch_id, a.arch_id, c.arch_id]  # the failed one last
    assert f"finalist trial 2 ({done.table.iloc[2]['mixers']}) failed to train, ranked last" in said.getvalue()
    final = yaml.safe_load((results / "tiny" / "final.yaml").read_text())
    assert final["arch_id"] == b.arch_id
    # b (75, 77) leads a (70, 72) by 5 points; each varies by sqrt(2) between seeds, estimated with
    # 2 degrees of freedom: a difference of two 2-seed means needs t(0.975, 2) * sqrt(2) * 1 = 6.09
    from scipy import stats

    bound = stats.t.ppf(0.975, 2) * 2 ** 0.5
    assert final["lead"] == 5.0 and final["seed_sd"] == pytest.approx(2 ** 0.5)
    assert final["threshold"] == pytest.approx(bound) and final["separated"] is False
    assert done.margin == {"lead": 5.0, "seed_sd": pytest.approx(2 ** 0.5), "threshold": pytest.approx(bound),
                           "separated": False}


def test_a_lead_within_the_seeds_noise_is_not_separated():
    from hvsearch.search.finalize import margin

    table = pd.DataFrame({"final_seed0": [89.3, 89.0, 88.0], "final_seed1": [89.3, 89.3, 89.0],
                          "final_mean": [89.3, 89.15, 88.5]})
    from scipy import stats

    m = margin(table)
    # s.d. pooled over the three (3 degrees of freedom): sqrt(mean(0, 0.045, 0.5)) = 0.43; a
    # difference of two 2-seed means needs t(0.975, 3) * 0.43 * 1 = 1.36 > 0.15
    sd = (0.545 / 3) ** 0.5
    assert m["lead"] == pytest.approx(0.15) and m["seed_sd"] == pytest.approx(sd)
    assert m["threshold"] == pytest.approx(stats.t.ppf(0.975, 3) * sd) and m["separated"] is False
    far = margin(table.assign(final_seed0=[95.0, 89.0, 88.0], final_seed1=[95.2, 89.3, 88.1],
                              final_mean=[95.1, 89.15, 88.05]))
    assert far["lead"] == pytest.approx(5.95) and far["separated"] is True
    assert margin(table.assign(final_mean=[89.3, float("nan"), float("nan")])) is None
    assert margin(table[["final_seed0", "final_mean"]]) is None  # one seed: no noise estimate


def test_finalize_names_too_long_for_a_study_are_refused_before_training(tmp_path):
    from hvsearch.errors import StudyError
    from hvsearch.search.calibrate import stratified_sample
    from hvsearch.search.finalize import run_finalize
    from hvsearch.space import load_space
    from tests.search.conftest import TINY

    space = load_space(TINY)
    long = "x" * 120
    url = st.storage_url(long, None, tmp_path / "studies")
    opened = st.open_for_run(space, long, url, resume=False)
    for cand, value in zip(stratified_sample(space, 4, seed=0)[:2], (80.0, 79.0)):
        _trained(opened.study, cand.spec, value)
    st.release_host_lock(url, opened.study.study_name)
    with pytest.raises(StudyError, match="longer than a study name may be"):
        run_finalize(space, study=long, epochs=10, studies_dir=tmp_path / "studies", results_dir=None)


def test_finalize_names_keep_every_digit_of_the_fraction():
    assert study_names("s", ["a"], 10, 0.1234567, 1) != study_names("s", ["a"], 10, 0.1234568, 1)
    assert study_names("s", ["a"], 10, 0.5, 1) == ["s-final-e10-f0.5-" + study_names("s", ["a"], 10, 0.5, 1)[0][-14:]]


def test_the_budget_rule_and_a_no_train_run_of_the_cli(tmp_path, capsys):
    """A re-evaluation no longer than the proxy is refused in one line; --no-train before any
    training prints the table, says what is left and exits 1."""
    import optuna

    from hvsearch.cli import main
    from hvsearch.search.calibrate import stratified_sample
    from hvsearch.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space_file = write_space(tmp_path)
    space = load_space(space_file)
    url = st.storage_url("tiny", None, tmp_path / "studies")
    opened = st.open_for_run(space, "tiny", url, resume=False)
    for cand, value in zip(stratified_sample(space, 4, seed=0)[:3], (80.0, 79.0, 78.0)):
        _trained(opened.study, cand.spec, value)
    st.release_host_lock(url, "tiny")
    dirs = ["--studies-dir", str(tmp_path / "studies"), "--results-dir", str(tmp_path / "results")]
    proxy = int(space.train.epochs)
    assert main(["finalize", str(space_file), "--epochs", str(proxy), *dirs]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"--epochs x --fraction ({proxy} x 1) must exceed the search's proxy ({proxy} x 1)" in err

    assert main(["finalize", str(space_file), "--top", "3", "--no-train", *dirs]) == 1
    out = capsys.readouterr().out
    assert "3 finalist(s) have no result yet: run it again to train the rest" in out
    table = pd.read_csv(tmp_path / "results" / "tiny" / "finalists.csv")
    assert len(table) == 3 and table["final_mean"].isna().all() and list(table["proxy_top1"]) == [80.0, 79.0, 78.0]
    assert not (tmp_path / "results" / "tiny" / "final.yaml").exists()
