"""Seconds to count an architecture's params and FLOPs: fvcore's tracer, the shape counter and
the analytic count from the spec.

For every seed (at its own resolution and at the 32-px proxy size) and for ``--samples``
architectures drawn from every space (at the space's resolution), the three counters run the
whole path the tool runs, building included (fvcore on a model built as usual, the shape counter
on one whose weights are never drawn: :func:`hvsearch.cost.shapes.build_for_counting`; the
analytic count builds nothing), in turn call by call ``--repeats`` times in this one process, so
all see the same machine. The row keeps the median of each, the ratios to fvcore, whether the
counts are equal (they must be: fvcore is the reference) and the 1-minute load average before and
after: a figure taken beside another heavy job is worthless.

    python benchmarks/cost_count_time.py --out results/benchmarks/cost-count
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import hvsearch  # noqa: F401  (before timm)

from _report import report  # benchmarks/_report.py

COUNTERS = ("fvcore", "shapes", "analytic")


def time_counts(spec, resolution, repeats: int) -> dict:
    from hvsearch.cost.spec import _count_spec

    count_once = _count_spec.__wrapped__  # the memoised path without its cache
    seconds: dict[str, list[float]] = {c: [] for c in COUNTERS}
    costs = {}
    load_before = os.getloadavg()[0]
    for i in range(repeats):
        for counter in COUNTERS if i % 2 == 0 else COUNTERS[::-1]:
            t0 = time.perf_counter()
            costs[counter] = count_once(spec, resolution, True, counter)
            seconds[counter].append(time.perf_counter() - t0)
    fv, sh, an = (statistics.median(seconds[c]) for c in COUNTERS)
    ref = costs["fvcore"]
    key = (ref.flops, ref.params, ref.by_stage, ref.params_by_stage)
    return {"resolution": resolution, "params_M": ref.params / 1e6, "gflops": ref.flops / 1e9,
            "fvcore_s": fv, "shapes_s": sh, "analytic_s": an, "speedup": fv / sh, "analytic_speedup": fv / an,
            "equal": all((c.flops, c.params, c.by_stage, c.params_by_stage) == key
                         for c in (costs["shapes"], costs["analytic"])),
            "load_1min": load_before, "load_1min_after": os.getloadavg()[0]}


def _line(label: str, res: int, r: dict) -> str:
    return (f"{label:28s} {res:4d}px fvcore {r['fvcore_s']:6.3f} s  shapes {r['shapes_s']:6.3f} s  "
            f"analytic {r['analytic_s'] * 1e3:6.2f} ms  equal {r['equal']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="*", default=None, help="default: every seed")
    p.add_argument("--spaces", nargs="*", type=Path, default=None, help="default: spaces/*.yaml")
    p.add_argument("--samples", type=int, default=5, help="architectures drawn per space")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/cost-count"))
    args = p.parse_args(argv)
    from hvsearch.errors import SpecError
    from hvsearch.models import get_seed, seed_names
    from hvsearch.space import RandomTrial, load_space

    rows = []
    for name in args.seeds if args.seeds is not None else seed_names():
        spec = get_seed(name).spec
        for res in sorted({spec.resolution, 32}, reverse=True):
            rows.append({"model": name, **time_counts(spec, res, args.repeats)})
            print(_line(name, res, rows[-1]), flush=True)
    spaces = args.spaces if args.spaces is not None else sorted(Path("spaces").glob("*.yaml"))
    for path in spaces:
        space = load_space(path)
        rng, drawn = random.Random(0), 0
        while drawn < args.samples:
            try:
                spec = space.arch.sample(RandomTrial(rng))
            except SpecError:
                continue
            drawn += 1
            res = space.constraints.resolution or spec.resolution
            rows.append({"model": f"{path.stem}:{spec.arch_id}", **time_counts(spec, res, args.repeats)})
            print(_line(rows[-1]["model"], res, rows[-1]), flush=True)
    df = report(rows, args.out / "cost_count_time.csv", float_format="{:.3g}")
    return 0 if df.equal.all() else 1


if __name__ == "__main__":
    sys.exit(main())
