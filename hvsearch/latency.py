"""Measured latency of an architecture on the machine that runs this: ``hvsearch latency``.

Measured, not predicted: the model is built (freshly initialised: weights do not change the
arithmetic), run ``warmup`` times, then timed ``repeats`` times one forward at a time, in PyTorch
(eager, ``inference_mode``) or in ONNX Runtime on the model exported and checked by
:mod:`hvsearch.export`. The result keeps the dispersion (median, p90, min, max over the repeats)
and the machine's state: the 1-minute load average before and after and the CPUs this process may
use. A measurement is flagged

* ``busy`` when other processes were using the cores it needed: on Linux, measured over the timed
  runs themselves (the machine's busy CPU time from ``/proc/stat`` less this process's own:
  ``others_cpu`` cores, busy when others_cpu + threads > CPUs + :data:`BUSY_SLACK`); elsewhere
  from the load average before (load + threads > CPUs), which also counts this process's own
  recent work. Its numbers are pessimistic;
* ``noisy`` when its own runs disagree (p90 more than :data:`NOISY_SPREAD` × the median);
* ``disagrees`` when it is a repeat (``again=True``) whose median is more than
  :data:`AGREEMENT` away from the earlier ones of the same key.

Results are cached in a small SQLite store next to the studies (``studies/latency.db``), keyed by
(arch id, resolution, batch, device, runtime, threads) and the hardware (CPU model or GPU name
and the CPU count), so a search or ``scale`` asks once per architecture; every measurement is kept,
and the cached answer is the latest one that is not flagged busy (when all are, the next call
measures again).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hvsearch.errors import LatencyError

DEVICES = ("cpu", "cuda")
RUNTIMES = ("torch", "onnxruntime")
#: p90 / median above this flags a measurement ``noisy``.
NOISY_SPREAD = 1.25
#: repeated measurements of one key agree when their medians are within this fraction.
AGREEMENT = 0.10
STORE_NAME = "latency.db"
#: cores other processes may use during a measurement before it is flagged ``busy`` (daemons,
#: the search's own bookkeeping): a quarter of a core.
BUSY_SLACK = 0.25


@dataclass
class Latency:
    arch_id: str
    name: str
    device: str
    runtime: str
    batch: int
    resolution: int
    threads: int
    hardware: str
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    load_before: float
    load_after: float
    cpus: int
    measured_at: float
    flags: list[str] = dataclasses.field(default_factory=list)
    cached: bool = False
    others_cpu: float | None = None  # cores other processes used during the timed runs (Linux)

    @property
    def spread(self) -> float:
        return self.p90_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def row(self) -> dict:
        out = dataclasses.asdict(self)
        out["flags"] = ",".join(self.flags)
        return out


def cpus() -> int:
    """CPUs this process may run on (its affinity), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def hardware(device: str) -> str:
    """What the number is about: the GPU's name, or the CPU model and the CPUs this process has."""
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()} (cuda)"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{cpus()}"


