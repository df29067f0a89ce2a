"""Strategies on fixed candle fixtures, the shared confidence and signal helpers, sizing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.hyperliquid_bot.config import MeanReversionParams, TrendParams
from examples.hyperliquid_bot.risk import MIN_NOTIONAL_USD, position_size, round_price
from examples.hyperliquid_bot.strategies import (
    Candle,
    ConfidenceCalculator,
    MeanReversion,
    Signal,
    SignalFactory,
    TrendFollowing,
    atr,
    bollinger,
    ema,
    rsi,
)


def candles_from(closes: list[float], spread: float = 0.5) -> list[Candle]:
    out = []
    prev = closes[0]
    for i, close in enumerate(closes):
        out.append(
            Candle(
                t=i * 60_000,
                open=prev,
                high=max(prev, close) + spread,
                low=min(prev, close) - spread,
                close=close,
                volume=1.0,
            )
        )
        prev = close
    return out


# Fixtures: a slow decline then a sharp rally (an up-cross); the mirror (a down-cross);
# a flat market with a last-candle plunge (a mean-reversion long).
DOWN_THEN_UP = [100 - 0.2 * i for i in range(40)] + [92 + 1.5 * i for i in range(1, 5)]
UP_THEN_DOWN = [100 + 0.2 * i for i in range(40)] + [108 - 1.5 * i for i in range(1, 5)]
FLAT_THEN_PLUNGE = [100 + (0.3 if i % 2 else -0.3) for i in range(40)] + [97.0, 94.0]


def test_trend_goes_long_on_an_up_cross() -> None:
    params = TrendParams(min_confidence=0.0, min_rr_ratio=1.5)
    signal = TrendFollowing(params).evaluate(candles_from(DOWN_THEN_UP))
    assert signal is not None
    assert signal.side == "long"
    assert signal.stop < signal.entry < signal.target
    assert signal.rr_ratio >= params.min_rr_ratio


def test_trend_goes_short_on_a_down_cross() -> None:
    signal = TrendFollowing(TrendParams(min_confidence=0.0)).evaluate(candles_from(UP_THEN_DOWN))
    assert signal is not None
    assert signal.side == "short"
    assert signal.target < signal.entry < signal.stop


def test_trend_stays_out_without_a_cross() -> None:
    steady = [100 + 0.5 * i for i in range(60)]
    assert TrendFollowing(TrendParams(min_confidence=0.0)).evaluate(candles_from(steady)) is None


def test_mean_reversion_buys_a_plunge_below_the_band() -> None:
    params = MeanReversionParams(min_confidence=0.0, rsi_low=45, rsi_high=55)
    signal = MeanReversion(params).evaluate(candles_from(FLAT_THEN_PLUNGE))
    assert signal is not None
    assert signal.side == "long"


def test_strategies_need_enough_candles() -> None:
    short = candles_from([100.0] * 5)
    assert TrendFollowing(TrendParams()).evaluate(short) is None
    assert MeanReversion(MeanReversionParams()).evaluate(short) is None


def test_min_rr_ratio_filters_signals() -> None:
    factory = SignalFactory(stop_atr=2.0, target_atr=2.0, min_rr_ratio=1.5, min_confidence=0.0)
    assert factory.make("t", "long", 100.0, 1.0, 1.0) is None
    factory = SignalFactory(stop_atr=1.0, target_atr=2.0, min_rr_ratio=1.5, min_confidence=0.0)
    assert factory.make("t", "long", 100.0, 1.0, 1.0) is not None


@given(
    side=st.sampled_from(["long", "short"]),
    entry=st.floats(min_value=1, max_value=1e6),
    atr_value=st.floats(min_value=1e-6, max_value=1e3),
    stop_atr=st.floats(min_value=0.1, max_value=5),
    target_atr=st.floats(min_value=0.1, max_value=10),
    min_rr=st.floats(min_value=0.1, max_value=5),
)
def test_signals_have_exits_on_the_right_side(
    side: str, entry: float, atr_value: float, stop_atr: float, target_atr: float, min_rr: float
) -> None:
    factory = SignalFactory(
        stop_atr=stop_atr, target_atr=target_atr, min_rr_ratio=min_rr, min_confidence=0.0
    )
    signal = factory.make("t", side, entry, atr_value, 0.9)  # type: ignore[arg-type]
    if signal is None:
        return
    assert signal.rr_ratio >= min_rr - 1e-6
    if side == "long":
        assert signal.stop < signal.entry < signal.target
    else:
        assert signal.target < signal.entry < signal.stop


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(-10, 10), min_size=3))
def test_confidence_is_a_weighted_mean_in_unit_range(factors: dict[str, float]) -> None:
    value = ConfidenceCalculator({"a": 1.0, "b": 2.0, "c": 0.5}).confidence(factors)
    assert 0.0 <= value <= 1.0


def test_confidence_calculator_checks_its_input() -> None:
    with pytest.raises(ValueError, match="weights"):
        ConfidenceCalculator({"a": -1.0})
    with pytest.raises(ValueError, match="missing"):
        ConfidenceCalculator({"a": 1.0}).confidence({})


def test_indicators_on_known_values() -> None:
    assert ema([1.0, 1.0, 1.0], 3) == [1.0, 1.0, 1.0]
    assert rsi([1.0, 2.0, 3.0, 4.0], 3) == 100.0
    assert rsi([4.0, 3.0, 2.0, 1.0], 3) == 0.0
    lower, mean, upper = bollinger([1.0, 3.0], 2, 1.0)
    assert (lower, mean, upper) == (1.0, 2.0, 3.0)
    assert atr(candles_from([100.0, 100.0], spread=1.0), 14) == 2.0


def _signal(entry: float, stop: float) -> Signal:
    return Signal("t", "long" if stop < entry else "short", entry, stop, entry * 2, 0.9)


@given(
    equity=st.floats(min_value=0, max_value=1e6),
    entry=st.floats(min_value=1, max_value=1e5),
    stop_frac=st.floats(min_value=0.001, max_value=0.5),
    risk=st.floats(min_value=0.001, max_value=0.05),
    leverage=st.integers(1, 40),
    cap=st.floats(min_value=11, max_value=1e6),
    decimals=st.integers(0, 5),
)
def test_position_size_respects_risk_leverage_and_minimum(
    equity: float,
    entry: float,
    stop_frac: float,
    risk: float,
    leverage: int,
    cap: float,
    decimals: int,
) -> None:
    signal = _signal(entry, entry * (1 - stop_frac))
    sizing = position_size(
        signal,
        equity=equity,
        risk_per_trade=risk,
        leverage=leverage,
        max_position_usd=cap,
        sz_decimals=decimals,
    )
    if sizing.size == 0:
        return
    assert sizing.notional >= MIN_NOTIONAL_USD
    assert sizing.risk_usd <= equity * risk * (1 + 1e-9)
    assert sizing.notional <= min(equity * leverage, cap) * (1 + 1e-9)
    assert math.isclose(sizing.size, round(sizing.size, decimals))


@given(price=st.floats(min_value=1e-3, max_value=1e6), decimals=st.integers(0, 5))
def test_round_price_follows_hyperliquid_rules(price: float, decimals: int) -> None:
    rounded = round_price(price, decimals)
    digits = f"{rounded:.10f}".rstrip("0").rstrip(".")
    assert len(digits.replace(".", "").lstrip("0")) <= max(5, len(str(int(rounded))))
    assert round(rounded, 6 - decimals) == rounded
