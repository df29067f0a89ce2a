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
"""

from __future__ import annotations

import email.utils
import errno
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from resilient_trading._errors import (
    AuthenticationError,
    CriticalError,
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidRequestError,
    NetworkError,
    NonceError,
    RateLimitedError,
    RequestTimeoutError,
    ResilienceError,
    TransientError,
)

__all__ = ["classify", "classify_message", "classify_response", "classify_status", "register_rule"]

Rule = Callable[[BaseException], "ResilienceError | None"]

_rules: list[tuple[type[BaseException], Rule]] = []
_rules_lock = threading.Lock()


def register_rule(exc_type: type[BaseException], rule: Rule) -> Callable[[], None]:
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

_MESSAGE_RULES: list[tuple[re.Pattern[str], type[ResilienceError]]] = [
    (re.compile(r"nonce", re.I), NonceError),
    (re.compile(r"too many (cumulative )?requests|rate limit", re.I), RateLimitedError),
    (
        re.compile(
            r"(user or api wallet .* does not exist|signature|unauthori[sz]ed|forbidden)", re.I
        ),
        AuthenticationError,
    ),
    (
        re.compile(r"insufficient (margin|spot balance|balance|funds)|not enough", re.I),
        InsufficientFundsError,
    ),
    (
        re.compile(r"could not parse json|maintenance|temporarily unavailable|try again", re.I),
        ExchangeUnavailableError,
    ),
    (
        re.compile(r"could not immediately match|no liquidity available for market order", re.I),
        TransientError,
    ),
    (
        re.compile(
            r"minimum value|tick size|invalid (order|size|price|tif|leverage|asset|trigger)|"
            r"zero size|reduce only|post only|duplicate|too (far|many open)|"
            r"must be|not (a )?valid|unknown (asset|coin)",
            re.I,
        ),
        InvalidRequestError,
    ),
]


def classify_message(message: str, *, operation: str | None = None) -> ResilienceError:
    """Classify an error message sent by the exchange (the text of ``{"error": ...}`` or of
    ``{"status": "err", "response": ...}``). Unknown messages are critical."""
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    for pattern, cls in _MESSAGE_RULES:
        if pattern.search(message):
            return cls(f"exchange refused: {message}", operation=operation)
    return CriticalError(f"exchange refused (unrecognised): {message}", operation=operation)


def classify_response(response: Any, *, operation: str | None = None) -> ResilienceError | None:
    """Classify a Hyperliquid ``/exchange`` or ``/info`` answer that arrived with HTTP 200.

    Returns ``None`` when the answer holds no error, else the error for the first failure:
    ``{"status": "err", "response": "..."}``, a per-order ``{"error": "..."}`` status, or the
    SDK's ``{"error": "Could not parse JSON: ..."}`` for a malformed body.

    Example:
        >>> classify_response({"status": "err", "response": "Invalid nonce: duplicate nonce 5"})
        NonceError('exchange refused: Invalid nonce: duplicate nonce 5')
    """
    if not isinstance(response, Mapping):
        return None
    if isinstance(response.get("error"), str):
        return classify_message(response["error"], operation=operation)
    if response.get("status") == "err":
        return classify_message(str(response.get("response")), operation=operation)
    inner = response.get("response")
    if isinstance(inner, Mapping):
        data = inner.get("data")
        statuses = data.get("statuses") if isinstance(data, Mapping) else None
        if isinstance(statuses, list):
            for status in statuses:
                if isinstance(status, Mapping) and isinstance(status.get("error"), str):
                    return classify_message(status["error"], operation=operation)
    return None


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
    except Exception:  # a strange mapping: treat as no header
        return None
    return value


def classify_status(
    status: int,
    *,
    headers: Any = None,
    body: str | None = None,
    operation: str | None = None,
) -> ResilienceError:
    """Classify an HTTP status code (with its headers and body, when known).

    429 → :class:`RateLimitedError` with ``Retry-After``; 408 → :class:`RequestTimeoutError`;
    5xx → :class:`ExchangeUnavailableError`; 401/403 → :class:`AuthenticationError`;
    other 4xx → :class:`InvalidRequestError`; anything else → :class:`CriticalError`.
    """
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {status!r}")
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    detail = f": {body[:200]}" if body and body.strip() not in ("", "null") else ""
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
    if 500 <= status < 600:
        return ExchangeUnavailableError(
            f"HTTP {status} from the exchange{detail}",
            retry_after=retry_after,
            operation=operation,
            status_code=status,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"HTTP {status}: credentials refused{detail}", operation=operation, status_code=status
        )
    if 400 <= status < 500:
        return InvalidRequestError(
            f"HTTP {status}: request refused{detail}", operation=operation, status_code=status
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
            text = message.strip()
            if text and text != "null":
                by_message = classify_message(text, operation=operation)
                if type(by_message) is not CriticalError:
                    by_message.status_code = status
                    return by_message
        return classify_status(
            status,
            headers=headers if isinstance(headers, Mapping) or hasattr(headers, "get") else None,
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
    "urllib3.exceptions.NewConnectionError",
    "urllib3.exceptions.MaxRetryError",
    "http.client.IncompleteRead",
    "http.client.RemoteDisconnected",
    "builtins.ConnectionError",
    "socket.gaierror",
    "socket.herror",
    "ssl.SSLEOFError",
    "ssl.SSLZeroReturnError",
    "ssl.SSLWantReadError",
    "ssl.SSLWantWriteError",
    "ssl.SSLSyscallError",
)
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
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name


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
