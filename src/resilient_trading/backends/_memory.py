"""Shared state in this process's memory: one budget or breaker per process."""

from __future__ import annotations

import threading
from typing import TypeVar

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading.backends._base import JsonValue, Transition

__all__ = ["MemoryState"]

T = TypeVar("T")


class MemoryState:
    """A :class:`~resilient_trading.backends.SharedState` shared by the threads of one process.

    Values are kept as Python objects (no serialisation), so a transition costs a lock and a
    function call.

    Args:
        clock: Time source for transitions; defaults to the system clock.
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._value: JsonValue = None

    @property
    def location(self) -> str:
        return "memory"

    def transact(self, fn: Transition[T]) -> T:
        with self._lock:
            new, result = fn(self._value, self._clock.time())
            self._value = new
            return result

    def read(self) -> JsonValue:
        return self._value

    def time(self) -> float:
        return self._clock.time()

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "MemoryState()"
