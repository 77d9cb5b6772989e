"""``hvsearch calibrate SPACE``: how well do cheap proxies rank this space's architectures?

1. **Sample** ``n`` architectures, stratified: a pool of valid, distinct draws (``pool_factor · n``,
   seeded, the space's constraints applied) is split into strata by *dominant mixer* (the mixer
   type of most blocks; ties go to the deeper stage) × *size* (terciles of the pool's parameter
   counts), and the sample takes one architecture per stratum in turn (strata in a seeded order,
   a random member of each) until it has ``n``. Every mixer and size present in the space is
   represented before any stratum gets a second member.
2. **Train** every sampled architecture through the same machinery as ``hvsearch run`` (Ray
   Tune trials, Optuna studies in persistent storage, Optuna's grid sampler visiting each
   candidate once, no early stopping): once with the space's proxy settings (study
   ``<name>-proxy``), and ``reference_seeds`` times (default 2) with the reference budget,
   ``reference_epochs`` (default 5 × the proxy's) with everything else equal but the training
   seed: seed k (0-based) trains with ``train.seed + k``, in study ``<name>-reference`` for k = 0
   (the name from before seeds, so older storages continue) and ``<name>-reference-seed<k>``
   after. All studies live in one storage (``studies/<name>.db``); re-running the command
   continues them, training only what is left.

   A calibration can instead **reuse another's reference** (``reference_study``): its seed
   studies are read where they are, no copy, after checking that they were trained on this
   calibration's sample, data, recipe and reference epochs (:func:`reference_setup`, stamped on
   every reference study); an incomplete one is finished, none is ever extended.
3. **Score** each architecture with the zero-cost scores (on one seeded batch of the space's
   training data, weights from ``seed``), kept in the proxy study (user attr ``zero_cost``) so a
   re-run does not recompute them.
4. **Correlate** every cheap score — the zero-cost scores, params, FLOPs, the proxy's accuracy
   after each epoch (``proxy@1`` is what ASHA's first rung sees) and at its end (``proxy``) —
   with the reference accuracy averaged over its seeds: Kendall τ-b and Spearman ρ with
   bootstrap confidence intervals, plus the seed-averaged reference curve every proxy-length of
   epochs (``reference@k``: what a proxy k epochs long on the reference's schedule would see,
   free since it is the same runs), and how many of the reference's top quarter a pre-screen
   keeping the score's better half would keep. With two or more seeds the table opens with the
   **ceiling**: the reference's agreement with itself across seeds (:func:`ceiling_row`), which no
   proxy can be expected to beat, and gives each score's τ as a share of it. Architectures whose
   seeds never leave chance or disagree wildly are flagged (``CHANCE_MARGIN``). Written to
   ``results/<name>/``: ``calibration.csv`` (the table), ``archs.csv`` (one row per
   architecture) and ``calibration.png`` (a scatter per score).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from hvsearch.errors import CalibrationError, SpecError
from hvsearch.values import is_int, is_number

ZERO_COST = ("synflow", "naswot", "grad_norm", "snip")
DEFAULT_N = 20
DEFAULT_FACTOR = 5
DEFAULT_REFERENCE_SEEDS = 2

#: The ``flag`` of an architecture in archs.csv, in accuracy points, from its reference seeds'
#: final accuracies (only where every seed finished): "never leaves chance" when every seed ends
#: below chance (100 / classes) + CHANCE_MARGIN; "seeds disagree" when their spread (max − min)
#: exceeds max(DISAGREE_POINTS, DISAGREE_FACTOR × the sample's median spread). Either way the
#: architecture's reference accuracy is not to be trusted, so its place in the ranking may be noise.
CHANCE_MARGIN = 5.0
DISAGREE_POINTS = 20.0
DISAGREE_FACTOR = 3.0
NEVER_LEAVES_CHANCE = "never leaves chance"
SEEDS_DISAGREE = "seeds disagree"

#: User attrs of every reference study: what it was trained on (:func:`reference_setup`) and
#: that setup's hash, which another calibration must match to reuse it.
ATTR_SETUP = "calibration_setup"
ATTR_FINGERPRINT = "calibration_fingerprint"


@dataclass(frozen=True)
class Candidate:
    label: str
    spec: Any  # ModelSpec
    mixer: str  # the dominant mixer type (most blocks)
    params: int
    size_bin: int  # 0, 1, 2: small, medium, large within the pool

    @property
    def stratum(self) -> str:
        return f"{self.mixer}/{('small', 'medium', 'large')[self.size_bin]}"


@dataclass
class Calibration:
    table: pd.DataFrame  # the ceiling (two or more seeds), then one row per cheap score
    archs: pd.DataFrame  # one row per architecture
    out_dir: Path
    proxy_study: str
    reference_studies: list[str]  # one per seed
    storage: str  # of the proxy study
    reference_storage: str  # of the reference studies: another calibration's when reused


@dataclass
class Reference:
    """Where a calibration's reference runs are: one study per seed, all in ``url``. ``stamped``:
    for another calibration's reference, reused (read, or finished where incomplete; never
    extended), the setup stamped on it (:func:`reference_setup`); None for this calibration's own."""
    names: list[str]
    url: str
    stamped: dict[str, Any] | None = None

    @property
    def reused(self) -> bool:
        return self.stamped is not None


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
    # labels in stratum order, so that the table reads mixer by mixer, small to large
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


