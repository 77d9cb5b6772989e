"""The architecture part of a space file, and sampling it into a :class:`~hvsearch.arch.ModelSpec`.

    arch:
      resolution: 32
      stem: {type: cmt, width: {choice: [16, 24]}}
      head: norm_pool
      stages:
        all:                                   # every stage samples these...
          depth: {int: [1, 3]}
          mixer:
            choice:                            # a mixer type, each with its own knobs
              cmt_attn: {heads: {choice: [1, 2]}}
              hire: {region: {choice: [2, 4]}}
          ffn: {type: mlp, ratio: {float: [2.0, 4.0], step: 1.0}}
          downsample: patch
        each:                                  # ...and each stage may override whole fields
          - {width: {choice: [32, 48]}}
          - {width: {choice: [64, 96]}}
          - {width: {choice: [128, 160]}}
          - {width: {choice: [192, 256]}}

``stages`` may also be a plain list of four stage mappings. A part (stem, downsample, mixer, FFN,
head) is a registered type name, ``{type: name, knob: value...}``, or ``{choice: {name: {knobs} |
null, ...}}`` (or ``{choice: [name, ...]}``): knobs under a type exist only when that type is drawn.
Knob values use :mod:`hvsearch.space.params`.

Labels (the Optuna parameter names): ``stem.width``, ``stages.2.depth``, ``stages.2.mixer.type``,
``stages.2.mixer.hire.region`` (the type is part of a knob's label when the type is drawn, so two
types' knobs of one name never clash), ``stages.*.width`` for a value shared by all stages.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from hvsearch.arch import NUM_STAGES, component_types, get_component
from hvsearch.arch.spec import MAX_DEPTH, MAX_WIDTH
from hvsearch.errors import SpaceError, SpecError
from hvsearch.space.params import Choice, Fixed, FloatRange, IntRange, Param, TrialLike, is_param_mapping, parse_param

TOP_FIELDS = {"resolution": int, "num_classes": int, "in_chans": int, "drop_path_rate": float,
              "drop_path_mode": str}
PART_FIELDS = ("stem", "head")
STAGE_FIELDS = {"depth": int, "width": int, "norm": str, "norm_eps": float, "pos_kernel": int,
                "layer_scale": float}
STAGE_PARTS = {"downsample": "downsample", "mixer": "mixer", "ffn": "ffn"}
REQUIRED_STAGE = ("depth", "width", "mixer", "ffn")


@dataclass(frozen=True)
class PartSpace:
    """A part (mixer, FFN, ...): which types may be drawn, and each type's knobs."""

    kind: str
    types: Param  # Fixed(type name) or Choice(type names)
    knobs: dict[str, dict[str, Param]]  # type -> knob -> param

    def suggest(self, trial: TrialLike, label: str, shared_label: str | None = None) -> dict[str, Any]:
        type_label = f"{shared_label if self.types.shared else label}.type"
        name = self.types.suggest(trial, type_label)
        drawn = isinstance(self.types, Choice)
        out: dict[str, Any] = {"type": name}
        for knob, param in self.knobs[name].items():
            base = shared_label if param.shared else label
            out[knob] = param.suggest(trial, f"{base}.{name}.{knob}" if drawn else f"{base}.{knob}")
        return out

    def size(self) -> int | None:
        total = 0
        for name in self.knobs:
            n = _product(p.size() for p in self.knobs[name].values())
            if n is None:
                return None
            total += n
        return total

    def continuous(self) -> list[str]:
        return [f"{t}.{k}" for t, knobs in self.knobs.items() for k, p in knobs.items() if p.size() is None]


@dataclass(frozen=True)
class StageSpace:
    fields: dict[str, Param]
    parts: dict[str, PartSpace]

    def suggest(self, trial: TrialLike, index: int) -> dict[str, Any]:
        label, shared = f"stages.{index}", "stages.*"
        out: dict[str, Any] = {}
        for name, param in self.fields.items():
            out[name] = param.suggest(trial, f"{shared if param.shared else label}.{name}")
        for name, part in self.parts.items():
            out[name] = part.suggest(trial, f"{label}.{name}", f"{shared}.{name}")
        return out


