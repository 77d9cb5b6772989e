"""Module registry: each part config type (see :mod:`hvsearch.arch`) maps to one nn.Module class.

Constructor conventions, by kind:

* ``stem``:       ``Cls(cfg, in_chans)``; output channels ``cfg.width``
* ``downsample``: ``Cls(cfg, in_dim, out_dim)``
* ``mixer``:      a :class:`~hvsearch.layers.base.MixerModule`, ``Cls(cfg, dim, ctx, shared)``
  (``shared`` from ``Cls.build_shared``; ``owns_residual``: see the base class).
* ``ffn``:        ``Cls(cfg, dim, ctx)``
* ``head``:       a :class:`~hvsearch.layers.base.HeadModule`, ``Cls(cfg, in_dim, num_classes)``.
"""
from __future__ import annotations

from torch import nn

from hvsearch.arch import KINDS, component_types
from hvsearch.errors import RegistryError
from hvsearch.layers.base import HeadModule, MixerModule

_MODULES: dict[str, dict[str, type[nn.Module]]] = {kind: {} for kind in KINDS}
_BASES = {"mixer": MixerModule, "head": HeadModule}


def register_module(kind: str, name: str):
    """Class decorator: the module that builds part config ``(kind, name)``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name not in component_types(kind):
            raise RegistryError(f"no {kind} config named {name!r} is registered in hvsearch.arch; "
                                f"register the config before its module")
        base = _BASES.get(kind)
        if base is not None and not issubclass(cls, base):
            raise RegistryError(f"{kind} module {cls.__qualname__} must derive {base.__module__}.{base.__qualname__}")
        if name in _MODULES[kind]:
            raise RegistryError(f"{kind} module {name!r} is already registered by "
                                f"{_MODULES[kind][name].__qualname__}")
        _MODULES[kind][name] = cls
        return cls

    return wrap


def module_types(kind: str) -> list[str]:
    return sorted(_MODULES[kind])


def get_module(kind: str, name: str) -> type[nn.Module]:
    try:
        return _MODULES[kind][name]
    except KeyError:
        raise RegistryError(f"no module is registered for {kind} {name!r}; "
                            f"known: {', '.join(module_types(kind))}") from None


def build(kind: str, cfg, *args, **kwargs) -> nn.Module:
    return get_module(kind, cfg.type)(cfg, *args, **kwargs)
