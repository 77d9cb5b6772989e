"""Compound scaling of a seed into a model family (see :mod:`.compound`), and the grid search
over the scaling constants."""
from hvsearch.scaling.compound import (
    DEPTH_MODES,
    Member,
    ScalingError,
    ScalingRule,
    phi_tag,
    round_depth,
    round_width,
    scale,
    snap_resolution,
)

__all__ = ["DEPTH_MODES", "Member", "ScalingError", "ScalingRule", "phi_tag", "round_depth", "round_width",
           "scale", "snap_resolution"]
