"""The driver's draws, without a Ray cluster: a model-based sampler that keeps proposing
architectures the rules reject gives way to random draws, so the search goes on."""
from __future__ import annotations

import subprocess
import sys
import warnings
from types import SimpleNamespace

import optuna
from ray.tune.search import Searcher

from hvsearch.search import study as st
from hvsearch.search.runner import _cost_fn
from hvsearch.search.searcher import RANDOM_AFTER_REJECTS, StudySearcher
from hvsearch.space import load_space
from tests.search.conftest import ROOT


def test_a_sampler_stuck_on_rejected_draws_gives_way_to_random_ones(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / "spaces" / "hybrid.yaml")  # stage 2 is 2x2 at 32 px: Hire-MLP region 4 breaks a rule
    url = st.storage_url("stuck", None, tmp_path / "studies")
    opened = st.open_for_run(space, "stuck", url, resume=False)
    # a real Optuna sampler stuck where the multi-objective TPE got stuck on spaces/fashion.yaml
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stuck = optuna.samplers.PartialFixedSampler(
            {"stages.2.mixer.type": "hire", "stages.2.mixer.hire.region": 4}, optuna.samplers.RandomSampler(seed=0))
    lines: list[str] = []
    searcher = StudySearcher(space, opened, stuck, _cost_fn(space), epochs=2, slots=2, say=lines.append)
    configs = [searcher.suggest("tune-a"), searcher.suggest("tune-b")]
    assert all(c not in (None, Searcher.FINISHED) for c in configs)

    trials = opened.study.get_trials()
    for config in configs:
        admitted = trials[config["optuna_trial"]]
        assert admitted.user_attrs["status"] == "running" and admitted.user_attrs["sampled_by"] == "random"
        # the random draw is an ordinary trial of the study: its knobs are its params
        assert admitted.params["stages.2.mixer.type"] != "hire" or admitted.params["stages.2.mixer.hire.region"] == 2
    rejected = [t for t in trials if t.user_attrs.get("status") == "invalid"]
    stuck_ones = [t for t in rejected if "sampled_by" not in t.user_attrs]
    assert len(stuck_ones) == 2 * RANDOM_AFTER_REJECTS  # each slot gave the stuck sampler its turns first
    assert all(t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["fail_reason"] ==
               "stages.2.mixer.region must be <= the stage's feature size 2, got 4" for t in stuck_ones)
    said = [line for line in lines if "drawing at random" in line]
    assert said == [f"the tpe sampler's last {RANDOM_AFTER_REJECTS} draws were rejected: drawing at random "
                    "until one is admitted"] * 2
    assert searcher._ot_study.sampler is stuck  # the model-based sampler is back for the next trial


def test_the_idle_hook_runs_once_when_a_slot_frees_with_nothing_left_to_start(tmp_path):
    """The driver learns when the budget is handed out and a slot is free (the runner then
    prepares the results' imports on that idle core): once, not before the last trial started."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / "spaces" / "tiny.yaml")
    url = st.storage_url("idle", None, tmp_path / "studies")
    opened = st.open_for_run(space, "idle", url, resume=False)
    calls = []
    searcher = StudySearcher(space, opened, st.make_sampler(space), _cost_fn(space), epochs=1, slots=2,
                             on_idle=lambda: calls.append(len(calls)))
    first = searcher.suggest("tune-a")
    assert first not in (None, Searcher.FINISHED) and calls == []
    second = searcher.suggest("tune-b")
    assert second not in (None, Searcher.FINISHED) and calls == []  # the last trial of the budget
    assert searcher.suggest("tune-c") is None  # both still running: wait, nothing to start
    assert calls == [0]
    assert searcher.suggest("tune-d") is None and calls == [0]  # once

    # the end of a search, with nothing live, is not idle time: no hook (Ray shuts down next)
    opened = st.open_for_run(space, "idle-end", st.storage_url("idle-end", None, tmp_path / "studies"), resume=False)
    ended = []
    searcher = StudySearcher(space, opened, st.make_sampler(space), _cost_fn(space), epochs=1, slots=1,
                             on_idle=lambda: ended.append(1))
    assert searcher.suggest("tune-a") not in (None, Searcher.FINISHED)
    searcher.tune_trials["tune-a"] = SimpleNamespace(status="TERMINATED")  # Tune ended it
    assert searcher.suggest("tune-b") == Searcher.FINISHED and ended == []


def test_prepare_results_imports_the_plotting_library_once_in_a_thread():
    probe = ("import sys\n"
             "from hvsearch.search import results\n"
             "before = 'matplotlib' in sys.modules\n"
             "results.prepare_results(); results.prepare_results()\n"
             "results.join_prepared()\n"
             "print(before, len(results._PREPARED), results._PREPARED[0].name, not results._PREPARED[0].is_alive(),\n"
             "      'matplotlib.figure' in sys.modules, 'matplotlib.backends.backend_agg' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1", "hvsearch-results-import", "True", "True", "True"]


def test_a_grid_with_a_rejected_candidate_ends_when_every_candidate_is_drawn(tmp_path):
    """A candidate set (calibrate, scale --grid) whose one candidate is rejected (here: its cost
    cannot be counted; a latency limit alike) never reaches its trial budget: the search ends
    once every candidate was drawn, instead of drawing repeats until the rejections-in-a-row
    limit, and a re-run draws nothing."""
    from hvsearch.search.calibrate import candidate_space, stratified_sample

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / "spaces" / "tiny.yaml")
    candidates = stratified_sample(space, 4, seed=0, pool_factor=3)
    grid = candidate_space(space, candidates, name="grid", epochs=1)
    bad = candidates[0].spec.arch_id
    counted = _cost_fn(grid)

    def cost(spec):
        if spec.arch_id == bad:
            raise RuntimeError("over the limit")
        return counted(spec)

    url = st.storage_url("grid", None, tmp_path / "studies")
    for run in (1, 2):
        opened = st.open_for_run(grid, "grid", url, resume=False)
        searcher = StudySearcher(grid, opened, st.make_sampler(grid), cost, epochs=1, slots=4 - opened.done)
        handed = []
        while (config := searcher.suggest(f"r{run}-{len(handed)}")) is not Searcher.FINISHED:
            handed.append(config["arch_id"])
            searcher.on_trial_complete(f"r{run}-{len(handed) - 1}", {"epoch": 1, "val_top1": 50.0})
        assert sorted(handed) == ([] if run == 2 else sorted(c.spec.arch_id for c in candidates[1:]))
        assert searcher.exhausted.startswith("every candidate was drawn")
        trials = opened.study.get_trials()
        assert len(trials) == 4  # three trained, one rejected; no repeats drawn
        assert sorted(t.user_attrs["status"] for t in trials) == ["invalid", "trained", "trained", "trained"]
        opened.study.set_user_attr("driver", None)  # this driver is done: the next run takes the study
