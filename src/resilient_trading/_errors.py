"""The error tree of resilient-trading.

Every error the library raises, and every error :func:`~resilient_trading.classify` returns,
is a :class:`ResilienceError`. Below the root the tree splits in disjoint branches that
answer the only question a trading bot must answer at once: *retry, settle, or stop?*

.. code-block:: text

    ResilienceError                 root: carries operation, attempt, the cause
    ├── TransientError              retry it (honour ``retry_after`` when set)
    │   ├── NetworkError            connection refused/reset/dropped, DNS, TLS hiccup
    │   ├── RequestTimeoutError     no answer in time (connect or read)
    │   ├── RateLimitedError        429 from the server, the address budget, or the local limiter
    │   ├── ExchangeUnavailableError 5xx, maintenance, malformed body
    │   ├── NonceError              the exchange refused the nonce (duplicate, stale) or expiry
    │   └── LockTimeoutError        a state lock was not acquired in time
    ├── CircuitOpenError            a breaker refused the call without making it
    ├── OrderOutcome                the exchange answered: this order did not rest or trade
    │   ├── OrderNotFilled          an IOC or market order found nothing to match
    │   ├── OrderNotPlaced          post-only would cross, reduce-only would grow, OI cap
    │   └── OrderGone               cancel/modify: the order is no longer open
    └── CriticalError               stop trading and call a human
        ├── AuthenticationError     401/403, unknown wallet, bad signature
        ├── InsufficientFundsError  not enough margin or balance
        ├── InvalidRequestError     an order or configuration the exchange refuses
        ├── StateCorruptedError     a state file that does not parse
        └── CommitNotDurableError   a commit is in place but its durability is not certain

An exception nobody recognises is classified as a plain :class:`CriticalError`: failing
safe means stopping, not retrying something unknown forever.

Messages never contain secrets: every message is passed through :func:`redact` (private
keys, signatures, credential headers, cookies, URL passwords, mnemonics) *before* it is cut
to :data:`MESSAGE_LIMIT` characters. Every error pickles with its attributes (so it crosses a
``ProcessPoolExecutor``), subclasses included.

Why this module is long: it is the whole error tree, nineteen short classes read together as one
contract (which branch means retry, settle or stop); about a third is their docstrings, and the rest
is the redaction, checks and pickling they share.
"""

from __future__ import annotations

import math
from typing import Any

from resilient_trading._redact import redact, safe_text

__all__ = [
    "MAX_RETRY_AFTER",
    "MESSAGE_LIMIT",
    "AuthenticationError",
    "CircuitOpenError",
    "CommitNotDurableError",
    "CriticalError",
    "ExchangeUnavailableError",
    "InsufficientFundsError",
    "InvalidRequestError",
    "LockTimeoutError",
    "NetworkError",
    "NonceError",
    "OrderGone",
    "OrderNotFilled",
    "OrderNotPlaced",
    "OrderOutcome",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResilienceError",
    "StateCorruptedError",
    "TransientError",
    "redact",
    "safe_text",
]

#: The longest wait a classified error asks for, in seconds. A server's ``Retry-After`` above it
#: (a day, a year, a date far ahead) is capped to it, with a log line: a rate limit must slow a
#: bot down, never turn into a stop.
MAX_RETRY_AFTER = 3600.0

#: The longest message an error keeps, in characters (after redaction; a cut ends with ``…``).
MESSAGE_LIMIT = 2000

#: Where a :class:`RateLimitedError` comes from.
RATE_LIMIT_SOURCES = ("server", "address", "local")


def _check_retry_after(retry_after: float | None) -> float | None:
    if retry_after is None:
        return None
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        raise TypeError(f"retry_after must be a number of seconds or None, got {retry_after!r}")
    value = float(retry_after)
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"retry_after must be a finite number >= 0, got {retry_after!r}")
    return value


def _optional_text(value: object, limit: int) -> str | None:
    return None if value is None else safe_text(value, limit)


