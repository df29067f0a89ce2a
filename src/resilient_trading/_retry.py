"""RetryPolicy: retry what is transient, with capped exponential backoff and jitter.

Only :class:`~resilient_trading.TransientError`\\ s (after :func:`~resilient_trading.classify`)
are retried; a critical error or an open breaker is raised at once. A server's ``retry_after``
wins over the policy's own backoff. The success path calls the function directly and builds
nothing, so a guarded call that succeeds costs almost nothing.

Decide once, run twice: the decisions (the backoff curve, wait or give up) are pure functions
in ``_retry_rules.py``; :class:`_Run` holds one call's retries after its first failure and is
both an iterator (sync: sleeps with ``clock.sleep``) and an async iterator (``await
clock.sleep_async``), each attempt a context manager that classifies what it raised. The sync
and async entry points are the same short loop, differing only by ``await``.

Events: every policy publishes a :class:`~resilient_trading.RetryAttemptEvent` on the
process-wide bus, with no wiring: ``attempt`` before each wait and ``gave_up`` when it stops
retrying a transient error (attempts used up, or ``max_total`` reached). A critical error is
raised at once with no retry event (the breaker reports it). While nobody listens nothing is
built, and the success path never looks.

Why this module is long: four entry points (``call``, ``call_checked`` and their async twins) and
the decorator each keep their own success path, which builds nothing, so the sync and async pairs
are written out side by side; it is barely over 300 lines, and the decisions are in
``_retry_rules.py``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import CoroutineType, TracebackType
from typing import Any, ParamSpec, TypeVar

from resilient_trading import _retry_rules as rules
from resilient_trading._classify import classify
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._decorate import guard_decorator
from resilient_trading._errors import ResilienceError, TransientError
from resilient_trading._events import (
    RetryAttemptEvent,
    _RetryEventsHook,
    emit,
    event_text,
    listening,
)
from resilient_trading._validate import check_number

__all__ = ["RetryEvent", "RetryPolicy"]

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("resilient_trading.retry")


@dataclass(frozen=True)
class RetryEvent:
    """Passed to ``on_retry`` before each wait: which attempt failed, why, how long we wait."""

    attempt: int
    error: ResilienceError
    delay: float


class RetryPolicy:
    """Retry transient failures with exponential backoff and jitter.

    Args:
        attempts: Total attempts, the first included (``1`` never retries).
        base_delay: The first backoff, in seconds; it doubles each attempt.
        max_delay: The largest single backoff.
        max_total: Give up when the time spent waiting would exceed this (``None``: no cap).
        jitter: Randomise each backoff between half and all of it, so sharers do not retry
            in lock-step.
        clock: Where sleeping happens (tests pass a ``ManualClock``: no real waiting).
        on_retry: Called with a :class:`RetryEvent` before each wait. (The policy publishes
            its own events; a :func:`~resilient_trading.retry_events` hook aimed at the
            process-wide bus only names them and is not called: see there.)
        seed: Seed for the jitter (reproducible delays in tests).
        name: The operation its events name (``RetryAttemptEvent.operation``); by default
            the name of a ``retry_events`` hook, else the retried function's qualified name.

    Example:
        >>> from resilient_trading.testing import ManualClock
        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise ConnectionResetError("reset")
        ...     return "ok"
        >>> RetryPolicy(attempts=5, base_delay=0.5, clock=ManualClock()).call(flaky)
        'ok'
    """

    def __init__(
        self,
        attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        *,
        max_total: float | None = None,
        jitter: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        on_retry: Callable[[RetryEvent], None] | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts must be an int, got {attempts!r}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        self.attempts = attempts
        self.base_delay = check_number("base_delay", base_delay, positive=False)
        self.max_delay = check_number("max_delay", max_delay, positive=False)
        if self.base_delay > self.max_delay:
            raise ValueError("base_delay must not exceed max_delay")
        self.max_total = (
            None if max_total is None else check_number("max_total", max_total, positive=False)
        )
        self.jitter = bool(jitter)
        self.clock = clock
        self.on_retry = on_retry
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self.name = name
        self._random = random.Random(seed)

    def backoff(self, attempt: int) -> float:
        """The policy's own wait after failed attempt number ``attempt`` (before jitter)."""
        return rules.backoff(attempt, self.base_delay, self.max_delay)

    def delay(self, attempt: int, error: ResilienceError) -> float:
        """How long to wait after attempt ``attempt`` failed with ``error``."""
        return rules.longer_wait(self._jittered(attempt), getattr(error, "retry_after", None))

    def _jittered(self, attempt: int) -> float:
        own = self.backoff(attempt)
        if self.jitter and own:
            own = own / 2 + self._random.uniform(0, own / 2)
        return own

    # --- entry points: the same loop, sync and async --------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)``, retrying transient failures.

        A coroutine function gives an awaitable that retries it the way :meth:`call_async`
        does, as :meth:`CircuitBreaker.call <resilient_trading.CircuitBreaker.call>` does.
        """
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            run = _Run(self, exc, fn)
        else:
            if type(result) is not CoroutineType:  # the success path: one type check
                return result
            # ``fn`` is a coroutine function: retry it the async way.
            return self._awaited(result, functools.partial(fn, *args, **kwargs))  # type: ignore[return-value]
        return self._again(run, functools.partial(fn, *args, **kwargs), None)

    def call_checked(self, fn: Callable[[], T], check: Callable[[], T | None], /) -> T:
        """Like :meth:`call` for a call that must not take effect twice (placing an order).

        Before every retry ``check()`` is asked whether the failed attempt took effect anyway
        (a timeout after the request was sent, a lost response); a result other than ``None``
        is returned instead of calling ``fn`` again. Example: ``check`` looks the order up by
        its client order id. ``check`` is part of the attempt: if it fails, its error is
        classified like ``fn``'s (a transient one uses up the attempt and the loop goes on, a
        critical one is raised).
        """
        try:
            return fn()
        except Exception as exc:
            run = _Run(self, exc, fn)
        return self._again(run, fn, check)

    def _again(self, run: _Run, fn: Callable[[], T], check: Callable[[], T | None] | None) -> T:
        for attempt in run:
            with attempt:
                found = None if check is None else check()
                if found is not None:
                    return found
                return fn()
        raise run.error

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """:meth:`call` for coroutines; waits with ``await``, never blocking the loop."""
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            run = _Run(self, exc, fn)
        return await self._again_async(run, functools.partial(fn, *args, **kwargs), None)

    async def call_checked_async(
        self,
        fn: Callable[[], Awaitable[T]],
        check: Callable[[], T | Awaitable[T | None] | None] | None,
        /,
    ) -> T:
        """:meth:`call_checked` for coroutines; ``check`` may be sync or async."""
        try:
            return await fn()
        except Exception as exc:
            run = _Run(self, exc, fn)
        return await self._again_async(run, fn, check)

    async def _awaited(self, first: Any, again: Callable[[], Any]) -> Any:
        """:meth:`call` of a coroutine function: await its first coroutine, then retry."""
        try:
            return await first
        except Exception as exc:
            run = _Run(self, exc, getattr(again, "func", again))
        return await self._again_async(run, again, None)

    async def _again_async(
        self,
        run: _Run,
        fn: Callable[[], Awaitable[T]],
        check: Callable[[], T | Awaitable[T | None] | None] | None,
    ) -> T:
        async for attempt in run:
            with attempt:
                found: T | None = None if check is None else await _resolved(check())
                if found is not None:
                    return found
                result: T = await fn()
                return result
        raise run.error

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Use the policy as a decorator (sync or async functions: a coroutine function is
        retried with :meth:`call_async`)."""
        return guard_decorator(fn, self.call, self.call_async)

    # --- decisions -----------------------------------------------------------------------------

    def _classified(self, exc: Exception, attempt: int) -> ResilienceError:
        """``exc`` classified; raised at once when it must not be retried."""
        err = classify(exc, attempt=attempt)
        if err.attempt is None:
            err.attempt = attempt
        if not isinstance(err, TransientError):
            if err is exc:
                raise err
            raise err from exc
        return err

    def _next_delay(self, attempt: int, last: ResilienceError, waited: float) -> float | None:
        if attempt >= self.attempts:
            return None
        delay = rules.next_delay(
            own=self._jittered(attempt),
            retry_after=getattr(last, "retry_after", None),
            waited=waited,
            max_total=self.max_total,
        )
        if delay is None:
            return None
        log.warning("attempt %d failed (%s); retrying in %.3fs", attempt, last, delay)
        if self.on_retry is not None and not _native(self.on_retry):
            try:
                self.on_retry(RetryEvent(attempt, last, delay))
            except Exception:
                log.exception("on_retry %r raised; ignored (the retry goes on)", self.on_retry)
        return delay

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(attempts={self.attempts}, base_delay={self.base_delay:g}, "
            f"max_delay={self.max_delay:g}, max_total={self.max_total})"
        )


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _native(hook: object) -> bool:
    """``hook`` is a ``retry_events`` hook on the process-wide bus: the policy's own events
    are the same events, so it is not called (no event twice)."""
    return isinstance(hook, _RetryEventsHook) and hook.native()


