"""The benchmark scripts' own logic, and small runs of those that measure on real parts (Ray,
storages); their full measurements run outside the suite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import search_vs_random as svr  # noqa: E402


def test_hypervolume_is_the_normalised_area_the_front_dominates():
    hv = lambda acc, flops: svr.hypervolume(np.array(acc, float), np.array(flops, float), chance=10.0,
                                            max_flops=50e6)
    assert hv([55.0], [25e6]) == pytest.approx(0.5 * 0.5)
    # two front points: a strip of 1.0 x 0.2 and one of 0.5 x (0.6 - 0.2)
    assert hv([100.0, 55.0], [40e6, 20e6]) == pytest.approx(1.0 * 0.2 + 0.5 * 0.4)
    # a dominated point, one below chance and one over the FLOPs bound add nothing; order does not matter
    assert hv([55.0, 100.0, 40.0, 5.0, 99.0], [20e6, 40e6, 30e6, 1e6, 60e6]) == pytest.approx(0.4)
    assert hv([], []) == 0.0


def test_each_sampler_changes_only_the_sampler_and_nsga2_adds_the_flops_objective():
    from hvsearch.space import load_space

    space = load_space(ROOT / "spaces" / "fashion.yaml")
    tpe = svr.search_space(space, "tpe", 1, trials=None, population=8)
    nsga = svr.search_space(space, "nsga2", 2, trials=12, population=6)
    rnd = svr.search_space(space, "random", 3, trials=None, population=8)
    assert tpe.search.sampler_options == space.search.sampler_options and tpe.search.seed == 1
    assert nsga.search.objectives == ("accuracy", "flops") and nsga.search.sampler_options == {"population_size": 6}
    assert rnd.search.sampler_options == {} and rnd.search.objectives == ("accuracy",)
    assert {s.search.time_budget for s in (tpe, nsga, rnd)} == {None}
    assert tpe.search.trials == rnd.search.trials == space.search.trials and nsga.search.trials == 12
    for s in (tpe, nsga, rnd):
        assert (s.train, s.data, s.raw["arch"]) == (space.train, space.data, space.raw["arch"])


def test_retrain_studies_are_named_by_the_set_of_architectures():
    assert svr.retrain_names(["b", "a", "a"], 2) == svr.retrain_names(["a", "b"], 2)
    assert svr.retrain_names(["a", "b"], 2)[1].endswith("-seed1")
    assert svr.retrain_names(["a"], 1) != svr.retrain_names(["a", "b"], 1)


def test_step_time_compare_times_both_mlp_layouts_on_the_seeds_that_have_them(tmp_path):
    out = tmp_path / "mlp_layout.csv"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--compare", "mlp-layout", "--seeds", "convmlp_s",
                           "cmt_ti", "--resolutions", "32", "--batch", "2", "--repeats", "1", "--warmup", "0",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "cmt_ti           has no mlp-layout layer: skipped" in done.stdout
    df = pd.read_csv(out)
    assert list(df.seed) == ["convmlp_s"] and list(df.resolution) == [32]
    assert (df.conv_ms > 0).all() and (df.linear_ms > 0).all()
    assert df.speedup.iloc[0] == pytest.approx(df.conv_ms.iloc[0] / df.linear_ms.iloc[0])
    assert df.max_abs_diff.iloc[0] < 1e-4  # the two layouts compute the same function


def test_step_time_compare_times_both_idconv_kernel_mixes(tmp_path):
    out = tmp_path / "idconv_mix.csv"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--compare", "idconv-mix",
                           "--seeds", "transxnet_t", "convmlp_s", "--resolutions", "32", "--batch", "2",
                           "--repeats", "1", "--warmup", "0", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "convmlp_s        has no idconv-mix layer: skipped" in done.stdout
    df = pd.read_csv(out)
    assert list(df.seed) == ["transxnet_t"] and (df.einsum_ms > 0).all() and (df.mulsum_ms > 0).all()
    assert df.max_abs_diff.iloc[0] < 1e-5  # the same sums


def test_search_overhead_edits_a_copy_of_the_space(tmp_path):
    import yaml

    import search_overhead

    edited = search_overhead._edited_space(str(ROOT / "spaces" / "fashion.yaml"),
                                           ["train.fraction=0.3", "search.asha.grace_period=1"], tmp_path)
    data = yaml.safe_load(edited.read_text())
    assert data["train"]["fraction"] == 0.3 and data["search"]["asha"]["grace_period"] == 1
    assert yaml.safe_load((ROOT / "spaces" / "fashion.yaml").read_text())["train"]["fraction"] == 0.1
    from hvsearch.space import load_space

    assert load_space(edited).train.fraction == 0.3


def test_cost_count_time_runs_the_three_counters_and_checks_they_agree(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cost_count_time.py"), "--seeds", "convmlp_s",
                           "--spaces", str(ROOT / "spaces" / "tiny.yaml"), "--samples", "1", "--repeats", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(tmp_path / "cost_count_time.csv")
    assert len(df) == 3 and df.model.iloc[0] == "convmlp_s" and df.model.iloc[2].startswith("tiny:")
    assert df.equal.all()
    assert ((df.fvcore_s > 0) & (df.shapes_s > 0) & (df.analytic_s > 0)).all()
    assert list(df.analytic_speedup) == pytest.approx(list(df.fvcore_s / df.analytic_s), rel=0.01)


def test_search_overhead_reads_the_timeline_of_a_run_from_its_progress_lines():
    import search_overhead

    lines = [(0.9, "[     1s] study 'b' in sqlite:///x.db: 0 of 3 trials trained"),
             (6.4, "[     6s] trial 1 start: convmlp/hire, 657K params, 3.46M FLOPs"),
             (6.5, "[     6s] trial 0 start: hire/hire, 334K params, 3.92M FLOPs"),
             (12.0, "[    12s] trial 1 epoch 1/2: val top-1 40.00%, loss 1.900  | 0 trained, 0 pruned, 2 running"),
             (13.1, "[    13s] trial 0 epoch 1/2: val top-1 41.00%, loss 1.800  | 0 trained, 0 pruned, 2 running"),
             (15.0, "[    15s] trial 1 pruned after epoch 1  | 0 trained, 1 pruned, 1 running"),
             (15.2, "[    15s] trial 2 invalid, not trained: params 1.3M exceed constraints.max_params 1M"),
             (19.9, "[    20s] trial 0 trained after epoch 2  | 1 trained, 1 pruned, 0 running"),
             (21.0, "[    21s] done: 1 trained, 1 pruned, 1 invalid")]
    starts, ends, first_epoch = search_overhead.timeline(lines)
    assert starts == [6.4, 6.5] and ends == [15.0, 19.9] and first_epoch == 12.0
    assert search_overhead.timeline(lines[:3]) == ([6.4, 6.5], [], None)


def test_study_writes_times_both_sqlite_modes_on_real_storages(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_writes.py"), "--folder", str(tmp_path),
                           "--trials", "2", "--knobs", "3", "--attrs", "1", "--rounds", "2",
                           "--out", str(tmp_path / "w.csv")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(tmp_path / "w.csv").iloc[0]
    assert row.writes_per_round == 2 * (3 + 1 + 1) and row.rounds == 2
    assert row.default_ms > 0 and row.hvsearch_ms > 0
    assert row.speedup == pytest.approx(row.default_ms / row.hvsearch_ms)
    assert [p.name for p in tmp_path.iterdir() if p.name != "w.csv"] == []  # its study files are gone


@pytest.mark.slow
def test_startup_cpu_measures_the_driver_rays_processes_and_a_real_worker(tmp_path, ray_tmp):
    """One repeat on a real local Ray: every part measured, in its steps, and the floor printed
    from them."""
    from _report import cpu_count

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup_cpu.py"), "--repeats", "1",
                           "--settle", "1", "--space", str(ROOT / "spaces" / "tiny.yaml"),
                           "--out", str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "HVSEARCH_RAY_TMP": str(ray_tmp)})
    assert done.returncode == 0, done.stderr[-2000:]
    df = pd.read_csv(tmp_path / "s.csv")
    steps = {part: list(g.step) for part, g in df.groupby("part", sort=False)}
    assert steps["driver"] == ["interpreter", "cli_optuna_study", "tune_searcher_trainable", "ray_init_driver_side"]
    assert steps["worker"] == ["ray_worker_start", "ray_tune", "torch", "training_code", "optimizer"]
    assert {"gcs", "raylet", "autoscaler monitor", "log monitor", "API server"} <= set(steps["ray"])
    assert (df.cpu_s >= 0).all()
    # the heavy imports are where they are measured: torch in the worker, not in the driver
    assert not df.torch_in_driver.any()
    assert (df.stop_ray_s > 0).all() and (df.plain_shutdown_s > 0).all()
    worker = df[df.part == "worker"].set_index("step").cpu_s
    assert worker["torch"] > 0.2 and worker["training_code"] > 0.2
    total = df.groupby("part").cpu_s.sum()
    floor = (total["driver"] + total["ray"] + 2 * total["worker"]) / cpu_count()
    printed = float(done.stdout.split("can train is ")[1].split(" s")[0])
    assert printed == pytest.approx(floor, abs=0.01)


def test_export_check_compares_both_onnx_exporters_on_a_seed(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "export_check.py"), "--compare-exporters",
                           "--seeds", "convmlp_s", "--resolution", "64", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(tmp_path / "exporters.csv").iloc[0]
    assert row.seed == "convmlp_s" and row.resolution == 64 and row.batch == 1
    assert row.torchscript_dynamic == row.dynamo_dynamic == "batch,height,width"
    assert row.torchscript_export_s > 0 and row.dynamo_export_s > 0
    # one self-contained file each: the weights (9.0 M params, 34 MB in float32) are inside both
    assert row.torchscript_mb > 25 and row.dynamo_mb > 25
    assert row.torchscript_ort_ms > 0 and row.dynamo_ort_ms > 0
    assert row.dynamo_over_torchscript == pytest.approx(row.dynamo_ort_ms / row.torchscript_ort_ms)


def test_finalize_vs_proxy_judges_both_picks_on_the_held_out_seed():
    """Selection on seeds 0..K-2, judgement on the last (the test split): finalize's pick is the
    best selection mean, whatever the last seed says; the proxy's is its rank 1; a search with an
    untrained finalist is left out; the same architecture picked twice is a tie."""
    from types import SimpleNamespace

    import finalize_vs_proxy as fvp

    def trial(number, arch, proxy):
        return SimpleNamespace(number=number, values=[proxy], user_attrs={"arch_id": arch})

    found = {("tpe", 0): [trial(4, "a", 85.5), trial(9, "b", 85.4)],
             ("random", 0): [trial(2, "b", 85.6), trial(7, "c", 85.0)],
             ("random", 1): [trial(1, "a", 85.1), trial(3, "d", 84.0)],
             ("random", 2): [trial(5, "c", 85.3), trial(6, "a", 85.2)]}
    # b selects above a (89.1 vs 88.2) but judges below it (87.9 vs 88.6): the pick must not read seed 2
    accuracy = {"a": [88.0, 88.4, 88.6], "b": [89.0, 89.2, 87.9], "c": [89.5, 89.5, 89.6]}  # d: untrained
    table, rows = fvp.evaluate(found, accuracy, 3)
    assert len(rows) == 8 and list(table["sampler"]) == ["tpe", "random", "random"]
    assert list(rows.columns[-4:]) == ["seed0", "seed1", "selection_mean", "seed2_test"]
    tpe, rnd, same = table.iloc[0], table.iloc[1], table.iloc[2]
    assert (tpe.proxy_pick_trial, tpe.final_pick_trial, tpe.final_pick_proxy_rank) == (4, 9, 2)
    assert tpe.gain == pytest.approx(87.9 - 88.6) and not tpe.same_pick
    assert (rnd.final_pick_trial, rnd.gain) == (7, pytest.approx(89.6 - 87.9))
    assert same.same_pick and same.gain == 0 and same.final_pick_trial == 5
    text = fvp.summary(table)
    assert "3 searches" in text and "1 better, 1 the same (1 the same architecture), 1 worse" in text
    assert f"whose picks differ: {((87.9 - 88.6) + (89.6 - 87.9)) / 2:+.2f}" in text


def test_finalize_vs_proxy_reports_how_the_selection_seeds_agree():
    import finalize_vs_proxy as fvp

    rows = pd.DataFrame({"arch_id": list("abcdea"), "seed0": [1.0, 2, 3, 4, 5, 1], "seed1": [2.0, 1, 3, 4, 5, 2]})
    line = fvp.seeds_agreement(rows, n_boot=200)  # a repeated finalist counts once: 5 distinct
    assert line.startswith("seed 0 vs seed 1 over the 5 distinct finalists: Kendall tau +0.80 [")
    assert "fewer than 4" in fvp.seeds_agreement(rows.iloc[:3])


def test_finalize_vs_proxy_sign_flip_test_is_exact():
    import finalize_vs_proxy as fvp

    # all of 4 gains positive: only the all-plus and all-minus patterns are as extreme, 2 of 16
    assert fvp.sign_flip_p(np.array([1.0, 2.0, 0.5, 1.5])) == pytest.approx(2 / 16)
    assert fvp.sign_flip_p(np.array([1.0, -1.0])) == 1.0
    assert fvp.sign_flip_p(np.array([0.0, 0.0, 2.0])) == pytest.approx(1.0)  # zeros flip to themselves
    # past 16 searches, random patterns: 20 positive gains, exact p = 2 / 2^20, estimated near 0
    assert fvp.sign_flip_p(np.ones(20), n_random=20_000) < 0.001
    assert fvp.sign_flip_p(np.array([1.0, -1.0] * 10), n_random=20_000) == 1.0


def test_finalize_vs_proxy_judges_on_the_test_split_and_refuses_another_budget(tmp_path):
    import finalize_vs_proxy as fvp
    import optuna

    from hvsearch.errors import HVSearchError
    from hvsearch.search import study as st
    from hvsearch.space import load_space

    space = load_space(ROOT / "spaces" / "tiny.yaml")
    judging = fvp.judging_space(space)
    assert judging.data.val_split == 0 and space.data.val_split > 0
    import dataclasses

    with pytest.raises(HVSearchError, match="data.val_split is 0: the searches validated on the test split"):
        fvp.judging_space(judging)
    folder = dataclasses.replace(space, data=dataclasses.replace(space.data, name="imagefolder", root=str(tmp_path)))
    with pytest.raises(HVSearchError, match="an image folder validates on its val/ folder"):
        fvp.judging_space(folder)
    assert judging.fingerprint() != space.fingerprint()  # its own study, not a continuation
    url = st.storage_url("fvp", str(tmp_path / "fvp.db"), tmp_path)
    study = optuna.create_study(study_name="fvp-abc-seed0", storage=st.open_storage(url))
    study.set_user_attr("train", {"epochs": 8, "fraction": 0.2})
    fvp.check_budget(["fvp-abc-seed0", "fvp-abc-seed1"], url, 8, 0.2)  # the same budget: fine
    with pytest.raises(HVSearchError, match="was trained 8 epoch\\(s\\) on 0.2, not 4 on 0.2"):
        fvp.check_budget(["fvp-abc-seed0"], url, 4, 0.2)
