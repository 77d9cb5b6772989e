"""``search.prescreen``: a real search (Ray, SQLite) where a zero-cost score ranks each pool of
draws, only the best train, and the skipped ones are in the study with their score and reason."""
from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from hvsearch.arch import ModelSpec
from hvsearch.errors import SpaceError
from hvsearch.space import PRESCREEN_SCORES, parse_space
from tests.search.conftest import TINY, load, run_cli, write_space

TRIALS = 4
POOL = 4


def _prescreened(d):
    d["search"].update(trials=TRIALS, seed=1)
    d["search"]["prescreen"] = {"score": "synflow", "keep": 0.5, "pool": POOL, "batch_size": 16}


def test_prescreen_trains_only_the_best_of_each_pool_and_records_the_rest(workdir):
    from hvsearch.zerocost import data_batch, score
    from hvsearch.space import load_space

    folder, env = workdir
    path = write_space(folder, _prescreened, name="pre")
    out = run_cli(["run", str(path)], folder, env).stdout
    assert "pre-screen: synflow ranks each pool of 4 draws, the best 2 train" in out
    assert out.count("pre-screen (synflow): trial ") == 2 and out.count(" kept; trial ") == 2

    trials = load(folder, "pre").get_trials()
    trained = [t for t in trials if t.user_attrs["status"] in ("trained", "pruned", "failed")]
    skipped = [t for t in trials if t.user_attrs["status"] == "skipped"]
    assert len(trained) == TRIALS, "the trial budget counts trained trials only"
    # two full pools of 4, 2 trained from each (no draw of this space is invalid or a repeat)
    assert len(skipped) == TRIALS and len(trials) == 2 * POOL

    pools: dict[tuple, list] = {}
    for t in trials:
        pre = t.user_attrs["prescreen"]
        assert pre["score"] == "synflow" and pre["kept"] == 2 and t.number in pre["pool"]
        pools.setdefault(tuple(pre["pool"]), []).append(t)
    assert sorted(len(p) for p in pools.values()) == [POOL, POOL]
    for members in pools.values():
        ranked = sorted(members, key=lambda t: t.user_attrs["prescreen"]["rank"])
        assert [t.user_attrs["prescreen"]["rank"] for t in ranked] == [1, 2, 3, 4]
        values = [float(t.user_attrs["prescreen"]["value"]) for t in ranked]
        assert values == sorted(values, reverse=True)
        assert all(t.user_attrs["status"] != "skipped" for t in ranked[:2])
        assert all(t.user_attrs["status"] == "skipped" for t in ranked[2:])

    for t in skipped:
        assert t.state == TrialState.PRUNED, "skipped: PRUNED, so the dashboard and TPE see it"
        assert not t.intermediate_values and "history" not in t.user_attrs, "never trained"
        assert t.user_attrs["fail_reason"].startswith("pre-screen: synflow ")
        assert "the best 2 train" in t.user_attrs["fail_reason"]

    # the recorded score is the real one: recomputed here on the same data batch
    space = load_space(path)
    x, y, classes = data_batch(space.data, 32, 16)
    t = skipped[0]
    spec = ModelSpec.from_json(t.user_attrs["arch"])
    again = score(spec, "synflow", (x, y), num_classes=classes, resolution=32)
    assert math.isclose(again, float(t.user_attrs["prescreen"]["value"]), rel_tol=1e-9)

    # `results` lists the trained ones; the skipped are in trials.csv with their score
    import pandas as pd

    df = pd.read_csv(folder / "results" / "pre" / "trials.csv")
    assert (df["status"] == "skipped").sum() == TRIALS
    assert df.loc[df["status"] == "skipped", "prescreen_rank"].min() == 3


def test_prescreen_names_match_the_registered_scores():
    from hvsearch.zerocost import score_names

    assert tuple(score_names()) == PRESCREEN_SCORES


