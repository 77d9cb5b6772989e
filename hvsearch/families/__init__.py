"""The mixer families, one package each, discovered (no list to keep).

A family ``hvsearch/families/<name>/`` holds everything that is its own:

* ``__init__.py`` — torch-free facts: the paper (docstring), ``SEEDS`` (its published variants,
  smallest first; commands check seed names here before loading torch);
* ``config.py`` — torch-free part configs (:class:`~hvsearch.arch.Component` subclasses,
  ``XConfig``), registered under their YAML ``type``;
* ``layers.py`` — the ``nn.Module`` of each config (``X`` for ``XConfig``), registered under the
  same type; mixers derive :class:`~hvsearch.layers.base.MixerModule`, heads
  :class:`~hvsearch.layers.base.HeadModule`;
* ``seeds.py`` — the published variants as specs with their reference params/FLOPs.

:mod:`hvsearch.arch` loads every family's ``config``, :mod:`hvsearch.layers` every ``layers`` and
:mod:`hvsearch.models` every ``seeds``; the test-suite's registry tests are parametrised over what
got registered. Adding a family is adding its folder (see CONTRIBUTING.md). Parts every family may
use (conv/patch stems and downsamples, the MLP FFN, the pooled head) are not a family: they live in
:mod:`hvsearch.arch.common` and :mod:`hvsearch.layers.common` (family ``common``).
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from functools import lru_cache
from types import ModuleType

PARTS = ("config", "layers", "seeds")
COMMON = "common"


@lru_cache(maxsize=None)
def family_names() -> tuple[str, ...]:
    """Every family package under ``hvsearch/families``, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_")))


def family(name: str) -> ModuleType:
    """The family's torch-free package (``SEEDS``, docstring)."""
    return importlib.import_module(f"{__name__}.{name}")


def load(part: str) -> list[ModuleType]:
    """Import ``part`` (``config``, ``layers`` or ``seeds``) of every family that has it; importing
    it registers what it defines."""
    if part not in PARTS:
        raise ValueError(f"unknown family part {part!r}; known: {', '.join(PARTS)}")
    out = []
    for name in family_names():
        module = f"{__name__}.{name}.{part}"
        if importlib.util.find_spec(module) is not None:
            out.append(importlib.import_module(module))
    return out


def family_of(module: str) -> str:
    """The family a class defined in ``module`` belongs to (``common`` outside the families)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["hvsearch", "families"] else COMMON
