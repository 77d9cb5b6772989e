"""Progress of long work on stderr, readable in a terminal and in a log.

On a terminal, a tqdm bar that redraws in place. Anywhere else (a file, a pipe, ``tee``, a Ray
job's log, CI) carriage returns would glue every update into one line, so progress is plain
lines instead: one per counted item (``every_s=0``), or at most one every
``HVSEARCH_PROGRESS_S`` seconds (default 30) for fine-grained work such as training steps, each
with the count and the elapsed time. Silent when ``enabled`` is False.

    with Progress(total=len(specs), desc="counting", every_s=0) as bar:
        for spec in specs:
            ...
            bar.update(note=spec.arch_id)
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO

#: seconds between two progress lines in a log, for work that updates faster than that
DEFAULT_EVERY_S = 30.0


def log_interval() -> float:
    """``HVSEARCH_PROGRESS_S`` (seconds between progress lines in a log), default 30."""
    raw = os.environ.get("HVSEARCH_PROGRESS_S")
    try:
        return max(0.0, float(raw)) if raw is not None else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


class Progress:
    def __init__(self, total: int, desc: str, *, unit: str = "it", every_s: float | None = None,
                 enabled: bool = True, file: IO[str] | None = None, last_line: bool = True):
        """``last_line``: in a log, also print the line of the last item even if one was printed
        less than ``every_s`` ago (False when the caller prints its own summary right after)."""
        self.total, self.desc, self.unit, self.enabled, self.last_line = total, desc, unit, enabled, last_line
        self.file = file or sys.stderr
        self.every_s = log_interval() if every_s is None else every_s
        self.n = 0
        self._t0 = self._last = time.monotonic()
        self._bar = None
        if enabled and self.file.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.file, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, note: str = "") -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s and (self.n < self.total or self.last_line) or (
                self.n == self.total and self.last_line):
            self._last = now
            print(f"{self.desc} {self.n}/{self.total}{f'  {note}' if note else ''}  {now - self._t0:.0f} s",
                  file=self.file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
