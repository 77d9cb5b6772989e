"""A search-space file: what to search, how to train each candidate, how to search, on what.

    name: hybrid              # default study name (default: the file's stem)
    description: ...          # optional, free text
    data:  {...}              # hvsearch.train.DataConfig fields (default: the synthetic set); a
                              # relative root is relative to this file's folder
    train: {...}              # hvsearch.train.TrainConfig fields: the proxy training of a trial
    search:
      sampler: tpe            # tpe | random | nsga2
      sampler_options: {}     # keyword arguments of the Optuna sampler (e.g. n_startup_trials)
      seed: 0                 # null = not seeded
      objectives: [accuracy]  # or [accuracy, flops] / [accuracy, params] (multi-objective)
      trials: 12              # trained architectures (invalid draws are recorded, not counted)
      time_budget: 10m        # no new trial starts after this (s, or 90s / 10m / 2h); null = none
      asha: {grace_period: 1, reduction_factor: 2}   # max_t is train.epochs
      prescreen: {score: synflow, keep: 0.5, pool: 4}  # optional: a zero-cost score ranks each pool
                              # of `pool` draws, the best `keep` fraction trains, the rest is
                              # recorded PRUNED (status skipped) with its score
    resources:
      cpus_per_trial: 1
      gpus_per_trial: 0       # fractions share a GPU (0.25 = four trials per GPU)
      max_concurrent: 2       # trials at once (null = as many as the resources allow)
    constraints:
      max_params: 3M          # plain numbers or K / M / G suffixes
      max_flops: 100M         # multiply-adds
      resolution: 224         # where FLOPs are counted (default: arch.resolution)
    arch: {...}               # the architecture space (hvsearch.space.arch); resolution,
                              # num_classes and in_chans come from train and data

Every rule is checked when the file is loaded; a broken file raises
:class:`~hvsearch.errors.SpaceError` naming the key path, the rule and the value.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from hvsearch.errors import HVSearchError, SpaceError
from hvsearch.space.arch import ArchSpace, parse_arch
from hvsearch.values import is_int, is_number

#: A study's name (a space's ``name``, ``--study``): it becomes a file and a folder name.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

#: Sanity bounds (far above any real search; a slip is an error at once, not a hang or overflow)
MAX_TRIALS = 1_000_000
MAX_SECONDS = 365 * 24 * 3600
MAX_CPUS = 4096
MAX_GPUS = 1024
MAX_COUNT = 10**15  # params or FLOPs

SAMPLERS = ("tpe", "random", "nsga2")
# the zero-cost scores of hvsearch.zerocost (named here so that loading a space needs no torch;
# a test keeps the two lists equal)
PRESCREEN_SCORES = ("synflow", "naswot", "grad_norm", "snip", "params", "flops")
OBJECTIVES = {"accuracy": "max", "flops": "min", "params": "min", "latency": "min"}
SECTIONS = ("name", "description", "data", "train", "search", "resources", "constraints", "latency", "arch")
TOTAL_STRIDE = 32


@dataclass(frozen=True)
class Prescreen:
    """``search.prescreen``: rank each pool of ``pool`` admitted draws by a zero-cost ``score``
    (on one ``batch_size`` batch of the training data) and train the best ``keep`` fraction."""

    score: str = "synflow"
    keep: float = 0.5
    pool: int = 4
    batch_size: int = 64

    @property
    def kept(self) -> int:
        """Candidates trained out of each full pool: ceil(keep · pool)."""
        return max(1, math.ceil(self.keep * self.pool - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "keep": self.keep, "pool": self.pool, "batch_size": self.batch_size}


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = 0
    objectives: tuple[str, ...] = ("accuracy",)
    trials: int = 12
    time_budget: float | None = None
    grace_period: int = 1
    reduction_factor: float = 2
    prescreen: Prescreen | None = None


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_concurrent: int | None = None


@dataclass(frozen=True)
class LatencySettings:
    """``latency:``: where and how a draw's latency is measured (:mod:`hvsearch.latency`), for
    the ``latency`` objective and ``constraints.max_latency_ms``. ``resolution`` None: the
    deployment resolution, i.e. the one the architecture is built for in ``arch`` (its
    ``resolution`` knob, else train.resolution), not the proxy's cost resolution."""

    device: str = "cpu"
    runtime: str = "torch"
    batch: int = 1
    threads: int = 1
    resolution: int | None = None
    repeats: int = 20
    warmup: int = 5

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Constraints:
    max_params: int | None = None
    max_flops: int | None = None
    resolution: int | None = None  # None: the architecture's build resolution
    max_latency_ms: float | None = None

    def violations(self, params: int, flops: int) -> list[str]:
        out = []
        if self.max_params is not None and params > self.max_params:
            out.append(f"params {human(params)} exceed constraints.max_params {human(self.max_params)}")
        if self.max_flops is not None and flops > self.max_flops:
            out.append(f"FLOPs {human(flops)} exceed constraints.max_flops {human(self.max_flops)}")
        return out

    def latency_violations(self, latency_ms: float) -> list[str]:
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            return [f"latency {latency_ms:.3g} ms (median) exceeds constraints.max_latency_ms {self.max_latency_ms:g}"]
        return []

    def describe(self) -> str:
        parts = []
        if self.max_params is not None:
            parts.append(f"params <= {human(self.max_params)}")
        if self.max_flops is not None:
            parts.append(f"FLOPs <= {human(self.max_flops)}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Space:
    """A loaded, validated space file."""

    name: str
    arch: ArchSpace
    search: SearchSettings
    resources: Resources
    constraints: Constraints
    train: Any  # hvsearch.train.TrainConfig
    data: Any  # hvsearch.train.DataConfig
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    latency: LatencySettings | None = None  # set when the latency objective or constraint is used

    @property
    def cost_resolution(self) -> int | None:
        return self.constraints.resolution

    def fingerprint(self) -> str:
        """Hash of what defines the study's results (architectures, training, data, objectives,
        constraints); budgets, resources and the sampler may change between runs of a study."""
        keep = {k: self.raw.get(k) for k in ("arch", "constraints")}
        keep["train"] = self.train.to_dict()
        # the data root as the file wrote it: anchoring a relative root to the file's folder must
        # not change the study's identity (nor moving a project folder with its data)
        raw_data = self.raw.get("data")
        keep["data"] = {**self.data.to_dict(),
                        "root": raw_data.get("root") if isinstance(raw_data, Mapping) else self.data.root}
        keep["objectives"] = list(self.search.objectives)
        if self.latency is not None:  # where latency is measured defines its values
            keep["latency"] = self.latency.to_dict()
        blob = json.dumps(keep, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, **changes: Any) -> "Space":
        """A copy with search/resources settings replaced (``trials=...``, ``seed=...``, ...)."""
        import dataclasses

        search = {k: v for k, v in changes.items() if k in _field_names(SearchSettings)}
        res = {k: v for k, v in changes.items() if k in _field_names(Resources)}
        rest = set(changes) - set(search) - set(res)
        if rest:
            raise TypeError(f"unknown overrides {sorted(rest)}")
        new_search = _check_search(dataclasses.replace(self.search, **search))
        # the latency settings follow whether anything uses them (e.g. `run --objectives`)
        used = "latency" in new_search.objectives or self.constraints.max_latency_ms is not None
        latency = (self.latency or LatencySettings()) if used else None
        return dataclasses.replace(self, search=new_search, latency=latency,
                                   resources=_check_resources(dataclasses.replace(self.resources, **res)))


def _field_names(cls) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


# ---- loading ------------------------------------------------------------------------------------

def load_space(path: str | Path) -> Space:
    """Read and validate a space file; SpaceError (message prefixed with the file) if broken."""
    from hvsearch.yamlio import read_text

    p = Path(path)
    text = read_text(p, "space file", SpaceError)
    try:
        return parse_space(text, source=str(p), default_name=p.stem, folder=p.parent)
    except SpaceError as e:
        e.file = str(p)
        e.args = (f"{p}: {e.args[0]}",)
        raise


def parse_space(text: str, source: str = "<string>", default_name: str = "space",
                folder: str | Path | None = None) -> Space:
    """Parse and validate a space; a relative ``data.root`` is taken relative to ``folder``
    (the file's folder; default the current one) and stored absolute."""
    from hvsearch.yamlio import load_yaml

    data = load_yaml(text, SpaceError)
    if not isinstance(data, Mapping):
        raise SpaceError("", "a space file must be a mapping with (at least) an `arch` section", data)
    for key in data:
        if key not in SECTIONS:
            raise SpaceError(str(key), f"is not a section of a space file ({', '.join(SECTIONS)})", data[key])
    if "arch" not in data:
        raise SpaceError("arch", "is required (the architecture space)", None, show_value=False)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name) or ".." in name:
        # the study's name (and its file and folder): the same rule as --study's
        given = "name" in data
        raise SpaceError("name", "must be a study name: letters, digits, `_`, `-` and `.` (up to 128, starting "
                         "with a letter or digit, no `..`)" + ("" if given else
                         f"; the file has no `name:`, so its file name {name!r} was used: add a `name:`"), name)
    if not isinstance(data.get("description", ""), str):
        raise SpaceError("description", "must be a string", data["description"])
    train, data_cfg = _train_and_data(data)
    data_cfg = data_cfg.anchored(Path.cwd() if folder is None else folder)
    search = _parse_search(data.get("search", {}), train)
    resources = _parse_resources(data.get("resources", {}))
    defaults = _arch_defaults(train, data_cfg)
    arch = parse_arch(data["arch"], "arch", defaults)
    _check_arch_vs_data(arch, defaults)
    constraints = _parse_constraints(data.get("constraints", {}), arch)
    latency = _parse_latency(data.get("latency"), search, constraints)
    return Space(name=name, arch=arch, search=search, resources=resources, constraints=constraints,
                 train=train, data=data_cfg, source=source, raw=dict(data), latency=latency)


