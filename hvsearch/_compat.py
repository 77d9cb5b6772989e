"""Make ``import timm`` work on a CPU-only torch.

timm imports ``torchvision.ops.misc``. Every torchvision wheel on PyPI is linked against CUDA, so
on a CPU build of torch its compiled extension does not load, and torchvision's meta
registrations then fail with ``operator torchvision::nms does not exist``, taking ``import timm``
down with them. When (and only when) the extension cannot be loaded, we declare the schemas of
the two ops those registrations touch. hvsearch uses none of torchvision's compiled ops; calling
them on such a machine still raises. Where the extension loads (CUDA torch, matching CPU build)
this does nothing.

Must run before anything imports torchvision or timm, in every process (Ray workers included):
``hvsearch.layers``, ``hvsearch.models``, ``hvsearch.cost.flops`` and ``hvsearch.train`` call it on import
(and ``import hvsearch`` installs a hook that calls it before torchvision is first imported).
"""
from __future__ import annotations

import importlib.util
import os

_done = False


def _torchvision_ops_loaded(torch) -> bool:
    try:
        return hasattr(torch.ops.torchvision, "nms")
    except (AttributeError, RuntimeError):
        return False


def patch_torchvision() -> None:
    global _done
    if _done:
        return
    _done = True
    import torch

    if _torchvision_ops_loaded(torch):
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    pkg_dir = list(spec.submodule_search_locations)[0]
    for name in os.listdir(pkg_dir):
        if name.startswith("_C") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(pkg_dir, name))
            except (OSError, RuntimeError):
                break
            if _torchvision_ops_loaded(torch):
                return
            break
    lib = torch.library.Library("torchvision", "FRAGMENT")
    # kept alive for the life of the process; the schemas are all timm's imports need
    patch_torchvision._lib = lib
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already defined by an earlier partial load
            pass


class _PatchBeforeTorchvision:
    """Meta-path hook: apply :func:`patch_torchvision` the moment torchvision is first imported,
    so ``import hvsearch; import timm`` works without ``import hvsearch`` importing torch."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            uninstall_import_hook()
            patch_torchvision()
        return None  # let the regular finders import it


_hook = _PatchBeforeTorchvision()


def install_import_hook() -> None:
    import sys

    if "torchvision" not in sys.modules and _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)


def uninstall_import_hook() -> None:
    import sys

    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)
