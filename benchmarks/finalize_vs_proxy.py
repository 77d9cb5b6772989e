"""Does ``hvsearch finalize`` pick better than the proxy's best?

For each search of the search-vs-random benchmark (its studies, read from ``--searches``), the
``--top`` architectures by proxy accuracy (``hvsearch.search.finalize.top_trials``: trained to
the end, one per architecture) are the finalists. Every distinct finalist of every search is
trained ``--train-seeds`` times at the re-evaluation budget (``--epochs`` on ``--fraction``; the
union once, through ``hvsearch.search.retrain``; resumable studies in ``--storage``: run again to
continue):

* the *selection* trainings, seeds 0 .. K-2 (studies ``fvp-<digest>-seed<k>``), validated on the
  space's validation split, as ``finalize`` and the search validate;
* the *judging* training, seed K-1 (study ``fvp-test-<digest>-seed<K-1>``), with ``data.val_split
  0``: trained on the same fraction of the whole training split and scored on the data set's own
  **test split**, which neither the search nor the selection saw. (Judging on the validation
  images the picks were made on would carry their luck on those images into the judgement.)

Then, per search, the **proxy's pick** (its finalist of proxy rank 1, what ``hvsearch run``
reports as best) and **finalize's pick** (the best mean over the selection seeds) are compared
on the judging training. Written to ``--out``: ``searches.csv`` (one row per search: both picks,
their test accuracy, the gain) and ``finalists.csv`` (every finalist's seeds). The summary gives
the mean gain with an exact sign-flip test over searches (and a bootstrap interval), wins / ties /
losses, and the mean over the searches whose picks differ. Searches share finalists, so they are
not independent draws: read the interval as descriptive.

    python benchmarks/finalize_vs_proxy.py results/benchmarks/search-vs-random/fashion-proxy2.yaml \\
        --searches results/benchmarks/search-vs-random/search-vs-random.db --samplers tpe random \\
        --top 3 --train-seeds 3 --epochs 8 --fraction 0.2
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_vs_random import search_name, search_space  # noqa: E402


def finalists(args, space) -> dict[tuple[str, int], list]:
    """(sampler, seed) -> that search's finalists, best proxy first; each search must have been
    made from ``space``."""
    from hvsearch.search.finalize import top_trials
    from hvsearch.search.study import check_same_space, load_study, storage_url

    url = storage_url("search-vs-random", args.searches, "studies", create=False)
    found = {}
    for sampler in args.samplers:
        for seed in args.seeds:
            name = search_name(sampler, seed)
            study = load_study(name, url)
            # as search_vs_random made it (NSGA-II with the FLOPs objective; the population size is
            # not part of a study's identity)
            check_same_space(study, search_space(space, sampler, seed, trials=None, population=1), name)
            found[sampler, seed] = top_trials(study, args.top)
    return found


def judging_space(space):
    """The space with ``data.val_split`` 0: scored on the data set's own test split. Refused
    (HVSearchError) where that would not be unseen images: a search that already validated on the
    test split (``val_split`` 0), or an image folder (validated on its ``val/`` folder whatever
    ``val_split`` says)."""
    from hvsearch.errors import HVSearchError

    if space.data.name == "imagefolder":
        raise HVSearchError("data 'imagefolder': judging on a test split needs a data set with one (synthetic, "
                            "CIFAR, the IDX sets); an image folder validates on its val/ folder")
    if not space.data.val_split > 0:
        raise HVSearchError("data.val_split is 0: the searches validated on the test split, so it is not "
                            "unseen; judge a search made with a validation split held out of training")
    return dataclasses.replace(space, data=dataclasses.replace(space.data, val_split=0.0))


def check_budget(names: list[str], url: str, epochs: int, fraction: float) -> None:
    """HVSearchError if a study of ``names`` already exists with another training budget."""
    import optuna

    from hvsearch.errors import HVSearchError
    from hvsearch.search import study as st

    for summary in optuna.get_all_study_summaries(st.open_storage(url)):
        if summary.study_name in names:
            train = summary.user_attrs.get("train") or {}
            if (train.get("epochs"), train.get("fraction")) != (epochs, fraction):
                raise HVSearchError(f"study {summary.study_name!r} in {url} was trained {train.get('epochs')} "
                                    f"epoch(s) on {train.get('fraction')}, not {epochs} on {fraction:g}: use "
                                    "another --storage for another budget")


def evaluate(found: dict, accuracy: dict[str, list[float]], seeds: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-search table and the per-finalist table (see the module docstring)."""
    from hvsearch.search import study as st

    searches, rows = [], []
    for (sampler, seed), trials in found.items():
        scored = []
        for rank, t in enumerate(trials, start=1):
            aid = t.user_attrs[st.ATTR_ARCH_ID]
            acc = accuracy.get(aid, [math.nan] * seeds)
            selection = float(np.mean(acc[:-1]))
            scored.append((rank, t, aid, acc, selection))
            rows.append({"sampler": sampler, "search_seed": seed, "proxy_rank": rank, "trial": t.number,
                         "arch_id": aid, "proxy_top1": t.values[0],
                         **{f"seed{k}": v for k, v in enumerate(acc[:-1])}, "selection_mean": selection,
                         f"seed{seeds - 1}_test": acc[-1]})
        if not scored or any(math.isnan(v) for *_, acc, _ in scored for v in acc):
            continue  # not every finalist trained yet
        proxy_pick = scored[0]
        final_pick = max(scored, key=lambda r: (r[4], -r[0]))  # best selection mean; ties: proxy order
        searches.append({"sampler": sampler, "search_seed": seed, "finalists": len(scored),
                         "proxy_pick_trial": proxy_pick[1].number, "final_pick_trial": final_pick[1].number,
                         "final_pick_proxy_rank": final_pick[0], "same_pick": proxy_pick[2] == final_pick[2],
                         "proxy_pick_test": proxy_pick[3][-1], "final_pick_test": final_pick[3][-1],
                         "gain": final_pick[3][-1] - proxy_pick[3][-1]})
    return pd.DataFrame(searches), pd.DataFrame(rows)