# ---- the trainings ----------------------------------------------------------------------------

def candidate_space(space, candidates: list[Candidate], *, name: str, epochs: int, seed_offset: int = 0,
                    fraction: float | None = None):
    """The space's settings with its architecture space replaced by the fixed candidates: one
    trial each (Optuna's grid sampler), ``epochs`` epochs with ``train.seed + seed_offset`` on
    ``fraction`` of the training split (default the space's ``train.fraction``), no early
    stopping."""
    from hvsearch.space.candidates import CandidateSpace
    from hvsearch.space.schema import SearchSettings

    archs = {c.label: c.spec.to_dict() for c in candidates}
    search = SearchSettings(sampler="grid", seed=space.search.seed, objectives=("accuracy",),
                            trials=len(archs), grace_period=epochs, reduction_factor=2)
    raw = {"arch": archs, "constraints": space.raw.get("constraints") or {}}
    return dataclasses.replace(space, name=name, arch=CandidateSpace(archs), search=search,
                               train=dataclasses.replace(space.train, epochs=epochs,
                                                         seed=space.train.seed + seed_offset,
                                                         fraction=space.train.fraction if fraction is None
                                                         else fraction),
                               source=f"calibrate {space.source}", raw=raw)


def run_calibration(space, *, n: int = DEFAULT_N, reference_epochs: int | None = None,
                    reference_fraction: float | None = None, reference_seeds: int | None = None, reference_study: str | None = None,
                    seed: int = 0, study: str | None = None, storage: str | None = None,
                    address: str | None = None, num_cpus: int | None = None, n_boot: int = 1000,
                    studies_dir: str | Path = "studies", results_dir: str | Path = "results",
                    out: IO[str] | None = None) -> Calibration:
    """Sample, train the proxy and every reference seed (``reference_seeds``, default
    ``DEFAULT_REFERENCE_SEEDS``; or reuse calibration ``reference_study``'s), score, correlate; see
    the module docstring. A refused reuse raises before any study is created."""
    from hvsearch.search.runner import init_ray, run_search, stop_ray
    from hvsearch.search.study import load_study, storage_url
    from hvsearch.train.sources import data_shape

    out = out or sys.stdout
    reference_seeds = DEFAULT_REFERENCE_SEEDS if reference_seeds is None else reference_seeds
    if not is_int(reference_seeds) or reference_seeds < 1:
        raise CalibrationError(f"--reference-seeds must be an integer >= 1 (reference trainings per "
                               f"architecture, each with its own training seed), got {reference_seeds}")
    from hvsearch.train.sources import check_data

    check_data(space.data)  # before any storage, study or Ray: a missing data set is one line
    proxy_epochs = int(space.train.epochs)
    reused = (_reused_reference(reference_study, reference_seeds, storage, studies_dir)
              if reference_study is not None else None)
    if reference_epochs is None and reused is not None:
        reference_epochs = reused.stamped["reference epochs"]
    if reference_fraction is None and reused is not None:
        reference_fraction = reused.stamped["recipe"].get("fraction")
    ref_fraction = space.train.fraction if reference_fraction is None else reference_fraction
    if not is_number(ref_fraction) or not 0 < ref_fraction <= 1:
        raise CalibrationError(f"--reference-fraction must be in (0, 1] (the share of the training split "
                               f"the reference trains on), got {ref_fraction}")
    ref_epochs = reference_epochs if reference_epochs is not None else DEFAULT_FACTOR * proxy_epochs
    proxy_budget = proxy_epochs * space.train.fraction
    if not isinstance(ref_epochs, int) or ref_epochs < 1 or ref_epochs * ref_fraction <= proxy_budget:
        source = (f"the reused reference {reference_study}'s epochs" if reused is not None and
                  reference_epochs == reused.stamped["reference epochs"] else "--reference-epochs")
        raise CalibrationError(f"{source} must be an integer whose training (epochs x fraction "
                               f"{ref_fraction:g}) exceeds the proxy's ({proxy_epochs} x {space.train.fraction:g}): "
                               f"the reference is the longer training, got {ref_epochs}")
    factor = ref_epochs * ref_fraction / proxy_budget
    base = study or f"{space.name}-calibrate"
    t0 = time.monotonic()
    print(f"calibrate {space.source}: {n} architectures, proxy {_budget(proxy_epochs, space.train.fraction)} "
          f"vs reference {_budget(ref_epochs, ref_fraction)} ({factor:.3g}x the proxy's training images), "
          f"{reference_seeds} reference seed(s)", file=out, flush=True)
    candidates = stratified_sample(space, n, seed=seed, out=out)
    setup = reference_setup(candidates, space, ref_epochs, ref_fraction)
    if reused is not None:
        for name in reused.names:
            check_reference(load_study(name, reused.url), reused.url, setup, reference_study)
    url = storage_url(base, storage, studies_dir)
    ref = reused or Reference(reference_names(base, reference_seeds), url)
    proxy_name = f"{base}-proxy"
    print(f"studies: {proxy_name} in {_masked(url)}; reference {', '.join(ref.names)} in {_masked(ref.url)}"
          + (f" (calibration {reference_study}'s, reused)" if ref.reused else ""), file=out, flush=True)
    finished = {name: _finished(name, where, n)
                for name, where in ((proxy_name, url), *((r, ref.url) for r in ref.names))}
    # one Ray for all trainings (started only when something is left to train)
    owner = Path(studies_dir).resolve() / base
    started = init_ray(address, num_cpus, owner=owner) if not all(finished.values()) else False
    try:
        print(f"--- proxy training: {proxy_epochs} epoch(s) per architecture", file=out, flush=True)
        run_search(candidate_space(space, candidates, name=proxy_name, epochs=proxy_epochs), study=proxy_name,
                   storage=url, studies_dir=studies_dir, results_dir=results_dir, out=out)
        for k, name in enumerate(ref.names):
            if ref.reused and finished[name]:
                print(f"--- reference seed {k}: {name} has its {n} trainings, reused as it is", file=out, flush=True)
                continue
            print(f"--- reference training, seed {k} (train.seed {space.train.seed + k}): "
                  f"{_budget(ref_epochs, ref_fraction)} per architecture", file=out, flush=True)
            run_search(candidate_space(space, candidates, name=name, epochs=ref_epochs, seed_offset=k,
                                       fraction=ref_fraction),
                       study=name, storage=ref.url, studies_dir=studies_dir, results_dir=results_dir, out=out)
            if not ref.reused:
                _stamp(load_study(name, ref.url), setup)
    finally:
        stop_ray(started, owner)
    proxy = load_study(proxy_name, url)
    references = [load_study(name, ref.url) for name in ref.names]
    scores = zero_cost_scores(proxy, candidates, space, seed=seed, out=out)
    archs = arch_table(candidates, proxy, references, scores, prefix_every=proxy_epochs,
                       reference_epochs=ref_epochs, num_classes=data_shape(space.data)[0])
    table = correlation_table(archs, n_boot=n_boot, seed=seed)
    out_dir = write_calibration(archs, table, Path(results_dir) / base,
                                title=f"{space.name}: {len(archs)} architectures, reference "
                                f"{_budget(ref_epochs, ref_fraction)} ({reference_seeds} seed(s)) vs proxy "
                                f"{_budget(proxy_epochs, space.train.fraction)}")
    print(f"--- calibration of {space.name} ({time.monotonic() - t0:.0f} s): rank agreement with the "
          f"reference ({_budget(ref_epochs, ref_fraction)}), averaged over {reference_seeds} seed(s)", file=out)
    print(render(table), file=out)
    print(ceiling_line(table), file=out)
    print(flags_line(archs), file=out)
    print(f"written {out_dir}/calibration.csv, archs.csv, calibration.png", file=out, flush=True)
    return Calibration(table, archs, out_dir, proxy_name, ref.names, url, ref.url)


