"""The typed architecture spec: one frozen description that builds a model and names it.

A :class:`ModelSpec` is a stem, four stages and a head at a build resolution. Each
:class:`StageSpec` has a depth, a width, a downsampling part, a token mixer and a channel FFN,
plus the block structure (norm, conditional position encoding, layer scale) that defaults to what
the stage's mixer family uses. Specs round-trip through plain dicts, YAML and JSON; their
:func:`arch_id` hashes the canonical form, so two specs that build the same network share an id.

Nothing here imports torch: the search space freezes samples into specs and validates them before
any model is built.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from hvsearch.arch.components import (
    Component,
    StageContext,
    parse_component,
    require,
    require_norm,
)
from hvsearch.errors import SpecError
from hvsearch.values import is_int, is_number

NUM_STAGES = 4
PYRAMID_STRIDES = (4, 8, 16, 32)
TOTAL_STRIDE = PYRAMID_STRIDES[-1]  # input sizes are multiples of it (every stage map an integer size)
DROP_PATH_MODES = ("global", "per_stage")
#: The largest architecture a spec may describe: far beyond any published model, small enough
#: that a slip (a depth of 10^8, an exponent too many) is an error, not a build that allocates or
#: loops for ever. ``scale`` refuses members beyond them too.
MAX_DEPTH, MAX_WIDTH, MAX_RESOLUTION = 1000, 65_536, 8192


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``downsample`` then ``depth`` blocks of ``[pos-enc] → mixer → ffn`` at ``width``.

    ``norm``, ``norm_eps``, ``pos_kernel`` (depthwise conv position encoding before the mixer,
    0 = none) and ``layer_scale`` (initial value, 0 = off) default to the mixer's family choices.
    """

    depth: int
    width: int
    mixer: Component
    ffn: Component
    downsample: Component
    norm: str | None = None
    norm_eps: float | None = None
    pos_kernel: int | None = None
    layer_scale: float | None = None

    def __post_init__(self) -> None:
        derived = {
            "norm": self.mixer.default_norm,
            "norm_eps": self.mixer.default_norm_eps,
            "pos_kernel": self.mixer.default_pos_kernel,
            "layer_scale": self.mixer.default_layer_scale,
        }
        for name, value in derived.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("norm_eps", "layer_scale"):  # canonical float form (see Component)
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "StageSpec":
        if not isinstance(data, Mapping):
            raise SpecError(path, "must be a mapping", data)
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in allowed:
                raise SpecError(f"{path}.{key}", f"is not a stage field ({', '.join(sorted(allowed))})",
                                data[key])
        for key in ("depth", "width", "mixer", "ffn"):
            if key not in data:
                raise SpecError(f"{path}.{key}", "is required", None, show_value=False)
        kw: dict[str, Any] = {
            "mixer": parse_component("mixer", data["mixer"], f"{path}.mixer"),
            "ffn": parse_component("ffn", data["ffn"], f"{path}.ffn"),
            "downsample": parse_component("downsample", data.get("downsample", "none"),
                                          f"{path}.downsample"),
        }
        for key in ("depth", "width", "pos_kernel"):
            if key in data and data[key] is not None:
                kw[key] = _int(data[key], f"{path}.{key}")
        for key in ("norm_eps", "layer_scale"):
            if key in data and data[key] is not None:
                kw[key] = _float(data[key], f"{path}.{key}")
        if data.get("norm") is not None:
            kw["norm"] = data["norm"]
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "width": self.width,
            "downsample": self.downsample.to_dict(),
            "mixer": self.mixer.to_dict(),
            "ffn": self.ffn.to_dict(),
            "norm": self.norm,
            "norm_eps": self.norm_eps,
            "pos_kernel": self.pos_kernel,
            "layer_scale": self.layer_scale,
        }


