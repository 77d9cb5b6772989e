"""Tables about architectures: the seed catalog and one architecture's per-stage spec and cost."""
from __future__ import annotations

import json

import pandas as pd

from hvsearch.arch import ModelSpec
from hvsearch.families import family
from hvsearch.models.catalog import get_seed, seed_names


def seeds_table(progress: bool = False) -> pd.DataFrame:
    from hvsearch.cost import count_spec

    rows = []
    names = seed_names()
    from hvsearch.progress import Progress

    bar = Progress(len(names), "counting seeds", unit="seed", every_s=0, enabled=progress)
    for name in names:
        bar.update(note=name)
        seed = get_seed(name)
        cost = count_spec(seed.spec)
        rows.append({
            "name": name,
            "family": family(seed.family).TITLE,
            "res": seed.spec.resolution,
            "params_M": cost.params_m,
            "GFLOPs": cost.gflops,
            "ref": seed.ref_source,
            "ref_params_M": seed.ref_params_m,
            "ref_GFLOPs": seed.ref_gflops,
            "dev_params_%": 100 * (cost.params_m / seed.ref_params_m - 1),
            "dev_flops_%": 100 * (cost.gflops / seed.ref_gflops - 1),
            "paper_params_M": seed.paper_params_m,
            "paper_GFLOPs": seed.paper_gflops,
            "notes": seed.notes,
        })
    bar.close()
    return pd.DataFrame(rows)


def stage_table(spec: ModelSpec, cost) -> pd.DataFrame:
    rows = []
    rows.append({"part": "stem", "type": spec.stem.type, "depth": "", "width": spec.stem_width,
                 "feature": "", "stride": spec.stem.stride, "mixer": "", "ffn": "",
                 "params_M": cost.params_by_stage.get("stem", 0) / 1e6,
                 "GFLOPs": cost.by_stage.get("stem", 0) / 1e9})
    res = cost.resolution
    for ctx, st in zip(spec.stage_contexts(res), spec.stages):
        mixer = {k: v for k, v in st.mixer.to_dict().items() if k != "type"}
        ffn = {k: v for k, v in st.ffn.to_dict().items() if k != "type"}
        rows.append({
            "part": f"stage {ctx.index}", "type": f"{st.downsample.type}", "depth": st.depth,
            "width": st.width, "feature": f"{ctx.height}x{ctx.width}", "stride": ctx.stride,
            "mixer": f"{st.mixer.type} {_knobs(mixer)}".strip(),
            "ffn": f"{st.ffn.type} {_knobs(ffn)}".strip(),
            "params_M": cost.params_by_stage.get(f"stages.{ctx.index}", 0) / 1e6,
            "GFLOPs": cost.by_stage.get(f"stages.{ctx.index}", 0) / 1e9,
        })
    rows.append({"part": "head", "type": spec.head.type, "depth": "", "width": "", "feature": "",
                 "stride": "", "mixer": "", "ffn": "",
                 "params_M": cost.params_by_stage.get("head", 0) / 1e6,
                 "GFLOPs": cost.by_stage.get("head", 0) / 1e9})
    return pd.DataFrame(rows)


def _knobs(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def show_arch(ref: str, resolution: int | None = None, fmt: str = "table") -> str:
    from hvsearch.cost import count_spec

    from hvsearch.arch_ref import resolve

    spec = resolve(ref)
    if fmt == "yaml":
        return spec.to_yaml().rstrip()
    res = resolution or spec.resolution
    cost = count_spec(spec, resolution=res)
    if fmt == "json":
        return json.dumps({"arch_id": spec.arch_id, "arch": spec.to_dict(), "resolution": res,
                           "params": cost.params, "flops": cost.flops,
                           "flops_by_stage": cost.by_stage, "params_by_stage": cost.params_by_stage},
                          indent=1)
    head = (f"{spec.name or ref}  (arch id {spec.arch_id})\n"
            f"input {res}x{res} (built for {spec.resolution}), {spec.num_classes} classes, "
            f"drop-path {spec.drop_path_rate} ({spec.drop_path_mode})\n"
            f"params {cost.params_m:.3f} M   FLOPs {cost.gflops:.3f} G (multiply-adds)\n")
    return head + stage_table(spec, cost).to_string(index=False, float_format="{:.3f}".format)
