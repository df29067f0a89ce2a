"""Strategies on candles: plain functions for indicators, small classes for decisions.

Both strategies share one :class:`ConfidenceCalculator` (how sure are we, from 0 to 1) and one
:class:`SignalFactory` (turn a direction, an entry and an ATR into a long or short signal with
its stop, target and reward-to-risk ratio), instead of near-copies of the same code.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from examples.hyperliquid_bot.config import MeanReversionParams, TrendParams

__all__ = [
    "Candle",
    "ConfidenceCalculator",
    "MeanReversion",
    "Signal",
    "SignalFactory",
    "Strategy",
    "TrendFollowing",
    "atr",
    "bollinger",
    "build_strategies",
    "ema",
    "rsi",
]

Side = Literal["long", "short"]


@dataclass(frozen=True)
class Candle:
    """One OHLCV candle; ``t`` is its open time in milliseconds."""

    t: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @classmethod
    def from_hyperliquid(cls, raw: dict[str, object]) -> Candle:
        """Parse one element of Hyperliquid's ``candleSnapshot`` answer."""
        return cls(
            t=int(str(raw["t"])),
            open=float(str(raw["o"])),
            high=float(str(raw["h"])),
            low=float(str(raw["l"])),
            close=float(str(raw["c"])),
            volume=float(str(raw["v"])),
        )


# --- indicators ---------------------------------------------------------------------------


def ema(values: Sequence[float], period: int) -> list[float]:
    """Exponential moving average, seeded with the first value."""
    if period < 1:
        raise ValueError("period must be >= 1")
    if not values:
        return []
    k = 2.0 / (period + 1)
    out = [values[0]]
    for value in values[1:]:
        out.append(value * k + out[-1] * (1 - k))
    return out


def rsi(closes: Sequence[float], period: int) -> float:
    """Wilder's relative strength index of the last close (50 when undecided)."""
    if len(closes) <= period:
        return 50.0
    gains = losses = 0.0
    for prev, cur in zip(closes[-period - 1 : -1], closes[-period:], strict=True):
        change = cur - prev
        if change > 0:
            gains += change
        else:
            losses -= change
    if gains == losses == 0:
        return 50.0
    if losses == 0:
        return 100.0
    rs = gains / losses
    return 100.0 - 100.0 / (1.0 + rs)


def atr(candles: Sequence[Candle], period: int) -> float:
    """Average true range over the last ``period`` candles."""
    if len(candles) < 2:
        return 0.0
    ranges = []
    for prev, cur in itertools.pairwise(candles):
        ranges.append(
            max(cur.high - cur.low, abs(cur.high - prev.close), abs(cur.low - prev.close))
        )
    window = ranges[-period:]
    return sum(window) / len(window)


def bollinger(closes: Sequence[float], period: int, width: float) -> tuple[float, float, float]:
    """(lower, mean, upper) band of the last ``period`` closes."""
    window = closes[-period:]
    mean = sum(window) / len(window)
    var = sum((c - mean) ** 2 for c in window) / len(window)
    dev = math.sqrt(var) * width
    return mean - dev, mean, mean + dev


# --- shared decision helpers ------------------------------------------------------------------


class ConfidenceCalculator:
    """Combine evidence into one confidence between 0 and 1.

    Each factor is a score in [0, 1] with a weight; the confidence is their weighted mean.
    Factors outside [0, 1] are clipped, so one wild indicator cannot dominate.

    Example:
        >>> ConfidenceCalculator({"trend": 2.0, "momentum": 1.0}).confidence(
        ...     {"trend": 1.0, "momentum": 0.4})
        0.8
    """

    def __init__(self, weights: dict[str, float]) -> None:
        if not weights or any(w <= 0 or not math.isfinite(w) for w in weights.values()):
            raise ValueError("weights must be positive finite numbers")
        self._weights = dict(weights)
        self._total = sum(weights.values())

    def confidence(self, factors: dict[str, float]) -> float:
        missing = set(self._weights) - set(factors)
        if missing:
            raise ValueError(f"missing factors: {sorted(missing)}")
        score = sum(
            self._weights[name] * min(1.0, max(0.0, factors[name])) for name in self._weights
        )
        return round(score / self._total, 6)


@dataclass(frozen=True)
class Signal:
    """A decision to open a position, with its exits."""

    strategy: str
    side: Side
    entry: float
    stop: float
    target: float
    confidence: float

    @property
    def rr_ratio(self) -> float:
        """Reward-to-risk: target distance over stop distance."""
        return abs(self.target - self.entry) / abs(self.entry - self.stop)

    @property
    def is_buy(self) -> bool:
        return self.side == "long"


