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

The decisions live in ``_breaker_rules.py`` (pure functions over a typed record); this module
is the shell: :meth:`CircuitBreaker.call` and :meth:`CircuitBreaker.call_async` are the same
three steps (admit, call, settle) and differ only by ``await``. Bookkeeping never replaces the
user's outcome: if the outcome cannot be recorded (Redis died during the call), the result is
returned (or the call's own error raised) and the failure to record is logged and passed to
the listeners' ``outcome_not_recorded`` hook. If admission cannot be read, the call is refused
with a typed error before ``fn`` runs.

Events: every breaker publishes :class:`~resilient_trading.BreakerEvent` objects on the
process-wide bus with no wiring: ``failure`` (a counted failure: its error kind, redacted
text, ``latched`` when critical), ``state_change`` (``old`` → ``new``; a change to open
carries the error that caused it and ``latched``), ``reset`` (:meth:`CircuitBreaker.reset`)
and ``not_recorded``. They report what this process's calls did; a transition another process
made is seen in the shared state (``status``, the exporter), not as an event here. Successes
are not events (a listener on every success would double the cost of a guarded call):
attach ``BreakerEvents(successes=True)`` for them, or ``BreakerEvents(latency=True)`` to time
each call (a ``call`` event with its ``outcome`` and ``seconds``). A
:class:`~resilient_trading.BreakerEvents` adapter aimed at the process-wide bus is then only
asked for what the breaker does not publish
(:meth:`~resilient_trading.BreakerEvents.hook`), so nothing is published twice.

Why this module is long: it is one idea (about a fifth of it docstrings), the shell
that carries a call through admit, call and settle, sync and async, with the cancellation and
listener rules that go with it. The decisions are in ``_breaker_rules.py``; the pybreaker
adapter is in ``_pybreaker.py``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

from resilient_trading import _breaker_rules as rules
from resilient_trading._breaker_rules import (
    Admission,
    BreakerRecord,
    BreakerSnapshot,
    BreakerState,
    Change,
    Now,
)
from resilient_trading._classify import classify
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._decorate import guard_decorator
from resilient_trading._errors import (
    CircuitOpenError,
    CriticalError,
    ResilienceError,
    StateCorruptedError,
    TransientError,
    redact,
)
from resilient_trading._events import BreakerEvent, BreakerEvents, emit, event_text, listening
from resilient_trading._validate import check_int, check_number, check_optional_number
from resilient_trading.backends import JsonStoreState, MemoryState, RedisState, SharedState

__all__ = [
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerListener",
    "snapshot_of",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
_Rule = Callable[[BreakerRecord, Now], tuple[BreakerRecord, Change | None]]
log = logging.getLogger("resilient_trading.breaker")

_HINT = (
    "the breaker cannot see the outcome of a generator's iteration; guard a function that "
    "consumes it, e.g. breaker.call(lambda: list(gen()))"
)


class _UnguardableError(TypeError):
    """``fn`` gave something whose outcome comes later than the call (a generator)."""


# Exceptions that say nothing about the guarded service: not counted; a trial is released.
_NO_OUTCOME = (CircuitOpenError, _UnguardableError)


class CircuitBreakerListener:
    """Hooks called by the breaker; the same methods as ``pybreaker.CircuitBreakerListener``
    (whose instances are accepted too). Override what you need. A listener that raises is
    logged and ignored: it never changes the outcome of the call it observes."""

    def before_call(self, cb: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Before each admitted or refused call."""

    def success(self, cb: Any) -> None:
        """After a call that succeeded."""

    def failure(self, cb: Any, exc: BaseException) -> None:
        """After a call that failed (with the classified error)."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        """After the breaker moved from ``old_state`` to ``new_state`` (both
        :class:`BreakerState`; ``.value`` is pybreaker's state name)."""

    def outcome_not_recorded(self, cb: Any, exc: BaseException) -> None:
        """Recording a call's outcome failed with ``exc`` (the call's own outcome stood)."""


_HOOKS = ("before_call", "success", "failure", "state_change", "outcome_not_recorded")


def _inherited_no_op(listener: Any, hook: str) -> bool:
    """``hook`` on ``listener`` is the empty body of a base listener class (ours or pybreaker's)."""
    for klass in type(listener).__mro__:
        if hook in vars(klass):
            return klass is CircuitBreakerListener or (
                klass.__module__ == "pybreaker" and klass.__name__ == "CircuitBreakerListener"
            )
    return False


def _home(
    name: str,
    state_path: str | os.PathLike[str] | None,
    redis_url: str | None,
    clock: Clock,
    lock_timeout: float | None = 10.0,
) -> SharedState:
    if redis_url is not None:
        return RedisState(redis_url, f"resilient-trading:breaker:{name}")
    if state_path is not None:
        return JsonStoreState(
            state_path, section="breakers", name=name, clock=clock, lock_timeout=lock_timeout
        )
    return MemoryState(clock=clock)


def _ensure_exists(old: Any, now: float) -> tuple[Any, None]:
    return (old, None) if old is not None else (BreakerRecord().to_json(), None)


_CLOSED = BreakerRecord()
_GENERATORS = (types.GeneratorType, types.AsyncGeneratorType)


def _no_reading() -> None:
    return None


def _changes_nothing(admission: Admission, exc: BaseException | None) -> bool:
    """A success admitted by a quiet breaker: nothing to record. (Failures other callers
    recorded meanwhile stand: this success is ordered at its admission, a point inside the
    call, so no write and no second read are needed.)"""
    return exc is None and not admission.trial and rules.is_quiet(admission.record)


def _given(value: Any) -> Any:
    return value


def _refuse_generator(result: Any) -> None:
    if not isinstance(result, _GENERATORS):
        return
    if isinstance(result, types.GeneratorType):
        result.close()
    raise _UnguardableError(f"the guarded function returned {result!r}: {_HINT}")


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
            ``state_change``, and ours: ``outcome_not_recorded``).
        clock: Time source (tests pass a ``ManualClock``).
        lock_timeout: Seconds to wait for the state file's lock (``state_path`` only) before
            :class:`LockTimeoutError`; ``None`` waits forever.

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
        listeners: Sequence[Any] = (),
        clock: Clock = SYSTEM_CLOCK,
        lock_timeout: float | None = 10.0,
    ) -> None:
        self.fail_max = check_int("fail_max", fail_max, minimum=1)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if state_path is not None and redis_url is not None:
            raise ValueError("give state_path or redis_url, not both")
        for item in exclude:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"exclude must hold exception types, got {item!r}")
        self.reset_timeout = check_number("reset_timeout", reset_timeout)
        self.lock_timeout = check_optional_number("lock_timeout", lock_timeout, positive=False)
        self.name = name
        self._exclude = tuple(exclude)
        self._listeners: list[Any] = list(listeners)
        self._hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
        self._index_listeners()
        self._clock = clock
        self._state = _home(name, state_path, redis_url, clock, self.lock_timeout)
        # Per-process state measures durations on the monotonic clock (never stepped).
        self._per_process = isinstance(self._state, MemoryState)
        self._monotonic: Callable[[], float | None] = getattr(clock, "monotonic", _no_reading)
        self._location = self._state.location
        self._read = self._state.read
        self._admit_rule = functools.partial(rules.admit, reset_timeout=self.reset_timeout)
        self._success_rules = {
            trial: functools.partial(rules.settle_success, trial=trial) for trial in (False, True)
        }
        self._parsed: tuple[Any, BreakerRecord] | None = None
        if not self._per_process:
            # Make the breaker visible to the CLI from the start (never overwrites a latch).
            self._state.transact(_ensure_exists)

    # --- observation -----------------------------------------------------------------------

    def snapshot(self) -> BreakerSnapshot:
        """The stored state now.

        Raises:
            StateCorruptedError: The stored record is damaged (the message names where).
        """
        rec = BreakerRecord.from_json(self._state.read(), self._location)
        return rules.snapshot(self.name, rec, self.reset_timeout, self._now())

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

    def add_listener(self, listener: Any) -> None:
        """Attach a listener (see :class:`CircuitBreakerListener`)."""
        self._listeners.append(listener)
        self._index_listeners()

    # --- the shell around the rules ----------------------------------------------------------

    def _transact(
        self, rule: Callable[[BreakerRecord, Now], tuple[BreakerRecord, R]]
    ) -> tuple[BreakerRecord, R]:
        """Apply a pure rule to the stored record, atomically: the new record and the result."""
        if self._per_process:
            # Kept as a record object, never serialised. Decide on a lock-free read first and
            # lock only to change something: the rules are pure, so deciding twice is safe.
            rec = self._state.read() or _CLOSED
            new, result = rule(rec, Now(self._clock.time(), self._monotonic()))
            if new is rec:
                return new, result

            def in_memory(old: Any, wall: float) -> tuple[Any, tuple[BreakerRecord, R]]:
                rec = old or _CLOSED
                new, result = rule(rec, Now(wall, self._monotonic()))
                return (old if new is rec else new), (new, result)

            return self._state.transact(in_memory)

        def step(old: Any, wall: float) -> tuple[Any, tuple[BreakerRecord, R]]:
            rec = self._parse(old)
            new, result = rule(rec, Now(wall))
            return (old if new is rec else new.to_json()), (new, result)

        return self._state.transact(step)

    def _now(self) -> Now:
        return Now(self._clock.time(), self._monotonic())

    def _parse(self, value: Any) -> BreakerRecord:
        """``BreakerRecord.from_json``, reusing the last parse while the stored value is equal."""
        last = self._parsed
        if last is not None and last[0] == value:
            return last[1]
        rec = BreakerRecord.from_json(value, self._location)
        self._parsed = (dict(value) if isinstance(value, dict) else value, rec)
        return rec

    def _index_listeners(self) -> None:
        """Which listeners really implement each hook: the no-op bodies inherited from
        :class:`CircuitBreakerListener` or pybreaker's base listener are skipped, so a listener
        costs nothing on the hooks it does not override."""
        hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
        for hook in _HOOKS:
            methods = []
            for listener in self._listeners:
                if isinstance(listener, BreakerEvents):  # it says which: nothing twice
                    method = listener.hook(hook)
                    if method is not None:
                        methods.append(method)
                    continue
                method = getattr(listener, hook, None)
                if method is not None and not _inherited_no_op(listener, hook):
                    methods.append(method)
            if methods:
                hooks[hook] = tuple(methods)
        self._hooks = hooks

    def _emit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        methods = self._hooks.get(hook)
        if not methods:
            return
        for method in methods:
            listener = getattr(method, "__self__", method)
            try:
                method(self, *args, **kwargs)
            except Exception:
                log.exception(
                    "breaker %r: listener %r raised in %s; ignored (the call's outcome stands)",
                    self.name,
                    listener,
                    hook,
                )

    def _publish(
        self,
        kind: Literal["failure", "state_change", "reset", "not_recorded"],
        cause: BaseException | None = None,
        change: Change | None = None,
        latched: bool | None = None,
    ) -> None:
        """Publish one :class:`BreakerEvent` (the caller checked :func:`listening`)."""
        emit(
            BreakerEvent(
                kind=kind,
                breaker=self.name,
                old=None if change is None else change.old.value,
                new=None if change is None else change.new.value,
                latched=isinstance(cause, CriticalError) if latched is None else latched,
                error_kind=None if cause is None else type(cause).__name__,
                message=event_text(cause),
            )
        )

    def _announce(
        self,
        change: Change | None,
        rec: BreakerRecord | None = None,
        cause: BaseException | None = None,
    ) -> None:
        if change is None:
            return
        if listening():
            opened = change.new is BreakerState.OPEN
            self._publish(
                "state_change",
                cause if opened else None,
                change,
                latched=opened and rec is not None and rec.latched,
            )
        if change.new is BreakerState.OPEN and rec is not None:
            latched = " and latched" if rec.latched else ""
            log.error("breaker %r open%s: %s", self.name, latched, rec.reason)
        elif change.new is BreakerState.OPEN:
            log.warning("breaker %r: trial ended without an outcome; open again", self.name)
        elif change.new is BreakerState.HALF_OPEN:
            log.warning("breaker %r half-open: one trial call", self.name)
        else:
            log.info("breaker %r closed", self.name)
        self._emit("state_change", change.old, change.new)

    def reset(self) -> None:
        """Close the breaker and clear the latch (the operator's action). Every process
        sharing the state sees it on its next call. A damaged record is overwritten."""

        def step(old: Any, wall: float) -> tuple[Any, Change | None]:
            try:
                rec = BreakerRecord.from_json(old, self._location)
            except StateCorruptedError as exc:
                log.warning("breaker %r: replacing a damaged record: %s", self.name, exc)
                rec, new = _CLOSED, _CLOSED
                change: Change | None = Change(BreakerState.OPEN, BreakerState.CLOSED)
            else:
                new, change = rules.reset(rec, Now(wall))
                if new is rec:
                    return old, None
            return (new if self._per_process else new.to_json()), change

        change = self._state.transact(step)
        if change is not None:
            log.info("breaker %r reset by operator: closed", self.name)
            if listening():
                self._publish("reset", change=change, latched=False)
            self._emit("state_change", change.old, change.new)

    def _refusal(self, rec: BreakerRecord) -> CircuitOpenError:
        retry_at = rules.snapshot(self.name, rec, self.reset_timeout, self._now()).retry_at
        if rec.latched:
            why = "latched by a critical error: an operator must reset it"
        elif rec.state is BreakerState.HALF_OPEN:
            why = "a trial call is in progress"
        else:
            why = f"open until a trial at {retry_at:.3f}" if retry_at else "open"
        err = CircuitOpenError(
            f"breaker {self.name!r} refused the call: {why} (opened by {rec.reason})",
            name=self.name,
            latched=rec.latched,
            reason=rec.reason,
            opened_at=rec.opened_at,
            retry_at=None if rec.latched else retry_at,
        )
        log.debug("%s", err)
        return err

    def _admit(self) -> Admission:
        if self._per_process:
            rec: BreakerRecord = self._read() or _CLOSED
            if rules.is_quiet(rec):  # the hot path: nothing to decide, nothing to lock
                return Admission(True, False, rec)
        try:
            _, admission = self._transact(self._admit_rule)
        except ResilienceError:
            raise
        except Exception as exc:
            raise classify(exc, operation=f"breaker {self.name!r} admission") from exc
        if not admission.allowed:
            raise self._refusal(admission.record)
        if admission.trial:
            self._announce(Change(admission.record.state, BreakerState.HALF_OPEN))
        return admission

    def _settle(self, admission: Admission, exc: BaseException | None) -> BaseException | None:
        """Record the outcome of an admitted call and return what the caller must see: ``None``
        (return the result), ``exc`` itself, or its classified error (``exc`` as its cause).

        Recording never replaces that outcome: a failure to record is logged and emitted.
        """
        trial = admission.trial
        if _changes_nothing(admission, exc):
            if "success" in self._hooks:
                self._emit("success")
            return None
        rule: _Rule | None = None
        outcome: BaseException | None = None
        if exc is not None and isinstance(exc, Exception) and not isinstance(exc, _NO_OUTCOME):
            outcome = exc if isinstance(exc, self._exclude) else classify(exc)
        # An excluded exception, or an error neither transient nor critical (an order the
        # exchange settled as not filled, say), is an answer: the service works.
        answered = outcome is not None and not isinstance(outcome, (TransientError, CriticalError))
        succeeded = exc is None or (answered and trial)
        if succeeded:
            rule = self._success_rules[trial]
        elif outcome is not None and not answered:
            rule = functools.partial(
                rules.settle_failure,
                critical=isinstance(outcome, CriticalError),
                reason=redact(f"{type(outcome).__name__}: {outcome}")[:500],
                trial=trial,
                fail_max=self.fail_max,
            )
        elif outcome is None and trial:
            # No outcome (cancelled, interrupted, refused elsewhere): free our trial.
            rule = functools.partial(rules.release_trial, token=admission.token)
        recorded = None if rule is None else self._record(rule, exc)
        if succeeded:
            self._emit("success")
        elif outcome is not None and not answered:
            if listening():
                self._publish("failure", outcome)
            self._emit("failure", outcome)
        if recorded is not None:
            self._announce(recorded[0], recorded[1], outcome)
        return exc if outcome is None else outcome

    def _record(
        self, rule: _Rule, exc: BaseException | None
    ) -> tuple[Change | None, BreakerRecord] | None:
        """Apply ``rule``; ``None`` when the state could not be written (logged, emitted)."""
        try:
            rec, change = self._transact(rule)
        except Exception as failure:
            what = "success" if exc is None else type(exc).__name__
            log.error(
                "breaker %r could not record an outcome (%s) at %s: %s: %s; the call's own "
                "outcome is returned, the breaker's count may be behind",
                self.name,
                what,
                self._state.location,
                type(failure).__name__,
                redact(str(failure))[:300],
            )
            if listening():
                self._publish("not_recorded", failure, latched=False)
            self._emit("outcome_not_recorded", failure)
            return None
        return change, rec

    async def _settled(
        self, admission: Admission, exc: BaseException | None
    ) -> BaseException | None:
        """:meth:`_settle` without blocking the loop: state I/O runs in a worker thread, which
        a cancelled caller lets finish."""
        if self._per_process or _changes_nothing(admission, exc):
            return self._settle(admission, exc)
        return await asyncio.shield(asyncio.to_thread(self._settle, admission, exc))

    async def _admit_async(self) -> Admission:
        """:meth:`_admit` off the loop. If the caller is cancelled meanwhile, the admission
        still completes in its thread; a trial it took is then released, by that thread or,
        if it had already finished, by a helper thread (never by a loop that may be gone)."""
        if self._per_process:
            return self._admit()
        lock = threading.Lock()
        taken: list[Admission] = []
        abandoned: list[bool] = []

        def admit_or_release() -> Admission:
            admission = self._admit()
            with lock:
                if not abandoned:
                    taken.append(admission)
                    return admission
            if admission.trial:
                self._settle(admission, asyncio.CancelledError())
            return admission

        try:
            return await asyncio.shield(asyncio.to_thread(admit_or_release))
        except asyncio.CancelledError:
            with lock:
                abandoned.append(True)
            if taken and taken[0].trial:
                threading.Thread(
                    target=self._settle, args=(taken[0], asyncio.CancelledError())
                ).start()
            raise

    # --- calling ------------------------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` if the breaker allows it.

        A coroutine function, or a function returning an awaitable, gives an awaitable
        (``await breaker.call(async_fn)``). Failures are raised as their classified
        :class:`ResilienceError` (the original is its cause).

        Raises:
            CircuitOpenError: Open or latched: ``fn`` was not called.
            TypeError: ``fn`` is (or returned) a generator, whose outcome the breaker cannot
                see; nothing was counted.
            ResilienceError: The breaker's state could not be read (Redis down, a damaged
                file): ``fn`` was not called.
        """
        if inspect.iscoroutinefunction(fn):
            return self.call_async(fn, *args, **kwargs)  # type: ignore[return-value]
        if "before_call" in self._hooks:
            self._emit("before_call", fn, *args, **kwargs)
        admission = self._admit()
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                awaited = self._finish_async(admission, _given, (result,), {})
                return awaited  # type: ignore[return-value]
            _refuse_generator(result)
        except BaseException as exc:
            raise self._settle(admission, exc) or exc  # noqa: B904 (cause set by classify)
        self._settle(admission, None)
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """:meth:`call` for coroutines; state checks on files or Redis run in a worker thread.

        A cancelled call releases what it took: a half-open trial it was running goes back
        to open (due at once), so the next call gets a fresh trial.
        """
        if "before_call" in self._hooks:
            self._emit("before_call", fn, *args, **kwargs)
        admission = self._admit() if self._per_process else await self._admit_async()
        result: T = await self._finish_async(admission, fn, args, kwargs)
        return result

    async def _finish_async(
        self, admission: Admission, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            _refuse_generator(result)
        except BaseException as exc:
            raise await self._settled(admission, exc) or exc  # noqa: B904 (cause set by classify)
        if self._per_process or _changes_nothing(admission, None):
            self._settle(admission, None)
        else:
            await self._settled(admission, None)
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Use the breaker as a decorator (sync or async functions)."""
        return guard_decorator(fn, self.call, self.call_async)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, fail_max={self.fail_max}, "
            f"reset_timeout={self.reset_timeout:g}, state={self._state.location!r})"
        )


def snapshot_of(
    name: str,
    value: Any,
    reset_timeout: float | None,
    location: str = "breaker state",
    now: float | None = None,
) -> BreakerSnapshot:
    """Describe a stored breaker value (used by the CLI). ``now`` (wall clock) lets
    ``retry_at`` say "due now" for an ``opened_at`` a clock step put in the future.

    Raises:
        StateCorruptedError: ``value`` is not a breaker record (the message names
            ``location``).
    """
    rec = BreakerRecord.from_json(value, location)
    return rules.snapshot(name, rec, reset_timeout, None if now is None else Now(now))
