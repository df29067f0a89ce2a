"""Client order ids (cloids) and order requests as the SDK takes them: made, read, checked.

Pure functions, no I/O: a fresh cloid for an order that has none, a ``"0x…"`` string read as
the SDK's ``Cloid`` (a malformed one refused before anything is sent), the raw string of one,
one cloid twice in a call refused, and ``Exchange.order``'s arguments as an ``OrderRequest``.
The SDK is imported lazily (it is an optional dependency).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from typing import Any

__all__ = ["as_cloid", "check_unique", "new_cloid", "order_request", "raw_cloid"]

_HEX = frozenset(string.hexdigits)
#: The keys of an SDK ``OrderRequest``, in the order of ``Exchange.order``'s parameters.
_ORDER_FIELDS = ("coin", "is_buy", "sz", "limit_px", "order_type", "reduce_only", "cloid")


def order_request(*fields: Any) -> dict[str, Any]:
    """``Exchange.order``'s arguments (without ``builder``) as the SDK's ``OrderRequest``."""
    return dict(zip(_ORDER_FIELDS, fields, strict=True))


def new_cloid() -> Any:
    from hyperliquid.utils.types import Cloid

    return Cloid.from_str("0x" + secrets.token_hex(16))


def as_cloid(value: Any, what: str) -> Any:
    """``value`` as the SDK's ``Cloid`` (a hex ``str``, such as ``Outcome.cloid``, is
    converted); a bad value raises ``TypeError`` before anything is sent or guarded."""
    from hyperliquid.utils.types import Cloid

    if value is None or isinstance(value, Cloid):
        return value
    if isinstance(value, str):
        digits = value[2:]
        if value[:2] == "0x" and len(digits) == 32 and all(c in _HEX for c in digits):
            return Cloid.from_str(value)
        raise TypeError(f"{what} must be a Cloid or '0x' followed by 32 hex digits, got {value!r}")
    raise TypeError(f"{what} must be a Cloid or a hex str, got {type(value).__name__}")


def raw_cloid(cloid: Any) -> str | None:
    if cloid is None:
        return None
    to_raw = getattr(cloid, "to_raw", None)
    return str(to_raw()) if callable(to_raw) else str(cloid)


def check_unique(operation: str, cloids: Sequence[str | None]) -> None:
    """Two items with one cloid cannot both be placed: refuse before sending (the lookup of
    a lost answer could not tell them apart)."""
    seen: set[str] = set()
    for cloid in cloids:
        if cloid is None:
            continue
        if cloid in seen:
            raise ValueError(
                f"{operation}: cloid {cloid} appears twice in one call; give each order its "
                "own cloid (or none: one is assigned)"
            )
        seen.add(cloid)
