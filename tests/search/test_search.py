"""A real small search (real Ray, real Optuna SQLite, tiny space, tiny data), checked trial by
trial in the reopened study: states, architecture, cost, learning curves, failure reasons."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pandas as pd
from optuna.trial import TrialState

from hvsearch.arch import ModelSpec
from hvsearch.space import human
from hvsearch.train import METRIC_KEYS
from tests.search.conftest import hvsearch_cmd, load, run_cli, write_space

BUDGET = 6
EPOCHS = 3


def _mixed_outcomes(d):
    """Draws of every kind: stage 3's `hire` with region 2 does not fit its 1x1 map (invalid, never
    trained); a 1e30 layer scale in stage 0 makes the loss NaN (failed); the rest train, and ASHA
    stops some (pruned)."""
    d["search"].update(trials=BUDGET, seed=3)
    d["arch"]["stages"]["each"][0]["layer_scale"] = {"choice": [0.0, 1.0e30]}
    d["arch"]["stages"]["each"][3]["mixer"] = {
        "choice": {"cmt_attn": {"heads": {"choice": [1, 2]}}, "hire": {"region": {"choice": [1, 2]}, "step_dilation": 0}}}


def test_real_search_records_true_states(workdir):
    folder, env = workdir
    space = write_space(folder, _mixed_outcomes, name="mixed")
    out = run_cli(["run", str(space)], folder, env).stdout
    assert "done:" in out and "results in" in out

    study = load(folder, "mixed")
    trials = study.get_trials()
    by_status: dict[str, list] = {}
    for t in trials:
        by_status.setdefault(t.user_attrs["status"], []).append(t)
    assert sum(len(by_status.get(s, [])) for s in ("trained", "pruned", "failed")) == BUDGET
    assert by_status.get("trained") and by_status.get("invalid") and by_status.get("failed"), by_status.keys()

    # every trial's fate is a line: invalid draws with their reason, failures with theirs
    for t in by_status["invalid"]:
        assert f"] trial {t.number} invalid, not trained: {t.user_attrs['fail_reason']}" in out
    for t in by_status["failed"]:
        assert f"] trial {t.number} failed" in out and "training loss became nan" in out
    # the closing line names the best architecture, its cost and accuracy, and its YAML
    best = max((t for t in trials if t.state == TrialState.COMPLETE),
               key=lambda t: (t.values[0], -t.user_attrs["flops"]))
    arch = json.loads(best.user_attrs["arch"])
    closing = out.strip().splitlines()[-1]
    assert closing.split("] ", 1)[1] == (
        f"best: trial {best.number}, {'/'.join(s['mixer']['type'] for s in arch['stages'])} "
        f"(depths {'-'.join(str(s['depth']) for s in arch['stages'])}, "
        f"widths {'-'.join(str(s['width']) for s in arch['stages'])}), {human(best.user_attrs['n_params'])} params, "
        f"{human(best.user_attrs['flops'])} FLOPs, val top-1 {best.values[0]:.2f}%: results/mixed/best.yaml")

    for t in trials:
        status, attrs = t.user_attrs["status"], t.user_attrs
        assert t.state != TrialState.RUNNING and t.state != TrialState.WAITING
        assert t.params, "the sampled knobs are the trial's params"
        assert t.params["stages.0.mixer.type"] in ("cmt_attn", "hire")
        if status == "invalid":  # PRUNED without a value: TPE counts it among the worst
            assert t.state == TrialState.PRUNED and not t.intermediate_values and t.values is None
            assert "must be" in attrs["fail_reason"] or "exceed" in attrs["fail_reason"]
            continue
        spec = ModelSpec.from_json(attrs["arch"])  # the architecture travels with the trial
        assert spec.arch_id == attrs["arch_id"]
        assert attrs["n_params"] > 0 and attrs["flops"] > 0 and attrs["cost_resolution"] == 32
        steps = sorted(t.intermediate_values)
        if status == "trained":
            assert t.state == TrialState.COMPLETE
            assert steps == list(range(1, EPOCHS + 1)), "the last epoch is in the curve too"
            assert t.values[0] == t.intermediate_values[EPOCHS]
            assert [h["epoch"] for h in attrs["history"]] == steps
            assert all(tuple(h) == METRIC_KEYS for h in attrs["history"]), "every metric of every epoch"
            assert attrs["train_time_s"] > 0 and attrs["node_id"]
        elif status == "pruned":
            assert t.state == TrialState.PRUNED, "ASHA-stopped trials are PRUNED, not COMPLETE"
            assert steps and steps == list(range(1, len(steps) + 1)) and len(steps) < EPOCHS
            assert t.values[0] == t.intermediate_values[steps[-1]]
        else:
            assert status == "failed" and t.state == TrialState.FAIL
            assert "TrainingError: training loss became nan" in attrs["fail_reason"]
            assert json.loads(attrs["arch"])["stages"][0]["layer_scale"] == 1.0e30

    # the cost recorded is what hvsearch.cost counts for that architecture
    from hvsearch.cost import count_spec

    t = by_status["trained"][0]
    cost = count_spec(ModelSpec.from_json(t.user_attrs["arch"]))
    assert (cost.params, cost.flops) == (t.user_attrs["n_params"], t.user_attrs["flops"])

    # results files
    res = folder / "results" / "mixed"
    df = pd.read_csv(res / "trials.csv")
    assert len(df) == len(trials) and {"arch.stages.0.mixer.type", "params", "flops", "state"} <= set(df.columns)
    best = ModelSpec.load(res / "best.yaml")
    top = max(by_status["trained"], key=lambda t: t.values[0])
    assert best.arch_id == top.user_attrs["arch_id"]
    assert (res / "pareto.csv").exists() and (res / "pareto.png").stat().st_size > 0

    # integer knobs stay integers in the CSV; a stage's columns sit together, in stage order
    import csv

    with (res / "trials.csv").open() as f:
        raw = list(csv.DictReader(f))
    header = list(raw[0])
    stage_of = [int(c.split(".")[2]) for c in header if c.startswith("arch.stages.")]
    assert stage_of == sorted(stage_of), "each stage's columns together, stage 0 first"
    ints = [c for c in header if c.endswith((".depth", ".width", ".mixer.heads")) or c in ("trial", "params", "flops")]
    assert all(r[c] == "" or r[c].isdigit() for r in raw for c in ints), "integers written as integers"
    assert any("." in r["arch.stages.0.ffn.ratio"] for r in raw), "float knobs stay floats"

    board = run_cli(["results", "mixed"], folder, env).stdout
    assert "trials (" in board and str(top.number) in board
    row = next(line.split() for line in board.splitlines() if line.split()[:1] == [str(top.number)])
    assert row[2] == f"{top.values[0]:.2f}", "val top-1 in one format, two decimals"

    _dashboard_shows(folder, env, study, by_status)

    # re-running the finished study trains nothing more
    again = run_cli(["run", str(space)], folder, env).stdout
    assert "trial budget (6) is spent" in again
    assert len(load(folder, "mixed").trials) == len(trials)


def _dashboard_shows(folder, env, study, by_status) -> None:
    """`hvsearch dashboard` serves the study: params, learning curves and user attrs per trial."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(hvsearch_cmd("dashboard", study.study_name, "--port", str(port)), cwd=folder,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    summaries = json.load(r)["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not come up"
                time.sleep(0.5)
        (sid,) = [s["study_id"] for s in summaries if s["study_name"] == study.study_name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{sid}", timeout=10) as r:
            shown = {t["number"]: t for t in json.load(r)["trials"]}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "GET /api" not in err, "no access log unless --access-log"
    t = by_status["trained"][0]
    row = shown[t.number]
    assert [v["step"] for v in row["intermediate_values"]] == sorted(t.intermediate_values)
    assert {"arch", "arch_id", "n_params", "flops", "status"} <= {a["key"] for a in row["user_attrs"]}
    assert {p["name"] for p in row["params"]} == set(t.params)
    failed = by_status["failed"][0]
    assert any(a["key"] == "fail_reason" for a in shown[failed.number]["user_attrs"])
