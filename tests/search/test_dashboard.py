"""``hvsearch dashboard``: a port already taken is one line naming it, not a traceback, and
nothing claims to be served there."""
import socket
import subprocess
import sys

import optuna


def test_a_busy_port_is_one_line(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    optuna.create_study(study_name="d", storage=f"sqlite:///{studies / 'd.db'}")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "hvsearch.cli", "dashboard", "d", "--port", str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"127.0.0.1:{port} is in use" in proc.stderr and "--port" in proc.stderr
    assert "http://" not in proc.stdout  # the address is printed only once it is served
