"""Wrap the SDK's ``Info`` and ``Exchange``: Hyperliquid's weights, checks and safe orders.

:func:`wrap_info` gives every ``Info`` call its documented weight, the breaker and retry.
:func:`wrap_exchange` is safe by default: every order, cancel and modify path (``order``,
``bulk_orders``, ``modify_order``, ``bulk_modify_orders_new``, ``market_open``,
``market_close``, ``cancel``, ``cancel_by_cloid``, ``bulk_cancel``, ``bulk_cancel_by_cloid``)
is settled (cloids assigned, lost answers looked up before anything is sent again, per-order
outcomes returned); every other action is sent once, never retried, unless it is idempotent
(``update_leverage``, ``schedule_cancel``) or named in ``unsafe_retry``.
:func:`wrap_exchange_async` is the same for ``asyncio`` code: the SDK is synchronous, so each
request runs in a worker thread (``asyncio.to_thread``) while waits for budget and backoff are
awaited on the loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from resilient_trading._client import BreakerLike, RateLimitedClient, RetryLike
from resilient_trading._ratelimit import RateLimiter
from resilient_trading.presets.hyperliquid._exchange import AsyncSafeExchange, SafeExchange
from resilient_trading.presets.hyperliquid._outcomes import check_response
from resilient_trading.presets.hyperliquid._weights import INFO_EXTRA_WEIGHTS, INFO_WEIGHTS

__all__ = ["wrap_exchange", "wrap_exchange_async", "wrap_info"]

P = ParamSpec("P")
R = TypeVar("R")


def wrap_info(
    info: Any,
    limiter: RateLimiter,
    *,
    breaker: BreakerLike | None = None,
    retry: RetryLike | None = None,
    default_pause: float = 10.0,
) -> RateLimitedClient[Any]:
    """Wrap an SDK ``Info`` with Hyperliquid's weights (unknown methods weigh 20).

    Reads are idempotent: every method is retried by ``retry``.
    """
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


_WRAP_DOC = """

    Args:
        exchange: The SDK's ``Exchange`` (see :func:`make_exchange`).
        limiter: The (possibly shared) budget; every request, lookups included, is charged.
        breaker: Guards every call. Outcomes (an IOC that did not match, a cancel that raced
            a fill) are results, never failures.
        retry: Retries transient failures. Order paths send again only after settling what
            the lost attempt did (orders and modifies looked up, cancels simply re-sent);
            without a policy nothing is ever sent twice, but a lost answer is still looked
            up (reads get three tries of their own) and what that cannot settle is raised,
            the cloids in the error's ``unknown_cloids``. Other actions are retried only if
            idempotent (:data:`IDEMPOTENT_ACTIONS`) or named in ``unsafe_retry``.
        info: The ``Info`` used to look orders up (``orderStatus``, weight 2 each); default:
            the ``Exchange``'s own ``info`` (same URL, no constructor cost). One wrapped by
            :func:`wrap_info` is unwrapped for lookups (charged once, here).
        unsafe_retry: Names of other actions to retry blindly (``{"usd_transfer"}``...):
            you accept that a lost answer may apply them twice.
        idempotency_checks: Method name → ``check(*args, **kwargs)`` for other actions:
            asked before a retry; a result other than ``None`` is returned instead. Naming
            an order path raises ``ValueError`` (they are always settled).
        default_pause: Seconds every sharer pauses after a 429 without ``Retry-After``.
        acquire_timeout: Longest wait for budget (``None``: no cap).
        address_budget: The address's action budget (:class:`AddressBudget`): every action
            is counted and paced on it (cancels and reduce-only closes are never paced while
            their allowance lasts); a ``Too many cumulative requests`` refusal throttles it.
            Its ``userRateLimit`` syncs use ``info`` and ``limiter`` unless it has its own.
"""


def _wrapper(cls: Callable[P, R], name: str, summary: str) -> Callable[P, R]:
    """The public function ``name`` that builds a ``cls``: the options are listed once, by
    the class's constructor, and documented once, in ``_WRAP_DOC``."""

    def wrap(*args: P.args, **kwargs: P.kwargs) -> R:
        return cls(*args, **kwargs)

    wrap.__name__ = wrap.__qualname__ = name
    wrap.__doc__ = summary + _WRAP_DOC
    signature = inspect.signature(cls).replace(return_annotation=getattr(cls, "__name__", "Any"))
    vars(wrap)["__signature__"] = signature  # what help(), IDEs and the API docs show
    return wrap


wrap_exchange = _wrapper(
    SafeExchange,
    "wrap_exchange",
    "Wrap an SDK ``Exchange``: Hyperliquid's weights, and orders never sent twice.",
)
wrap_exchange_async = _wrapper(
    AsyncSafeExchange,
    "wrap_exchange_async",
    ":func:`wrap_exchange` for ``asyncio``: every method is a coroutine.",
)
