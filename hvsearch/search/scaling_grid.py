"""``hvsearch scale --grid``: pick α, β, γ by proxy-training every φ=1 candidate.

Every (α, β, γ) on a grid with α·β^1.5·γ² within a tolerance of 2.5 gives one φ=1 member of the
seed. Each member is one trial of a study of its own (``<seed>-grid`` by default), run by the same
machinery as ``hvsearch run`` — Ray Tune trials, an Optuna study in persistent storage, resumable
— with Optuna's grid sampler visiting each candidate exactly once and no early stopping, so every
candidate gets the same budget. The constants are then ranked by proxy accuracy.

The proxy trains at the candidate's own resolution scaled from the proxy resolution
(``train.resolution · γ``, snapped to 32): at the 32-px default every γ ≤ 1.45 trains at 32, so
there only depth and width compete; give ``--proxy-resolution 64`` or more to let γ matter.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import IO, Any

import pandas as pd

from hvsearch.arch import ModelSpec
from hvsearch.scaling.compound import ScalingRule, grid_constants, scale, snap_resolution
from hvsearch.space.candidates import CANDIDATE_PARAM, CandidateSpace

def candidate_label(rule: ScalingRule) -> str:
    return f"a{rule.alpha:g}_b{rule.beta:g}_g{rule.gamma:g}"


def grid_space(seed: ModelSpec, rules: list[ScalingRule], train, data, *, name: str,
               proxy_resolution: int | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
               max_concurrent: int | None = None, seed_value: int = 0):
    """A :class:`~hvsearch.space.Space` whose candidates are the φ=1 members of ``seed``.

    Each member trains with the data's classes and channels and at the proxy resolution times its γ."""
    from hvsearch.space.schema import Constraints, Resources, SearchSettings, Space
    from hvsearch.train.sources import data_shape

    base_res = proxy_resolution or train.resolution
    num_classes, in_chans = data_shape(data)
    archs: dict[str, dict[str, Any]] = {}
    # Constants that round to the same member (depths and widths are rounded: convmlp_s's 40 φ=1
    # candidates at step 0.1 are 34 models) are one candidate, trained once; the others are
    # listed beside it (rank: ``same_as``).
    same_as: dict[str, str] = {}
    first: dict[str, str] = {}  # arch id -> the label that trains it
    for rule in rules:
        member = scale(seed, 1.0, rule).spec
        # Trained at the proxy resolution scaled by γ; built there too, so position-bias tables
        # are sized for the size it trains at.
        label = candidate_label(rule)
        member = member.replace(resolution=snap_resolution(base_res * rule.gamma), num_classes=num_classes,
                                in_chans=in_chans, name=f"{seed.name or 'arch'}_{label}").validate()
        if member.arch_id in first:
            same_as[label] = first[member.arch_id]
            continue
        first[member.arch_id] = label
        archs[label] = member.to_dict()
    search = SearchSettings(sampler="grid", seed=seed_value, objectives=("accuracy",), trials=len(archs),
                            grace_period=train.epochs, reduction_factor=2)
    raw = {"arch": archs, "constraints": {}, "same_as": same_as}
    return Space(name=name, arch=CandidateSpace(archs), search=search,
                 resources=Resources(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                                     max_concurrent=max_concurrent),
                 constraints=Constraints(), train=dataclasses.replace(train, resolution=base_res), data=data,
                 source=f"scale --grid {seed.name}", raw=raw)


def run_grid(seed: ModelSpec, *, step: float = 0.1, tol: float = 0.05, train=None, data=None,
             study: str | None = None, storage: str | None = None, address: str | None = None,
             resume: bool = False, proxy_resolution: int | None = None, num_cpus: int | None = None,
             cpus_per_trial: float = 1, gpus_per_trial: float = 0, max_concurrent: int | None = None,
             studies_dir: str | Path = "studies", results_dir: str | Path = "results",
             out: IO[str] | None = None) -> pd.DataFrame:
    """Enumerate the constants, proxy-train each φ=1 candidate, return them ranked by accuracy
    (also written to ``results/<study>/grid.csv``)."""
    from hvsearch.search.runner import run_search
    from hvsearch.search.study import load_study, storage_url
    from hvsearch.train.config import DataConfig, TrainConfig

    train = train or TrainConfig()
    data = data or DataConfig()
    rules = grid_constants(step=step, tol=tol)
    name = study or f"{seed.name or 'arch'}-grid"
    space = grid_space(seed, rules, train, data, name=name, proxy_resolution=proxy_resolution,
                       cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                       max_concurrent=max_concurrent)
    run_search(space, study=name, storage=storage, address=address, resume=resume, num_cpus=num_cpus,
               studies_dir=studies_dir, results_dir=results_dir, out=out)
    opened = load_study(name, storage_url(name, storage, studies_dir, create=False))
    table = rank(opened, rules, space.raw["same_as"])
    path = Path(results_dir) / name / "grid.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def rank(study, rules: list[ScalingRule], same_as: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per candidate: constants, the member's shape and cost, its proxy accuracy and
    state; ranked by accuracy (candidates not trained last). Constants whose member is another
    candidate's (``same_as``: label -> the label trained) get that trial's row and name it."""
    from optuna.trial import TrialState

    from hvsearch.search import study as st

    by_label: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        label = t.params.get(CANDIDATE_PARAM)
        if label is None:
            continue
        prev = by_label.get(label)
        if prev is None or t.state == TrialState.COMPLETE:
            by_label[label] = t
    rows = []
    for rule in rules:
        label = candidate_label(rule)
        twin = (same_as or {}).get(label)
        t = by_label.get(twin or label)
        attrs = t.user_attrs if t is not None else {}
        spec = ModelSpec.from_json(attrs[st.ATTR_ARCH]) if st.ATTR_ARCH in attrs else None
        rows.append({
            "alpha": rule.alpha, "beta": rule.beta, "gamma": rule.gamma,
            "alpha*beta^1.5*gamma^2": round(rule.flops_base, 4),
            "depths": "-".join(map(str, spec.depths)) if spec else "",
            "widths": "-".join(map(str, spec.widths)) if spec else "",
            "proxy_res": spec.resolution if spec else None,
            "params_M": attrs[st.ATTR_PARAMS] / 1e6 if st.ATTR_PARAMS in attrs else None,
            "GFLOPs": attrs[st.ATTR_FLOPS] / 1e9 if st.ATTR_FLOPS in attrs else None,
            "val_top1": t.values[0] if t is not None and t.state == TrialState.COMPLETE and t.values else None,
            "state": attrs.get(st.ATTR_STATUS, "not run") if t is not None else "not run",
            "trial": t.number if t is not None else None,
            "same_as": twin or "",
        })
    df = pd.DataFrame(rows)
    df = df.sort_values("val_top1", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df