def _arch_defaults(train: Any, data_cfg: Any) -> dict[str, Any]:
    """What the train and data sections fix about every architecture: it is built at the proxy's
    input size (rules like "region <= the feature size" hold at that size), for the data's classes
    and channels (so that costs and ``constraints`` count the real stem and head)."""
    from hvsearch.train.sources import data_shape

    num_classes, in_chans = data_shape(data_cfg)
    return {"resolution": train.resolution, "num_classes": num_classes, "in_chans": in_chans}


def _train_and_data(data: Mapping[str, Any]):
    from hvsearch.train.config import DataConfig, TrainConfig

    out = []
    for key, cls in (("train", TrainConfig), ("data", DataConfig)):
        section = data.get(key)
        if section is None:
            out.append(cls())
            continue
        if not isinstance(section, Mapping):
            raise SpaceError(key, f"must be a mapping of {cls.__name__} fields", section)
        try:
            out.append(cls.from_dict(dict(section), path=key))
        except SpaceError:
            raise
        except HVSearchError as e:  # the config's own error: keep its path, rule and value
            if all(hasattr(e, a) for a in ("path", "rule", "value")):
                raise SpaceError(e.path, e.rule, e.value) from None
            raise SpaceError(key, str(e), None, show_value=False) from None
    return out


