"""Typed events and one small listener API, for metrics, alerts and your own logs.

Every event is a frozen dataclass carrying only redacted text
(:func:`~resilient_trading.safe_text`): no key, token or signature reaches a listener. Register a
listener with :func:`add_listener` and it is called with each event :func:`emit` publishes; a
listener that raises is logged and ignored, never propagated: it cannot change the outcome of
the call it observes. Listeners run in the emitting thread, so they must be quick; hand slow
work (a webhook) to a queue, as :class:`~resilient_trading.AlertSink` does.

Every primitive emits its own events, with no wiring (:func:`listening` first: nothing is
built while nobody listens): the rate limiter, the retry policy, the breaker, the store, the
Hyperliquid address budget, dead man's switch and feed. Two adapters remain for what the
native events do not cover: :class:`BreakerEvents` (a breaker listener: a pybreaker breaker's
events, a breaker's successes, or another :class:`EventBus`) and :func:`retry_events` (an
``on_retry`` hook naming a policy's events, or publishing to another bus). Aimed at the
process-wide bus, neither ever publishes an event the primitive publishes itself.

Why this module is long: it is the catalogue of events: nine frozen event types, each documenting
every ``kind`` it can carry, kept in one place because the listeners (metrics, alerts, your logs)
match on them; the bus and the two adapters are short.

Example:
    >>> seen = []
    >>> remove = add_listener(seen.append)
    >>> emit(HaltEvent(kind="halted", location="/srv/bots/halt.json", reason="incident"))
    >>> seen[0].kind
    'halted'
    >>> remove()
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from resilient_trading._clock import Clock
from resilient_trading._errors import CriticalError
from resilient_trading._redact import safe_text

if TYPE_CHECKING:  # only a type: the primitives may import this module to emit events
    from resilient_trading._retry import RetryEvent

__all__ = [
    "AddressEvent",
    "AlertEvent",
    "BreakerEvent",
    "BreakerEvents",
    "DeadmanEvent",
    "Event",
    "EventBus",
    "FeedEvent",
    "HaltEvent",
    "LimiterEvent",
    "Listener",
    "RetryAttemptEvent",
    "StoreEvent",
    "add_listener",
    "emit",
    "listening",
    "remove_listener",
    "retry_events",
]

log = logging.getLogger("resilient_trading.events")

#: The longest text an event carries (after redaction).
TEXT_LIMIT = 300


def event_text(value: object | None) -> str | None:
    """``value`` as an event carries it: redacted (:func:`safe_text`), at most
    :data:`TEXT_LIMIT` characters; ``None`` stays ``None``."""
    return None if value is None else safe_text(value, TEXT_LIMIT)


_text = event_text


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """A breaker's call outcome or state change, published by every
    :class:`~resilient_trading.CircuitBreaker` with no wiring.

    ``kind``: ``"failure"`` (a counted failure; ``latched`` when it was critical),
    ``"state_change"`` (``old`` → ``new``: to ``open`` with the error that caused it and
    ``latched`` when a critical error latched it; to ``half-open`` for a trial; to ``closed``
    after a good trial), ``"reset"`` (an operator closed it), ``"not_recorded"`` (its state
    could not be written; the call's outcome stood), ``"success"`` (only from a
    ``BreakerEvents(successes=True)`` adapter), ``"call"`` (only from a
    ``BreakerEvents(latency=True)`` adapter: a timed call, its ``outcome`` ``"success"`` or
    ``"failure"`` and its duration in ``seconds``). ``error_kind`` is the classified error's
    class name, ``message`` its redacted text. A transition another process made is in the
    shared state, not an event in this one.
    """

    kind: Literal["failure", "success", "state_change", "reset", "not_recorded", "call"]
    breaker: str
    old: str | None = None
    new: str | None = None
    latched: bool = False
    error_kind: str | None = None
    message: str | None = None
    at: float = field(default_factory=time.time)
    outcome: Literal["success", "failure"] | None = None
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class LimiterEvent:
    """A rate limiter's decision, published by every :class:`~resilient_trading.RateLimiter`
    (in-process, file or Redis; sync and async) with no wiring.

    ``kind``:

    * ``admitted``: ``weight`` admitted; ``seconds`` it waited for its turn (``0.0``: none).
    * ``waited``: before ``admitted`` when the call slept: ``seconds`` actually slept.
    * ``refused``: ``weight`` not admitted (``acquire`` raised ``RateLimitedError``, or
      ``try_acquire`` returned ``False``); ``seconds`` is its ``retry_after`` and ``message``
      its redacted text. Nothing was reserved.
    * ``paused``: every sharer must wait ``seconds`` (a 429, or an operator's pause).
    * ``fallback``: a Redis budget entered (``mode="fallback"``) or left (``mode="shared"``)
      its local share during an outage; ``message`` says which.

    ``limiter`` names the budget where it lives: the state file's path, the Redis
    ``URL#key`` (password removed), or an in-process limiter's ``key``.
    """

    kind: Literal["admitted", "waited", "refused", "paused", "fallback"]
    limiter: str
    weight: int = 0
    seconds: float = 0.0
    message: str | None = None
    at: float = field(default_factory=time.time)
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class RetryAttemptEvent:
    """A retry policy's ``attempt`` (attempt number ``attempt`` failed; waiting ``delay``
    seconds before the next) or ``gave_up`` (attempt ``attempt`` failed and the policy stops:
    attempts used up or ``max_total`` reached; ``delay`` is ``0.0``), published by every
    :class:`~resilient_trading.RetryPolicy` (sync, async, decorator) with no wiring.
    ``operation``: the policy's ``name``, else a ``retry_events`` hook's operation, else the
    retried function's qualified name. A critical error is raised at once: no retry event."""

    kind: Literal["attempt", "gave_up"]
    operation: str | None
    attempt: int
    delay: float
    error_kind: str
    message: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """A JSON store's ``commit`` (``generation``: the one written), ``conflict_wait``
    (another process held the lock; ``seconds`` waited for it), ``lock_timeout`` (not
    taken within ``seconds``), ``corrupted`` (a damaged file found; ``path`` names it,
    ``message`` says how) or ``restored`` (``generation`` restored from the backup)."""

    kind: Literal["commit", "conflict_wait", "lock_timeout", "corrupted", "restored"]
    path: str
    generation: int | None = None
    seconds: float = 0.0
    message: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AddressEvent:
    """A Hyperliquid address budget's ``waited`` (paced: ``seconds`` slept before admitting),
    ``throttled`` (entered throttled mode: at the cap or refused by the exchange),
    ``refused`` (the exchange refused an action), ``synced`` (``userRateLimit`` read:
    ``used`` of ``cap``), ``sync_failed`` or ``runway_low`` (``runway_seconds`` under a day;
    once per horizon, for all sharers). The alert-worthy ones (``throttled``, ``runway_low``)
    are also published as an :class:`AlertEvent` (subject ``address:0x…``)."""

    kind: Literal["waited", "throttled", "refused", "synced", "sync_failed", "runway_low"]
    address: str
    used: int | None = None
    cap: int | None = None
    seconds: float = 0.0
    runway_seconds: float | None = None
    message: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class DeadmanEvent:
    """A dead man's switch's ``armed`` (``mode``: ``exchange`` or ``watchdog``),
    ``fallback`` (``scheduleCancel`` refused: the local watchdog must run),
    ``refresh_failed`` (a re-arm failed or was refused; the armed time still stands),
    ``disarmed`` (a clean stop), or its watchdog's ``watchdog_cancelled`` (``count`` open
    orders of a silent bot cancelled) and ``watchdog_failed``. ``fallback``,
    ``refresh_failed`` and ``watchdog_cancelled`` are also an :class:`AlertEvent` (subject
    ``deadman:0x…``)."""

    kind: Literal[
        "armed", "fallback", "refresh_failed", "disarmed", "watchdog_cancelled", "watchdog_failed"
    ]
    address: str
    mode: str | None = None
    count: int = 0
    message: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """A WebSocket feed's ``stale`` (``subscription`` silent ``seconds`` past its limit),
    ``fresh`` (a stale subscription delivers again), ``disconnected``, ``reconnected``
    (``count``: reconnections so far) or ``gap_filled`` (``count`` fills or order updates
    fetched over REST after a reconnect, for ``subscription``). ``stale`` and ``fresh``
    are also an :class:`AlertEvent` (subject ``feed:<subscription>``, state ``stale`` /
    ``ok``)."""

    kind: Literal["stale", "fresh", "disconnected", "reconnected", "gap_filled"]
    subscription: str | None = None
    count: int = 0
    seconds: float = 0.0
    message: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class HaltEvent:
    """The fleet-wide halt flag was raised (``halted``, with its ``reason``) or ``resumed``."""

    kind: Literal["halted", "resumed"]
    location: str
    reason: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Anything else an operator must hear about, by ``subject`` (e.g. ``address:0xab…``,
    ``feed:l2Book``) and ``state`` (e.g. ``runway_low``, ``ok``, ``stale``). A change of
    ``state`` for one ``subject`` is one alert (see :class:`~resilient_trading.AlertSink`)."""

    subject: str
    state: str
    message: str
    severity: Literal["info", "warning", "critical"] = "warning"
    at: float = field(default_factory=time.time)


#: Every event type this module defines.
Event = (
    BreakerEvent
    | LimiterEvent
    | RetryAttemptEvent
    | StoreEvent
    | AddressEvent
    | DeadmanEvent
    | FeedEvent
    | HaltEvent
    | AlertEvent
)
#: A listener: called with each event, in the emitting thread; its return value is ignored.
Listener = Callable[[Any], object]


class EventBus:
    """A set of listeners; :meth:`emit` calls each, logging (never raising) their failures.

    Adding and removing are thread-safe and never block :meth:`emit` (copy on write). A
    listener that keeps raising does not flood the log: the first failure of each exception
    type is logged with its traceback, later ones as one line at the 10th, 100th, 1000th...
    failure, with the count.
    """

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        # id(listener) -> failures by exception type (only listeners that raised)
        self._failures: dict[int, dict[str, int]] = {}

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event from now on. Returns a function that
        removes it again."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        with self._lock:
            self._listeners = (*self._listeners, listener)
        return lambda: self.remove_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error when it was not added)."""
        with self._lock:
            listeners = list(self._listeners)
            if listener in listeners:
                listeners.remove(listener)
            self._listeners = tuple(listeners)
            if not any(kept is listener for kept in listeners):
                self._failures.pop(id(listener), None)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        return self._listeners

    def emit(self, event: Event) -> None:
        """Give ``event`` to every listener. Never raises: a failing listener is logged."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:
                self._failed(listener, event, exc)

    def _failed(self, listener: Listener, event: Event, exc: Exception) -> None:
        """Log a listener's failure: the first of its kind with the traceback, then one line
        at each power of ten."""
        kind = type(exc).__name__
        with self._lock:
            counts = self._failures.setdefault(id(listener), {})
            count = counts[kind] = counts.get(kind, 0) + 1
            total = sum(counts.values())
        if count == 1:
            log.exception(
                "event listener %r raised on %s; ignored (the observed call's outcome stands); "
                "further %s from it are logged as one line at the 10th, 100th... failure",
                listener,
                type(event).__name__,
                kind,
            )
        elif _power_of_ten(count):
            log.error(
                "event listener %r has raised %s %d times (%d failures in all), the last on "
                "%s: %s; ignored (the observed calls' outcomes stand)",
                listener,
                kind,
                count,
                total,
                type(event).__name__,
                safe_text(exc, 200),
            )


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


#: The process-wide bus that :func:`add_listener` and :func:`emit` use.
EVENTS = EventBus()


class _Held(threading.local):
    """Per thread: the list this thread's events go to while it holds them (else ``None``;
    a class attribute, so reading it never raises: ``emit`` stays cheap)."""

    events: list[Event] | None = None


_held = _Held()
_holders = 0  # threads inside holding() now: while 0, emit() does not look at _held
_holders_lock = threading.Lock()


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call ``listener(event)`` for every event emitted in this process. Returns a remover."""
    return EVENTS.add_listener(listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling ``listener``."""
    EVENTS.remove_listener(listener)


def emit(event: Event) -> None:
    """Publish ``event`` to this process's listeners (never raises); inside :func:`holding`,
    keep it for later instead."""
    into = _held.events if _holders else None
    if into is not None:
        into.append(event)
        return
    EVENTS.emit(event)


@contextlib.contextmanager
def holding(into: list[Event]) -> Iterator[None]:
    """Keep the events this thread emits inside the block in ``into``, instead of publishing
    them: for code that holds a lock no listener may run under (a slow listener would block
    every other process waiting for it). Publish them with :func:`publish` once the lock is
    released. Nests: an inner block keeps its events in its own list."""
    global _holders
    outer = _held.events
    _held.events = into
    with _holders_lock:
        _holders += 1
    try:
        yield
    finally:
        _held.events = outer
        with _holders_lock:
            _holders -= 1


def publish(events: list[Event]) -> None:
    """Publish events kept by :func:`holding` (in order), and forget them."""
    if events:
        kept = list(events)
        events.clear()
        for event in kept:
            EVENTS.emit(event)


def listening() -> bool:
    """Whether anyone listens in this process. The primitives check it before building an
    event, so emitting costs one attribute read when nobody listens."""
    return bool(EVENTS._listeners)


_NATIVE_BREAKER_HOOKS = frozenset({"failure", "state_change", "outcome_not_recorded"})


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))  # a BreakerState, or pybreaker's state name


class BreakerEvents:
    """A breaker listener (the hooks of :class:`~resilient_trading.CircuitBreakerListener`)
    that publishes :class:`BreakerEvent` objects to ``bus`` (default: the process-wide one).

    A state change to ``open`` carries the failure that caused it (its kind and redacted text,
    and ``latched`` when it was critical); a change to ``closed`` not from
    ``half-open`` (a trial) is an operator's ``reset``.

    Args:
        bus: Where to publish (default: the process-wide bus).
        successes: Also publish a ``success`` event per successful call.
        latency: Time each guarded call and publish one ``call`` event per success or
            counted failure (``outcome``, ``seconds``): what
            :class:`~resilient_trading.EventMetrics` turns into the
            ``resilient_trading_call_duration_seconds`` histogram. Independent of
            ``successes`` (the ``call`` events already tell successes from failures).
            Off by default: nothing is timed and the guarded call costs what it did.
        clock: Where the time comes from (its ``monotonic()`` reading, else ``time()``);
            tests pass a ``ManualClock``.

    A timed call runs from the breaker's ``before_call`` (before admission) to its outcome
    hook, so it includes the breaker's own bookkeeping (for a file or Redis breaker: reading
    and writing its state). Calls that end without a ``success`` or ``failure`` hook (refused
    by the breaker, cancelled, or raising an excluded error) are not timed. The start time is
    kept in a context variable per breaker: concurrent calls in threads and asyncio tasks keep
    their own, and it survives ``await`` within a task.

    Example:
        >>> from resilient_trading import CircuitBreaker
        >>> breaker = CircuitBreaker(name="orders", listeners=[BreakerEvents(latency=True)])
    """

    def __init__(
        self,
        bus: EventBus = EVENTS,
        *,
        successes: bool = False,
        latency: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._successes = successes
        self._latency = latency
        self._last: dict[str, BaseException] = {}
        self._now: Callable[[], float] = (
            time.monotonic if clock is None else getattr(clock, "monotonic", None) or clock.time
        )
        # id(breaker) -> the context variable holding its current call's start
        self._starts: dict[int, contextvars.ContextVar[float | None]] = {}

    def covered(self) -> frozenset[str]:
        """The hooks a :class:`~resilient_trading.CircuitBreaker` does not call on this
        adapter: those whose events the breaker publishes itself when the adapter's bus is
        the process-wide one (nothing is published twice; with ``latency`` the breaker
        still tells it failures, to time them, through :meth:`hook`), ``success`` while
        successes and latency are off and ``before_call`` while latency is off (they would
        do nothing). A pybreaker breaker does not ask: it calls every hook."""
        covered = _NATIVE_BREAKER_HOOKS if self._bus is EVENTS else frozenset()
        if self._latency:
            return covered - {"failure"}
        return (
            covered | {"before_call"} if self._successes else covered | {"before_call", "success"}
        )

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The method a :class:`~resilient_trading.CircuitBreaker` calls for hook ``name``
        (``None``: none). A failure the breaker publishes itself is, with ``latency``, only
        timed: one ``call`` event, never a second ``failure``."""
        if name == "failure" and self._latency and self._bus is EVENTS:
            return self._timed_failure
        if name in self.covered():
            return None
        method: Callable[..., Any] | None = getattr(self, name, None)
        return method

    def _start_of(self, cb: Any) -> contextvars.ContextVar[float | None]:
        var = self._starts.get(id(cb))
        if var is None:
            var = self._starts.setdefault(
                id(cb), contextvars.ContextVar(f"resilient_trading_call_start_{id(cb)}")
            )
        return var

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        if self._latency:
            self._start_of(cb).set(self._now())

    def _elapsed(self, cb: Any) -> float | None:
        """Seconds since this context's call on ``cb`` began (``None``: not timed), and
        forget that start."""
        var = self._starts.get(id(cb))
        began = None if var is None else var.get(None)
        if began is None or var is None:
            return None
        var.set(None)
        return max(0.0, self._now() - began)

    def _publish_call(
        self, cb: Any, outcome: Literal["success", "failure"], exc: BaseException | None
    ) -> None:
        seconds = self._elapsed(cb)
        if seconds is None:
            return
        self._bus.emit(
            BreakerEvent(
                kind="call",
                breaker=str(cb.name),
                outcome=outcome,
                seconds=seconds,
                error_kind=None if exc is None else type(exc).__name__,
            )
        )

    def success(self, cb: Any) -> None:
        if self._latency:
            self._publish_call(cb, "success", None)
        if self._successes:
            self._bus.emit(BreakerEvent(kind="success", breaker=str(cb.name)))

    def _timed_failure(self, cb: Any, exc: BaseException) -> None:
        self._publish_call(cb, "failure", exc)

    def failure(self, cb: Any, exc: BaseException) -> None:
        if self._latency:
            self._publish_call(cb, "failure", exc)
        name = str(cb.name)
        self._last[name] = exc
        self._bus.emit(
            BreakerEvent(
                kind="failure",
                breaker=name,
                latched=isinstance(exc, CriticalError),
                error_kind=type(exc).__name__,
                message=_text(exc),
            )
        )

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name, old, new = str(cb.name), _state(old_state), _state(new_state)
        cause = self._last.pop(name, None) if new == "open" else None
        if new == "closed":
            self._last.pop(name, None)
        self._bus.emit(
            BreakerEvent(
                kind="reset" if new == "closed" and old != "half-open" else "state_change",
                breaker=name,
                old=old,
                new=new,
                latched=isinstance(cause, CriticalError),
                error_kind=None if cause is None else type(cause).__name__,
                message=_text(cause),
            )
        )

    def outcome_not_recorded(self, cb: Any, exc: BaseException) -> None:
        self._bus.emit(
            BreakerEvent(
                kind="not_recorded",
                breaker=str(cb.name),
                error_kind=type(exc).__name__,
                message=_text(exc),
            )
        )


