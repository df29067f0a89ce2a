"""Position sizing from risk and stop distance, within leverage and the exchange's rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from examples.hyperliquid_bot.strategies import Signal

__all__ = ["MIN_NOTIONAL_USD", "Sizing", "position_size", "round_price"]

#: Hyperliquid refuses orders under $10 of notional.
MIN_NOTIONAL_USD = 10.0


@dataclass(frozen=True)
class Sizing:
    """How big a position a signal gets, and why."""

    size: float
    notional: float
    risk_usd: float
    reason: str


def round_price(price: float, sz_decimals: int, *, max_decimals: int = 6) -> float:
    """Round a perp price the way Hyperliquid accepts it: at most 5 significant figures and
    at most ``6 - szDecimals`` decimals."""
    if price <= 0 or not math.isfinite(price):
        raise ValueError(f"price must be positive and finite, got {price!r}")
    significant = float(f"{price:.5g}")
    return round(significant, max(0, max_decimals - sz_decimals))


def position_size(
    signal: Signal,
    *,
    equity: float,
    risk_per_trade: float,
    leverage: int,
    max_position_usd: float,
    sz_decimals: int,
) -> Sizing:
    """Size so that hitting the stop loses ``risk_per_trade`` of ``equity``, capped by the
    leverage and ``max_position_usd``, rounded down to the coin's size step. A size under the
    exchange's minimum notional is zero."""
    if equity <= 0 or not math.isfinite(equity):
        return Sizing(0.0, 0.0, 0.0, "no equity")
    stop_distance = abs(signal.entry - signal.stop)
    if stop_distance <= 0:
        return Sizing(0.0, 0.0, 0.0, "stop at entry")
    risk_usd = equity * risk_per_trade
    size = risk_usd / stop_distance
    cap = min(equity * leverage, max_position_usd) / signal.entry
    reason = "risk"
    if size > cap:
        size, reason = cap, "capped by leverage or max_position_usd"
    step = 10.0 ** (-sz_decimals)
    size = math.floor(size / step + 1e-9) * step
    size = round(size, sz_decimals)
    notional = size * signal.entry
    if notional < MIN_NOTIONAL_USD:
        return Sizing(0.0, 0.0, 0.0, f"under the ${MIN_NOTIONAL_USD:.0f} minimum notional")
    return Sizing(size, notional, size * stop_distance, reason)
