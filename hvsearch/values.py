"""What counts as an integer and as a number in a spec, space or config file: Python's ``bool`` is
an ``int`` (``True == 1``), and YAML reads ``yes``/``true`` as one, so every check excludes it."""
from __future__ import annotations

from typing import Any


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` (finite or not: range checks come after)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
