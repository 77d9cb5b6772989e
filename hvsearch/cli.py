"""``hvsearch`` command line: one thin subcommand per verb; the work lives in the packages.

Errors a user can cause (:class:`~hvsearch.errors.HVSearchError`) are printed as one line on
stderr with exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from hvsearch.errors import HVSearchError

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
    from hvsearch.models.report import seeds_table

    _emit(seeds_table(progress=args.format == "table"), args.format)
    return 0


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="a seed name (see `hvsearch seeds`) or an architecture YAML/JSON file")
    p.add_argument("--resolution", type=int, default=None, help="count cost at this input size")
    p.add_argument("--format", choices=("table", "yaml", "json"), default="table")


@command("show", help="print an architecture's per-stage spec and cost")
@arguments(_show_args)
def cmd_show(args: argparse.Namespace) -> int:
    from hvsearch.models.report import show_arch

    print(show_arch(args.arch, resolution=args.resolution, fmt=args.format))
    return 0


# ---- end of commands ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from hvsearch import __version__

    p = argparse.ArgumentParser(prog="hvsearch", description="Search and scale hybrid CNN/Transformer/MLP vision backbones.")
    p.add_argument("--version", action="version", version=f"hvsearch {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (_fn, help_, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return p


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


if __name__ == "__main__":
    sys.exit(main())
