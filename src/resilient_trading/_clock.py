"""Injectable time: every primitive reads the time and sleeps through a :class:`Clock`.

Tests pass a :class:`ManualClock` and run in simulated time; production code uses
:data:`SYSTEM_CLOCK`. A clock has two readings: :meth:`Clock.time`, the wall clock (what
other processes and hosts agree on, and what may step when NTP or an operator sets it), and
:meth:`MonotonicClock.monotonic`, which never steps (only meaningful inside one process). State kept
per process measures durations on the monotonic reading; state shared through a file or Redis
can only use the wall clock and must treat an impossible reading (a time in the future) as a
step. :class:`SystemClock` and :class:`ManualClock` have ``monotonic()``; another clock may
lack it (:func:`monotonic_of` then gives ``None`` and the caller falls back to the wall clock).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "MonotonicClock", "SystemClock", "monotonic_of"]


@runtime_checkable
class Clock(Protocol):
    """Where a primitive gets the time from and how it waits."""

    def time(self) -> float:
        """Seconds since the epoch (may be simulated; may step back or forward)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""
        ...


@runtime_checkable
class MonotonicClock(Clock, Protocol):
    """A :class:`Clock` that also has a reading that never steps. ``monotonic()`` is kept out
    of :class:`Clock` itself so clocks written before it still fit; read it through
    :func:`monotonic_of`."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never step (durations inside one process)."""
        ...


class SystemClock:
    """The real wall clock, ``time.sleep`` and ``asyncio.sleep``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that only moves when slept on or advanced: for tests, no real waiting.

    :meth:`advance` and :meth:`sleep` move both readings; :meth:`step` moves only the wall
    clock, the way an NTP step or ``date -s`` does.

    Example:
        >>> clock = ManualClock(start=100.0)
        >>> clock.sleep(2.5); clock.time()
        102.5
        >>> clock.step(-3600.0); clock.time(), clock.monotonic()
        (-3497.5, 102.5)
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._mono = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def step(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (either sign); :meth:`monotonic` does not move."""
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be a finite number, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"


def monotonic_of(clock: object) -> float | None:
    """``clock.monotonic()``, or ``None`` for a clock written before it had one."""
    reading = getattr(clock, "monotonic", None)
    return float(reading()) if callable(reading) else None
