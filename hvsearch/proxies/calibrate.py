"""``hvsearch calibrate SPACE``: how well do cheap proxies rank this space's architectures?

1. **Sample** ``n`` architectures, stratified: a pool of valid, distinct draws (``pool_factor · n``,
   seeded, the space's constraints applied) is split into strata by *dominant mixer* (the mixer
   type of most blocks; ties go to the deeper stage) × *size* (terciles of the pool's parameter
   counts), and the sample takes one architecture per stratum in turn (strata in a seeded order,
   a random member of each) until it has ``n``. Every family and size present in the space is
   represented before any stratum gets a second member.
2. **Train** every sampled architecture twice, through the same machinery as ``hvsearch run``
   (Ray Tune trials, Optuna studies in persistent storage, Optuna's grid sampler visiting each
   candidate once, no early stopping): with the space's proxy settings (study
   ``<name>-proxy``) and with the reference budget, ``reference_epochs`` (default 5 × the proxy's)
   with everything else equal (study ``<name>-reference``). Both studies live in one storage
   (``studies/<name>.db``); re-running the command continues them, training only what is left.
3. **Score** each architecture with the zero-cost scores (on one seeded batch of the space's
   training data, weights from ``seed``), kept in the proxy study (user attr ``zero_cost``) so a
   re-run does not recompute them.
4. **Correlate** every cheap score — the zero-cost scores, params, FLOPs, the proxy's accuracy
   after each epoch (``proxy@1`` is what ASHA's first rung sees) and at its end (``proxy``) —
   with the reference accuracy: Kendall τ-b and Spearman ρ with bootstrap confidence intervals,
   plus the reference run's own accuracy every proxy-length of epochs (``reference@k``: what a
   proxy k epochs long on the reference's schedule would see, free since it is the same run),
   and how many of the reference's top quarter a pre-screen keeping the score's better half would
   keep. Written to ``results/<name>/``: ``calibration.csv`` (the table), ``archs.csv`` (one row
   per architecture) and ``calibration.png`` (a scatter per score).
"""
from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from hvsearch.errors import HVSearchError, SpecError

ZERO_COST = ("synflow", "naswot", "grad_norm", "snip")
DEFAULT_N = 20
DEFAULT_FACTOR = 5


class CalibrationError(HVSearchError):
    """The space cannot give the sample asked for, or the studies hold too little to correlate."""


@dataclass(frozen=True)
class Candidate:
    label: str
    spec: Any  # ModelSpec
    family: str  # dominant mixer type
    params: int
    size_bin: int  # 0, 1, 2: small, medium, large within the pool

    @property
    def stratum(self) -> str:
        return f"{self.family}/{('small', 'medium', 'large')[self.size_bin]}"


@dataclass
class Calibration:
    table: pd.DataFrame  # one row per cheap score
    archs: pd.DataFrame  # one row per architecture
    out_dir: Path
    proxy_study: str
    reference_study: str
    storage: str


# ---- sampling ---------------------------------------------------------------------------------

def dominant_mixer(spec) -> str:
    """The mixer type of most blocks (ties: the type of the deeper stage)."""
    blocks: Counter[str] = Counter()
    last: dict[str, int] = {}
    for i, s in enumerate(spec.stages):
        blocks[s.mixer.type] += s.depth
        last[s.mixer.type] = i
    return max(blocks, key=lambda t: (blocks[t], last[t]))


def count_params(spec) -> int:
    """Parameters of the model (with its classifier), built on the meta device: no memory, no init."""
    import torch

    from hvsearch.models import build_model

    with torch.device("meta"):
        model = build_model(spec)
    return sum(p.numel() for p in model.parameters())


