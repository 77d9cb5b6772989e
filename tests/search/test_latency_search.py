"""Latency as a search objective and constraint (real Ray, real SQLite, real measurements): a draw
over the latency limit is rejected before it trains, with its measured latency and the reason;
trained trials carry latency as their second objective value, in the study, trials.csv and the
Pareto front."""
from __future__ import annotations

import pandas as pd
from optuna.trial import TrialState

from tests.search.conftest import load, run_cli, write_space

LIMIT_MS = 40.0


def _latency_space(d):
    # Latency is measured at 160 px (the deployment size, not the 32-px proxy): with a first stage
    # 8 channels wide the model ran in 6.4 ms, with one 768 wide and an MLP ratio of 4 (~7.5 G
    # multiply-adds there) in 179 ms (one thread, an idle 2-core machine): the limit is ~5x from
    # either, so no CPU, fast or busy, puts them on the same side. (With 384 wide, 57 ms, a fast
    # idle machine measured it under the previous 60-ms limit.)
    d["search"].update(sampler="nsga2", trials=2, seed=1, objectives=["accuracy", "latency"])
    d["search"].pop("asha", None)
    d["train"].update(epochs=1, max_steps_per_epoch=2)
    d["resources"]["max_concurrent"] = 1
    d["constraints"] = {"max_latency_ms": LIMIT_MS}
    d["latency"] = {"repeats": 5, "warmup": 1, "resolution": 160}
    d["arch"]["stages"]["each"][0] = {"width": {"choice": [8, 768]}, "ffn": {"type": "mlp", "ratio": 4.0}}


def test_latency_constraint_rejects_before_training_and_the_objective_is_stored(workdir):
    folder, env = workdir
    space = write_space(folder, _latency_space, name="lat")
    check = run_cli(["check", str(space), "--samples", "4"], folder, env).stdout
    assert "latency: measured before training, torch on cpu, batch 1, 1 thread" in check
    assert f"latency <= {LIMIT_MS:g} ms: not checked here" in check
    out = run_cli(["run", str(space)], folder, env, timeout=600).stdout
    study = load(folder, "lat")
    trials = study.get_trials()
    rejected = [t for t in trials if "max_latency_ms" in (t.user_attrs.get("fail_reason") or "")]
    trained = [t for t in trials if t.state == TrialState.COMPLETE]
    assert rejected, "seed 1 draws a 768-wide first stage"
    for t in rejected:
        a = t.user_attrs
        assert t.state == TrialState.PRUNED and a["status"] == "invalid" and not t.intermediate_values
        assert a["latency_ms"] > LIMIT_MS and "history" not in a
        assert a["fail_reason"].startswith(f"latency {a['latency_ms']:.3g} ms (median) exceeds "
                                           f"constraints.max_latency_ms {LIMIT_MS:g} (torch on cpu, batch 1, 160 px")
        assert f"trial {t.number} invalid, not trained: latency" in out
    assert len(trained) == 2
    for t in trained:
        a = t.user_attrs
        assert len(t.values) == 2 and t.values[1] == a["latency_ms"] <= LIMIT_MS
        assert a["latency"]["p90_ms"] >= a["latency_ms"] and a["latency"]["runtime"] == "torch"
        assert a["latency"]["resolution"] == 160 and a["cost_resolution"] == 32
    assert study.directions[1].name == "MINIMIZE"
    df = pd.read_csv(folder / "results" / "lat" / "trials.csv")
    assert set(df.dropna(subset=["latency_ms"]).trial) == {t.number for t in rejected + trained}
    front = pd.read_csv(folder / "results" / "lat" / "pareto.csv")
    assert not front.empty and front.latency_ms.notna().all()
    assert (folder / "results" / "lat" / "pareto.png").exists()
    board = run_cli(["results", "lat"], folder, env).stdout.splitlines()
    header = next(line.split() for line in board if line.split()[:1] == ["trial"])
    assert header[4:7] == ["params_M", "MFLOPs", "latency_ms"]
    # every draw was measured once and kept in the store next to the studies
    import sqlite3

    with sqlite3.connect(folder / "studies" / "latency.db") as db:
        stored = db.execute("SELECT COUNT(DISTINCT arch_id) FROM latency").fetchone()[0]
    assert stored == len({t.user_attrs["arch_id"] for t in rejected + trained})
