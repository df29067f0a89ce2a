"""RateLimiter: never send more weight than the budget in any sliding window, however many share it.

The limiter keeps a *sliding log* of admissions in a shared state (process memory, a file on
this host, or Redis; see :mod:`resilient_trading.backends`). A request of weight ``w`` is
admitted at time ``now`` (read *inside* the state's exclusion) only if, for every limit
``(budget, period)``, the weight logged after ``now - period`` plus ``w`` fits the budget.

To keep the log small, admissions are logged in buckets: the admit time is rounded **up** to a
multiple of ``granularity`` (by default the shortest period / 100). Rounding up makes an entry
expire a little later than it must, never earlier, so the guarantee is exact; it costs at most
one bucket of each window (1%) of utilisation under saturation.

State (JSON)::

    {"v": 1, "limits": [[1200, 60.0]], "paused_until": 0.0, "log": [[t, weight], ...]}
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import RateLimitedError
from resilient_trading._validate import check_number
from resilient_trading.backends import MemoryState, SharedState, open_state

__all__ = ["LimiterStatus", "RateLimit", "RateLimiter", "WindowStatus"]

_MAX_PAUSE = 86_400.0


@dataclass(frozen=True)
class RateLimit:
    """A budget of ``budget`` weight units per sliding ``period`` seconds.

    Example:
        >>> RateLimit(1200, 60.0)   # Hyperliquid's REST budget per IP
        RateLimit(budget=1200, period=60.0)
    """

    budget: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int):
            raise TypeError(f"budget must be an int of weight units, got {self.budget!r}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget!r}")
        object.__setattr__(self, "period", check_number("period", self.period))

    def scaled(self, share: float) -> RateLimit:
        """The same period with ``share`` of the budget (a safety margin): ``0 < share <= 1``."""
        share = check_number("share", share)
        if share > 1:
            raise ValueError(f"share must be <= 1, got {share!r}")
        return RateLimit(max(1, math.floor(self.budget * share)), self.period)


@dataclass(frozen=True)
class WindowStatus:
    """One limit's window as seen now."""

    budget: int
    period: float
    used: int
    remaining: int


@dataclass(frozen=True)
class LimiterStatus:
    """What :meth:`RateLimiter.status` reports."""

    location: str
    windows: tuple[WindowStatus, ...]
    paused_until: float | None
    now: float

    @property
    def utilisation(self) -> float:
        """The fullest window's used share of its budget (0 to 1+)."""
        return max((w.used / w.budget for w in self.windows), default=0.0)


class _Decision:
    __slots__ = ("admitted", "now", "wait")

    def __init__(self, admitted: bool, now: float, wait: float) -> None:
        self.admitted = admitted
        self.now = now
        self.wait = wait


