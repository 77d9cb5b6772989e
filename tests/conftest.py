import os

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
