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
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from hvsearch.arch import ModelSpec, StageContext, StageSpec
from hvsearch.layers import LayerScale2d, build, get_module, make_norm
from hvsearch.layers.common import DropPath


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
        else:
            self.norm1 = make_norm(stage.norm, dim, stage.norm_eps)
            self.mixer = mixer_cls(stage.mixer, dim, ctx, shared)
            self.ls1 = LayerScale2d(dim, stage.layer_scale) if stage.layer_scale else nn.Identity()
        self.has_ffn = stage.ffn.type != "none"
        if self.has_ffn:
            self.norm2 = make_norm(stage.norm, dim, stage.norm_eps)
            self.ffn = build("ffn", stage.ffn, dim, ctx)
            self.ls2 = LayerScale2d(dim, stage.layer_scale) if stage.layer_scale else nn.Identity()
        self.drop_path = drop

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
        # One module shared by every block of the stage (e.g. CMT's relative position bias).
        self.shared = mixer_cls.build_shared(stage.mixer, stage.width, ctx)
        self.blocks = nn.Sequential(*[Block(stage, dataclasses.replace(ctx, block=i), self.shared, dp)
                                      for i, dp in enumerate(dprs)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            from torch.utils.checkpoint import checkpoint_sequential
            return checkpoint_sequential(self.blocks, len(self.blocks), x, use_reentrant=False)
        return self.blocks(x)


class HybridBackbone(nn.Module):
    """A backbone built from a validated :class:`ModelSpec`.

    Args:
        spec: the architecture (validated here).
        num_classes: override ``spec.num_classes`` (0 = no classifier, pooled features out).
        features_only: return the list of pyramid maps of ``out_indices`` instead of logits.
        out_indices: which of the 4 stages to return in features-only mode.
        drop_path_rate: override ``spec.drop_path_rate``.
    """

    def __init__(self, spec: ModelSpec, num_classes: int | None = None, features_only: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3), drop_path_rate: float | None = None,
                 in_chans: int | None = None):
        super().__init__()
        changes = {k: v for k, v in (("num_classes", num_classes), ("drop_path_rate", drop_path_rate),
                                     ("in_chans", in_chans)) if v is not None}
        spec = spec.replace(**changes).validate() if changes else spec.validate()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.features_only = features_only
        self.out_indices = tuple(out_indices)
        self.stem = build("stem", spec.stem, spec.in_chans)
        ctxs = spec.stage_contexts()
        self.stages = nn.ModuleList()
        self.feature_info = []
        for ctx, st, dprs in zip(ctxs, spec.stages, drop_path_rates(spec)):
            self.stages.append(Stage(st, ctx, ctx.in_dim, dprs))
            self.feature_info.append({"num_chs": st.width, "reduction": ctx.stride, "module": f"stages.{ctx.index}"})
        if features_only:
            self.feature_info = [self.feature_info[i] for i in self.out_indices]
            self.head = None
            self.num_features = spec.stages[-1].width
        else:
            self.head = build("head", spec.head, spec.stages[-1].width, spec.num_classes)
            self.num_features = self.head_hidden_size = self.head.num_features

    # ---- timm conventions --------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # stage-shared tables (position biases) are registered first under `stages.i.shared`
        return {n for n, _ in self.named_parameters() if ".shared." in n or ".ls1." in n or ".ls2." in n}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)

    # ---- forward -----------------------------------------------------------------------------
    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output map (the pyramid), strides 4, 8, 16, 32."""
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            feats = self.forward_intermediates(x)
            return [feats[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))


def build_model(spec: ModelSpec, **kwargs) -> HybridBackbone:
    return HybridBackbone(spec, **kwargs)
