"""Construct the SDK's ``Info`` and ``Exchange`` with their hidden reads charged and every
failure classified.

The SDK's ``Info(...)`` and ``Exchange(...)`` constructors each POST ``spotMeta`` and ``meta``
(20 + 20) before any call of yours: :func:`make_info` and :func:`make_exchange` charge that
weight first (``make_exchange`` spends nothing when given the ``meta``/``spot_meta`` you
already fetched). Whatever the constructor raises comes out as a
:class:`~resilient_trading.ResilienceError`: a 429 is a
:class:`~resilient_trading.RateLimitedError` that pauses every sharer of the limiter, a
malformed answer an :class:`~resilient_trading.ExchangeUnavailableError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from resilient_trading._classify import classify
from resilient_trading._errors import (
    ExchangeUnavailableError,
    RateLimitedError,
    ResilienceError,
)
from resilient_trading._ratelimit import RateLimiter
from resilient_trading._validate import check_number
from resilient_trading.presets.hyperliquid._weights import CONSTRUCTOR_WEIGHT

__all__ = ["make_exchange", "make_info", "use_nonces"]


def make_info(
    base_url: str,
    limiter: RateLimiter,
    *,
    timeout: float | None = None,
    default_pause: float = 10.0,
) -> Any:
    """Construct the SDK's ``Info`` (``skip_ws=True``) after charging its constructor's weight.

    Raises:
        ResilienceError: Classified; after a 429 the limiter is paused for ``Retry-After``
            (or ``default_pause``) seconds, so every sharer backs off.
    """
    from hyperliquid.info import Info

    pause = check_number("default_pause", default_pause)
    limiter.acquire(CONSTRUCTOR_WEIGHT)
    with _constructor_answers("Info", limiter, pause):
        return Info(base_url, skip_ws=True, timeout=timeout)


def make_exchange(
    wallet: Any,
    base_url: str,
    limiter: RateLimiter,
    *,
    meta: Any = None,
    spot_meta: Any = None,
    timeout: float | None = None,
    account_address: str | None = None,
    vault_address: str | None = None,
    default_pause: float = 10.0,
) -> Any:
    """Construct the SDK's ``Exchange``; pass ``meta``/``spot_meta`` you already fetched to
    spend nothing, otherwise its constructor's weight is charged first.

    Raises:
        ResilienceError: Classified, as for :func:`make_info`.
    """
    from hyperliquid.exchange import Exchange

    pause = check_number("default_pause", default_pause)
    if meta is None or spot_meta is None:
        limiter.acquire(CONSTRUCTOR_WEIGHT)
    with _constructor_answers("Exchange", limiter, pause):
        return Exchange(
            wallet,
            base_url,
            meta=meta,
            spot_meta=spot_meta,
            timeout=timeout,
            account_address=account_address,
            vault_address=vault_address,
        )


def use_nonces(source: Any) -> Callable[[], None]:
    """Make the SDK sign every ``Exchange`` action with a nonce from ``source``, process-wide.

    The SDK signs with ``get_timestamp_ms()``, so two processes (or threads) signing with one
    key in the same millisecond collide (``Invalid nonce: duplicate nonce``). ``source`` is
    anything with a ``next() -> int`` method or a callable returning an int, strictly
    increasing across every signer of the key (a ``NonceSource`` shared through a file or
    Redis). Returns a function that puts the SDK's own clock back.

    Example:
        >>> restore = use_nonces(lambda: 1_700_000_000_000)
        >>> restore()
    """
    import hyperliquid.exchange

    take = getattr(source, "next", None)
    nonce = take if callable(take) else source
    if not callable(nonce):
        raise TypeError(f"source must have next() or be callable, got {type(source).__name__}")
    previous = hyperliquid.exchange.get_timestamp_ms
    hyperliquid.exchange.get_timestamp_ms = nonce

    def restore() -> None:
        hyperliquid.exchange.get_timestamp_ms = previous

    return restore


@contextlib.contextmanager
def _constructor_answers(what: str, limiter: RateLimiter, default_pause: float) -> Iterator[None]:
    """Classify what a constructor raises. The SDK indexes into the ``spotMeta``/``meta``
    answers without checking them; a malformed body (which the SDK turns into
    ``{"error": ...}``) then surfaces as a ``KeyError``/``TypeError``: a struggling exchange,
    not a bug to stop for."""
    operation = f"{what}.__init__"
    try:
        yield
    except ResilienceError:
        raise
    except (KeyError, TypeError, IndexError) as exc:
        raise ExchangeUnavailableError(
            f"{what}() could not read the exchange's meta answers ({type(exc).__name__}); "
            "retry later",
            operation=operation,
        ) from exc
    except Exception as exc:
        err = classify(exc, operation=operation)
        if isinstance(err, RateLimitedError) and err.source == "server":
            limiter.pause(err.retry_after if err.retry_after is not None else default_pause)
        if err is exc:
            raise
        raise err from exc
