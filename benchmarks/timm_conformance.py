"""Run timm's own model tests (``tests/test_models.py`` of a timm checkout) on every ``hvs_*`` seed.

timm's file is not copied into this repository: give the path of a checkout (e.g. the one the
search tool's ``fetch`` brings, ``/work/.mirror/huggingface+pytorch-image-models/repo``, read at
its HEAD with ``git show``) or of the file itself. The file is run as it is from a temporary
folder whose ``conftest.py`` imports ``hvsearch.models`` first (so the ``hvs_*`` models are in
timm's registry when timm's tests collect) and keeps only the ``hvs_<seed>`` cases (``hvs_arch``
needs an ``arch=`` argument timm's tests cannot give).

Written to ``--out``: ``cases.csv`` (one row per test case: test, seed, outcome, the first line
of a failure) and ``conformance.csv`` (per test: passed / failed / skipped over the seeds), the
table the README shows.

    python benchmarks/timm_conformance.py /work/.mirror/huggingface+pytorch-image-models/repo
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

CONFTEST = '''
import hvsearch.models  # noqa: F401  (registers the hvs_* models before timm's tests collect)


def pytest_collection_modifyitems(config, items):
    def ours(nodeid):  # ids read test_model_forward[1-hvs_cmt_ti]
        ids = nodeid.rsplit("[", 1)[-1].rstrip("]").split("-")
        return any(i.startswith("hvs_") and i != "hvs_arch" for i in ids)

    keep = [i for i in items if ours(i.nodeid)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
'''


def timm_tests(source: Path) -> tuple[str, str]:
    """(text of tests/test_models.py, where it came from)."""
    if source.is_file():
        return source.read_text(), str(source)
    git = subprocess.run(["git", "-C", str(source), "show", "HEAD:tests/test_models.py"],
                         capture_output=True, text=True)
    if git.returncode == 0:
        rev = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        return git.stdout, f"{source} at {rev}"
    path = source / "tests" / "test_models.py"
    if path.is_file():
        return path.read_text(), str(path)
    raise SystemExit(f"timm_conformance: error: {source} is neither timm's tests/test_models.py nor a timm "
                     "checkout that has it")


def cases(junit: Path) -> pd.DataFrame:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        m = re.match(r"(\w+)\[(?:.*-)?hvs_(\w+?)(?:-.*)?\]$", case.get("name", ""))
        if not m:
            continue
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                detail = (node.get("message") or "").strip().split("\n")[0][:200]
                break
        rows.append({"test": m.group(1), "seed": m.group(2), "outcome": outcome, "detail": detail,
                     "seconds": float(case.get("time", 0))})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("timm", type=Path, help="a timm checkout, or its tests/test_models.py")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/timm-conformance"))
    p.add_argument("-k", default="", help="extra pytest -k expression (e.g. a seed: hvs_cmt_ti)")
    args = p.parse_args(argv)
    text, origin = timm_tests(args.timm)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hvs-timm-tests-") as tmp:
        folder = Path(tmp)
        (folder / "test_models.py").write_text(text)
        (folder / "conftest.py").write_text(CONFTEST)
        junit = folder / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", tmp,
               f"--junitxml={junit}", str(folder / "test_models.py")] + (["-k", args.k] if args.k else [])
        print(f"running timm's model tests from {origin} on the hvs_* seeds ...", flush=True)
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if not junit.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            return 2
        df = cases(junit)
    if df.empty:
        print("timm_conformance: no hvs_* case ran (is hvsearch importable?)", file=sys.stderr)
        return 2
    df.to_csv(args.out / "cases.csv", index=False)
    table = (df.pivot_table(index="test", columns="outcome", values="seed", aggfunc="count", fill_value=0)
             .reindex(columns=["passed", "failed", "skipped"], fill_value=0))
    table["seeds"] = table.sum(axis=1)
    table.to_csv(args.out / "conformance.csv")
    print(f"timm tests from {origin}\n")
    print("| timm test | passed | failed | skipped |\n|---|---|---|---|")
    for test, row in table.iterrows():
        print(f"| `{test}` | {row.passed} / {row.seeds} | {row.failed} | {row.skipped} |")
    failed = df[df.outcome == "failed"]
    for _, row in failed.iterrows():
        print(f"FAILED {row.test}[hvs_{row.seed}]: {row.detail}")
    print(f"\nwritten {args.out / 'conformance.csv'}, {args.out / 'cases.csv'}")
    return 0 if failed.empty else 1


if __name__ == "__main__":
    sys.exit(main())
