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
    assert ("busy" in m.flags) == (m.load_before + 1 > m.cpus)
    assert describe(m).startswith("tiny: ") and "torch on cpu, batch 1, 32 px, 1 thread, 8 runs" in describe(m)


def test_second_call_is_a_cache_hit_and_again_adds_a_compared_measurement(tmp_path, monkeypatch):
    import hvsearch.latency as lat

    monkeypatch.setattr(lat.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a calm machine: cacheable
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
    import hvsearch.latency as lat

    monkeypatch.setattr(lat.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    store = tmp_path / "latency.db"
    first = latency(tiny_spec(), repeats=5, warmup=0, store=store)
    assert "busy" in first.flags and "the machine was busy" in describe(first)
    second = latency(tiny_spec(), repeats=5, warmup=0, store=store)
    assert not second.cached
    monkeypatch.setattr(lat.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    calm = latency(tiny_spec(), repeats=5, warmup=0, store=store)
    assert not calm.cached and "busy" not in calm.flags
    assert latency(tiny_spec(), repeats=5, warmup=0, store=store).cached


def test_onnxruntime_runs_the_checked_export():
    m = measure(tiny_spec(), runtime="onnxruntime", batch=3, repeats=5, warmup=1)
    assert m.runtime == "onnxruntime" and m.batch == 3 and 0 < m.median_ms <= m.max_ms


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
