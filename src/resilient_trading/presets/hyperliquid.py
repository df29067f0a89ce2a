"""Hyperliquid's REST budget and request weights, ready to wrap the SDK's ``Info`` and ``Exchange``.

Every number comes from Hyperliquid's documentation, *Rate limits and user limits*
(hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/rate-limits-and-user-limits):

- REST requests share an aggregated weight budget of **1200 per minute per IP**;
- ``/info`` requests weigh **20**, except ``l2Book``, ``allMids``, ``clearinghouseState``,
  ``orderStatus``, ``spotClearinghouseState`` and ``exchangeStatus`` (**2**) and ``userRole``
  (**60**);
- some ``/info`` requests add weight per item returned: **+1 per 20 items** for
  ``recentTrades``, ``historicalOrders``, ``userFills``, ``userFillsByTime``,
  ``fundingHistory``, ``userFunding``, ``nonUserFundingUpdates``, ``twapHistory``,
  ``userTwapSliceFills``, ``userTwapSliceFillsByTime``, ``delegatorHistory``,
  ``delegatorRewards``, ``validatorStats``; **+1 per 60 items** for ``candleSnapshot``;
- ``/exchange`` actions weigh **1 + floor(batch_length / 40)**.

Peers get this wrong: hummingbot's connector weighs every request 1 against the 1200 budget,
and ccxt's default info cost is 10 where the documented weight is 20; both can overrun it.

Note that the SDK's ``Info(...)`` and ``Exchange(...)`` constructors each POST ``spotMeta`` and
``meta`` (20 + 20) before any call of yours: :func:`make_info` and :func:`make_exchange` charge
that weight first (and ``make_exchange`` reuses one ``meta`` so it costs nothing more).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from resilient_trading._classify import classify_response
from resilient_trading._client import BreakerLike, RateLimitedClient, RetryLike, Weight
from resilient_trading._errors import ExchangeUnavailableError
from resilient_trading._ratelimit import RateLimit, RateLimiter

__all__ = [
    "CONSTRUCTOR_WEIGHT",
    "EXCHANGE_WEIGHTS",
    "INFO_EXTRA_WEIGHTS",
    "INFO_WEIGHTS",
    "REST_LIMIT",
    "check_response",
    "exchange_weight",
    "info_weight",
    "items_weight",
    "make_exchange",
    "make_info",
    "rest_limit",
    "wrap_exchange",
    "wrap_info",
]

#: 1200 weight per minute per IP, for all REST requests together.
REST_LIMIT = RateLimit(1200, 60.0)
#: What ``Info(...)``/``Exchange(...)`` spend in their constructors: ``spotMeta`` + ``meta``.
CONSTRUCTOR_WEIGHT = 40

_CHEAP = {
    "l2Book",
    "allMids",
    "clearinghouseState",
    "orderStatus",
    "spotClearinghouseState",
    "exchangeStatus",
}
_PER_20 = {
    "recentTrades",
    "historicalOrders",
    "userFills",
    "userFillsByTime",
    "fundingHistory",
    "userFunding",
    "nonUserFundingUpdates",
    "twapHistory",
    "userTwapSliceFills",
    "userTwapSliceFillsByTime",
    "delegatorHistory",
    "delegatorRewards",
    "validatorStats",
}
_PER_60 = {"candleSnapshot"}


def rest_limit(safety_margin: float = 0.05) -> RateLimit:
    """The REST budget less a safety margin (default 5%: 1140 per minute)."""
    if not 0 <= safety_margin < 1:
        raise ValueError(f"safety_margin must be in [0, 1), got {safety_margin!r}")
    return REST_LIMIT.scaled(1 - safety_margin) if safety_margin else REST_LIMIT


def info_weight(request_type: str) -> int:
    """The up-front weight of an ``/info`` request of ``request_type``."""
    if request_type in _CHEAP:
        return 2
    if request_type == "userRole":
        return 60
    return 20


def items_weight(request_type: str, items: int) -> int:
    """The weight added after the answer: per 20 or 60 items returned, where documented."""
    if items < 0:
        raise ValueError("items must be >= 0")
    if request_type in _PER_20:
        return items // 20
    if request_type in _PER_60:
        return items // 60
    return 0


def exchange_weight(batch_length: int = 1) -> int:
    """The weight of an ``/exchange`` action batching ``batch_length`` orders or cancels."""
    if batch_length < 0:
        raise ValueError("batch_length must be >= 0")
    return 1 + batch_length // 40


def _count(result: Any) -> int:
    return len(result) if isinstance(result, list) else 0


#: SDK ``Info`` method → the ``/info`` request type it sends.
_INFO_TYPES: dict[str, str] = {
    "all_mids": "allMids",
    "l2_snapshot": "l2Book",
    "user_state": "clearinghouseState",
    "spot_user_state": "spotClearinghouseState",
    "query_order_by_oid": "orderStatus",
    "query_order_by_cloid": "orderStatus",
    "user_role": "userRole",
    "open_orders": "openOrders",
    "frontend_open_orders": "frontendOpenOrders",
    "meta": "meta",
    "spot_meta": "spotMeta",
    "meta_and_asset_ctxs": "metaAndAssetCtxs",
    "spot_meta_and_asset_ctxs": "spotMetaAndAssetCtxs",
    "candles_snapshot": "candleSnapshot",
    "user_fills": "userFills",
    "user_fills_by_time": "userFillsByTime",
    "funding_history": "fundingHistory",
    "user_funding_history": "userFunding",
    "historical_orders": "historicalOrders",
    "user_twap_slice_fills": "userTwapSliceFills",
    "delegator_history": "delegatorHistory",
    "user_fees": "userFees",
    "user_rate_limit": "userRateLimit",
}

#: SDK ``Info`` method → up-front weight (methods not listed weigh 20).
INFO_WEIGHTS: dict[str, Weight] = {m: info_weight(t) for m, t in _INFO_TYPES.items()}


#: SDK ``Info`` method → weight charged after the answer, from the number of items returned.
def _per_items(request_type: str) -> Callable[[Any], int]:
    def weight(result: Any) -> int:
        return items_weight(request_type, _count(result))

    return weight


INFO_EXTRA_WEIGHTS: dict[str, Callable[[Any], int]] = {
    m: _per_items(t) for m, t in _INFO_TYPES.items() if t in _PER_20 or t in _PER_60
}


def _batch(argument: int) -> Callable[..., int]:
    def weight(*args: Any, **kwargs: Any) -> int:
        requests = args[argument] if len(args) > argument else next(iter(kwargs.values()), [])
        return exchange_weight(len(requests) if isinstance(requests, list) else 1)

    return weight


#: SDK ``Exchange`` method → weight (single actions weigh 1; batches by their length).
EXCHANGE_WEIGHTS: dict[str, Weight] = {
    "bulk_orders": _batch(0),
    "bulk_cancel": _batch(0),
    "bulk_cancel_by_cloid": _batch(0),
    "bulk_modify_orders_new": _batch(0),
}


def check_response(method: str, result: Any) -> None:
    """Raise the classified error carried by a Hyperliquid answer with HTTP 200, if any."""
    err = classify_response(result, operation=method)
    if err is not None:
        raise err


def wrap_info(
    info: Any,
    limiter: RateLimiter,
    *,
    breaker: BreakerLike | None = None,
    retry: RetryLike | None = None,
    default_pause: float = 10.0,
) -> RateLimitedClient[Any]:
    """Wrap an SDK ``Info`` with Hyperliquid's weights (unknown methods weigh 20)."""
    return RateLimitedClient(
        info,
        limiter=limiter,
        weights=INFO_WEIGHTS,
        default_weight=20,
        extra_weights=INFO_EXTRA_WEIGHTS,
        breaker=breaker,
        retry=retry,
        response_check=check_response,
        default_pause=default_pause,
    )


