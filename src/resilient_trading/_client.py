"""RateLimitedClient: wrap any API client once; every call is weighed, guarded and classified.

Per call, from the outside in::

    breaker.call( retry.call( [ limiter.acquire(weight); inner.method(...) ] ) )

The breaker is outermost (an open breaker refuses at once and spends no budget), retry is
inside it (only a failure that outlasts its retries counts against the breaker), and every
attempt acquires its own weight before it is sent. Every exception is passed through
:func:`~resilient_trading.classify`; a 429 pauses the shared limiter so every sharer backs off.
A method with an idempotency check asks it before every attempt after the first, in both modes.

Decide once, run twice: what a call will do (its weight, its retry policy, its check) is
decided in one place (``_plan``); the sync and async shells differ only by ``await``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, Protocol, TypeVar, cast

from resilient_trading._classify import classify
from resilient_trading._errors import RateLimitedError, ResilienceError
from resilient_trading._ratelimit import RateLimiter
from resilient_trading._redact import safe_text
from resilient_trading._validate import check_number

__all__ = ["BreakerLike", "RateLimitedClient", "RetryLike", "Weight"]

log = logging.getLogger("resilient_trading.client")
T = TypeVar("T")
C = TypeVar("C")

#: A method's weight: a constant, or a function of the call's ``(*args, **kwargs)``.
Weight = int | Callable[..., int]


class _Guard(Protocol):
    """Something that runs a call for you, in both modes (a breaker, a retry policy)."""

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...

    async def call_async(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> T: ...


class BreakerLike(_Guard, Protocol):
    """What the client needs of a circuit breaker (:class:`~resilient_trading.CircuitBreaker`)."""


class RetryLike(_Guard, Protocol):
    """What the client needs of a retry policy (:class:`~resilient_trading.RetryPolicy`)."""


@dataclass(frozen=True)
class _Plan:
    """What one call of ``name`` will do, decided before its first attempt."""

    name: str
    operation: str
    weight: int
    retry: RetryLike | None
    check: Callable[[], Any] | None

    def checked(self, attempt: Callable[[], T]) -> Callable[[], T]:
        """``attempt``, asking ``check`` before every attempt after the first: a result other
        than ``None`` means the earlier attempt took effect, and is returned instead."""
        check = self.check
        if check is None or self.retry is None:
            return attempt
        attempts = itertools.count()

        def checked_attempt() -> T:
            if next(attempts) and (found := check()) is not None:
                return cast(T, found)
            return attempt()

        return checked_attempt

    def checked_async(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """:meth:`checked` for coroutines; a sync ``check`` runs in a worker thread."""
        check = self.check
        if check is None or self.retry is None:
            return attempt

        async def ask() -> Any:
            if inspect.iscoroutinefunction(check):
                return await check()
            return await asyncio.to_thread(check)

        attempts = itertools.count()

        async def checked_attempt() -> T:
            if next(attempts) and (found := await ask()) is not None:
                return cast(T, found)
            return await attempt()

        return checked_attempt


class RateLimitedClient(Generic[C]):
    """A proxy for ``inner`` whose methods respect a :class:`RateLimiter`.

    Args:
        inner: Any object (an SDK's ``Info``, a ``requests.Session``, your own client).
        limiter: The (possibly shared) budget.
        weights: Method name → weight (an int, or a function of the call's arguments).
        default_weight: Weight of methods not in ``weights``.
        extra_weights: Method name → function of the *result* giving weight spent beyond the
            up-front weight (for APIs that charge per item returned); charged after the call.
        breaker: A circuit breaker to guard every call (outermost).
        retry: A retry policy for every call (inside the breaker).
        response_check: ``check(method_name, result)`` raising a
            :class:`~resilient_trading.ResilienceError` for answers that carry an error inside
            a success (Hyperliquid's ``{"status": "err"}``); runs inside retry.
        idempotency_checks: Method name → ``check(*args, **kwargs)`` returning what the first
            attempt achieved, or ``None``; asked before retrying an ambiguous failure so a
            non-idempotent call (placing an order) is never sent twice.
        default_pause: Seconds every sharer pauses after a 429 without ``Retry-After``.
        acquire_timeout: Longest wait for budget before ``RateLimitedError`` (``None``: no cap).

    Example:
        >>> from resilient_trading import RateLimit, RateLimiter
        >>> class Api:
        ...     def ping(self) -> str:
        ...         return "pong"
        >>> client = RateLimitedClient(Api(), limiter=RateLimiter(RateLimit(10, 1.0)),
        ...                            weights={"ping": 2})
        >>> client.ping()
        'pong'
    """

    def __init__(
        self,
        inner: C,
        *,
        limiter: RateLimiter,
        weights: Mapping[str, Weight] | None = None,
        default_weight: int = 1,
        extra_weights: Mapping[str, Callable[[Any], int]] | None = None,
        breaker: BreakerLike | None = None,
        retry: RetryLike | None = None,
        response_check: Callable[[str, Any], None] | None = None,
        idempotency_checks: Mapping[str, Callable[..., Any]] | None = None,
        default_pause: float = 10.0,
        acquire_timeout: float | None = None,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a RateLimiter, got {type(limiter).__name__}")
        if isinstance(default_weight, bool) or not isinstance(default_weight, int):
            raise TypeError(f"default_weight must be an int, got {default_weight!r}")
        if default_weight < 0:
            raise ValueError(f"default_weight must be >= 0, got {default_weight!r}")
        for name, weight in (weights or {}).items():
            if not (callable(weight) or (isinstance(weight, int) and not isinstance(weight, bool))):
                raise TypeError(f"weight of {name!r} must be an int or a callable, got {weight!r}")
        self._inner = inner
        self._limiter = limiter
        self._weights = dict(weights or {})
        self._default_weight = default_weight
        self._extra = dict(extra_weights or {})
        self._breaker = breaker
        self._retry = retry
        self._response_check = response_check
        self._checks = dict(idempotency_checks or {})
        self._default_pause = check_number("default_pause", default_pause)
        self._acquire_timeout = (
            None
            if acquire_timeout is None
            else check_number("acquire_timeout", acquire_timeout, positive=False)
        )
        self._label = type(inner).__name__

    @property
    def inner(self) -> C:
        """The wrapped object (calls on it bypass every guard)."""
        return self._inner

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    def weight_of(self, name: str, *args: Any, **kwargs: Any) -> int:
        """The up-front weight of calling ``name(*args, **kwargs)``."""
        weight = self._weights.get(name, self._default_weight)
        value = weight(*args, **kwargs) if callable(weight) else weight
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"weight of {name!r} must be an int >= 0, got {value!r}")
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        return self._wrap(name, attr)

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` guarded: a coroutine function gets the async shell, others the sync."""
        if inspect.iscoroutinefunction(method):
            return self._wrap_async(name, method)
        return self._wrap_sync(name, method)

    # --- decided once -------------------------------------------------------------------------
    #
    # Everything a call needs (its weight, its retry, its idempotency check) is decided in
    # _plan; the sync and async shells below differ only by ``await``.

    def _retry_for(self, name: str) -> RetryLike | None:
        """The retry policy for calls of ``name`` (subclasses may refuse some)."""
        return self._retry

    def _plan(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        check = self._checks.get(name)
        return _Plan(
            name=name,
            operation=f"{self._label}.{name}",
            weight=self.weight_of(name, *args, **kwargs),
            retry=self._retry_for(name),
            check=None if check is None else functools.partial(check, *args, **kwargs),
        )

    def _failed(self, exc: Exception, operation: str) -> ResilienceError:
        err = classify(exc, operation=operation)
        if isinstance(err, RateLimitedError) and err.source == "server":
            pause = err.retry_after if err.retry_after is not None else self._default_pause
            self._limiter.pause(pause)
        return err

    def _raise_classified(self, exc: Exception, operation: str) -> NoReturn:
        """Raise what ``exc`` is (:func:`~resilient_trading.classify`), chained to it; called
        from the ``except`` clause that caught ``exc``."""
        err = self._failed(exc, operation)
        if err is exc:
            raise exc
        raise err from exc

    def _finish(self, name: str, result: Any) -> Any:
        extra = self._extra.get(name)
        if extra is not None:
            try:
                self._limiter.charge(int(extra(result)))
            except Exception as exc:
                # Bookkeeping after the call: the call happened, its result stands (raising
                # here would make a retry send it again). Logged, never propagated.
                log.error(
                    "%s.%s: charging the per-item weight failed (%s); the result is returned",
                    self._label,
                    name,
                    safe_text(exc, 300),
                )
        if self._response_check is not None:
            self._response_check(name, result)
        return result

    # --- run: the same shells, once without and once with ``await`` ----------------------------

    def _guarded(self, retry: RetryLike | None, run: Callable[[], T]) -> T:
        """``run`` inside ``retry`` (if any) inside the breaker (if any)."""
        if retry is not None:
            run = functools.partial(retry.call, run)
        return self._breaker.call(run) if self._breaker is not None else run()

    async def _guarded_async(self, retry: RetryLike | None, run: Callable[[], Awaitable[T]]) -> T:
        if retry is not None:
            run = functools.partial(retry.call_async, run)
        return await (self._breaker.call_async(run) if self._breaker is not None else run())

    def _send(self, weight: int, request: Callable[[], T], operation: str) -> T:
        """One attempt: ``weight`` taken from the limiter, then ``request`` made; a failure
        is raised classified."""
        if weight:
            self._limiter.acquire(weight, timeout=self._acquire_timeout)
        try:
            return request()
        except Exception as exc:
            self._raise_classified(exc, operation)

    async def _send_async(
        self, weight: int, request: Callable[[], Awaitable[T]], operation: str
    ) -> T:
        if weight:
            await self._limiter.acquire_async(weight, timeout=self._acquire_timeout)
        try:
            return await request()
        except Exception as exc:
            self._raise_classified(exc, operation)

    def _wrap_sync(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            plan = self._plan(name, args, kwargs)
            request = functools.partial(method, *args, **kwargs)

            def attempt() -> Any:
                return self._finish(name, self._send(plan.weight, request, plan.operation))

            return self._guarded(plan.retry, plan.checked(attempt))

        return call

    def _wrap_async(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            plan = self._plan(name, args, kwargs)
            request = functools.partial(method, *args, **kwargs)

            async def attempt() -> Any:
                sent = await self._send_async(plan.weight, request, plan.operation)
                return self._finish(name, sent)

            return await self._guarded_async(plan.retry, plan.checked_async(attempt))

        return call

    def __repr__(self) -> str:
        return f"RateLimitedClient({self._inner!r}, limiter={self._limiter!r})"
