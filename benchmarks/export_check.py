"""Export every seed in every format (``hvsearch export``) and record what each took.

One row per (seed, format): the exporter that succeeded, the max abs difference to PyTorch when
loaded back (ONNX Runtime / torch.jit.load / timm), the seconds, or the one-line error. Written
to ``--out/export.csv``; the README's export table is its pivot.

    python benchmarks/export_check.py --resolution 64
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", help="default: every seed")
    p.add_argument("--formats", nargs="+", default=["onnx", "torchscript", "safetensors"])
    p.add_argument("--resolution", type=int, default=64, help="export size (default 64: fast on CPU)")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/export"))
    args = p.parse_args(argv)
    from hvsearch.errors import HVSearchError
    from hvsearch.export import export
    from hvsearch.models import seed_names

    rows = []
    with tempfile.TemporaryDirectory(prefix="hvs-export-") as tmp:
        for seed in args.seeds or seed_names():
            for fmt in args.formats:
                t0 = time.monotonic()
                try:
                    done = export(seed, fmt, out=tmp, resolution=args.resolution, say=lambda line: None)
                    row = {"exporter": done.meta["exporter"], "max_abs_diff": done.meta["max_abs_diff"], "error": ""}
                except HVSearchError as e:
                    row = {"exporter": "", "max_abs_diff": None, "error": str(e)}
                rows.append({"seed": seed, "format": fmt, **row, "seconds": round(time.monotonic() - t0, 1)})
                print(f"{seed:16s} {fmt:12s} {row['exporter'] or 'FAILED'} {row['max_abs_diff'] or row['error']}",
                      flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(args.out / "export.csv", index=False)
    print(f"written {args.out / 'export.csv'}")
    return 0 if (df.error == "").all() else 1


if __name__ == "__main__":
    sys.exit(main())
