"""Why a trial failed, in words a user can act on: the exception it raised (the cause, not Ray's
wrapper), or what killed its worker process (Ray's memory monitor, a SIGKILL from outside, a
crash), read from the error files Tune writes for the trial on the driver."""
from __future__ import annotations

import re

# what Tune's error says when a re-used worker could not be reset for the next trial
NOT_STARTED = "Trainable runner reuse requires reset_config()"


def error_reason(trial) -> str:
    """The exception a Tune trial died of, as ``Type: message`` (the cause, not Ray's wrapper),
    or why its worker process died (:func:`death_reason`).

    Read from the trial's local error files: Tune writes them on the driver before telling the
    searcher, and syncs them to the run's storage only later."""
    if trial is None:
        return "the trial raised (no error details reached the driver)"
    err = None
    try:
        import ray.cloudpickle as cloudpickle

        with open(trial.pickled_error_file, "rb") as f:
            err = cloudpickle.load(f)
    except Exception:
        pass
    if err is not None:
        death = death_reason(str(err))
        if death:
            return death
        from ray.exceptions import RayActorError

        if isinstance(err, RayActorError):
            return ("the trial's worker process died: "
                    + (str(err).strip().splitlines() or [""])[0][:300])
        cause = getattr(err, "cause", None) or err
        lines = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:1000]
    try:
        with open(trial.error_file) as f:
            text = f.read()
    except Exception:
        return "the trial raised"
    death = death_reason(text)
    if death:
        return death
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:1000] if lines else "the trial raised"


_MEMORY = re.compile(r"Memory on the node .*? was ([\d.]+\s*[KMGT]?B) used / ([\d.]+\s*[KMGT]?B) limit")
_THRESHOLD = re.compile(r"threshold of \d+B \(([\d.]+%)")
_EXIT_DETAIL = re.compile(r"Worker exit detail: (.*)")


def death_reason(text: str) -> str | None:
    """Why a trial's worker process died, from Ray's error text, or None if it did not die (an
    exception in the trial). Ray's memory monitor names the node's memory and its threshold;
    a process killed from outside (the kernel's OOM killer, ``kill -9``) or crashed leaves
    Ray's "worker exit detail"."""
    if "running low on memory" in text:
        mem, thr = _MEMORY.search(text), _THRESHOLD.search(text)
        used = f": the node used {mem.group(1)} of {mem.group(2)}" if mem else ""
        limit = f", above the kill threshold of {thr.group(1)}" if thr else ""
        return (f"killed by Ray's memory monitor{used}{limit}; lower resources.max_concurrent or "
                "train.batch_size, or raise RAY_memory_usage_threshold (default 0.95)")
    detail = _EXIT_DETAIL.search(text)
    if detail:
        first = detail.group(1).strip().split(". ")[0].rstrip(".")
        if "SIGKILL" in first or "connection error" in first or "unexpectedly" in first:
            return ("the trial's worker process was killed (SIGKILL: the kernel's OOM killer, or another "
                    f"process) or crashed; Ray: {first[:240]}")
        return f"the trial's worker process died; Ray: {first[:300]}"
    return None
