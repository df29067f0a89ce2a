"""The bot's parameters, validated by pydantic before anything trades.

Every strategy and risk parameter is a field with its bounds; unknown keys are refused.
:func:`load_config` reads the TOML file and :func:`format_errors` turns a validation error into
one short line per bad field, for ``--check-config``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "INTERVALS",
    "KNOWN_COINS",
    "BotConfig",
    "ConfigError",
    "ExchangeConfig",
    "FeedConfig",
    "MeanReversionParams",
    "MetricsConfig",
    "RiskParams",
    "TrendParams",
    "format_errors",
    "load_config",
    "validate_config",
]

#: Coins the example knows, with the largest leverage Hyperliquid allows on each.
KNOWN_COINS: dict[str, int] = {"BTC": 40, "ETH": 25, "SOL": 20}
#: Candle intervals Hyperliquid serves.
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d")

Coin = Literal["BTC", "ETH", "SOL"]
Interval = Literal["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d"]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _StrategyBase(_Strict):
    enabled: bool = True
    #: Smallest reward-to-risk ratio (target distance / stop distance) worth trading.
    min_rr_ratio: PositiveFloat = 1.5
    #: Stop distance in ATRs.
    stop_atr: PositiveFloat = 1.5
    #: Target distance in ATRs.
    target_atr: PositiveFloat = 3.0
    #: Signals below this confidence are ignored.
    min_confidence: Fraction = 0.5
    atr_period: Annotated[int, Field(ge=2, le=200)] = 14


class TrendParams(_StrategyBase):
    """Trend following: a fast EMA crossing a slow one, confirmed by RSI."""

    fast_ema: Annotated[int, Field(ge=2, le=200)] = 9
    slow_ema: Annotated[int, Field(ge=3, le=400)] = 21
    rsi_period: Annotated[int, Field(ge=2, le=100)] = 14

    @model_validator(mode="after")
    def _fast_below_slow(self) -> TrendParams:
        if self.fast_ema >= self.slow_ema:
            raise ValueError("fast_ema must be smaller than slow_ema")
        return self


class MeanReversionParams(_StrategyBase):
    """Mean reversion: a close outside the Bollinger band, RSI stretched, back toward the mean."""

    band_period: Annotated[int, Field(ge=5, le=200)] = 20
    band_width: Annotated[float, Field(gt=0, le=5, allow_inf_nan=False)] = 2.0
    rsi_period: Annotated[int, Field(ge=2, le=100)] = 14
    rsi_low: Annotated[float, Field(gt=0, lt=50)] = 30.0
    rsi_high: Annotated[float, Field(gt=50, lt=100)] = 70.0


class RiskParams(_Strict):
    """How much to risk and how much leverage to use."""

    #: Fraction of account value lost if the stop is hit (a small positive fraction).
    risk_per_trade: Annotated[float, Field(gt=0, le=0.05, allow_inf_nan=False)] = 0.01
    leverage: Annotated[int, Field(ge=1, le=50)] = 3
    #: Largest position notional in USD.
    max_position_usd: Annotated[float, Field(gt=10, allow_inf_nan=False)] = 2_000.0
    #: Stop trading for the day after this fraction of account value is lost.
    max_daily_loss: Annotated[float, Field(gt=0, le=0.5, allow_inf_nan=False)] = 0.05
    #: Stop distance, as a fraction of the entry price, for a stop re-armed on a position
    #: whose own stop is unknown (a position found at start, or one opened by hand).
    fallback_stop: Annotated[float, Field(gt=0, le=0.5, allow_inf_nan=False)] = 0.03


class ExchangeConfig(_Strict):
    """How the bot talks to the exchange: budget, breaker, retry."""

    #: Share of Hyperliquid's 1200/min weight budget this bot may use.
    budget_share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.9
    #: Seconds every sharer pauses after a 429 (Hyperliquid sends no Retry-After).
    pause_after_429: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10.0
    request_timeout: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 5.0
    breaker_fail_max: Annotated[int, Field(ge=1, le=100)] = 5
    breaker_reset_timeout: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 15.0
    retry_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    retry_base_delay: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = 0.2
    retry_max_delay: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 5.0
    #: Hours the address's action budget must last (Hyperliquid: 10,000 actions plus one per
    #: USDC traded): ordinary actions are paced to it; cancels and closes never are.
    address_lasts_hours: Annotated[float, Field(gt=0, le=24 * 366, allow_inf_nan=False)] = 168.0
    #: Actions that may go at once within that pace.
    address_burst: Annotated[int, Field(ge=1, le=1000)] = 20


class FeedConfig(_Strict):
    """Market data and order updates over a supervised WebSocket (``presets.hyperliquid.Feed``)."""

    #: Off: every loop polls REST for candles, mids, the account and each live order.
    enabled: bool = True
    #: Seconds the candle or mid stream may stay silent before it counts as stale (no new
    #: entries; the feed resubscribes, then reconnects).
    max_silence: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 5.0
    #: Longest time the account read over REST is reused while no fill or write changed it.
    resync_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 60.0
    #: Longest pause between reconnection attempts.
    backoff_max: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10.0


class MetricsConfig(_Strict):
    """The bot's ``/metrics`` and ``/healthz`` endpoint (see ``health.py``)."""

    #: Serve the endpoint on this port (0: a free port, printed at start). Absent: no
    #: endpoint. ``--metrics-port`` overrides it. Needs the ``metrics`` extra.
    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    #: Where to listen: the loopback by default (nothing is exposed to the network).
    host: Annotated[str, Field(min_length=1, max_length=255)] = "127.0.0.1"
    #: ``/healthz`` turns 503 when the loop has not completed a step for this many
    #: ``loop_seconds`` (a step waiting out retries and timeouts can take several).
    stalled_loops: Annotated[int, Field(ge=2, le=10_000)] = 10
    #: ... when the candle or mid stream has been silent this long (seconds). The feed's gate
    #: already stops new entries after ``feed.max_silence``; this is when a person should look.
    feed_stale_seconds: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)] = 30.0
    #: ... when an address's action budget would run out within this many hours at the
    #: last hour's pace.
    runway_alert_hours: Annotated[float, Field(gt=0, le=24 * 366, allow_inf_nan=False)] = 24.0


