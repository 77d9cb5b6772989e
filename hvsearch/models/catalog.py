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
    crop_pct: float = 0.9  # the evaluation crop of the official scripts (timm's pretrained cfg)

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


#: timm reads the registering module's ``default_cfgs`` when a model registers (the seeds' cfgs)
default_cfgs: dict[str, dict] = {}
_WEIGHT_KEYS = ("file", "url", "hf_hub_id", "state_dict")


def pretrained_cfg(spec: ModelSpec) -> dict:
    """timm's pretrained cfg of an architecture (no weights): its input size, the pooled map at
    stride 32, normalisation (ImageNet's for 3 channels, 0.5/0.5 otherwise), the evaluation crop
    (a seed's own, else 0.9), the names of its first conv and its classifier."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    r, c = spec.resolution, spec.in_chans
    mean, std = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD) if c == 3 else ((0.5,) * c, (0.5,) * c)
    return dict(url="", num_classes=spec.num_classes, input_size=(c, r, r), pool_size=(r // 32, r // 32),
                min_input_size=(c, 32, 32), crop_pct=_crop_pct(spec), interpolation="bicubic", mean=mean, std=std,
                first_conv=_first_conv(spec), classifier="head.fc", license="apache-2.0")


def _crop_pct(spec: ModelSpec) -> float:
    seed = _SEEDS.get(spec.name)
    return seed.crop_pct if seed is not None and seed.spec.arch_id == spec.arch_id else 0.9


def _first_conv(spec: ModelSpec) -> str:
    import torch
    from torch import nn

    from hvsearch.layers import build

    with torch.device("meta"):
        stem = build("stem", spec.stem, spec.in_chans)
    return next(f"stem.{name}" for name, m in stem.named_modules() if isinstance(m, nn.Conv2d))


def _create(timm_name: str, spec: ModelSpec, pretrained: bool, kwargs: dict):
    """Build through timm's ``build_model_with_cfg``: the cfg, ``features_only`` (its feature
    wrappers; ``feature_cls="getter"`` by default, over :meth:`forward_intermediates`), and
    weights from a file of one's own (``pretrained=True, pretrained_cfg_overlay=dict(file=...)``)."""
    from timm.models import build_model_with_cfg

    from hvsearch.models.backbone import HybridBackbone

    cfg = kwargs.pop("pretrained_cfg", None) or pretrained_cfg(spec)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    if pretrained and not any(overlay.get(k) or (isinstance(cfg, dict) and cfg.get(k)) for k in _WEIGHT_KEYS):
        raise RegistryError(f"{timm_name}: hvsearch ships no pretrained weights; load your own with "
                            "pretrained=True, pretrained_cfg_overlay=dict(file='model.safetensors')")
    return build_model_with_cfg(HybridBackbone, timm_name, pretrained, pretrained_cfg=cfg,
                                pretrained_cfg_overlay=overlay, feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3), flatten_sequential=True),
                                spec=spec, **kwargs)


def _register_timm(seed: Seed) -> None:
    default_cfgs[TIMM_PREFIX + seed.name] = pretrained_cfg(seed.spec)
    register_arch(seed.name, lambda: seed.spec)


def register_arch(name: str, spec_fn: Callable[[], ModelSpec]) -> str:
    """Register an architecture in timm as ``hvs_<name>``; ``spec_fn`` runs at creation time.
    Returns the timm name. Re-registering the same name is an error."""
    timm_name = TIMM_PREFIX + name
    if hasattr(sys.modules[__name__], timm_name):
        raise RegistryError(f"{timm_name} is already registered in timm")

    def entry(pretrained: bool = False, **kwargs):
        return _create(timm_name, spec_fn(), pretrained, kwargs)

    entry.__name__ = entry.__qualname__ = timm_name
    entry.__module__ = __name__
    setattr(sys.modules[__name__], timm_name, entry)
    register_model(entry)
    return timm_name


@register_model
def hvs_arch(pretrained: bool = False, arch: "str | ModelSpec | None" = None, **kwargs):
    """Any architecture: ``timm.create_model("hvs_arch", arch="best.yaml")`` (a file, a seed name,
    ``STUDY:best`` / ``STUDY:<n>`` or a ModelSpec; see :mod:`hvsearch.arch_ref`)."""
    from hvsearch.arch_ref import resolve

    if arch is None:
        raise RegistryError("hvs_arch needs arch=<architecture file, seed name, STUDY:best or ModelSpec>")
    return _create("hvs_arch", resolve(arch), pretrained, kwargs)


def seed_names() -> list[str]:
    return list(_SEEDS)


def get_seed(name: str) -> Seed:
    key = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
    try:
        return _SEEDS[key]
    except KeyError:
        raise RegistryError(f"unknown seed {name!r}; known seeds: {', '.join(_SEEDS)}") from None
