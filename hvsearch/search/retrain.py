"""Train a fixed set of architectures at one recipe with several training seeds, through the same
machinery as ``hvsearch calibrate``'s reference (Ray Tune trials, one Optuna study per training
seed, Optuna's grid sampler visiting each architecture once, no early stopping). Used by
``hvsearch finalize`` and by the benchmarks that retrain what a search found. Re-running
continues the studies; a study's name carries a digest of its architecture set, so another set
never collides with it.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import IO


def study_names(prefix: str, arch_ids, seeds: int) -> list[str]:
    """``<prefix>-<digest>-seed<k>``: the digest names the set (order and repeats do not matter)."""
    digest = hashlib.sha256(",".join(sorted(set(arch_ids))).encode()).hexdigest()[:8]
    return [f"{prefix}-{digest}-seed{k}" for k in range(seeds)]


def retrain(space, specs: dict, *, prefix: str, epochs: int, fraction: float, seeds: int, storage: str | None,
            address: str | None, num_cpus: int | None, out: IO[str], studies_dir: str | Path = "studies",
            names: list[str] | None = None, first_seed: int = 0) -> list[str]:
    """Train every spec of ``specs`` (label -> ModelSpec) ``seeds`` times with the space's recipe
    but ``epochs`` on ``fraction`` of the training split, the k-th time with ``train.seed +
    first_seed + k``; the studies' names (:func:`study_names`, or ``names``)."""
    from hvsearch.search.calibrate import Candidate, candidate_space, count_params, dominant_mixer
    from hvsearch.search.runner import init_ray, run_search, stop_ray

    candidates = [Candidate(label=label, spec=spec, mixer=dominant_mixer(spec), params=count_params(spec),
                            size_bin=0) for label, spec in specs.items()]
    names = names or study_names(prefix, [c.spec.arch_id for c in candidates], seeds)
    print(f"=== training {len(candidates)} architecture(s): {epochs} epoch(s) on {100 * fraction:g}% of the "
          f"training split, {seeds} seed(s): studies {', '.join(names)} in {storage}", file=out, flush=True)
    owner = Path(studies_dir).resolve() / prefix  # its Ray processes, for a killed run's cleanup
    started = init_ray(address, num_cpus, owner=owner)
    try:
        for k, name in enumerate(names):
            run_search(candidate_space(space, candidates, name=name, epochs=epochs, seed_offset=first_seed + k,
                                       fraction=fraction),
                       study=name, storage=storage, studies_dir=studies_dir, results_dir=None, out=out)
    finally:
        stop_ray(started, owner)
    return names


def final_accuracy(names: list[str], url: str) -> dict[str, list[float]]:
    """arch id -> final validation top-1 of each study in ``names`` (NaN where it did not complete)."""
    from optuna.trial import TrialState

    from hvsearch.search import study as st

    acc: dict[str, list[float]] = {}
    for k, name in enumerate(names):
        for t in st.load_study(name, url).get_trials(deepcopy=False):
            aid = t.user_attrs.get(st.ATTR_ARCH_ID)
            if aid is None or t.user_attrs.get(st.ATTR_STATUS) in ("duplicate", "invalid"):
                continue  # a draw that never trained: it says nothing about the architecture
            row = acc.setdefault(aid, [math.nan] * len(names))
            if t.state == TrialState.COMPLETE and t.values:
                row[k] = t.values[0]  # a later unfinished trial of it does not undo a result
    return acc


def seed_failures(names: list[str], url: str, acc: dict[str, list[float]]) -> dict[str, str]:
    """arch id -> why its training failed in a study of ``names`` ("seed k: reason"), for the
    architectures that have no result in that study (``acc``: :func:`seed_accuracy` of the same
    studies): a re-run does not train them again (a failed trial counts against the budget, as in
    a search)."""
    import optuna

    from hvsearch.search import study as st

    present = {s.study_name for s in optuna.get_all_study_summaries(st.open_storage(url))}
    out: dict[str, str] = {}
    for k, name in enumerate(names):
        if name not in present:
            continue
        for t in st.load_study(name, url).get_trials(deepcopy=False):
            aid = t.user_attrs.get(st.ATTR_ARCH_ID)
            if (t.user_attrs.get(st.ATTR_STATUS) == "failed" and aid is not None and aid not in out
                    and math.isnan(acc.get(aid, [math.nan] * len(names))[k])):
                out[aid] = f"seed {k}: {t.user_attrs.get(st.ATTR_REASON) or 'failed'}"
    return out


def seed_accuracy(names: list[str], url: str) -> dict[str, list[float]]:
    """arch id -> final validation top-1 of each study in ``names``, in order; NaN where a study
    does not exist yet or the architecture has not finished in it."""
    import optuna

    from hvsearch.search import study as st

    present = {s.study_name for s in optuna.get_all_study_summaries(st.open_storage(url))}
    out: dict[str, list[float]] = {}
    for k, name in enumerate(names):
        for aid, (value,) in (final_accuracy([name], url) if name in present else {}).items():
            out.setdefault(aid, [math.nan] * len(names))[k] = value
    return out
