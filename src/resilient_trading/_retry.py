"""RetryPolicy: retry what is transient, with capped exponential backoff and jitter.

Only :class:`~resilient_trading.TransientError`\\ s (after :func:`~resilient_trading.classify`)
are retried; a critical error or an open breaker is raised at once. A server's ``retry_after``
wins over the policy's own backoff. The backoff curve is tenacity's ``wait_exponential``; the
success path calls the function directly and builds nothing, so a guarded call that succeeds
costs almost nothing.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from resilient_trading._classify import classify
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import ResilienceError, TransientError
from resilient_trading._validate import check_number

__all__ = ["RetryEvent", "RetryPolicy"]

T = TypeVar("T")
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
        on_retry: Called with a :class:`RetryEvent` before each wait.
        seed: Seed for the jitter (reproducible delays in tests).

    Example:
        >>> from resilient_trading._clock import ManualClock
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
        self._random = random.Random(seed)
        self._wait = tenacity.wait_exponential(multiplier=self.base_delay, max=self.max_delay)

    def backoff(self, attempt: int) -> float:
        """The policy's own wait after failed attempt number ``attempt`` (before jitter)."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state)) if self.base_delay else 0.0

    def delay(self, attempt: int, error: ResilienceError) -> float:
        """How long to wait after attempt ``attempt`` failed with ``error``."""
        own = self.backoff(attempt)
        if self.jitter and own:
            own = own / 2 + self._random.uniform(0, own / 2)
        server = getattr(error, "retry_after", None)
        return max(own, server or 0.0)

    # --- sync ---------------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)``, retrying transient failures."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            first = self._classified(exc, 1)
        return self._retry(functools.partial(fn, *args, **kwargs), None, first)

    def call_checked(self, fn: Callable[[], T], check: Callable[[], T | None], /) -> T:
        """Like :meth:`call` for a call that must not take effect twice (placing an order).

        Before every retry ``check()`` is asked whether the failed attempt took effect anyway
        (a timeout after the request was sent, a lost response); a result other than ``None``
        is returned instead of calling ``fn`` again. Example: ``check`` looks the order up by
        its client order id.
        """
        try:
            return fn()
        except Exception as exc:
            first = self._classified(exc, 1)
        return self._retry(fn, check, first)

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Use the policy as a decorator."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def _classified(self, exc: Exception, attempt: int) -> ResilienceError:
        err = classify(exc, attempt=attempt)
        if err.attempt is None:
            err.attempt = attempt
        if not isinstance(err, TransientError) or self.attempts == 1:
            if err is exc:
                raise err
            raise err from exc
        return err

    def _next_delay(self, attempt: int, last: ResilienceError, waited: float) -> float | None:
        if attempt >= self.attempts:
            return None
        delay = self.delay(attempt, last)
        if self.max_total is not None and waited + delay > self.max_total:
            return None
        event = RetryEvent(attempt, last, delay)
        log.warning("attempt %d failed (%s); retrying in %.3fs", attempt, last, delay)
        if self.on_retry is not None:
            self.on_retry(event)
        return delay

    def _retry(
        self, fn: Callable[[], T], check: Callable[[], T | None] | None, first: ResilienceError
    ) -> T:
        last, attempt, waited = first, 1, 0.0
        while True:
            delay = self._next_delay(attempt, last, waited)
            if delay is None:
                raise last
            self.clock.sleep(delay)
            waited += delay
            attempt += 1
            if check is not None:
                found = check()
                if found is not None:
                    return found
            try:
                return fn()
            except Exception as exc:
                last = self._classified(exc, attempt)

    # --- async --------------------------------------------------------------------------------

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """:meth:`call` for coroutines; waits with ``await``, never blocking the loop."""
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            last = self._classified(exc, 1)
        attempt, waited = 1, 0.0
        while True:
            delay = self._next_delay(attempt, last, waited)
            if delay is None:
                raise last
            await self.clock.sleep_async(delay)
            waited += delay
            attempt += 1
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                last = self._classified(exc, attempt)

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(attempts={self.attempts}, base_delay={self.base_delay:g}, "
            f"max_delay={self.max_delay:g}, max_total={self.max_total})"
        )
