"""Rank statistics against scipy, bootstrap intervals, the correlate() table and scatter plots."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hvsearch.stats import bootstrap_ci, correlate, kendall, plot_scatter, rankdata, spearman

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pairs(rng, shape, ties: bool):
    """Correlated samples; ``ties`` draws from a few integers so that both sides tie often."""
    x = rng.normal(size=shape)
    y = x + rng.normal(size=shape)
    if ties:
        x, y = np.round(x * 2), np.round(y * 2)
    return x, y


@pytest.mark.parametrize("shape", [(17,), (6, 25)])
def test_rankdata_matches_scipy_with_ties(shape):
    x = np.random.default_rng(0).integers(0, 5, size=shape).astype(float)
    np.testing.assert_allclose(rankdata(x), sps.rankdata(x, axis=-1))


def test_rankdata_ranks_minus_inf_lowest_and_rejects_nan():
    np.testing.assert_array_equal(rankdata([2.0, -np.inf, 1.0, -np.inf]), [4.0, 1.5, 3.0, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        rankdata([1.0, np.nan])


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_and_spearman_match_scipy_1d(ties):
    x, y = _pairs(np.random.default_rng(1), (40,), ties)
    assert kendall(x, y) == pytest.approx(sps.kendalltau(x, y, variant="b").statistic)
    assert spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic)


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_and_spearman_match_scipy_row_wise(ties):
    x, y = _pairs(np.random.default_rng(2), (8, 30), ties)
    tau, rho = kendall(x, y), spearman(x, y)
    assert tau.shape == rho.shape == (8,)
    np.testing.assert_allclose(tau, [sps.kendalltau(a, b, variant="b").statistic for a, b in zip(x, y)])
    np.testing.assert_allclose(rho, [sps.spearmanr(a, b).statistic for a, b in zip(x, y)])


@pytest.mark.parametrize("stat", [kendall, spearman])
def test_perfect_agreement_reversal_and_constant(stat):
    x = np.arange(10.0)
    assert stat(x, 3 * x + 1) == pytest.approx(1.0)
    assert stat(x, -x) == pytest.approx(-1.0)
    assert math.isnan(stat(x, np.ones(10)))
    assert math.isnan(stat(np.ones(10), x))
    rows = stat(np.stack([x, x]), np.stack([x, np.zeros(10)]))
    assert rows[0] == pytest.approx(1.0) and math.isnan(rows[1])


def test_kendall_tau_b_by_hand():
    x = [1, 2, 2, 3]
    y = [1, 3, 2, 3]
    # Pairs (i, j): (0,1) C, (0,2) C, (0,3) C, (1,2) tied in x, (1,3) tied in y, (2,3) C.
    # C = 4, D = 0, n0 = 6, n1 = 1, n2 = 1: τ_b = 4 / sqrt(5 · 5) = 0.8.
    assert kendall(x, y) == pytest.approx(0.8)


def test_kendall_handles_minus_inf():
    assert kendall([-np.inf, -np.inf, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]) == pytest.approx(
        sps.kendalltau([-1e9, -1e9, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]).statistic)


def _sample(n, seed):
    x, y = _pairs(np.random.default_rng(seed), (n,), ties=False)
    return x, y


def test_bootstrap_ci_is_deterministic_and_contains_the_estimate():
    x, y = _sample(30, 3)
    ci = bootstrap_ci(x, y, kendall, n_boot=500, seed=7)
    assert ci == bootstrap_ci(x, y, kendall, n_boot=500, seed=7)
    assert ci != bootstrap_ci(x, y, kendall, n_boot=500, seed=8)
    lo, hi = ci
    assert lo < kendall(x, y) < hi
    lo, hi = bootstrap_ci(x, y, spearman, n_boot=500)
    assert lo < spearman(x, y) < hi


def test_bootstrap_ci_narrows_with_more_pairs():
    lo_small, hi_small = bootstrap_ci(*_sample(20, 4), kendall, n_boot=500)
    lo_big, hi_big = bootstrap_ci(*_sample(200, 4), kendall, n_boot=500)
    assert hi_big - lo_big < 0.6 * (hi_small - lo_small)


def test_bootstrap_ci_of_constant_data_is_nan():
    lo, hi = bootstrap_ci(np.ones(5), np.arange(5.0), kendall, n_boot=50)
    assert math.isnan(lo) and math.isnan(hi)


N = 40  # top 25% = 10 architectures, kept half = 20: the copy keeps all 10, the reversal none


@pytest.fixture
def frame():
    rng = np.random.default_rng(5)
    ref = pd.Series(rng.permutation(N).astype(float), index=[f"a{i}" for i in range(N)])
    scores = pd.DataFrame({
        "noise": rng.normal(size=N),
        "reversed": -ref,
        "noisy": ref + rng.normal(scale=4.0, size=N),
        "copy": ref,
        "sparse": np.nan,
    }, index=ref.index)
    scores.iloc[:3, scores.columns.get_loc("noisy")] = np.nan
    scores.iloc[:2, scores.columns.get_loc("sparse")] = [1.0, 2.0]
    return scores, ref


def test_correlate_orders_scores_and_counts_pre_screen_survivors(frame):
    scores, ref = frame
    ref = ref.copy()
    ref.iloc[-1] = np.nan
    table = correlate(scores, ref.sample(frac=1.0, random_state=0), n_boot=200).set_index("score")
    assert list(table.index) == ["copy", "noisy", "noise", "reversed", "sparse"]
    assert table.loc["copy", "kendall_tau"] == pytest.approx(1.0)
    assert 0.6 < table.loc["noisy", "kendall_tau"] < 1.0
    assert abs(table.loc["noise", "kendall_tau"]) < 0.3
    assert table.loc["reversed", "kendall_tau"] == pytest.approx(-1.0)
    assert table.loc["noisy", "tau_lo"] < table.loc["noisy", "kendall_tau"] < table.loc["noisy", "tau_hi"]
    assert table.loc["noisy", "rho_lo"] < table.loc["noisy", "spearman_rho"] < table.loc["noisy", "rho_hi"]
    assert table["n"].to_dict() == {"copy": N - 1, "noisy": N - 4, "noise": N - 1, "reversed": N - 1,
                                    "sparse": 2}


def test_correlate_top_kept_is_exact_for_copy_and_reversal(frame):
    scores, ref = frame
    table = correlate(scores, ref, n_boot=100).set_index("score")
    assert table.loc["copy", "top_kept"] == 1.0 and table.loc["copy", "best_kept"]
    assert table.loc["reversed", "top_kept"] == 0.0 and not table.loc["reversed", "best_kept"]
    sparse = table.loc["sparse"]
    assert sparse[["kendall_tau", "tau_lo", "spearman_rho", "top_kept"]].isna().all()
    assert pd.isna(sparse["best_kept"])


def test_prescreen_survival_counts_ties_as_their_expectation_whatever_the_row_order():
    from hvsearch.stats import prescreen_survival

    # reference: three tied for the top 2 places (2/3 each); score keeps 1 of 4: the first of them
    reference, score = [9.0, 9.0, 9.0, 1.0], [5.0, 4.0, 3.0, 2.0]
    kept, best = prescreen_survival(score, reference, top_fraction=0.5, keep=0.25)
    assert math.isclose(kept, (2 / 3) / 2) and math.isclose(best, 1 / 3)
    rng = np.random.default_rng(0)
    for _ in range(5):  # the same in any row order
        order = rng.permutation(4)
        again = prescreen_survival(np.array(score)[order], np.array(reference)[order], top_fraction=0.5, keep=0.25)
        assert np.allclose(again, (kept, best))


def test_correlate_is_deterministic_under_seed(frame):
    scores, ref = frame
    pd.testing.assert_frame_equal(correlate(scores, ref, n_boot=100, seed=3),
                                  correlate(scores, ref, n_boot=100, seed=3))


def test_plot_scatter_writes_png_with_inf_and_log_columns(tmp_path, frame):
    scores, ref = frame
    data = scores.assign(accuracy=ref, family=np.resize(["hire", "cmt", None], N))
    data["naswot"] = np.where(np.arange(N) % 7 == 0, -np.inf, ref)
    data["synflow"] = 10.0 ** (ref / 4)  # spans 10^0 .. 10^9.75: log axis
    table = correlate(data[["copy", "naswot", "synflow"]], data["accuracy"], n_boot=50)
    path = plot_scatter(data, ["copy", "noisy", "naswot", "synflow", "sparse"], "accuracy",
                        tmp_path / "plots" / "zc.png", stats=table, color_by="family", title="test")
    assert path == tmp_path / "plots" / "zc.png"
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_plot_scatter_names_missing_columns(tmp_path, frame):
    scores, _ = frame
    with pytest.raises(ValueError, match="accuracy"):
        plot_scatter(scores, ["copy"], "accuracy", tmp_path / "x.png")