@dataclass(frozen=True)
class ArchSpace:
    fields: dict[str, Param]
    parts: dict[str, PartSpace]
    stages: tuple[StageSpace, ...]

    def suggest(self, trial: TrialLike) -> dict[str, Any]:
        """Draw one architecture as a plain spec dict (not yet validated; see :meth:`sample`)."""
        out: dict[str, Any] = {}
        for name, param in self.fields.items():
            out[name] = param.suggest(trial, name)
        for name, part in self.parts.items():
            out[name] = part.suggest(trial, name)
        out["stages"] = [st.suggest(trial, i) for i, st in enumerate(self.stages)]
        return out

    def sample(self, trial: TrialLike):
        """Draw one architecture and validate it: a ModelSpec, or SpecError naming the broken rule
        with the spec's field path (``stages.2.mixer.sr_ratio must divide ...``)."""
        from hvsearch.arch import ModelSpec

        return ModelSpec.from_dict(self.suggest(trial), validate=True)

    # ---- facts about the space ---------------------------------------------------------------
    def size(self) -> int | None:
        """Number of distinct draws (an upper bound on distinct architectures; shared values
        counted once); None when some knob is continuous."""
        sizes: list[int | None] = [p.size() for p in self.fields.values()]
        sizes += [p.size() for p in self.parts.values()]
        seen_shared: set[str] = set()
        for st in self.stages:
            for name, p in st.fields.items():
                if p.shared:
                    if name in seen_shared:
                        continue
                    seen_shared.add(name)
                sizes.append(p.size())
            for name, part in st.parts.items():
                if part.types.shared:
                    if name in seen_shared:
                        continue
                    seen_shared.add(name)
                sizes.append(part.size())
        return _product(sizes)

    def continuous(self) -> list[str]:
        names = [n for n, p in self.fields.items() if p.size() is None]
        names += [f"{n}.{c}" for n, part in self.parts.items() for c in part.continuous()]
        for i, st in enumerate(self.stages):
            names += [f"stages.{i}.{n}" for n, p in st.fields.items() if p.size() is None]
            names += [f"stages.{i}.{n}.{c}" for n, part in st.parts.items() for c in part.continuous()]
        return names

    def mixer_types(self) -> list[str]:
        return sorted({t for st in self.stages for t in st.parts["mixer"].knobs})

    def ffn_types(self) -> list[str]:
        return sorted({t for st in self.stages for t in st.parts["ffn"].knobs})


def _product(sizes) -> int | None:
    out = 1
    for s in sizes:
        if s is None:
            return None
        out *= s
    return out


# ---- parsing ------------------------------------------------------------------------------------

def parse_arch(data: Any, path: str = "arch", defaults: Mapping[str, Any] | None = None) -> ArchSpace:
    """Parse the ``arch`` section. ``defaults`` fills top-level fields the file leaves out
    (``resolution``, ``num_classes``, ``in_chans`` from the data section)."""
    if not isinstance(data, Mapping):
        raise SpaceError(path, "must be a mapping with stem, stages and head", data)
    known = set(TOP_FIELDS) | set(PART_FIELDS) | {"stages"}
    for key in data:
        if key not in known:
            raise SpaceError(f"{path}.{key}", f"is not an arch field ({', '.join(sorted(known))})", data[key])
    for key in ("stem", "stages", "head"):
        if key not in data:
            raise SpaceError(f"{path}.{key}", "is required", None, show_value=False)
    fields: dict[str, Param] = {}
    for name, tp in TOP_FIELDS.items():
        if name in data:
            fields[name] = parse_param(data[name], tp, f"{path}.{name}")
        elif defaults and name in defaults:
            fields[name] = Fixed(defaults[name])
    parts = {name: parse_part(name, data[name], f"{path}.{name}") for name in PART_FIELDS}
    stages = tuple(_parse_stage(*entry) for entry in _stage_entries(data["stages"], f"{path}.stages"))
    _check_shared(stages, f"{path}.stages")
    return ArchSpace(fields=fields, parts=parts, stages=stages)


