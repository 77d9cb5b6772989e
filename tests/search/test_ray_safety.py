"""The local Ray instance a run starts is private and cleaned up: every server it starts listens
on the loopback address only, with Ray's token authentication on; a driver killed with SIGKILL
leaves processes that the next run of the study ends; a Ray that cannot start is one line and no
empty study."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.search.conftest import hvsearch_cmd, load, write_space


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _tree(pid: int):
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _listeners(procs) -> dict[tuple[str, int], str]:
    import psutil

    found = {}
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found[(c.laddr.ip, c.laddr.port)] = p.name()
        except psutil.Error:
            pass  # the process ended between the listing and this look
    return found


def _slow_trials(d):
    # long enough trials to act on one mid-run: ~1 s per epoch (40 steps of 32 images, 500 to
    # validate); the tiny space's own 6 steps on 180 images take a fraction of a second
    d["data"]["size"] = 2000
    d["train"]["max_steps_per_epoch"] = 40


def _start_until(folder, env, args, marker, merge_stderr=True):
    """Start ``hvsearch ARGS`` on a tiny space with slow trials and read its output up to the first
    line holding ``marker``; the process and the lines read."""
    space = write_space(folder, _slow_trials)
    proc = subprocess.Popen(hvsearch_cmd(args[0], str(space), *args[1:]), cwd=folder, env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
    return proc, seen


@pytest.mark.slow
def test_a_local_run_listens_on_loopback_only_with_token_auth(workdir, ray_tmp):
    folder, env = workdir
    env = {**env, "HVSEARCH_RAY_TMP": str(ray_tmp)}
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
              "TUNE_FUNCTION_THREAD_TIMEOUT_S"):
        env.pop(k, None)
    space = write_space(folder)
    proc = subprocess.Popen(hvsearch_cmd("run", str(space)), cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    listening: dict[tuple[str, int], str] = {}
    auth: set[str] = set()
    names: set[str] = set()
    thread_timeout: set[str] = set()
    while proc.poll() is None:  # look at every process of the run while it runs
        procs = _tree(proc.pid)
        listening.update(_listeners(procs))
        for p in procs:
            try:
                names.add(p.name())
                # a process that is exiting reads an empty environment (/proc/<pid>/environ once
                # its memory is gone: seen once as the run ended); a live one never does
                env = p.environ() if p.name() in ("gcs_server", "raylet") or "ImplicitFunc" in p.name() else {}
                if env and p.name() in ("gcs_server", "raylet"):
                    auth.add(env.get("RAY_AUTH_MODE", "unset"))
                if env and "ImplicitFunc" in p.name():  # a trial's worker
                    thread_timeout.add(env.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "unset"))
            except Exception:
                pass
        time.sleep(0.2)
    out = proc.stdout.read()
    assert proc.returncode == 0, out
    assert {"gcs_server", "raylet"} <= names, names
    assert len(listening) >= 3, listening  # GCS, raylet, workers at least
    outside = {k: v for k, v in listening.items() if not _loopback(k[0])}
    assert not outside, f"listening beyond loopback: {outside}"
    assert auth == {"token"}, auth
    assert thread_timeout == {"30"}, thread_timeout  # a re-used worker waits for the old trial's thread
    token = ray_tmp / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert len(token.read_text().strip()) == 64
    assert len([t for t in load(folder, "tiny").get_trials() if t.user_attrs.get("status") in ("trained", "pruned")]) == 4


@pytest.mark.slow
def test_kill_9_of_the_driver_then_a_rerun_leaves_no_process_of_the_killed_run(workdir, ray_tmp):
    import psutil

    folder, env = workdir
    env = {**env, "HVSEARCH_RAY_TMP": str(ray_tmp)}

    # a trial is training (its first epoch reported; two more to go, ~1 s each here)
    proc, seen = _start_until(folder, env, ["run"], " epoch 1/3")  # tiny.yaml's 4 trials
    space = folder / "tiny.yaml"
    record = folder / "studies" / "tiny" / "ray-processes.json"
    assert record.exists(), "".join(seen)
    assert proc.poll() is None, "".join(seen)
    recorded = {p["pid"] for p in json.loads(record.read_text())["processes"]}
    run_procs = _tree(proc.pid)[1:]
    assert run_procs
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1.0)

    def alive(procs):
        left = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.Error:
                pass
        return left

    # Ray's processes that outlive a killed driver, its agents, recorded by the run: the rerun
    # must end them and say so (the raylet, the GCS and the trial workers end by themselves,
    # some perhaps only after this look)
    orphans = [p for p in alive(run_procs) if p.pid in recorded and "Agent" in p.name()]
    rerun = subprocess.run(hvsearch_cmd("run", str(space)), cwd=folder, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not alive(run_procs), f"left running after the rerun: {[(p.pid, p.name()) for p in alive(run_procs)]}"
    if orphans:
        assert "Ray process(es) that a killed run left" in rerun.stderr
    assert not record.exists()  # a clean end forgets its processes
    study = load(folder, "tiny")
    counted = [t for t in study.get_trials() if t.user_attrs.get("status") in ("trained", "pruned")]
    assert len(counted) == 4


def test_a_ray_that_cannot_start_is_one_line_and_leaves_no_study(workdir):
    folder, env = workdir
    # Ray's Unix socket paths must fit in ~107 bytes: a temp folder this long cannot work
    long_tmp = Path(tempfile.mkdtemp(prefix="hvs-t", dir="/tmp")) / ("x" * 120)
    env = {**env, "HVSEARCH_RAY_TMP": str(long_tmp)}
    space = write_space(folder)
    proc = subprocess.run(hvsearch_cmd("run", str(space)), cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not start a local Ray instance" in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    import optuna

    storage = f"sqlite:///{folder / 'studies' / 'tiny.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert "tiny" not in names


@pytest.mark.slow
def test_a_cluster_without_the_spaces_gpus_is_one_line_and_leaves_no_study(workdir):
    """Refused after Ray started (no GPU for gpus_per_trial): no study holds the space's
    fingerprint, so the space edited to fit runs as a new study."""
    folder, env = workdir
    space = write_space(folder, lambda d: d.setdefault("resources", {}).update(gpus_per_trial=1))
    proc = subprocess.run(hvsearch_cmd("run", str(space)), cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpus_per_trial is 1 but the Ray cluster has 0 GPU(s)" in lines[0], proc.stderr
    import optuna

    storage = f"sqlite:///{folder / 'studies' / 'tiny.db'}"
    assert "tiny" not in [s.study_name for s in optuna.get_all_study_summaries(storage)]


def _reasons(folder):
    study = load(folder, "tiny")
    return {t.number: (t.state.name, t.user_attrs.get("status"), t.user_attrs.get("fail_reason") or "")
            for t in study.get_trials()}


@pytest.mark.slow
def test_a_trial_killed_by_rays_memory_monitor_is_failed_with_that_reason(workdir):
    import psutil

    folder, env = workdir
    # A kill threshold below what the machine already uses: Ray's memory monitor kills every
    # trial's worker as it starts (the real monitor; only its threshold is lowered).
    vm = psutil.virtual_memory()
    used = (vm.total - vm.available) / vm.total
    env = {**env, "RAY_memory_usage_threshold": f"{max(used / 4, 0.001):.4f}",
           "RAY_memory_monitor_refresh_ms": "100"}
    space = write_space(folder)
    proc = subprocess.run(hvsearch_cmd("run", str(space)), cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "no architecture of study 'tiny' has finished training" in proc.stderr
    reasons = _reasons(folder)
    assert len(reasons) == 4, reasons
    for state, status, why in reasons.values():
        assert (state, status) == ("FAIL", "failed")
        assert why.startswith("killed by Ray's memory monitor: the node used "), why
        assert "kill threshold" in why


@pytest.mark.slow
def test_a_trial_whose_worker_is_killed_is_failed_with_that_reason_and_the_search_goes_on(workdir):
    import psutil

    folder, env = workdir
    # the first epoch reported: a trial's worker is training
    proc, lines = _start_until(folder, env, ["run"], " epoch 1/3")
    workers = [p for p in _tree(proc.pid) if "ImplicitFunc" in p.name()]
    assert workers, "".join(lines)
    workers[0].send_signal(signal.SIGKILL)
    lines.extend(proc.stdout)
    assert proc.wait(timeout=600) == 0, "".join(lines)
    out = "".join(lines)
    assert "Traceback" not in out
    reasons = _reasons(folder)
    failed = [r for r in reasons.values() if r[1] == "failed"]
    assert len(failed) == 1, reasons
    assert failed[0][2].startswith("the trial's worker process was killed (SIGKILL"), failed[0]
    assert sum(r[1] in ("trained", "pruned") for r in reasons.values()) == 3  # the search went on
    assert psutil.Process().children(recursive=True) == []


@pytest.mark.slow
def test_a_trial_tune_could_not_start_on_a_reused_worker_is_retried_in_the_same_run(workdir):
    folder, env = workdir
    # Tune re-uses a finished trial's worker for the next trial and gives the old training thread
    # TUNE_FUNCTION_THREAD_TIMEOUT_S (default 2 s) to stop; at 0 the reset fails as it does on a
    # loaded machine, and Tune ends the new trial without telling the searcher.
    env = {**env, "TUNE_FUNCTION_THREAD_TIMEOUT_S": "0"}

    def edit(d):
        d["train"]["max_steps_per_epoch"] = 20
        d["search"]["trials"] = 6

    space = write_space(folder, edit)
    proc = subprocess.run(hvsearch_cmd("run", str(space)), cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Could not re-use actor" not in proc.stdout + proc.stderr  # said once, in our words
    study = load(folder, "tiny")
    trials = study.get_trials()
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert interrupted, "the reset never failed: the path under test did not run"
    for t in interrupted:
        assert t.user_attrs["fail_reason"].startswith("Tune could not start it on a re-used worker")
    counted = [t for t in trials if t.user_attrs.get("status") in ("trained", "pruned")]
    assert len(counted) == 6  # the budget, in this run
    # each interrupted architecture was re-queued (a chain when the retry met a busy worker too)
    # and trained in this run
    for t in interrupted:
        assert any(c.user_attrs.get("requeued_from") == t.number for c in trials), t.number
    assert {t.user_attrs["arch_id"] for t in interrupted} <= {c.user_attrs["arch_id"] for c in counted}


@pytest.mark.slow
def test_ctrl_c_stops_the_command_and_keeps_the_study(workdir):
    folder, env = workdir
    proc, seen = _start_until(folder, env, ["run"], " epoch 1/3", merge_stderr=False)
    assert proc.poll() is None, "".join(seen)  # a trial is training: two epochs to go
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == "hvsearch run: interrupted"
    assert "Stop signal received" not in out + err  # Tune's advice; our lines say how to go on
    assert "re-queued; continue with `hvsearch run" in out
    assert "Traceback" not in out + err
    trials = load(folder, "tiny").get_trials()
    assert trials and not [t.number for t in trials if t.state.name == "RUNNING"]
    assert any(t.user_attrs.get("status") == "interrupted" for t in trials)


@pytest.mark.slow
def test_ctrl_c_during_a_calibration_stops_it_before_the_next_training(workdir):
    folder, env = workdir
    # the proxy training has started
    proc, seen = _start_until(folder, env, ["calibrate", "-n", "4", "--reference-seeds", "1"], " epoch 1/",
                              merge_stderr=False)
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    out = "".join(seen) + out
    assert proc.returncode == 130, out + err
    assert "--- reference training" not in out  # it did not go on to the reference
    assert err.strip().splitlines()[-1] == "hvsearch calibrate: interrupted"
    assert "Traceback" not in out + err


def test_trial_workers_wait_for_the_previous_trials_thread_and_a_users_setting_wins(monkeypatch):
    from hvsearch.search import runner

    for key in runner.WORKER_ENV:
        monkeypatch.delenv(key, raising=False)
    runner.ray_env(local=False)  # a cluster's workers get these through the job's runtime env
    assert runner.worker_env() == {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "30"}
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "5")
    monkeypatch.setenv("HVSEARCH_CACHE", "/data/cache")
    runner.ray_env(local=False)
    assert runner.worker_env() == {"HVSEARCH_CACHE": "/data/cache", "TUNE_FUNCTION_THREAD_TIMEOUT_S": "5"}


_MONITOR_PROBE = """
import json, time
import psutil, ray
from hvsearch.search import runner
started = runner.init_ray(None, 1)
instance = {}
for p in psutil.Process().children(recursive=True):
    try:
        instance[p.pid] = (p.create_time(), p.cmdline())
    except psutil.Error:
        pass
