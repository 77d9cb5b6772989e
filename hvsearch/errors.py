"""One exception hierarchy for everything hvsearch reports to a user.

Every error a user can cause (a bad spec, a bad space file, missing data, an unknown seed) is an
:class:`HVSearchError`. The CLI prints its message on one line and exits non-zero; anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

from typing import Any


class HVSearchError(Exception):
    """Root of all user-facing hvsearch errors."""


class SpecError(HVSearchError, ValueError):
    """An architecture spec breaks a rule.

    The message names the field path, the rule and the offending value, e.g.
    ``stages.2.mixer.sr_ratio must divide the stage's feature size 14, got 4``.
    """

    def __init__(self, path: str, rule: str, value: Any = None, *, show_value: bool = True):
        self.path, self.rule, self.value = path, rule, value
        msg = f"{path} {rule}" if path else rule
        if show_value:
            from hvsearch.yamlio import short

            msg += f", got {short(value)}"  # a 200,000-item list is not echoed
        super().__init__(msg)


class RegistryError(HVSearchError, LookupError):
    """An unknown or duplicate name in one of the registries (mixers, FFNs, seeds, ...)."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class SpaceError(SpecError):
    """A search-space file breaks a rule (same message shape as :class:`SpecError`)."""


class DataError(HVSearchError):
    """A data set is missing, empty or malformed; the message names the path."""


class TrainingError(HVSearchError):
    """A training run cannot go on (non-finite loss, out of memory, ...); the message says why."""


class StudyError(HVSearchError):
    """A study cannot be found, opened or resumed."""


class RayStartError(StudyError):
    """A local Ray instance could not be started (its processes did not come up in time, a
    temporary folder it cannot use, ...)."""


class CalibrationError(HVSearchError):
    """The space cannot give the sample asked for, or the studies hold too little to correlate."""


class ScalingError(HVSearchError):
    """Scaling constants or a φ that cannot give a valid model."""


class UncountedOpError(HVSearchError):
    """fvcore met an op that may cost multiply-adds and that no handle counts."""


class NotCountable(HVSearchError):
    """A part of an architecture has no analytic cost (its config defines no ``cost``):
    :func:`hvsearch.cost.count_spec` then counts the built model instead."""


class ScoreError(HVSearchError, ValueError):
    """A zero-cost score cannot be computed: the message names what, the rule and the value."""

    def __init__(self, what: str, rule: str, value: Any = None, *, show_value: bool = True):
        self.what, self.rule, self.value = what, rule, value
        super().__init__(f"{what} {rule}" + (f", got {value!r}" if show_value else ""))


class ExportError(HVSearchError):
    """An architecture cannot be written in a format, or its export does not match PyTorch."""


class LatencyError(HVSearchError):
    """A latency cannot be measured as asked (a device that is not there, a bad option, a store
    that is not one)."""


class MissingDependencyError(HVSearchError, ImportError):
    """An optional package is not installed; the message gives the install line."""


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
