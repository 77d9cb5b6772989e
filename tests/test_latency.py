"""hvsearch latency: real measurements of a tiny model (PyTorch and ONNX Runtime), the store's
cache and its repeats, the flags, and the one-line errors."""
import sqlite3
import subprocess
import sys

import pytest

from hvsearch.errors import LatencyError
from hvsearch.latency import LatencyStore, describe, hardware, latency, measure
from tests.train.builders import tiny_spec


def test_measure_keeps_the_dispersion_and_the_machine_state():
    m = measure(tiny_spec(), repeats=8, warmup=1)
    assert (m.device, m.runtime, m.batch, m.resolution, m.threads, m.repeats) == ("cpu", "torch", 1, 32, 1, 8)
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms <= m.max_ms
    assert m.load_before >= 0 and m.cpus >= 1 and m.hardware == hardware("cpu")
    assert ("noisy" in m.flags) == (m.p90_ms > 1.25 * m.median_ms)
    # on Linux the cores other processes used are measured over the timed runs themselves
    assert m.others_cpu is not None and m.others_cpu >= 0
    assert ("busy" in m.flags) == (m.others_cpu + 1 > m.cpus + 0.25)
    assert describe(m).startswith("tiny: ") and "torch on cpu, batch 1, 32 px, 1 thread, 8 runs" in describe(m)


def _machine(monkeypatch, others_cpu: float) -> None:
    """Pretend the other processes used ``others_cpu`` cores during every measurement (the
    timings themselves stay real): to test what the store does with calm and busy ones."""
    import hvsearch.latency as lat

    timed = lat._timed
    monkeypatch.setattr(lat, "_timed", lambda *a: (timed(*a)[0], others_cpu))


def test_other_processes_on_the_cores_flag_a_measurement_busy():
    # a process spinning on every core while a 2-thread measurement runs
    from hvsearch.latency import cpus

    code = "import time\nprint('spinning', flush=True)\nt = time.time() + 60\nwhile time.time() < t: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                for _ in range(cpus())]
    try:
        for p in spinners:  # each is spinning before the measurement starts
            assert p.stdout.readline().strip() == "spinning"
        # long enough to span many of /proc/stat's 10-ms ticks on a fast machine
        m = measure(tiny_spec(), threads=2, repeats=200, warmup=2)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert m.others_cpu >= 0.5, m
    assert "busy" in m.flags and "other processes used" in describe(m)


def test_second_call_is_a_cache_hit_and_again_adds_a_compared_measurement(tmp_path, monkeypatch):
    _machine(monkeypatch, 0.0)  # a calm machine: cacheable
    store = tmp_path / "latency.db"
    spec = tiny_spec()
    first = latency(spec, batch=2, repeats=6, warmup=1, store=store)
    assert not first.cached and "busy" not in first.flags
    second = latency(spec, batch=2, repeats=6, warmup=1, store=store)
    assert second.cached and second.median_ms == first.median_ms and second.p90_ms == first.p90_ms
    # another key (threads) is another measurement
    other = latency(spec, batch=2, threads=2, repeats=6, warmup=1, store=store)
    assert not other.cached
    third = latency(spec, batch=2, repeats=6, warmup=1, store=store, again=True)
    assert not third.cached
    assert ("disagrees" in third.flags) == (abs(third.median_ms - first.median_ms) > 0.10 * first.median_ms)
    db = LatencyStore(store)
    try:
        rows = db.all(arch_id=spec.arch_id, batch=2, threads=1)
        assert [r.median_ms for r in rows] == [first.median_ms, third.median_ms]
        assert len(db.all()) == 3
    finally:
        db.close()


def test_busy_measurements_are_stored_but_measured_again(tmp_path, monkeypatch):
    _machine(monkeypatch, 64.0)
    store = tmp_path / "latency.db"
    first = latency(tiny_spec(), repeats=5, warmup=0, store=store)
    assert "busy" in first.flags and "the machine was busy" in describe(first)
    second = latency(tiny_spec(), repeats=5, warmup=0, store=store)
    assert not second.cached
    _machine(monkeypatch, 0.0)
    calm = latency(tiny_spec(), repeats=5, warmup=0, store=store)
    assert not calm.cached and "busy" not in calm.flags
    assert latency(tiny_spec(), repeats=5, warmup=0, store=store).cached


