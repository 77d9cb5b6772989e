"""``hvsearch check``: is a space file sound, and what does it hold?

Samples N architectures at random (no Optuna, no Ray), validates each, builds the valid ones,
runs one forward pass to check the output shape and counts params and FLOPs; then reports the
space's size, the share of invalid draws and the rules they broke, how many meet the constraints,
and the params/FLOPs spread. A space is *broken* when no draw is valid, none meets the
constraints, or a valid architecture fails to build or run.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from hvsearch.errors import SpecError
from hvsearch.space import RandomTrial, Space, human


@dataclass
class CheckReport:
    space: Space
    samples: int
    valid: int = 0
    invalid: Counter = field(default_factory=Counter)  # (path, rule) -> count
    examples: dict = field(default_factory=dict)  # (path, rule) -> one full message
    broken_models: list[str] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    flops: list[int] = field(default_factory=list)
    meets: int = 0
    violations: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        out = []
        if self.valid == 0:
            out.append(f"none of the {self.samples} sampled architectures is valid")
        elif self.broken_models:
            out.append(f"{len(self.broken_models)} valid architecture(s) failed to build or run: "
                       f"{self.broken_models[0]}")
        elif self.params and self.meets == 0 and self.space.constraints.describe() != "none":
            out.append(f"no valid sample meets the constraints ({self.space.constraints.describe()}); "
                       "they cannot be met by this space")
        return out

    def render(self) -> str:
        sp = self.space
        size = sp.arch.size()
        cont = sp.arch.continuous()
        lines = [f"space {sp.name!r} ({sp.source})",
                 f"  mixers: {', '.join(sp.arch.mixer_types())}; FFNs: {', '.join(sp.arch.ffn_types())}",
                 "  size: " + (f"{size:.3g} distinct draws" if size is not None and size >= 1e6
                               else f"{size} distinct draws" if size is not None
                               else f"continuous ({len(cont)} real-valued knobs, e.g. {cont[0]})"),
                 f"  objectives: {', '.join(sp.search.objectives)}; sampler {sp.search.sampler}; "
                 f"{sp.search.trials} trials; constraints: {sp.constraints.describe()}"]
        lat = sp.latency
        if lat is not None:
            where = f"{lat.resolution} px" if lat.resolution else "each draw's own resolution"
            lines.append(f"  latency: measured before training, {lat.runtime} on {lat.device}, batch {lat.batch}, "
                         f"{lat.threads} thread{'s' * (lat.threads > 1)}, {where}, median of {lat.repeats} runs "
                         f"(cached in studies/latency.db)")
        pre = sp.search.prescreen
        if pre is not None:
            lines.append(f"  pre-screen: {pre.score} ranks each pool of {pre.pool} draws, the best {pre.kept} "
                         f"train (~{pre.pool * sp.search.trials // pre.kept} draws scored for "
                         f"{sp.search.trials} trials)")
        n_inv = sum(self.invalid.values())
        lines.append(f"sampled {self.samples}: {self.valid} valid ({100 * self.valid / self.samples:.0f}%), "
                     f"{n_inv} invalid ({100 * n_inv / self.samples:.0f}%)  [{self.seconds:.1f} s]")
        for (path, rule), n in self.invalid.most_common(8):
            lines.append(f"  {n:5d}  {self.examples[(path, rule)]}")
        if len(self.invalid) > 8:
            lines.append(f"  ... and {len(self.invalid) - 8} other rule(s)")
        for msg in self.broken_models[:5]:
            lines.append(f"  model failed: {msg}")
        if self.params:
            res = sp.constraints.resolution
            lines.append(f"cost of the {len(self.params)} valid architectures"
                         + (f" at {res}x{res}" if res else " at their build resolution") + ":")
            lines.append("  params: " + _spread(self.params))
            lines.append("  FLOPs:  " + _spread(self.flops))
            import dataclasses

            counted = dataclasses.replace(sp.constraints, max_latency_ms=None)  # check does not time them
            if counted.describe() != "none":
                lines.append(f"  meet the constraints ({counted.describe()}): {self.meets} of "
                             f"{len(self.params)} ({100 * self.meets / len(self.params):.0f}%)")
            if sp.constraints.max_latency_ms is not None:
                lines.append(f"  latency <= {sp.constraints.max_latency_ms:g} ms: not checked here (`run` measures "
                             "each draw before it trains; `hvsearch latency` times one)")
                for why, n in self.violations.most_common():
                    lines.append(f"  {n:5d}  exceed {why}")
        for p in self.problems:
            lines.append(f"BROKEN: {p}")
        return "\n".join(lines)


def _spread(values: list[int]) -> str:
    v = sorted(values)
    q = lambda f: v[min(len(v) - 1, int(f * (len(v) - 1) + 0.5))]  # noqa: E731
    return f"min {human(v[0])}  p25 {human(q(0.25))}  median {human(q(0.5))}  p75 {human(q(0.75))}  max {human(v[-1])}"


def check_space(space: Space, samples: int = 50, seed: int = 0, count: bool = True,
                progress: bool = False) -> CheckReport:
    from hvsearch.search.study import make_sampler

    make_sampler(space)  # search.sampler_options against the Optuna sampler's signature: as `run` will
    t0 = time.monotonic()
    rep = CheckReport(space, samples)
    rng = random.Random(seed)
    specs = []
    for _ in range(samples):
        try:
            specs.append(space.arch.sample(RandomTrial(rng)))
        except SpecError as e:
            key = (e.path, e.rule)
            rep.invalid[key] += 1
            rep.examples.setdefault(key, str(e))
    rep.valid = len(specs)
    if count and specs:
        _cost(space, specs, rep, progress)
    rep.seconds = time.monotonic() - t0
    return rep


def _cost(space: Space, specs, rep: CheckReport, progress: bool) -> None:
    import torch

    from hvsearch.cost import count
    from hvsearch.models import build_model

    from hvsearch.progress import Progress

    bar = Progress(len(specs), "building and counting", unit="arch", every_s=0, enabled=progress)
    for spec in specs:
        bar.update(note=spec.arch_id)
        try:
            model = build_model(spec).eval()
            with torch.no_grad():
                out = model(torch.zeros(1, spec.in_chans, spec.resolution, spec.resolution))
            if tuple(out.shape) != (1, spec.num_classes):
                raise RuntimeError(f"output shape {tuple(out.shape)}, expected (1, {spec.num_classes})")
            res = space.constraints.resolution or spec.resolution
            c = count(model, res, spec.in_chans)
        except Exception as e:  # a model bug: report which architecture and why
            rep.broken_models.append(f"arch {spec.arch_id}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        rep.params.append(c.params)
        rep.flops.append(c.flops)
        broken = space.constraints.violations(c.params, c.flops)
        if broken:
            for b in broken:
                rep.violations[b.split(" exceed ")[-1].split(" ")[0]] += 1
        else:
            rep.meets += 1
    bar.close()
