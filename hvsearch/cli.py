"""``hvsearch`` command line: one thin subcommand per verb; the work lives in the packages.

Errors a user can cause (:class:`~hvsearch.errors.HVSearchError`) are printed as one line on
stderr with exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from hvsearch.errors import HVSearchError
from hvsearch import arch_ref

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, Callable]] = {}


def command(name: str, help: str):
    """Register ``fn(args) -> exit status`` as subcommand ``name``; ``fn.arguments(parser)``
    (set with :func:`arguments`) declares its options."""

    def wrap(fn):
        COMMANDS[name] = (fn, help, getattr(fn, "_arguments", lambda p: None))
        return fn

    return wrap


def arguments(add: Callable[[argparse.ArgumentParser], None]):
    def wrap(fn):
        fn._arguments = add
        return fn

    return wrap


def _emit(df, fmt: str, float_format: str = "{:.3f}") -> None:
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
    elif fmt == "json":
        print(json.dumps(df.to_dict(orient="records"), indent=1))
    else:
        print(df.to_string(index=False, float_format=float_format.format))


# ---- commands: one block each (arguments, then the thin function) ------------------------------

@command("seeds", help="list the seed catalog with measured vs. published cost")
@arguments(lambda p: p.add_argument("--format", choices=("table", "csv", "json"), default="table"))
def cmd_seeds(args: argparse.Namespace) -> int:
    from hvsearch.cost.report import seeds_table

    table = seeds_table(progress=args.format == "table")
    if args.format != "table":
        _emit(table, args.format)
        return 0
    _emit(table.drop(columns="notes"), "table")
    notes: dict[str, list[str]] = {}  # a family's shared note once, with every seed it is about
    for name, note in zip(table["name"], table["notes"]):
        if note:
            notes.setdefault(note, []).append(name)
    if notes:
        print("\nnotes:")
        for note, names in notes.items():
            print(f"  {', '.join(names)}: {note}")
    return 0


def _int_in(low: int, high: int | None = None, multiple: int = 1) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high] (a multiple of ``multiple``), or a one-line
    usage error naming the flag, the rule and the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        rule = (f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]") + \
            (f", a multiple of {multiple}" if multiple > 1 else "")
        if value < low or (high is not None and value > high) or value % multiple:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _study_name(text: str) -> str:
    """An argparse ``type`` for --study: a study name, or a one-line usage error (an empty name
    would silently fall back to the default)."""
    from hvsearch.space.schema import STUDY_NAME

    if not STUDY_NAME.fullmatch(text) or ".." in text:
        raise argparse.ArgumentTypeError(f"must be a study name: letters, digits, `_`, `-` and `.` (up to 128, "
                                         f"starting with a letter or digit, no `..`), got {text!r}")
    return text


#: --resolution everywhere: a multiple of the total stride, up to the largest a spec may have
RESOLUTION = _int_in(32, 8192, multiple=32)


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="a seed name (see `hvsearch seeds`) or an architecture YAML/JSON file")
    p.add_argument("--resolution", type=RESOLUTION, default=None, help="count cost at this input size")
    p.add_argument("--format", choices=("table", "yaml", "json"), default="table")


@command("show", help="print an architecture's per-stage spec and cost")
@arguments(_show_args)
def cmd_show(args: argparse.Namespace) -> int:
    arch_ref.check(args.arch)  # before torch loads: a wrong name or path is answered at once
    from hvsearch.cost.report import show_arch

    print(show_arch(args.arch, resolution=args.resolution, fmt=args.format))
    return 0


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="a search-space YAML file (see spaces/)")
    p.add_argument("--samples", type=_int_in(1, 100_000), default=30, help="architectures to sample (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--no-cost", action="store_true", help="only validate samples: no model is built")


@command("check", help="validate a space file; sample, shape-check and cost-count architectures")
@arguments(_check_args)
def cmd_check(args: argparse.Namespace) -> int:
    from hvsearch.search.check import check_space
    from hvsearch.space import load_space
    from hvsearch.train.sources import check_data

    space = load_space(args.space)
    if args.samples < 1:
        raise HVSearchError(f"--samples must be >= 1, got {args.samples}")
    check_data(space.data)
    report = check_space(space, samples=args.samples, seed=args.seed, count=not args.no_cost,
                         progress=True)
    print(report.render())
    return 1 if report.problems else 0


def _ray_args(p, space: bool = True) -> None:
    """Where and how trials run; one definition for run, calibrate and scale --grid. With a space
    (``space``), an unset flag keeps the space's ``resources:``; without one (the grid), a trial
    takes one CPU and no GPU."""
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=None if space else 1,
                   help="CPUs each trial reserves, and its torch threads (default: "
                   + ("resources.cpus_per_trial)" if space else "1)"))
    p.add_argument("--gpus-per-trial", type=float, default=None if space else 0,
                   help="fractions share a GPU: 0.25 = four trials per GPU (default: "
                   + ("resources.gpus_per_trial)" if space else "0)"))
    p.add_argument("--address", help="join this Ray cluster (e.g. 10.0.0.1:6379, or `auto`) "
                   "instead of starting a local one")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="a search-space YAML file (see spaces/)")
    p.add_argument("--study", type=_study_name,
                   help="study name (default: the space's `name`); re-running a study continues it")
    p.add_argument("--resume", action="store_true",
                   help="continue an existing study (fails if there is none); re-queues interrupted trials")
    p.add_argument("--storage", help="Optuna storage: an RDB URL (postgresql://..., mysql://...) or a SQLite "
                   "file path (default: sqlite:///studies/STUDY.db)")
    p.add_argument("--studies-dir", default="studies", help="where default storages, checkpoints and Tune "
                   "files go (default studies/)")
    p.add_argument("--results-dir", default="results", help="results/<study>/ is written here (default results/)")
    p.add_argument("--trials", type=int, help="trial budget: architectures trained in the study in all")
    p.add_argument("--time-budget", help="no new trial starts after this long (s, or 90s / 10m / 2h)")
    p.add_argument("--sampler", choices=("tpe", "random", "nsga2"))
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--objectives", nargs="+", metavar="OBJ",
                   help="replace search.objectives: accuracy [flops|params|latency] (a study keeps the "
                   "objectives it was made with: give a new --study)")
    _ray_args(p)
    p.add_argument("--smoke", action="store_true", help="smoke-size run: 2 trials of 1 epoch, "
                   "study STUDY-smoke")


@command("run", help="search a space: Optuna sampler + Ray Tune (ASHA), results in a persistent study")
@arguments(_run_args)
def cmd_run(args: argparse.Namespace) -> int:
    from hvsearch.space import load_space, parse_duration

    space = load_space(args.space)
    overrides = {k: getattr(args, k) for k in ("trials", "sampler", "seed", "max_concurrent",
                                               "cpus_per_trial", "gpus_per_trial") if getattr(args, k) is not None}
    if args.time_budget is not None:
        overrides["time_budget"] = parse_duration(_number_or_text(args.time_budget), "--time-budget")
    if args.objectives is not None:
        overrides["objectives"] = tuple(args.objectives)
    study = args.study
    if args.smoke:
        from hvsearch.search.runner import smoke_space

        space, study = smoke_space(space), f"{args.study or space.name}-smoke"
    if overrides:
        space = _with_flags(space, overrides)
    from hvsearch.search.runner import run_search

    summary = run_search(space, study=study, storage=args.storage, address=args.address, resume=args.resume,
                         num_cpus=args.num_cpus, studies_dir=args.studies_dir, results_dir=args.results_dir)
    if summary.best is None:
        print(f"hvsearch run: no architecture of study {summary.study!r} has finished training", file=sys.stderr)
        return 1
    return 0


#: a space setting -> the flag of run / calibrate that overrides it (an error names what was typed)
_OVERRIDE_FLAGS = {"search.trials": "--trials", "search.sampler": "--sampler", "search.seed": "--seed",
                   "search.objectives": "--objectives", "search.time_budget": "--time-budget",
                   "resources.max_concurrent": "--max-concurrent", "resources.cpus_per_trial": "--cpus-per-trial",
                   "resources.gpus_per_trial": "--gpus-per-trial"}


def _with_flags(space, overrides: dict):
    """``space.with_overrides(**overrides)``, a broken rule named by the flag that broke it."""
    from hvsearch.errors import SpaceError

    try:
        return space.with_overrides(**overrides)
    except SpaceError as e:
        key = e.path.split("[")[0]
        flag = _OVERRIDE_FLAGS.get(key)
        if flag is None:
            raise
        raise SpaceError(f"{flag}{e.path[len(key):]}", f"{e.rule} (it sets {key})", e.value) from None


def _number_or_text(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help="Optuna storage URL or SQLite file (default: studies/STUDY.db)")
    p.add_argument("--studies-dir", default="studies")


def _results_args(p: argparse.ArgumentParser) -> None:
    _study_args(p)
    p.add_argument("--top", type=_int_in(0), default=10, help="rows of the leaderboard (0 = all)")
    p.add_argument("--all", action="store_true", help="list every trial, failed and invalid ones too")
    p.add_argument("--results-dir", default="results", help="(re)write results/<study>/ here")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")


@command("results", help="print a study's leaderboard and (re)write results/<study>/")
@arguments(_results_args)
def cmd_results(args: argparse.Namespace) -> int:
    from hvsearch.search import results
    from hvsearch.search.study import load_study, storage_url

    study = load_study(args.study, storage_url(args.study, args.storage, args.studies_dir, create=False))
    out = results.write_results(study, Path(args.results_dir) / args.study)
    board = results.leaderboard(study, top=args.top, include_all=args.all)
    if args.format == "table":
        print(results.summary_line(study))
    if args.format == "table":
        print(board.to_string(index=False, formatters=results.LEADERBOARD_FORMATS, na_rep="-"))
    else:
        _emit(board, args.format)
    if args.format == "table":
        print(f"files: {out}/ (trials.csv, best.yaml, pareto.csv, pareto.png)")
    return 0


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    _study_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_int_in(1, 65535), default=8080)
    p.add_argument("--access-log", action="store_true", help="print a line per HTTP request (off by default)")


@command("dashboard", help="serve optuna-dashboard on a study (127.0.0.1:8080)")
@arguments(_dashboard_args)
def cmd_dashboard(args: argparse.Namespace) -> int:
    from hvsearch.search.dashboard import serve

    serve(args.study, storage=args.storage, studies_dir=args.studies_dir, host=args.host, port=args.port,
          access_log=args.access_log)
    return 0


def _scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", required=True,
                   help="a catalog seed, an architecture YAML/JSON, or STUDY:best / STUDY:<trial number>")
    p.add_argument("--phi", type=float, nargs="+", default=None,
                   help="compound coefficient(s); several give a family, e.g. --phi -2 -1 0 1 2")
    p.add_argument("--alpha", type=float, default=1.2, help="depth base (default 1.2)")
    p.add_argument("--beta", type=float, default=1.3, help="width base (default 1.3)")
    p.add_argument("--gamma", type=float, default=1.15, help="resolution base (default 1.15)")
    p.add_argument("--depth-mode", choices=("round", "ceil"), default="round",
                   help="depth rounding (ceil reproduces CMT-B from CMT-S)")
    p.add_argument("--out", default="results/scale", help="folder for one YAML per member")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    lat = p.add_argument_group("latency (measured here: see `hvsearch latency`; cached in studies/latency.db)")
    lat.add_argument("--latency", action="store_true", help="add each member's measured latency (ms, median)")
    lat.add_argument("--max-latency-ms", type=float, help="pick the largest phi whose member runs within this "
                     "latency (default phis: -3 to 3 in steps of 0.25, measured upwards until two exceed it)")
    lat.add_argument("--latency-runtime", choices=("torch", "onnxruntime"), default="torch")
    lat.add_argument("--latency-device", choices=("cpu", "cuda"), default="cpu")
    lat.add_argument("--latency-batch", type=_int_in(1, 4096), default=1)
    lat.add_argument("--latency-threads", type=_int_in(1, 4096), default=1)
    g = p.add_argument_group("--grid: pick alpha, beta, gamma by proxy-training every phi=1 candidate")
    g.add_argument("--grid", action="store_true",
                   help="enumerate alpha, beta, gamma >= 1 with alpha*beta^1.5*gamma^2 ~ 2.5 and rank them")
    g.add_argument("--grid-step", type=float, default=0.1, help="grid spacing of the constants (default 0.1)")
    g.add_argument("--grid-tol", type=float, default=0.05,
                   help="relative tolerance on alpha*beta^1.5*gamma^2 = 2.5 (default 0.05)")
    g.add_argument("--config", help="YAML with `train:` and `data:` sections for the proxy "
                   "(default: the embedded synthetic data, TrainConfig defaults)")
    g.add_argument("--epochs", type=int, default=None, help="proxy epochs per candidate")
    g.add_argument("--proxy-resolution", type=RESOLUTION, default=None,
                   help="proxy input size before gamma scales it (default train.resolution)")
    g.add_argument("--study", type=_study_name, default=None,
                   help="study name (default <seed>-grid); re-running continues it")
    g.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///studies/<study>.db)")
    _ray_args(g, space=False)


@command("scale", help="compound-scale a seed into a model family (depth a^phi, width b^phi, resolution g^phi)")
@arguments(_scale_args)
def cmd_scale(args: argparse.Namespace) -> int:
    arch_ref.check(args.seed)
    from hvsearch.scaling import ScalingRule
    from hvsearch.scaling.family import family, write_members

    seed = arch_ref.resolve(args.seed)
    if args.grid:
        return _scale_grid(seed, args)
    rule = ScalingRule(alpha=args.alpha, beta=args.beta, gamma=args.gamma, depth_mode=args.depth_mode)
    limit = args.max_latency_ms
    if limit is not None and not limit > 0:
        raise HVSearchError(f"--max-latency-ms must be a positive number of milliseconds, got {limit:g}")
    phis = args.phi or ([p / 4 for p in range(-12, 13)] if limit is not None else [1.0])
    def measure(spec):
        from hvsearch.latency import latency

        return latency(spec, device=args.latency_device, runtime=args.latency_runtime, batch=args.latency_batch,
                       threads=args.latency_threads)
    timed = args.latency or limit is not None
    table, members = family(seed, sorted(phis) if limit is not None else phis, rule,
                            progress=args.format == "table", latency=measure if timed else None,
                            max_latency_ms=limit)
    paths = write_members(members, args.out)
    if args.format == "table":
        print(f"seed {seed.name or args.seed}: alpha={rule.alpha:g} beta={rule.beta:g} gamma={rule.gamma:g} "
              f"(alpha*beta^1.5*gamma^2 = {rule.flops_base:.3f}), depth rounding {rule.depth_mode}")
    _emit(table, args.format)
    if args.format == "table":
        print(f"\nwritten {len(paths)} architecture file(s) under {args.out}/")
    if limit is not None:
        fits = table[table["fits"]]
        if fits.empty:
            raise HVSearchError(f"no member of {seed.name or args.seed} runs within --max-latency-ms {limit:g} "
                                f"(the smallest measured, phi={table.phi.min():g}, takes "
                                f"{table.latency_ms.iloc[0]:.3g} ms); try smaller phis")
        best = fits.iloc[-1]
        where = f"{args.latency_runtime} on {args.latency_device}, batch {args.latency_batch}, " \
                f"{args.latency_threads} thread(s)"
        print(f"largest phi within {limit:g} ms ({where}): phi={best.phi:g}, {best['name']}, "
              f"{best.latency_ms:.3g} ms, {best.GFLOPs:.3g} GFLOPs, {best.params_M:.3g} M params "
              f"-> {args.out}/{best['name']}.yaml", file=sys.stdout if args.format == "table" else sys.stderr)
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    from hvsearch.train.config import DATASETS, DEVICES

    p.add_argument("arch", help="a seed name (see `hvsearch seeds`) or an architecture YAML/JSON file")
    p.add_argument("--config", help="YAML with `train:` and `data:` sections (the flags below override it)")
    d = p.add_argument_group("data (default: the embedded synthetic set, no files needed)")
    d.add_argument("--data", choices=DATASETS, help="data set")
    d.add_argument("--data-root", help="folder with the data set's files (optional for fashion_mnist, mnist, "
                   "kmnist: $HVSEARCH_DATA/NAME and /usr/share/datasets/NAME are searched)")
    d.add_argument("--val-split", type=float, help="share of train held out for validation (0 = own val/test)")
    d.add_argument("--data-seed", type=int, help="seed of the held-out split and the training subset")
    t = p.add_argument_group("training (defaults: hvsearch.train.config.TrainConfig)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--resolution", type=RESOLUTION, help="input size, a multiple of 32")
    t.add_argument("--fraction", type=float, help="class-balanced share of the training images used")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak AdamW learning rate")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--warmup-epochs", type=float)
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--drop-path", type=float)
    t.add_argument("--mixup", type=float, help="mixup alpha (0 = off)")
    t.add_argument("--cutmix", type=float, help="CutMix alpha (0 = off)")
    t.add_argument("--grad-clip", type=float, help="gradient-norm clip (0 = off)")
    t.add_argument("--max-steps-per-epoch", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", choices=DEVICES)
    t.add_argument("--workers", type=int, help="DataLoader worker processes")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    t.add_argument("--threads", type=_int_in(1, 4096), help="CPU threads for torch (default: torch's, or OMP_NUM_THREADS)")
    p.add_argument("--out", help="run folder (default results/train/<arch>-<data>-<arch id>/)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has a checkpoint")


@command("train", help="proxy-train an architecture; metrics CSV and checkpoint under results/train/")
@arguments(_train_args)
def cmd_train(args: argparse.Namespace) -> int:
    arch_ref.check(args.arch)
    from hvsearch.train.run import load_configs, run_training

    flags = vars(args)
    train_keys = ("epochs", "resolution", "fraction", "batch_size", "lr", "weight_decay", "warmup_epochs",
                  "label_smoothing", "drop_path", "mixup", "cutmix", "grad_clip", "max_steps_per_epoch",
                  "seed", "device", "workers", "compile")
    data_keys = {"data": "name", "data_root": "root", "val_split": "val_split", "data_seed": "seed"}
    train, data = load_configs(args.config, {k: flags[k] for k in train_keys if flags[k] is not None},
                               {v: flags[k] for k, v in data_keys.items() if flags[k] is not None})
    spec = arch_ref.resolve(args.arch)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_training(spec, train, data, args.out, resume=not args.no_resume)
    best = max(result.history, key=lambda m: m["val_top1"])
    print(f"best val top-1 {best['val_top1']:.2f}% (epoch {best['epoch']}), last {result.metrics['val_top1']:.2f}%; "
          f"{result.params / 1e6:.3f} M params")
    print(f"written {result.checkpoint.parent}/metrics.csv, config.yaml, checkpoint.pt")
    return 0


def _scale_grid(seed, args: argparse.Namespace) -> int:
    from hvsearch.search.scaling_grid import run_grid
    from hvsearch.train.run import load_configs

    train, data = load_configs(args.config, {"epochs": args.epochs} if args.epochs else None)
    table = run_grid(seed, step=args.grid_step, tol=args.grid_tol, train=train, data=data, study=args.study,
                     storage=args.storage, address=args.address, proxy_resolution=args.proxy_resolution,
                     cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                     max_concurrent=args.max_concurrent, num_cpus=args.num_cpus)
    if args.format == "table":
        print(f"\nscaling constants for {seed.name or args.seed}, ranked by proxy val top-1 (phi=1 members):")
    _emit(table, args.format)
    return 0


def _finalize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="the search's space file (its recipe, and its study's name)")
    p.add_argument("--study", type=_study_name, help="the search's study (default: the space's `name`)")
    p.add_argument("--storage", help="the search's storage (default: studies/STUDY.db)")
    p.add_argument("--studies-dir", default="studies")
    p.add_argument("--results-dir", default="results", help="results/<study>/ gets finalists.csv and final.yaml")
    p.add_argument("--top", type=_int_in(2, 100), default=4, help="architectures re-evaluated: the search's best "
                   "by proxy accuracy, one per architecture (default 4)")
    p.add_argument("--epochs", type=_int_in(1, 100_000), help="epochs of the re-evaluation (default 5x the "
                   "space's train.epochs)")
    p.add_argument("--fraction", type=float, help="share of the training split it trains on (default the "
                   "space's train.fraction)")
    p.add_argument("--seeds", type=_int_in(1, 100), default=2, help="training seeds per architecture (default 2)")
    p.add_argument("--no-train", action="store_true", help="only report what has been trained")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _ray_args(p)


@command("finalize", help="re-evaluate a search's top architectures with a longer training and pick by it")
@arguments(_finalize_args)
def cmd_finalize(args: argparse.Namespace) -> int:
    from hvsearch.space import load_space

    space = load_space(args.space)  # before the heavy imports: a wrong path is answered at once
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise HVSearchError(f"--fraction must be in (0, 1], got {args.fraction}")
    overrides = {k: getattr(args, k) for k in ("max_concurrent", "cpus_per_trial", "gpus_per_trial")
                 if getattr(args, k) is not None}
    if overrides:
        space = _with_flags(space, overrides)
    from hvsearch.search.finalize import run_finalize

    done = run_finalize(space, study=args.study, storage=args.storage, top=args.top, epochs=args.epochs,
                        fraction=args.fraction, seeds=args.seeds, address=args.address, num_cpus=args.num_cpus,
                        studies_dir=args.studies_dir, results_dir=args.results_dir, train=not args.no_train,
                        out=sys.stderr if args.format != "table" else sys.stdout)
    _emit(done.table, args.format, "{:.2f}")
    if args.format == "table":
        if done.pick is None and done.pending:
            print(f"\n{done.pending} finalist(s) have no result yet: run it again to train the rest")
        elif done.pick is None:
            print("\nno finalist has a result: every one's training failed (see the failed column)")
        else:
            p = done.pick
            print(f"\npick: trial {p['trial']} ({p['mixers']}), {p['final_mean']:.2f}% mean of {args.seeds} seed(s) "
                  f"(proxy rank {p['proxy_rank']}, {p['proxy_top1']:.2f}%): {done.results_dir}/final.yaml")
            if done.margin is not None:
                m = done.margin
                verdict = ("separated from it" if m["separated"] else
                           "not separated from it: at this budget the seeds cannot tell them apart (more seeds "
                           "or a longer training would, or they are equally good)")
                print(f"its lead over the runner-up: {m['lead']:.2f} points; one training's accuracy varies by "
                      f"{m['seed_sd']:.2f} (s.d. over seeds), so a difference of two means needs {m['threshold']:.2f} "
                      f"(95%, Student's t; indicative, the two are the best of several): {verdict}")
    return 0 if done.pick is not None else 1


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="a search-space YAML file: its train settings are the proxy")
    p.add_argument("-n", "--archs", type=_int_in(4, 100_000), default=20, help="architectures to sample, stratified by "
                   "dominant mixer and size (default 20)")
    p.add_argument("--reference-epochs", type=int, default=None,
                   help="epochs of the reference training (default 5x the space's train.epochs; with "
                   "--reference-study, the reused reference's)")
    p.add_argument("--reference-fraction", type=float, default=None, metavar="F",
                   help="share of the training split the reference trains on (default the space's "
                   "train.fraction; with --reference-study, the reused reference's): a proxy may train on "
                   "a smaller subset than the reference it is judged by")
    p.add_argument("--reference-seeds", type=int, metavar="K",
                   help="train the reference K times, seed k with train.seed + k (default 2): the table "
                   "compares every score with the seed average and opens with the ceiling, seed 1 vs "
                   "seed 0; 1 skips the ceiling")
    p.add_argument("--reference-study", type=_study_name, metavar="NAME",
                   help="reuse calibration NAME's reference (studies NAME-reference, NAME-reference-seed<k> "
                   "in studies/NAME.db, or in --storage) instead of training one: refused unless it was "
                   "trained on the same sample, data, recipe (fraction included) and reference epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample, the zero-cost scores and the "
                   "bootstrap (default 0)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--study", type=_study_name, help="name of the calibration (default SPACE-calibrate): studies "
                   "NAME-proxy, NAME-reference and NAME-reference-seed<k>; re-running continues them")
    p.add_argument("--storage", help="Optuna storage URL or SQLite file (default studies/NAME.db); with "
                   "--reference-study, the reused reference is looked up there too")
    p.add_argument("--studies-dir", default="studies")
    p.add_argument("--results-dir", default="results", help="results/NAME/ is written here")
    _ray_args(p)


@command("calibrate", help="rank agreement of cheap proxies (zero-cost scores, short training) with a "
         "longer reference training, on a stratified sample of a space")
@arguments(_calibrate_args)
def cmd_calibrate(args: argparse.Namespace) -> int:
    from hvsearch.space import load_space

    space = load_space(args.space)  # before the heavy imports: a wrong path is answered at once
    from hvsearch.search.calibrate import run_calibration

    overrides = {k: getattr(args, k) for k in ("max_concurrent", "cpus_per_trial", "gpus_per_trial")
                 if getattr(args, k) is not None}
    if overrides:
        space = _with_flags(space, overrides)
    if args.bootstrap < 100:
        raise HVSearchError(f"--bootstrap must be >= 100 resamples for a 95% interval, got {args.bootstrap}")
    run_calibration(space, n=args.archs, reference_epochs=args.reference_epochs,
                    reference_fraction=args.reference_fraction,
                    reference_seeds=args.reference_seeds, reference_study=args.reference_study, seed=args.seed,
                    study=args.study, storage=args.storage, address=args.address, num_cpus=args.num_cpus,
                    n_boot=args.bootstrap, studies_dir=args.studies_dir, results_dir=args.results_dir)
    return 0


# ---- end of commands ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: a bad flag or value prints ``PROG: error: ...``
    and where to read the usage, not the 12-line usage block first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from hvsearch import __version__

    p = _Parser(prog="hvsearch", description="Search and scale hybrid CNN/Transformer/MLP vision backbones.")
    p.add_argument("--version", action="version", version=f"hvsearch {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (_fn, help_, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return p


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="a seed, an architecture file, or STUDY:best / STUDY:<trial number>")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    p.add_argument("--resolution", type=RESOLUTION, help="input size (default the architecture's resolution)")
    p.add_argument("--out", default="exports", help="folder to write to (default exports/)")
    p.add_argument("--storage", help="the study's storage URL (default studies/<study>.db) for STUDY:...")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch.onnx's exporter for --format onnx: auto (default) tries the TorchScript-based "
                   "one, then dynamo")
    p.add_argument("--batch", type=_int_in(1, 4096), metavar="N",
                   help="--format onnx: fix the file's batch at N (default: open, any batch runs)")
    p.add_argument("--fixed-size", action="store_true",
                   help="--format onnx: fix the file's input size at --resolution (default: open where the model "
                   "allows it)")


@command("export", help="write an architecture as ONNX, TorchScript or safetensors, checked against PyTorch")
@arguments(_export_args)
def cmd_export(args: argparse.Namespace) -> int:
    arch_ref.check(args.arch)
    from hvsearch.export import export

    export(args.arch, args.format, out=args.out, resolution=args.resolution, storage=args.storage,
           exporter=args.exporter, batch=args.batch, fixed_size=args.fixed_size)
    return 0


def _latency_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", nargs="+", help="seeds, architecture files, or STUDY:best / STUDY:<trial number>")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--resolution", type=RESOLUTION, help="input size (default each architecture's own)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--again", action="store_true", help="measure even when the store has this key, and "
                   "say whether the new number agrees with the earlier ones")
    p.add_argument("--store", default="studies/latency.db", help="the cache (default studies/latency.db; "
                   "'none' measures without one)")
    p.add_argument("--storage", help="the study's storage URL for STUDY:... (default studies/<study>.db)")
    p.add_argument("--format", choices=("lines", "table", "csv", "json"), default="lines")


@command("latency", help="measure an architecture's inference latency here (median, p90; cached per key)")
@arguments(_latency_args)
def cmd_latency(args: argparse.Namespace) -> int:
    for ref in args.arch:
        arch_ref.check(ref)
    import pandas as pd

    from hvsearch.latency import describe, latency

    store = None if args.store == "none" else args.store
    rows = []
    for ref in args.arch:
        spec = arch_ref.resolve(ref, storage=args.storage)
        m = latency(spec, device=args.device, runtime=args.runtime, batch=args.batch, resolution=args.resolution,
                    threads=args.threads, repeats=args.repeats, warmup=args.warmup, store=store, again=args.again)
        if args.format == "lines":
            print(describe(m), flush=True)
        rows.append(m.row())
    if args.format != "lines":
        df = pd.DataFrame(rows)[["name", "arch_id", "device", "runtime", "batch", "resolution", "threads", "median_ms",
                                 "p90_ms", "min_ms", "max_ms", "repeats", "load_before", "load_after", "others_cpu",
                                 "cpus", "flags", "cached", "hardware"]]
        _emit(df, args.format, "{:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd][0](args)
    except HVSearchError as e:
        print(f"hvsearch {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hvsearch {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:  # a folder that is a file, a full disk, no permission: the path and the reason
        where = f" ({e.filename})" if e.filename else ""
        print(f"hvsearch {args.cmd}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``hvsearch`` console script (and ``python -m hvsearch.cli``): :func:`main`, then the
    process ends.

    A command that loaded torch and Ray (a search, a calibration) left the interpreter ~2 s of
    finalisation after its last line (tearing down thousands of modules and the extensions'
    state; measured on `hvsearch run --smoke`, 2 cores) that nothing needs. So once the command
    has returned and no other thread is still working, the process ends without it: the atexit
    handlers run first (logging's flush, Ray's and multiprocessing's clean-ups), then the
    output streams are flushed, as in a normal exit. Files, the study and Tune's state are all
    closed by then; tests that call :func:`main` in-process are not affected."""
    import atexit
    import threading

    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # the normal exit waits for that thread
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed, or a pipe whose reader has gone
                pass
        os._exit(code)


if __name__ == "__main__":
    entry()
