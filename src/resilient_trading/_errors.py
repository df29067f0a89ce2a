"""The error tree of resilient-trading.

Every error the library raises, and every error :func:`~resilient_trading.classify` returns,
is a :class:`ResilienceError`. Below the root the tree splits in two disjoint branches that
answer the only question a trading bot must answer at once: *retry, or stop?*

.. code-block:: text

    ResilienceError                 root: carries operation, attempt, the cause
    ├── TransientError              retry it (honour ``retry_after`` when set)
    │   ├── NetworkError            connection refused/reset/dropped, DNS, TLS hiccup
    │   ├── RequestTimeoutError     no answer in time (connect or read)
    │   ├── RateLimitedError        429 from the server, or the local budget refused
    │   ├── ExchangeUnavailableError 5xx, maintenance, malformed body
    │   ├── NonceError              the exchange refused the nonce (duplicate, stale)
    │   └── LockTimeoutError        a state lock was not acquired in time
    ├── CircuitOpenError            a breaker refused the call without making it
    └── CriticalError               stop trading and call a human
        ├── AuthenticationError     401/403, unknown wallet, bad signature
        ├── InsufficientFundsError  not enough margin or balance
        ├── InvalidRequestError     an order or configuration the exchange refuses
        └── StateCorruptedError     a state file that does not parse

An exception nobody recognises is classified as a plain :class:`CriticalError`: failing
safe means stopping, not retrying something unknown forever.

Messages never contain secrets: every message is passed through :func:`redact`, which
removes private keys, signatures and credential headers.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "AuthenticationError",
    "CircuitOpenError",
    "CriticalError",
    "ExchangeUnavailableError",
    "InsufficientFundsError",
    "InvalidRequestError",
    "LockTimeoutError",
    "NetworkError",
    "NonceError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResilienceError",
    "StateCorruptedError",
    "TransientError",
    "redact",
]

# 64 or more hex digits: private keys, signature halves (r, s), raw signatures. Addresses
# (40 hex digits) stay: they are what a person needs to see which wallet was refused.
_LONG_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]{64,}")
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (?P<key>["']?(?:authorization|proxy-authorization|x-api-key|api[_-]?key|api[_-]?secret|
        secret|token|access[_-]?token|password|passwd|private[_-]?key|signature|cookie|set-cookie)
        ["']?\s*[:=]\s*)
    (?P<value>\{[^{}]*\}|"[^"]*"|'[^']*'|(?:Bearer|Basic)\s+\S+|[^\s,;)}\]]+)
    """
)


def redact(text: str) -> str:
    """Return ``text`` with secrets replaced by ``<redacted>``.

    Removes runs of 64+ hex digits (private keys, signatures) and the values of
    credential-like fields (``Authorization``, ``api_key``, ``signature``, ``password`` ...).

    >>> redact("Authorization: Bearer abc.def")
    'Authorization: <redacted>'
    """
    text = _SECRET_FIELD.sub(lambda m: m.group("key") + "<redacted>", text)
    return _LONG_HEX.sub("<redacted>", text)


def _check_retry_after(retry_after: float | None) -> float | None:
    if retry_after is None:
        return None
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        raise TypeError(f"retry_after must be a number of seconds or None, got {retry_after!r}")
    value = float(retry_after)
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"retry_after must be a finite number >= 0, got {retry_after!r}")
    return value


class ResilienceError(Exception):
    """Root of every error resilient-trading raises or returns.

    Args:
        message: What happened, to what, and what to do next. Secrets are redacted.
        operation: What was being called (``"Exchange.order"``, ``"POST /info"``), if known.
        attempt: Which attempt failed (1 for the first), if known.
        status_code: The HTTP status, when the error came from an HTTP answer.

    The original exception, when there was one, is the ``__cause__``.
    """

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
        self.message = redact(str(message))
        self.operation = None if operation is None else redact(str(operation))
        self.attempt = attempt
        self.status_code = status_code
        super().__init__(self.message)

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
        self.reason = reason
        self.opened_at = opened_at
        self.retry_at = retry_at
        super().__init__(message, operation=operation)


class NetworkError(TransientError):
    """The connection failed: refused, reset, dropped after idling, DNS or TLS trouble."""


class RequestTimeoutError(TransientError):
    """No answer in time. The request may or may not have reached the other side: before
    retrying a non-idempotent call (an order), check whether the first attempt took effect."""


class RateLimitedError(TransientError):
    """The request budget is spent: the server answered 429 (``source="server"``) or the local
    limiter could not admit the call within its timeout (``source="local"``).

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
        if source not in ("server", "local"):
            raise ValueError(f"source must be 'server' or 'local', got {source!r}")
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
    """The exchange refused the request's nonce (duplicate or outside the accepted range).

    Nothing was done; sign again with a fresh, larger nonce."""


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
        self.lock_path = lock_path
        self.holder = holder
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