def stratified_sample(space, n: int = DEFAULT_N, *, seed: int = 0, pool_factor: int = 10,
                      out: IO[str] | None = None) -> list[Candidate]:
    """``n`` distinct valid architectures of ``space`` stratified by dominant mixer × size (see
    the module docstring); deterministic given ``seed``."""
    import numpy as np

    from hvsearch.space import RandomTrial

    if n < 4:
        raise CalibrationError(f"calibrate needs n >= 4 architectures to rank (a rank correlation of "
                               f"fewer means little), got {n}")
    rng = random.Random(seed)
    target, attempts = pool_factor * n, 0
    pool: dict[str, tuple[Any, int]] = {}
    limit = max(50 * target, 2000)
    cons = space.constraints
    while len(pool) < target and attempts < limit:
        attempts += 1
        try:
            spec = space.arch.sample(RandomTrial(rng))
        except SpecError:
            continue
        if spec.arch_id in pool:
            continue
        params = count_params(spec)
        if cons.max_params is not None and params > cons.max_params:
            continue
        pool[spec.arch_id] = (spec, params)
    if len(pool) < n:
        raise CalibrationError(f"the space gave only {len(pool)} distinct valid architectures within "
                               f"the constraints in {attempts} draws; calibrate -n {n} needs {n}")
    specs = list(pool.values())
    logp = np.log([p for _, p in specs])
    edges = np.quantile(logp, [1 / 3, 2 / 3])
    strata: dict[tuple[str, int], list[tuple[Any, int, int]]] = {}
    for (spec, params), lp in zip(specs, logp):
        b = int(np.searchsorted(edges, lp, side="right"))
        strata.setdefault((dominant_mixer(spec), b), []).append((spec, params, b))
    order = sorted(strata)
    rng.shuffle(order)
    chosen: list[tuple[Any, int, int]] = []
    flops_ok = _flops_check(space)
    while len(chosen) < n and any(strata.values()):
        for key in order:
            members = strata[key]
            while members and len(chosen) < n:
                spec, params, b = members.pop(rng.randrange(len(members)))
                if flops_ok(spec):
                    chosen.append((spec, params, b))
                    break
    if len(chosen) < n:
        raise CalibrationError(f"only {len(chosen)} sampled architectures meet constraints.max_flops; "
                               f"calibrate -n {n} needs {n}")
    # labels in stratum order, so that the table reads family by family, small to large
    chosen.sort(key=lambda c: (dominant_mixer(c[0]), c[1]))
    out_ = [Candidate(f"c{i:02d}", spec, dominant_mixer(spec), params, b) for i, (spec, params, b) in enumerate(chosen)]
    if out is not None:
        cells = Counter(c.stratum for c in out_)
        print(f"sampled {n} architectures from a pool of {len(pool)} ({len(strata)} strata): "
              + ", ".join(f"{k} {v}" for k, v in sorted(cells.items())), file=out, flush=True)
    return out_


def _flops_check(space):
    if space.constraints.max_flops is None:
        return lambda spec: True

    def ok(spec) -> bool:
        from hvsearch.cost import count_spec

        res = space.constraints.resolution or spec.resolution
        return count_spec(spec, resolution=res).flops <= space.constraints.max_flops

    return ok


# ---- the two trainings ------------------------------------------------------------------------

def candidate_space(space, candidates: list[Candidate], *, name: str, epochs: int):
    """The space's settings with its architecture space replaced by the fixed candidates: one
    trial each (Optuna's grid sampler), ``epochs`` epochs, no early stopping."""
    from hvsearch.scaling.grid import CandidateSpace
    from hvsearch.space.schema import SearchSettings

    archs = {c.label: c.spec.to_dict() for c in candidates}
    search = SearchSettings(sampler="grid", seed=space.search.seed, objectives=("accuracy",),
                            trials=len(archs), grace_period=epochs, reduction_factor=2)
    raw = {"arch": archs, "constraints": space.raw.get("constraints") or {}}
    return dataclasses.replace(space, name=name, arch=CandidateSpace(archs), search=search,
                               train=dataclasses.replace(space.train, epochs=epochs),
                               source=f"calibrate {space.source}", raw=raw)