def _check_shared(stages: tuple[StageSpace, ...], path: str) -> None:
    """A value shared by stages (``shared: true``) is one Optuna parameter: every stage that shares
    it must define it alike, or the first stage's definition would silently decide for the others
    (and a type one stage lacks would break the draw)."""
    first: dict[str, tuple[int, Param]] = {}

    def same(label: str, index: int, param: Param, where: str) -> None:
        if label not in first:
            first[label] = (index, param)
            return
        other, theirs = first[label]
        if theirs != param:
            raise SpaceError(f"{path}.{index}.{where}", f"is shared (shared: true, the parameter {label}) but "
                             f"stage {other} defines it as {theirs.describe()}; a shared value must be defined "
                             f"alike in every stage that shares it", param.describe())

    for i, st in enumerate(stages):
        for name, param in st.fields.items():
            if param.shared:
                same(f"stages.*.{name}", i, param, name)
        for name, part in st.parts.items():
            if part.types.shared:
                same(f"stages.*.{name}.type", i, part.types, f"{name}.type")
            drawn = isinstance(part.types, Choice)
            for t, knobs in part.knobs.items():
                for knob, param in knobs.items():
                    if param.shared:
                        same(f"stages.*.{name}.{t + '.' if drawn else ''}{knob}", i, param, f"{name}.{knob}")


def parse_part(kind: str, data: Any, path: str, allow_shared: bool = False) -> PartSpace:
    known = component_types(kind)
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise SpaceError(path, f"must be a {kind} type name, {{type: name, knob: value...}} or "
                         f"{{choice: {{name: {{knobs}}, ...}}}} ({kind} types: {', '.join(known)})", data)
    if "choice" in data:
        extra = [k for k in data if k not in ("choice", "shared")]
        if extra:
            raise SpaceError(f"{path}.{extra[0]}", f"is not allowed next to `choice`: knobs belong under "
                             f"their {kind} type (choice: {{<type>: {{{extra[0]}: ...}}}})", data[extra[0]])
        shared = data.get("shared", False)
        if not isinstance(shared, bool):
            raise SpaceError(f"{path}.shared", "must be true or false", shared)
        if shared and not allow_shared:
            raise SpaceError(f"{path}.shared", "is only meaningful inside arch.stages", shared)
        options = data["choice"]
        if isinstance(options, list):
            for i, name in enumerate(options):
                if not isinstance(name, str):
                    raise SpaceError(f"{path}.choice[{i}]", f"must be a {kind} type name", name)
            if len(set(options)) != len(options):
                raise SpaceError(f"{path}.choice", "must not repeat a type", options)
            options = {name: None for name in options}
        if not isinstance(options, Mapping) or not options:
            raise SpaceError(f"{path}.choice", f"must map {kind} types to their knobs "
                             f"({{hire: {{region: ...}}, cmt_attn: null}}) or list type names", options)
        knobs = {}
        for name, sub in options.items():
            knobs[name] = _parse_knobs(kind, name, sub, f"{path}.choice.{name}", allow_shared)
        types: Param = Choice(tuple(knobs), shared=shared)
        if len(knobs) == 1:  # a one-way choice is a fixed type: keep labels short
            types = Fixed(next(iter(knobs)), shared=shared)
        return PartSpace(kind, types, knobs)
    if "type" not in data:
        raise SpaceError(path, f"needs `type: <{kind}>` or `choice: {{<{kind}>: {{knobs}}}}`; knobs "
                         f"cannot stand without their {kind} ({kind} types: {', '.join(known)})", dict(data))
    name = data["type"]
    if is_param_mapping(name):
        raise SpaceError(f"{path}.type", f"cannot be sampled; write `choice: {{<{kind}>: {{knobs}}, ...}}` "
                         "instead of `type`", name)
    rest = {k: v for k, v in data.items() if k != "type"}
    return PartSpace(kind, Fixed(name), {name: _parse_knobs(kind, name, rest, path, allow_shared, type_path=f"{path}.type")})


