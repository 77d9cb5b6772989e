"""A seeded stand-in for an Optuna trial, so that a space can be sampled without Optuna
(``hvsearch check``, tests). Asking a label twice returns the first draw, as Optuna does."""
from __future__ import annotations

import math
import random
from typing import Any


class RandomTrial:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.params: dict[str, Any] = {}

    def _draw(self, name: str, draw) -> Any:
        if name not in self.params:
            self.params[name] = draw()
        return self.params[name]

    def suggest_categorical(self, name: str, choices) -> Any:
        return self._draw(name, lambda: self.rng.choice(list(choices)))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        def draw() -> int:
            if log:
                return int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
            return low + step * self.rng.randint(0, (high - low) // step)

        return self._draw(name, lambda: min(max(draw(), low), high))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        def draw() -> float:
            if step is not None:
                return low + step * self.rng.randint(0, int(round((high - low) / step)))
            if log:
                return math.exp(self.rng.uniform(math.log(low), math.log(high)))
            return self.rng.uniform(low, high)

        return self._draw(name, draw)