def _masked(url: str) -> str:
    from hvsearch.search.study import masked

    return masked(url)


def _budget(epochs: int, fraction: float) -> str:
    """``"10 epoch(s)"``, or ``"10 epoch(s) on 20% of the training split"`` below the whole."""
    return f"{epochs} epoch(s)" + (f" on {100 * fraction:g}% of the training split" if fraction < 1 else "")


def _finished(study: str, url: str, n: int) -> bool:
    """Whether ``study`` exists in ``url`` with its ``n`` trainings done."""
    import optuna

    from hvsearch.search import study as st

    storage = st.open_storage(url)
    if study not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return False
    done = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return sum(t.user_attrs.get(st.ATTR_STATUS) in st.TRAINED_STATUSES for t in done) >= n


# ---- the reference: seeds, fingerprint, reuse -------------------------------------------------

def reference_names(base: str, seeds: int) -> list[str]:
    """The reference's study per seed: ``<base>-reference`` (seed 0), ``<base>-reference-seed<k>``."""
    return [f"{base}-reference" + (f"-seed{k}" if k else "") for k in range(seeds)]


def reference_setup(candidates: list[Candidate], space, reference_epochs: int,
                    reference_fraction: float | None = None) -> dict[str, Any]:
    """What makes a reference reusable by another calibration, part by part: the ``sample`` (arch
    ids, sorted), the ``data``, the ``recipe`` (the reference's train settings without ``epochs``
    and ``seed``: the proxy's length may differ, and seeds are per reference run; its ``fraction``
    is ``reference_fraction``, default the space's) and the ``reference epochs``. In JSON's types,
    as a study user attr keeps it."""
    train = space.train if reference_fraction is None else dataclasses.replace(space.train,
                                                                                fraction=reference_fraction)
    recipe = {k: v for k, v in train.to_dict().items() if k not in ("epochs", "seed")}
    setup = {"sample": sorted(c.spec.arch_id for c in candidates), "data": space.data.to_dict(),
             "recipe": recipe, "reference epochs": reference_epochs}
    return json.loads(_canonical(setup))


