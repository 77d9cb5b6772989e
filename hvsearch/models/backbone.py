"""The hybrid backbone: a 4-stage hierarchical network built from a :class:`ModelSpec`.

Each stage is ``downsample → depth × Block``; a block is

    x = x + pos(x)                                  (depthwise conv position encoding, optional)
    x = x + drop_path(ls1(mixer(norm1(x))))         (token mixing; any registered mixer)
    x = x + drop_path(ls2(ffn(norm2(x))))           (channel mixing; any registered FFN, or none)

with norm, position-encoding kernel and layer scale taken from the stage spec (which defaults them
to the mixer family's own choices). A mixer that owns its residual (ConvMLP's) replaces the second
line. Maps are NCHW between all parts. The model follows timm's conventions: ``forward_features``,
``forward_head``, ``feature_info`` (channels, reduction, module per pyramid level),
``reset_classifier``, and a features-only mode returning the 4 pyramid levels (strides 4–32).
"""

import dataclasses
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from timm.models._features import feature_take_indices

from hvsearch.arch import ModelSpec, StageContext, StageSpec
from hvsearch.errors import SpecError
from hvsearch.layers import LayerScale2d, build, get_module, make_norm
from hvsearch.layers.common import DropPath, init_weights


def drop_path_rates(spec: ModelSpec) -> list[list[float]]:
    """Per-block stochastic-depth rates: linear over the whole network (``global``: rate·i/(n−1))
    or restarted in every stage (``per_stage``: linspace(0, rate, depth), as ConvMLP does)."""
    rate = spec.drop_path_rate
    if spec.drop_path_mode == "per_stage":
        return [_linspace(rate, d) for d in spec.depths]
    flat = _linspace(rate, sum(spec.depths))
    out, i = [], 0
    for d in spec.depths:
        out.append(flat[i:i + d])
        i += d
    return out


