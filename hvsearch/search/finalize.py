"""``hvsearch finalize SPACE``: choose a search's result on more than the proxy.

The proxy ranks the bulk of a space, not its top: on Fashion-MNIST the best architectures of
twelve searches lay within 0.5 points of proxy accuracy, where one architecture moves by up to
0.6 points between training seeds (README, "Does the search beat random sampling?"). A sampler
that climbs the proxy climbs its noise too. So the last step re-evaluates the search's ``top``
architectures (the highest final proxy accuracy among its trained trials, one per architecture)
with a longer or larger training — ``epochs`` on ``fraction`` of the training split, the
space's recipe otherwise — and ``seeds`` training seeds, and picks the best mean.

The trainings are studies of their own in the search's storage (``<study>-final-<budget>-<digest>-
seed<k>``: the digest names the set of finalists; hvsearch.search.retrain), run by the same Ray
Tune machinery as the search, so an interrupted ``finalize`` continues where it stopped and a
repeated one trains nothing. Written to ``results/<study>/``: ``finalists.csv`` (one row per
finalist: proxy rank and accuracy, the accuracy of each seed, their mean and spread, the final
rank) and ``final.yaml`` (the pick, loadable like ``best.yaml``).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd

from hvsearch.errors import StudyError
from hvsearch.search import study as st

DEFAULT_TOP = 4
DEFAULT_SEEDS = 2
EPOCHS_FACTOR = 5  # the default re-evaluation: 5x the proxy's epochs (as calibrate's reference)


@dataclass
class Finalists:
    table: pd.DataFrame  # one row per finalist, best final mean first
    pick: dict | None  # the row of the pick (None until every finalist has a result or failed)
    pending: int  # finalists still to train (a re-run trains them)
    names: list[str]  # the studies of the re-evaluation, one per seed
    results_dir: Path | None
    margin: dict | None = None  # the pick's lead over the runner-up against the seeds' noise (see margin)


def top_trials(study, top: int) -> list:
    """The ``top`` trained trials of ``study`` by final proxy accuracy, one per architecture, best
    first; ties as the search's best (``best.yaml``) breaks them: the cheaper in FLOPs, then the
    earlier trial. Trials ASHA stopped early are not candidates: their accuracy is that of a
    shorter training."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and t.user_attrs.get(st.ATTR_STATUS) == "trained" and st.ATTR_ARCH in t.user_attrs]
    done.sort(key=lambda t: (-t.values[0], float(t.user_attrs.get(st.ATTR_FLOPS) or 0), t.number))
    out, seen = [], set()
    for t in done:
        aid = t.user_attrs[st.ATTR_ARCH_ID]
        if aid not in seen:
            seen.add(aid)
            out.append(t)
    return out[:top]


def study_names(study: str, arch_ids, epochs: int, fraction: float, seeds: int) -> list[str]:
    from hvsearch.search.retrain import study_names as named

    short = f"{fraction:g}"
    frac = short if float(short) == fraction else repr(fraction)  # 0.1234567 and 0.1234568 differ
    return named(f"{study}-final-e{epochs}-f{frac}", arch_ids, seeds)


