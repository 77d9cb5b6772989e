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

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def wrap(fn):
        COMMANDS[name] = fn
        return fn

    return wrap


def _emit(df, fmt: str, float_format: str = "{:.3f}") -> None:
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
    elif fmt == "json":
        print(json.dumps(df.to_dict(orient="records"), indent=1))
    else:
        print(df.to_string(index=False, float_format=float_format.format))


@command("seeds")
def cmd_seeds(args: argparse.Namespace) -> int:
    from hvsearch.models.report import seeds_table

    _emit(seeds_table(progress=args.format == "table"), args.format)
    return 0


@command("show")
def cmd_show(args: argparse.Namespace) -> int:
    from hvsearch.models.report import show_arch

    print(show_arch(args.arch, resolution=args.resolution, fmt=args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvsearch", description=__doc__.splitlines()[0])
    from hvsearch import __version__

    p.add_argument("--version", action="version", version=f"hvsearch {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("seeds", help="list the seed catalog with measured vs. published cost")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")

    s = sub.add_parser("show", help="print an architecture's per-stage spec and cost")
    s.add_argument("arch", help="a seed name (see `hvsearch seeds`) or an architecture YAML/JSON file")
    s.add_argument("--resolution", type=int, default=None, help="count cost at this input size")
    s.add_argument("--format", choices=("table", "yaml", "json"), default="table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except HVSearchError as e:
        print(f"hvsearch {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hvsearch {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
