"""The contracts of a family's modules: a token mixer, a classifier head, and the roles the
zero-cost scores must know.

Every registered ``mixer`` module derives :class:`MixerModule` and every ``head`` module
:class:`HeadModule`; :func:`~hvsearch.layers.registry.register_module` refuses one that does not,
so the backbone reads the contract from the class instead of guessing with ``getattr``.

Zero-cost scores treat two kinds of layer specially: naswot reads activation codes at the inputs
of rectifying non-linearities, synflow drops the statistics of normalisations. PyTorch's own
(``nn.ReLU``, ``nn.GELU``, ``nn.BatchNorm2d``, ``nn.LayerNorm`` ...) are known; a family that brings
its own declares it by deriving :class:`Gate` or :class:`Norm`.
"""
from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn


class MixerModule(nn.Module, metaclass=abc.ABCMeta):
    """A token mixer on NCHW maps: ``Cls(cfg, dim, ctx, shared)``, ``forward(x) -> x`` (same shape).

    * ``build_shared(cfg, dim, ctx)``: one module shared by all the blocks of a stage (e.g. CMT's
      relative position bias), passed to each block's mixer as ``shared``; default none.
    * ``owns_residual = True``: the mixer receives the block's input un-normalised and returns the
      block's new state itself; it is then built as ``Cls(cfg, dim, ctx, shared, norm=...,
      drop_path=...)`` with ``norm()`` making the stage's norm and ``drop_path`` the block's
      stochastic-depth module (ConvMLP's blocks).
    """

    owns_residual: ClassVar[bool] = False

    @staticmethod
    def build_shared(cfg, dim: int, ctx) -> nn.Module | None:
        return None

    @staticmethod
    def part_init(cfg) -> dict[str, str]:
        """How the shared parts around this mixer start, as its family's code starts them: part ->
        :func:`~hvsearch.layers.common.init_weights` scheme, for ``pos`` (the block's position
        conv), ``ffn`` (a per-token MLP, ``mlp``), ``downsample`` (into the stage) and ``stem``
        (read from the first stage's mixer). Only parts built by the common modules are
        re-initialised (a family's own FFN or stem initialises itself); a part not named keeps
        the common modules' initialisation."""
        return {}

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...


GLOBAL_POOLS = ("avg", "max", "")


class HeadModule(nn.Module, metaclass=abc.ABCMeta):
    """A classifier head: ``Cls(cfg, in_dim, num_classes, global_pool="avg")``.

    :meth:`features` turns the last stage's map into the head's own map of ``num_features``
    channels (a norm, or CMT's 1×1 conv to 1280), ``global_pool`` pools it (``avg``, ``max``, or
    ``""``: none, the map comes out), then dropout and the linear classifier ``fc`` (none when
    ``num_classes`` is 0, so the pooled features come out). A subclass sets ``num_features`` and
    ``drop`` and calls :meth:`reset` in its ``__init__``."""

    # set by the subclass / reset: num_features (int), drop and fc (modules), global_pool (str);
    # not declared as class annotations, which TorchScript would read as attribute types

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) map → (B, num_features, H, W) before pooling."""

    def reset(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none) and, if given, a new pooling."""
        from hvsearch.errors import SpecError
        from hvsearch.layers.common import init_weights

        pool = getattr(self, "global_pool", "avg") if global_pool is None else global_pool
        if pool not in GLOBAL_POOLS:
            raise SpecError("global_pool", f"must be one of {', '.join(map(repr, GLOBAL_POOLS))}", pool)
        if not pool and num_classes > 0:
            raise SpecError("global_pool", "'' (no pooling) needs num_classes=0: a classifier needs pooled "
                            "features", pool)
        self.global_pool = pool
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self.fc)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            return x.mean((2, 3))
        if self.global_pool == "max":
            return x.amax((2, 3))
        return x

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(self.features(x))
        return x if pre_logits else self.fc(self.drop(x))


class Gate(nn.Module):
    """A rectifying non-linearity of a family's own: naswot reads ``input > 0`` at its input as the
    activation code (as for ``nn.ReLU``/``nn.GELU``/``nn.SiLU``)."""


class Norm(nn.Module):
    """A normalisation of a family's own with an affine ``weight``/``bias`` along ``channel_dim``:
    synflow replaces it by that affine (as for BatchNorm/LayerNorm/GroupNorm)."""

    channel_dim: ClassVar[int] = 1
