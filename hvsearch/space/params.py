"""The values a knob can take in a space file, and how each is sampled.

A knob in a space file is written as one of

    width: 64                                  # fixed
    width: {choice: [32, 48, 64]}              # categorical
    depth: {int: [1, 4]}                       # integer range, both ends included
    width: {int: [32, 128], step: 16}          # ... on a grid
    ratio: {float: [2.0, 4.0], step: 0.5}      # float range (step or log optional)
    lr:    {float: [1.0e-4, 1.0e-2], log: true}

Inside ``arch.stages`` any of them may add ``shared: true``: the value is then sampled once and
used by every stage (its label reads ``stages.*.<field>``), instead of once per stage.

Sampling goes through an Optuna-trial-like object (``suggest_categorical``, ``suggest_int``,
``suggest_float``); a label names each knob (``stages.2.mixer.hire.region``). Nothing here imports
Optuna or torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from hvsearch.errors import SpaceError
from hvsearch.values import is_int, is_number

KINDS = ("choice", "int", "float")
OPTIONS = ("step", "log", "shared")


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float: ...


@dataclass(frozen=True)
class Fixed:
    value: Any
    shared: bool = False

    def suggest(self, trial: TrialLike, label: str) -> Any:
        return list(self.value) if isinstance(self.value, tuple) else self.value

    def size(self) -> int | None:
        return 1

    def describe(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Choice:
    choices: tuple
    shared: bool = False

    def suggest(self, trial: TrialLike, label: str) -> Any:
        return trial.suggest_categorical(label, list(self.choices))

    def size(self) -> int | None:
        return len(self.choices)

    def describe(self) -> str:
        return "{" + ", ".join(map(repr, self.choices)) + "}"


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False
    shared: bool = False

    def suggest(self, trial: TrialLike, label: str) -> int:
        return trial.suggest_int(label, self.low, self.high, step=self.step, log=self.log)

    def size(self) -> int | None:
        return (self.high - self.low) // self.step + 1

    def describe(self) -> str:
        extra = f" step {self.step}" if self.step != 1 else ""
        return f"int [{self.low}, {self.high}]{extra}{' log' if self.log else ''}"


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False
    shared: bool = False

    def suggest(self, trial: TrialLike, label: str) -> float:
        return trial.suggest_float(label, self.low, self.high, step=self.step, log=self.log)

    def size(self) -> int | None:
        if self.step is None:
            return None if self.high > self.low else 1
        n = (self.high - self.low) / self.step
        # a step too fine to count (1e-300) is as good as continuous
        return int(round(n)) + 1 if math.isfinite(n) and n < 2 ** 53 else None

    def describe(self) -> str:
        extra = f" step {self.step}" if self.step is not None else ""
        return f"float [{self.low}, {self.high}]{extra}{' log' if self.log else ''}"


Param = Fixed | Choice | IntRange | FloatRange


# ---- parsing ------------------------------------------------------------------------------------


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_SCALAR_CHECK = {int: is_int, float: is_number, bool: lambda v: isinstance(v, bool),
                 str: lambda v: isinstance(v, str)}


def is_param_mapping(data: Any) -> bool:
    """Whether ``data`` is written as a sampled knob (``{choice: ...}``, ``{int: ...}``, ...)."""
    return isinstance(data, Mapping) and any(k in data for k in KINDS)


def parse_param(data: Any, tp: Any, path: str, allow_shared: bool = False) -> Param:
    """Parse one knob written in a space file; ``tp`` is the field's type (int, float, bool, str,
    or ``tuple`` for list-valued knobs, which can only be fixed)."""
    if not isinstance(data, Mapping):
        return Fixed(_check_scalar(data, tp, path))
    kinds = [k for k in KINDS if k in data]
    if len(kinds) != 1:
        raise SpaceError(path, "must be a value or a mapping with exactly one of "
                         "`choice`, `int`, `float` (plus `step`, `log`, `shared`)", dict(data))
    kind = kinds[0]
    for key in data:
        if key not in KINDS and key not in OPTIONS:
            raise SpaceError(f"{path}.{key}", f"is not a range option ({', '.join(OPTIONS)})", data[key])
    shared = data.get("shared", False)
    if not isinstance(shared, bool):
        raise SpaceError(f"{path}.shared", "must be true or false", shared)
    if shared and not allow_shared:
        raise SpaceError(f"{path}.shared", "is only meaningful inside arch.stages "
                         "(one value for every stage)", shared)
    if tp is tuple:
        raise SpaceError(path, "is a list-valued knob and can only be fixed (write the list)", dict(data))
    if kind == "choice":
        if "step" in data or "log" in data:
            raise SpaceError(path, "`step` and `log` only apply to `int` and `float` ranges", dict(data))
        choices = data["choice"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{path}.choice", "must be a non-empty list of values", choices)
        checked = tuple(_check_scalar(c, tp, f"{path}.choice[{i}]") for i, c in enumerate(choices))
        if len(set(checked)) != len(checked):
            raise SpaceError(f"{path}.choice", "must not repeat a value", choices)
        return Choice(checked, shared=shared)
    if kind == "int":
        if tp is not int:
            raise SpaceError(path, f"is {_TYPE_WORDS.get(tp, tp)} knob; `int:` ranges are for "
                             "integer knobs (use `float:` or `choice:`)", dict(data))
        low, high = _bounds(data["int"], is_int, "integers", f"{path}.int")
        step = data.get("step", 1)
        if not is_int(step) or step < 1:
            raise SpaceError(f"{path}.step", "must be a positive integer", step)
        log = _log(data, path)
        if log and low < 1:
            raise SpaceError(f"{path}.int", "must start at >= 1 on a log scale", data["int"])
        if log and step != 1:
            raise SpaceError(f"{path}.step", "cannot be combined with `log: true`", step)
        if (high - low) % step:
            raise SpaceError(f"{path}.int", f"must span a multiple of step {step} "
                             f"(high - low = {high - low})", data["int"])
        return IntRange(low, high, step, log, shared)
    # float
    if tp is not float:
        raise SpaceError(path, f"is {_TYPE_WORDS.get(tp, tp)} knob; `float:` ranges are for "
                         "real-valued knobs (use `int:` or `choice:`)", dict(data))
    low, high = _bounds(data["float"], is_number, "numbers", f"{path}.float")
    step = data.get("step")
    if step is not None and (not is_number(step) or step <= 0):
        raise SpaceError(f"{path}.step", "must be a positive number", step)
    log = _log(data, path)
    if log and low <= 0:
        raise SpaceError(f"{path}.float", "must start above 0 on a log scale", data["float"])
    if log and step is not None:
        raise SpaceError(f"{path}.step", "cannot be combined with `log: true`", step)
    if step is not None:
        n = (high - low) / step
        if abs(n - round(n)) > 1e-9 * max(1.0, n):
            raise SpaceError(f"{path}.float", f"must span a multiple of step {step} "
                             f"(high - low = {high - low:g})", data["float"])
    return FloatRange(float(low), float(high), None if step is None else float(step), log, shared)


def _bounds(value: Any, ok, words: str, path: str) -> tuple:
    if not isinstance(value, list) or len(value) != 2 or not all(ok(v) for v in value):
        raise SpaceError(path, f"must be [low, high], two {words}", value)
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpaceError(path, "must have finite bounds", value)
    if low > high:
        raise SpaceError(path, "must have low <= high", value)
    return low, high


def _log(data: Mapping, path: str) -> bool:
    log = data.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{path}.log", "must be true or false", log)
    return log


def _check_scalar(value: Any, tp: Any, path: str) -> Any:
    if tp is tuple:
        if not isinstance(value, list):
            raise SpaceError(path, "must be a list", value)
        return tuple(value)
    check = _SCALAR_CHECK.get(tp)
    if check is None:
        raise SpaceError(path, f"has an unsupported knob type {tp}", value)
    if not check(value):
        raise SpaceError(path, f"must be {_TYPE_WORDS[tp]}", value)
    return float(value) if tp is float else value