def test_a_store_from_before_others_cpu_is_read_and_extended(tmp_path):
    store = tmp_path / "latency.db"
    with sqlite3.connect(store) as db:  # the table as the first version wrote it
        db.execute("CREATE TABLE latency (arch_id TEXT, name TEXT, resolution INT, batch INT, device TEXT, "
                   "runtime TEXT, threads INT, hardware TEXT, median_ms REAL, p90_ms REAL, min_ms REAL, "
                   "max_ms REAL, repeats INT, load_before REAL, load_after REAL, cpus INT, measured_at REAL, "
                   "flags TEXT)")
        db.execute("INSERT INTO latency VALUES ('a1', 'old', 32, 1, 'cpu', 'torch', 1, 'hw', 2.0, 2.5, 1.9, 3.0, "
                   "20, 0.5, 0.6, 2, 1.0, '')")
    db = LatencyStore(store)
    try:
        (old,) = db.all(arch_id="a1")
        assert old.median_ms == 2.0 and old.others_cpu is None and old.cached
        db.add(measure(tiny_spec(), repeats=5, warmup=0))
        assert len(db.all()) == 2 and db.all()[-1].others_cpu is not None
    finally:
        db.close()


def test_onnxruntime_runs_the_checked_export(tmp_path):
    m = measure(tiny_spec(), runtime="onnxruntime", batch=3, repeats=5, warmup=1, onnx_dir=tmp_path)
    assert m.runtime == "onnxruntime" and m.batch == 3 and 0 < m.median_ms <= m.max_ms
    # the file timed has the measurement's shapes fixed (an open batch can cost arithmetic:
    # TransXNet's IDConv), and is reused by the next measurement of that shape
    import onnx

    (path,) = tmp_path.glob("*.onnx")
    dims = [d.dim_value or d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 3, 32, 32] and path.name == f"{tiny_spec().arch_id}-32px-b3-static.onnx"


@pytest.mark.parametrize("kwargs, words", [
    (dict(device="tpu"), "--device must be one of cpu, cuda, got 'tpu'"),
    (dict(runtime="tvm"), "--runtime must be one of torch, onnxruntime, got 'tvm'"),
    (dict(batch=0), "--batch must be an integer >= 1, got 0"),
    (dict(repeats=2), "--repeats must be an integer >= 5, got 2"),
    (dict(resolution=40), "--resolution must be a multiple of 32 (the total stride), got 40"),
])
def test_bad_options_are_named(kwargs, words):
    with pytest.raises(LatencyError, match=words.replace("(", r"\(").replace(")", r"\)")):
        measure(tiny_spec(), **kwargs)


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    bad = tmp_path / "latency.db"
    bad.write_text("not sqlite " * 100)
    with pytest.raises(LatencyError, match="not a latency store"):
        LatencyStore(bad)
    assert bad.read_text().startswith("not sqlite")  # nothing lost


def test_cli_lines_table_and_one_line_errors(tmp_path):
    store = tmp_path / "lat.db"
    run = lambda *a: subprocess.run([sys.executable, "-m", "hvsearch.cli", "latency", *a], capture_output=True,
                                    text=True, timeout=300, cwd=tmp_path)
    done = run("cmt_ti", "--resolution", "32", "--repeats", "5", "--warmup", "1", "--store", str(store), "--format", "csv")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.strip().splitlines()
    assert header.startswith("name,arch_id,device,runtime,batch,resolution,threads,median_ms,p90_ms")
    assert row.startswith("cmt_ti,") and ",cpu,torch,1,32,1," in row
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM latency").fetchone() == (1,)
    bad = run("cmt_ti", "--batch", "0", "--store", "none")
    assert bad.returncode == 2 and bad.stderr.strip() == "hvsearch latency: error: --batch must be an integer >= 1, got 0"
    unknown = run("cmt_tj", "--store", "none")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1 and "cmt_tj" in unknown.stderr


def test_scale_adds_latency_and_picks_the_largest_phi_within_the_limit(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "hvsearch.cli", "scale", "--seed", "cmt_ti", *a],
                                    capture_output=True, text=True, timeout=600, cwd=tmp_path)
    done = run("--phi", "-3", "-2.5", "--max-latency-ms", "1e6", "--format", "csv", "--out", "fam")
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in done.stdout.strip().splitlines()]
    header, body = rows[0], rows[1:]
    assert header[-3:] == ["latency_ms", "latency_flags", "fits"] and len(body) == 2
    assert all(float(r[header.index("latency_ms")]) > 0 and r[-1] == "True" for r in body)
    assert "largest phi within 1e+06 ms (torch on cpu, batch 1, 1 thread(s)): phi=-2.5, cmt_ti_phim2p5" in done.stderr
    assert (tmp_path / "studies" / "latency.db").exists()  # measured once, cached next to the studies
    none = run("--phi", "-3", "--max-latency-ms", "0.001", "--out", "fam")
    assert none.returncode == 2 and "Traceback" not in none.stderr  # the progress line, then the error
    assert none.stderr.strip().splitlines()[-1].startswith("hvsearch scale: error: no member of cmt_ti runs within --max-latency-ms 0.001 "
                                  "(the smallest measured, phi=-3, takes ")
