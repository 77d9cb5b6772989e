"""Search spaces: the YAML schema, its validation, and sampling architectures from it.

``load_space(path)`` reads and checks a space file (:mod:`.schema`); ``space.arch.sample(trial)``
draws one architecture through an Optuna-trial-like object (define-by-run: a knob is only drawn
when the part that owns it is) and freezes it into a validated :class:`~hvsearch.arch.ModelSpec`.
No torch, Optuna or Ray is imported here.
"""
from hvsearch.space.arch import ArchSpace, PartSpace, StageSpace, parse_arch
from hvsearch.space.params import Choice, FloatRange, Fixed, IntRange
from hvsearch.space.random_trial import RandomTrial
from hvsearch.space.schema import (
    OBJECTIVES,
    PRESCREEN_SCORES,
    SAMPLERS,
    Constraints,
    Prescreen,
    Resources,
    SearchSettings,
    Space,
    human,
    load_space,
    parse_count,
    parse_duration,
    parse_space,
)

__all__ = [
    "ArchSpace", "Choice", "Constraints", "FloatRange", "Fixed", "IntRange", "OBJECTIVES", "PartSpace",
    "PRESCREEN_SCORES", "Prescreen",
    "RandomTrial", "Resources", "SAMPLERS", "SearchSettings", "Space", "StageSpace", "human",
    "load_space", "parse_arch", "parse_count", "parse_duration", "parse_space",
]
