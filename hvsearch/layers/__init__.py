"""nn.Modules for every registered part config; importing this registers them all.

The common parts are in :mod:`hvsearch.layers.common`; each family's in its ``layers`` module
(:mod:`hvsearch.families`), loaded here. Mixers and heads derive the base classes of
:mod:`hvsearch.layers.base`. Layers never import models.
"""
from hvsearch._compat import patch_torchvision

patch_torchvision()

from hvsearch import families  # noqa: E402
from hvsearch.layers import common  # noqa: E402,F401  (registration)
from hvsearch.layers.common import LayerScale2d, init_weights, make_norm  # noqa: E402
from hvsearch.layers.registry import build, get_module, module_types, register_module  # noqa: E402

families.load("layers")

__all__ = ["LayerScale2d", "build", "get_module", "init_weights", "make_norm", "module_types",
           "register_module"]