def _rebuild(
    cls: type[ResilienceError], args: tuple[Any, ...], state: dict[str, Any]
) -> ResilienceError:
    """Unpickle an error without calling its ``__init__`` (whose arguments differ by class)."""
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class ResilienceError(Exception):
    """Root of every error resilient-trading raises or returns.

    Args:
        message: What happened, to what, and what to do next. Secrets are redacted.
        operation: What was being called (``"Exchange.order"``, ``"POST /info"``), if known.
        attempt: Which attempt failed (1 for the first), if known.
        status_code: The HTTP status, when the error came from an HTTP answer.

    The original exception, when there was one, is the ``__cause__``.
    """

    #: The cloids (or oids) whose outcome is still unknown when a settled order call of the
    #: Hyperliquid preset's ``wrap_exchange`` gives up (empty otherwise): look them up
    #: (``orderStatus``) before sending them again. Set on the raised error.
    unknown_cloids: tuple[str, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempt: int | None = None,
        status_code: int | None = None,
    ) -> None:
        if attempt is not None and (isinstance(attempt, bool) or attempt < 1):
            raise ValueError(f"attempt must be a positive int or None, got {attempt!r}")
        self.message = safe_text(message, MESSAGE_LIMIT)
        self.operation = _optional_text(operation, 300)
        self.attempt = attempt
        self.status_code = status_code
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException pickles as cls(*args), which fails for keyword-only arguments (and would
        # run the checks again): rebuild from the attributes instead.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    def _context(self) -> list[str]:
        parts = []
        if self.operation:
            parts.append(f"operation={self.operation}")
        if self.attempt is not None:
            parts.append(f"attempt={self.attempt}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        return parts

    def __str__(self) -> str:
        context = self._context()
        return f"{self.message} [{', '.join(context)}]" if context else self.message

    def __repr__(self) -> str:
        fields = [repr(self.message), *self._context()]
        return f"{type(self).__name__}({', '.join(fields)})"

    @property
    def retryable(self) -> bool:
        """True for a :class:`TransientError`: the call may succeed if tried again."""
        return isinstance(self, TransientError)


class TransientError(ResilienceError):
    """A failure worth retrying: the same call may succeed later.

    Raised (or returned by :func:`classify`) for network trouble, timeouts, rate limits and an
    exchange that is briefly down. Retry with backoff; when ``retry_after`` is set, wait at least
    that many seconds first. Only a *run* of these should stop a bot.

    Args:
        retry_after: Seconds the other side asked us to wait, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        operation: str | None = None,
        attempt: int | None = None,
        status_code: int | None = None,
    ) -> None:
        self.retry_after = _check_retry_after(retry_after)
        super().__init__(message, operation=operation, attempt=attempt, status_code=status_code)

    def _context(self) -> list[str]:
        parts = super()._context()
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after:g}s")
        return parts


class CriticalError(ResilienceError):
    """A failure that must stop trading until a person looks at it.

    Bad credentials, no margin, an order the exchange will never accept, corrupt state, and
    anything nobody recognises. Do not retry; open (and latch) the circuit breaker.
    """


class CircuitOpenError(ResilienceError):
    """A circuit breaker refused the call without making it.

    Neither transient nor critical: it is the breaker speaking. When ``latched`` is true a
    critical error opened it and only an operator's reset (``resilient-trading breaker reset``)
    closes it; otherwise a trial call is allowed from ``retry_at`` on.

    Args:
        name: The breaker's name.
        latched: True when a critical error opened the breaker.
        reason: The error that opened it (type and message).
        opened_at: When it opened (seconds since the epoch).
        retry_at: When a trial call is due (``None`` when latched).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str,
        latched: bool,
        reason: str | None,
        opened_at: float | None,
        retry_at: float | None,
        operation: str | None = None,
    ) -> None:
        self.name = name
        self.latched = latched
        self.reason = _optional_text(reason, MESSAGE_LIMIT)
        self.opened_at = opened_at
        self.retry_at = retry_at
        super().__init__(message, operation=operation)


class OrderOutcome(ResilienceError):
    """The exchange answered, and this order did not rest or trade (or is no longer open).

    Neither transient nor critical: nothing is broken, so nothing is retried and no breaker
    counts it; the bot settles the order and decides afresh. Sending the same order again is a
    *new* order, which is the caller's decision, never a retry's.
    :func:`~resilient_trading.classify_response` returns ``None`` for an answer holding only
    outcomes (the answer is the result); :func:`~resilient_trading.classify_statuses` gives one
    per order.
    """


class OrderNotFilled(OrderOutcome):
    """An IOC or market order found nothing to match (``Order could not immediately match
    against any resting orders``, ``No liquidity available for market order``): nothing traded,
    nothing rests."""


class OrderNotPlaced(OrderOutcome):
    """The market refused this order as it stands right now: a post-only order would have
    crossed, a reduce-only order would increase the position (it is already closed or smaller),
    or the asset is at its open-interest cap. Nothing was placed; re-price or re-size first."""


class OrderGone(OrderOutcome):
    """A cancel or modify found no open order (``Order was never placed, already canceled, or
    filled.``): it filled, was cancelled, or never existed. Nothing to cancel; look up its
    status (``orderStatus``) if the fill matters."""


class NetworkError(TransientError):
    """The connection failed: refused, reset, dropped after idling, DNS or TLS trouble."""


class RequestTimeoutError(TransientError):
    """No answer in time. The request may or may not have reached the other side: before
    retrying a non-idempotent call (an order), check whether the first attempt took effect."""


class RateLimitedError(TransientError):
    """The request budget is spent: the server answered 429 (``source="server"``), the
    exchange refused the address's cumulative action budget (``source="address"``: only this
    address waits, the IP budget is not paused), or the local limiter could not admit the call
    within its timeout (``source="local"``).

    Wait ``retry_after`` seconds (when known) before any sharer of the budget calls again.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        source: str = "server",
        operation: str | None = None,
        attempt: int | None = None,
        status_code: int | None = None,
    ) -> None:
        if source not in RATE_LIMIT_SOURCES:
            raise ValueError(f"source must be one of {RATE_LIMIT_SOURCES}, got {source!r}")
        self.source = source
        super().__init__(
            message,
            retry_after=retry_after,
            operation=operation,
            attempt=attempt,
            status_code=status_code,
        )


class ExchangeUnavailableError(TransientError):
    """The exchange is down or misbehaving for now: 5xx, maintenance, a malformed body."""


class NonceError(TransientError):
    """The exchange refused the signed action as repeated or stale: a duplicate nonce, a nonce
    below the signer's recent ones, or an ``expiresAfter`` already past.

    Nothing was done; sign again with a fresh, larger nonce. (A nonce *too high* is a host clock
    more than a day ahead: that is a :class:`CriticalError`, a fresh nonce cannot help.)"""


class LockTimeoutError(TransientError):
    """A lock guarding shared state was not acquired within the timeout.

    Args:
        lock_path: The lock file (or key) that was busy.
        holder: Who holds it (for example ``"pid 4242"``), if known.
        timeout: The timeout that ran out, in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        lock_path: str,
        holder: str | None = None,
        timeout: float | None = None,
        retry_after: float | None = None,
        operation: str | None = None,
    ) -> None:
        self.lock_path = safe_text(lock_path, 500)
        self.holder = _optional_text(holder, 500)
        self.timeout = timeout
        super().__init__(message, retry_after=retry_after, operation=operation)


