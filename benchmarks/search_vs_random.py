"""Does the search find better architectures than random sampling at the same budget?

Random search is a strong baseline in NAS (Li & Talwalkar 2019; Yang et al. 2020), so a sampler is
only worth its machinery if it beats random sampling at an equal number of trained trials. This
runs, on one space (default ``spaces/fashion.yaml``), with everything but the sampler equal:

* ``tpe``: the space's default sampler and its ``sampler_options``, accuracy only;
* ``nsga2``: Optuna's NSGA-II on accuracy × FLOPs (``--population`` per generation: NSGA-II's
  own default of 50 would make a 24-trial search its random first generation and nothing else);
* ``random``: Optuna's RandomSampler, accuracy only,

each with ``--seeds`` search seeds, ``search.trials`` (or ``--trials``) trained trials, the space's
ASHA and proxy training, and no time budget (a budget in seconds would end slower samplers'
searches earlier). Every search is an ordinary study (``svr-<sampler>-seed<s>`` in ``--storage``),
so a killed benchmark continues where it stopped and every search opens in optuna-dashboard.

Then every search's best trial (highest proxy accuracy; for NSGA-II the most accurate point of its
front) is **retrained at the reference budget** (``--reference-epochs`` on
``--reference-fraction`` of the training split, ``--reference-seeds`` training seeds; the same
machinery as ``hvsearch calibrate``'s reference: studies ``svr-retrain-<digest>-seed<k>``, one per
training seed, over the distinct best architectures; ``digest`` names that set). The proxy's
best is what the search believed; the reference accuracy is what it found.

Written to ``--out``: ``searches.csv`` (one row per search: trials, best proxy accuracy, its
architecture, its reference accuracy per seed and mean, the hypervolume of the search's
accuracy × FLOPs front, wall time), ``curves.csv`` (best proxy accuracy so far after each trained
trial), ``summary.csv`` (per sampler: median and range over search seeds) and ``search_vs_random.png``.

The hypervolume is that of the (accuracy, FLOPs) front of the trials trained to the end (ASHA's
early-stopped ones left out: their accuracy is a shorter training's), normalised to [0, 1]:
accuracy from chance (100 / classes) to 100%, FLOPs from ``constraints.max_flops`` (or the
largest seen) to 0; the area the front dominates in that box. It is computed for every sampler,
also the single-objective ones, over the same trials. Mind the box: where every architecture is
far cheaper than ``max_flops`` and far above chance, most of the value is the box (README: the
Fashion-MNIST run's values are 0.785-0.794 in it, 0.049-0.060 in a box fitted to the points).

    python benchmarks/search_vs_random.py spaces/fashion.yaml --seeds 0 1 2 \\
        --reference-epochs 10 --reference-fraction 0.2
    python benchmarks/search_vs_random.py spaces/fashion.yaml --seeds 0 1 2 --stage report
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hvsearch.search.retrain import final_accuracy, retrain, study_names  # noqa: E402

SAMPLERS = ("tpe", "nsga2", "random")
STAGES = ("all", "search", "retrain", "report")


def search_name(sampler: str, seed: int) -> str:
    return f"svr-{sampler}-seed{seed}"


def search_space(space, sampler: str, seed: int, *, trials: int | None, population: int):
    """The space with only the sampler (and its seed) changed; NSGA-II also gets the FLOPs
    objective. No time budget: the trial budget is what is equal."""
    objectives = ("accuracy", "flops") if sampler == "nsga2" else ("accuracy",)
    options = (dict(space.search.sampler_options) if sampler == space.search.sampler
               else {"population_size": population} if sampler == "nsga2" else {})
    return space.with_overrides(sampler=sampler, sampler_options=options, seed=seed, objectives=objectives,
                                trials=trials or space.search.trials, time_budget=None)


def hypervolume(acc: np.ndarray, flops: np.ndarray, *, chance: float, max_flops: float) -> float:
    """Area dominated by the (accuracy ↑, FLOPs ↓) points in the box [chance, 100] × [max_flops, 0],
    normalised to [0, 1]; points outside the box add nothing."""
    a = np.clip((np.asarray(acc, float) - chance) / (100.0 - chance), 0, 1)
    c = np.clip(1 - np.asarray(flops, float) / max_flops, 0, 1)
    order = np.argsort(-a, kind="stable")
    a, c = a[order], c[order]
    # sweep in decreasing accuracy: each point adds the strip of cost-room above all before it
    prev = np.maximum.accumulate(np.concatenate([[0.0], c]))[:-1]
    return float(np.sum(a * np.maximum(c - prev, 0)))


def trained(study) -> pd.DataFrame:
    """The study's trials in order, with the proxy accuracy of complete (full-budget) ones."""
    from hvsearch.search.results import trials_frame
    from hvsearch.search.study import TRAINED_STATUSES

    df = trials_frame(study)
    if df.empty:
        return df
    df = df[df["status"].isin(TRAINED_STATUSES)].sort_values("trial").reset_index(drop=True)
    df["complete"] = df["state"] == "COMPLETE"
    return df


