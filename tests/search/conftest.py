"""Helpers for the search tests: tiny spaces written to tmp dirs, the CLI run in a subprocess
(real Ray, real SQLite), and the study reopened with Optuna."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "spaces" / "tiny.yaml"


def write_space(folder: Path, edit=None, name: str = "tiny") -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["name"] = name
    if edit:
        edit(data)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def hvsearch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hvsearch.cli", *args]


def run_cli(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(hvsearch_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"hvsearch {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def load(folder: Path, study: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=f"sqlite:///{folder / 'studies' / f'{study}.db'}")
