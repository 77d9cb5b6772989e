"""hvsearch: search and scale hybrid CNN/Transformer/MLP vision backbones.

Importing the package is cheap (no torch, Ray or Optuna): the heavy parts load with the
subpackage that needs them (``hvsearch.models``, ``hvsearch.train``, ``hvsearch.search``, ...).
"""
from hvsearch._compat import install_import_hook
from hvsearch.errors import HVSearchError

install_import_hook()  # makes timm importable on a CPU-only torch, whoever imports it first

__version__ = "0.1.0"
__all__ = ["HVSearchError", "__version__"]