class RateLimiter:
    """Admit weighted calls so no sliding window ever exceeds its budget.

    Args:
        limit: The first limit; more may follow (all must hold, e.g. 1200/60 s and 100/1 s).
        state_path: Share the budget with every process on this host using this file.
        redis_url: Share the budget with every process on every machine using this Redis and
            ``key``.
        key: The budget's name in Redis (and in status output).
        clock: Time source and sleep for the in-process budget (tests pass ``ManualClock``).
            The file budget reads the host's clock; the Redis budget the server's.
        granularity: Bucket width in seconds (default: shortest period / 100).

    Example:
        >>> limiter = RateLimiter(RateLimit(10, 1.0))
        >>> limiter.try_acquire(weight=4), limiter.try_acquire(weight=6), limiter.try_acquire()
        (True, True, False)
    """

    def __init__(
        self,
        limit: RateLimit,
        *more_limits: RateLimit,
        state_path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        key: str = "default",
        clock: Clock = SYSTEM_CLOCK,
        granularity: float | None = None,
    ) -> None:
        limits = (limit, *more_limits)
        for item in limits:
            if not isinstance(item, RateLimit):
                raise TypeError(f"limits must be RateLimit objects, got {item!r}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        self._limits = limits
        self._max_period = max(lim.period for lim in limits)
        shortest = min(lim.period for lim in limits)
        self._granularity = (
            shortest / 100 if granularity is None else check_number("granularity", granularity)
        )
        if self._granularity > shortest:
            raise ValueError("granularity must not exceed the shortest period")
        self._max_weight = min(lim.budget for lim in limits)
        self._clock = clock
        self._key = key
        self._state: SharedState = open_state(
            state_path=state_path,
            redis_url=redis_url,
            key=f"resilient-trading:limiter:{key}",
            ttl=self._max_period * 2 + 60,
            clock=clock,
        )
        self._local = threading.local()

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        return self._limits

    @property
    def last_admitted_at(self) -> float | None:
        """When this thread's latest admission happened, on the state's clock."""
        value: float | None = getattr(self._local, "admitted_at", None)
        return value

    def _check_weight(self, weight: Any) -> int:
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise TypeError(f"weight must be an int, got {weight!r}")
        if weight < 1:
            raise ValueError(f"weight must be >= 1, got {weight!r}")
        if weight > self._max_weight:
            raise ValueError(
                f"weight {weight} exceeds the smallest budget ({self._max_weight}): "
                "it could never be admitted"
            )
        return weight

    # --- the admission rule -------------------------------------------------------------------

    def _fresh(self, old: Any, now: float) -> tuple[float, list[list[float]]]:
        if not isinstance(old, dict):
            return 0.0, []
        paused = float(old.get("paused_until", 0.0))
        log = old.get("log", [])
        horizon = now - self._max_period
        future = now + self._max_period  # entries beyond this: the clock jumped back
        start = 0
        while start < len(log) and log[start][0] <= horizon:
            start += 1
        kept = [entry for entry in log[start:] if entry[0] <= future]
        if paused > now + _MAX_PAUSE:  # the clock jumped back: a stale pause must not wedge us
            paused = now
        return paused, kept

    def _decide(self, log: list[list[float]], paused: float, now: float, weight: int) -> float:
        """Seconds until ``weight`` fits (0 when it fits now)."""
        ready = max(now, paused)
        for lim in self._limits:
            cutoff = now - lim.period
            used = 0.0
            first = len(log)
            for index in range(len(log) - 1, -1, -1):
                if log[index][0] <= cutoff:
                    break
                used += log[index][1]
                first = index
            excess = used + weight - lim.budget
            if excess <= 0:
                continue
            freed = 0.0
            for index in range(first, len(log)):
                freed += log[index][1]
                if freed >= excess:
                    ready = max(ready, log[index][0] + lim.period)
                    break
        return max(0.0, ready - now)

    def _bucket(self, now: float) -> float:
        g = self._granularity
        bucket = math.ceil(now / g) * g
        while bucket < now:  # float rounding must never move an admission earlier
            bucket += g
        return bucket

    def _transition(self, weight: int, *, force: bool = False) -> Any:
        def fn(old: Any, now: float) -> tuple[Any, _Decision]:
            paused, log = self._fresh(old, now)
            wait = 0.0 if force else self._decide(log, paused, now, weight)
            if wait > 0:
                return old, _Decision(False, now, wait)
            bucket = self._bucket(now)
            if log and log[-1][0] == bucket:
                log[-1] = [bucket, log[-1][1] + weight]
            else:
                log.append([bucket, weight])
            new = {
                "v": 1,
                "limits": [[lim.budget, lim.period] for lim in self._limits],
                "paused_until": paused,
                "log": log,
            }
            return new, _Decision(True, now, 0.0)

        return fn

    def _attempt(self, weight: int) -> _Decision:
        decision: _Decision = self._state.transact(self._transition(weight))
        if decision.admitted:
            self._local.admitted_at = decision.now
        return decision

    # --- public API ---------------------------------------------------------------------------

    def try_acquire(self, weight: int = 1) -> bool:
        """Admit ``weight`` now if it fits every window; never blocks."""
        return self._attempt(self._check_weight(weight)).admitted

    def acquire(self, weight: int = 1, *, timeout: float | None = None) -> float:
        """Block until ``weight`` is admitted; return the seconds waited.

        Raises:
            RateLimitedError: (``source="local"``) when the wait would exceed ``timeout``;
                raised at once when the needed wait is already known to be too long.
            ValueError, TypeError: A weight that could never be admitted, or a bad timeout.
        """
        weight = self._check_weight(weight)
        limit = None if timeout is None else check_number("timeout", timeout, positive=False)
        waited = 0.0
        while True:
            decision = self._attempt(weight)
            if decision.admitted:
                return waited
            if limit is not None and waited + decision.wait > limit:
                raise self._too_long(weight, decision.wait, limit)
            self._clock.sleep(decision.wait)
            waited += decision.wait

    async def acquire_async(self, weight: int = 1, *, timeout: float | None = None) -> float:
        """:meth:`acquire` for asyncio: waits with ``await``, never blocks the event loop."""
        weight = self._check_weight(weight)
        limit = None if timeout is None else check_number("timeout", timeout, positive=False)
        in_memory = isinstance(self._state, MemoryState)
        waited = 0.0
        while True:
            if in_memory:
                decision = self._attempt(weight)
            else:
                decision = await asyncio.to_thread(self._attempt, weight)
            if decision.admitted:
                return waited
            if limit is not None and waited + decision.wait > limit:
                raise self._too_long(weight, decision.wait, limit)
            await self._clock.sleep_async(decision.wait)
            waited += decision.wait

    def charge(self, weight: int) -> None:
        """Record weight already spent (known only after a call), without waiting.

        The budget may go over for a moment; later acquires wait until it is paid back."""
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"weight must be an int >= 0, got {weight!r}")
        if weight:
            self._state.transact(self._transition(weight, force=True))

    def pause(self, seconds: float) -> None:
        """Make every sharer of this budget wait ``seconds`` from now (after a 429)."""
        seconds = check_number("seconds", seconds, positive=False)
        if seconds > _MAX_PAUSE:
            raise ValueError(f"seconds must be at most {_MAX_PAUSE:g} (a day), got {seconds!r}")

        def fn(old: Any, now: float) -> tuple[Any, None]:
            paused, log = self._fresh(old, now)
            new = {
                "v": 1,
                "limits": [[lim.budget, lim.period] for lim in self._limits],
                "paused_until": max(paused, now + seconds),
                "log": log,
            }
            return new, None

        self._state.transact(fn)

    def status(self) -> LimiterStatus:
        """Weight used and remaining in each window now, and any pause."""
        return status_from_state(
            self._state.read(), self._state.time(), self._limits, self._state.location
        )

    def close(self) -> None:
        """Release the state's file descriptor or connection."""
        self._state.close()

    def _too_long(self, weight: int, wait: float, timeout: float) -> RateLimitedError:
        return RateLimitedError(
            f"weight {weight} needs a {wait:.3f}s wait for the rate budget, "
            f"more than the {timeout:g}s timeout",
            retry_after=wait,
            source="local",
            operation=f"RateLimiter.acquire({self._key})",
        )

    def __repr__(self) -> str:
        limits = ", ".join(f"{lim.budget}/{lim.period:g}s" for lim in self._limits)
        return f"RateLimiter({limits}, state={self._state.location!r})"


def status_from_state(
    state: Any, now: float, limits: tuple[RateLimit, ...] | None, location: str
) -> LimiterStatus:
    """Describe a stored limiter state (used by the limiter and the CLI)."""
    stored = state if isinstance(state, dict) else {}
    if limits is None:
        limits = tuple(RateLimit(int(b), float(p)) for b, p in stored.get("limits", []))
    log = stored.get("log", [])
    windows = []
    for lim in limits:
        used = int(sum(w for t, w in log if t > now - lim.period))
        windows.append(WindowStatus(lim.budget, lim.period, used, max(0, lim.budget - used)))
    paused = float(stored.get("paused_until", 0.0))
    return LimiterStatus(location, tuple(windows), paused if paused > now else None, now)