def seeds_agreement(rows: pd.DataFrame, *, n_boot: int = 2000) -> str:
    """How well two selection seeds rank the distinct finalists alike (Kendall tau with a
    bootstrap interval): the ceiling of any pick by training seeds among them."""
    from hvsearch.stats import bootstrap_ci, kendall

    distinct = rows.drop_duplicates("arch_id").dropna(subset=["seed0", "seed1"]) if "seed1" in rows else rows[:0]
    if len(distinct) < 4:
        return "seed 0 vs seed 1 over the distinct finalists: fewer than 4 trained on both"
    a, b = distinct["seed0"].to_numpy(float), distinct["seed1"].to_numpy(float)
    lo, hi = bootstrap_ci(a, b, kendall, n_boot=n_boot)
    return (f"seed 0 vs seed 1 over the {len(distinct)} distinct finalists: Kendall tau {kendall(a, b):+.2f} "
            f"[{lo:+.2f}, {hi:+.2f}] (their spread {a.min():.2f}-{a.max():.2f}% and {b.min():.2f}-{b.max():.2f}%)")


def sign_flip_p(gain: np.ndarray, *, exact_up_to: int = 16, n_random: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of the mean gain under random signs (ties at zero stay zero): every sign
    pattern up to ``exact_up_to`` searches, else ``n_random`` random patterns. Like the bootstrap
    it treats the searches as independent, which shared finalists make them not quite."""
    gain = np.asarray(gain, dtype=float)
    if gain.size <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=gain.size)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_random, gain.size))
    means = np.abs(signs @ gain) / gain.size
    return float(np.mean(means >= abs(gain.mean()) - 1e-12))


def summary(table: pd.DataFrame, *, n_boot: int = 10_000, seed: int = 0) -> str:
    if table.empty:
        return "no search has all its finalists trained yet"
    gain = table["gain"].to_numpy(dtype=float)
    boot = np.random.default_rng(seed).choice(gain, size=(n_boot, gain.size)).mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    wins, ties = int((gain > 0).sum()), int((gain == 0).sum())
    differ = ~table["same_pick"].to_numpy(dtype=bool)
    differ_mean = f"{gain[differ].mean():+.2f}" if differ.any() else "none"
    return (f"{len(gain)} searches: finalize's pick minus the proxy's pick on the test split, mean "
            f"{gain.mean():+.2f} points (sign-flip p = {sign_flip_p(gain):.2f}; bootstrap over searches "
            f"[{lo:+.2f}, {hi:+.2f}]; both descriptive: searches share finalists); {wins} better, {ties} the same "
            f"({int((~differ).sum())} the same architecture), {len(gain) - wins - ties} worse; over the "
            f"{int(differ.sum())} searches whose picks differ: {differ_mean}")


def main(argv: list[str] | None = None) -> int:
    from hvsearch.errors import HVSearchError
    from hvsearch.space import load_space

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("space", help="the search-vs-random benchmark's space file (its recipe)")
    p.add_argument("--searches", required=True, help="the storage of the search-vs-random studies")
    p.add_argument("--samplers", nargs="+", default=["tpe", "random"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search seeds (default 0 1 2)")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--train-seeds", dest="train_seeds", type=int, default=3,
                   help="trainings per finalist: all but the last select, the last judges on the test split (default 3)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--storage", default="results/benchmarks/finalize-vs-proxy/finalize-vs-proxy.db")
    p.add_argument("--out", default="results/benchmarks/finalize-vs-proxy")
    p.add_argument("--report-only", action="store_true", help="read what is trained; train nothing")
    p.add_argument("--address")
    p.add_argument("--num-cpus", type=int)
    args = p.parse_args(argv)
    if args.train_seeds < 2:
        p.error("--train-seeds must be >= 2: one to select, one held out")
    try:
        t0 = time.monotonic()
        space = load_space(args.space)
        judging_space(space)  # refused before any training where the test split is not unseen
        found = finalists(args, space)
        from hvsearch.arch import ModelSpec
        from hvsearch.search import study as st
        from hvsearch.search.retrain import retrain, seed_accuracy, study_names

        specs = {}
        for trials in found.values():
            for t in trials:
                specs.setdefault(t.user_attrs[st.ATTR_ARCH_ID], ModelSpec.from_dict(json.loads(t.user_attrs[st.ATTR_ARCH])))
        labels = {f"f{i:02d}": spec for i, (_, spec) in enumerate(sorted(specs.items()))}
        k = args.train_seeds
        print(f"{len(found)} searches, {sum(map(len, found.values()))} finalists, {len(labels)} distinct: each "
              f"trained {k - 1} time(s) to select and once to judge on the test split, {args.epochs} epochs on "
              f"{100 * args.fraction:g}%", flush=True)
        Path(args.storage).parent.mkdir(parents=True, exist_ok=True)
        selection = study_names("fvp", list(specs), k)[:-1]
        judging = study_names("fvp-test", list(specs), k)[-1:]
        url = st.storage_url("fvp", args.storage, "studies")
        check_budget(selection + judging, url, args.epochs, args.fraction)
        if not args.report_only:
            common = dict(epochs=args.epochs, fraction=args.fraction, storage=url, address=args.address,
                          num_cpus=args.num_cpus, out=sys.stdout)
            retrain(space, labels, prefix="fvp", seeds=k - 1, names=selection, **common)
            retrain(judging_space(space), labels, prefix="fvp-test", seeds=1, first_seed=k - 1, names=judging,
                    **common)
        table, rows = evaluate(found, seed_accuracy(selection + judging, url), k)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "searches.csv", index=False)
        rows.to_csv(out / "finalists.csv", index=False)
        if not table.empty:
            print(table.to_string(index=False, float_format="{:.2f}".format))
        if len(table) < len(found):
            print(f"{len(found) - len(table)} of {len(found)} searches left out: a finalist without a result in "
                  "every training (untrained yet, or failed: see finalists.csv)")
        print(seeds_agreement(rows))
        print(summary(table))
        print(f"written {out}/searches.csv, finalists.csv ({time.monotonic() - t0:.0f} s)")
    except HVSearchError as e:
        print(f"finalize_vs_proxy: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the studies keep what was trained; the same command continues
        print("finalize_vs_proxy: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
