"""Export every seed in every format (``hvsearch export``) and record what each took.

One row per (seed, format): the exporter that succeeded, the ONNX file's dynamic axes (batch, and
height and width where the model runs at any size), the max abs difference to PyTorch when
loaded back (ONNX Runtime / torch.jit.load / timm), the seconds, or the one-line error. Written
to ``--out/export.csv``; the README's export table is its pivot.

``--latency`` adds, for every ONNX export, the median and p90 milliseconds of one forward at batch
1 (the export's fixed batch where it has one) in PyTorch and in ONNX Runtime, both on one thread,
interleaved call by call in this one process (so both see the same machine), after a warm-up, with
the 1-minute load average before and after: a figure taken beside another heavy job is worthless.
``--resolution 0`` exports every seed at its own resolution.

Exporting is slow and needs no quiet machine; timing needs one. ``--keep DIR`` keeps the exported
files, and ``--latency-of DIR`` then only times what is there (each ``.onnx`` against a PyTorch
model built from its ``.yaml``, at every ``--threads`` count), into ``--out/latency.csv``:

    python benchmarks/export_check.py --resolution 64
    python benchmarks/export_check.py --formats onnx --resolution 0 --keep exports/seeds
    python benchmarks/export_check.py --latency-of exports/seeds --threads 1 2 --out results/benchmarks/export-latency

``--compare-exporters`` runs each seed through torch.onnx's TorchScript-based and dynamo exporters
alone: the seconds each export took (with its check), the axes each left open, and ONNX Runtime
on the two files interleaved (``--out/exporters.csv``); the evidence for ``--exporter auto``'s order:

    python benchmarks/export_check.py --compare-exporters --resolution 0 --seeds cmt_ti container_light convmlp_s

``--compare-idconv`` times what leaving TransXNet's batch open costs: ONNX Runtime on a file with
the batch open (IDConv's block-diagonal form) against one fixed at each ``--batches`` (its grouped
form), interleaved at that batch (``--out/idconv.csv``):

    python benchmarks/export_check.py --compare-idconv --seeds transxnet_t --resolution 0 --batches 1 8
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def ort_session(path: Path, x, threads: int = 1):
    """An ONNX Runtime session on ``threads`` intra-op threads, and a call that runs it on ``x``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def interleaved(calls: dict, batch: int, threads: int, repeats: int, warmup: int) -> dict:
    """Median and p90 ms of each call (``<name>_ms``, ``<name>_p90_ms``), the calls taking turns
    one run at a time so that all see the same machine, with the 1-minute load before and after."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    load_before = os.getloadavg()[0]
    for i in range(warmup + repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    out = {"batch": batch, "threads": threads, "load_before": load_before, "load_after": os.getloadavg()[0]}
    for name, values in times.items():
        values.sort()
        out[f"{name}_ms"] = statistics.median(values)
        out[f"{name}_p90_ms"] = values[int(0.9 * (len(values) - 1))]
    return out


def latency(model, onnx_path: Path, x, repeats: int = 30, warmup: int = 5, threads: int = 1) -> dict:
    """PyTorch vs ONNX Runtime on ``x``: median and p90 ms, interleaved, ``threads`` each."""
    import torch

    torch.set_num_threads(threads)
    with torch.inference_mode():
        out = interleaved({"torch": lambda: model(x), "ort": ort_session(onnx_path, x, threads)},
                          x.shape[0], threads, repeats, warmup)
    out["ort_speedup"] = out["torch_ms"] / out["ort_ms"]
    return out


def _progress(row: dict) -> None:
    """One finished row on the console, floats to 3 significant digits (a 2e-07 difference stays
    visible)."""
    print({k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in row.items()}, flush=True)


def _written(rows: list[dict], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    print(f"written {path}")
    return 0


def latency_of(folder: Path, threads: list[int], out: Path) -> int:
    """Time every ``<name>.onnx`` in ``folder`` (with its ``.yaml`` and ``.json``) against PyTorch."""
    import json

    import torch

    from hvsearch.arch import ModelSpec
    from hvsearch.models import build_model

    rows = []
    files = sorted(folder.glob("*.onnx"))
    if not files:
        print(f"no .onnx files in {folder}", file=sys.stderr)
        return 1
    for path in files:
        meta = json.loads(path.with_suffix(".json").read_text())
        model = build_model(ModelSpec.load(path.with_suffix(".yaml"))).eval()
        batch = 1 if "batch" in meta["dynamic"] else 2  # the export's fixed batch
        x = torch.randn(batch, *meta["input_size"])
        for n in threads:
            row = {"model": path.stem, "resolution": meta["input_size"][-1], "dynamic": ",".join(meta["dynamic"]),
                   **latency(model, path, x, threads=n)}
            rows.append(row)
            print(f"{path.stem:16s} {n} thread(s) batch {batch}: torch {row['torch_ms']:8.2f} ms, onnxruntime "
                  f"{row['ort_ms']:8.2f} ms ({row['ort_speedup']:.2f}x), load {row['load_before']:.2f}", flush=True)
    return _written(rows, out / "latency.csv")


def compare_exporters(seeds: list[str], resolution: int, threads: int, out: Path) -> int:
    """Each seed through the TorchScript-based and the dynamo exporter alone (each export checked
    as ``hvsearch export`` checks it): the seconds each took, the axes each left open, and ONNX
    Runtime's latency on the two files, interleaved. Into ``--out/exporters.csv``."""
    import torch

    from hvsearch.errors import HVSearchError
    from hvsearch.export import export
    from hvsearch.models import get_seed

    rows = []
    with tempfile.TemporaryDirectory(prefix="hvs-exporters-") as tmp:
        for seed in seeds:
            res = resolution or get_seed(seed).spec.resolution
            row: dict = {"seed": seed, "resolution": res}
            done = {}
            for exporter in ("torchscript", "dynamo"):
                t0 = time.monotonic()
                try:
                    done[exporter] = export(seed, "onnx", out=Path(tmp) / exporter, resolution=res,
                                            exporter=exporter, say=lambda line: None)
                    row[f"{exporter}_dynamic"] = ",".join(done[exporter].meta["dynamic"])
                    row[f"{exporter}_mb"] = round(done[exporter].path.stat().st_size / 2**20, 1)
                except HVSearchError as e:
                    row[f"{exporter}_error"] = str(e)
                row[f"{exporter}_export_s"] = round(time.monotonic() - t0, 1)
            if len(done) == 2:
                fixed = not all("batch" in d.meta["dynamic"] for d in done.values())
                x = torch.randn(2 if fixed else 1, 3, res, res, generator=torch.Generator().manual_seed(0))
                row.update(interleaved({f"{e}_ort": ort_session(d.path, x, threads) for e, d in done.items()},
                                       x.shape[0], threads, repeats=60, warmup=10))
                row["dynamo_over_torchscript"] = row["dynamo_ort_ms"] / row["torchscript_ort_ms"]
            rows.append(row)
            _progress(row)
    return _written(rows, out / "exporters.csv")


