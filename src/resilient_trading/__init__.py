"""resilient-trading: keep automated trading bots alive through the faults that kill them.

Users import from the package root only; every public name is listed in ``__all__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilient_trading._alerts import AlertSink
from resilient_trading._breaker import (
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitBreakerListener,
)
from resilient_trading._classify import (
    classify,
    classify_message,
    classify_response,
    classify_statuses,
    exchange_error_kind,
    is_order_gone,
    register_rule,
)
from resilient_trading._client import BreakerLike, RateLimitedClient, RetryLike
from resilient_trading._clock import Clock, ManualClock, SystemClock
from resilient_trading._errors import (
    MAX_RETRY_AFTER,
    AuthenticationError,
    CircuitOpenError,
    CommitNotDurableError,
    CriticalError,
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidRequestError,
    LockTimeoutError,
    NetworkError,
    NonceError,
    OrderGone,
    OrderNotFilled,
    OrderNotPlaced,
    OrderOutcome,
    RateLimitedError,
    RequestTimeoutError,
    ResilienceError,
    StateCorruptedError,
    TransientError,
    redact,
    safe_text,
)
from resilient_trading._events import (
    AddressEvent,
    AlertEvent,
    BreakerEvent,
    BreakerEvents,
    DeadmanEvent,
    Event,
    EventBus,
    FeedEvent,
    HaltEvent,
    LimiterEvent,
    RetryAttemptEvent,
    StoreEvent,
    add_listener,
    emit,
    remove_listener,
    retry_events,
)
from resilient_trading._halt import Halt, HaltStatus
from resilient_trading._journal import Journal, JournalEntry
from resilient_trading._jsonstore import LockedJsonStore
from resilient_trading._metrics import EventMetrics, FleetCollector
from resilient_trading._nonce import NonceSource
from resilient_trading._ratelimit import LimiterStatus, RateLimit, RateLimiter, WindowStatus
from resilient_trading._retry import RetryEvent, RetryPolicy
from resilient_trading._typed import TypedStore

if TYPE_CHECKING:
    from resilient_trading._pybreaker import PybreakerStorage

__version__ = "0.2.0.dev0"


def __getattr__(name: str) -> Any:
    # PybreakerStorage imports pybreaker: load it only when asked for.
    if name == "PybreakerStorage":
        from resilient_trading._pybreaker import PybreakerStorage

        return PybreakerStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_RETRY_AFTER",
    "AddressEvent",
    "AlertEvent",
    "AlertSink",
    "AuthenticationError",
    "BreakerEvent",
    "BreakerEvents",
    "BreakerLike",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerListener",
    "CircuitOpenError",
    "Clock",
    "CommitNotDurableError",
    "CriticalError",
    "DeadmanEvent",
    "Event",
    "EventBus",
    "EventMetrics",
    "ExchangeUnavailableError",
    "FeedEvent",
    "FleetCollector",
    "Halt",
    "HaltEvent",
    "HaltStatus",
    "InsufficientFundsError",
    "InvalidRequestError",
    "Journal",
    "JournalEntry",
    "LimiterEvent",
    "LimiterStatus",
    "LockTimeoutError",
    "LockedJsonStore",
    "ManualClock",
    "NetworkError",
    "NonceError",
    "NonceSource",
    "OrderGone",
    "OrderNotFilled",
    "OrderNotPlaced",
    "OrderOutcome",
    "PybreakerStorage",
    "RateLimit",
    "RateLimitedClient",
    "RateLimitedError",
    "RateLimiter",
    "RequestTimeoutError",
    "ResilienceError",
    "RetryAttemptEvent",
    "RetryEvent",
    "RetryLike",
    "RetryPolicy",
    "StateCorruptedError",
    "StoreEvent",
    "SystemClock",
    "TransientError",
    "TypedStore",
    "WindowStatus",
    "__version__",
    "add_listener",
    "classify",
    "classify_message",
    "classify_response",
    "classify_statuses",
    "emit",
    "exchange_error_kind",
    "is_order_gone",
    "redact",
    "register_rule",
    "remove_listener",
    "retry_events",
    "safe_text",
]
