"""A study's results as files and tables.

``results/<study>/``:

* ``trials.csv`` — one row per trial: number, state, status, objective values, final metrics,
  params, FLOPs, epochs, training time, node, failure reason, then every architecture knob
  flattened (``stages.2.mixer.type``, ``stages.2.mixer.region``, ...).
* ``best.yaml`` — the best trained architecture with its scores; ``ModelSpec.load`` reads it, so
  ``hvsearch show|train|scale results/<study>/best.yaml`` take it as is.
* ``pareto.csv`` and ``pareto.png`` — the trained trials not beaten on both accuracy and cost
  (FLOPs, or params when that is the study's second objective), and the plot of accuracy against
  that cost. Written for every study; the Pareto front is *the* result of a multi-objective one.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hvsearch.search import study as st
from hvsearch.values import is_int

COLUMNS = ["trial", "state", "status", "val_top1", "val_top5", "train_loss", "params", "flops", "latency_ms",
           "epochs", "train_time_s", "driver_time_s", "images_per_s", "arch_id", "node_id", "fail_reason"]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and any(isinstance(v, (dict, list)) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = d
    return out


def trials_frame(study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        last = (a.get(st.ATTR_HISTORY) or [{}])[-1]
        row: dict[str, Any] = {
            "trial": t.number, "state": t.state.name, "status": a.get(st.ATTR_STATUS),
            "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"),
            "train_loss": last.get("train_loss"), "params": a.get(st.ATTR_PARAMS),
            "flops": a.get(st.ATTR_FLOPS), "latency_ms": a.get(st.ATTR_LATENCY), "epochs": a.get(st.ATTR_EPOCHS),
            "train_time_s": a.get(st.ATTR_TRAIN_TIME), "driver_time_s": a.get(st.ATTR_DRIVER_TIME),
            "images_per_s": last.get("images_per_s"),
            "arch_id": a.get(st.ATTR_ARCH_ID), "node_id": a.get(st.ATTR_NODE),
            "fail_reason": a.get(st.ATTR_REASON),
        }
        pre = a.get(st.ATTR_PRESCREEN)
        if pre:
            row["prescreen_score"] = float(pre["value"])  # "-inf" is stored as text (JSON has no inf)
            row["prescreen_rank"] = pre["rank"]
        if t.values:
            for i, v in enumerate(t.values):
                row[f"value_{i}"] = v
        if a.get(st.ATTR_ARCH):
            row.update({f"arch.{k}": v for k, v in flatten(json.loads(a[st.ATTR_ARCH])).items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    for col in df.columns:  # a column of integers stays integers, with gaps (pandas would make it float)
        present = [r[col] for r in rows if r.get(col) is not None]
        if present and all(is_int(v) for v in present):
            df[col] = df[col].astype("Int64")
    lead = [c for c in COLUMNS if c in df.columns] + sorted(c for c in df.columns if c.startswith("value_"))
    return df[lead + sorted((c for c in df.columns if c not in lead), key=_column_order(df.columns))]


def _column_order(columns):
    """Sort key for the columns after the lead: other columns, the architecture's global knobs,
    then each stage's knobs together (stage 0, 1, ...), each group in first-seen order."""
    first = {c: i for i, c in enumerate(columns)}

    def key(col: str):
        parts = col.split(".")
        if parts[0] != "arch":
            return (0, 0, first[col])
        if len(parts) > 2 and parts[1] == "stages" and parts[2].isdigit():
            return (2, int(parts[2]), first[col])
        return (1, 0, first[col])

    return key


def cost_objective(study) -> str:
    objectives = study.user_attrs.get("objectives") or ["accuracy"]
    return "params" if "params" in objectives else "latency_ms" if "latency" in objectives else "flops"


def pareto_front(df: pd.DataFrame, cost: str = "flops") -> pd.DataFrame:
    """Trained trials that no other trained trial beats on both accuracy (higher) and ``cost``
    (lower), sorted by cost."""
    done = df[(df["state"] == "COMPLETE") & df["val_top1"].notna() & df[cost].notna()]
    done = done.sort_values([cost, "val_top1"], ascending=[True, False])
    keep, best = [], float("-inf")
    for idx, row in done.iterrows():
        if row["val_top1"] > best:
            keep.append(idx)
            best = row["val_top1"]
    return done.loc[keep]