def compare_idconv(seeds: list[str], resolution: int, batches: list[int], threads: int, out: Path) -> int:
    """TransXNet's IDConv in an ONNX file with the batch open (its block-diagonal form: one conv
    of C groups, B×B diagonal kernel blocks) against a file fixed at that batch (its grouped form:
    one conv of B·C groups), both through the dynamo exporter at a fixed size, ONNX Runtime on
    both interleaved at each batch, each file checked against PyTorch. Into ``--out/idconv.csv``."""
    import torch

    from hvsearch.export import _export_impls, _onnx_export
    from hvsearch.models import HybridBackbone, get_seed

    rows = []
    with tempfile.TemporaryDirectory(prefix="hvs-idconv-") as tmp:
        for seed in seeds:
            spec = get_seed(seed).spec
            res = resolution or spec.resolution
            model = HybridBackbone(spec).eval()
            gen = torch.Generator().manual_seed(0)

            def write(name, example, dynamic) -> tuple[Path, float]:
                """The file and the seconds its export took."""
                path, t0 = Path(tmp) / f"{name}.onnx", time.monotonic()
                with _export_impls(model, dynamic):
                    _onnx_export(model, example, path, dynamic, dynamo=True)
                return path, round(time.monotonic() - t0, 1)

            open_path, open_s = write("open", torch.randn(2, 3, res, res, generator=gen), ("batch",))
            for batch in batches:
                x = torch.randn(batch, 3, res, res, generator=gen)
                fixed_path, fixed_s = write(f"fixed{batch}", x, ())
                calls = {"blockdiag": ort_session(open_path, x, threads), "grouped": ort_session(fixed_path, x, threads)}
                with torch.no_grad():
                    expected = model(x)
                diff = max(float((torch.from_numpy(call()[0]) - expected).abs().max()) for call in calls.values())
                row = {"seed": seed, "resolution": res, "max_abs_diff": diff,
                       "blockdiag_export_s": open_s, "grouped_export_s": fixed_s,
                       **interleaved(calls, batch, threads, repeats=30 if batch == 1 else 10, warmup=3)}
                row["blockdiag_over_grouped"] = row["blockdiag_ms"] / row["grouped_ms"]
                rows.append(row)
                _progress(row)
    return _written(rows, out / "idconv.csv")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", help="default: every seed")
    p.add_argument("--formats", nargs="+", default=["onnx", "torchscript", "safetensors"])
    p.add_argument("--resolution", type=int, default=64, help="export size (default 64: fast on CPU; 0: each "
                   "seed's own)")
    p.add_argument("--latency", action="store_true", help="time PyTorch vs ONNX Runtime at batch 1 (ONNX rows)")
    p.add_argument("--keep", type=Path, help="keep the exported files in this folder")
    p.add_argument("--latency-of", type=Path, help="only time the ONNX files already exported to this folder")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts for the timing (default 1)")
    p.add_argument("--compare-exporters", action="store_true", help="each seed through both ONNX exporters: "
                   "export seconds and ONNX Runtime latency of the two files (--seeds, --resolution, --threads)")
    p.add_argument("--compare-idconv", action="store_true", help="TransXNet: ONNX Runtime on a file with the "
                   "batch open (IDConv's block-diagonal form) vs one fixed at each --batches (--seeds, default "
                   "the TransXNet seeds; --resolution, 0 for each seed's own; --threads)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batches for --compare-idconv")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/export"))
    args = p.parse_args(argv)
    if args.compare_idconv:
        from hvsearch.models import get_seed, seed_names

        seeds = args.seeds or [s for s in seed_names() if get_seed(s).family == "transxnet"]
        return compare_idconv(seeds, args.resolution, args.batches, args.threads[0], args.out)
    if args.compare_exporters:
        from hvsearch.models import seed_names

        return compare_exporters(args.seeds or seed_names(), args.resolution, args.threads[0], args.out)
    if args.latency_of:
        return latency_of(args.latency_of, args.threads, args.out)
    from hvsearch.errors import HVSearchError
    from hvsearch.export import export
    from hvsearch.models import get_seed, seed_names

    rows = []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(args.keep)) if args.keep
          else tempfile.TemporaryDirectory(prefix="hvs-export-")) as tmp:
        for seed in args.seeds or seed_names():
            for fmt in args.formats:
                t0 = time.monotonic()
                res = args.resolution or get_seed(seed).spec.resolution
                try:
                    done = export(seed, fmt, out=tmp, resolution=res, say=lambda line: None)
                    row = {"resolution": res, "exporter": done.meta["exporter"],
                           "dynamic_batch": "batch" in done.meta.get("dynamic", []),
                           "dynamic_axes": ",".join(done.meta.get("dynamic", [])) if fmt == "onnx" else "",
                           "max_abs_diff": done.meta["max_abs_diff"], "error": ""}
                    if args.latency and fmt == "onnx":
                        import torch

                        batch = 1 if done.meta.get("dynamic") else 2
                        x = torch.randn(batch, 3, res, res)
                        row.update(latency(done.model, done.path, x))
                except HVSearchError as e:
                    row = {"resolution": res, "exporter": "", "max_abs_diff": None, "error": str(e)}
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
