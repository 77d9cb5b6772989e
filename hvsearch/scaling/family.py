"""A seed's model family: members for several φ, their measured cost against 2.5^φ, their files.

Importing this module registers ``hvs_<seed>_phi<tag>`` in timm for φ ∈ {−2, −1, 1, 2} and every
catalog seed (``timm.create_model("hvs_cmt_s_phi1")``), with the default rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from hvsearch.arch import ModelSpec
from hvsearch.cost import count_spec
from hvsearch.models.catalog import register_arch, seed_names
from hvsearch.scaling.compound import TARGET_BASE, Member, ScalingRule, phi_tag, scale

REGISTERED_PHIS = (-2, -1, 1, 2)


def family(seed: ModelSpec, phis: Sequence[float], rule: ScalingRule = ScalingRule(),
           progress: bool = False, latency: Callable | None = None,
           max_latency_ms: float | None = None) -> tuple[pd.DataFrame, list[Member]]:
    """Scale ``seed`` for every φ (φ=0 is the seed itself) and count each member's cost.

    ``latency`` (spec → :class:`hvsearch.latency.Latency`) adds each member's measured median
    (``latency_ms``) and its flags. With ``max_latency_ms`` the table gains ``fits``, and the φs
    (taken in increasing order) stop after two members in a row over the limit: larger ones
    are not measured.

    Returns the family table (one row per φ) and the members."""
    base = count_spec(seed)
    rows, members = [], []
    from hvsearch.progress import Progress

    bar = Progress(len(phis), f"scaling {seed.name or 'arch'}", unit="member", every_s=0, enabled=progress)
    for phi in phis:
        member = scale(seed, phi, rule)
        bar.update(note=f"phi={phi:g}")
        cost = count_spec(member.spec)
        ratio, target = cost.flops / base.flops, TARGET_BASE ** phi
        members.append(member)
        rows.append({
            "phi": phi,
            "name": member.spec.name,
            "depths": "-".join(map(str, member.spec.depths)),
            "widths": "-".join(map(str, member.spec.widths)),
            "stem": member.spec.stem_width,
            "resolution": member.spec.resolution,
            "params_M": cost.params_m,
            "GFLOPs": cost.gflops,
            "flops_ratio": ratio,
            "target_2.5^phi": target,
            "deviation_%": 100 * (ratio / target - 1),
            "rule_ratio": rule.flops_base ** phi,
            "adjusted": "; ".join(member.adjustments),
        })
        if latency is not None:
            m = latency(member.spec)
            rows[-1]["latency_ms"] = m.median_ms
            rows[-1]["latency_flags"] = ",".join(m.flags)
            if max_latency_ms is not None:
                rows[-1]["fits"] = m.median_ms <= max_latency_ms
                if len(rows) >= 2 and not rows[-1]["fits"] and not rows[-2]["fits"]:
                    break
    bar.close()
    return pd.DataFrame(rows), members


def write_members(members: Sequence[Member], out_dir: str | Path) -> list[Path]:
    """One architecture YAML per member, loadable by ``show``/``train``/``scale``, named after it
    (its name as a file name: a seed named ``../x`` writes no file outside ``out_dir``)."""
    out = Path(out_dir)
    return [m.spec.save(out / f"{m.spec.file_stem}.yaml") for m in members]


def _register_members() -> None:
    from hvsearch.models.catalog import get_seed

    for name in seed_names():
        for phi in REGISTERED_PHIS:
            register_arch(f"{name}_phi{phi_tag(phi)}", lambda n=name, p=phi: scale(get_seed(n).spec, p).spec)


_register_members()
