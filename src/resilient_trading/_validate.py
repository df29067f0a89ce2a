"""Argument checks shared by every public constructor and entry point.

Each check raises at once, naming the argument and what it accepts: ``TypeError`` for the
wrong type, ``ValueError`` for a value out of range. Configuration is validated here, never
later in a hot path.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_int", "check_number", "check_optional_number"]


def check_number(name: str, value: Any, *, positive: bool = True) -> float:
    """A finite real number, ``> 0`` (``positive``) or ``>= 0``, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        what = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_optional_number(name: str, value: Any, *, positive: bool = True) -> float | None:
    """``None``, or what :func:`check_number` accepts."""
    return None if value is None else check_number(name, value, positive=positive)


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """An ``int`` (not a ``bool``) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value