class _RetryEventsHook:
    """What :func:`retry_events` returns: an ``on_retry`` callback publishing to ``bus``."""

    __slots__ = ("bus", "operation")

    def __init__(self, operation: str | None, bus: EventBus) -> None:
        self.operation = operation
        self.bus = bus

    def __call__(self, event: RetryEvent) -> None:
        self.bus.emit(
            RetryAttemptEvent(
                kind="attempt",
                operation=self.operation,
                attempt=event.attempt,
                delay=event.delay,
                error_kind=type(event.error).__name__,
                message=_text(event.error),
            )
        )

    def native(self) -> bool:
        """Whether the policy publishes these events itself (``bus`` is the process-wide
        one): it then takes ``operation`` as its name and does not call this hook, so each
        retry is one event, not two."""
        return self.bus is EVENTS


def retry_events(
    operation: str | None = None, bus: EventBus = EVENTS
) -> Callable[[RetryEvent], None]:
    """An ``on_retry`` callback for :class:`~resilient_trading.RetryPolicy` that publishes a
    :class:`RetryAttemptEvent` (``kind="attempt"``) before each wait.

    Every policy publishes its ``attempt`` and ``gave_up`` events on the process-wide bus
    by itself; this adapter is for naming the operation (``RetryPolicy(name=...)`` does the
    same) or for publishing to another :class:`EventBus`. The rule against double events:
    aimed at the process-wide bus (the default), the adapter only names the policy's own
    events and is never called; aimed at another bus, it publishes there, and the policy's
    own events still go to the process-wide bus (one event per retry on each bus).

    Example:
        >>> from resilient_trading import RetryPolicy
        >>> policy = RetryPolicy(on_retry=retry_events("place order"))
    """
    return _RetryEventsHook(_text(operation), bus)
