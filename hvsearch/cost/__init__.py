"""Cost of an architecture: params and FLOPs (multiply-adds) under fvcore's convention, counted from
shapes during an eager pass (:mod:`.shapes`) or by fvcore itself; see :mod:`.flops`."""
from hvsearch._compat import patch_torchvision

patch_torchvision()

from hvsearch.cost.flops import COUNTERS, FREE_OPS, Cost, UncountedOpError, count, count_spec  # noqa: E402
from hvsearch.cost.shapes import FREE_CALLS  # noqa: E402

__all__ = ["COUNTERS", "Cost", "FREE_CALLS", "FREE_OPS", "UncountedOpError", "count", "count_spec"]
