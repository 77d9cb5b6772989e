"""Cost of an architecture: params and FLOPs (multiply-adds) with fvcore; see :mod:`.flops`."""
from hvsearch._compat import patch_torchvision

patch_torchvision()

from hvsearch.cost.flops import FREE_OPS, Cost, UncountedOpError, count, count_spec  # noqa: E402

__all__ = ["Cost", "FREE_OPS", "UncountedOpError", "count", "count_spec"]