def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since boot,
    from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _check_options(device: str, runtime: str, batch: int, threads: int, repeats: int, warmup: int) -> None:
    if device not in DEVICES:
        raise LatencyError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if runtime not in RUNTIMES:
        raise LatencyError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    for name, value, least in (("--batch", batch, 1), ("--threads", threads, 1), ("--repeats", repeats, 5),
                               ("--warmup", warmup, 0)):
        if not isinstance(value, int) or value < least:
            raise LatencyError(f"{name} must be an integer >= {least}, got {value!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LatencyError("--device cuda: no CUDA device is visible to this process (torch.cuda.is_available() "
                               "is False); measure on the machine the model will run on")


#: warm-up lasts at least this long as well as ``warmup`` runs: the first calls of a process pay
#: for allocator growth and kernel selection, which a few runs of a small model do not cover.
MIN_WARMUP_S = 0.25


def _timed(run: Callable[[], object], repeats: int, warmup: int,
           sync: Callable[[], None]) -> tuple[list[float], float | None]:
    """Milliseconds of each timed run, and the cores other processes used meanwhile (None
    without ``/proc/stat``)."""
    start, done = time.perf_counter(), 0
    while done < warmup or time.perf_counter() - start < MIN_WARMUP_S:
        run()
        done += 1
    sync()
    times = []
    machine0, own0, wall0 = _busy_cpu_s(), time.process_time(), time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
    machine1, own1, wall1 = _busy_cpu_s(), time.process_time(), time.perf_counter()
    others = None
    if machine0 is not None and machine1 is not None and wall1 > wall0:
        # the clock ticks of /proc/stat are coarse (10 ms): never below zero
        others = max(0.0, ((machine1 - machine0) - (own1 - own0)) / (wall1 - wall0))
    return times, others


def _torch_runner(model, x):
    import torch

    def run():
        with torch.inference_mode():
            return model(x)
    return run


def onnx_path(spec, x, folder: Path) -> Path:
    """The checked ONNX export of ``spec`` for inputs shaped as ``x``, with those shapes fixed
    (it runs at no other: the export is faster and ONNX Runtime plans for them; TransXNet's IDConv
    keeps its batch-folded conv, where an open batch would time B x its multiply-adds), written to
    ``folder`` once: a file already there (same arch id, size and batch) is reused."""
    import torch

    from hvsearch.export import _onnx, _require

    _require("onnxruntime", "onnxruntime")
    path = Path(folder) / f"{spec.arch_id}-{x.shape[-1]}px-b{x.shape[0]}-static.onnx"
    if not path.is_file():
        from hvsearch.models import HybridBackbone

        path.parent.mkdir(parents=True, exist_ok=True)
        model = HybridBackbone(spec).eval()
        check = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(1))
        partial = path.with_suffix(".partial.onnx")
        # raises ExportError when no exporter matches PyTorch
        _onnx(model, x.cpu(), check, partial, closed={"batch", "height", "width"})
        partial.replace(path)
    return path