class SignalFactory:
    """Build long and short signals the same way for every strategy.

    Stop and target sit ``stop_atr`` and ``target_atr`` ATRs away from the entry, on the side
    that makes sense for the direction; a signal under ``min_rr_ratio`` or ``min_confidence``
    is not made.
    """

    def __init__(
        self, *, stop_atr: float, target_atr: float, min_rr_ratio: float, min_confidence: float
    ) -> None:
        self.stop_atr = stop_atr
        self.target_atr = target_atr
        self.min_rr_ratio = min_rr_ratio
        self.min_confidence = min_confidence

    def make(
        self, strategy: str, side: Side, entry: float, atr_value: float, confidence: float
    ) -> Signal | None:
        if atr_value <= 0 or entry <= 0 or confidence < self.min_confidence:
            return None
        direction = 1.0 if side == "long" else -1.0
        stop = entry - direction * self.stop_atr * atr_value
        target = entry + direction * self.target_atr * atr_value
        if stop <= 0:
            return None
        signal = Signal(strategy, side, entry, stop, target, confidence)
        if signal.rr_ratio + 1e-9 < self.min_rr_ratio:
            return None
        return signal


class Strategy(Protocol):
    name: str

    def evaluate(self, candles: Sequence[Candle]) -> Signal | None: ...


def _factory(params: TrendParams | MeanReversionParams) -> SignalFactory:
    return SignalFactory(
        stop_atr=params.stop_atr,
        target_atr=params.target_atr,
        min_rr_ratio=params.min_rr_ratio,
        min_confidence=params.min_confidence,
    )


class TrendFollowing:
    """Go with a fresh EMA cross when RSI agrees and the move is not already stretched."""

    name = "trend"

    def __init__(self, params: TrendParams) -> None:
        self.params = params
        self.signals = _factory(params)
        self.confidence = ConfidenceCalculator({"separation": 2.0, "momentum": 1.0, "fresh": 1.0})

    def evaluate(self, candles: Sequence[Candle]) -> Signal | None:
        p = self.params
        if len(candles) < p.slow_ema + 2:
            return None
        closes = [c.close for c in candles]
        fast, slow = ema(closes, p.fast_ema), ema(closes, p.slow_ema)
        crossed_up = fast[-2] <= slow[-2] and fast[-1] > slow[-1]
        crossed_down = fast[-2] >= slow[-2] and fast[-1] < slow[-1]
        if not (crossed_up or crossed_down):
            return None
        side: Side = "long" if crossed_up else "short"
        range_ = atr(candles, p.atr_period)
        strength = rsi(closes, p.rsi_period)
        momentum = (strength - 50) / 25 if side == "long" else (50 - strength) / 25
        separation = abs(fast[-1] - slow[-1]) / range_ if range_ > 0 else 0.0
        confidence = self.confidence.confidence(
            {"separation": 0.5 + separation, "momentum": momentum, "fresh": 1.0}
        )
        return self.signals.make(self.name, side, closes[-1], range_, confidence)


class MeanReversion:
    """Fade a close outside the Bollinger band when RSI is stretched the same way."""

    name = "mean_reversion"

    def __init__(self, params: MeanReversionParams) -> None:
        self.params = params
        self.signals = _factory(params)
        self.confidence = ConfidenceCalculator({"stretch": 2.0, "momentum": 1.0, "fresh": 1.0})

    def evaluate(self, candles: Sequence[Candle]) -> Signal | None:
        p = self.params
        if len(candles) < max(p.band_period, p.rsi_period) + 2:
            return None
        closes = [c.close for c in candles]
        lower, _mean, upper = bollinger(closes, p.band_period, p.band_width)
        strength = rsi(closes, p.rsi_period)
        last = closes[-1]
        range_ = atr(candles, p.atr_period)
        if last < lower and strength < p.rsi_low:
            side: Side = "long"
            stretch = (lower - last) / range_ if range_ > 0 else 0.0
            momentum = (p.rsi_low - strength) / p.rsi_low
        elif last > upper and strength > p.rsi_high:
            side = "short"
            stretch = (last - upper) / range_ if range_ > 0 else 0.0
            momentum = (strength - p.rsi_high) / (100 - p.rsi_high)
        else:
            return None
        fresh = 1.0 if lower <= closes[-2] <= upper else 0.3
        confidence = self.confidence.confidence(
            {"stretch": 0.5 + stretch, "momentum": momentum, "fresh": fresh}
        )
        return self.signals.make(self.name, side, last, range_, confidence)


def build_strategies(trend: TrendParams, mean_reversion: MeanReversionParams) -> list[Strategy]:
    """The enabled strategies, in a fixed order."""
    out: list[Strategy] = []
    if trend.enabled:
        out.append(TrendFollowing(trend))
    if mean_reversion.enabled:
        out.append(MeanReversion(mean_reversion))
    return out
