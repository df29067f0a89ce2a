"""RateLimiter: never send more weight than the budget in any sliding window, however many share it.

Admission is first come, first served. ``acquire(w)`` *reserves*, in one transaction on the
shared state, the earliest time at which ``w`` fits every window after every earlier
reservation, then sleeps until then: no retry loop, no overtaking, no starvation of heavy
requests by light ones. The rule itself is pure and lives in
:mod:`resilient_trading._limiter_rules`; the homes are process memory and a file
(:mod:`resilient_trading._limiter_state`) and Redis, where a Lua script runs the same rule in
one round trip (:mod:`resilient_trading._limiter_redis`).

This module holds the thin entry points: :meth:`RateLimiter.acquire` and
:meth:`RateLimiter.acquire_async` share every decision and differ only by ``await``.

Events: every limiter publishes :class:`~resilient_trading.LimiterEvent` objects on the
process-wide bus (:func:`~resilient_trading.add_listener`), with no wiring: ``admitted``
(``weight``, ``seconds`` waited), ``waited`` (before ``admitted`` when it slept: ``seconds``
actually slept), ``refused`` (``seconds``: the ``retry_after``; redacted ``message``),
``paused`` (``seconds``) and ``fallback`` (a Redis budget entered, ``mode="fallback"``, or
left, ``mode="shared"``, its outage local share). While nobody listens, each site costs one
check and builds nothing.

Clocks: the in-memory and file budgets run on ``CLOCK_MONOTONIC`` (shared by every process on a
host), so wall-clock steps cannot admit an extra budget. The Redis budget runs on the Redis
server's clock; a step *back* there is detected and healed, a step forward cannot be told from
idle time (run the Redis host with a slewing NTP client).

Why this module is long: it is the public face of the limiter (``RateLimit``, ``RateLimiter``,
its status types) with their docstrings and argument checks, plus the one sync/async shell
around a reservation (wait, cancel, give back); the decisions live in
:mod:`resilient_trading._limiter_rules`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from resilient_trading import _limiter_rules as rules
from resilient_trading._clock import SYSTEM_CLOCK, Clock, SystemClock
from resilient_trading._errors import RateLimitedError
from resilient_trading._events import LimiterEvent, emit, event_text, listening
from resilient_trading._limiter_state import Refused, StateBudget
from resilient_trading._validate import check_int, check_number
from resilient_trading.backends import FileState, MemoryState

__all__ = ["LimiterStatus", "RateLimit", "RateLimiter", "WindowStatus"]

log = logging.getLogger("resilient_trading.ratelimit")

#: The longest pause :meth:`RateLimiter.pause` applies; longer requests are capped and logged.
MAX_PAUSE = 3600.0


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
    """What :meth:`RateLimiter.status` reports (times are wall-clock seconds since the epoch).

    ``reserved`` is the weight reserved ahead by waiting requests (``queued`` of them);
    ``mode`` is ``"shared"``, or ``"fallback"`` while a Redis budget runs on its local share.
    """

    location: str
    windows: tuple[WindowStatus, ...]
    paused_until: float | None
    now: float
    reserved: int = 0
    queued: int = 0
    mode: str = "shared"

    @property
    def utilisation(self) -> float:
        """The fullest window's used share of its budget (0 to 1+)."""
        return max((w.used / w.budget for w in self.windows), default=0.0)


def time_base(clock: Clock) -> Callable[[], float]:
    """The clock a per-host budget runs on: monotonic for the system clock."""
    mono = getattr(clock, "monotonic", None)
    if callable(mono):
        return mono  # type: ignore[no-any-return]
    if isinstance(clock, SystemClock):
        return time.monotonic
    return clock.time


class _BaseClock:
    """Adapts a time base to the :class:`Clock` the state backends read."""

    def __init__(self, base: Callable[[], float], clock: Clock) -> None:
        self.time = base
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await self._clock.sleep_async(seconds)


@dataclass(slots=True)
class _Call:
    """One acquire: what was asked and when (on the limiter's time base)."""

    weight: int
    timeout: float | None
    started: float


