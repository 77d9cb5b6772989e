"""A seeded search on CPU is reproducible where it can be: the same draws, and the same accuracy
to the last digit at every epoch an architecture trains. What may differ between two runs with
more than one trial at a time is where ASHA cuts (which trial reaches a rung first depends on
timing), so a pruned trial can stop after another epoch."""
from tests.search.conftest import load, run_cli, write_space


def _curves(study) -> dict[str, dict[int, float]]:
    return {t.user_attrs["arch_id"]: dict(t.intermediate_values) for t in study.trials
            if "arch_id" in t.user_attrs and t.intermediate_values}


def test_two_seeded_searches_give_identical_trial_values(workdir):
    folder, env = workdir
    curves, draws = [], []
    for run in ("a", "b"):
        (folder / run).mkdir()
        space = write_space(folder / run)
        run_cli(["run", str(space)], folder / run, env)
        study = load(folder / run, "tiny")
        curves.append(_curves(study))
        draws.append([t.params for t in study.trials])
    assert draws[0] == draws[1], "the seeded sampler draws the same architectures in the same order"
    shared = set(curves[0]) & set(curves[1])
    assert len(shared) >= 4, curves
    compared = 0
    for arch in shared:
        a, b = curves[0][arch], curves[1][arch]
        for epoch in set(a) & set(b):
            assert a[epoch] == b[epoch], (arch, epoch, a, b)  # exactly equal, not approximately
            compared += 1
    assert compared >= 4
