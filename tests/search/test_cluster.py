"""A search through ``--address`` on a real two-node Ray cluster made on this machine (a head and
a second node on loopback): trials land on both nodes, every result goes to the one study."""
from __future__ import annotations

import pytest

from tests.search.conftest import load, run_cli, write_space

BUDGET = 4


def _one_cpu_trials(d):
    # multi-objective too: accuracy x FLOPs with NSGA-II (curves and states must hold there as well)
    d["search"].update(trials=BUDGET, seed=5, sampler="nsga2", sampler_options={"population_size": 2},
                       objectives=["accuracy", "flops"])
    d["search"]["asha"]["reduction_factor"] = 4
    d["resources"] = {"cpus_per_trial": 1, "max_concurrent": 2}
    # ~1 s epochs (the tiny space's own take a fraction of a second): the second node's worker
    # is up before the first node's trial ends, so Tune cannot hand both trials to one worker
    d["data"]["size"] = 2000
    d["train"]["max_steps_per_epoch"] = 40


@pytest.mark.slow
def test_search_on_a_two_node_cluster(workdir, monkeypatch):
    import os

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # The cluster's files (and its address file, which a bare `ray.init()` on this machine would
    # follow) go to a private short folder, not the shared /tmp/ray.
    monkeypatch.setenv("RAY_TMPDIR", f"/tmp/hvs-{os.getuid()}-cluster")
    from ray.cluster_utils import Cluster

    folder, env = workdir
    # Two nodes on this machine, one CPU each: two concurrent one-CPU trials cannot share a node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        node_ids = {n.node_id for n in [cluster.head_node, *cluster.worker_nodes]}
        assert len(node_ids) == 2

        space = write_space(folder, _one_cpu_trials, name="cluster")
        out = run_cli(["run", str(space), "--address", cluster.address], folder, env).stdout
        assert "ray cluster: 2 CPU(s)" in out
    finally:
        cluster.shutdown()

    study = load(folder, "cluster")
    trained = [t for t in study.get_trials() if t.user_attrs.get("status") in ("trained", "pruned")]
    assert len(trained) == BUDGET
    used = {t.user_attrs["node_id"] for t in trained}
    assert used == node_ids, "trials ran on both nodes and reported into the one study"
    from optuna.trial import TrialState

    for t in trained:
        steps = sorted(t.intermediate_values)
        assert steps and steps == list(range(1, len(steps) + 1))
        if t.state == TrialState.COMPLETE:
            assert t.values == [t.intermediate_values[3], t.user_attrs["flops"]]
        else:
            assert t.state == TrialState.PRUNED and len(steps) < 3
    assert (folder / "results" / "cluster" / "pareto.png").exists()
