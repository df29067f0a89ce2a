"""Hyperliquid's REST budget and the weight of every SDK call.

Every number comes from Hyperliquid's documentation, *Rate limits and user limits*
(hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/rate-limits-and-user-limits).
A batch's weight is read from the batch itself, whether it was passed by position or by
keyword, so ``bulk_orders(builder=None, order_requests=[...400 orders])`` weighs 11, not 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resilient_trading._client import Weight
from resilient_trading._ratelimit import RateLimit

__all__ = [
    "CONSTRUCTOR_WEIGHT",
    "EXCHANGE_WEIGHTS",
    "INFO_EXTRA_WEIGHTS",
    "INFO_WEIGHTS",
    "MARKET_CLOSE_READS",
    "MARKET_OPEN_READS",
    "REST_LIMIT",
    "exchange_weight",
    "info_weight",
    "items_weight",
    "rest_limit",
]

#: 1200 weight per minute per IP, for all REST requests together.
REST_LIMIT = RateLimit(1200, 60.0)
#: What ``Info(...)``/``Exchange(...)`` spend in their constructors: ``spotMeta`` + ``meta``.
CONSTRUCTOR_WEIGHT = 40

_CHEAP = frozenset(
    {
        "l2Book",
        "allMids",
        "clearinghouseState",
        "orderStatus",
        "spotClearinghouseState",
        "exchangeStatus",
    }
)
_PER_20 = frozenset(
    {
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
)
_PER_60 = frozenset({"candleSnapshot"})


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


#: The reads ``Exchange.market_open`` makes inside itself when no ``px`` is given: ``allMids``.
MARKET_OPEN_READS = info_weight("allMids")
#: The reads ``Exchange.market_close`` makes: ``clearinghouseState``, and ``allMids`` when no
#: ``px`` is given.
MARKET_CLOSE_READS = info_weight("clearinghouseState") + info_weight("allMids")


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
    "user_staking_rewards": "delegatorRewards",
    "user_fees": "userFees",
    "user_rate_limit": "userRateLimit",
}

#: SDK ``Info`` method → up-front weight (methods not listed weigh 20).
INFO_WEIGHTS: dict[str, Weight] = {m: info_weight(t) for m, t in _INFO_TYPES.items()}


def _per_items(request_type: str) -> Callable[[Any], int]:
    def weight(result: Any) -> int:
        return items_weight(request_type, _count(result))

    return weight


#: SDK ``Info`` method → weight charged after the answer, from the number of items returned.
INFO_EXTRA_WEIGHTS: dict[str, Callable[[Any], int]] = {
    m: _per_items(t) for m, t in _INFO_TYPES.items() if t in _PER_20 or t in _PER_60
}


def _batch(parameter: str) -> Callable[..., int]:
    """The weight of a batch method whose first parameter, ``parameter``, is the batch."""

    def weight(*args: Any, **kwargs: Any) -> int:
        batch = args[0] if args else kwargs.get(parameter)
        return exchange_weight(len(batch) if isinstance(batch, list | tuple) else 1)

    weight.__name__ = f"weight_of_{parameter}"
    return weight


#: SDK ``Exchange`` method → weight (single actions weigh 1; batches by their length; local
#: setters weigh nothing). ``market_open``/``market_close`` add the reads they make inside.
EXCHANGE_WEIGHTS: dict[str, Weight] = {
    "bulk_orders": _batch("order_requests"),
    "bulk_cancel": _batch("cancel_requests"),
    "bulk_cancel_by_cloid": _batch("cancel_requests"),
    "bulk_modify_orders_new": _batch("modify_requests"),
    "set_expires_after": 0,
}