def _operation(policy: RetryPolicy, fn: object) -> str | None:
    """What a run's events name: the policy's ``name``, a process-wide ``retry_events``
    hook's operation, or the retried function's qualified name."""
    if policy.name is not None:
        return event_text(policy.name)
    hook = policy.on_retry
    if isinstance(hook, _RetryEventsHook) and hook.native():
        return hook.operation
    name = getattr(fn, "__qualname__", None)
    return event_text(name) if isinstance(name, str) else None


class _Run:
    """One call's retries after its first failure.

    Iterate it (``for`` or ``async for``) to get each further attempt after its wait; use the
    attempt as a context manager around the call: a transient error is recorded and the loop
    goes on, a critical one is raised at once. When the policy gives up the iteration ends and
    :attr:`error` is the last error.
    """

    def __init__(self, policy: RetryPolicy, first: Exception, fn: object = None) -> None:
        self._policy = policy
        self._fn = fn
        self.attempt = 1
        self.waited = 0.0
        self.error = policy._classified(first, 1)

    def _wait(self) -> float | None:
        delay = self._policy._next_delay(self.attempt, self.error, self.waited)
        if listening():
            self._publish(delay)
        if delay is not None:
            self.waited += delay
            self.attempt += 1
        return delay

    def _publish(self, delay: float | None) -> None:
        """``attempt`` (this attempt failed; waiting ``delay``) or ``gave_up`` (``None``)."""
        emit(
            RetryAttemptEvent(
                kind="gave_up" if delay is None else "attempt",
                operation=_operation(self._policy, self._fn),
                attempt=self.attempt,
                delay=0.0 if delay is None else delay,
                error_kind=type(self.error).__name__,
                message=event_text(self.error),
            )
        )

    def __iter__(self) -> Iterator[_Run]:
        while (delay := self._wait()) is not None:
            self._policy.clock.sleep(delay)
            yield self

    async def __aiter__(self) -> AsyncIterator[_Run]:
        while (delay := self._wait()) is not None:
            await self._policy.clock.sleep_async(delay)
            yield self

    def __enter__(self) -> None:
        """Nothing to set up: the attempt's work is in :meth:`__exit__`."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # An Exception is classified: recorded (and swallowed, so the loop goes on) when
        # transient, raised at once otherwise. A BaseException passes through untouched.
        if isinstance(exc, Exception):
            self.error = self._policy._classified(exc, self.attempt)
        return isinstance(exc, Exception)
