"""nn.Modules for every registered part config; importing this registers them all.

Families live one per file (cmt, hire, container, transxnet, convmlp) and share only
:mod:`hvsearch.layers.common`. Layers never import models.
"""
from hvsearch._compat import patch_torchvision

patch_torchvision()

from hvsearch.layers import cmt, common, container, convmlp, hire, transxnet  # noqa: E402,F401  (registration)
from hvsearch.layers.common import LayerScale2d, init_weights, make_norm  # noqa: E402
from hvsearch.layers.registry import build, get_module, module_types, register_module  # noqa: E402

__all__ = ["LayerScale2d", "build", "get_module", "init_weights", "make_norm", "module_types",
           "register_module"]