def _linspace(stop: float, n: int) -> list[float]:
    # plain Python (not torch.linspace) so that models can be built on the meta device
    return [stop * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def _family_init(part: nn.Module | None, scheme: str | None) -> None:
    """``part`` re-initialised with ``scheme`` (see ``MixerModule.part_init``) when it is one of the
    common modules (a family's own part initialises itself as its code does) and a scheme is
    named."""
    if part is None or scheme is None:
        return
    if type(part).__module__ in (nn.Conv2d.__module__, "hvsearch.layers.common"):
        init_weights(part, conv=scheme, linear=scheme)


class Block(nn.Module):
    def __init__(self, stage: StageSpec, ctx: StageContext, shared: nn.Module | None, drop_path: float):
        super().__init__()
        dim = stage.width
        k = stage.pos_kernel
        self.pos = nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) if k else None
        drop = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        mixer_cls = get_module("mixer", stage.mixer.type)
        self.owns_residual = mixer_cls.owns_residual
        if self.owns_residual:
            self.mixer = mixer_cls(stage.mixer, dim, ctx, shared,
                                   norm=lambda: make_norm(stage.norm, dim, stage.norm_eps), drop_path=drop)
            self.norm1 = self.ls1 = nn.Identity()  # unused; defined for TorchScript, which compiles both paths
        else:
            self.norm1 = make_norm(stage.norm, dim, stage.norm_eps)
            self.mixer = mixer_cls(stage.mixer, dim, ctx, shared)
            self.ls1 = LayerScale2d(dim, stage.layer_scale) if stage.layer_scale else nn.Identity()
        self.has_ffn = stage.ffn.type != "none"
        if self.has_ffn:
            self.norm2 = make_norm(stage.norm, dim, stage.norm_eps)
            self.ffn = build("ffn", stage.ffn, dim, ctx)
            self.ls2 = LayerScale2d(dim, stage.layer_scale) if stage.layer_scale else nn.Identity()
        else:
            self.norm2 = self.ffn = self.ls2 = nn.Identity()  # unused (see norm1 above)
        self.drop_path = drop
        init = mixer_cls.part_init(stage.mixer)  # the mixer's family starts the parts around it
        _family_init(self.pos, init.get("pos"))
        if self.has_ffn:
            _family_init(self.ffn, init.get("ffn"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos is not None:
            x = x + self.pos(x)
        if self.owns_residual:
            x = self.mixer(x)
        else:
            x = x + self.drop_path(self.ls1(self.mixer(self.norm1(x))))
        if self.has_ffn:
            x = x + self.drop_path(self.ls2(self.ffn(self.norm2(x))))
        return x


class Stage(nn.Module):
    def __init__(self, stage: StageSpec, ctx: StageContext, in_dim: int, dprs: Sequence[float]):
        super().__init__()
        self.downsample = build("downsample", stage.downsample, in_dim, stage.width)
        mixer_cls = get_module("mixer", stage.mixer.type)
        _family_init(self.downsample, mixer_cls.part_init(stage.mixer).get("downsample"))
        # One module shared by every block of the stage (e.g. CMT's relative position bias).
        self.shared = mixer_cls.build_shared(stage.mixer, stage.width, ctx)
        self.blocks = nn.Sequential(*[Block(stage, dataclasses.replace(ctx, block=i), self.shared, dp)
                                      for i, dp in enumerate(dprs)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_sequential(self.blocks, len(self.blocks), x, use_reentrant=False)
        return self.blocks(x)


class HybridBackbone(nn.Module):
    """A backbone built from a validated :class:`ModelSpec`, with timm's model interface.

    Args:
        spec: the architecture (validated here).
        num_classes: override ``spec.num_classes`` (0 = no classifier: pooled features out).
        global_pool: ``avg`` (default), ``max`` or ``""`` (no pooling: with ``num_classes=0`` the
            head's map comes out).
        drop_path_rate: override ``spec.drop_path_rate``.
        in_chans: override ``spec.in_chans``.
        drop_rate: override the head's dropout before the classifier (timm's ``drop_rate``, which
            timm's ``train.py`` always passes).
        img_size: override ``spec.resolution``, the size the model is built for (position-bias
            tables, Hire-MLP's regions); an int or a square (h, w).

    ``num_features`` is the channel count of :meth:`forward_features` (the last stage's width),
    ``head_hidden_size`` that of the pre-logits (:meth:`forward_head` with ``pre_logits=True``):
    they differ where the head widens (CMT's 1×1 conv to 1280).
    """

    def __init__(self, spec: ModelSpec, num_classes: int | None = None, global_pool: str = "avg",
                 drop_path_rate: float | None = None, in_chans: int | None = None, drop_rate: float | None = None,
                 img_size: int | tuple[int, int] | None = None):
        super().__init__()
        changes = {k: v for k, v in (("num_classes", num_classes), ("drop_path_rate", drop_path_rate),
                                     ("in_chans", in_chans)) if v is not None}
        if drop_rate is not None:
            changes["head"] = dataclasses.replace(spec.head, dropout=float(drop_rate))
        if img_size is not None:
            h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            if h != w:
                raise SpecError("img_size", "must be square: a model is built for one square size (it runs at any "
                                "size the total stride divides)", img_size)
            changes["resolution"] = h
        spec = spec.replace(**changes).validate() if changes else spec.validate()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.stem = build("stem", spec.stem, spec.in_chans)
        first = spec.stages[0].mixer
        _family_init(self.stem, get_module("mixer", first.type).part_init(first).get("stem"))
        ctxs = spec.stage_contexts()
        self.stages = nn.Sequential()
        self.feature_info = []
        for ctx, st, dprs in zip(ctxs, spec.stages, drop_path_rates(spec)):
            self.stages.append(Stage(st, ctx, ctx.in_dim, dprs))
            self.feature_info.append({"num_chs": st.width, "reduction": ctx.stride, "module": f"stages.{ctx.index}"})
        self.num_features = spec.stages[-1].width
        self.head = build("head", spec.head, spec.stages[-1].width, spec.num_classes, global_pool=global_pool)
        self.head_hidden_size = self.head.num_features

    # ---- timm conventions --------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # stage-shared tables (position biases) are registered first under `stages.i.shared`
        return {n for n, _ in self.named_parameters() if ".shared." in n or ".ls1." in n or ".ls2." in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.blocks\.(\d+)", None),
                                                                           (r"^stages\.(\d+)", (0,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool=""`` also drops the pooling."""
        self.head.reset(num_classes, global_pool)
        self.num_classes = num_classes

    # ---- forward -----------------------------------------------------------------------------
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's interface: the stages' output maps (strides 4, 8, 16, 32) of ``indices`` (a list
        of stages, or an int n: the last n; default all) and the final features.

        Returns ``(final, intermediates)``, or only the list with ``intermediates_only``.
        ``stop_early`` stops after the last stage asked for (``final`` is then that stage's map).
        ``norm`` is accepted for the interface: the backbone has no final norm (it is the head's)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' (the backbone's maps are NCHW), got {output_fmt!r}")
        take, last = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[:last + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the classifier and pooling with
        ``prune_head``); returns the kept indices (timm's interface)."""
        take, last = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:last + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(spec: ModelSpec, features_only: bool = False, out_indices: Sequence[int] = (0, 1, 2, 3),
                feature_cls: str = "getter", **kwargs) -> nn.Module:
    """The model of ``spec`` (:class:`HybridBackbone` keyword arguments); ``features_only``
    returns the maps of the stages ``out_indices`` (strides 4–32) through timm's feature wrapper
    ``feature_cls`` (``getter``: :meth:`HybridBackbone.forward_intermediates`; ``list``, ``dict``,
    ``hook``), as ``timm.create_model(..., features_only=True)`` does."""
    model = HybridBackbone(spec, **kwargs)
    if not features_only:
        return model
    from timm.models._features import FeatureDictNet, FeatureGetterNet, FeatureHookNet, FeatureListNet

    classes = {"getter": FeatureGetterNet, "list": FeatureListNet, "dict": FeatureDictNet, "hook": FeatureHookNet}
    if feature_cls not in classes:
        raise ValueError(f"feature_cls must be one of {', '.join(classes)}, got {feature_cls!r}")
    extra = {} if feature_cls == "getter" else {"flatten_sequential": True}
    return classes[feature_cls](model, out_indices=tuple(out_indices), **extra)
