"""Typed, torch-free configs for the parts of a backbone, chosen by name from registries.

A part of an architecture (a stem, a downsampling layer, a token mixer, a channel FFN, a head) is a
frozen dataclass subclass of :class:`Component`, registered under a ``kind`` and a ``type`` name:

    mixer: {type: cmt_attn, heads: 4, sr_ratio: 2}

resolves to ``get_component("mixer", "cmt_attn")(heads=4, sr_ratio=2)``. Parsing rejects unknown
keys and wrong types; :meth:`Component.check` then applies the rules that depend on where the part
sits (its stage's width and feature size), raising :class:`~hvsearch.errors.SpecError` with the
field path, the rule and the value. The matching ``nn.Module`` for each config is registered
separately in :mod:`hvsearch.layers` so that this module never imports torch.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from hvsearch.errors import RegistryError, SpecError
from hvsearch.values import is_int, is_number

KINDS = ("stem", "downsample", "mixer", "ffn", "head")
NORMS = ("layernorm", "batchnorm", "groupnorm", "none")

_REGISTRY: dict[str, dict[str, type["Component"]]] = {kind: {} for kind in KINDS}


@dataclass(frozen=True)
class StageContext:
    """Where a part sits: what its rules and its module need to know about the stage.

    ``height``/``width`` are the stage's feature size at the spec's build resolution; ``in_dim``
    is the channel count entering the stage (stem output or the previous stage).
    """

    index: int
    dim: int
    in_dim: int
    height: int
    width: int
    stride: int
    depth: int
    num_stages: int = 4
    block: int = 0  # index of the block within the stage (for per-block schedules, e.g. shifts)

    @property
    def path(self) -> str:
        return f"stages.{self.index}"


@dataclass(frozen=True)
class Component:
    """Base of every registered part config. Subclasses add typed fields with defaults."""

    kind: ClassVar[str] = ""
    type: ClassVar[str] = ""
    # Block-structure defaults a mixer brings to its stage when the stage does not set them.
    default_norm: ClassVar[str] = "layernorm"
    default_norm_eps: ClassVar[float] = 1e-5
    default_pos_kernel: ClassVar[int] = 0
    default_layer_scale: ClassVar[float] = 0.0
    # Stride (down-sampling factor) of a stem or downsample part.
    stride: ClassVar[int] = 1
    # A mixer whose module owns the block's residual (and its own norms); its module class says
    # the same (MixerModule.owns_residual; the test-suite checks that they agree).
    owns_residual: ClassVar[bool] = False

    # Analytic cost (hvsearch.cost.analytic): a part adds its module's layers to a Tally, with the
    # feature size ``size`` (h, w) at the counting resolution, by kind:
    #   stem        cost(t, in_chans, size) -> size after it
    #   downsample  cost(t, in_dim, out_dim, size) -> size after it
    #   mixer       cost(t, dim, ctx, size, norm) (``norm``: the stage's; a mixer that owns its
    #               residual counts its own norms) and optionally shared_cost(t, dim, ctx), the
    #               module its stage shares between blocks (``ctx``: build sizes)
    #   ffn         cost(t, dim, ctx, size)
    #   head        cost(t, in_dim, num_classes, size)
    # A part without ``cost`` is counted on its built model instead (hvsearch.cost.count_spec).
    # A part that has ``cost`` must count all its module's parameters and multiply-adds: a mixer
    # whose module builds a stage-shared part needs ``shared_cost`` too, and ``owns_residual``
    # must match the module's. The test-suite holds every registered part to fvcore.

    def __post_init__(self) -> None:
        # `ratio=8` and `ratio=8.0` are the same architecture: store floats as floats so that
        # the canonical form, and with it the arch id, does not depend on how a value was typed.
        for name, tp in _float_fields(type(self)):
            value = getattr(self, name)
            if is_int(value):
                object.__setattr__(self, name, float(value))

    def check(self, ctx: StageContext | None, path: str) -> None:
        """Raise SpecError if this part cannot sit at ``ctx``. Override to add rules."""

    def out_size(self, size: int) -> int:
        """Feature size after this part for an input of ``size`` pixels along one axis."""
        return size

    def width_multiple(self) -> int:
        """The stage width must be a multiple of this (e.g. the number of heads)."""
        return 1

    def fixed_export_axes(self) -> frozenset[str]:
        """Input axes (``batch``, ``height``, ``width``) an exported graph of this part cannot
        leave open. :mod:`hvsearch.export` does not try to make them dynamic (each attempt it
        makes is still checked in ONNX Runtime); default: none."""
        return frozenset()

    def fit(self, ctx: StageContext) -> "Component":
        """A version of this part valid at ``ctx`` (knobs bound to the feature size adjusted,
        e.g. a reduction ratio that no longer divides it); ``self`` when nothing must change."""
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def family(self) -> str:
        """The family package that defines this part (``common`` for the shared ones)."""
        from hvsearch.families import family_of

        return family_of(type(self).__module__)


@functools.lru_cache(maxsize=None)
def _float_fields(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, float) for f in dataclasses.fields(cls) if hints[f.name] is float)


def register_component(kind: str):
    """Class decorator: register a Component subclass under ``kind`` and its ``type``."""
    if kind not in _REGISTRY:
        raise RegistryError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")

    def wrap(cls: type[Component]) -> type[Component]:
        if not cls.type:
            raise RegistryError(f"{cls.__name__} has no `type` name to register under")
        if cls.type in _REGISTRY[kind]:
            raise RegistryError(
                f"{kind} {cls.type!r} is already registered by {_REGISTRY[kind][cls.type].__qualname__}"
            )
        cls.kind = kind
        _REGISTRY[kind][cls.type] = cls
        return cls

    return wrap


def component_types(kind: str) -> list[str]:
    return sorted(_REGISTRY[kind])


def get_component(kind: str, name: str, path: str = "") -> type[Component]:
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(component_types(kind))
        raise SpecError(path or kind, f"must be a registered {kind} type ({known})", name) from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against a field annotation — int, float (an int is accepted), bool, str,
    ``tuple[T, ...]``, a fixed ``tuple[T1, T2]`` or ``X | None`` — and return it in that type;
    SpecError naming ``path`` otherwise. Shared by part configs and the train/data configs."""
    args = typing.get_args(tp)
    if type(None) in args:
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if not isinstance(value, (list, tuple)):
                raise SpecError(path, "must be a list", value)
            return tuple(coerce(v, args[0], f"{path}.{i}") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            kind = "numbers" if all(a in (int, float) for a in args) else "values"
            raise SpecError(path, f"must be a list of {len(args)} {kind}", value)
        return tuple(coerce(v, t, f"{path}.{i}") for i, (v, t) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, "must be true or false", value)
        return value
    if tp is int:
        if not is_int(value):
            raise SpecError(path, "must be an integer", value)
        return value
    if tp is float:
        if not is_number(value):
            raise SpecError(path, "must be a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, "must be a string", value)
        return value
    raise TypeError(f"unsupported field type {_type_name(tp)} at {path}")


def parse_component(kind: str, data: Any, path: str) -> Component:
    """Build a Component from its mapping form ``{type: name, knob: value, ...}``."""
    if isinstance(data, Component):
        if data.kind != kind:
            raise SpecError(path, f"must be a {kind}", data.type)
        return data
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"must be a mapping with a `type` key naming a {kind}", data)
    if "type" not in data:
        raise SpecError(path, f"needs a `type` key naming a {kind} ({', '.join(component_types(kind))})",
                        dict(data))
    cls = get_component(kind, data["type"], f"{path}.type")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key == "type":
            continue
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise SpecError(f"{path}.{key}", f"is not a knob of {kind} {cls.type!r} (knobs: {known})",
                            value)
        kwargs[key] = coerce(value, hints[key], f"{path}.{key}")
    return cls(**kwargs)


# ---- small rule helpers shared by the part configs -------------------------------------------

def require(cond: bool, path: str, rule: str, value: Any) -> None:
    if not cond:
        raise SpecError(path, rule, value)


def require_positive(value: int | float, path: str) -> None:
    require(value > 0, path, "must be > 0", value)


def hidden_width(dim: int, ratio: float) -> int:
    """The hidden width of an expansion by ``ratio`` at width ``dim``: ``int(dim · ratio)``, rounded
    down as every family's official code does. The one home of this rule: configs check with it
    (:func:`require_hidden`) and modules build with it."""
    return int(dim * ratio)


#: The widest hidden layer a part may ask for (an FFN at ratio 4 of the widest stage, 65,536):
#: a ratio of 1e6 is a slip, not a layer to allocate.
MAX_HIDDEN = 4 * 65_536


def require_hidden(ratio: float, dim: int, path: str, what: str = "hidden width") -> None:
    require_positive(ratio, path)
    require(hidden_width(dim, ratio) >= 1, path, f"gives a {what} below 1 at stage width {dim}", ratio)
    require(hidden_width(dim, ratio) <= MAX_HIDDEN, path,
            f"gives a {what} above {MAX_HIDDEN} at stage width {dim}", ratio)


def require_norm(value: str, path: str) -> None:
    require(value in NORMS, path, f"must be one of {', '.join(NORMS)}", value)