def _check_arch_vs_data(arch: ArchSpace, data_defaults: Mapping[str, Any]) -> None:
    from hvsearch.space.params import Fixed

    source = {"resolution": "train.resolution", "num_classes": "the data set's class count",
              "in_chans": "the data's channel count"}
    for name in ("num_classes", "in_chans", "resolution"):
        param = arch.fields.get(name)
        if name in data_defaults and param is not None and not isinstance(param, Fixed):
            raise SpaceError(f"arch.{name}", f"is set by {source[name]} and cannot be searched", None,
                             show_value=False)
        if name in data_defaults and isinstance(param, Fixed) and param.value != data_defaults[name]:
            raise SpaceError(f"arch.{name}", f"must equal {source[name]} ({data_defaults[name]}); "
                             "leave it out to take it from there", param.value)
    res = arch.fields.get("resolution")
    if res is not None and isinstance(res, Fixed) and res.value % TOTAL_STRIDE:
        raise SpaceError("arch.resolution", f"must be a multiple of the total stride {TOTAL_STRIDE}",
                         res.value)


# ---- sections -----------------------------------------------------------------------------------

def _mapping(data: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SpaceError(path, "must be a mapping", data)
    for key in data:
        if key not in allowed:
            raise SpaceError(f"{path}.{key}", f"is not a {path} setting ({', '.join(allowed)})", data[key])
    return data


def _parse_search(data: Any, train: Any) -> SearchSettings:
    keys = ("sampler", "sampler_options", "seed", "objectives", "trials", "time_budget", "asha", "prescreen")
    d = _mapping(data, "search", keys)
    kw: dict[str, Any] = {}
    if "sampler" in d:
        kw["sampler"] = d["sampler"]
    if "sampler_options" in d:
        kw["sampler_options"] = d["sampler_options"]
    if "seed" in d:
        kw["seed"] = d["seed"]
    if "objectives" in d:
        obj = d["objectives"]
        obj = [obj] if isinstance(obj, str) else obj
        if not isinstance(obj, list):
            raise SpaceError("search.objectives", "must be a list of objective names", obj)
        kw["objectives"] = tuple(obj)
    if "trials" in d:
        kw["trials"] = d["trials"]
    if "time_budget" in d:
        kw["time_budget"] = parse_duration(d["time_budget"], "search.time_budget")
    asha = _mapping(d.get("asha"), "search.asha", ("grace_period", "reduction_factor"))
    if "grace_period" in asha:
        kw["grace_period"] = asha["grace_period"]
    if "reduction_factor" in asha:
        kw["reduction_factor"] = asha["reduction_factor"]
    if d.get("prescreen") is not None:
        pre = _mapping(d["prescreen"], "search.prescreen", ("score", "keep", "pool", "batch_size"))
        kw["prescreen"] = Prescreen(**pre)
    settings = _check_search(SearchSettings(**kw))
    epochs = getattr(train, "epochs", None)
    if isinstance(epochs, int) and settings.grace_period > epochs:
        raise SpaceError("search.asha.grace_period", f"must be <= train.epochs {epochs}",
                         settings.grace_period)
    return settings


def _check_search(s: SearchSettings) -> SearchSettings:
    if s.sampler not in SAMPLERS:
        raise SpaceError("search.sampler", f"must be one of {', '.join(SAMPLERS)}", s.sampler)
    if not isinstance(s.sampler_options, Mapping):
        raise SpaceError("search.sampler_options", "must be a mapping of sampler arguments", s.sampler_options)
    _check_sampler_options(s.sampler, s.sampler_options)
    if s.seed is not None and (not is_int(s.seed) or not 0 <= s.seed < 2**31):
        raise SpaceError("search.seed", "must be an integer in [0, 2^31) or null", s.seed)
    obj = s.objectives
    for i, name in enumerate(obj):
        if not isinstance(name, str):
            raise SpaceError(f"search.objectives[{i}]", f"must be one of {', '.join(OBJECTIVES)}", name)
    if not obj or obj[0] != "accuracy":
        raise SpaceError("search.objectives", "must start with accuracy", list(obj))
    for i, name in enumerate(obj):
        if name not in OBJECTIVES:
            raise SpaceError(f"search.objectives[{i}]", f"must be one of {', '.join(OBJECTIVES)}", name)
    if len(obj) > 2 or len(set(obj)) != len(obj):
        raise SpaceError("search.objectives", "must be [accuracy], [accuracy, flops], [accuracy, params] or "
                         "[accuracy, latency]", list(obj))
    if not is_int(s.trials) or not 1 <= s.trials <= MAX_TRIALS:
        raise SpaceError("search.trials", f"must be an integer in [1, {MAX_TRIALS}]", s.trials)
    if s.time_budget is not None and not (is_number(s.time_budget) and 0 < s.time_budget <= MAX_SECONDS):
        raise SpaceError("search.time_budget", "must be a positive duration of at most a year", s.time_budget)
    if not is_int(s.grace_period) or s.grace_period < 1:
        raise SpaceError("search.asha.grace_period", "must be a positive integer (epochs)", s.grace_period)
    if not is_number(s.reduction_factor) or not 1 < s.reduction_factor <= 100:
        raise SpaceError("search.asha.reduction_factor", "must be a number in (1, 100]", s.reduction_factor)
    if s.prescreen is not None:
        _check_prescreen(s.prescreen, s.sampler)
    return s


def _check_prescreen(p: Prescreen, sampler: str) -> None:
    if p.score not in PRESCREEN_SCORES:
        raise SpaceError("search.prescreen.score", f"must be one of {', '.join(PRESCREEN_SCORES)}", p.score)
    if not is_number(p.keep) or not 0 < p.keep < 1:
        raise SpaceError("search.prescreen.keep", "must be a fraction in (0, 1) (of each pool to train)", p.keep)
    if not is_int(p.pool) or p.pool < 2:
        raise SpaceError("search.prescreen.pool", "must be an integer >= 2 (draws ranked together)", p.pool)
    if not is_int(p.batch_size) or p.batch_size < 2:
        raise SpaceError("search.prescreen.batch_size", "must be an integer >= 2 (NASWOT compares images; "
                         "train-mode BatchNorm needs two)", p.batch_size)
    if p.kept >= p.pool:
        raise SpaceError("search.prescreen.keep", f"must leave some of a pool of {p.pool} untrained "
                         f"(ceil(keep * pool) < pool)", p.keep)


def _check_sampler_options(sampler: str, options: Mapping[str, Any]) -> None:
    """Reject sampler options the Optuna sampler does not take (without importing Optuna here:
    the names are checked when the sampler is made; here only the form)."""
    for key in options:
        if not isinstance(key, str) or key == "seed":
            raise SpaceError(f"search.sampler_options.{key}", "must be a sampler argument other than "
                             "seed (set search.seed)", options[key])


def _parse_resources(data: Any) -> Resources:
    d = _mapping(data, "resources", ("cpus_per_trial", "gpus_per_trial", "max_concurrent"))
    return _check_resources(Resources(**d))


def _check_resources(r: Resources) -> Resources:
    if not is_number(r.cpus_per_trial) or not 0 < r.cpus_per_trial <= MAX_CPUS:
        raise SpaceError("resources.cpus_per_trial", f"must be a number in (0, {MAX_CPUS}]", r.cpus_per_trial)
    if not is_number(r.gpus_per_trial) or not 0 <= r.gpus_per_trial <= MAX_GPUS:
        raise SpaceError("resources.gpus_per_trial", f"must be a number in [0, {MAX_GPUS}] (fractions share a GPU)",
                         r.gpus_per_trial)
    if r.gpus_per_trial > 1 and r.gpus_per_trial != int(r.gpus_per_trial):
        raise SpaceError("resources.gpus_per_trial", "must be a fraction <= 1 or a whole number",
                         r.gpus_per_trial)
    if r.max_concurrent is not None and (not is_int(r.max_concurrent) or not 1 <= r.max_concurrent <= MAX_TRIALS):
        raise SpaceError("resources.max_concurrent", f"must be an integer in [1, {MAX_TRIALS}] or null",
                         r.max_concurrent)
    return r


def _parse_constraints(data: Any, arch: ArchSpace) -> Constraints:
    d = _mapping(data, "constraints", ("max_params", "max_flops", "resolution", "max_latency_ms"))
    kw: dict[str, Any] = {}
    if d.get("max_latency_ms") is not None:
        value = d["max_latency_ms"]
        if not is_number(value) or not 0 < value <= MAX_SECONDS * 1e3:
            raise SpaceError("constraints.max_latency_ms", "must be a positive number of milliseconds", value)
        kw["max_latency_ms"] = float(value)
    for key in ("max_params", "max_flops"):
        if d.get(key) is not None:
            value = parse_count(d[key], f"constraints.{key}")
            if not 1 <= value <= MAX_COUNT:
                raise SpaceError(f"constraints.{key}", f"must be in [1, {MAX_COUNT:.0e}] (no architecture has "
                                 "fewer; none trains with more)", d[key])
            kw[key] = value
    if d.get("resolution") is not None:
        res = d["resolution"]
        if not is_int(res) or res < TOTAL_STRIDE or res % TOTAL_STRIDE:
            raise SpaceError("constraints.resolution", f"must be a positive multiple of the total stride "
                             f"{TOTAL_STRIDE}", res)
        kw["resolution"] = res
    return Constraints(**kw)


def _parse_latency(data: Any, search: SearchSettings, constraints: Constraints) -> LatencySettings | None:
    used = "latency" in search.objectives or constraints.max_latency_ms is not None
    if data is None:
        return LatencySettings() if used else None
    d = _mapping(data, "latency", tuple(_field_names(LatencySettings)))
    if not used:
        raise SpaceError("latency", "is set but nothing uses it (add latency to search.objectives or set "
                         "constraints.max_latency_ms)", dict(d))
    from hvsearch.latency import DEVICES, RUNTIMES

    m = LatencySettings(**d)
    if m.device not in DEVICES:
        raise SpaceError("latency.device", f"must be one of {', '.join(DEVICES)}", m.device)
    if m.runtime not in RUNTIMES:
        raise SpaceError("latency.runtime", f"must be one of {', '.join(RUNTIMES)}", m.runtime)
    for key, least, most in (("batch", 1, 65536), ("threads", 1, MAX_CPUS), ("repeats", 5, 10000),
                             ("warmup", 0, 10000)):
        value = getattr(m, key)
        if not is_int(value) or not least <= value <= most:
            raise SpaceError(f"latency.{key}", f"must be an integer in [{least}, {most}]", value)
    if m.resolution is not None and (not is_int(m.resolution) or m.resolution < TOTAL_STRIDE
                                     or m.resolution % TOTAL_STRIDE):
        raise SpaceError("latency.resolution", f"must be a positive multiple of the total stride {TOTAL_STRIDE}",
                         m.resolution)
    return m


# ---- small value parsers ------------------------------------------------------------------------

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_count(value: Any, path: str) -> int:
    """``3000000``, ``3.0e6``, ``"3e6"``, ``"3M"``, ``"1.5G"`` → an integer count."""
    number = None
    if is_number(value):
        number = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]?)\s*", value)
        if m:
            number = float(m.group(1)) * _SUFFIX[m.group(2)]
    if number is None:
        raise SpaceError(path, "must be a count (a number, or with a K/M/G suffix like 3M)", value)
    if not math.isfinite(number) or abs(number) > MAX_COUNT:
        raise SpaceError(path, f"must be a count of at most {MAX_COUNT:.0e}", value)
    return int(number)


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: Any, path: str) -> float | None:
    """``300``, ``"90s"``, ``"10m"``, ``"1.5h"`` → seconds; None stays None."""
    if value is None:
        return None
    if is_number(value) and value > 0:
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise SpaceError(path, "must be a positive duration in seconds, or like 90s, 10m, 2h", value)


def human(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:g}"
