"""Typed, torch-free architecture specs (see :mod:`hvsearch.arch.spec`).

Importing this package registers the common part configs and every family's
(:mod:`hvsearch.families`, each one's ``config``).
"""
from hvsearch import families
from hvsearch.arch import common  # noqa: F401  (registration)
from hvsearch.arch.components import (
    KINDS,
    NORMS,
    Component,
    StageContext,
    component_types,
    get_component,
    parse_component,
    register_component,
)
from hvsearch.arch.spec import NUM_STAGES, PYRAMID_STRIDES, TOTAL_STRIDE, ModelSpec, StageSpec, arch_id

families.load("config")

__all__ = [
    "KINDS", "NORMS", "NUM_STAGES", "PYRAMID_STRIDES", "TOTAL_STRIDE", "Component", "ModelSpec", "StageContext",
    "StageSpec", "arch_id", "component_types", "get_component", "parse_component",
    "register_component",
]
