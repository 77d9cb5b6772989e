"""Fixtures for the training tests: a private synthetic-data cache, one torch thread (tiny models
on tiny batches: more threads only add their start-up), every core for the two tests that train
long enough for threads to pay, and IDX lookups blind to installed data sets."""
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


@pytest.fixture
def all_cores(_one_thread):
    """torch on every core this process may use (pytest runs one test at a time): the real
    Fashion-MNIST test takes 52 s on 2 cores, 78 s on one."""
    import torch

    from hvsearch.latency import cpus

    torch.set_num_threads(cpus())


@pytest.fixture
def no_installed_data(monkeypatch, tmp_path):
    """IDX lookups see neither $HVSEARCH_DATA nor this machine's /usr/share/datasets, only
    ``tmp_path/system``."""
    from hvsearch.train import idx

    monkeypatch.delenv(idx.DATA_ENV, raising=False)
    monkeypatch.setattr(idx, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