class RateLimiter:
    """Admit weighted calls, first come first served, so no sliding window exceeds its budget.

    Args:
        limit: The first limit; more may follow (all must hold, e.g. 1200/60 s and 100/1 s).
        state_path: Share the budget with every process on this host using this file.
        redis_url: Share the budget with every process on every machine using this Redis and
            ``key``.
        key: The budget's name in Redis (and in status output).
        clock: Time source and sleep (tests pass ``ManualClock``).
        in_flight: Seconds an admitted request may take to reach the exchange (signing, a slow
            connect, retransmits). Each admission stays in the window ``period + in_flight``,
            so the exchange, which counts a request when it *arrives*, never sees more than the
            budget. Set it to the client's request timeout (the Hyperliquid preset does);
            ``0`` counts admission time only.
        granularity: Bucket width in seconds (default: each limit's window / 100).
        on_backend_error: Redis only. ``"fallback"`` (default): when Redis cannot be reached,
            keep admitting on a conservative local share (see the how-to); ``"raise"``: raise
            :class:`NetworkError`.
        redis_timeout: Redis only: socket and connect timeout in seconds (default 0.5: a
            Redis slower than that is treated as unreachable, so a hung Redis cannot hold an
            ``acquire(timeout=1)`` for longer).
        lock_timeout: File only: seconds to wait for the file lock.
        expected_sharers: Redis only: how many processes share the budget, at least. In an
            outage each sharer admits ``budget // N`` per window, N being the most sharers
            it ever counted in Redis and at least ``expected_sharers`` (default 4: a
            sharer that starts while Redis is down has counted nobody). Set it to the
            fleet's size (1 for a single process); a fleet larger than both over-admits
            during an outage by at most that ratio (see the how-to).

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
        in_flight: float = 0.0,
        granularity: float | None = None,
        on_backend_error: Literal["fallback", "raise"] = "fallback",
        redis_timeout: float = 0.5,
        lock_timeout: float | None = 10.0,
        expected_sharers: int = 4,
    ) -> None:
        limits = (limit, *more_limits)
        for item in limits:
            if not isinstance(item, RateLimit):
                raise TypeError(f"limits must be RateLimit objects, got {item!r}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        if state_path is not None and redis_url is not None:
            raise ValueError("give state_path or redis_url, not both")
        if on_backend_error not in ("fallback", "raise"):
            raise ValueError(
                f"on_backend_error must be 'fallback' or 'raise', got {on_backend_error!r}"
            )
        in_flight = check_number("in_flight", in_flight, positive=False)
        check_int("expected_sharers", expected_sharers, minimum=1)
        rings = [rules.ring_for(lim.budget, lim.period, in_flight) for lim in limits]
        if granularity is not None:
            width = math.ceil(check_number("granularity", granularity) * 1000)
            if granularity > min(lim.period for lim in limits):
                raise ValueError("granularity must not exceed the shortest period")
            rings = [
                rules.Ring(
                    r.budget, r.period_ms, min(r.period_ms, max(width, r.period_ms // 2000, 1))
                )
                for r in rings
            ]
        self._limits = limits
        self._in_flight = in_flight
        self._max_weight = min(lim.budget for lim in limits)
        self._clock = clock
        self._key = key
        self._budget: Any
        if redis_url is not None:
            from resilient_trading._limiter_redis import RedisBudget

            self._base: Callable[[], float] = time_base(clock)
            self._budget = RedisBudget(
                redis_url,
                key,
                rings,
                base=self._base,
                on_error=on_backend_error,
                timeout=check_number("redis_timeout", redis_timeout),
                expected_sharers=expected_sharers,
            )
        else:
            self._base = time_base(clock)
            base_clock = _BaseClock(self._base, clock)
            state = (
                FileState(state_path, lock_timeout=lock_timeout, clock=base_clock)
                if state_path is not None
                else MemoryState(clock=base_clock)
            )
            self._budget = StateBudget(state, rings, base=self._base)
        self._inline = isinstance(self._budget, StateBudget) and isinstance(
            self._budget.state, MemoryState
        )
        self._last_admitted: float | None = None
        # events name the budget by where it lives (an in-process one by its key)
        self._event_name = key if self._inline else self._budget.location
        # only a Redis budget changes mode (its outage local share): watched after each call
        self._mode: str | None = None if isinstance(self._budget, StateBudget) else "shared"
        self._mode_lock = threading.Lock()

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        return self._limits

    @property
    def in_flight(self) -> float:
        """Seconds each admission is counted beyond its window (see the class docstring)."""
        return self._in_flight

    @property
    def last_admitted_at(self) -> float | None:
        """When the latest admission in this process was due, on the limiter's clock."""
        return self._last_admitted

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

    # --- decide once ------------------------------------------------------------------------

    def _begin(self, weight: Any, timeout: Any) -> _Call:
        weight = self._check_weight(weight)
        limit = None if timeout is None else check_number("timeout", timeout, positive=False)
        return _Call(weight, limit, self._base())

    def _max_wait(self, call: _Call) -> Callable[[float], float | None]:
        def remaining(_: float) -> float | None:
            if call.timeout is None:
                return None
            return max(0.0, call.timeout - (self._base() - call.started))

        return remaining

    def _reserve(self, call: _Call) -> rules.Decision:
        """One transaction: the reservation, or ``RateLimitedError`` with nothing reserved."""
        try:
            result = self._budget.reserve(call.weight, self._max_wait(call), call.started)
        except RateLimitedError as exc:  # a Redis budget's local share is too small for it
            self._refused(call.weight, exc)
            raise
        finally:
            if self._mode is not None:
                self._watch_mode()
        if isinstance(result, Refused):
            err = self._too_long(call, result)
            self._refused(call.weight, err)
            raise err
        decision: rules.Decision = result
        return decision

    def _sleep(self, decision: rules.Decision) -> float:
        """Sleep until ``decision`` is due; the seconds actually slept."""
        started = self._base()
        self._clock.sleep(decision.wait)
        return max(0.0, self._base() - started)

    async def _sleep_async(self, decision: rules.Decision) -> float:
        started = self._base()
        await self._clock.sleep_async(decision.wait)
        return max(0.0, self._base() - started)

    def _admitted(self, decision: rules.Decision, slept: float = 0.0) -> float:
        self._last_admitted = decision.at_ms / 1000
        if listening():
            name, weight = self._event_name, decision.weight
            if slept > 0:
                emit(LimiterEvent("waited", name, weight, slept))
            emit(LimiterEvent("admitted", name, weight, slept))
        return decision.wait

    # --- events -----------------------------------------------------------------------------

    def _refused(self, weight: int, err: RateLimitedError) -> None:
        if listening():
            emit(
                LimiterEvent(
                    "refused",
                    self._event_name,
                    weight,
                    err.retry_after or 0.0,
                    message=event_text(err),
                )
            )

    def _watch_mode(self) -> None:
        """Publish a ``fallback`` event when the Redis budget entered or left its local share
        (the budget switches inside a call; this runs after each one). Under the lock, so
        concurrent callers publish each change once, in order."""
        if self._budget.mode == self._mode:
            return
        with self._mode_lock:
            mode = str(self._budget.mode)
            if mode == self._mode:
                return
            self._mode = mode
        if listening():
            if mode == "fallback":
                text = (
                    f"rate budget {self._event_name}: Redis unreachable; admitting on a local "
                    f"share of 1/{self._budget.share} of each limit until it is back"
                )
            else:
                text = f"rate budget {self._event_name}: Redis is back; sharing the budget again"
            emit(LimiterEvent("fallback", self._event_name, message=event_text(text), mode=mode))

    # --- run twice --------------------------------------------------------------------------

    def try_acquire(self, weight: int = 1) -> bool:
        """Admit ``weight`` now if it fits every window and nobody is waiting ahead.

        Never reserves the future and never jumps ahead of a reservation."""
        call = self._begin(weight, 0.0)
        try:
            decision = self._reserve(call)
        except RateLimitedError:
            return False
        slept = 0.0
        if decision.wait > 0:  # under a millisecond: the rest of the current one
            slept = self._sleep(decision)
        self._admitted(decision, slept)
        return True

    def acquire(self, weight: int = 1, *, timeout: float | None = None) -> float:
        """Reserve ``weight`` first come first served and sleep until it is due.

        Returns the seconds waited.

        Args:
            weight: The request's weight (at most the smallest budget).
            timeout: Wall-clock seconds from this call. If the reserved time would be further
                away, nothing is reserved and :class:`RateLimitedError` is raised at once.

        Raises:
            RateLimitedError: (``source="local"``) the wait would exceed ``timeout``;
                ``retry_after`` is that wait and the message says what is ahead.
            ValueError, TypeError: A weight that could never be admitted, or a bad timeout.
        """
        call = self._begin(weight, timeout)
        decision = self._reserve(call)
        slept = 0.0
        try:
            if decision.wait > 0:
                slept = self._sleep(decision)
        except BaseException:
            self._budget.release(decision)
            raise
        return self._admitted(decision, slept)

    async def acquire_async(self, weight: int = 1, *, timeout: float | None = None) -> float:
        """:meth:`acquire` for asyncio: waits with ``await``, never blocks the event loop.

        A cancelled call gives its reservation back if its time has not come yet (if it has,
        the reservation is counted as used and expires with its window)."""
        call = self._begin(weight, timeout)
        decision = await self._run(self._reserve, call)
        slept = 0.0
        try:
            if decision.wait > 0:
                slept = await self._sleep_async(decision)
        except BaseException:
            await self._run(self._budget.release, decision)
            raise
        return self._admitted(decision, slept)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._inline:
            return fn(*args)
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The worker thread finishes its transaction anyway: give back what it reserved.
            try:
                result = await task
            except BaseException:
                raise
            if isinstance(result, rules.Decision):
                await asyncio.to_thread(self._budget.release, result)
            raise

    def charge(self, weight: int) -> None:
        """Record weight already spent (known only after a call), without waiting.

        The window may go over for a moment; later reservations wait until it is paid back."""
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"weight must be an int >= 0, got {weight!r}")
        if weight:
            try:
                self._budget.charge(weight)
            finally:
                if self._mode is not None:
                    self._watch_mode()

    def pause(self, seconds: float) -> None:
        """Make every sharer of this budget wait ``seconds`` from now (after a 429).

        ``seconds`` above :data:`MAX_PAUSE` (an hour) is capped, with a warning: a huge
        ``Retry-After`` must slow the bots down, not stop them for days or raise."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {seconds!r}")
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        if seconds > MAX_PAUSE:
            log.warning("rate budget %s: pause of %ss capped at %gs", self._key, seconds, MAX_PAUSE)
            seconds = MAX_PAUSE
        try:
            self._budget.pause(float(seconds))
        finally:
            if self._mode is not None:
                self._watch_mode()
        if listening():
            emit(LimiterEvent("paused", self._event_name, seconds=float(seconds)))

    def status(self) -> LimiterStatus:
        """Weight used and remaining in each window now, reservations ahead, any pause."""
        try:
            state, now = self._budget.snapshot()
        finally:
            if self._mode is not None:
                self._watch_mode()
        return status_of(
            state,
            now,
            time.time() if self._clock is SYSTEM_CLOCK else self._clock.time(),
            self._budget.location,
            limits=self._limits,
            in_flight=self._in_flight,
            mode=getattr(self._budget, "mode", "shared"),
        )

    def close(self) -> None:
        """Release the state's file descriptor or connection."""
        self._budget.state.close() if isinstance(
            self._budget, StateBudget
        ) else self._budget.close()

    def _too_long(self, call: _Call, refused: Refused) -> RateLimitedError:
        d = refused.decision
        windows = ", ".join(
            f"{used}/{lim.budget} used per {lim.period:g}s"
            for used, lim in zip(refused.used, self._limits, strict=False)
        )
        ahead = (
            f"{d.ahead} request(s) ({d.ahead_weight} weight) reserved ahead"
            if d.ahead
            else "nothing reserved ahead"
        )
        limit = "no wait" if call.timeout == 0 else f"the {call.timeout:g}s timeout"
        return RateLimitedError(
            f"weight {call.weight} would wait {d.wait:.3f}s for rate budget {self._key!r} "
            f"({windows}; {ahead}), more than {limit}; nothing was reserved: retry after "
            f"{d.wait:.3f}s or raise the timeout",
            retry_after=d.wait,
            source="local",
            operation=f"RateLimiter.acquire({self._key})",
        )

    def __repr__(self) -> str:
        limits = ", ".join(f"{lim.budget}/{lim.period:g}s" for lim in self._limits)
        return f"RateLimiter({limits}, state={self._budget.location!r})"