def run_calibration(space, *, n: int = DEFAULT_N, reference_epochs: int | None = None, seed: int = 0,
                    study: str | None = None, storage: str | None = None, address: str | None = None,
                    num_cpus: int | None = None, n_boot: int = 1000, studies_dir: str | Path = "studies",
                    results_dir: str | Path = "results", out: IO[str] | None = None) -> Calibration:
    """Sample, train both budgets, score, correlate; see the module docstring."""
    from hvsearch.search.runner import init_ray, run_search
    from hvsearch.search.study import load_study, storage_url

    out = out or sys.stdout
    proxy_epochs = int(space.train.epochs)
    ref_epochs = reference_epochs if reference_epochs is not None else DEFAULT_FACTOR * proxy_epochs
    if not isinstance(ref_epochs, int) or ref_epochs <= proxy_epochs:
        raise CalibrationError(f"--reference-epochs must be an integer above the proxy's train.epochs "
                               f"{proxy_epochs} (the reference is the longer training), got {ref_epochs}")
    base = study or f"{space.name}-calibrate"
    url = storage_url(base, storage, studies_dir)
    t0 = time.monotonic()
    print(f"calibrate {space.source}: {n} architectures, proxy {proxy_epochs} epoch(s) vs reference "
          f"{ref_epochs} epoch(s) ({ref_epochs / proxy_epochs:g}x); studies {base}-proxy and "
          f"{base}-reference in {url}", file=out, flush=True)
    candidates = stratified_sample(space, n, seed=seed, out=out)
    names = {"proxy": f"{base}-proxy", "reference": f"{base}-reference"}
    # one Ray for both trainings (started only when something is left to train)
    started = init_ray(address, num_cpus) if not all(_finished(names[r], url, n) for r in names) else False
    try:
        for role, epochs in (("proxy", proxy_epochs), ("reference", ref_epochs)):
            print(f"--- {role} training: {epochs} epoch(s) per architecture", file=out, flush=True)
            run_search(candidate_space(space, candidates, name=names[role], epochs=epochs), study=names[role],
                       storage=url, studies_dir=studies_dir, results_dir=results_dir, out=out)
    finally:
        if started:
            import ray

            ray.shutdown()
    proxy = load_study(names["proxy"], url)
    reference = load_study(names["reference"], url)
    scores = zero_cost_scores(proxy, candidates, space, seed=seed, out=out)
    archs = arch_table(candidates, proxy, reference, scores, prefix_every=proxy_epochs, reference_epochs=ref_epochs)
    table = correlation_table(archs, n_boot=n_boot, seed=seed)
    out_dir = write_calibration(archs, table, Path(results_dir) / base,
                                title=f"{space.name}: {len(archs)} architectures, reference "
                                f"{ref_epochs} epochs vs proxy {proxy_epochs}")
    print(f"--- calibration of {space.name} ({time.monotonic() - t0:.0f} s): rank agreement with the "
          f"{ref_epochs}-epoch reference", file=out)
    print(render(table), file=out)
    print(f"written {out_dir}/calibration.csv, archs.csv, calibration.png", file=out, flush=True)
    return Calibration(table, archs, out_dir, names["proxy"], names["reference"], url)


def _finished(study: str, url: str, n: int) -> bool:
    """Whether ``study`` exists in ``url`` with its ``n`` trainings done."""
    import optuna

    from hvsearch.search import study as st

    storage = st.open_storage(url)
    if study not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return False
    done = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return sum(t.user_attrs.get(st.ATTR_STATUS) in st.TRAINED_STATUSES for t in done) >= n


# ---- scores -----------------------------------------------------------------------------------

def zero_cost_scores(study, candidates: list[Candidate], space, *, seed: int = 0,
                     out: IO[str] | None = None) -> dict[str, dict[str, float]]:
    """arch id -> {score: value} for every zero-cost score, computed once and kept in ``study``'s
    user attr ``zero_cost`` (non-finite values as text: JSON has no infinities)."""
    from hvsearch.proxies.zero_cost import data_batch, score

    kept: dict[str, dict[str, Any]] = dict(study.user_attrs.get("zero_cost") or {})
    todo = [c for c in candidates if set(ZERO_COST) - set(kept.get(c.spec.arch_id, {}))]
    batches: dict[int, tuple] = {}
    t0 = time.monotonic()
    for i, c in enumerate(todo):
        res = c.spec.resolution
        if res not in batches:
            batches[res] = data_batch(space.data, res, 64, seed=seed)
        x, y, classes = batches[res]
        values = {}
        for name in ZERO_COST:
            try:
                v = score(c.spec, name, (x, y), seed=seed, resolution=res, num_classes=classes)
            except Exception as e:  # recorded as missing (NaN), reported
                print(f"  {c.label} {name} failed: {type(e).__name__}: {e}", file=out or sys.stdout)
                v = math.nan
            values[name] = v if math.isfinite(v) else str(v)
        kept[c.spec.arch_id] = values
        study.set_user_attr("zero_cost", kept)
        if out is not None:
            print(f"  zero-cost scores {i + 1}/{len(todo)} ({c.label}, {time.monotonic() - t0:.0f} s)",
                  file=out, flush=True)
    return {aid: {k: float(v) for k, v in vals.items()} for aid, vals in kept.items()}