def _ort_runner(spec, x, threads: int, device: str, folder: Path):
    from hvsearch.export import _require

    ort = _require("onnxruntime", "onnxruntime")
    path = onnx_path(spec, x, folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise LatencyError("--runtime onnxruntime --device cuda needs onnxruntime-gpu (CUDAExecutionProvider "
                           "is not available)")
    session = ort.InferenceSession(str(path), options, providers=providers)
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    return lambda: session.run(None, feed)


def measure(spec, device: str = "cpu", runtime: str = "torch", batch: int = 1, resolution: int | None = None,
            threads: int = 1, repeats: int = 50, warmup: int = 10, onnx_dir: str | Path | None = None) -> Latency:
    """Measure ``spec`` once (no cache): see the module docstring. ``onnx_dir`` keeps the ONNX
    exports the ``onnxruntime`` runtime needs (default: a temporary folder, exported each time)."""
    _check_options(device, runtime, batch, threads, repeats, warmup)
    import tempfile

    import torch

    from hvsearch.models import HybridBackbone

    res = resolution or spec.resolution
    if res % 32:
        raise LatencyError(f"--resolution must be a multiple of 32 (the total stride), got {res}")
    x = torch.randn(batch, spec.in_chans, res, res, generator=torch.Generator().manual_seed(0))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    try:
        with (contextlib.nullcontext(onnx_dir) if onnx_dir else tempfile.TemporaryDirectory(prefix="hvs-latency-")) as tmp:
            if runtime == "onnxruntime":
                run = _ort_runner(spec, x, threads, device, Path(tmp))
            else:
                model, x = HybridBackbone(spec).eval().to(device), x.to(device)
                run = _torch_runner(model, x)
            load_before = os.getloadavg()[0]
            times, others_cpu = _timed(run, repeats, warmup, sync)
            load_after = os.getloadavg()[0]
    finally:
        torch.set_num_threads(previous_threads)
    times.sort()
    n = cpus()
    out = Latency(arch_id=spec.arch_id, name=spec.name or spec.arch_id, device=device, runtime=runtime, batch=batch,
                  resolution=res, threads=threads, hardware=hardware(device), median_ms=statistics.median(times),
                  p90_ms=times[int(0.9 * (len(times) - 1))], min_ms=times[0], max_ms=times[-1], repeats=repeats,
                  load_before=load_before, load_after=load_after, cpus=n, measured_at=time.time(),
                  others_cpu=others_cpu)
    if device == "cpu" and (others_cpu + threads > n + BUSY_SLACK if others_cpu is not None
                            else load_before + threads > n):
        out.flags.append("busy")
    if out.spread > NOISY_SPREAD:
        out.flags.append("noisy")
    return out


class LatencyStore:
    """Every measurement, in SQLite; see the module docstring for the key and the cached answer."""

    KEY = ("arch_id", "resolution", "batch", "device", "runtime", "threads", "hardware")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS latency (arch_id TEXT, name TEXT, resolution INT, batch INT, device TEXT, "
                "runtime TEXT, threads INT, hardware TEXT, median_ms REAL, p90_ms REAL, min_ms REAL, max_ms REAL, "
                "repeats INT, load_before REAL, load_after REAL, cpus INT, measured_at REAL, flags TEXT, "
                "others_cpu REAL)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(latency)")}
            if "others_cpu" not in columns:  # a store written before others_cpu was measured
                self._db.execute("ALTER TABLE latency ADD COLUMN others_cpu REAL")
            self._db.execute("CREATE INDEX IF NOT EXISTS latency_key ON latency "
                             "(arch_id, resolution, batch, device, runtime, threads, hardware)")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise LatencyError(f"{self.path}: not a latency store ({e})") from None

    def close(self) -> None:
        self._db.close()

    def all(self, **key) -> list[Latency]:
        where = " AND ".join(f"{k} = ?" for k in key)
        cur = self._db.execute(f"SELECT * FROM latency{' WHERE ' + where if where else ''} ORDER BY measured_at",
                               tuple(key.values()))
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            row = dict(zip(names, values))
            row["flags"] = [f for f in row["flags"].split(",") if f]
            out.append(Latency(**row, cached=True))
        return out

    def get(self, **key) -> Latency | None:
        rows = self.all(**key)
        if not rows:
            return None
        calm = [r for r in rows if "busy" not in r.flags]
        return (calm or rows)[-1]

    def add(self, m: Latency) -> None:
        row = m.row()
        row.pop("cached")
        cols = ", ".join(row)
        self._db.execute(f"INSERT INTO latency ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        self._db.commit()


def latency(spec, device: str = "cpu", runtime: str = "torch", batch: int = 1, resolution: int | None = None,
            threads: int = 1, repeats: int = 50, warmup: int = 10, store: str | Path | None = "studies/latency.db",
            again: bool = False, onnx_dir: str | Path | None = None) -> Latency:
    """The latency of ``spec`` from the store when it has a calm one for this key (``cached`` is
    then True), else measured and stored. ``again`` measures even when cached and flags ``disagrees``
    when the new median is more than :data:`AGREEMENT` away from the earlier ones' median."""
    _check_options(device, runtime, batch, threads, repeats, warmup)
    res = resolution or spec.resolution
    if store is None:
        return measure(spec, device, runtime, batch, res, threads, repeats, warmup, onnx_dir)
    db = LatencyStore(store)
    try:
        key = dict(arch_id=spec.arch_id, resolution=res, batch=batch, device=device, runtime=runtime,
                   threads=threads, hardware=hardware(device))
        if not again:
            hit = db.get(**key)
            if hit is not None and "busy" not in hit.flags:
                return hit  # (only busy ones stored: measure again, the machine may be calm now)
        earlier = db.all(**key)
        m = measure(spec, device, runtime, batch, res, threads, repeats, warmup, onnx_dir)
        if earlier:
            before = statistics.median(e.median_ms for e in earlier)
            if abs(m.median_ms - before) > AGREEMENT * before:
                m.flags.append("disagrees")
        db.add(m)
        return m
    finally:
        db.close()


def describe(m: Latency) -> str:
    """One line: the numbers, where they come from, and any flag spelled out."""
    busy = (f"other processes used {m.others_cpu:.2f} cores during the runs" if m.others_cpu is not None
            else f"load {m.load_before:.2f} before")
    words = {"busy": f"the machine was busy ({busy}, {m.cpus} CPUs): pessimistic",
             "noisy": f"its runs disagree (p90 {m.spread:.2f}x the median)",
             "disagrees": f"differs by more than {AGREEMENT:.0%} from earlier measurements of the same key"}
    line = (f"{m.name}: {m.median_ms:.2f} ms median, {m.p90_ms:.2f} ms p90 ({m.runtime} on {m.device}, batch "
            f"{m.batch}, {m.resolution} px, {m.threads} thread{'s' * (m.threads > 1)}, {m.repeats} runs"
            f"{', cached' if m.cached else ''})")
    return line + "".join(f"; warning: {words[f]}" for f in m.flags)


def to_json(m: Latency) -> str:
    return json.dumps(m.row())
