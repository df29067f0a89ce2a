"""resilient-trading: keep automated trading bots alive through the faults that kill them.

Users import from the package root only; every public name is listed in ``__all__``.
"""

from __future__ import annotations

from resilient_trading._classify import classify, classify_response, register_rule
from resilient_trading._errors import (
    AuthenticationError,
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

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "CriticalError",
    "ExchangeUnavailableError",
    "InsufficientFundsError",
    "InvalidRequestError",
    "LockTimeoutError",
    "LockedJsonStore",
    "NetworkError",
    "NonceError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResilienceError",
    "StateCorruptedError",
    "TransientError",
    "__version__",
    "classify",
    "classify_response",
    "redact",
    "register_rule",
]
