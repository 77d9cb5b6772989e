"""A seeded search on CPU is reproducible where it can be: the same draws, and the same loss and
accuracy to the last bit at every epoch an architecture trains, in a search or in `hvsearch train`
with the space as its config and the trial's thread count. What may differ between two runs with
more than one trial at a time is where ASHA cuts (which trial reaches a rung first depends on
timing), so a pruned trial can stop after another epoch."""
import csv

from hvsearch.arch import ModelSpec
from hvsearch.cli import main
from tests.search.conftest import load, run_cli, write_space


def _curves(study) -> dict[str, dict[int, tuple[float, float]]]:
    """arch id -> epoch -> (train loss, val top-1) of every trial that trained."""
    return {t.user_attrs["arch_id"]: {h["epoch"]: (h["train_loss"], h["val_top1"]) for h in t.user_attrs["history"]}
            for t in study.trials if t.user_attrs.get("history")}


def test_two_seeded_searches_give_identical_trial_values(workdir, monkeypatch):
    folder, env = workdir
    curves, draws = [], []
    for run in ("a", "b"):
        (folder / run).mkdir()
        space = write_space(folder / run)
        run_cli(["run", str(space)], folder / run, env)
        study = load(folder / run, "tiny")
        curves.append(_curves(study))
        draws.append([t.params for t in study.trials][:4])  # a trial Ray loses is re-queued later
    assert draws[0] == draws[1], "the seeded sampler draws the same architectures in the same order"
    shared = set(curves[0]) & set(curves[1])
    assert len(shared) >= 2, curves
    compared = 0
    for arch in shared:
        a, b = curves[0][arch], curves[1][arch]
        for epoch in set(a) & set(b):
            assert a[epoch] == b[epoch], (arch, epoch, a, b)  # exactly equal, not approximately
            compared += 1
    assert compared >= 2

    # `hvsearch train` of a trial's architecture, with the space as config and the trial's one
    # thread, reproduces the trial bit for bit
    trial = max((t for t in load(folder / "a", "tiny").trials if t.user_attrs.get("history")),
                key=lambda t: len(t.user_attrs["history"]))
    arch = ModelSpec.from_json(trial.user_attrs["arch"]).save(folder / "arch.yaml")
    monkeypatch.setenv("HVSEARCH_CACHE", env["HVSEARCH_CACHE"])
    out = folder / "retrain"
    epochs = len(trial.user_attrs["history"])
    import torch

    threads = torch.get_num_threads()
    try:
        assert main(["train", str(arch), "--config", str(folder / "a" / "tiny.yaml"), "--threads", "1",
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets this process's count
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    retrained = {int(r["epoch"]): (float(r["train_loss"]), float(r["val_top1"])) for r in rows}
    assert {e: retrained[e] for e in range(1, epochs + 1)} == curves[0][trial.user_attrs["arch_id"]]
