"""Kill a search with SIGKILL mid-run, resume it, and check that nothing finished was lost,
nothing finished was trained again, and the trials that were running were marked and re-queued."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest
from optuna.trial import TrialState

from tests.search.conftest import hvsearch_cmd, load, run_cli, write_space

BUDGET = 6
EPOCHS = 3


def _slower(d):
    # ~1.5 s per epoch on an idle 2-core machine (60 steps of 32 images, 750 to validate), so
    # that the kill lands inside a trial that has checkpointed an epoch: the tiny space's own
    # trials take under a second in all, and a whole search could end between two polls
    d["search"].update(trials=BUDGET, seed=11)
    d["data"].update(size=3000)
    d["train"].update(epochs=EPOCHS, max_steps_per_epoch=60)
    d["search"]["asha"]["reduction_factor"] = 4  # prune little: more trials run to the end


def _snapshot(db) -> list[tuple]:
    """(number, status, intermediate steps) of every trial, read with plain SQLite (no locks
    kept, nothing cached) while the search writes."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        status = dict(con.execute(
            "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a "
            "ON a.trial_id = t.trial_id WHERE a.key = 'status'").fetchall())
        steps = con.execute("SELECT t.number, COUNT(v.step) FROM trials t LEFT JOIN trial_intermediate_values v "
                            "ON v.trial_id = t.trial_id GROUP BY t.number").fetchall()
    except sqlite3.OperationalError:  # the tables are not made yet
        return []
    finally:
        con.close()
    return [(n, status.get(n, '""').strip('"'), k) for n, k in steps]


@pytest.mark.slow
def test_sigkill_then_resume(workdir):
    folder, env = workdir
    space = write_space(folder, _slower, name="killed")
    db = folder / "studies" / "killed.db"
    log = open(folder / "first-run.log", "w")
    proc = subprocess.Popen(hvsearch_cmd("run", str(space)), cwd=folder, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (folder / "first-run.log").read_text()
            assert time.monotonic() < deadline, "the search never reached the kill point"
            snap = _snapshot(db) if db.exists() else []
            finished = [s for s in snap if s[1] in ("trained", "pruned", "failed")]
            mid = [s for s in snap if s[1] == "running" and s[2] >= 1]
            if finished and mid:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, as a crash would
        proc.wait(timeout=30)
    finally:
        time.sleep(3)  # Ray's processes share the driver's fate; clean up any straggler anyway
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()

    before = {t.number: t for t in load(folder, "killed").get_trials()}
    # trials training at the kill (a trial caught while being drawn is marked, not re-queued)
    running = [n for n, t in before.items() if t.state == TrialState.RUNNING and t.user_attrs.get("status") == "running"]
    finished = {n: t for n, t in before.items() if t.state.is_finished()}
    assert running, "a trial was running at the kill"

    out = run_cli(["run", str(space), "--resume"], folder, env).stdout
    assert f"re-queued: {running}" in out

    study = load(folder, "killed")
    after = {t.number: t for t in study.get_trials()}
    # nothing finished was lost or changed
    for n, t in finished.items():
        a = after[n]
        assert (a.state, a.values, a.intermediate_values, a.user_attrs.get("status")) == \
            (t.state, t.values, t.intermediate_values, t.user_attrs.get("status"))
    # the running ones were marked interrupted and re-queued, and their re-runs finished
    for n in running:
        assert after[n].state == TrialState.FAIL and after[n].user_attrs["status"] == "interrupted"
        assert "stopped while the trial was running" in after[n].user_attrs["fail_reason"]
        rerun = [t for t in after.values() if t.user_attrs.get("requeued_from") == n]
        assert len(rerun) == 1 and rerun[0].params == after[n].params
        r = rerun[0]
        assert r.user_attrs["status"] in ("trained", "pruned", "failed")
        assert r.user_attrs["arch_id"] == after[n].user_attrs["arch_id"]
        steps = sorted(r.intermediate_values)
        assert steps == list(range(1, len(steps) + 1)), "its curve is whole (resumed from its checkpoint)"
    # the budget counts each trained architecture once, and none was trained twice
    trained = [t for t in after.values() if t.user_attrs.get("status") in ("trained", "pruned", "failed")]
    assert len(trained) == BUDGET
    ids = [t.user_attrs["arch_id"] for t in trained]
    assert len(ids) == len(set(ids)), "an architecture was trained twice"
    assert not [t for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert study.user_attrs.get("driver") is None, "the driver lock is released"
