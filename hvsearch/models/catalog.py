"""The seed catalog: published architectures as specs, with the figures they must reproduce.

Each family's ``seeds.py`` (:mod:`hvsearch.families`) registers its seeds with :func:`register_seed`:
a spec plus the paper's and the official code's params/FLOPs. Every seed is also registered in
timm's model registry as ``hvs_<seed>`` so that ``timm.create_model("hvs_cmt_s")`` works once
``hvsearch.models`` is imported.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from timm.models import register_model

from hvsearch.arch import ModelSpec
from hvsearch.errors import RegistryError
from hvsearch.seed_names import SEEDS

TIMM_PREFIX = "hvs_"


@dataclass(frozen=True)
class Seed:
    """A published architecture and its reference figures (params in M, FLOPs in GMACs).

    ``code_*`` are the official implementation's figures measured with fvcore at ``spec.resolution``
    (None where no official code exists); ``paper_*`` are the paper's. ``notes`` records where we
    follow the code over the paper and any choice the paper leaves open.
    """

    name: str
    family: str
    spec: ModelSpec
    paper_params_m: float
    paper_gflops: float
    code_params_m: float | None = None
    code_gflops: float | None = None
    notes: str = ""

    @property
    def ref_params_m(self) -> float:
        return self.code_params_m if self.code_params_m is not None else self.paper_params_m

    @property
    def ref_gflops(self) -> float:
        return self.code_gflops if self.code_gflops is not None else self.paper_gflops

    @property
    def ref_source(self) -> str:
        return "code" if self.code_params_m is not None else "paper"

    @property
    def tolerances(self) -> tuple[float, float]:
        """Allowed relative deviation (params, FLOPs) from the reference figures."""
        return (0.01, 0.03) if self.ref_source == "code" else (0.05, 0.05)


_SEEDS: dict[str, Seed] = {}


def register_seed(name: str, family: str, spec_fn: Callable[[], ModelSpec], **ref) -> Seed:
    if name in _SEEDS:
        raise RegistryError(f"seed {name!r} is already registered")
    if name not in SEEDS.get(family, ()):
        raise RegistryError(f"seed {name!r} of family {family!r} is not in the family's SEEDS "
                            f"(hvsearch/families/{family}/__init__.py, where commands check names without loading "
                            "the models): add it")
    spec = spec_fn().replace(name=name).validate()
    seed = Seed(name=name, family=family, spec=spec, **ref)
    _SEEDS[name] = seed
    _register_timm(seed)
    return seed


def _register_timm(seed: Seed) -> None:
    register_arch(seed.name, lambda: seed.spec)


def register_arch(name: str, spec_fn: Callable[[], ModelSpec]) -> str:
    """Register an architecture in timm as ``hvs_<name>``; ``spec_fn`` runs at creation time.
    Returns the timm name. Re-registering the same name is an error."""
    timm_name = TIMM_PREFIX + name
    if hasattr(sys.modules[__name__], timm_name):
        raise RegistryError(f"{timm_name} is already registered in timm")

    def entry(pretrained: bool = False, **kwargs):
        from hvsearch.models.backbone import HybridBackbone

        if pretrained:
            raise RegistryError(f"{timm_name}: hvsearch ships no pretrained weights")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's own
            kwargs.pop(key, None)
        return HybridBackbone(spec_fn(), **kwargs)

    entry.__name__ = entry.__qualname__ = timm_name
    entry.__module__ = __name__
    setattr(sys.modules[__name__], timm_name, entry)
    register_model(entry)
    return timm_name


@register_model
def hvs_arch(pretrained: bool = False, arch: "str | ModelSpec | None" = None, **kwargs):
    """Any architecture: ``timm.create_model("hvs_arch", arch="best.yaml")`` (a file, a seed name,
    ``STUDY:best`` / ``STUDY:<n>`` or a ModelSpec; see :mod:`hvsearch.arch_ref`)."""
    from hvsearch.models.backbone import HybridBackbone
    from hvsearch.arch_ref import resolve

    if arch is None:
        raise RegistryError("hvs_arch needs arch=<architecture file, seed name, STUDY:best or ModelSpec>")
    if pretrained:
        raise RegistryError("hvs_arch: hvsearch ships no pretrained weights")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return HybridBackbone(resolve(arch), **kwargs)


def seed_names() -> list[str]:
    return list(_SEEDS)


def get_seed(name: str) -> Seed:
    key = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
    try:
        return _SEEDS[key]
    except KeyError:
        raise RegistryError(f"unknown seed {name!r}; known seeds: {', '.join(_SEEDS)}") from None