@dataclass(frozen=True)
class ModelSpec:
    """A whole backbone. ``resolution`` is the build size (square); models run at any size the
    total stride divides. ``name`` is a label and is not part of the architecture id."""

    stem: Component
    stages: tuple[StageSpec, ...]
    head: Component
    resolution: int = 224
    num_classes: int = 1000
    in_chans: int = 3
    drop_path_rate: float = 0.0
    drop_path_mode: str = "global"
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "drop_path_rate", float(self.drop_path_rate))

    # ---- derived facts -----------------------------------------------------------------------
    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(s.mixer.family for s in self.stages)

    def stage_contexts(self, resolution: int | tuple[int, int] | None = None) -> list[StageContext]:
        """The context of every stage (feature sizes at ``resolution``, default the build one)."""
        res = self.resolution if resolution is None else resolution
        h, w = (res, res) if isinstance(res, int) else res
        h, w = self.stem.out_size(h), self.stem.out_size(w)
        stride, in_dim = self.stem.stride, self.stem_width
        out = []
        for i, st in enumerate(self.stages):
            h, w = st.downsample.out_size(h), st.downsample.out_size(w)
            stride *= st.downsample.stride
            out.append(StageContext(index=i, dim=st.width, in_dim=in_dim, height=h, width=w,
                                    stride=stride, depth=st.depth, num_stages=len(self.stages)))
            in_dim = st.width
        return out

    @property
    def stem_width(self) -> int:
        return getattr(self.stem, "width", self.stages[0].width)

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> "ModelSpec":
        """Check every rule; return self so that ``spec.validate()`` chains. Raises SpecError."""
        require(len(self.stages) == NUM_STAGES, "stages", f"must list exactly {NUM_STAGES} stages",
                len(self.stages))
        require(isinstance(self.resolution, int) and 0 < self.resolution <= MAX_RESOLUTION, "resolution",
                f"must be a positive integer <= {MAX_RESOLUTION}", self.resolution)
        require(is_int(self.num_classes) and self.num_classes >= 0, "num_classes",
                "must be an integer >= 0 (0: no classifier, the pooled features come out)", self.num_classes)
        require(self.in_chans >= 1, "in_chans", "must be >= 1", self.in_chans)
        require(0.0 <= self.drop_path_rate < 1.0, "drop_path_rate", "must be in [0, 1)",
                self.drop_path_rate)
        require(self.drop_path_mode in DROP_PATH_MODES, "drop_path_mode",
                f"must be one of {', '.join(DROP_PATH_MODES)}", self.drop_path_mode)
        self.stem.check(None, "stem")
        require(1 <= self.stem_width <= MAX_WIDTH, "stem.width", f"must be in [1, {MAX_WIDTH}]", self.stem_width)
        require(self.resolution % PYRAMID_STRIDES[-1] == 0, "resolution",
                f"must be a multiple of the total stride {PYRAMID_STRIDES[-1]}", self.resolution)
        ctxs = self.stage_contexts()
        for ctx, st in zip(ctxs, self.stages):
            p = ctx.path
            require(1 <= st.depth <= MAX_DEPTH, f"{p}.depth", f"must be in [1, {MAX_DEPTH}]", st.depth)
            require(1 <= st.width <= MAX_WIDTH, f"{p}.width", f"must be in [1, {MAX_WIDTH}]", st.width)
            require(ctx.stride == PYRAMID_STRIDES[ctx.index], f"{p}.downsample",
                    f"must bring the stage to stride {PYRAMID_STRIDES[ctx.index]} "
                    f"(stem stride {self.stem.stride} times the downsampling strides), "
                    f"but the stage is at stride {ctx.stride}; downsample type", st.downsample.type)
            require_norm(st.norm, f"{p}.norm")
            require(st.norm_eps > 0, f"{p}.norm_eps", "must be > 0", st.norm_eps)
            require(st.pos_kernel == 0 or st.pos_kernel % 2 == 1, f"{p}.pos_kernel",
                    "must be 0 (off) or an odd kernel size", st.pos_kernel)
            require(st.layer_scale >= 0, f"{p}.layer_scale", "must be >= 0 (0 = off)", st.layer_scale)
            st.downsample.check(ctx, f"{p}.downsample")
            st.mixer.check(ctx, f"{p}.mixer")
            st.ffn.check(ctx, f"{p}.ffn")
        self.head.check(ctxs[-1], "head")
        return self

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name} if self.name else {}
        out.update({
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "drop_path_rate": self.drop_path_rate,
            "drop_path_mode": self.drop_path_mode,
            "stem": self.stem.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "head": self.head.to_dict(),
        })
        return out

    @classmethod
    def from_dict(cls, data: Any, validate: bool = True) -> "ModelSpec":
        if not isinstance(data, Mapping):
            raise SpecError("", "an architecture must be a mapping with stem, stages and head", data)
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in allowed:
                raise SpecError(key, f"is not an architecture field ({', '.join(sorted(allowed))})",
                                data[key])
        for key in ("stem", "stages", "head"):
            if key not in data:
                raise SpecError(key, "is required", None, show_value=False)
        stages = data["stages"]
        if not isinstance(stages, (list, tuple)):
            raise SpecError("stages", "must be a list of stage mappings", stages)
        kw: dict[str, Any] = {
            "stem": parse_component("stem", data["stem"], "stem"),
            "stages": tuple(StageSpec.from_dict(s, f"stages.{i}") for i, s in enumerate(stages)),
            "head": parse_component("head", data["head"], "head"),
        }
        for key in ("resolution", "num_classes", "in_chans"):
            if key in data:
                kw[key] = _int(data[key], key)
        if "drop_path_rate" in data:
            kw["drop_path_rate"] = _float(data["drop_path_rate"], "drop_path_rate")
        for key in ("drop_path_mode", "name"):
            if key in data:
                if not isinstance(data[key], str):
                    raise SpecError(key, "must be a string", data[key])
                kw[key] = data[key]
        spec = cls(**kw)
        return spec.validate() if validate else spec

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_yaml(cls, text: str) -> "ModelSpec":
        from hvsearch.yamlio import load_yaml

        data = load_yaml(text, SpecError, where="the architecture")
        if isinstance(data, Mapping) and "arch" in data and "stages" not in data:
            data = data["arch"]  # a results file (best.yaml) wraps the spec with its scores
        return cls.from_dict(data)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        from hvsearch.yamlio import load_json

        data = load_json(text, SpecError, where="the architecture")
        if isinstance(data, Mapping) and "arch" in data and "stages" not in data:
            data = data["arch"]
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        from hvsearch.yamlio import read_text

        p = Path(path)
        text = read_text(p, "architecture file", SpecError)
        try:
            return cls.from_json(text) if p.suffix == ".json" else cls.from_yaml(text)
        except SpecError as e:
            if not str(e).startswith(str(p)):
                e.args = (f"{p}: {e.args[0]}",)
            raise

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json() if p.suffix == ".json" else self.to_yaml())
        return p

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    @property
    def arch_id(self) -> str:
        return arch_id(self)

    @property
    def file_stem(self) -> str:
        """The name (else the arch id) as a file name: no folders, nothing but ``[A-Za-z0-9_.-]``,
        at most 100 characters; what the commands that write an architecture's files name them."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name or self.arch_id).strip("._") or self.arch_id
        return stem[:100]


def arch_id(spec: ModelSpec) -> str:
    """Stable 12-hex id of the architecture: a hash of its canonical JSON (name excluded)."""
    canon = spec.to_dict()
    canon.pop("name", None)
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _int(value: Any, path: str) -> int:
    if not is_int(value):
        raise SpecError(path, "must be an integer", value)
    return value


def _float(value: Any, path: str) -> float:
    if not is_number(value):
        raise SpecError(path, "must be a number", value)
    return float(value)