ended = runner._end_autoscaler_monitor()
cpus = ray.cluster_resources().get("CPU")  # the instance still answers
runner.stop_ray(started)

def alive(pid, created):
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

deadline = time.monotonic() + 20  # the raylet's own children (agents, workers) end after it
while time.monotonic() < deadline and any(alive(pid, c) for pid, (c, _) in instance.items()):
    time.sleep(0.2)
left = [pid for pid, (c, _) in instance.items() if alive(pid, c)]
print(json.dumps({"instance": {pid: cmd for pid, (_, cmd) in instance.items()}, "ended": ended, "cpus": cpus,
                  "left": left}))
"""


@pytest.mark.slow
def test_the_local_instances_autoscaler_monitor_is_ended_and_the_instance_goes_on(ray_tmp):
    """Ray's shutdown sends the monitor SIGTERM after ending the GCS, and its handler then hangs
    until Ray's SIGKILL a second later; hvsearch ends it first. This checks that the monitor is
    found in Ray's process table (a Ray upgrade that renames it would make the step a silent
    no-op), that ending it leaves the instance working, and that no process of the instance is
    left after stop_ray."""
    env = {**os.environ, "HVSEARCH_RAY_TMP": str(ray_tmp)}
    out = subprocess.run([sys.executable, "-c", _MONITOR_PROBE], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    monitors = [int(pid) for pid, cmd in got["instance"].items()
                if any("autoscaler" in a and a.endswith("monitor.py") for a in cmd)]
    assert len(monitors) == 1 and got["ended"] == monitors
    assert got["cpus"] == 1.0
    assert len(got["instance"]) >= 5 and got["left"] == []  # GCS, raylet, monitors, agents, API server


def test_stop_ray_ends_the_monitor_before_rays_shutdown_and_only_for_an_instance_it_started(monkeypatch, tmp_path):
    import ray

    from hvsearch.search import runner

    calls = []
    monkeypatch.setattr(runner, "_end_autoscaler_monitor", lambda: calls.append("monitor") or [])
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: calls.append("shutdown"))
    (tmp_path / runner.RAY_PROCESSES).write_text("{}")
    runner.stop_ray(False, tmp_path)
    assert calls == [] and (tmp_path / runner.RAY_PROCESSES).exists()  # not ours: untouched
    runner.stop_ray(True, tmp_path)
    assert calls == ["monitor", "shutdown"] and not (tmp_path / runner.RAY_PROCESSES).exists()
