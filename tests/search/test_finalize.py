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


def test_finalize_refuses_a_budget_no_larger_than_the_proxy(workdir):
    folder, env = workdir
    space = write_space(folder)
    import subprocess

    from tests.search.conftest import hvsearch_cmd

    proc = subprocess.run(hvsearch_cmd("finalize", str(space), "--epochs", "3"), cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no study storage" in proc.stderr  # no search yet: named before any budget rule
