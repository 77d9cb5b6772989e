"""Models built from specs, and the seed catalog (registered in timm as ``hvs_<seed>``)."""
from hvsearch._compat import patch_torchvision

patch_torchvision()

from hvsearch.models.backbone import HybridBackbone, build_model  # noqa: E402
from hvsearch.models.catalog import TIMM_PREFIX, Seed, get_seed, seed_names  # noqa: E402
from hvsearch import families  # noqa: E402

families.load("seeds")  # registers every family's seeds

__all__ = ["HybridBackbone", "Seed", "TIMM_PREFIX", "build_model", "get_seed", "seed_names"]