class BotConfig(_Strict):
    """The whole configuration file."""

    coin: Coin = "BTC"
    interval: Interval = "1m"
    #: Candles fetched per decision.
    lookback: Annotated[int, Field(ge=30, le=1000)] = 120
    #: Seconds between decisions.
    loop_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 2.0
    #: Where state, breaker and nonce files live (relative to the config file).
    state_dir: str = ".demo"
    trend: TrendParams = TrendParams()
    mean_reversion: MeanReversionParams = MeanReversionParams()
    risk: RiskParams = RiskParams()
    exchange: ExchangeConfig = ExchangeConfig()
    feed: FeedConfig = FeedConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _leverage_within_exchange_limit(self) -> BotConfig:
        limit = KNOWN_COINS[self.coin]
        if self.risk.leverage > limit:
            raise ValueError(
                f"risk.leverage {self.risk.leverage} exceeds {self.coin}'s maximum {limit}"
            )
        if not (self.trend.enabled or self.mean_reversion.enabled):
            raise ValueError("enable at least one strategy (trend or mean_reversion)")
        return self


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; ``lines`` name each problem."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("; ".join(lines))


def format_errors(exc: ValidationError) -> list[str]:
    """One short line per bad field: ``risk.risk_per_trade: Input should be ...``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{where}: {message}")
    return lines


def load_config(path: str | Path) -> BotConfig:
    """Read and validate a TOML configuration file; raises :class:`ConfigError`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    return validate_config(data)


def validate_config(data: object) -> BotConfig:
    """Validate already-parsed parameters; raises :class:`ConfigError`."""
    try:
        return BotConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from exc
