"""CircuitBreaker: a run of transient failures opens it for a while; one critical error latches it.

States::

    closed ──fail_max transient failures──▶ open ──reset_timeout──▶ half-open (one trial)
      ▲                                        ▲                        │
      └──────────── trial succeeds ────────────┼──── trial fails ───────┘
                                               │
    any state ──one CriticalError──▶ open + latched ──operator reset()──▶ closed

The state lives behind the shared-state seam (process memory, a :class:`LockedJsonStore`
file, or Redis), so a restarted bot stays stopped and an operator's CLI in another process
sees and resets it. Unlike pybreaker, no lock is held while the guarded function runs:
admission and the recording of the outcome are two short transitions, so threads never queue
behind a slow call, and coroutines are first-class. Listeners follow pybreaker's
``CircuitBreakerListener`` interface (``before_call``, ``success``, ``failure``,
``state_change``), so existing pybreaker listeners can be attached.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

import pybreaker

from resilient_trading._classify import classify
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import (
    CircuitOpenError,
    CriticalError,
    ResilienceError,
)
from resilient_trading._validate import check_number
from resilient_trading.backends import JsonStoreState, MemoryState, RedisState, SharedState

__all__ = [
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerListener",
    "PybreakerStorage",
]

T = TypeVar("T")
log = logging.getLogger("resilient_trading.breaker")


class CircuitBreakerListener:
    """Hooks called by the breaker; the same methods as ``pybreaker.CircuitBreakerListener``
    (whose instances are accepted too). Override what you need."""

    def before_call(self, cb: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Before each admitted or refused call."""

    def success(self, cb: Any) -> None:
        """After a call that succeeded."""

    def failure(self, cb: Any, exc: BaseException) -> None:
        """After a call that failed (with the classified error)."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        """After the breaker moved to ``new_state`` (a :class:`BreakerState`)."""


class BreakerState(str, enum.Enum):
    """The breaker's state, a ``str`` enum: compare with ``"closed"`` etc. directly."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BreakerSnapshot:
    """Everything stored about one breaker (what ``breaker status`` prints)."""

    name: str
    state: BreakerState
    failures: int
    latched: bool
    reason: str | None
    opened_at: float | None
    retry_at: float | None
    trips: int


_CLOSED: dict[str, Any] = {
    "state": "closed",
    "failures": 0,
    "latched": False,
    "reason": None,
    "opened_at": None,
    "trial_started": None,
    "trips": 0,
}


def _current(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) and "state" in value else _CLOSED


def _ensure_exists(old: Any, now: float) -> tuple[Any, None]:
    return (old, None) if old is not None else (dict(_CLOSED), None)