def run_finalize(space, *, study: str | None = None, storage: str | None = None, top: int = DEFAULT_TOP,
                 epochs: int | None = None, fraction: float | None = None, seeds: int = DEFAULT_SEEDS,
                 address: str | None = None, num_cpus: int | None = None, studies_dir: str | Path = "studies",
                 results_dir: str | Path | None = "results", train: bool = True,
                 out: IO[str] | None = None) -> Finalists:
    """Re-evaluate the ``top`` architectures of the search ``study`` (default the space's name) made
    from ``space``; see the module docstring. ``train=False`` only reads what has been trained."""
    from hvsearch.search.retrain import retrain

    out = out or sys.stdout
    name = study or space.name
    url = st.storage_url(name, storage, studies_dir, create=False)
    searched = st.load_study(name, url)
    st.check_same_space(searched, space, name)
    epochs = int(epochs or EPOCHS_FACTOR * int(space.train.epochs))
    fraction = float(fraction if fraction is not None else space.train.fraction)
    if epochs * fraction <= int(space.train.epochs) * space.train.fraction:
        raise StudyError(f"finalize: --epochs x --fraction ({epochs} x {fraction:g}) must exceed the search's "
                         f"proxy ({int(space.train.epochs)} x {space.train.fraction:g}): a re-evaluation on no "
                         "more training than the proxy's only repeats it")
    finalists = top_trials(searched, top)
    if len(finalists) < 2:
        raise StudyError(f"finalize: study {name!r} has {len(finalists)} architecture(s) trained to the end; "
                         "there is nothing to choose between (run the search further)")
    from hvsearch.arch import ModelSpec

    specs = {f"t{t.number}": ModelSpec.from_dict(json.loads(t.user_attrs[st.ATTR_ARCH])) for t in finalists}
    names = study_names(name, [s.arch_id for s in specs.values()], epochs, fraction, seeds)
    try:
        for n in names:
            st.check_study_name(n)
    except StudyError:
        raise StudyError(f"finalize: the re-evaluation's studies would be named like {names[0]!r}, longer than "
                         f"a study name may be (128): finalize a study with a shorter name (--study {name[:20]}...)"
                         ) from None
    budget = f"{epochs} epoch(s) on {100 * fraction:g}% of the training split"
    print(f"finalize {name!r}: the top {len(finalists)} of its trained architectures by proxy accuracy "
          f"({', '.join(f'trial {t.number} {t.values[0]:.2f}%' for t in finalists)}), each trained {budget} "
          f"with {seeds} seed(s)", file=out, flush=True)
    if train:
        retrain(space, specs, prefix=f"{name}-final", epochs=epochs, fraction=fraction, seeds=seeds, storage=url,
                address=address, num_cpus=num_cpus, out=out, studies_dir=studies_dir, names=names)
    table = finalists_table(finalists, names, url)
    pending = int((table["final_mean"].isna() & (table["failed"] == "")).sum())
    # a finalist whose training failed ranks last (a re-run would not train it again); the pick
    # waits for every other one
    pick = None if pending or table["final_mean"].isna().all() else _plain(table.iloc[0].to_dict())
    lead = margin(table) if pick is not None else None
    if lead is not None:
        pick.update(lead)
    for row in table[table["failed"] != ""].itertuples():
        print(f"finalist trial {row.trial} ({row.mixers}) failed to train, ranked last: {row.failed}",
              file=out, flush=True)
    written = None
    if results_dir is not None:
        written = Path(results_dir) / name
        written.mkdir(parents=True, exist_ok=True)
        table.to_csv(written / "finalists.csv", index=False)
        if pick is None:  # an earlier budget's pick must not stand beside this table
            (written / "final.yaml").unlink(missing_ok=True)
        else:
            t = next(t for t in finalists if t.number == pick["trial"])
            doc = {"study": name, "trial": t.number, "arch_id": pick["arch_id"], "final_top1": pick["final_mean"],
                   "final_seeds": [pick[c] for c in table.columns if c.startswith("final_seed")],
                   "final_budget": budget, "proxy_top1": pick["proxy_top1"], "proxy_rank": int(pick["proxy_rank"]),
                   "params": pick["params"], "flops": pick["flops"],
                   **({k: pick[k] for k in ("lead", "seed_sd", "threshold", "separated")} if lead else {}),
                   "arch": {"name": f"{name}-final-t{t.number}", **json.loads(t.user_attrs[st.ATTR_ARCH])}}
            import yaml

            (written / "final.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return Finalists(table, pick, pending, names, written, lead)


def margin(table: pd.DataFrame) -> dict | None:
    """The pick's lead over the runner-up (points of mean accuracy) beside the training seeds'
    noise: ``seed_sd`` is the standard deviation of one training's accuracy, pooled over the
    finalists trained with every seed (``n (seeds - 1)`` degrees of freedom), and the lead counts
    as ``separated`` when it exceeds ``threshold``, the two-sided 95% Student-t bound of a
    difference of two means, ``t * seed_sd * sqrt(2 / seeds)``. Indicative: the two compared are
    the best two of several, which favours a larger lead. None with fewer than two finalists or
    one seed."""
    from scipy import stats

    seeds = table[[c for c in table.columns if c.startswith("final_seed")]]
    done = table["final_mean"].notna()
    k = seeds.shape[1]
    if done.sum() < 2 or k < 2:
        return None
    sd = float(math.sqrt(seeds[done].var(axis=1, ddof=1).mean()))
    threshold = float(stats.t.ppf(0.975, int(done.sum()) * (k - 1)) * sd * math.sqrt(2 / k))
    lead = float(table["final_mean"].iloc[0] - table["final_mean"].iloc[1])
    return {"lead": lead, "seed_sd": sd, "threshold": threshold, "separated": bool(lead > threshold)}


def _plain(row: dict) -> dict:
    """A table row with Python numbers (numpy's do not go into YAML)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def finalists_table(finalists: list, names: list[str], url: str) -> pd.DataFrame:
    """One row per finalist: its proxy rank and accuracy, each seed's final accuracy (NaN until
    trained), their mean and spread, why its training failed (if it did); best mean first (then
    the proxy's order)."""
    from hvsearch.search.retrain import seed_accuracy, seed_failures

    by_arch = seed_accuracy(names, url)
    failures = seed_failures(names, url, by_arch)
    rows = []
    for rank, t in enumerate(finalists, start=1):
        a = t.user_attrs
        arch = json.loads(a[st.ATTR_ARCH])
        seeds = by_arch.get(a[st.ATTR_ARCH_ID], [math.nan] * len(names))
        done = [v for v in seeds if not math.isnan(v)]
        complete = len(done) == len(seeds)
        rows.append({"proxy_rank": rank, "trial": t.number, "arch_id": a[st.ATTR_ARCH_ID],
                     "mixers": "/".join(s["mixer"]["type"] for s in arch["stages"]),
                     "depths": "-".join(str(s["depth"]) for s in arch["stages"]),
                     "widths": "-".join(str(s["width"]) for s in arch["stages"]),
                     "params": a.get(st.ATTR_PARAMS), "flops": a.get(st.ATTR_FLOPS), "proxy_top1": t.values[0],
                     **{f"final_seed{k}": v for k, v in enumerate(seeds)},
                     "final_mean": sum(done) / len(done) if complete else math.nan,
                     "final_spread": max(done) - min(done) if complete and len(done) > 1 else math.nan,
                     "failed": failures.get(a[st.ATTR_ARCH_ID], "")})
    df = pd.DataFrame(rows).sort_values(["final_mean", "proxy_rank"], ascending=[False, True], na_position="last",
                                        kind="stable").reset_index(drop=True)
    df.insert(0, "final_rank", range(1, len(df) + 1))
    return df
