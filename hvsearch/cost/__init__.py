"""Cost of an architecture: params and FLOPs (multiply-adds) under fvcore's convention, counted
from the spec (:mod:`.analytic`, no torch), from shapes during an eager pass (:mod:`.shapes`) or by
fvcore itself; see :mod:`.flops` for the convention and :mod:`.spec` for :func:`count_spec`.

Importing the package is cheap: the model counters (and torch) load when first used."""
from __future__ import annotations

import importlib

from hvsearch.cost.analytic import Cost, NotCountable, count_analytic
from hvsearch.cost.spec import SPEC_COUNTERS, count_spec
from hvsearch.errors import UncountedOpError

_LAZY = {"COUNTERS": "hvsearch.cost.flops", "FREE_OPS": "hvsearch.cost.flops", "count": "hvsearch.cost.flops",
         "FREE_CALLS": "hvsearch.cost.shapes"}

__all__ = ["COUNTERS", "Cost", "FREE_CALLS", "FREE_OPS", "NotCountable", "SPEC_COUNTERS", "UncountedOpError",
           "count", "count_analytic", "count_spec"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
