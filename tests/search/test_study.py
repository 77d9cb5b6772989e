"""The study bookkeeping without Ray: a study remembers its space, one driver at a time, and a
dead driver's running trials are marked interrupted and re-queued."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hvsearch.errors import SpaceError, StudyError
from hvsearch.search import study as st
from hvsearch.space import load_space, parse_space
from tests.search.conftest import TINY


@pytest.fixture
def url(tmp_path):
    return st.storage_url("tiny", None, tmp_path / "studies")


def test_a_study_keeps_its_space(url):
    space = load_space(TINY)
    opened = st.open_for_run(space, "tiny", url, resume=False)
    assert opened.created and opened.done == 0
    opened.study.set_user_attr("driver", None)
    # budgets, resources and the sampler may change between runs ...
    st.open_for_run(space.with_overrides(trials=9, sampler="tpe", max_concurrent=1), "tiny", url, resume=True)
    opened.study.set_user_attr("driver", None)
    # ... the architectures, training, data, objectives and constraints may not
    data = yaml.safe_load(TINY.read_text())
    data["train"]["epochs"] = 5
    with pytest.raises(StudyError, match="made from a different space"):
        st.open_for_run(parse_space(yaml.safe_dump(data)), "tiny", url, resume=False)


def test_one_driver_at_a_time(url):
    space = load_space(TINY)
    opened = st.open_for_run(space, "tiny", url, resume=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        opened.study.set_user_attr("driver", {"host": os.uname().nodename, "pid": other.pid, "beat": time.time()})
        with pytest.raises(StudyError, match=f"being run by pid {other.pid}"):
            st.open_for_run(space, "tiny", url, resume=True)
    finally:
        other.kill()
        other.wait()
    st.open_for_run(space, "tiny", url, resume=True)  # its driver is dead: the study is free


def test_a_driver_on_this_machine_holds_the_study_until_it_ends(url, tmp_path):
    """The machine-wide lock: another process driving the study (here one that opened it and
    sleeps, its heartbeat cleared as a stopped driver's would go stale) refuses this one at once,
    and once it is killed (kill -9: the kernel lets go of its lock) the study is free."""
    space = load_space(TINY)
    code = ("import sys, time; from hvsearch.search import study as st; from hvsearch.space import load_space; "
            "o = st.open_for_run(load_space(sys.argv[1]), 'tiny', sys.argv[2], resume=False); "
            "o.study.set_user_attr('driver', None); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(TINY), url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StudyError, match=f"'tiny' is being run by pid {holder.pid} on this machine"):
            st.open_for_run(space, "tiny", url, resume=True)
    finally:
        holder.kill()
        holder.wait()
    opened = st.open_for_run(space, "tiny", url, resume=True)
    with st.Heartbeat(opened):  # a run's end releases it: another process may take the study
        pass
    taker = subprocess.run([sys.executable, "-c", code.replace("time.sleep(120)", "pass"), str(TINY), url],
                           capture_output=True, text=True, timeout=120)
    assert taker.returncode == 0 and taker.stdout.strip() == "held", taker.stderr


def test_dead_drivers_trials_are_requeued(url):
    space = load_space(TINY)
    opened = st.open_for_run(space, "tiny", url, resume=False)
    study = opened.study
    training = study.ask()
    training.suggest_categorical("stages.0.mixer.type", ["cmt_attn", "hire"])
    training.set_user_attr(st.ATTR_STATUS, "running")
    drawing = study.ask()  # caught while being drawn: never trained
    drawing.suggest_categorical("stages.0.mixer.type", ["cmt_attn", "hire"])
    done = study.ask()
    done.set_user_attr(st.ATTR_STATUS, "trained")
    study.tell(done, 12.5)
    study.set_user_attr("driver", {"host": "elsewhere", "pid": 1, "beat": time.time() - 3600})

    again = st.open_for_run(space, "tiny", url, resume=True)
    assert again.requeued == [training.number] and again.done == 1
    trials = again.study.get_trials()
    assert trials[training.number].state == TrialState.FAIL
    assert trials[training.number].user_attrs[st.ATTR_STATUS] == "interrupted"
    assert trials[drawing.number].state == TrialState.FAIL
    assert "being drawn" in trials[drawing.number].user_attrs[st.ATTR_REASON]
    waiting = again.study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[st.ATTR_REQUEUED_FROM] == training.number
    # the next ask gets the re-queued parameters
    nxt = again.study.ask()
    assert nxt.suggest_categorical("stages.0.mixer.type", ["cmt_attn", "hire"]) == training.params["stages.0.mixer.type"]


def test_sampler_options_are_checked(url):
    data = yaml.safe_load(TINY.read_text())
    data["search"]["sampler"] = "tpe"
    data["search"]["sampler_options"] = {"n_startup_trial": 3}
    with pytest.raises(SpaceError, match="search.sampler_options.n_startup_trial is not an argument of Optuna's TPESampler"):
        st.make_sampler(parse_space(yaml.safe_dump(data)))
    data["search"]["sampler_options"] = {"n_startup_trials": 3}
    sampler = st.make_sampler(parse_space(yaml.safe_dump(data)))
    assert isinstance(sampler.inner, optuna.samplers.TPESampler) and sampler.n_startup == 3
    assert sampler.inner._n_startup_trials == 0  # the start is counted by the wrapper, over trained trials
    for bad in (-1, 2.5, True):
        data["search"]["sampler_options"] = {"n_startup_trials": bad}
        with pytest.raises(SpaceError, match="search.sampler_options.n_startup_trials must be an integer >= 0"):
            st.make_sampler(parse_space(yaml.safe_dump(data)))


def _draw(study, status, state, value=None):
    t = study.ask()
    x = (t.suggest_float("x", 0.0, 1.0), t.suggest_categorical("c", ["a", "b", "c"]))
    t.set_user_attr(st.ATTR_STATUS, status)
    study.tell(t, value, state=state)
    return x


def test_tpes_random_start_counts_trained_architectures_not_rejected_draws():
    """n_startup_trials: 3 means three trained architectures drawn at random, however many draws
    were rejected (told PRUNED) or duplicates (FAIL) in between; then TPE models every trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = yaml.safe_load(TINY.read_text())
    data["search"].update(sampler="tpe", seed=7, sampler_options={"n_startup_trials": 3})
    study = optuna.create_study(sampler=st.make_sampler(parse_space(yaml.safe_dump(data))))
    fates = [("invalid", TrialState.PRUNED, None), ("trained", TrialState.COMPLETE, 0.5),
             ("invalid", TrialState.PRUNED, None), ("duplicate", TrialState.FAIL, None),
             ("pruned", TrialState.PRUNED, None), ("invalid", TrialState.PRUNED, None),
             ("trained", TrialState.COMPLETE, 0.9)]
    drawn = [_draw(study, *fate) for fate in fates]
    assert st.trained_count(study) == 3
    # Optuna's TPE would have left its start after 3 COMPLETE/PRUNED trials (the 3rd draw); here all
    # seven draws so far are the random sampler's, with the search's seed, in order
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    assert drawn == [_draw(reference, "trained", TrialState.COMPLETE, 0.0) for _ in fates]
    # three trained: the next draws are TPE's, which no longer follow the random sequence
    after = [_draw(study, "trained", TrialState.COMPLETE, 0.1) for _ in range(3)]
    assert after != [_draw(reference, "trained", TrialState.COMPLETE, 0.0) for _ in range(3)]


def test_the_define_by_run_timing_warning_is_filtered_only_in_our_searcher(monkeypatch):
    """Ray's "Define-by-run function ... took N seconds" is about Optuna's sampling time here; the
    stock OptunaSearch still warns (so this test can fail), StudySearcher does not."""
    import warnings

    import optuna
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.optuna import optuna_search

    from hvsearch.search.searcher import StudySearcher

    monkeypatch.setattr(optuna_search, "DEFINE_BY_RUN_WARN_THRESHOLD_S", -1.0)
    study = optuna.create_study()
    searcher = StudySearcher.__new__(StudySearcher)  # only the method under test is used

    def define(trial):
        return {"x": trial.suggest_int("x", 0, 3)}

    for cls, expected in ((OptunaSearch, 1), (StudySearcher, 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = cls._suggest_from_define_by_run_func(searcher, define, study.ask())
        assert config["x"] in range(4)
        assert sum("Define-by-run function" in str(w.message) for w in caught) == expected


@pytest.mark.parametrize("name", ["../../../outside", "a/b", ".hidden", "x..y", "", "a" * 200, "name with space"])
def test_a_study_name_that_is_not_a_name_is_refused_before_any_file(tmp_path, capsys, name):
    from hvsearch.cli import main

    code = main(["results", name, "--studies-dir", str(tmp_path / "studies")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is not a name" in err
    assert not any(tmp_path.iterdir()), "nothing created"


def test_results_refuse_an_sqlite_file_that_is_not_an_optuna_storage_and_leave_it_alone(tmp_path, capsys):
    import sqlite3

    from hvsearch.cli import main

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    before = other.read_bytes()
    code = main(["results", "x", "--storage", str(other), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "is an SQLite database but not an Optuna storage (its tables: people)" in err
    assert other.read_bytes() == before and not (tmp_path / "results").exists()
    (tmp_path / "text.db").write_text("not a database at all")
    assert main(["results", "x", "--storage", str(tmp_path / "text.db")]) == 2
    assert "is not an SQLite database" in capsys.readouterr().err


def test_storage_urls_are_printed_without_their_password():
    from hvsearch.search.study import masked

    assert masked("postgresql://user:s3cr:et@db.example:5432/hv") == "postgresql://user:***@db.example:5432/hv"
    assert masked("mysql+pymysql://u:p@host/db") == "mysql+pymysql://u:***@host/db"
    assert masked("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert masked("postgresql://user@host/db") == "postgresql://user@host/db"


def test_two_processes_creating_one_new_storage_at_once_both_succeed(tmp_path):
    """Optuna creates its tables on first open; without the folder lock the second process died
    with "table ... already exists"."""
    import subprocess
    import sys

    code = ("import sys; from hvsearch.search.study import open_storage; import optuna; "
            "s = open_storage(sys.argv[1]); optuna.create_study(study_name=sys.argv[2], storage=s); print('ok')")
    url = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", code, url, f"s{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(6)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-300:] for _, err in results]
    import optuna

    assert sorted(s.study_name for s in optuna.get_all_study_summaries(url)) == [f"s{i}" for i in range(6)]


def test_sqlite_studies_commit_to_a_write_ahead_log_and_other_readers_see_every_write(tmp_path):
    import sqlite3

    from hvsearch.search.study import open_storage

    path = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{path}")
    with storage.engine.connect() as conn:  # every connection of the study's engine
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    study = optuna.create_study(study_name="w", storage=storage)
    trial = study.ask()
    trial.suggest_int("depth", 1, 4)
    trial.set_user_attr("arch", "x")
    study.tell(trial, 0.5)
    # a reader outside the engine (optuna-dashboard, another run) sees the committed trial while
    # the writer is open, and the mode stays with the file
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == 1
    assert optuna.load_study(study_name="w", storage=f"sqlite:///{path}").trials[0].user_attrs == {"arch": "x"}