def fingerprint(setup: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of ``setup``'s canonical JSON."""
    return hashlib.sha256(_canonical(setup).encode()).hexdigest()[:12]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _stamp(study, setup: dict[str, Any]) -> None:
    if study.user_attrs.get(ATTR_FINGERPRINT) != fingerprint(setup):
        study.set_user_attr(ATTR_SETUP, setup)
        study.set_user_attr(ATTR_FINGERPRINT, fingerprint(setup))


def _reused_reference(name: str, seeds: int, storage: str | None, studies_dir: str | Path) -> Reference:
    """Calibration ``name``'s reference: its first ``seeds`` seed studies, with the setup stamped on
    the first; CalibrationError, one line, when the storage, the studies, the seeds or the stamp
    are missing. Reads only."""
    import optuna

    from hvsearch.errors import StudyError
    from hvsearch.search.study import load_study, open_storage, storage_url

    try:
        url = storage_url(name, storage, studies_dir, create=False)
    except StudyError:
        where = Path(storage) if storage else Path(studies_dir) / f"{name}.db"
        raise CalibrationError(f"--reference-study {name}: no storage {where.resolve()} (give the other "
                               f"calibration's --study name, and its --storage if it has one)") from None
    present = {s.study_name for s in optuna.get_all_study_summaries(open_storage(url))}
    have = 0
    while reference_names(name, have + 1)[-1] in present:
        have += 1
    if have == 0:
        raise CalibrationError(f"--reference-study {name}: no study {name}-reference in {_masked(url)} (studies "
                               f"there: {', '.join(sorted(present)) or 'none'})")
    if have < seeds:
        raise CalibrationError(f"--reference-study {name} has {have} reference seed(s) in {_masked(url)}, fewer than "
                               f"--reference-seeds {seeds}; pass --reference-seeds {have} (a reused "
                               "reference is only read, or finished where incomplete, never extended)")
    first = load_study(f"{name}-reference", url)
    setup = first.user_attrs.get(ATTR_SETUP)
    if setup is None or first.user_attrs.get(ATTR_FINGERPRINT) is None:
        raise _unstamped(first.study_name, url)
    return Reference(reference_names(name, seeds), url, stamped=setup)


def _unstamped(study: str, url: str) -> CalibrationError:
    return CalibrationError(f"--reference-study: study {study!r} in {_masked(url)} has no calibration fingerprint "
                            f"(user attr {ATTR_FINGERPRINT}: made before fingerprints, or its first run "
                            "never finished); run its own calibration once more to stamp it")


def check_reference(study, url: str, setup: dict[str, Any], name: str) -> None:
    """Refuse (CalibrationError, one line) to reuse reference ``study`` unless it was trained on
    ``setup``; the message names every part that differs, with both values."""
    stored = study.user_attrs.get(ATTR_SETUP)
    if stored is None or study.user_attrs.get(ATTR_FINGERPRINT) is None:
        raise _unstamped(study.study_name, url)
    if study.user_attrs[ATTR_FINGERPRINT] == fingerprint(setup):
        return
    diffs = [_difference(part, stored.get(part), ours) for part, ours in setup.items() if stored.get(part) != ours]
    detail = "; ".join(diffs) or (f"fingerprint {study.user_attrs[ATTR_FINGERPRINT]} there, "
                                  f"{fingerprint(setup)} here")
    parts = ", ".join(part for part, ours in setup.items() if stored.get(part) != ours) or "setup"
    raise CalibrationError(f"--reference-study {name}: study {study.study_name!r} in {_masked(url)} differs from this "
                           f"calibration in its {parts} ({detail}); drop --reference-study to train this "
                           "calibration's own reference")


def _difference(part: str, theirs: Any, ours: Any) -> str:
    if part == "sample":
        common = len(set(theirs or ()) & set(ours))
        return (f"{len(theirs or ())} architectures there, {len(ours)} here, {common} in common: the same "
                "space, -n and --seed draw the same sample")
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        return ", ".join(f"{part}.{k} {theirs.get(k, 'unset')} there, {ours.get(k, 'unset')} here" for k in keys)
    return f"{part} {theirs} there, {ours} here"


# ---- scores -----------------------------------------------------------------------------------

def zero_cost_scores(study, candidates: list[Candidate], space, *, seed: int = 0,
                     out: IO[str] | None = None) -> dict[str, dict[str, float]]:
    """arch id -> {score: value} for every zero-cost score, computed once and kept in ``study``'s
    user attr ``zero_cost`` (non-finite values as text: JSON has no infinities)."""
    from hvsearch.zerocost.scores import data_batch, score

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


def arch_table(candidates: list[Candidate], proxy, references: list, scores: dict[str, dict[str, float]], *,
               num_classes: int, prefix_every: int | None = None,
               reference_epochs: int | None = None) -> pd.DataFrame:
    """One row per sampled architecture: stratum, cost, zero-cost scores, proxy accuracy per epoch,
    every reference seed's final accuracy (``reference_seed<k>``, one per study of
    ``references``), their mean (``reference``), spread (max − min, ``reference_spread``) and
    ``flag`` (see ``CHANCE_MARGIN``), and, every ``prefix_every`` epochs before its end, the
    seed-averaged reference curve so far (``reference@k``). ``reference``, ``reference_spread`` and
    ``reference@k`` are NaN unless every seed completed; each ``reference_seed<k>`` keeps its own."""
    import numpy as np

    from hvsearch.search import study as st

    def by_arch(study) -> dict[str, Any]:
        from optuna.trial import TrialState

        out = {}
        for t in study.get_trials(deepcopy=False):
            aid = t.user_attrs.get(st.ATTR_ARCH_ID)
            if aid and (aid not in out or t.state == TrialState.COMPLETE):
                out[aid] = t
        return out

    p_trials, r_trials = by_arch(proxy), [by_arch(r) for r in references]
    rows = []
    for c in candidates:
        aid = c.spec.arch_id
        p, rs = p_trials.get(aid), [r.get(aid) for r in r_trials]
        known = next((t for t in (p, *rs) if t is not None), None)
        row: dict[str, Any] = {
            "label": c.label, "stratum": c.stratum, "mixer": c.mixer,
            "mixers": "/".join(s.mixer.type for s in c.spec.stages),
            "depths": "-".join(str(s.depth) for s in c.spec.stages),
            "widths": "-".join(str(s.width) for s in c.spec.stages),
            "params": c.params, "flops": known.user_attrs.get(st.ATTR_FLOPS) if known else math.nan,
        }
        row.update(scores.get(aid, {k: math.nan for k in ZERO_COST}))
        for epoch, value in sorted((p.intermediate_values if p else {}).items()):
            row[f"proxy@{epoch}"] = value
        row["proxy"] = _final(p)
        finals = [_final(r) for r in rs]
        complete = not any(math.isnan(f) for f in finals)
        if prefix_every and reference_epochs:
            for k in range(prefix_every, reference_epochs, prefix_every):
                row[f"reference@{k}"] = (float(np.mean([r.intermediate_values.get(k, math.nan) for r in rs]))
                                         if complete else math.nan)
        for k, final in enumerate(finals):
            row[f"reference_seed{k}"] = final
        row["reference"] = float(np.mean(finals)) if complete else math.nan
        row["reference_spread"] = max(finals) - min(finals) if complete else math.nan
        row["proxy_status"] = p.user_attrs.get(st.ATTR_STATUS) if p else "not run"
        row["reference_status"] = "/".join((r.user_attrs.get(st.ATTR_STATUS) or "unknown") if r else "not run" for r in rs)
        row["arch_id"] = aid
        rows.append(row)
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("reference_spread") + 1, "flag", seed_flags(df, num_classes))
    epochs = sorted((c for c in df.columns if c.startswith("proxy@")), key=lambda c: int(c.split("@")[1]))
    if epochs:
        # the last epoch is the proxy itself
        df = df.drop(columns=epochs[-1])
    return df