@pytest.mark.parametrize("bad, key, rule", [
    ({"score": "zen"}, "search.prescreen.score", "must be one of synflow"),
    ({"keep": 1.0}, "search.prescreen.keep", "must be a fraction in (0, 1)"),
    ({"keep": 0.9, "pool": 4}, "search.prescreen.keep", "must leave some of a pool of 4 untrained"),
    ({"pool": 1}, "search.prescreen.pool", "must be an integer >= 2"),
    ({"batch_size": 1}, "search.prescreen.batch_size", "must be an integer >= 2"),
    ({"top": 3}, "search.prescreen.top", "is not a search.prescreen setting"),
])
def test_bad_prescreen_settings_name_key_rule_and_value(bad, key, rule):
    import yaml

    d = yaml.safe_load(TINY.read_text())
    d["search"]["prescreen"] = {"score": "synflow", "keep": 0.5, "pool": 4, **bad}
    with pytest.raises(SpaceError) as e:
        parse_space(yaml.safe_dump(d))
    msg = str(e.value)
    assert msg.startswith(key) and rule in msg and "got" in msg


def test_prescreen_defaults_and_kept_count():
    import yaml

    d = yaml.safe_load(TINY.read_text())
    d["search"]["prescreen"] = {"keep": 0.3, "pool": 5}
    pre = parse_space(yaml.safe_dump(d)).search.prescreen
    assert (pre.score, pre.batch_size, pre.kept) == ("synflow", 64, 2)


def _searcher(tmp_path, slots: int):
    """A StudySearcher on a fresh study of the pre-screened tiny space, driven directly (no Ray
    cluster: the searcher is the driver-side half of a run)."""
    from hvsearch.search import study as st
    from hvsearch.search.runner import _cost_fn
    from hvsearch.search.searcher import StudySearcher
    from hvsearch.space import load_space

    space = load_space(write_space(tmp_path, _prescreened, name="direct"))
    url = st.storage_url("direct", None, tmp_path / "studies")
    opened = st.open_for_run(space, "direct", url, resume=False)
    lines: list[str] = []
    searcher = StudySearcher(space, opened, st.make_sampler(space), _cost_fn(space), epochs=3,
                             slots=slots, say=lines.append)
    return searcher, opened, lines


def test_kept_candidates_the_search_never_started_are_requeued(tmp_path):
    searcher, opened, lines = _searcher(tmp_path, slots=3)
    config = searcher.suggest("tune-a")  # draws and scores a pool of 4, keeps 2, hands out the best
    assert config["optuna_trial"] in range(POOL)
    assert len(lines) == 1 and lines[0].startswith("pre-screen (synflow): ") and " kept; " in lines[0]
    held = searcher.release_queue("the search stopped before it started")
    assert len(held) == 1

    trials = opened.study.get_trials()
    status = {t.number: t.user_attrs.get("status") for t in trials[:POOL]}
    assert sorted(status.values()) == ["interrupted", "running", "skipped", "skipped"]
    (n_held,) = held
    assert status[n_held] == "interrupted" and trials[n_held].state == TrialState.FAIL
    assert trials[n_held].user_attrs["prescreen"]["rank"] == 2
    # re-queued: the next ask of the study gets the held candidate's exact knobs
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == {} and waiting[0].system_attrs["fixed_params"] == trials[n_held].params


def test_the_last_slot_keeps_only_one_candidate(tmp_path):
    searcher, opened, _ = _searcher(tmp_path, slots=1)
    searcher.suggest("tune-a")
    assert searcher.release_queue("unused") == []
    skipped = [t for t in opened.study.get_trials() if t.user_attrs.get("status") == "skipped"]
    assert len(skipped) == POOL - 1
    assert all(t.user_attrs["prescreen"]["kept"] == 1 for t in skipped)


def test_a_requeued_trial_resumes_unscored_before_any_new_pool(tmp_path):
    """A trial a stopped run left (training, or kept and not started) is handed out first and
    trains: it is not drawn into a pool where a low score would skip it (and strand its
    checkpoint)."""
    searcher, opened, lines = _searcher(tmp_path, slots=3)
    searcher.suggest("tune-a")
    (n_held,) = searcher.release_queue("the search stopped before it started")
    held_arch = opened.study.trials[n_held].user_attrs["arch_id"]
    searcher._prescreen_score = lambda config: (-1.0 if config["arch_id"] == held_arch else 1.0, None)
    config = searcher.suggest("tune-b")
    assert config["arch_id"] == held_arch
    resumed = opened.study.trials[config["optuna_trial"]]
    assert resumed.user_attrs["requeued_from"] == n_held and resumed.user_attrs["status"] == "running"
    assert "prescreen" not in resumed.user_attrs and len(lines) == 1  # no pool was drawn for it
    searcher.suggest("tune-c")  # the next slot draws a new pool as before
    assert len(lines) == 2 and lines[1].startswith("pre-screen (synflow): ")
