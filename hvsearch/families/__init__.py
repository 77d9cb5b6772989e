"""The mixer families, one package each, discovered (no list to keep).

A family ``hvsearch/families/<name>/`` holds everything that is its own:

* ``__init__.py`` — torch-free facts: the paper (docstring), ``TITLE`` (how tables name it),
  ``SEEDS`` (its published variants, smallest first; commands check seed names here before
  loading torch);
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

A family may also come from another installed distribution: it declares its package under the
entry-point group ``hvsearch.families`` (``toy = my_pkg.toy`` in its ``entry_points.txt``; in a
``pyproject.toml``, ``[project.entry-points."hvsearch.families"]``), and that package has the same
parts. The test-suite's toy family is added that way.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
import re
from functools import lru_cache
from types import ModuleType

from hvsearch.errors import RegistryError

PARTS = ("config", "layers", "seeds")
COMMON = "common"
ENTRY_POINTS = "hvsearch.families"
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@lru_cache(maxsize=None)
def _packages() -> dict[str, str]:
    """family name -> its package: the folders under ``hvsearch/families``, then the entry points."""
    out = {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)
           if m.ispkg and not m.name.startswith("_")}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        where = f"entry point {ep.name} = {ep.value} ({ENTRY_POINTS})"
        if not _NAME.fullmatch(ep.name):
            raise RegistryError(f"{where}: the family name must be lower-case letters, digits and _")
        if not _MODULE.fullmatch(ep.value):
            raise RegistryError(f"{where}: the value must be a package path such as my_pkg.toy")
        if ep.name in out and out[ep.name] != ep.value:
            raise RegistryError(f"{where}: family {ep.name!r} is already {out[ep.name]}")
        out[ep.name] = ep.value
    return dict(sorted(out.items()))


def family_names() -> tuple[str, ...]:
    """Every family, sorted: the packages under ``hvsearch/families`` and the entry points."""
    return tuple(_packages())


def family(name: str) -> ModuleType:
    """The family's torch-free package (``SEEDS``, docstring)."""
    return importlib.import_module(_packages()[name])


def load(part: str) -> list[ModuleType]:
    """Import ``part`` (``config``, ``layers`` or ``seeds``) of every family that has it; importing
    it registers what it defines."""
    if part not in PARTS:
        raise ValueError(f"unknown family part {part!r}; known: {', '.join(PARTS)}")
    out = []
    for package in _packages().values():
        module = f"{package}.{part}"
        if importlib.util.find_spec(module) is not None:
            out.append(importlib.import_module(module))
    return out


def family_of(module: str) -> str:
    """The family a class defined in ``module`` belongs to (``common`` outside the families)."""
    for name, package in _packages().items():
        if module == package or module.startswith(package + "."):
            return name
    return COMMON
