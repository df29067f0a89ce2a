"""Positions always protected: the rules, as plain functions (no I/O).

- A position is protected by a *working stop*: a reduce-only stop trigger on the closing side
  that covers the whole size (:func:`is_protected`), by the size the exchange holds (a grouped
  stop shrinks with its position; the bot's stored size is updated from the exchange).
- A position without one gets a stop at once (:func:`stop_price`): at the stop the bot chose
  when it entered, or, for a position it did not open, ``fallback`` (a fraction) away from the
  entry price.
- Exits (take-profits, stops) left open with no position have nothing to protect
  (:func:`orphan_exits`): cancel them.
- The stop the bot chose belongs to one position: it is kept while the exchange shows the same
  position (same side), forgotten when it closes or flips, or when the entry it was chosen for
  ends without filling (:func:`carry_stop`, and the bot's commits).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from examples.hyperliquid_bot.state import Order, Position
from examples.hyperliquid_bot.venue import RestingOrder

__all__ = ["carry_stop", "is_protected", "orphan_exits", "stop_price"]

_EPSILON = 1e-12


def carry_stop(stored: Position, now: Position) -> Position:
    """The exchange's position ``now`` with the stop chosen for ``stored``, if it is the same
    position (or ``stored`` is the flat state an entry's intent was saved in)."""
    same = not now.flat and (stored.flat or (stored.szi > 0) == (now.szi > 0))
    return now.model_copy(update={"stop_px": stored.stop_px if same else None})


def is_protected(
    position: Position,
    coin: str,
    listing: Iterable[RestingOrder],
    orders: Mapping[str, Order],
) -> bool:
    """The position is flat, or a working stop covers it: one listed by the exchange, or one of
    ours found open by its cloid although the listing did not show it yet (its size as the
    exchange last said, see :meth:`~examples.hyperliquid_bot.state.Order.settled`)."""
    if position.flat:
        return True
    if any(o.protects(position, coin) for o in listing):
        return True
    return any(
        o.kind == "sl"
        and o.status == "open"
        and o.coin == coin
        and o.is_buy == (position.szi < 0)
        and o.size >= abs(position.szi) - _EPSILON
        for o in orders.values()
    )


def stop_price(position: Position, *, fallback: float, mid: float) -> float:
    """Where to put the stop of ``position`` (not flat): its own stop, or ``fallback`` away
    from its entry price (from ``mid`` when that is unknown), on the losing side."""
    if position.stop_px is not None:
        return position.stop_px
    base = position.entry_px or mid
    return base * (1 - fallback if position.szi > 0 else 1 + fallback)


def orphan_exits(orders: Mapping[str, Order]) -> list[str]:
    """The cloids of take-profits and stops still open (call when the position is flat)."""
    return [c for c, o in orders.items() if o.kind in ("tp", "sl") and o.status == "open"]