class AuthenticationError(CriticalError):
    """Credentials refused: 401/403, an unknown wallet or API wallet, a bad signature.

    Check the key and the account; retrying cannot help."""


class InsufficientFundsError(CriticalError):
    """Not enough margin or balance for the order. Stop and let a person look at the account."""


class InvalidRequestError(CriticalError):
    """The request itself is wrong: an order the exchange refuses (tick size, minimum value,
    size), another 4xx, or an invalid configuration. Fix the code or the configuration."""


class StateCorruptedError(CriticalError):
    """A state file (or stored state) does not parse or does not have the expected shape.

    Args:
        path: The corrupt file.
        backup_path: Where the last good copy is, if there is one; restore it with
            ``resilient-trading state restore PATH``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        backup_path: str | None = None,
        operation: str | None = None,
    ) -> None:
        self.path = path
        self.backup_path = backup_path
        super().__init__(message, operation=operation)


class CommitNotDurableError(CriticalError):
    """A state file was committed, but making it durable failed (the directory ``fsync``).

    The new document *is* in place: every reader sees it, and a transaction that raised
    this must not be repeated as if nothing happened. What is not certain is that it
    survives a power loss. Check the disk (``dmesg``, free space) before trusting it.

    Args:
        path: The state file.
        generation: The generation that was committed.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        generation: int,
        operation: str | None = None,
    ) -> None:
        self.path = path
        self.generation = generation
        super().__init__(message, operation=operation)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_commit_not_durable,
            (self.message, self.path, self.generation, self.operation),
        )


def _rebuild_commit_not_durable(
    message: str, path: str, generation: int, operation: str | None
) -> CommitNotDurableError:
    return CommitNotDurableError(message, path=path, generation=generation, operation=operation)
