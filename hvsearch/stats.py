"""How well cheap scores rank architectures: rank correlations with bootstrap intervals, pre-screen
survival, and scatter plots against a reference (trained accuracy).

Every statistic takes 1-D arrays (one sample, returns a float) or 2-D ``(B, N)`` arrays (B samples
of N pairs each, returns shape ``(B,)``) and is vectorised over B, which is how
:func:`bootstrap_ci` evaluates all resamples at once. Ranks are computed by value, so ``-inf``
(e.g. a ``naswot`` score of a network blind to its input) is a valid, lowest value; NaN is not
and raises. Statistics that are undefined (a constant side, fewer than two pairs) are NaN.

    table = correlate(scores_frame, accuracy)   # one row per score, best Kendall τ first
    plot_scatter(frame, list(scores_frame), "accuracy", "results/zc.png", stats=table)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

# Largest number of pair entries (B·N·N) of one block of Kendall sign matrices: bounds memory
# when bootstrapping hundreds of architectures (1000 resamples × 300² pairs would be 90 M).
_PAIR_BLOCK = 1 << 22
# Slack for ceil(fraction·n): 0.1 * 30 is 3.0000000000000004 and must keep 3, not 4.
_CEIL_EPS = 1e-9


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties get their mean rank) along the last axis."""
    a = np.asarray(x, dtype=float)
    if a.ndim == 0:
        raise ValueError("rankdata needs at least one axis, got a scalar")
    if np.isnan(a).any():
        raise ValueError("rankdata cannot rank NaN; drop missing values first")
    if a.size == 0:
        return np.zeros(a.shape)
    n = a.shape[-1]
    flat = a.reshape(-1, n)
    order = np.argsort(flat, axis=-1, kind="stable")
    ordered = np.take_along_axis(flat, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), flat.shape)
    # A tie group runs from its first to its last sorted position; every member gets their mean.
    starts = np.ones(flat.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(flat.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=-1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=-1)[:, ::-1]
    ranks = np.empty(flat.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks.reshape(a.shape)


def _paired(x, y) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both sides as float ``(B, N)`` arrays, and whether the input was 1-D."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (1, 2):
        raise ValueError(f"x and y must be 1-D (N,) or 2-D (B, N), got {a.ndim}-D")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("x and y must not contain NaN; drop missing pairs first")
    return np.atleast_2d(a), np.atleast_2d(b), a.ndim == 1


def _result(values: np.ndarray, one: bool) -> float | np.ndarray:
    return float(values[0]) if one else values


def spearman(x, y) -> float | np.ndarray:
    """Spearman ρ: Pearson correlation of average ranks; NaN where either side is constant."""
    a, b, one = _paired(x, y)
    ra, rb = rankdata(a), rankdata(b)
    constant = (ra == ra[:, :1]).all(axis=1) | (rb == rb[:, :1]).all(axis=1)
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    den[constant] = 1.0
    rho = np.clip((ra * rb).sum(axis=1) / den, -1.0, 1.0)
    rho[constant] = np.nan
    return _result(rho, one)


def _signs(a: np.ndarray) -> np.ndarray:
    """``sign(a_i - a_j)`` as int8 ``(B, N, N)``; comparisons, since ``-inf - -inf`` is NaN."""
    gt = a[:, :, None] > a[:, None, :]
    lt = a[:, :, None] < a[:, None, :]
    return gt.astype(np.int8) - lt.astype(np.int8)


def kendall(x, y) -> float | np.ndarray:
    """Kendall τ-b, ``(C − D) / sqrt((n0 − n1)(n0 − n2))``; NaN where either side is constant."""
    a, b, one = _paired(x, y)
    n_rows, n = a.shape
    n0 = n * (n - 1) / 2
    tau = np.empty(n_rows)
    step = max(1, _PAIR_BLOCK // max(n * n, 1))
    for lo in range(0, n_rows, step):
        sa, sb = _signs(a[lo:lo + step]), _signs(b[lo:lo + step])
        # Full matrices count each pair twice; the diagonal adds n zeros to each tie count.
        c_minus_d = (sa * sb).sum(axis=(1, 2), dtype=np.int64) / 2
        n1 = ((sa == 0).sum(axis=(1, 2), dtype=np.int64) - n) / 2
        n2 = ((sb == 0).sum(axis=(1, 2), dtype=np.int64) - n) / 2
        den = np.sqrt((n0 - n1) * (n0 - n2))
        defined = den > 0
        tau[lo:lo + step] = np.where(defined, c_minus_d / np.where(defined, den, 1.0), np.nan)
    return _result(np.clip(tau, -1.0, 1.0), one)


def bootstrap_ci(x, y, stat: Callable, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``stat`` over ``n_boot`` resamples of the N pairs (with replacement).

    ``stat`` gets all resamples as ``(n_boot, N)`` arrays; NaN resamples (e.g. a constant draw) are
    dropped; ``(nan, nan)`` if none is left.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    values = np.asarray(stat(a[idx], b[idx]), dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _membership(values: np.ndarray, k: int) -> np.ndarray:
    """The chance that each position is among the ``k`` highest values when ties are broken at
    random: 1 above the cut, 0 below it, and for the group tied at the cut the slots it has left
    over its size (7 architectures tied at 100% for 5 places: 5/7 each)."""
    v = np.asarray(values, dtype=float)
    cut = np.sort(v)[::-1][k - 1]
    above, at = v > cut, v == cut
    p = above.astype(float)
    p[at] = (k - above.sum()) / at.sum()
    return p


def _ceil_count(fraction: float, n: int) -> int:
    return max(1, math.ceil(fraction * n - _CEIL_EPS))


def prescreen_survival(score, reference, *, top_fraction: float = 0.25,
                       keep: float = 0.5) -> tuple[float, float]:
    """What a pre-screen keeping the ``score``'s top ``ceil(keep·n)`` saves of the
    ``reference``'s top ``ceil(top_fraction·n)``: the share of them it keeps, and the chance that
    it keeps the reference's best. Both 1-D, no NaN. Ties (in either) are counted as the
    expectation over breaking them at random, so the numbers do not depend on the order of the
    rows: with no ties the share is exact and the chance 0 or 1."""
    s, r = np.asarray(score, dtype=float), np.asarray(reference, dtype=float)
    n = s.size
    k = _ceil_count(top_fraction, n)
    in_best, in_kept = _membership(r, k), _membership(s, _ceil_count(keep, n))
    best = r == r.max()  # the best, or the architectures tied for it (one of them at random)
    return float((in_best * in_kept).sum() / k), float(in_kept[best].mean())


def correlate(scores: pd.DataFrame, reference: pd.Series, *, n_boot: int = 1000,
              level: float = 0.95, seed: int = 0, top_fraction: float = 0.25,
              keep: float = 0.5) -> pd.DataFrame:
    """One row per column of ``scores`` (higher = predicted better) against ``reference``.

    Rows are matched by index; ``n`` counts those where both the score and the reference are
    present and not NaN (``-inf`` counts, as the lowest value). Columns: ``kendall_tau``,
    ``spearman_rho`` with their bootstrap intervals (``tau_lo``/``tau_hi``, ``rho_lo``/``rho_hi``,
    same ``seed`` for every score), ``top_kept``: the fraction of the reference's top
    ``ceil(top_fraction·n)`` that fall within the score's top ``ceil(keep·n)`` (what a pre-screen
    keeping that share would save of the truly best), and ``best_kept``: the chance that the
    reference's best survives it (:func:`prescreen_survival`: ties count as their expectation over
    random tie-breaks, not by row order). Fewer than 3 usable pairs give NaN. Sorted by
    ``kendall_tau``, NaN last.
    """
    if not 0 < top_fraction <= 1 or not 0 < keep <= 1:
        raise ValueError(f"top_fraction and keep must be in (0, 1], got {top_fraction} and {keep}")
    if not reference.index.is_unique:
        raise ValueError("reference index must be unique to match rows of scores")
    ref = reference.reindex(scores.index).to_numpy(dtype=float)
    rows = []
    for name in scores.columns:
        values = scores[name].to_numpy(dtype=float)
        usable = ~np.isnan(values) & ~np.isnan(ref)
        s, r = values[usable], ref[usable]
        n = int(usable.sum())
        row = dict(score=name, n=n, kendall_tau=math.nan, tau_lo=math.nan, tau_hi=math.nan,
                   spearman_rho=math.nan, rho_lo=math.nan, rho_hi=math.nan, top_kept=math.nan,
                   best_kept=math.nan)
        if n >= 3:
            tau_lo, tau_hi = bootstrap_ci(s, r, kendall, n_boot=n_boot, level=level, seed=seed)
            rho_lo, rho_hi = bootstrap_ci(s, r, spearman, n_boot=n_boot, level=level, seed=seed)
            top_kept, best_kept = prescreen_survival(s, r, top_fraction=top_fraction, keep=keep)
            row.update(kendall_tau=kendall(s, r), tau_lo=tau_lo, tau_hi=tau_hi,
                       spearman_rho=spearman(s, r), rho_lo=rho_lo, rho_hi=rho_hi,
                       top_kept=top_kept, best_kept=best_kept)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["score", "n", "kendall_tau", "tau_lo", "tau_hi",
                                        "spearman_rho", "rho_lo", "rho_hi", "top_kept", "best_kept"])
    table = table.sort_values("kendall_tau", ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def _panel_title(name: str, stats: pd.DataFrame | None) -> str:
    if stats is None:
        return name
    match = stats[stats["score"] == name]
    if match.empty:
        return name
    r = match.iloc[0]
    return (f"{name}\nτ={r.kendall_tau:.2f} [{r.tau_lo:.2f}, {r.tau_hi:.2f}]  "
            f"ρ={r.spearman_rho:.2f} [{r.rho_lo:.2f}, {r.rho_hi:.2f}]")


def plot_scatter(frame: pd.DataFrame, scores: list[str], reference: str, path, *,
                 stats: pd.DataFrame | None = None, color_by: str | None = None,
                 title: str = "") -> Path:
    """One panel per score (x) against ``reference`` (y), ≤ 4 per row; returns the saved path.

    An x axis is logarithmic when all of the score's values are > 0 and span more than 100×;
    ±inf scores are left out of their panel with a note. ``color_by`` names a categorical column
    (one legend for the figure); ``stats`` (from :func:`correlate`) adds τ and ρ with their
    intervals to the titles. PNG at 120 dpi unless ``path``'s suffix names another format.
    """
    from matplotlib.figure import Figure  # no pyplot: needs no GUI backend
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter, MaxNLocator

    if not scores:
        raise ValueError("plot_scatter needs at least one score column")
    missing = [c for c in [*scores, reference, *([color_by] if color_by else [])]
               if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in frame; it has {list(frame.columns)}")

    if color_by is None:
        codes, colors, labels = np.zeros(len(frame), dtype=int), ["C0"], []
    else:
        cat = pd.Categorical(frame[color_by])
        # NaN categories have code -1, which picks the grey appended last.
        codes = np.asarray(cat.codes)
        labels = [str(c) for c in cat.categories]
        colors = [f"C{i % 10}" for i in range(len(labels))] + ["0.6"]
        if (codes == -1).any():
            labels.append("n/a")

    ncols = min(4, len(scores))
    nrows = math.ceil(len(scores) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    y_all = frame[reference].to_numpy(dtype=float)
    for ax, name in zip(axes, scores):
        x = frame[name].to_numpy(dtype=float)
        present = ~np.isnan(x) & np.isfinite(y_all)
        finite = present & np.isfinite(x)
        for c in np.unique(codes[finite]):
            sel = finite & (codes == c)
            ax.scatter(x[sel], y_all[sel], s=12, alpha=0.8, color=colors[c], linewidths=0)
        xs = x[finite]
        if xs.size and (x[present] > 0).all() and xs.max() / xs.min() > 100:
            ax.set_xscale("log")
        elif xs.size and np.abs(xs).max() >= 1e4:
            # params and FLOPs: "400k", "1.2M", at most 4 ticks, instead of overlapping 6-digit labels
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        notes = [f"{int((present & (x == v)).sum())} at {v} not shown"
                 for v in (-np.inf, np.inf) if (present & (x == v)).any()]
        if notes:
            ax.text(0.02, 0.98, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7)
        ax.set_title(_panel_title(name, stats), fontsize=8)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(reference, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(scores):]:
        ax.set_visible(False)
    if labels:
        # colors ends with the NaN grey, so slicing to the labels includes it exactly when "n/a" is
        handles = [Line2D([], [], marker="o", linestyle="", color=c) for c in colors[:len(labels)]]
        fig.legend(handles, labels, title=color_by, loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