class CircuitBreaker:
    """Guard calls: retry-worthy failures open it for a while, a critical one latches it.

    Args:
        fail_max: Consecutive transient failures that open the breaker.
        reset_timeout: Seconds it stays open before one trial call (half-open).
        name: The breaker's name (several can share one state file).
        state_path: Persist the state in this :class:`LockedJsonStore` file: it survives
            restarts and is shared with every process (and the CLI) on this host.
        redis_url: Persist the state in Redis, shared across machines.
        exclude: Exception types that are not failures (business outcomes): they pass
            through without counting.
        listeners: pybreaker-style listeners (``before_call``, ``success``, ``failure``,
            ``state_change``).
        clock: Time source (tests pass a ``ManualClock``).

    Example:
        >>> breaker = CircuitBreaker(fail_max=2, reset_timeout=30.0)
        >>> breaker.call(lambda: "ok")
        'ok'
        >>> str(breaker.state)
        'closed'
    """

    def __init__(
        self,
        *,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        name: str = "default",
        state_path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        exclude: Sequence[type[BaseException]] = (),
        listeners: Sequence[CircuitBreakerListener | pybreaker.CircuitBreakerListener] = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if isinstance(fail_max, bool) or not isinstance(fail_max, int):
            raise TypeError(f"fail_max must be an int, got {fail_max!r}")
        if fail_max < 1:
            raise ValueError(f"fail_max must be >= 1, got {fail_max!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if state_path is not None and redis_url is not None:
            raise ValueError("give state_path or redis_url, not both")
        for item in exclude:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"exclude must hold exception types, got {item!r}")
        self.fail_max = fail_max
        self.reset_timeout = check_number("reset_timeout", reset_timeout)
        self.name = name
        self._exclude = tuple(exclude)
        self._listeners: list[Any] = list(listeners)
        self._clock = clock
        self._state = _home(name, state_path, redis_url, clock)
        if state_path is not None or redis_url is not None:
            # Make the breaker visible to the CLI from the start (never overwrites a latch).
            self._state.transact(_ensure_exists)

    # --- observation -----------------------------------------------------------------------

    def snapshot(self) -> BreakerSnapshot:
        """The stored state now."""
        return snapshot_of(self.name, self._state.read(), self.reset_timeout)

    @property
    def state(self) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return self.snapshot().state

    @property
    def latched(self) -> bool:
        """True when a critical error opened the breaker: only :meth:`reset` closes it."""
        return self.snapshot().latched

    @property
    def fail_counter(self) -> int:
        """Consecutive transient failures so far."""
        return self.snapshot().failures

    def add_listener(
        self, listener: CircuitBreakerListener | pybreaker.CircuitBreakerListener
    ) -> None:
        self._listeners.append(listener)

    # --- transitions --------------------------------------------------------------------------

    def _admit(self, old: Any, now: float) -> tuple[Any, tuple[bool, bool, dict[str, Any]]]:
        cur = _current(old)
        state = cur["state"]
        if state == "closed":
            return old, (True, False, cur)
        if cur["latched"]:
            return old, (False, False, cur)
        opened = cur["opened_at"] or 0.0
        trial = cur["trial_started"]
        due = now >= opened + self.reset_timeout
        stale_trial = trial is not None and now >= trial + self.reset_timeout
        if (state == "open" and due) or (state == "half-open" and stale_trial):
            new = {**cur, "state": "half-open", "trial_started": now}
            return new, (True, True, cur)
        return old, (False, False, cur)

    def _succeeded(self, trial: bool) -> Callable[[Any, float], tuple[Any, str | None]]:
        def fn(old: Any, now: float) -> tuple[Any, str | None]:
            cur = _current(old)
            if cur["state"] == "closed":
                if cur["failures"] == 0:
                    return old, None
                return {**cur, "failures": 0}, None
            if trial and cur["state"] == "half-open" and not cur["latched"]:
                new = {**_CLOSED, "trips": cur["trips"]}
                return new, "closed"
            return old, None

        return fn

    def _failed(
        self, err: ResilienceError, trial: bool
    ) -> Callable[[Any, float], tuple[Any, str | None]]:
        reason = f"{type(err).__name__}: {err}"[:500]
        critical = isinstance(err, CriticalError)

        def opened(cur: dict[str, Any], now: float, **changes: Any) -> dict[str, Any]:
            trips = cur["trips"] + (cur["state"] != "open")
            return {
                **cur,
                "state": "open",
                "reason": reason,
                "opened_at": now,
                "trial_started": None,
                "trips": trips,
                **changes,
            }

        def fn(old: Any, now: float) -> tuple[Any, str | None]:
            cur = _current(old)
            if critical:
                return opened(cur, now, latched=True), "open"
            if cur["state"] == "closed":
                failures = cur["failures"] + 1
                if failures >= self.fail_max:
                    return opened(cur, now, failures=failures), "open"
                return {**cur, "failures": failures}, None
            if cur["state"] == "half-open" and trial:
                return opened(cur, now), "open"
            return old, None

        return fn

    def reset(self) -> None:
        """Close the breaker and clear the latch (the operator's action). Every process
        sharing the state sees it on its next call."""

        def fn(old: Any, now: float) -> tuple[Any, str | None]:
            cur = _current(old)
            if cur["state"] == "closed" and cur["failures"] == 0:
                return old, None
            return {**_CLOSED, "trips": cur["trips"]}, "closed"

        changed = self._state.transact(fn)
        if changed:
            log.info("breaker %r reset by operator: closed", self.name)
            self._notify_state(changed)

    # --- calling ------------------------------------------------------------------------------

    def _refusal(self, cur: dict[str, Any]) -> CircuitOpenError:
        latched = bool(cur["latched"])
        opened = cur["opened_at"]
        retry_at = None if latched or opened is None else opened + self.reset_timeout
        if latched:
            why = "latched by a critical error: an operator must reset it"
        elif cur["state"] == "half-open":
            why = "a trial call is in progress"
        else:
            why = f"open until a trial at {retry_at:.3f}" if retry_at else "open"
        err = CircuitOpenError(
            f"breaker {self.name!r} refused the call: {why} (opened by {cur['reason']})",
            name=self.name,
            latched=latched,
            reason=cur["reason"],
            opened_at=opened,
            retry_at=retry_at,
        )
        log.debug("%s", err)
        return err

    def _before(self) -> bool:
        allowed, trial, cur = self._state.transact(self._admit)
        if not allowed:
            raise self._refusal(cur)
        if trial:
            log.warning("breaker %r half-open: one trial call", self.name)
            self._notify_state("half-open")
        return trial

    def _record(self, exc: BaseException | None, trial: bool) -> None:
        if exc is None:
            changed = self._state.transact(self._succeeded(trial))
            for listener in self._listeners:
                listener.success(self)
        else:
            err = exc if isinstance(exc, ResilienceError) else classify(exc)
            changed = self._state.transact(self._failed(err, trial))
            for listener in self._listeners:
                listener.failure(self, exc)
        if changed == "open":
            snap = self.snapshot()
            log.error(
                "breaker %r open%s: %s",
                self.name,
                " and latched" if snap.latched else "",
                snap.reason,
            )
        elif changed == "closed":
            log.info("breaker %r closed", self.name)
        if changed:
            self._notify_state(changed)

    def _counts(self, exc: BaseException) -> TypeGuard[Exception]:
        if isinstance(exc, (CircuitOpenError, *self._exclude)):
            return False
        return isinstance(exc, Exception)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` if the breaker allows it.

        A coroutine function gives an awaitable (``await breaker.call(async_fn)``). Failures
        are raised as their classified :class:`ResilienceError` (the original is its cause).

        Raises:
            CircuitOpenError: Open or latched: ``fn`` was not called.
        """
        if inspect.iscoroutinefunction(fn):
            return self.call_async(fn, *args, **kwargs)  # type: ignore[return-value]
        for listener in self._listeners:
            listener.before_call(self, fn, *args, **kwargs)
        trial = self._before()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if not self._counts(exc):
                if trial and isinstance(exc, self._exclude):
                    self._record(None, trial)  # a business outcome: the service answered
                raise
            err = classify(exc)
            self._record(err, trial)
            if err is exc:
                raise
            raise err from exc
        self._record(None, trial)
        return result

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """:meth:`call` for coroutines; state checks on files or Redis run in a worker thread."""
        direct = isinstance(self._state, MemoryState)
        trial = self._before() if direct else await asyncio.to_thread(self._before)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if not self._counts(exc):
                raise
            err = classify(exc)
            if direct:
                self._record(err, trial)
            else:
                await asyncio.to_thread(self._record, err, trial)
            if err is exc:
                raise
            raise err from exc
        if direct:
            self._record(None, trial)
        else:
            await asyncio.to_thread(self._record, None, trial)
        return result

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Use the breaker as a decorator (sync or async functions)."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def _notify_state(self, new: str) -> None:
        for listener in self._listeners:
            listener.state_change(self, None, BreakerState(new))

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, fail_max={self.fail_max}, "
            f"reset_timeout={self.reset_timeout:g}, state={self._state.location!r})"
        )


def _home(
    name: str, state_path: str | os.PathLike[str] | None, redis_url: str | None, clock: Clock
) -> SharedState:
    if redis_url is not None:
        return RedisState(redis_url, f"resilient-trading:breaker:{name}")
    if state_path is not None:
        return JsonStoreState(state_path, section="breakers", name=name, clock=clock)
    return MemoryState(clock=clock)


class PybreakerStorage(pybreaker.CircuitBreakerStorage):
    """Keep a plain ``pybreaker.CircuitBreaker``'s state in one of our homes.

    For code that already uses pybreaker: its state, failure counter and opening time go to
    a :class:`LockedJsonStore` file (``state_path``) or Redis (``redis_url``), each change an
    atomic transition, in the same layout as :class:`CircuitBreaker` (so
    ``resilient-trading breaker status`` shows it). pybreaker's own semantics apply: no
    classification, no latch, and its lock around the whole call.

    Example:
        >>> import pybreaker, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "breakers.json")
        >>> cb = pybreaker.CircuitBreaker(state_storage=PybreakerStorage("api", state_path=path))
        >>> cb.current_state
        'closed'
    """

    def __init__(
        self,
        name: str = "default",
        *,
        state_path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
    ) -> None:
        super().__init__(name)
        if state_path is not None and redis_url is not None:
            raise ValueError("give state_path or redis_url, not both")
        self._home = _home(name, state_path, redis_url, SYSTEM_CLOCK)

    def _get(self) -> dict[str, Any]:
        return _current(self._home.read())

    def _set(self, **changes: Any) -> None:
        def fn(old: Any, now: float) -> tuple[Any, None]:
            return {**_current(old), **changes}, None

        self._home.transact(fn)

    def _add(self, key: str, amount: int | None) -> None:
        def fn(old: Any, now: float) -> tuple[Any, None]:
            cur = _current(old)
            value = 0 if amount is None else int(cur.get(key, 0)) + amount
            return {**cur, key: value}, None

        self._home.transact(fn)

    @property
    def state(self) -> str:
        return str(self._get()["state"])

    @state.setter
    def state(self, state: str) -> None:
        self._set(state=str(state))

    def increment_counter(self) -> None:
        self._add("failures", 1)

    def reset_counter(self) -> None:
        self._add("failures", None)

    def increment_success_counter(self) -> None:
        self._add("successes", 1)

    def reset_success_counter(self) -> None:
        self._add("successes", None)

    @property
    def counter(self) -> int:
        return int(self._get()["failures"])

    @property
    def success_counter(self) -> int:
        return int(self._get().get("successes", 0))

    @property
    def opened_at(self) -> datetime.datetime | None:
        value = self._get()["opened_at"]
        if value is None:
            return None
        return datetime.datetime.fromtimestamp(float(value), tz=datetime.timezone.utc)

    @opened_at.setter
    def opened_at(self, value: datetime.datetime) -> None:
        self._set(opened_at=value.timestamp())


def snapshot_of(name: str, value: Any, reset_timeout: float | None) -> BreakerSnapshot:
    """Describe a stored breaker value (used by the breaker and the CLI)."""
    cur = _current(value)
    opened = cur["opened_at"]
    retry_at = None
    if cur["state"] != "closed" and not cur["latched"] and opened is not None and reset_timeout:
        retry_at = opened + reset_timeout
    return BreakerSnapshot(
        name=name,
        state=BreakerState(cur["state"]),
        failures=int(cur["failures"]),
        latched=bool(cur["latched"]),
        reason=cur["reason"],
        opened_at=opened,
        retry_at=retry_at,
        trips=int(cur["trips"]),
    )
