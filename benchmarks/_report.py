"""What every benchmark does with its rows: write the CSV, print the table, warn when the CPU was
busy during a measurement (the column ``load_1min``: the 1-minute load average at its start)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def cpu_count() -> int:
    """CPUs this process may run on (its affinity), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def report(rows: list[dict], out: str | Path, float_format: str = "{:.1f}") -> pd.DataFrame:
    df = pd.DataFrame(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print()
    print(df.to_string(index=False, float_format=float_format.format))
    cores = cpu_count()
    if "load_1min" in df and (pd.to_numeric(df["load_1min"], errors="coerce") >= cores).any():
        print(f"\nwarning: load average >= {cores} cores during some CPU measurements; those are pessimistic")
    print(f"\nwritten {out}")
    return df