def status_of(
    state: rules.LimiterState,
    now: float,
    wall: float,
    location: str,
    *,
    limits: tuple[RateLimit, ...] | None = None,
    in_flight: float = 0.0,
    mode: str = "shared",
) -> LimiterStatus:
    """Describe a stored limiter state read at ``now`` (its own clock) and ``wall``."""
    now_ms = now * 1000
    windows = []
    if limits is None:
        pairs: list[tuple[int, int, rules.Ring | None]] = [
            (ring.budget, ring.period_ms, ring) for ring in state.rings
        ]
    else:
        pairs = []
        for lim in limits:
            period_ms = rules.ring_for(lim.budget, lim.period, in_flight).period_ms
            found = [r for r in state.rings if r.budget == lim.budget and r.period_ms == period_ms]
            if not found and state.rings:  # new to the key: counts what the key admitted
                fresh = rules.ring_for(lim.budget, lim.period, in_flight)
                found = rules.sync_rings(rules.LimiterState(rings=list(state.rings)), [fresh])
            pairs.append((lim.budget, period_ms, found[0] if found else None))
    for budget, period_ms, ring in pairs:
        used = 0 if ring is None else ring.used_at(now_ms)
        windows.append(WindowStatus(budget, period_ms / 1000, used, max(0, budget - used)))
    paused = state.paused_until_ms / 1000
    return LimiterStatus(
        location,
        tuple(windows),
        wall + (paused - now) if paused > now else None,
        wall,
        reserved=state.reserved(),
        queued=len(state.queue),
        mode=mode,
    )