def wrap_exchange(
    exchange: Any,
    limiter: RateLimiter,
    *,
    breaker: BreakerLike | None = None,
    retry: RetryLike | None = None,
    idempotency_checks: Mapping[str, Callable[..., Any]] | None = None,
    default_pause: float = 10.0,
) -> RateLimitedClient[Any]:
    """Wrap an SDK ``Exchange`` with Hyperliquid's action weights and response checks."""
    return RateLimitedClient(
        exchange,
        limiter=limiter,
        weights=EXCHANGE_WEIGHTS,
        default_weight=1,
        breaker=breaker,
        retry=retry,
        response_check=check_response,
        idempotency_checks=idempotency_checks,
        default_pause=default_pause,
    )


def make_info(base_url: str, limiter: RateLimiter, *, timeout: float | None = None) -> Any:
    """Construct the SDK's ``Info`` (``skip_ws=True``) after charging its constructor's weight."""
    from hyperliquid.info import Info

    limiter.acquire(CONSTRUCTOR_WEIGHT)
    with _constructor_answers("Info"):
        return Info(base_url, skip_ws=True, timeout=timeout)


def make_exchange(
    wallet: Any,
    base_url: str,
    limiter: RateLimiter,
    *,
    meta: Any = None,
    spot_meta: Any = None,
    timeout: float | None = None,
) -> Any:
    """Construct the SDK's ``Exchange``; pass ``meta``/``spot_meta`` you already fetched to
    spend nothing, otherwise its constructor's weight is charged first."""
    from hyperliquid.exchange import Exchange

    if meta is None or spot_meta is None:
        limiter.acquire(CONSTRUCTOR_WEIGHT)
    with _constructor_answers("Exchange"):
        return Exchange(wallet, base_url, meta=meta, spot_meta=spot_meta, timeout=timeout)


@contextlib.contextmanager
def _constructor_answers(what: str) -> Iterator[None]:
    """The SDK's constructors index into the ``spotMeta``/``meta`` answers without checking
    them; a malformed body (which the SDK turns into ``{"error": ...}``) then surfaces as a
    ``KeyError``/``TypeError``. That is a struggling exchange, not a bug to stop for."""
    try:
        yield
    except (KeyError, TypeError, IndexError) as exc:
        raise ExchangeUnavailableError(
            f"{what}() could not read the exchange's meta answers ({type(exc).__name__}: {exc})",
            operation=f"{what}.__init__",
        ) from exc
