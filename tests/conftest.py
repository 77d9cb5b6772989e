import os
import shutil
import tempfile
from pathlib import Path

import pytest

import hvsearch  # noqa: F401  (before timm: makes timm importable on a CPU-only torch)

# Two cores: keep torch from oversubscribing when pytest and Ray workers share the machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed_torch():
    try:
        import torch
    except ImportError:  # torch-free tests (space schema) still run
        yield
        return
    torch.manual_seed(0)
    yield


@pytest.fixture
def fit_batch():
    """The tests' tiny training loop: ``fit_batch(model, x, y, steps, lr)`` puts the model in train
    mode, takes ``steps`` AdamW steps of cross-entropy on the one batch ``(x, y)`` and returns the
    losses (the last step's gradients stay on the parameters)."""

    def run(model, x, y, steps: int, lr: float = 2e-3) -> list[float]:
        import torch
        import torch.nn.functional as F

        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return run


# Shared by the tests that run searches in a subprocess (tests/search, tests/scaling).
@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hvsearch-cache")


def search_env(cache_dir: Path) -> dict[str, str]:
    """The environment searches run with in the tests."""
    env = dict(os.environ)
    env.update(HVSEARCH_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0")
    return env


@pytest.fixture
def workdir(tmp_path: Path, cache_dir: Path):
    """A folder to run searches in, and the environment they run with."""
    return tmp_path, search_env(cache_dir)


@pytest.fixture
def ray_tmp():
    """A short private folder for Ray's sockets and token (socket paths are limited to ~107
    bytes, and pytest's tmp paths are long)."""
    path = Path(tempfile.mkdtemp(prefix="hvs-t", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