def best_trial(study):
    """The trained trial with the highest accuracy (ties: the cheaper one); None if none."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and st.ATTR_ARCH in t.user_attrs]
    if not done:
        return None
    return max(done, key=lambda t: (t.values[0], -float(t.user_attrs.get(st.ATTR_FLOPS) or 0)))


def write_results(study, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    df.to_csv(out / "trials.csv", index=False)
    best = best_trial(study)
    if best is not None:
        a = best.user_attrs
        doc = {"study": study.study_name, "trial": best.number, "arch_id": a.get(st.ATTR_ARCH_ID),
               "val_top1": best.values[0], "params": a.get(st.ATTR_PARAMS), "flops": a.get(st.ATTR_FLOPS),
               "cost_resolution": a.get(st.ATTR_COST_RES), "epochs": a.get(st.ATTR_EPOCHS),
               "arch": {"name": f"{study.study_name}-t{best.number}", **json.loads(a[st.ATTR_ARCH])}}
        (out / "best.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cost = cost_objective(study)
    if not df.empty and "val_top1" in df:
        front = pareto_front(df, cost)
        front[[c for c in df.columns if not c.startswith("arch.")]].to_csv(out / "pareto.csv", index=False)
        if not front.empty:
            plot_pareto(df, front, cost, out / "pareto.png", study.study_name)
    return out


_PREPARED: list = []  # the thread prepare_results started, once per process


def prepare_results() -> None:
    """Import the plotting library of :func:`plot_pareto` in a background thread (matplotlib,
    ~0.7 s of CPU: most of the time results take to write). The search calls it when a slot
    frees with no trial left to start, so that a core which would otherwise idle while the last
    trial trains does the work instead of the end of the run. Once per process; an import that
    fails here fails again, with its message, where the plot is drawn."""
    if _PREPARED:
        return

    def load() -> None:
        try:
            import matplotlib.figure  # noqa: F401
            import matplotlib.backends.backend_agg  # noqa: F401  (what savefig to .png draws with)
        except Exception:
            pass

    thread = threading.Thread(target=load, name="hvsearch-results-import", daemon=True)
    _PREPARED.append(thread)
    thread.start()


def join_prepared(timeout: float = 30.0) -> None:
    """Wait for :func:`prepare_results`'s thread, if one runs (before Ray shuts down, and so that
    the process never ends in the middle of the import: a first matplotlib import writes its
    font cache under a lock file)."""
    for thread in _PREPARED:
        thread.join(timeout)


def plot_pareto(df: pd.DataFrame, front: pd.DataFrame, cost: str, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, ~0.3 s less to import

    label, short, scale = {"flops": ("FLOPs (M multiply-adds)", "FLOPs", 1e6), "params": ("params (M)", "params", 1e6),
                           "latency_ms": ("latency (ms, median)", "latency", 1.0)}[cost]
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.subplots()
    for state, style in (("PRUNED", dict(c="0.75", marker="x", label="pruned (last epoch)")),
                         ("COMPLETE", dict(c="tab:blue", marker="o", label="trained"))):
        sub = df[(df["state"] == state) & df["val_top1"].notna() & df[cost].notna()]
        if not sub.empty:
            ax.scatter(sub[cost] / scale, sub["val_top1"], s=22, **style)
    ax.step(front[cost] / scale, front["val_top1"], where="post", c="tab:red", lw=1.2)
    ax.scatter(front[cost] / scale, front["val_top1"], c="tab:red", s=36, label="Pareto front", zorder=3)
    for _, row in front.iterrows():
        ax.annotate(str(int(row["trial"])), (row[cost] / scale, row["val_top1"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"{title}: accuracy vs {short}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


#: one number format per leaderboard column (the table view; CSV and JSON keep full precision)
def _fmt(spec: str):
    return lambda v: "-" if pd.isna(v) else spec.format(v)


LEADERBOARD_FORMATS = {"val_top1": _fmt("{:.2f}"), "val_top5": _fmt("{:.2f}"), "params_M": _fmt("{:.3f}"),
                       "MFLOPs": _fmt("{:.2f}"), "latency_ms": _fmt("{:.3g}"), "epochs": _fmt("{:.0f}"), "time_s": _fmt("{:.1f}")}


def leaderboard(study, top: int = 10, include_all: bool = False) -> pd.DataFrame:
    df = trials_frame(study)
    if df.empty:
        return df
    if not include_all:
        # (PRUNED is also the state of skipped and invalid draws, which never trained)
        df = df[df["status"].isin(["trained", "pruned"])]
    df = df.assign(_done=df["state"] == "COMPLETE").sort_values(
        ["_done", "val_top1"], ascending=[False, False], na_position="last")
    mixer_cols = [c for c in df.columns if c.startswith("arch.stages.") and c.endswith(".mixer.type")]
    depth_cols = [c for c in df.columns if c.startswith("arch.stages.") and c.endswith(".depth")]
    width_cols = [c for c in df.columns if c.startswith("arch.stages.") and c.endswith(".width")]

    def join(row, cols):
        return "/".join("" if pd.isna(row[c]) else str(int(row[c]) if isinstance(row[c], float) else row[c])
                        for c in cols)

    board = pd.DataFrame({
        "trial": df["trial"], "status": df["status"], "val_top1": df["val_top1"],
        "val_top5": df["val_top5"], "params_M": df["params"] / 1e6, "MFLOPs": df["flops"] / 1e6,
        "epochs": df["epochs"].astype(float), "time_s": df["train_time_s"],
        "mixers": [join(r, mixer_cols) for _, r in df.iterrows()],
        "depths": [join(r, depth_cols) for _, r in df.iterrows()],
        "widths": [join(r, width_cols) for _, r in df.iterrows()],
        "arch_id": df["arch_id"],
    })
    if df["latency_ms"].notna().any():  # the space measured latency (objective or constraint)
        board.insert(board.columns.get_loc("MFLOPs") + 1, "latency_ms", df["latency_ms"])
    if include_all:
        board["fail_reason"] = df["fail_reason"]
    return board.head(top) if top else board


def summary_line(study) -> str:
    from collections import Counter

    c = Counter(t.user_attrs.get(st.ATTR_STATUS, t.state.name.lower()) for t in study.get_trials(deepcopy=False))
    order = ("trained", "pruned", "failed", "running", "skipped", "invalid", "duplicate", "interrupted")
    parts = [f"{c[k]} {k}" for k in order if c.get(k)]
    parts += [f"{v} {k}" for k, v in c.items() if k not in order]
    return f"study {study.study_name}: {len(study.trials)} trials (" + ", ".join(parts) + ")"
