"""Map real exceptions and exchange answers onto the error tree.

:func:`classify` never imports an optional package: it recognises ``requests``, ``httpx``,
``urllib3`` and Hyperliquid SDK exceptions by the names in their class hierarchy and reads
their documented attributes. The rules are tried in this order:

1. a :class:`ResilienceError` is returned unchanged;
2. rules registered with :func:`register_rule` (newest first);
3. Hyperliquid SDK ``ClientError`` / ``ServerError`` (by status code and message);
4. HTTP status errors of ``requests`` / ``httpx`` (by status code and ``Retry-After``);
5. timeouts, then connection errors, of ``requests`` / ``httpx`` / ``urllib3`` / the stdlib;
6. anything else: a plain :class:`CriticalError` (fail safe).

Why this module is long: the rules above are one ordered list and the order is the meaning (the SDK
before plain HTTP, a refused connection before a timeout), so the public ``classify_*`` entry
points, ``Retry-After`` parsing and the tables of each client's exception names are kept where that
order can be read; the exchange's message texts are in ``_classify_messages.py``.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from resilient_trading._classify_messages import find_rule
from resilient_trading._errors import (
    MAX_RETRY_AFTER,
    AuthenticationError,
    CriticalError,
    ExchangeUnavailableError,
    InvalidRequestError,
    NetworkError,
    OrderGone,
    OrderOutcome,
    RateLimitedError,
    RequestTimeoutError,
    ResilienceError,
)
from resilient_trading._redact import safe_text

__all__ = [
    "classify",
    "classify_message",
    "classify_response",
    "classify_status",
    "classify_statuses",
    "exchange_error_kind",
    "is_order_gone",
    "parse_retry_after",
    "register_rule",
]

log = logging.getLogger("resilient_trading.classify")

#: How much of a foreign text (an exception's, a response body) goes into a message.
_EXCEPTION_TEXT_LIMIT = 300
_BODY_LIMIT = 200

_rules: list[tuple[type[BaseException], Callable[[BaseException], ResilienceError | None]]] = []
_rules_lock = threading.Lock()


def register_rule(
    exc_type: type[BaseException], rule: Callable[[BaseException], ResilienceError | None]
) -> Callable[[], None]:
    """Teach :func:`classify` about your own exceptions.

    Args:
        exc_type: The rule is tried for instances of this type (and subclasses).
        rule: Returns the :class:`ResilienceError` to use, or ``None`` to fall through to the
            built-in rules. It must not raise.

    Returns:
        A function that removes the rule again.

    Example:
        >>> class MyGatewayDown(Exception): ...
        >>> remove = register_rule(MyGatewayDown, lambda e: ExchangeUnavailableError(str(e)))
        >>> type(classify(MyGatewayDown("down"))).__name__
        'ExchangeUnavailableError'
        >>> remove()
    """
    if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
        raise TypeError(f"exc_type must be an exception class, got {exc_type!r}")
    if not callable(rule):
        raise TypeError(f"rule must be callable, got {rule!r}")
    entry = (exc_type, rule)
    with _rules_lock:
        _rules.insert(0, entry)

    def remove() -> None:
        with _rules_lock:
            if entry in _rules:
                _rules.remove(entry)

    return remove


# --- messages the exchange sends back (HTTP 200 with an error inside) -----------------------


def classify_message(message: str, *, operation: str | None = None) -> ResilienceError:
    """Classify an error message sent by the exchange (the text of ``{"error": ...}`` or of
    ``{"status": "err", "response": ...}``).

    Every text Hyperliquid documents has a rule (docs/classification.md lists them). An order
    the market did not take (an IOC with no match, a post-only that would cross, a cancel of an
    order already gone) gives an :class:`OrderOutcome`, neither transient nor critical. Unknown
    messages are critical.

    Example:
        >>> err = classify_message("Order could not immediately match against any resting orders.")
        >>> type(err).__name__, err.retryable
        ('OrderNotFilled', False)
    """
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    rule = find_rule(message)
    if rule is not None:
        return rule.build(message, operation)
    return CriticalError(
        f"exchange refused (unrecognised): {message} (stop and let a person read it)",
        operation=operation,
    )


def exchange_error_kind(message: str) -> str | None:
    """Hyperliquid's name for the error in ``message`` (``"IocCancel"``, ``"MissingOrder"``,
    ``"PerpMargin"``, ``"DuplicateNonce"``...), or ``None`` when no rule knows it.

    >>> exchange_error_kind("Price must be divisible by tick size. asset=0")
    'Tick'
    """
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    rule = find_rule(message)
    return None if rule is None else rule.kind


def is_order_gone(message: str) -> bool:
    """True when a cancel or modify answer says the order is no longer open (``Order was
    never placed, already canceled, or filled.``): it filled, was cancelled, or never existed.

    It is an everyday race (a cancel sent as the order fills), never a reason to stop.

    >>> is_order_gone("Order was never placed, already canceled, or filled. asset=0")
    True
    """
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    rule = find_rule(message)
    return rule is not None and rule.error is OrderGone


def _severity(err: ResilienceError) -> tuple[bool, bool]:
    """Critical first, then transient (or any other error: worth a retry), then an outcome."""
    return isinstance(err, CriticalError), not isinstance(err, OrderOutcome)


def classify_statuses(
    response: Any, *, operation: str | None = None
) -> list[ResilienceError | None] | None:
    """One entry per order of an ``/exchange`` answer's ``response.data.statuses``: ``None``
    for an order that rests, filled or succeeded, else its classified error or outcome.

    Returns ``None`` when the answer holds no per-order statuses (a top-level error, another
    action): use :func:`classify_response` for those. Settle a batch order by order with it:
    a filled or resting order is done and must never be sent again.

    Example:
        >>> answer = {"status": "ok", "response": {"type": "order", "data": {"statuses": [
        ...     {"filled": {"oid": 1, "totalSz": "0.1", "avgPx": "100"}},
        ...     {"error": "Order could not immediately match against any resting orders."}]}}}
        >>> [type(s).__name__ for s in classify_statuses(answer)]
        ['NoneType', 'OrderNotFilled']
    """
    if not isinstance(response, Mapping):
        return None
    inner = response.get("response")
    data = inner.get("data") if isinstance(inner, Mapping) else None
    statuses = data.get("statuses") if isinstance(data, Mapping) else None
    if not isinstance(statuses, list):
        return None
    return [
        classify_message(status["error"], operation=operation)
        if isinstance(status, Mapping) and isinstance(status.get("error"), str)
        else None
        for status in statuses
    ]


def classify_response(response: Any, *, operation: str | None = None) -> ResilienceError | None:
    """Classify a Hyperliquid ``/exchange`` or ``/info`` answer that arrived with HTTP 200.

    Returns the most severe error the answer holds (critical before transient; the first of
    equals): ``{"status": "err", "response": "..."}``, a per-order ``{"error": "..."}``, or the
    SDK's ``{"error": "Could not parse JSON: ..."}`` for a malformed body. Returns ``None`` when
    the answer holds no error, *or only order outcomes* (an IOC with no match, a cancel of an
    order already gone...): such an answer is a result, not a failure; read its statuses (or
    :func:`classify_statuses`) to settle each order.

    Example:
        >>> answer = {"status": "err", "response": "Invalid nonce: duplicate nonce 5"}
        >>> err = classify_response(answer)
        >>> type(err).__name__, err.retryable
        ('NonceError', True)
    """
    if not isinstance(response, Mapping):
        return None
    found: list[ResilienceError]
    if isinstance(response.get("error"), str):
        found = [classify_message(response["error"], operation=operation)]
    elif response.get("status") == "err":
        found = [classify_message(safe_text(response.get("response")), operation=operation)]
    else:
        found = [e for e in classify_statuses(response, operation=operation) or [] if e]
    worst = max(found, key=_severity, default=None)
    if worst is None or isinstance(worst, OrderOutcome):
        return None
    return worst


# --- HTTP status codes --------------------------------------------------------------------------


def parse_retry_after(value: Any, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header value (seconds or an HTTP date) into seconds >= 0."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: Any, name: str) -> Any:
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    try:
        value = getter(name)
        if value is None:
            value = getter(name.lower())
    except Exception as exc:  # a strange mapping: treat as no header, and say so
        log.debug("could not read header %s: %s", name, safe_text(exc, 200))
        return None
    return value


def _capped_retry_after(seconds: float | None, what: str) -> float | None:
    if seconds is None or seconds <= MAX_RETRY_AFTER:
        return seconds
    log.warning(
        "%s asked to wait %.0fs (Retry-After); waiting %.0fs instead (MAX_RETRY_AFTER), "
        "so a rate limit never becomes a stop",
        what,
        seconds,
        MAX_RETRY_AFTER,
    )
    return MAX_RETRY_AFTER


def classify_status(
    status: int,
    *,
    headers: Any = None,
    body: str | None = None,
    operation: str | None = None,
) -> ResilienceError:
    """Classify an HTTP status code (with its headers and body, when known).

    429 → :class:`RateLimitedError` with ``Retry-After`` (capped at
    :data:`~resilient_trading.MAX_RETRY_AFTER`, one hour); 408 → :class:`RequestTimeoutError`;
    5xx → :class:`ExchangeUnavailableError`; 401/403 → :class:`AuthenticationError`;
    other 4xx → :class:`InvalidRequestError`; anything else → :class:`CriticalError`.
    """
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {status!r}")
    retry_after = _capped_retry_after(
        parse_retry_after(_header(headers, "Retry-After")),
        f"HTTP {status}" + (f" to {operation}" if operation else ""),
    )
    detail = (
        f": {safe_text(body, _BODY_LIMIT)}" if body and body.strip() not in ("", "null") else ""
    )
    if status == 429:
        return RateLimitedError(
            f"HTTP 429 Too Many Requests{detail}",
            retry_after=retry_after,
            source="server",
            operation=operation,
            status_code=status,
        )
    if status == 408:
        return RequestTimeoutError(
            f"HTTP 408 Request Timeout{detail}", operation=operation, status_code=status
        )
    if status in (401, 403):
        return AuthenticationError(
            f"HTTP {status}: credentials refused{detail}", operation=operation, status_code=status
        )
    if 400 <= status < 500:
        return InvalidRequestError(
            f"HTTP {status}: request refused{detail}", operation=operation, status_code=status
        )
    if 500 <= status < 600:
        return ExchangeUnavailableError(
            f"HTTP {status} from the exchange{detail}",
            retry_after=retry_after,
            operation=operation,
            status_code=status,
        )
    return CriticalError(
        f"unexpected HTTP {status}{detail}", operation=operation, status_code=status
    )


# --- exceptions -------------------------------------------------------------------------------


def _names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def _has(names: set[str], *suffixes: str) -> bool:
    return any(n.endswith(s) for n in names for s in suffixes)


def _sdk_error(
    exc: BaseException, names: set[str], operation: str | None
) -> ResilienceError | None:
    if not any(n.startswith("hyperliquid.") for n in names):
        return None
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return None
    if _has(names, "hyperliquid.utils.error.ClientError"):
        message = getattr(exc, "error_message", None)
        # For a 429 or a non-JSON body the SDK puts the response headers in error_data.
        headers = getattr(exc, "header", None) or getattr(exc, "error_data", None)
        if status not in (401, 403, 408, 429) and isinstance(message, str):
            # An empty or "null" body matches no rule: it falls through to the status.
            by_message = classify_message(message.strip(), operation=operation)
            if type(by_message) is not CriticalError:
                by_message.status_code = status
                return by_message
        return classify_status(
            status,
            headers=headers,  # _header() reads only what has a .get (not the SDK's error data)
            body=message if isinstance(message, str) else None,
            operation=operation,
        )
    if _has(names, "hyperliquid.utils.error.ServerError"):
        message = getattr(exc, "message", None)
        return classify_status(
            status, body=message if isinstance(message, str) else None, operation=operation
        )
    return None


def _http_status_error(
    exc: BaseException, names: set[str], operation: str | None
) -> ResilienceError | None:
    if not _has(names, "requests.exceptions.HTTPError", "httpx.HTTPStatusError"):
        return None
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return None
    return classify_status(status, headers=getattr(response, "headers", None), operation=operation)


_TIMEOUTS = (
    "requests.exceptions.Timeout",
    "httpx.TimeoutException",
    "urllib3.exceptions.TimeoutError",
    "asyncio.exceptions.TimeoutError",
    "builtins.TimeoutError",
)
_NETWORK = (
    "requests.exceptions.ConnectionError",
    "requests.exceptions.ChunkedEncodingError",
    "requests.exceptions.ContentDecodingError",
    "httpx.NetworkError",
    "httpx.RemoteProtocolError",
    "httpx.ProxyError",
    "urllib3.exceptions.ProtocolError",
    "urllib3.exceptions.MaxRetryError",
    "http.client.IncompleteRead",
    "builtins.ConnectionError",  # with RemoteDisconnected, ConnectionResetError, BrokenPipe...
    "socket.gaierror",
    "socket.herror",
)  # ssl errors: SSLCertVerificationError is an AuthenticationError, every other SSLError a
# NetworkError (EOF, zero return, want read/write, syscall) by the rule after the errnos.
_MALFORMED = (
    "requests.exceptions.InvalidJSONError",
    "httpx.DecodingError",
)
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ENETDOWN,
    errno.ENETUNREACH,
    errno.ENETRESET,
    errno.EHOSTDOWN,
    errno.EHOSTUNREACH,
    errno.ETIMEDOUT,
    errno.EAGAIN,
}


def _describe(exc: BaseException) -> str:
    text = safe_text(exc, _EXCEPTION_TEXT_LIMIT)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def classify(
    exc: BaseException, *, operation: str | None = None, attempt: int | None = None
) -> ResilienceError:
    """Map any exception onto the error tree: :class:`TransientError` or :class:`CriticalError`.

    A :class:`ResilienceError` is returned unchanged. Any other exception gives a new error whose
    ``__cause__`` is ``exc`` and whose message names the original type and never a secret.
    Unrecognised exceptions give a plain :class:`CriticalError` (fail safe).

    Args:
        exc: The exception to classify.
        operation: What was being called, for the message.
        attempt: Which attempt failed, for the message.

    Example:
        >>> classify(ConnectionResetError(104, "Connection reset by peer"))
        NetworkError('ConnectionResetError: [Errno 104] Connection reset by peer')
    """
    if isinstance(exc, ResilienceError):
        return exc
    if not isinstance(exc, BaseException):
        raise TypeError(f"classify() takes an exception, got {type(exc).__name__}")
    result = _classify_new(exc, operation)
    if attempt is not None and result.attempt is None:
        result.attempt = attempt
    result.__cause__ = exc
    return result


def _classify_new(exc: BaseException, operation: str | None) -> ResilienceError:
    with _rules_lock:
        rules = list(_rules)
    for exc_type, rule in rules:
        if isinstance(exc, exc_type):
            found = rule(exc)
            if found is not None:
                if not isinstance(found, ResilienceError):
                    raise TypeError(f"rule {rule!r} returned {found!r}, not a ResilienceError")
                return found
    names = _names(exc)
    found = _sdk_error(exc, names, operation) or _http_status_error(exc, names, operation)
    if found is not None:
        return found
    text = _describe(exc)
    if _has(names, "urllib3.exceptions.NewConnectionError"):
        # urllib3 makes it a ConnectTimeoutError subclass, but a refused connection sent
        # nothing: it is a network error, not a timeout whose request may have landed.
        return NetworkError(text, operation=operation)
    if _has(names, *_TIMEOUTS):
        return RequestTimeoutError(text, operation=operation)
    if _has(names, "ssl.SSLCertVerificationError"):
        return AuthenticationError(f"TLS certificate refused: {text}", operation=operation)
    if _has(names, *_NETWORK):
        return NetworkError(text, operation=operation)
    if _has(names, *_MALFORMED):
        return ExchangeUnavailableError(f"malformed response: {text}", operation=operation)
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return NetworkError(text, operation=operation)
    if _has(names, "ssl.SSLError"):
        return NetworkError(text, operation=operation)
    return CriticalError(f"unrecognised error {text}", operation=operation)