def seed_columns(archs: pd.DataFrame) -> list[str]:
    """The reference's per-seed columns of ``archs``, seed 0 first."""
    return sorted((c for c in archs.columns if c.startswith("reference_seed")),
                  key=lambda c: int(c[len("reference_seed"):]))


def seed_flags(archs: pd.DataFrame, num_classes: int) -> pd.Series:
    """``flag`` per architecture by the rule of ``CHANCE_MARGIN``; empty where no rule applies or a
    seed did not finish."""
    seeds = archs[seed_columns(archs)]
    complete = archs["reference"].notna()
    spread = archs["reference_spread"]
    median = spread[complete].median()
    limit = DISAGREE_POINTS if pd.isna(median) else max(DISAGREE_POINTS, DISAGREE_FACTOR * median)
    chance = (seeds < 100.0 / num_classes + CHANCE_MARGIN).all(axis=1) & complete
    flags = pd.Series("", index=archs.index, dtype=object)
    flags[complete & (spread > limit)] = SEEDS_DISAGREE
    flags[chance] = NEVER_LEAVES_CHANCE
    return flags


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
    """Every cheap score against the seed-averaged ``reference`` (:func:`~hvsearch.stats.correlate`),
    after the ceiling row when the reference has two or more seeds (:func:`ceiling_row`), with
    ``tau_of_ceiling`` and its interval (``toc_lo``, ``toc_hi``): :func:`share_of_ceiling`."""
    from hvsearch.stats import correlate

    usable = archs["reference"].notna().sum()
    if usable < 4:
        raise CalibrationError(f"only {usable} architectures finished every reference training; "
                               "a rank correlation needs 4 or more (see the reference studies' failures)")
    cols = [c for c in cheap_scores(archs) if c in archs.columns]
    scores = archs[cols].astype(float)
    table = correlate(scores, archs["reference"].astype(float), n_boot=n_boot, seed=seed)
    kind = {**{k: "zero-cost" for k in ZERO_COST}, "params": "size", "flops": "size"}
    table.insert(1, "kind", [kind.get(s, "reference prefix" if s.startswith("reference@") else "training")
                             for s in table["score"]])
    ceiling = ceiling_row(archs, n_boot=n_boot, seed=seed)
    if ceiling is not None:
        table = pd.concat([pd.DataFrame([ceiling], columns=table.columns), table], ignore_index=True)
    shares = [share_of_ceiling(archs, score, n_boot=n_boot, seed=seed) if kind != "ceiling" else
              (1.0, math.nan, math.nan) if ceiling is not None and ceiling["kendall_tau"] > 0 else
              (math.nan,) * 3 for score, kind in zip(table["score"], table["kind"])]
    at = table.columns.get_loc("tau_hi") + 1
    for i, col in enumerate(("tau_of_ceiling", "toc_lo", "toc_hi")):
        table.insert(at + i, col, [v[i] for v in shares])
    return table