def _parse_knobs(kind: str, name: Any, data: Any, path: str, allow_shared: bool,
                 type_path: str | None = None) -> dict[str, Param]:
    if not isinstance(name, str):
        raise SpaceError(type_path or path, f"must be a {kind} type name", name)
    try:
        cls = get_component(kind, name)
    except SpecError:
        raise SpaceError(type_path or path, f"must be a registered {kind} type "
                         f"({', '.join(component_types(kind))})", name) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SpaceError(path, f"must map knobs of {kind} {name!r} to values (or be empty)", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Param] = {}
    for knob, value in data.items():
        if knob == "type":
            raise SpaceError(f"{path}.type", "is given by the key above it; remove it", value)
        if knob not in fields:
            raise SpaceError(f"{path}.{knob}", f"is not a knob of {kind} {name!r} "
                             f"(knobs: {', '.join(sorted(fields)) or 'none'})", value)
        tp = hints[knob]
        tp = tuple if typing.get_origin(tp) is tuple else tp
        out[knob] = parse_param(value, tp, f"{path}.{knob}", allow_shared=allow_shared)
    return out


def _stage_entries(data: Any, path: str) -> list[tuple[dict[str, Any], dict[str, str], str]]:
    """The four stages as (merged raw mapping, field -> source path, the stage's path)."""
    if isinstance(data, list):
        if len(data) != NUM_STAGES:
            raise SpaceError(path, f"must list exactly {NUM_STAGES} stages", len(data))
        out = []
        for i, st in enumerate(data):
            if not isinstance(st, Mapping):
                raise SpaceError(f"{path}[{i}]", "must be a mapping of stage fields", st)
            out.append((dict(st), {k: f"{path}[{i}].{k}" for k in st}, f"{path}[{i}]"))
        return out
    if not isinstance(data, Mapping):
        raise SpaceError(path, f"must be a list of {NUM_STAGES} stages or a mapping with `all` "
                         "(fields for every stage) and/or `each` (a list of per-stage fields)", data)
    for key in data:
        if key not in ("all", "each"):
            raise SpaceError(f"{path}.{key}", "is not a stages key (all, each)", data[key])
    common = data.get("all", {})
    if not isinstance(common, Mapping):
        raise SpaceError(f"{path}.all", "must be a mapping of stage fields", common)
    each = data.get("each", [{}] * NUM_STAGES)
    if not isinstance(each, list) or len(each) != NUM_STAGES:
        raise SpaceError(f"{path}.each", f"must be a list of exactly {NUM_STAGES} mappings", each)
    out = []
    for i, st in enumerate(each):
        st = {} if st is None else st
        if not isinstance(st, Mapping):
            raise SpaceError(f"{path}.each[{i}]", "must be a mapping of stage fields", st)
        merged = {**common, **st}
        paths = {k: (f"{path}.each[{i}].{k}" if k in st else f"{path}.all.{k}") for k in merged}
        out.append((merged, paths, f"{path}.each[{i}]"))
    return out


def _largest(param: Param) -> Any:
    """The largest value ``param`` can draw (None if its values do not compare)."""
    values = {Fixed: lambda q: [q.value], Choice: lambda q: list(q.choices), IntRange: lambda q: [q.high],
              FloatRange: lambda q: [q.high]}[type(param)](param)
    try:
        return max(values)
    except TypeError:
        return None


def _parse_stage(raw: dict[str, Any], paths: dict[str, str], where: str) -> StageSpace:
    known = set(STAGE_FIELDS) | set(STAGE_PARTS)
    for key in raw:
        if key not in known:
            raise SpaceError(paths[key], f"is not a stage field ({', '.join(sorted(known))})", raw[key])
    for key in REQUIRED_STAGE:
        if key not in raw:
            raise SpaceError(f"{where}.{key}", "is required in every stage", None, show_value=False)
    fields = {name: parse_param(raw[name], tp, paths[name], allow_shared=True)
              for name, tp in STAGE_FIELDS.items() if name in raw}
    for name, limit in (("depth", MAX_DEPTH), ("width", MAX_WIDTH)):
        # every draw above it would be invalid: refused here, once, instead of draw after draw
        largest = _largest(fields[name])
        if largest is not None and largest > limit:
            raise SpaceError(paths[name], f"must not offer values above {limit} (an architecture's largest "
                             f"stage {name})", largest)
    parts = {name: parse_part(kind, raw.get(name, "none"), paths.get(name, f"{where}.{name}"), allow_shared=True)
             for name, kind in STAGE_PARTS.items()}
    return StageSpace(fields=fields, parts=parts)
