"""The cost of a spec: counted from the spec where every part has a formula, else on its model.

``counter``:

* ``auto`` (default): :func:`~hvsearch.cost.analytic.count_analytic` (microseconds, no torch);
  a spec with a part that has no formula (a family from another package may bring none) is built
  and counted by ``shapes``;
* ``analytic``: from the spec only (:class:`~hvsearch.errors.NotCountable` otherwise);
* ``shapes``, ``fvcore``: build the model and count it (:func:`hvsearch.cost.flops.count`).

All give the same numbers (the test-suite holds them to fvcore's). Importing this module imports
no torch; only ``shapes``/``fvcore`` counting does.
"""
from __future__ import annotations

import functools

from hvsearch.cost.analytic import Cost, NotCountable, count_analytic

SPEC_COUNTERS = ("auto", "analytic", "shapes", "fvcore")


def count_spec(spec, resolution: int | tuple[int, int] | None = None, strict: bool = True,
               counter: str = "auto") -> Cost:
    """Params and FLOPs of ``spec`` at ``resolution`` (default: its build resolution).

    A spec is a frozen description, so its cost is memoised per (spec, resolution, counter): the
    catalog, scaling tables and space checks count each architecture once per process. The
    returned :class:`Cost` is shared: do not mutate it. ``strict`` applies to the model counters
    (an op that nothing counts raises :class:`~hvsearch.errors.UncountedOpError`)."""
    if counter not in SPEC_COUNTERS:
        raise ValueError(f"counter must be one of {', '.join(SPEC_COUNTERS)}, got {counter!r}")
    res = spec.resolution if resolution is None else resolution
    return _count_spec(spec, res if isinstance(res, int) else tuple(res), strict, counter)


@functools.lru_cache(maxsize=512)
def _count_spec(spec, resolution, strict: bool, counter: str) -> Cost:
    spec.validate()  # a spec that breaks a rule gets its SpecError, not numbers (as a built model)
    if counter in ("auto", "analytic"):
        try:
            return count_analytic(spec, resolution)
        except NotCountable:
            if counter == "analytic":
                raise
            counter = "shapes"
    from hvsearch.cost.flops import count
    from hvsearch.cost.shapes import build_for_counting
    from hvsearch.models import build_model

    # Weights are not drawn (zeros): counting needs shapes, and drawing them is most of the time
    # of building a large model. fvcore, the reference, gets a model built as usual.
    model = build_for_counting(lambda: build_model(spec)) if counter == "shapes" else build_model(spec)
    return count(model, resolution, spec.in_chans, strict=strict, counter=counter)
