"""The command line as a user runs it: tables, formats, one-line errors with a non-zero exit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvsearch.cli import main
from hvsearch.models import get_seed, seed_names


def run_cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hvsearch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_seeds_json_lists_every_seed_with_paper_figures(capsys):
    assert main(["seeds", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == seed_names()
    for r in rows:
        seed = get_seed(r["name"])
        assert r["paper_params_M"] == seed.paper_params_m and r["paper_GFLOPs"] == seed.paper_gflops
        p_tol, f_tol = seed.tolerances
        assert abs(r["dev_params_%"]) <= 100 * p_tol and abs(r["dev_flops_%"]) <= 100 * f_tol


def test_show_table_yaml_and_json(tmp_path, capsys):
    assert main(["show", "cmt_ti"]) == 0
    out = capsys.readouterr().out
    assert "params 9.492 M" in out and "stage 3" in out and "cmt_attn" in out
    assert main(["show", "cmt_ti", "--format", "yaml"]) == 0
    path = tmp_path / "arch.yaml"
    path.write_text(capsys.readouterr().out)
    assert main(["show", str(path), "--format", "json", "--resolution", "64"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch_id"] == get_seed("cmt_ti").spec.arch_id
    assert info["resolution"] == 64 and info["params"] == 9492426


@pytest.mark.parametrize("args, fragment", [
    (["show", "no_such_seed"], "is neither a seed"),
    (["show", "missing.yaml"], "does not exist"),
    (["show", "hvsearch"], "architecture file hvsearch is a directory, not a file"),
    (["train", "mystudy:last"], "'mystudy:last': a study's architecture is STUDY:best or STUDY:<trial number>"),
    (["scale", "--seed", "cmt_s", "--phi", "abc"],
     "hvsearch scale: error: argument --phi: invalid float value: 'abc' (see `hvsearch scale --help`)"),
    (["bogus"], "hvsearch: error: argument COMMAND: invalid choice: 'bogus'"),
    (["run", str(Path(__file__).resolve().parents[1] / "spaces" / "tiny.yaml"), "--objectives", "accuracy", "energy"],
     "hvsearch run: error: --objectives[1] must be one of accuracy, flops, params, latency (it sets "
     "search.objectives), got 'energy'"),
    (["run", str(Path(__file__).resolve().parents[1] / "spaces" / "tiny.yaml"), "--trials", "0"],
     "hvsearch run: error: --trials must be an integer in [1, 1000000] (it sets search.trials), got 0"),
])
def test_errors_are_one_line_without_traceback(args, fragment):
    r = run_cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]


@pytest.mark.parametrize("args", [["show", "cmt_ss"], ["train", "cmt_ss"], ["scale", "--seed", "cmt_ss"],
                                  ["show", "missing.yaml"], ["train", "mystudy:last"]])
def test_a_wrong_name_or_path_is_answered_before_torch_loads(args):
    """Checked in a fresh interpreter: the error path never imports torch, so it answers at once."""
    code = ("import sys; from hvsearch.cli import main; rc = main(sys.argv[1:]); "
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', rc)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["torch", "not", "loaded", "2"], r.stderr
    if "cmt_ss" in args:
        assert "'cmt_ss' is neither a seed nor an architecture file (did you mean 'cmt_s' or 'cmt_xs'?)" in r.stderr


def test_the_torch_free_seed_names_are_the_catalog():
    from hvsearch.seed_names import SEEDS
    from hvsearch.seed_names import seed_names as listed

    assert listed() == seed_names()
    assert {name: get_seed(name).family for name in seed_names()} == {
        name: family for family, names in SEEDS.items() for name in names}


def test_train_prints_progress_lines_in_a_log(tmp_path):
    """Output captured (not a terminal): plain progress lines every HVSEARCH_PROGRESS_S seconds
    (0: every loss check, 10 steps), no carriage returns, then the epoch line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HVSEARCH_PROGRESS_S": "0"}
    r = subprocess.run([sys.executable, "-m", "hvsearch.cli", "train", "cmt_ti", "--resolution", "32", "--epochs", "1",
                        "--max-steps-per-epoch", "25", "--batch-size", "4", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = r.stderr.splitlines()
    steps = [line for line in lines if line.startswith("epoch 1/1: step ")]
    assert [line.split()[3] for line in steps] == ["10/25", "20/25"]
    assert all(line.endswith(" s") and "  loss " in line for line in steps)
    assert lines.index(steps[-1]) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/1  loss"))


def _entry(tmp_path, argv, before=""):
    """Run the console script's entry point in a fresh process, with ``before`` run after
    ``from hvsearch import cli``."""
    script = (f"import sys\nfrom hvsearch import cli\n{before}\nsys.argv = ['hvsearch', *{argv!r}]\n"
              "cli.entry()\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_the_console_exit_skips_finalisation_but_loses_nothing(tmp_path):
    """entry() ends the process without the interpreter's finalisation, after the atexit
    handlers and with every byte of output flushed; the exit status is the command's."""
    mark = tmp_path / "atexit-ran"
    at_exit = f"import atexit\natexit.register(lambda: open({str(mark)!r}, 'w').write('yes'))"
    r = _entry(tmp_path, ["show", "cmt_ti", "--format", "json"], at_exit)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["arch_id"] == get_seed("cmt_ti").spec.arch_id  # all of it arrived
    assert mark.read_text() == "yes"
    r = _entry(tmp_path, ["show", "no_such_seed"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no_such_seed" in r.stderr


def test_the_console_exit_waits_for_a_thread_still_working(tmp_path):
    done = tmp_path / "thread-done"
    # the thread starts as the command returns, so it is still working when entry() looks
    worker = ("import threading, time\n"
              "command = cli.main\n"
              "def main_then_thread(argv=None):\n"
              "    code = command(argv)\n"
              f"    threading.Thread(target=lambda: (time.sleep(1.0), open({str(done)!r}, 'w').write('yes'))).start()\n"
              "    return code\n"
              "cli.main = main_then_thread")
    r = _entry(tmp_path, ["show", "cmt_ti", "--format", "json"], worker)
    assert r.returncode == 0, r.stderr
    assert done.read_text() == "yes"


def test_progress_in_a_log_is_one_line_per_item_or_per_interval():
    import io

    from hvsearch.progress import Progress

    log = io.StringIO()
    with Progress(3, "counting", every_s=0, file=log) as bar:
        for name in "abc":
            bar.update(note=name)
    assert [line.rsplit("  ", 1)[0] for line in log.getvalue().splitlines()] == [
        "counting 1/3  a", "counting 2/3  b", "counting 3/3  c"]
    log = io.StringIO()
    bar = Progress(100, "steps", every_s=3600, file=log, last_line=False)
    for _ in range(100):
        bar.update()
    assert log.getvalue() == "" and bar.n == 100
    log = io.StringIO()
    with Progress(2, "quiet", every_s=0, file=log, enabled=False) as bar:
        bar.update()
    assert log.getvalue() == ""


def test_bad_spec_file_names_path_rule_value(tmp_path):
    spec = get_seed("cmt_ti").spec.to_dict()
    spec["stages"][2]["mixer"]["heads"] = 5
    bad = tmp_path / "bad.yaml"
    import yaml

    bad.write_text(yaml.safe_dump(spec))
    r = run_cli("show", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "stages.2.mixer.heads must divide the stage width 184, got 5" in r.stderr


def test_run_calibrate_and_the_grid_share_one_set_of_ray_flags():
    flags = ("--max-concurrent", "--cpus-per-trial", "--gpus-per-trial", "--address", "--num-cpus")
    for args in (["run", "--help"], ["calibrate", "--help"], ["scale", "--help"]):
        r = run_cli(*args)
        assert r.returncode == 0
        assert all(f in r.stdout for f in flags), (args, [f for f in flags if f not in r.stdout])


@pytest.mark.parametrize("args, fragment", [
    (["dashboard", "s", "--port", "99999"], "argument --port: must be an integer in [1, 65535], got 99999"),
    (["train", "cmt_ti", "--threads", "-1"], "argument --threads: must be an integer in [1, 4096], got -1"),
    (["show", "cmt_ti", "--resolution", "0"], "argument --resolution: must be an integer in [32, 8192], a multiple "
                                              "of 32, got 0"),
    (["export", "cmt_ti", "--format", "onnx", "--resolution", "-32"], "argument --resolution: must be an integer"),
    (["show", "cmt_ti", "--resolution", "abc"], "argument --resolution: must be an integer, got 'abc'"),
    (["run", "spaces/tiny.yaml", "--study", ""], "argument --study: must be a study name"),
    (["calibrate", "spaces/tiny.yaml", "--reference-study", "../x"], "argument --reference-study: must be a study name"),
    (["calibrate", "spaces/tiny.yaml", "-n", "-5"], "argument -n/--archs: must be an integer in [4, 100000], got -5"),
])
def test_command_line_values_are_checked_as_they_are_parsed(args, fragment, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_file_system_refusal_is_one_line_naming_the_path(tmp_path, capsys):
    """An output folder that is a file: one line with the path and the system's reason."""
    (tmp_path / "taken").write_text("")
    assert main(["scale", "--seed", "cmt_ti", "--phi", "1", "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the progress line of the member
    assert err[-1] == f"hvsearch scale: error: File exists ({tmp_path / 'taken'})" and "Traceback" not in err


@pytest.mark.parametrize("name, written", [("../../evil_member", "evil_member_phi1.yaml"),
                                           ("/tmp/abs evil", "tmp_abs_evil_phi1.yaml")])
def test_an_architecture_name_never_becomes_a_path_outside_the_output_folder(tmp_path, capsys, name, written):
    spec = get_seed("cmt_ti").spec.replace(name=name)
    seed = spec.save(tmp_path / "seed.yaml")
    out = tmp_path / "a" / "b"
    assert main(["scale", "--seed", str(seed), "--phi", "1", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == [written]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "seed.yaml"]

    from hvsearch.train.run import RESULTS, default_run_dir
    from hvsearch.train.config import DataConfig

    run_dir = default_run_dir(spec, DataConfig())
    assert run_dir.parent == RESULTS and run_dir.name.startswith(written.removesuffix("_phi1.yaml") + "-")
