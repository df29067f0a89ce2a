"""The public API as user code types it; checked by ``mypy --strict`` (``make types``), never run.

Like stamina's ``tests/typing/api.py``: every public name of ``resilient_trading`` (and the
main names of the public modules) is used the way a user uses it, assigned to the type a user
would write, so a signature that loses a type (a decorator returning ``Callable[..., Any]``,
an ``Any`` where a record was) or a name that disappears fails ``make types``.

A line ending in ``# type: ignore[code]`` asserts that mypy *rejects* it: ``--strict`` reports
an unused ignore, so the check fails the day the API stops catching that mistake.
``tests/test_public_api.py`` checks that this file uses every name of the root ``__all__``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resilient_trading import (
    MAX_RETRY_AFTER,
    AddressEvent,
    AlertEvent,
    AlertSink,
    AuthenticationError,
    BreakerEvent,
    BreakerEvents,
    BreakerLike,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitBreakerListener,
    CircuitOpenError,
    Clock,
    CommitNotDurableError,
    CriticalError,
    DeadmanEvent,
    Event,
    EventBus,
    EventMetrics,
    ExchangeUnavailableError,
    FeedEvent,
    FleetCollector,
    Halt,
    HaltEvent,
    HaltStatus,
    InsufficientFundsError,
    InvalidRequestError,
    Journal,
    JournalEntry,
    LimiterEvent,
    LimiterStatus,
    LockedJsonStore,
    LockTimeoutError,
    ManualClock,
    NetworkError,
    NonceError,
    NonceSource,
    OrderGone,
    OrderNotFilled,
    OrderNotPlaced,
    OrderOutcome,
    PybreakerStorage,
    RateLimit,
    RateLimitedClient,
    RateLimitedError,
    RateLimiter,
    RequestTimeoutError,
    ResilienceError,
    RetryAttemptEvent,
    RetryEvent,
    RetryLike,
    RetryPolicy,
    StateCorruptedError,
    StoreEvent,
    SystemClock,
    TransientError,
    TypedStore,
    WindowStatus,
    add_listener,
    classify,
    classify_message,
    classify_response,
    classify_statuses,
    emit,
    exchange_error_kind,
    is_order_gone,
    redact,
    register_rule,
    remove_listener,
    retry_events,
    safe_text,
)
from resilient_trading.backends import MemoryState, SharedState, open_state
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.testing import FaultConfig, Simulator
from resilient_trading.testing import ManualClock as TestingClock

# --- clocks --------------------------------------------------------------------------------------


class WallOnlyClock:
    """A user's own clock: the three methods of :class:`Clock` are all it needs."""

    def time(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        return None

    async def sleep_async(self, seconds: float) -> None:
        return None


class NotAClock:
    def time(self) -> str:
        return "noon"


def clocks() -> None:
    real: Clock = SystemClock()
    fake = ManualClock(start=1_700_000_000.0)
    fake.advance(1.5)
    fake.step(-3600.0)
    wall: float = fake.time()
    mono: float = fake.monotonic()
    slept: list[float] = fake.slept
    mine: Clock = WallOnlyClock()
    from_testing: Clock = TestingClock()
    wrong: Clock = NotAClock()  # type: ignore[assignment]
    print(real, wall, mono, slept, mine, from_testing, wrong)


# --- circuit breaker -----------------------------------------------------------------------------


class AlertOnChange(CircuitBreakerListener):
    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        print(f"{cb} went {old_state} -> {new_state}")


def breaker(state_dir: Path) -> CircuitBreaker:
    guard = CircuitBreaker(
        fail_max=3,
        reset_timeout=30.0,
        name="orders",
        state_path=state_dir / "state.json",
        exclude=(KeyError,),
        listeners=[AlertOnChange()],
        clock=ManualClock(),
        lock_timeout=5.0,
    )
    CircuitBreaker(fail_max="3")  # type: ignore[arg-type]
    guard.add_listener(AlertOnChange())

    @guard
    def place(coin: str, size: float) -> str:
        return f"{coin}:{size}"

    oid: str = place("BTC", 0.1)
    place("BTC", "large")  # type: ignore[arg-type]
    n: int = guard.call(len, "abc")
    guard.call(len, 3)  # type: ignore[arg-type]
    snap: BreakerSnapshot = guard.snapshot()
    state: BreakerState = snap.state
    retry_at: float | None = snap.retry_at if state is BreakerState.OPEN else None
    closed: bool = guard.state == BreakerState.CLOSED
    latched: bool = guard.latched
    failures: int = guard.fail_counter
    guard.reset()
    print(oid, n, retry_at, closed, latched, failures, snap.trips, snap.reason)
    return guard


def pybreaker_storage(state_dir: Path) -> None:
    storage = PybreakerStorage("orders", state_path=state_dir / "state.json")
    counter: int = storage.counter
    state: str = storage.state
    storage.increment_counter()
    print(counter, state)


# --- retry ---------------------------------------------------------------------------------------


def log_retry(event: RetryEvent) -> None:
    attempt: int = event.attempt
    error: ResilienceError = event.error
    delay: float = event.delay
    print(attempt, error, delay)


def retry() -> RetryPolicy:
    policy = RetryPolicy(
        attempts=4,
        base_delay=0.25,
        max_delay=5.0,
        max_total=20.0,
        jitter=True,
        clock=ManualClock(),
        on_retry=log_retry,
        seed=7,
    )
    RetryPolicy(on_retry=lambda event: event.no_such_field)  # type: ignore[attr-defined]

    @policy
    def mids(coin: str) -> float:
        return 1.0

    px: float = mids("BTC")
    mids(1)  # type: ignore[arg-type]
    also: float = policy.call(mids, "ETH")
    policy.call(mids)  # type: ignore[call-arg]
    sent: str = policy.call_checked(lambda: "oid-1", lambda: None)
    own: float = policy.backoff(2)
    wait: float = policy.delay(2, NetworkError("reset"))
    print(px, also, sent, own, wait)
    return policy


# --- rate limiting and the client ----------------------------------------------------------------


class InfoSdk:
    def all_mids(self) -> dict[str, str]:
        return {}


def limiter(state_dir: Path) -> RateLimiter:
    budget = RateLimiter(
        RateLimit(1200, 60.0),
        RateLimit(20, 1.0),
        state_path=state_dir / "budget.json",
        key="bot",
        clock=ManualClock(),
    )
    ok: bool = budget.try_acquire(20)
    waited: float = budget.acquire(2, timeout=5.0)
    budget.acquire("2")  # type: ignore[arg-type]
    budget.charge(1)
    budget.pause(10.0)
    status: LimiterStatus = budget.status()
    windows: tuple[WindowStatus, ...] = status.windows
    used: int = windows[0].used
    share: float = status.utilisation
    half: RateLimit = RateLimit(1200, 60.0).scaled(0.5)
    print(ok, waited, used, share, half)
    return budget


def client(budget: RateLimiter, guard: CircuitBreaker, policy: RetryPolicy) -> None:
    as_breaker: BreakerLike = guard
    as_retry: RetryLike = policy
    wrapped = RateLimitedClient(
        InfoSdk(), limiter=budget, weights={"all_mids": 2}, breaker=as_breaker, retry=as_retry
    )
    inner: InfoSdk = wrapped.inner
    weight: int = wrapped.weight_of("all_mids")
    print(inner, weight)


async def async_paths(guard: CircuitBreaker, policy: RetryPolicy, budget: RateLimiter) -> None:
    async def fetch(coin: str) -> float:
        return 1.0

    async def lookup() -> float | None:
        return None

    px: float = await guard.call_async(fetch, "BTC")
    await guard.call_async(fetch, 1)  # type: ignore[arg-type]
    again: float = await policy.call_async(fetch, "ETH")
    checked: float = await policy.call_checked_async(lambda: fetch("SOL"), lookup)
    decorated = policy(fetch)
    via_decorator: float = await decorated("BTC")
    breaker_decorated = guard(fetch)
    via_breaker: float = await breaker_decorated("BTC")
    waited: float = await budget.acquire_async(2, timeout=1.0)
    print(px, again, checked, via_decorator, via_breaker, waited)


# --- state ---------------------------------------------------------------------------------------


@dataclass
class BotState:
    steps: int = 0


def state(state_dir: Path) -> None:
    store = LockedJsonStore(state_dir / "bot.json", lock_timeout=5.0, durable=True, backup=True)
    with store.transaction() as doc:
        doc["steps"] = int(doc.get("steps", 0)) + 1
    raw: dict[str, Any] = store.read()
    typed = TypedStore(store, BotState)
    with typed.transaction() as bot:
        bot.steps += 1
    current: BotState = typed.read()
    typed.read().no_such_field  # type: ignore[attr-defined]  # noqa: B018
    nonces = NonceSource(state_path=state_dir / "nonce.json", key="wallet")
    nonce: int = nonces.next()
    nonces.close()
    with Halt(state_dir=state_dir) as fleet:
        raised: HaltStatus = fleet.halt("exchange incident")
        status: HaltStatus | None = fleet.halted()
        if status is not None:
            since: float = status.since
            print(status.reason, status.by, since)
        print(fleet.halted().reason)  # type: ignore[union-attr]
        fleet.resume()
    print(raw, current, nonce, raised)
    with Journal(state_dir / "history.jsonl", rotate_bytes=1 << 20, rotate_daily=True) as journal:
        journal.append({"oid": 42, "status": "filled"})
        journal.append_many([{"oid": 43}, {"oid": 44}])
        entries: list[JournalEntry] = journal.read(since=0.0, until=None)
        last: list[JournalEntry] = journal.tail(10)
        kept: dict[str, Any] = last[0].record
        journal.append([("oid", 1)])  # type: ignore[arg-type]
        print(entries, kept, last[0].time, list(journal.iter_records()))


async def journal_async(journal: Journal) -> None:
    await journal.append_async({"oid": 45})
    await journal.append_many_async([{"oid": 46}, {"oid": 47}])


# --- errors and classification -------------------------------------------------------------------


class VenueDown(Exception):
    pass


def venue_rule(exc: BaseException) -> ResilienceError | None:
    return ExchangeUnavailableError(str(exc)) if isinstance(exc, VenueDown) else None


def errors(exc: Exception, answer: dict[str, Any]) -> None:
    err: ResilienceError = classify(exc, operation="Exchange.order", attempt=1)
    operation: str | None = err.operation
    if isinstance(err, TransientError):
        retry_after: float | None = err.retry_after
        print(retry_after)
    if isinstance(err, CircuitOpenError):
        due: float | None = err.retry_at
        print(due, err.latched)
    from_text: ResilienceError = classify_message("Too many requests", operation="order")
    from_answer: ResilienceError | None = classify_response(answer)
    per_order: list[ResilienceError | None] | None = classify_statuses(answer)
    kind: str | None = exchange_error_kind("Insufficient margin to place order.")
    gone: bool = is_order_gone("Order was never placed, already canceled, or filled.")
    unregister: Callable[[], None] = register_rule(VenueDown, venue_rule)
    unregister()
    register_rule(VenueDown, lambda exc: "down")  # type: ignore[arg-type,return-value]
    clean: str = redact("Authorization: Bearer abc")
    shown: str = safe_text(exc, 200)
    cap: float = MAX_RETRY_AFTER
    transient: tuple[type[TransientError], ...] = (
        NetworkError,
        RequestTimeoutError,
        RateLimitedError,
        ExchangeUnavailableError,
        NonceError,
        LockTimeoutError,
    )
    critical: tuple[type[CriticalError], ...] = (
        AuthenticationError,
        InsufficientFundsError,
        InvalidRequestError,
        StateCorruptedError,
        CommitNotDurableError,
    )
    outcomes: tuple[type[OrderOutcome], ...] = (OrderNotFilled, OrderNotPlaced, OrderGone)
    print(operation, from_text, from_answer, per_order, kind, gone, clean, shown, cap)
    print(transient, critical, outcomes)


# --- events, alerts and metrics -------------------------------------------------------------------


def on_event(event: Event) -> None:
    if isinstance(event, BreakerEvent):
        breaker_name: str = event.breaker
        print(breaker_name, event.kind, event.latched)
    elif isinstance(event, LimiterEvent):
        waited: float = event.seconds
        print(event.limiter, waited)
    elif isinstance(event, RetryAttemptEvent):
        attempt: int = event.attempt
        print(attempt, event.delay)
    elif isinstance(event, StoreEvent):
        generation: int | None = event.generation
        print(event.path, generation)
    elif isinstance(event, HaltEvent):
        print(event.location, event.reason)
    elif isinstance(event, AlertEvent):
        print(event.subject, event.severity)
    at: float = event.at
    print(at)


def events(guard: CircuitBreaker) -> None:
    remove: Callable[[], None] = add_listener(on_event)
    remove()
    remove_listener(on_event)
    emit(HaltEvent("halted", "/srv/bot/halt.json", reason="incident"))
    emit(BreakerEvent("reset", "orders"))
    emit(LimiterEvent("waited", "bot", weight=2, seconds=0.5))
    emit(StoreEvent("commit", "/srv/bot/state.json", generation=3))
    emit(AlertEvent("address:0xab", "low", "address budget below 10%", severity="critical"))
    emit(RetryAttemptEvent("attempt", "Info.all_mids", 1, 0.5, "NetworkError"))
    emit(AddressEvent("runway_low", "0xab", used=9000, cap=10000, runway_seconds=3600.0))
    emit(DeadmanEvent("watchdog_cancelled", "0xab", mode="watchdog", count=3))
    emit(FeedEvent("stale", subscription="l2Book:BTC", seconds=31.0))
    FeedEvent("late")  # type: ignore[arg-type]
    emit("not an event")  # type: ignore[arg-type]
    AlertEvent("s", "t", "m", severity="loud")  # type: ignore[arg-type]
    bus = EventBus()
    unsubscribe: Callable[[], None] = bus.add_listener(on_event)
    unsubscribe()
    guard.add_listener(BreakerEvents(bus, successes=True))
    hook: Callable[[RetryEvent], None] = retry_events("Exchange.order", bus)
    RetryPolicy(on_retry=hook)
    sink = AlertSink("http://127.0.0.1:9/hook", format="slack", window=30.0)
    add_listener(sink)
    sink.notify("breaker:orders", "open", "the breaker opened", severity="critical")
    sent: bool = sink.flush(timeout=1.0)
    sink.close()
    AlertSink("http://127.0.0.1:9/hook", format="xml")  # type: ignore[arg-type]
    add_listener(EventMetrics())
    collector = FleetCollector(state_dir="/srv/bot")
    print(sent, collector)


# --- the public modules --------------------------------------------------------------------------


def modules() -> None:
    home: SharedState = open_state(state_path=None, redis_url=None, key="k")
    memory: SharedState = MemoryState(clock=ManualClock())
    rest: RateLimit = hl.rest_limit()
    weight: int = hl.exchange_weight(40)
    info: int = hl.info_weight("l2Book")
    faults = FaultConfig()
    with Simulator(seed=1, faults=faults) as sim:
        url: str = sim.base_url
        print(url)
    print(home, memory, rest, weight, info)
