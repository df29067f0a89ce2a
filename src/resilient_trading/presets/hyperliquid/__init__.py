"""Hyperliquid's REST budget and request weights, and a safe wrapper for the SDK's orders.

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

How other clients weigh these requests (hummingbot, ccxt) is compared in the docs' *Why
this library* page.

The modules, one idea each: ``_weights`` (the numbers), ``_outcomes`` (what an answer's
statuses mean), ``_orders`` (the order-safety rules, no I/O), ``_calls`` (each order path's
arguments turned into items to settle), ``_exchange`` (the sync and async wrappers that run
them), ``_wrap`` (the public wrapping functions), ``_make`` (constructing the SDK's clients),
``_address`` (the per-address action budget, :class:`AddressBudget`), ``_deadman`` (the dead
man's switch and its watchdog, :class:`DeadMansSwitch`), ``_feed`` (the supervised WebSocket
feed, :class:`Feed`) over ``_feed_rules`` (its decisions: backoff, connection cap, staleness).

Example:
    >>> from resilient_trading.presets import hyperliquid as hl
    >>> hl.exchange_weight(400), hl.info_weight("l2Book")
    (11, 2)
"""

from __future__ import annotations

from resilient_trading.presets.hyperliquid._address import AddressBudget
from resilient_trading.presets.hyperliquid._address_rules import AddressStatus
from resilient_trading.presets.hyperliquid._deadman import DeadMansSwitch
from resilient_trading.presets.hyperliquid._exchange import (
    IDEMPOTENT_ACTIONS,
    AsyncSafeExchange,
    SafeExchange,
)
from resilient_trading.presets.hyperliquid._feed import Feed, FeedGate, FeedStatus
from resilient_trading.presets.hyperliquid._feed_rules import StaleFeedError
from resilient_trading.presets.hyperliquid._make import make_exchange, make_info, use_nonces
from resilient_trading.presets.hyperliquid._outcomes import (
    Outcome,
    OutcomeKind,
    check_response,
    outcomes,
)
from resilient_trading.presets.hyperliquid._weights import (
    CONSTRUCTOR_WEIGHT,
    EXCHANGE_WEIGHTS,
    INFO_EXTRA_WEIGHTS,
    INFO_WEIGHTS,
    MARKET_CLOSE_READS,
    MARKET_OPEN_READS,
    REST_LIMIT,
    exchange_weight,
    info_weight,
    items_weight,
    rest_limit,
)
from resilient_trading.presets.hyperliquid._wrap import (
    wrap_exchange,
    wrap_exchange_async,
    wrap_info,
)

__all__ = [
    "CONSTRUCTOR_WEIGHT",
    "EXCHANGE_WEIGHTS",
    "IDEMPOTENT_ACTIONS",
    "INFO_EXTRA_WEIGHTS",
    "INFO_WEIGHTS",
    "MARKET_CLOSE_READS",
    "MARKET_OPEN_READS",
    "REST_LIMIT",
    "AddressBudget",
    "AddressStatus",
    "AsyncSafeExchange",
    "DeadMansSwitch",
    "Feed",
    "FeedGate",
    "FeedStatus",
    "Outcome",
    "OutcomeKind",
    "SafeExchange",
    "StaleFeedError",
    "check_response",
    "exchange_weight",
    "info_weight",
    "items_weight",
    "make_exchange",
    "make_info",
    "outcomes",
    "rest_limit",
    "use_nonces",
    "wrap_exchange",
    "wrap_exchange_async",
    "wrap_info",
]
