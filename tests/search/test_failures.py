"""Failure reasons from Ray's own error texts (copied from real runs of Ray 2.60 on this machine;
the end-to-end tests in test_ray_safety.py produce them for real)."""
from __future__ import annotations

from hvsearch.search.failures import death_reason

MEMORY_MONITOR = """Failure # 1 (occurred at 2026-12-01_03-21-21)
2 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 127.0.0.1, ID: 90a877cdc9f1371b12b335a90d12ca0a1e2fafcc35fee5a72a50996b) was 4.15GB used / 23.54GB limit (0.176284)
OOM kill reason: Memory usage 4448505856B exceeded threshold of 505530016B (2.0% of 25276502016B limit)
Refer to the documentation on how to address the out of memory issue: https://docs.ray.io/en/latest/ray-observability/user-guides/debug-apps/debug-memory.html."""

SIGKILL = """The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of file. Some common causes include: (1) the process was killed by the OOM killer due to high memory usage, (2) ray stop --force was called, or (3) the worker crashed unexpectedly due to SIGSEGV or another unexpected error."""


def test_a_memory_monitor_kill_names_the_memory_and_the_threshold():
    assert death_reason(MEMORY_MONITOR) == (
        "killed by Ray's memory monitor: the node used 4.15GB of 23.54GB, above the kill threshold of 2.0%; "
        "lower resources.max_concurrent or train.batch_size, or raise RAY_memory_usage_threshold (default 0.95)")


def test_a_killed_worker_says_so_with_rays_first_sentence():
    assert death_reason(SIGKILL) == (
        "the trial's worker process was killed (SIGKILL: the kernel's OOM killer, or another process) or crashed; "
        "Ray: Worker unexpectedly exits with a connection error code 2")


def test_an_exception_in_the_trial_is_not_a_death():
    assert death_reason("ValueError: stages.2.mixer.region must be <= 2, got 4") is None
