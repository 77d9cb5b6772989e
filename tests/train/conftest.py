"""Fixtures for the training tests: a private synthetic-data cache and one torch thread (the
tests share two cores; more threads only contend)."""
import pytest


@pytest.fixture(scope="session", autouse=True)
def _synthetic_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HVSEARCH_CACHE", str(tmp_path_factory.mktemp("hvsearch-cache")))
        yield


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
