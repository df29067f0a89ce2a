"""resilient-trading: keep automated trading bots alive through the faults that kill them.

Users import from the package root only; every public name is listed in ``__all__``.
"""

from __future__ import annotations

from resilient_trading._breaker import BreakerState, CircuitBreaker, PybreakerStorage
from resilient_trading._classify import classify, classify_response, register_rule
from resilient_trading._client import RateLimitedClient
from resilient_trading._errors import (
    AuthenticationError,
    CircuitOpenError,
    CriticalError,
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidRequestError,
    LockTimeoutError,
    NetworkError,
    NonceError,
    RateLimitedError,
    RequestTimeoutError,
    ResilienceError,
    StateCorruptedError,
    TransientError,
    redact,
)
from resilient_trading._jsonstore import LockedJsonStore
from resilient_trading._ratelimit import RateLimit, RateLimiter
from resilient_trading._retry import RetryPolicy
from resilient_trading._typed import TypedStore

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "CriticalError",
    "ExchangeUnavailableError",
    "InsufficientFundsError",
    "InvalidRequestError",
    "LockTimeoutError",
    "LockedJsonStore",
    "NetworkError",
    "NonceError",
    "PybreakerStorage",
    "RateLimit",
    "RateLimitedClient",
    "RateLimitedError",
    "RateLimiter",
    "RequestTimeoutError",
    "ResilienceError",
    "RetryPolicy",
    "StateCorruptedError",
    "TransientError",
    "TypedStore",
    "__version__",
    "classify",
    "classify_response",
    "redact",
    "register_rule",
]
