"""CMT's compound scaling as a tool: depth α^φ, width β^φ, resolution γ^φ.

CMT (Guo et al., CVPR 2022, §3.4) scales a seed with one coefficient φ under α·β^1.5·γ² ≈ 2.5,
so that FLOPs grow about 2.5^φ, and names α=1.2, β=1.3, γ=1.15. (Their product is 2.35, not 2.5;
the paper's own CMT-Ti/XS/S/B do not follow β exactly either: see the README table.)

Rounding is explicit:

* **depth** of every stage: ``round`` (default: unbiased, keeps FLOPs near 2.5^φ) or ``ceil``
  (biased upwards by up to a block per stage, but from CMT-S with φ=1 it reproduces CMT-B's depths
  4-4-20-4, where ``round`` gives 4-4-19-4) of ``d·α^φ``. A stage that would get 0 blocks is an
  error, not a silent 1.
* **width** of every stage and of the stem: the nearest multiple of a divisor that keeps every
  constraint valid — the lcm of what the stage's mixer needs (heads, attention groups) and 8 if all
  the seed's widths are multiples of 8 (CMT-Ti's and -XS's are not, so they keep the plain
  constraint) — and never more than 10% below ``w·β^φ`` (timm's ``make_divisible`` rule).
* **resolution**: the nearest multiple of the model's total stride (32), at least 32.
* **knobs bound to the feature size** (CMT's reduction ratio, Hire-MLP's region and shift,
  Container's key/value pooling) are re-fitted to the new feature sizes; every change is reported.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hvsearch.arch import TOTAL_STRIDE, ModelSpec
from hvsearch.arch.spec import MAX_DEPTH, MAX_RESOLUTION, MAX_WIDTH
from hvsearch.errors import ScalingError, SpecError

DEPTH_MODES = ("ceil", "round")
# The largest member ``scale`` builds is the largest spec (MAX_DEPTH, MAX_WIDTH, MAX_RESOLUTION):
# a typo in phi (50 for 5) is an error naming the limit instead of an attempt to allocate petabytes.
TARGET_BASE = 2.5  # FLOPs per unit of φ that the constraint α·β^1.5·γ² ≈ 2.5 aims for


@dataclass(frozen=True)
class ScalingRule:
    alpha: float = 1.2
    beta: float = 1.3
    gamma: float = 1.15
    depth_mode: str = "round"
    min_width_ratio: float = 0.9

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 1.0):
                raise ScalingError(f"{name} must be >= 1 (a scaling base), got {v!r}")
        if self.depth_mode not in DEPTH_MODES:
            raise ScalingError(f"depth_mode must be one of {', '.join(DEPTH_MODES)}, got {self.depth_mode!r}")

    @property
    def flops_base(self) -> float:
        """α·β^1.5·γ²: the FLOPs growth per unit of φ the constants imply (width enters as β^1.5
        in CMT's rule, between linear and quadratic as its mixers are)."""
        return self.alpha * self.beta ** 1.5 * self.gamma ** 2


@dataclass(frozen=True)
class Member:
    """One scaled model: its spec and what rounding changed."""

    phi: float
    spec: ModelSpec
    exact_depths: tuple[float, ...]
    exact_widths: tuple[float, ...]
    exact_resolution: float
    adjustments: tuple[str, ...] = field(default=())


def round_depth(exact: float, mode: str) -> int:
    # 1e-9 keeps 3·1.2^0 = 3.0000000001 from ceiling to 4
    return math.ceil(exact - 1e-9) if mode == "ceil" else int(math.floor(exact + 0.5))


def round_width(exact: float, divisor: int, min_ratio: float = 0.9) -> int:
    """Nearest multiple of ``divisor`` (at least one), bumped up if it falls below
    ``min_ratio·exact``."""
    new = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if new < min_ratio * exact:
        new += divisor
    return new


def snap_resolution(exact: float, stride: int = TOTAL_STRIDE) -> int:
    return max(stride, int(round(exact / stride)) * stride)


def scale(seed: ModelSpec, phi: float, rule: ScalingRule = ScalingRule()) -> Member:
    """Scale ``seed`` by ``phi`` under ``rule``; the result is validated."""
    if not math.isfinite(phi):
        raise ScalingError(f"phi must be a finite number, got {phi!r}")
    seed = seed.validate()
    d_mult, w_mult, r_mult = rule.alpha ** phi, rule.beta ** phi, rule.gamma ** phi
    eight = 8 if all(w % 8 == 0 for w in seed.widths) and seed.stem_width % 8 == 0 else 1
    adjustments: list[str] = []

    exact_res = seed.resolution * r_mult
    limits = [("stage depth", d, d_mult, MAX_DEPTH) for d in seed.depths]
    limits += [("stage width", w, w_mult, MAX_WIDTH) for w in seed.widths]
    limits.append(("resolution", seed.resolution, r_mult, MAX_RESOLUTION))
    for what, base, mult, high in limits:
        if base * mult > high:
            raise ScalingError(f"phi={phi:g} gives {what} {base} x {mult:.3g} = {base * mult:.3g}, beyond the "
                               f"{high} hvsearch builds (a model that size would not fit in memory); use a "
                               "smaller phi")
    resolution = snap_resolution(exact_res)

    exact_depths = tuple(d * d_mult for d in seed.depths)
    depths = []
    for i, exact in enumerate(exact_depths):
        d = round_depth(exact, rule.depth_mode)
        if d < 1:
            raise ScalingError(f"phi={phi:g} gives stages.{i}.depth {exact:.2f}, which rounds to {d} "
                               f"({rule.depth_mode}); use a larger phi or depth_mode=ceil")
        depths.append(d)

    exact_widths = tuple(w * w_mult for w in seed.widths)
    divisors = [math.lcm(st.mixer.width_multiple(), st.ffn.width_multiple(), eight) for st in seed.stages]
    widths = [round_width(e, d, rule.min_width_ratio) for e, d in zip(exact_widths, divisors)]

    stem = seed.stem
    if hasattr(stem, "width"):
        # a first stage that keeps the stem's output (downsample `none`) has the stem's width,
        # so the stem must also meet that stage's divisor
        keeps = seed.stages[0].downsample.type == "none"
        divisor = divisors[0] if keeps else eight
        stem = dataclasses.replace(stem, width=round_width(seed.stem_width * w_mult, divisor, rule.min_width_ratio))
        if keeps:
            widths[0] = stem.width

    stages = [dataclasses.replace(st, depth=d, width=w) for st, d, w in zip(seed.stages, depths, widths)]
    draft = seed.replace(stem=stem, stages=tuple(stages), resolution=resolution,
                         name=f"{seed.name or 'arch'}_phi{phi_tag(phi)}")
    spec, fitted = fit_to_features(draft)
    adjustments += fitted
    try:
        spec.validate()
    except SpecError as e:
        raise ScalingError(f"phi={phi:g}: rounding cannot satisfy the spec's rules: {e}") from None
    return Member(phi=phi, spec=spec, exact_depths=exact_depths, exact_widths=exact_widths,
                  exact_resolution=exact_res, adjustments=tuple(adjustments))


def fit_to_features(draft: ModelSpec) -> tuple[ModelSpec, list[str]]:
    """``draft`` with every mixer knob bound to the feature size (CMT's reduction ratio, Hire-MLP's
    region and shift, Container's key/value pooling) re-fitted to its stage's feature size at the
    draft's resolution, and what changed, one line per knob. Not validated: the caller does."""
    adjustments, fitted = [], []
    for ctx, st in zip(draft.stage_contexts(), draft.stages):
        mixer = st.mixer.fit(ctx)
        for f in dataclasses.fields(mixer):
            old, new = getattr(st.mixer, f.name), getattr(mixer, f.name)
            if old != new:
                adjustments.append(f"stages.{ctx.index}.mixer.{f.name} {old} -> {new} "
                                   f"(feature size {ctx.height}x{ctx.width})")
        fitted.append(dataclasses.replace(st, mixer=mixer))
    return draft.replace(stages=tuple(fitted)), adjustments


def phi_tag(phi: float) -> str:
    """A name-safe tag: 1 → '1', -1 → 'm1', 0.5 → '0p5'."""
    text = f"{abs(phi):g}".replace(".", "p")
    return ("m" if phi < 0 else "") + text


def grid_constants(step: float = 0.05, tol: float = 0.05, target: float = TARGET_BASE,
                   max_value: float | None = None) -> list[ScalingRule]:
    """Every (α, β, γ) on a grid of ``step`` from 1 with ``|α·β^1.5·γ² − target| <= tol·target``,
    closest to the target first (then by α, β, γ). Each constant is at most ``target`` (or
    ``max_value``), since the others are at least 1."""
    if not (0 < step <= 1):
        raise ScalingError(f"grid step must be in (0, 1], got {step!r}")
    if not (0 < tol < 1):
        raise ScalingError(f"grid tolerance must be in (0, 1), got {tol!r}")
    top = max_value or target
    n = int(math.floor((top - 1.0) / step + 1e-9)) + 1
    values = [round(1.0 + i * step, 6) for i in range(n)]
    found = []
    for a in values:
        for b in values:
            for g in values:
                base = a * b ** 1.5 * g ** 2
                if abs(base - target) <= tol * target:
                    found.append((abs(base - target), a, b, g))
    if not found:
        raise ScalingError(f"no (alpha, beta, gamma) on a {step:g} grid gives alpha*beta^1.5*gamma^2 within "
                           f"{100 * tol:g}% of {target:g}; use a finer --grid-step or a larger --grid-tol")
    found.sort()
    return [ScalingRule(alpha=a, beta=b, gamma=g) for _, a, b, g in found]
