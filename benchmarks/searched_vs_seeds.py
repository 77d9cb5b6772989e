"""The searched architecture against the published ones at equal FLOPs.

A search result is only interesting if it beats what one gets without searching: take each
family's smallest published seed (``hvsearch seeds``) and scale it to the same compute. Here:

* the **budget** is the searched architecture's FLOPs at the training resolution (``--flops``
  overrides it);
* each family's smallest seed is rebuilt at the training resolution (its feature-size knobs
  re-fitted, one input channel and the data's classes, as ``hvsearch train`` does) and
  **compound-scaled down** with CMT's depth and width bases (α = 1.2, β = 1.3; ``--depth-mode``
  ``ceil`` by default, so no stage loses its last block) and the resolution held at the data's
  (γ = 1: the images are what they are). φ is bisected to the member whose FLOPs come nearest the
  budget (rounding makes FLOPs a step function of φ, so the match is within some percent: the
  ratio is reported);
* all of them, the searched one unscaled, are trained with the same recipe (the space's ``train:``
  with ``--epochs`` on ``--fraction`` of the training split) and ``--seeds`` training seeds
  (``hvsearch.search.retrain``: studies ``svs-<digest>-seed<k>`` in ``--storage``, resumable).

Written to ``--out``: ``models.csv`` (one row per model: family, φ, depths, widths, params, FLOPs
and their ratio to the budget, the accuracy of each seed and their mean) and one architecture YAML
per model.

    python benchmarks/searched_vs_seeds.py results/fashion/best.yaml spaces/fashion.yaml \\
        --epochs 10 --fraction 0.2
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hvsearch.search.retrain import final_accuracy, retrain  # noqa: E402


def smallest_seeds() -> dict[str, object]:
    """family -> its seed with the fewest parameters (the catalog's reference figure)."""
    from hvsearch.models.catalog import get_seed, seed_names

    best: dict[str, object] = {}
    for name in seed_names():
        seed = get_seed(name)
        if seed.family not in best or seed.ref_params_m < best[seed.family].ref_params_m:
            best[seed.family] = seed
    return best


def at_data(spec, resolution: int, num_classes: int, in_chans: int):
    """``spec`` rebuilt for the data: its resolution, classes and channels, feature-size knobs
    re-fitted (what ``hvsearch scale`` does to a member at a new resolution)."""
    from hvsearch.scaling.compound import fit_to_features

    moved = spec.replace(resolution=resolution, num_classes=num_classes, in_chans=in_chans)
    return fit_to_features(moved)[0].validate()


def flops_at(spec, resolution: int) -> int:
    from hvsearch.cost import count_spec

    return count_spec(spec, resolution=resolution).flops


def match_flops(spec, budget: float, resolution: int, *, depth_mode: str, lo: float = -10.0, hi: float = 3.0,
                tol: float = 1e-3):
    """The scaled member (γ = 1) whose FLOPs at ``resolution`` are nearest ``budget`` in ratio:
    (member, flops). FLOPs grow with φ (depth and width only round up or down monotonically), so
    φ is bisected in [lo, hi] to ``tol`` and the members on both sides of the crossing compared;
    a φ that rounding cannot realise (ScalingError) counts as below the budget."""
    from hvsearch.scaling.compound import ScalingError, ScalingRule, scale

    rule = ScalingRule(gamma=1.0, depth_mode=depth_mode)

    def at(phi: float):
        try:
            member = scale(spec, phi, rule)
        except ScalingError:
            return None, 0
        return member, flops_at(member.spec, resolution)

    while hi - lo > tol:
        mid = (lo + hi) / 2
        if at(mid)[1] < budget:
            lo = mid
        else:
            hi = mid
    found = [(m, f) for m, f in (at(lo), at(hi)) if m is not None]
    if not found:
        raise SystemExit(f"no phi gives a valid member of {spec.name} near {budget:.3g} FLOPs")
    return min(found, key=lambda mf: abs(math.log(mf[1] / budget)))


def main(argv: list[str] | None = None) -> int:
    from hvsearch.errors import HVSearchError
    from hvsearch.arch_ref import resolve
    from hvsearch.space import Constraints, load_space
    from hvsearch.train.sources import data_shape

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arch", help="the searched architecture: YAML/JSON file or STUDY:best")
    p.add_argument("space", help="the space file whose data and train: recipe are used")
    p.add_argument("--epochs", type=int, help="training epochs (default the space's train.epochs)")
    p.add_argument("--fraction", type=float, help="share of the training split (default the space's)")
    p.add_argument("--seeds", type=int, default=2, help="training seeds (default 2)")
    p.add_argument("--flops", type=float, help="the budget (default: the searched architecture's FLOPs)")
    p.add_argument("--depth-mode", choices=("ceil", "round"), default="ceil")
    p.add_argument("--stage", choices=("all", "report"), default="all")
    p.add_argument("--storage", default="studies/searched-vs-seeds.db")
    p.add_argument("--out", default="results/benchmarks/searched-vs-seeds")
    p.add_argument("--address")
    p.add_argument("--num-cpus", type=int)
    args = p.parse_args(argv)
    out = sys.stdout
    t0 = time.monotonic()
    try:
        space = load_space(args.space)
        # equal FLOPs is the comparison: the space's own limits (max_params ...) are for its search
        # and would reject seeds scaled to the same FLOPs with more parameters
        space = dataclasses.replace(space, constraints=Constraints(), raw={**space.raw, "constraints": {}})
        res = int(space.train.resolution)
        classes, chans = data_shape(space.data)
        searched = resolve(args.arch).replace(num_classes=classes, in_chans=chans)
        budget = args.flops or flops_at(searched, res)
        print(f"budget: {budget / 1e6:.2f} M FLOPs at {res} px ({'--flops' if args.flops else args.arch})",
              file=out, flush=True)
        models = {"searched": (searched, "searched", 0.0, flops_at(searched, res))}
        for family, seed in smallest_seeds().items():
            base = at_data(seed.spec, res, classes, chans)
            member, flops = match_flops(base, budget, res, depth_mode=args.depth_mode)
            models[seed.name] = (member.spec.replace(name=f"{seed.name}_phi{member.phi:+.2f}"), family,
                                 member.phi, flops)
            print(f"  {seed.name} ({family}): {flops_at(base, res) / 1e6:.2f} M FLOPs at {res} px, "
                  f"phi {member.phi:+.2f} -> {flops / 1e6:.2f} M ({flops / budget:.2f}x the budget)",
                  file=out, flush=True)
        epochs = args.epochs or int(space.train.epochs)
        fraction = args.fraction or space.train.fraction
        specs = {label: spec for label, (spec, *_) in models.items()}
        from hvsearch.search.retrain import study_names

        names = study_names("svs", [s.arch_id for s in specs.values()], args.seeds)
        if args.stage == "all":
            names = retrain(space, specs, prefix="svs", epochs=epochs, fraction=fraction, seeds=args.seeds,
                            storage=args.storage, address=args.address, num_cpus=args.num_cpus, out=out)
        from hvsearch.search.study import storage_url

        acc = final_accuracy(names, storage_url("searched-vs-seeds", args.storage, "studies", create=False))
        from hvsearch.cost import count_spec

        rows = []
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        for label, (spec, family, phi, flops) in models.items():
            seeds = acc.get(spec.arch_id, [math.nan] * args.seeds)
            rows.append({"model": label, "family": family, "phi": phi,
                         "mixers": "/".join(s.mixer.type for s in spec.stages),
                         "depths": "-".join(str(s.depth) for s in spec.stages),
                         "widths": "-".join(str(s.width) for s in spec.stages),
                         "params": count_spec(spec, resolution=res).params, "flops": flops,
                         "flops_vs_budget": flops / budget,
                         **{f"top1_seed{k}": v for k, v in enumerate(seeds)},
                         "top1": float(np.mean(seeds)), "arch_id": spec.arch_id})
            (out_dir / f"{label}.yaml").write_text(spec.to_yaml())
        table = pd.DataFrame(rows)
        table.to_csv(out_dir / "models.csv", index=False)
        print(table.drop(columns=["arch_id"]).to_string(index=False, float_format="{:.2f}".format), file=out)
        print(f"\nwritten {out_dir}/models.csv and one YAML per model ({time.monotonic() - t0:.0f} s)", file=out)
    except HVSearchError as e:
        print(f"searched_vs_seeds: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
