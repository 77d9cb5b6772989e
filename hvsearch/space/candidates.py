"""A space that is a fixed list of architectures: the candidates of ``scale --grid`` (one φ=1
member per scaling rule) and of ``calibrate`` (a stratified sample of a space)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CANDIDATE_PARAM = "candidate"


@dataclass(frozen=True)
class CandidateSpace:
    """An architecture space that is a fixed, enumerated set of specs (one per label).

    Duck-types :class:`hvsearch.space.arch.ArchSpace` for the searcher (``suggest``) and gives
    Optuna's GridSampler its search space (``grid``)."""

    archs: dict[str, dict[str, Any]]

    def suggest(self, trial) -> dict[str, Any]:
        return self.archs[trial.suggest_categorical(CANDIDATE_PARAM, list(self.archs))]

    def grid(self) -> dict[str, list[str]]:
        return {CANDIDATE_PARAM: list(self.archs)}

    def size(self) -> int:
        return len(self.archs)