def run_searches(space, args, out) -> None:
    from hvsearch.search.runner import init_ray, run_search, stop_ray

    owner = Path("studies").resolve() / "search-vs-random"  # its Ray processes, for a killed run's cleanup
    started = init_ray(args.address, args.num_cpus, owner=owner)
    try:
        for sampler in args.samplers:
            for seed in args.seeds:
                name = search_name(sampler, seed)
                print(f"=== search {name}: {sampler} sampler, seed {seed}", file=out, flush=True)
                run_search(search_space(space, sampler, seed, trials=args.trials, population=args.population),
                           study=name, storage=args.storage, results_dir=None, out=out)
    finally:
        stop_ray(started, owner)


def best_specs(args) -> dict[tuple[str, int], object]:
    """(sampler, seed) -> the best trial of each finished search."""
    from hvsearch.search.results import best_trial
    from hvsearch.search.study import load_study

    best = {}
    for sampler in args.samplers:
        for seed in args.seeds:
            t = best_trial(load_study(search_name(sampler, seed), _url(args)))
            if t is not None:
                best[(sampler, seed)] = t
    return best


def _url(args) -> str:
    from hvsearch.search.study import storage_url

    return storage_url("search-vs-random", args.storage, "studies", create=True)


def retrain_names(arch_ids, seeds: int) -> list[str]:
    return study_names("svr-retrain", arch_ids, seeds)


def retrain_bests(space, args, best, out) -> list[str]:
    """Train each distinct best architecture ``--reference-seeds`` times at the reference budget;
    the studies' names."""
    import json

    from hvsearch.arch import ModelSpec
    from hvsearch.search import study as st

    specs = {}
    for t in best.values():
        specs.setdefault(t.user_attrs[st.ATTR_ARCH_ID], ModelSpec.from_dict(json.loads(t.user_attrs[st.ATTR_ARCH])))
    return retrain(space, {f"b{i:02d}": spec for i, (_, spec) in enumerate(sorted(specs.items()))},
                   prefix="svr-retrain", epochs=args.reference_epochs, fraction=args.reference_fraction,
                   seeds=args.reference_seeds, storage=args.storage, address=args.address,
                   num_cpus=args.num_cpus, out=out)


