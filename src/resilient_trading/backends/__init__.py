"""Where shared state lives: process memory, a file on this host, or Redis.

The rate limiter and the circuit breaker keep their state behind the :class:`SharedState`
protocol; :func:`open_state` picks the home from the ``state_path`` / ``redis_url`` arguments
those primitives take. You need this module only to plug in a home of your own.
"""

from __future__ import annotations

import os

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading.backends._base import JsonValue, SharedState, Transition
from resilient_trading.backends._file import FileState
from resilient_trading.backends._jsonstore import JsonStoreState
from resilient_trading.backends._memory import MemoryState
from resilient_trading.backends._redis import RedisState

__all__ = [
    "FileState",
    "JsonStoreState",
    "JsonValue",
    "MemoryState",
    "RedisState",
    "SharedState",
    "Transition",
    "open_state",
]


def open_state(
    *,
    state_path: str | os.PathLike[str] | None,
    redis_url: str | None,
    key: str,
    ttl: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
    lock_timeout: float | None = 10.0,
) -> SharedState:
    """Open the shared state named by a primitive's arguments.

    No ``state_path`` and no ``redis_url``: :class:`MemoryState` (this process only).
    ``state_path``: :class:`FileState` (every process on this host using that path).
    ``redis_url``: :class:`RedisState` under ``key`` (every process on every machine using that
    Redis and key). Giving both is refused with ``ValueError``.
    """
    if state_path is not None and redis_url is not None:
        raise ValueError("give state_path or redis_url, not both")
    if redis_url is not None:
        return RedisState(redis_url, key, ttl=ttl)
    if state_path is not None:
        return FileState(state_path, lock_timeout=lock_timeout, clock=clock)
    return MemoryState(clock=clock)