def arch_table(candidates: list[Candidate], proxy, reference, scores: dict[str, dict[str, float]], *,
               prefix_every: int | None = None, reference_epochs: int | None = None) -> pd.DataFrame:
    """One row per sampled architecture: stratum, cost, zero-cost scores, proxy accuracy per epoch,
    reference accuracy (NaN where a training did not complete) and, every ``prefix_every``
    epochs before its end, the reference run's own accuracy so far (``reference@k``)."""
    from hvsearch.search import study as st

    def by_arch(study) -> dict[str, Any]:
        from optuna.trial import TrialState

        out = {}
        for t in study.get_trials(deepcopy=False):
            aid = t.user_attrs.get(st.ATTR_ARCH_ID)
            if aid and (aid not in out or t.state == TrialState.COMPLETE):
                out[aid] = t
        return out

    p_trials, r_trials = by_arch(proxy), by_arch(reference)
    rows = []
    for c in candidates:
        aid = c.spec.arch_id
        p, r = p_trials.get(aid), r_trials.get(aid)
        row: dict[str, Any] = {
            "label": c.label, "stratum": c.stratum, "family": c.family,
            "mixers": "/".join(s.mixer.type for s in c.spec.stages),
            "depths": "-".join(str(s.depth) for s in c.spec.stages),
            "widths": "-".join(str(s.width) for s in c.spec.stages),
            "params": c.params, "flops": (p or r).user_attrs.get(st.ATTR_FLOPS) if (p or r) else math.nan,
        }
        row.update(scores.get(aid, {k: math.nan for k in ZERO_COST}))
        for epoch, value in sorted((p.intermediate_values if p else {}).items()):
            row[f"proxy@{epoch}"] = value
        row["proxy"] = _final(p)
        if prefix_every and reference_epochs:
            curve = r.intermediate_values if not math.isnan(_final(r)) else {}  # completed runs only
            for k in range(prefix_every, reference_epochs, prefix_every):
                row[f"reference@{k}"] = curve.get(k, math.nan)
        row["reference"] = _final(r)
        row["proxy_status"] = p.user_attrs.get(st.ATTR_STATUS) if p else "not run"
        row["reference_status"] = r.user_attrs.get(st.ATTR_STATUS) if r else "not run"
        row["arch_id"] = aid
        rows.append(row)
    df = pd.DataFrame(rows)
    epochs = sorted((c for c in df.columns if c.startswith("proxy@")), key=lambda c: int(c.split("@")[1]))
    if epochs:
        # the last epoch is the proxy itself
        df = df.drop(columns=epochs[-1])
    return df


def _final(trial) -> float:
    from optuna.trial import TrialState

    if trial is None or trial.state != TrialState.COMPLETE or not trial.values:
        return math.nan
    return float(trial.values[0])


def cheap_scores(archs: pd.DataFrame) -> list[str]:
    """The columns of ``archs`` that are cheap scores, in table order."""
    epochs = sorted((c for c in archs.columns if c.startswith("proxy@")), key=lambda c: int(c.split("@")[1]))
    prefixes = sorted((c for c in archs.columns if c.startswith("reference@")), key=lambda c: int(c.split("@")[1]))
    return [*ZERO_COST, "params", "flops", *epochs, "proxy", *prefixes]


def correlation_table(archs: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    from hvsearch.proxies.stats import correlate

    usable = archs["reference"].notna().sum()
    if usable < 4:
        raise CalibrationError(f"only {usable} architectures finished the reference training; "
                               "a rank correlation needs 4 or more (see the reference study's failures)")
    cols = [c for c in cheap_scores(archs) if c in archs.columns]
    scores = archs[cols].astype(float)
    table = correlate(scores, archs["reference"].astype(float), n_boot=n_boot, seed=seed)
    kind = {**{k: "zero-cost" for k in ZERO_COST}, "params": "size", "flops": "size"}
    table.insert(1, "kind", [kind.get(s, "reference prefix" if s.startswith("reference@") else "training")
                             for s in table["score"]])
    return table


def render(table: pd.DataFrame) -> str:
    def ci(v, lo, hi) -> str:
        return "n/a" if pd.isna(v) else f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]"

    shown = pd.DataFrame({
        "score": table["score"], "kind": table["kind"], "n": table["n"],
        "Kendall tau [95% CI]": [ci(*r) for r in table[["kendall_tau", "tau_lo", "tau_hi"]].itertuples(index=False)],
        "Spearman rho [95% CI]": [ci(*r) for r in table[["spearman_rho", "rho_lo", "rho_hi"]].itertuples(index=False)],
        "top-25% kept at 50%": [("n/a" if pd.isna(v) else f"{v:.0%}") for v in table["top_kept"]],
    })
    return shown.to_string(index=False)


def write_calibration(archs: pd.DataFrame, table: pd.DataFrame, out_dir: Path, *, title: str = "") -> Path:
    from hvsearch.proxies.stats import plot_scatter

    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "calibration.csv", index=False)
    archs.to_csv(out_dir / "archs.csv", index=False)
    cols = [c for c in cheap_scores(archs) if c in archs.columns]
    plot_scatter(archs, cols, "reference", out_dir / "calibration.png", stats=table, color_by="family",
                 title=title)
    return out_dir