def report(space, args, names: list[str] | None, out_dir: Path, out) -> pd.DataFrame:
    from hvsearch.search import study as st
    from hvsearch.search.study import load_study
    from hvsearch.train.sources import data_shape

    url = _url(args)
    chance = 100.0 / data_shape(space.data)[0]
    best = best_specs(args)
    ref = final_accuracy(names, url) if names else {}
    rows, curves = [], []
    searches = [(s, seed) for s in args.samplers for seed in args.seeds]
    frames = {key: trained(load_study(search_name(*key), url)) for key in searches}
    seen = [f["flops"].max() for f in frames.values() if not f.empty]
    max_flops = float(space.constraints.max_flops or (max(seen) if seen else 1.0))
    for (sampler, seed), df in frames.items():
        done = df[df["complete"]] if not df.empty else df
        b = best.get((sampler, seed))
        aid = b.user_attrs[st.ATTR_ARCH_ID] if b is not None else None
        accs = ref.get(aid, [math.nan] * args.reference_seeds)
        starts = [t.datetime_start for t in load_study(search_name(sampler, seed), url).trials if t.datetime_start]
        ends = [t.datetime_complete for t in load_study(search_name(sampler, seed), url).trials if t.datetime_complete]
        rows.append({
            "sampler": sampler, "seed": seed, "trained": len(df), "complete": len(done),
            "best_proxy_top1": float(done["val_top1"].max()) if len(done) else math.nan,
            "best_arch_id": aid, "best_params": b.user_attrs.get(st.ATTR_PARAMS) if b else None,
            "best_flops": b.user_attrs.get(st.ATTR_FLOPS) if b else None,
            **{f"reference_seed{k}": v for k, v in enumerate(accs)},
            "reference_top1": float(np.mean(accs)) if accs and not any(map(math.isnan, accs)) else math.nan,
            "hypervolume": hypervolume(done["val_top1"], done["flops"], chance=chance, max_flops=max_flops)
            if len(done) else math.nan,
            "wall_s": (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan,
        })
        # best complete trial so far (a pruned trial's partial accuracy is not a result); NaN until one completes
        so_far = df["val_top1"].where(df["complete"]).cummax().ffill() if not df.empty else df["val_top1"]
        curves += [{"sampler": sampler, "seed": seed, "trained": i + 1, "best_proxy_top1": v}
                   for i, v in enumerate(so_far)]
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "searches.csv", index=False)
    pd.DataFrame(curves).to_csv(out_dir / "curves.csv", index=False)
    summary = summarize(table)
    summary.to_csv(out_dir / "summary.csv", index=False)
    plot(table, pd.DataFrame(curves), out_dir / "search_vs_random.png", title=f"{space.name}: "
         f"{args.trials or space.search.trials} trained trials per search, {len(args.seeds)} search seeds")
    print(table.to_string(index=False, float_format="{:.2f}".format), file=out)
    print(file=out)
    print(render(summary), file=out)
    print(f"\nwritten {out_dir}/searches.csv, curves.csv, summary.csv, search_vs_random.png", file=out, flush=True)
    return table


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per sampler, over its search seeds: median, min and max of each measure, and how many
    searches each is over (``<measure>_n``: a search without it, e.g. one whose retraining has not
    finished, is not counted in its median)."""
    rows = []
    for sampler, g in table.groupby("sampler", sort=False):
        row = {"sampler": sampler, "searches": len(g)}
        for col in ("best_proxy_top1", "reference_top1", "hypervolume", "wall_s"):
            v = g[col].astype(float)
            row.update({col: v.median(), f"{col}_min": v.min(), f"{col}_max": v.max(), f"{col}_n": int(v.notna().sum())})
        rows.append(row)
    return pd.DataFrame(rows)


def render(summary: pd.DataFrame) -> str:
    def cell(r, col, fmt):
        return f"{fmt.format(r[col])} [{fmt.format(r[col + '_min'])}, {fmt.format(r[col + '_max'])}]"

    lines = ["| sampler | searches | best proxy top-1 % | its reference top-1 % | hypervolume (acc x FLOPs) | wall min |",
             "|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['sampler']} | {r['searches']} | {cell(r, 'best_proxy_top1', '{:.2f}')} | "
                     f"{cell(r, 'reference_top1', '{:.2f}')} | {cell(r, 'hypervolume', '{:.3f}')} | "
                     f"{r['wall_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n(median [min, max] over search seeds)"


def plot(table: pd.DataFrame, curves: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = dict(zip(SAMPLERS, ("tab:blue", "tab:orange", "tab:gray")))
    for sampler, g in curves.groupby("sampler", sort=False):
        wide = g.pivot(index="trained", columns="seed", values="best_proxy_top1")
        c = colors.get(sampler)
        axes[0].fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=c, alpha=0.15)
        axes[0].plot(wide.index, wide.median(axis=1, skipna=False), color=c, label=sampler)
    axes[0].set(xlabel="trained trials", ylabel="best proxy val top-1 so far (%)", title="search progress")
    axes[0].legend()
    for i, (col, label) in enumerate((("reference_top1", "best arch retrained: val top-1 (%)"),
                                      ("hypervolume", "hypervolume, accuracy x FLOPs")), start=1):
        for j, (sampler, g) in enumerate(table.groupby("sampler", sort=False)):
            axes[i].scatter(np.full(len(g), j), g[col], color=colors.get(sampler))
            axes[i].hlines(g[col].median(), j - 0.25, j + 0.25, color=colors.get(sampler))
        axes[i].set_xticks(range(table["sampler"].nunique()), list(table["sampler"].unique()))
        axes[i].set(ylabel=label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from hvsearch.errors import HVSearchError
    from hvsearch.space import load_space

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("space", nargs="?", default="spaces/fashion.yaml")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search seeds (default 0 1 2)")
    p.add_argument("--trials", type=int, help="trained trials per search (default the space's search.trials)")
    p.add_argument("--population", type=int, default=8, help="NSGA-II's population_size (default 8)")
    p.add_argument("--reference-epochs", type=int, help="epochs of the retraining (default 5x train.epochs)")
    p.add_argument("--reference-fraction", type=float, help="training split share of the retraining "
                   "(default the space's train.fraction)")
    p.add_argument("--reference-seeds", type=int, default=2)
    p.add_argument("--stage", choices=STAGES, default="all",
                   help="search, retrain the bests, or only report from the studies (default all)")
    p.add_argument("--storage", default="studies/search-vs-random.db")
    p.add_argument("--out", default="results/benchmarks/search-vs-random")
    p.add_argument("--address", help="a Ray cluster to run on (default a local Ray)")
    p.add_argument("--num-cpus", type=int)
    args = p.parse_args(argv)
    try:
        space = load_space(args.space)
        args.reference_epochs = args.reference_epochs or 5 * int(space.train.epochs)
        args.reference_fraction = args.reference_fraction or space.train.fraction
        if args.reference_epochs * args.reference_fraction <= space.train.epochs * space.train.fraction:
            raise HVSearchError(f"--reference-epochs x --reference-fraction must exceed the proxy's "
                                f"{space.train.epochs} x {space.train.fraction:g}, got "
                                f"{args.reference_epochs} x {args.reference_fraction:g}")
        t0 = time.monotonic()
        out = sys.stdout
        if args.stage in ("all", "search"):
            run_searches(space, args, out)
        names = None
        if args.stage in ("all", "retrain", "report"):
            best = best_specs(args)
            if args.stage == "report":
                from hvsearch.search.study import open_storage
                import optuna

                have = {s.study_name for s in optuna.get_all_study_summaries(open_storage(_url(args)))}
                names = retrain_names([t.user_attrs["arch_id"] for t in best.values()], args.reference_seeds)
                names = names if all(n in have for n in names) else None
            elif best:
                names = retrain_bests(space, args, best, out)
        report(space, args, names, Path(args.out), out)
        print(f"({time.monotonic() - t0:.0f} s)", file=out)
    except HVSearchError as e:
        print(f"search_vs_random: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