def share_of_ceiling(archs: pd.DataFrame, score: str, *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """A score's Kendall τ as a share of the ceiling's, like against like, with a paired bootstrap
    interval: the score against each reference seed alone (the mean of those τ) over the seeds
    against each other (:func:`ceiling_row`), both on the same resamples of architectures. (The
    table's ``kendall_tau`` is against the seed average, which is less noisy than one seed, so
    dividing it by the ceiling would build in shares above 1.) A resample whose ceiling is not
    positive gives an unbounded share (±inf by the sign of the score's τ), so an interval reaching
    such resamples says so. NaN without two seeds, or with a ceiling that is not positive."""
    import numpy as np

    from hvsearch.stats import kendall

    cols = seed_columns(archs)
    rows = archs["reference"].notna() & archs[score].notna()
    if len(cols) < 2 or rows.sum() < 4:
        return math.nan, math.nan, math.nan
    runs = archs.loc[rows, cols].to_numpy(dtype=float).T  # (K, N)
    values = archs.loc[rows, score].to_numpy(dtype=float)
    pairs = list(itertools.combinations(range(len(cols)), 2))

    def ratio(i: np.ndarray) -> np.ndarray:
        i = np.atleast_2d(i)
        num = np.mean([kendall(values[i], runs[k][i]) for k in range(len(cols))], axis=0)
        den = np.mean([kendall(runs[x][i], runs[y][i]) for x, y in pairs], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.sign(num) * np.inf)
        return np.where(np.isnan(num) | np.isnan(den), np.nan, out)

    n = runs.shape[1]
    point = float(ratio(np.arange(n))[0])
    if not np.isfinite(point):
        return math.nan, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = ratio(idx)
    boot = boot[~np.isnan(boot)]
    # resampled values themselves, not interpolated between them (between two infinite ones
    # that would be NaN)
    lo, hi = (np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf") if boot.size
              else (math.nan, math.nan))
    return point, float(lo), float(hi)


def ceiling_row(archs: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """The reference's agreement with itself, as a row of the table (kind ``ceiling``): Kendall
    τ-b and Spearman ρ between its seeds' final accuracies over the architectures every seed
    finished, with bootstrap intervals; None with one seed.

    With K > 2 seeds each value is the mean over the K(K−1)/2 seed pairs and its interval is that
    mean's: every pair is evaluated on the same resample of architectures (for K = 2 exactly
    :func:`~hvsearch.stats.bootstrap_ci` of the one pair), so the interval belongs to the
    number shown. ``top_kept`` is the mean over ordered pairs of how much of one seed's top quarter
    the other's better half keeps. A ceiling in the practical sense: scores are compared with the
    seed average, which is less noisy than one seed, so a score may come out a little above it."""
    import numpy as np

    from hvsearch.stats import bootstrap_ci, kendall, prescreen_survival, spearman

    cols = seed_columns(archs)
    if len(cols) < 2:
        return None
    runs = archs.loc[archs["reference"].notna(), cols].to_numpy(dtype=float).T  # (K, N)
    pairs = list(itertools.combinations(range(len(cols)), 2))

    def over_pairs(stat):
        # bootstrap_ci resamples positions; every pair is then taken on that same resample
        def mean(a, _):
            i = np.asarray(a, dtype=int)
            return np.mean([stat(runs[x][i], runs[y][i]) for x, y in pairs], axis=0)

        return mean

    pos = np.arange(runs.shape[1], dtype=float)
    tau, rho = over_pairs(kendall), over_pairs(spearman)
    tau_lo, tau_hi = bootstrap_ci(pos, pos, tau, n_boot=n_boot, seed=seed)
    rho_lo, rho_hi = bootstrap_ci(pos, pos, rho, n_boot=n_boot, seed=seed)
    kept = [prescreen_survival(runs[x], runs[y])[0] for x, y in itertools.permutations(range(len(cols)), 2)]
    name = ("ceiling: reference seed 1 vs seed 0" if len(cols) == 2
            else f"ceiling: reference seeds, mean of {len(pairs)} pairs")
    return dict(score=name, kind="ceiling", n=runs.shape[1], kendall_tau=float(tau(pos, pos)), tau_lo=tau_lo,
                tau_hi=tau_hi, spearman_rho=float(rho(pos, pos)), rho_lo=rho_lo, rho_hi=rho_hi,
                top_kept=float(np.mean(kept)), best_kept=math.nan)


def render(table: pd.DataFrame) -> str:
    def ci(v, lo, hi) -> str:
        return "n/a" if pd.isna(v) else f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]"

    def share(v) -> str:
        return "n/a" if pd.isna(v) else f"{v:.0%}"

    def share_ci(v, lo, hi) -> str:
        if pd.isna(v):
            return "n/a"
        ends = ["-inf" if x == -math.inf else "inf" if x == math.inf else f"{x:.0%}" for x in (lo, hi)]
        return f"{v:.0%}" if pd.isna(lo) else f"{v:.0%} [{ends[0]}, {ends[1]}]"

    shown = pd.DataFrame({
        "score": table["score"], "kind": table["kind"], "n": table["n"],
        "Kendall tau [95% CI]": [ci(*r) for r in table[["kendall_tau", "tau_lo", "tau_hi"]].itertuples(index=False)],
        "tau / ceiling [95% CI]": [share_ci(*r) for r in table[["tau_of_ceiling", "toc_lo", "toc_hi"]]
                                   .itertuples(index=False)],
        "Spearman rho [95% CI]": [ci(*r) for r in table[["spearman_rho", "rho_lo", "rho_hi"]].itertuples(index=False)],
        "top-25% kept at 50%": [share(v) for v in table["top_kept"]],
    })
    return shown.to_string(index=False)


def ceiling_line(table: pd.DataFrame) -> str:
    """What the ceiling row says, in a sentence."""
    rows = table[table["kind"] == "ceiling"]
    if rows.empty:
        return ("no ceiling: one reference seed (--reference-seeds 2 or more measures how well the "
                "reference agrees with itself, the most any proxy can)")
    r = rows.iloc[0]
    if pd.isna(r.kendall_tau):
        return ("ceiling: undefined (a seed's accuracies are all equal over the sample), and no score's "
                "share of it is given")
    if r.kendall_tau <= 0:
        return (f"ceiling: the reference's seeds do not agree (Kendall tau {r.kendall_tau:+.2f}): it does "
                "not rank this sample, and no score's share of it is given")
    return (f"ceiling: the reference agrees with itself across seeds at Kendall tau {r.kendall_tau:+.2f} "
            f"[{r.tau_lo:+.2f}, {r.tau_hi:+.2f}]; 'tau / ceiling' is each score's tau against one seed as a "
            "share of it, with a paired bootstrap interval")


def flags_line(archs: pd.DataFrame) -> str:
    """The flagged architectures by flag, in a sentence."""
    said = [f"{flag}: {', '.join(archs.loc[archs['flag'] == flag, 'label'])}"
            for flag in (NEVER_LEAVES_CHANCE, SEEDS_DISAGREE) if (archs["flag"] == flag).any()]
    return "flags: " + ("; ".join(said) if said else "none") + " (archs.csv)"


def write_calibration(archs: pd.DataFrame, table: pd.DataFrame, out_dir: Path, *, title: str = "") -> Path:
    from hvsearch.stats import plot_scatter

    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "calibration.csv", index=False)
    archs.to_csv(out_dir / "archs.csv", index=False)
    cols = [c for c in cheap_scores(archs) if c in archs.columns]
    plot_scatter(archs, cols, "reference", out_dir / "calibration.png", stats=table, color_by="mixer",
                 title=title)
    return out_dir
