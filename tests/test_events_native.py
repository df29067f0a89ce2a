"""The limiter, the retry policy and the breaker publish their own events (issue #17, "Events,
once"): with no wiring by the user, each event fires with the right fields, in step with what
the primitive did (stateful tests against small models); the adapters never double an event;
a raising listener never changes a call's outcome (sync and async); and nothing is built while
nobody listens.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import (
    AuthenticationError,
    BreakerEvent,
    BreakerEvents,
    CircuitBreaker,
    CircuitOpenError,
    LimiterEvent,
    ManualClock,
    NetworkError,
    RateLimit,
    RateLimitedError,
    RateLimiter,
    RetryAttemptEvent,
    RetryPolicy,
    _breaker,
    _ratelimit,
    _retry,
    add_listener,
    retry_events,
)
from resilient_trading._events import EVENTS, EventBus
from resilient_trading._ratelimit import MAX_PAUSE
from tests._listeners import collected, raising_listener
from tests._redis_server import free_port, start_redis_server

pytestmark = pytest.mark.timeout(60)

SECRET = "0x" + "cd" * 32


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def brief(events: list[Any]) -> list[tuple[Any, ...]]:
    """Limiter events as (kind, weight, seconds rounded)."""
    return [(e.kind, e.weight, round(e.seconds, 6)) for e in of(events, LimiterEvent)]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def acquire(limiter: RateLimiter, mode: str, weight: int, timeout: float | None) -> float:
    if mode == "sync":
        return limiter.acquire(weight, timeout=timeout)
    return asyncio.run(limiter.acquire_async(weight, timeout=timeout))


# --- the limiter ----------------------------------------------------------------------------


class LimiterEventsMachine(RuleBasedStateMachine):
    """Property: the limiter's events are exactly its decisions, in order. Each admission is
    one ``admitted`` (its weight, the seconds it waited), preceded by one ``waited`` (the
    seconds really slept) when it slept; each refusal one ``refused`` (its weight and the
    error's ``retry_after``, redacted text); each pause one ``paused``; nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self.limiter = RateLimiter(RateLimit(10, 1.0), RateLimit(25, 5.0), clock=self.clock)
        self.expected: list[tuple[Any, ...]] = []
        self.events: list[Any] = []
        self.remove = add_listener(self.events.append)

    def teardown(self) -> None:
        self.remove()

    @rule(
        weight=st.integers(1, 10),
        timeout=st.sampled_from([None, 0.0, 0.3, 2.0]),
        asynchronous=st.booleans(),
    )
    def acquire(self, weight: int, timeout: float | None, asynchronous: bool) -> None:
        before = self.clock.monotonic()
        try:
            acquire(self.limiter, "async" if asynchronous else "sync", weight, timeout)
        except RateLimitedError as exc:
            assert self.clock.monotonic() == before  # refused at once
            self.expected.append(("refused", weight, round(exc.retry_after or 0.0, 6)))
            return
        raw = self.clock.monotonic() - before  # a pause's end can be a float's ulp away
        slept = round(raw, 6)
        if raw > 0:
            self.expected.append(("waited", weight, slept))
        self.expected.append(("admitted", weight, slept))

    @rule(weight=st.integers(1, 10))
    def try_acquire(self, weight: int) -> None:
        before = self.clock.monotonic()
        if not self.limiter.try_acquire(weight):
            refused = of(self.events, LimiterEvent)[-1]
            assert refused.kind == "refused" and refused.seconds > 0
            self.expected.append(("refused", weight, round(refused.seconds, 6)))
            return
        raw = self.clock.monotonic() - before  # a pause's end can be a float's ulp away
        slept = round(raw, 6)
        if raw > 0:
            self.expected.append(("waited", weight, slept))
        self.expected.append(("admitted", weight, slept))

    @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, MAX_PAUSE * 2]))
    def pause(self, seconds: float) -> None:
        self.limiter.pause(seconds)
        self.expected.append(("paused", 0, min(seconds, MAX_PAUSE)))
        if seconds > 2:
            self.clock.advance(min(seconds, MAX_PAUSE))  # let the pause pass

    @rule(seconds=st.floats(0.0, 3.0))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def events_match_decisions(self) -> None:
        assert brief(self.events) == self.expected
        for event in of(self.events, LimiterEvent):
            assert event.limiter == "default"  # an in-process limiter: its key
            if event.kind == "refused":
                assert event.message and "rate budget 'default'" in event.message


TestLimiterEvents = LimiterEventsMachine.TestCase
TestLimiterEvents.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)


@pytest.mark.parametrize("home", ["memory", "file"])
def test_every_home_reports_admissions_waits_refusals_and_pauses(
    home: str, mode: str, tmp_path: Path
) -> None:
    """Sync and async, in-process and file budgets: the same events, the file budget named by
    its path."""
    clock = ManualClock(1000.0)
    path = tmp_path / "budget.json"
    limiter = RateLimiter(
        RateLimit(10, 1.0), clock=clock, state_path=path if home == "file" else None, key="ip"
    )
    with collected() as events:
        assert acquire(limiter, mode, 8, None) == 0.0
        assert acquire(limiter, mode, 4, 2.0) > 0  # waits for the window to turn
        with pytest.raises(RateLimitedError) as refused:
            acquire(limiter, mode, 10, 0.1)
        limiter.pause(1.5)
    kinds = [(e.kind, e.weight) for e in of(events, LimiterEvent)]
    assert kinds == [
        ("admitted", 8),
        ("waited", 4),
        ("admitted", 4),
        ("refused", 10),
        ("paused", 0),
    ]
    admitted, waited = of(events, LimiterEvent)[0], of(events, LimiterEvent)[1]
    assert admitted.seconds == 0.0 and waited.seconds == pytest.approx(1.0, abs=0.01)
    assert of(events, LimiterEvent)[3].seconds == refused.value.retry_after
    assert of(events, LimiterEvent)[4].seconds == 1.5
    name = str(path) if home == "file" else "ip"
    assert {e.limiter for e in of(events, LimiterEvent)} == {name}
    limiter.close()


def test_a_cancelled_acquire_reports_no_admission() -> None:
    """A cancelled wait gives its reservation back: no ``admitted`` event for it."""
    limiter = RateLimiter(RateLimit(1, 1.0))

    async def scenario() -> None:
        await limiter.acquire_async(1)
        task = asyncio.ensure_future(limiter.acquire_async(1))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with collected() as events:
        asyncio.run(scenario())
    assert [e.kind for e in of(events, LimiterEvent)] == ["admitted"]


def test_a_redis_budget_reports_entering_and_leaving_its_local_share() -> None:
    """Redis killed: one ``fallback`` event (``mode="fallback"``) at the first call that finds
    it gone; Redis back: one (``mode="shared"``) at the first call that shares again."""
    workdir = tempfile.mkdtemp(prefix="rt-events-redis-")
    port = free_port()
    server = start_redis_server(port, workdir)
    clock = ManualClock(1000.0)
    url = f"redis://127.0.0.1:{port}/0"
    limiter = RateLimiter(RateLimit(10, 1.0), redis_url=url, key="outage", clock=clock)
    try:
        with collected() as events:
            limiter.acquire(1)
            server.kill()
            server.wait()
            for _ in range(3):
                limiter.acquire(1)  # on the local share: the first window is held back
            server = start_redis_server(port, workdir)
            clock.advance(5.0)  # past the retry backoff
            limiter.acquire(1)
            limiter.acquire(1)
        changes = [e for e in of(events, LimiterEvent) if e.kind == "fallback"]
        assert [e.mode for e in changes] == ["fallback", "shared"]
        assert "local share" in (changes[0].message or "")
        assert "back" in (changes[1].message or "")
        for event in of(events, LimiterEvent):
            assert event.limiter.endswith("#resilient-trading:limiter:{outage}")
        assert [e.kind for e in of(events, LimiterEvent)].count("admitted") == 6
    finally:
        limiter.close()
        server.kill()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# --- retry ----------------------------------------------------------------------------------


def flaky(failures: int, exc: Callable[[], Exception] = lambda: NetworkError("reset")) -> Any:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise exc()
        return "ok"

    return fn


def aflaky(failures: int) -> Any:
    sync = flaky(failures)

    async def fn() -> str:
        result: str = sync()
        return result

    return fn


def run_policy(policy: RetryPolicy, how: str, fn: Any, afn: Any) -> Any:
    if how == "call":
        return policy.call(fn)
    if how == "checked":
        return policy.call_checked(fn, lambda: None)
    if how == "decorated":
        return policy(fn)()
    if how == "async":
        return asyncio.run(policy.call_async(afn))
    return asyncio.run(policy(afn)())  # an async function, decorated


@settings(max_examples=40, deadline=None)
@given(
    failures=st.integers(0, 6),
    attempts=st.integers(1, 5),
    how=st.sampled_from(["call", "checked", "decorated", "async", "async_decorated"]),
)
def test_a_policy_reports_each_retry_and_giving_up(failures: int, attempts: int, how: str) -> None:
    """Property: ``min(failures, attempts - 1)`` ``attempt`` events numbered 1, 2, … with the
    delay waited, then one ``gave_up`` exactly when the failures outlast the attempts."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=attempts, clock=clock, seed=1, name="fetch mids")
    with collected() as events:
        if failures >= attempts:
            with pytest.raises(NetworkError):
                run_policy(policy, how, flaky(failures), aflaky(failures))
        else:
            assert run_policy(policy, how, flaky(failures), aflaky(failures)) == "ok"
    retry = of(events, RetryAttemptEvent)
    retried = min(failures, attempts - 1)
    expected = ["attempt"] * retried + (["gave_up"] if failures >= attempts else [])
    assert [e.kind for e in retry] == expected
    assert [e.attempt for e in retry] == list(range(1, len(retry) + 1))
    assert [e.delay for e in retry if e.kind == "attempt"] == clock.slept
    assert {e.operation for e in retry} <= {"fetch mids"}
    assert {e.error_kind for e in retry} <= {"NetworkError"}


def test_max_total_gives_up_and_a_critical_error_is_no_retry_event() -> None:
    clock = ManualClock()
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_total=2.5, jitter=False, clock=clock)
    with collected() as events, pytest.raises(NetworkError):
        policy.call(flaky(10, lambda: NetworkError(f"down key={SECRET}")))
    kinds = [(e.kind, e.attempt, e.delay) for e in of(events, RetryAttemptEvent)]
    assert kinds == [("attempt", 1, 1.0), ("gave_up", 2, 0.0)]  # 1 + 2 would exceed 2.5
    assert all(SECRET not in (e.message or "") for e in of(events, RetryAttemptEvent))
    assert of(events, RetryAttemptEvent)[0].operation == "flaky.<locals>.fn"  # its qualname
    with collected() as events, pytest.raises(AuthenticationError):
        policy.call(flaky(1, lambda: AuthenticationError("bad key")))
    assert of(events, RetryAttemptEvent) == []


def test_retry_events_on_the_process_bus_names_the_events_and_never_doubles_them() -> None:
    """The rule: ``retry_events`` aimed at the process-wide bus only names the policy's own
    events (one per retry); aimed at another bus it publishes there as well (one per bus)."""
    own = RetryPolicy(attempts=3, clock=ManualClock(), on_retry=retry_events("place order"))
    with collected() as events:
        own.call(flaky(2))
    assert [(e.kind, e.operation) for e in of(events, RetryAttemptEvent)] == [
        ("attempt", "place order"),
        ("attempt", "place order"),
    ]
    other: list[Any] = []
    bus = EventBus()
    bus.add_listener(other.append)
    policy = RetryPolicy(attempts=3, clock=ManualClock(), on_retry=retry_events("cancel", bus))
    with collected() as events:
        policy.call(flaky(2))
    assert len(of(events, RetryAttemptEvent)) == 2
    assert [(e.kind, e.operation) for e in other] == [("attempt", "cancel")] * 2


# --- the breaker ----------------------------------------------------------------------------

FAIL_MAX, RESET_TIMEOUT = 3, 10.0


class BreakerEventsMachine(RuleBasedStateMachine):
    """Property: a breaker's own events follow a model of its state machine: one ``failure``
    per counted failure (its kind, redacted text, ``latched`` when critical); one
    ``state_change`` per transition (to open with its cause and ``latched``; to half-open for a
    trial; back to closed after a good trial); one ``reset`` per operator reset that changed
    something; refused calls and successes publish nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self.breaker = CircuitBreaker(
            fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, clock=self.clock, name="orders"
        )
        self.state, self.failures, self.latched, self.opened = "closed", 0, False, 0.0
        self.expected: list[tuple[Any, ...]] = []
        self.events: list[Any] = []
        self.remove = add_listener(self.events.append)

    def teardown(self) -> None:
        self.remove()

    def _open(self, kind: str, latched: bool, old: str) -> None:
        self.expected.append(("state_change", old, "open", latched, kind))
        self.state, self.failures, self.opened = "open", 0, self.clock.monotonic()
        self.latched = self.latched or latched

    @rule(outcome=st.sampled_from(["ok", "transient", "critical"]))
    def call(self, outcome: str) -> None:
        trial = (
            self.state == "open"
            and not self.latched
            and self.clock.monotonic() - self.opened >= RESET_TIMEOUT
        )
        exc: Exception = (
            NetworkError(f"reset key={SECRET}")
            if outcome == "transient"
            else AuthenticationError(f"bad key {SECRET}")
        )
        if self.state == "open" and not trial:
            with pytest.raises(CircuitOpenError):
                self.breaker.call(lambda: "ok")
            return
        if trial:
            self.expected.append(("state_change", "open", "half-open", False, None))
        if outcome == "ok":
            assert self.breaker.call(lambda: "ok") == "ok"
            if trial:
                self.expected.append(("state_change", "half-open", "closed", False, None))
                self.state = "closed"
            self.failures = 0
            return
        with pytest.raises(type(exc)):
            self.breaker.call(_raise, exc)
        critical = outcome == "critical"
        self.expected.append(("failure", None, None, critical, type(exc).__name__))
        self.failures += 1
        if trial or critical or self.failures >= FAIL_MAX:
            self._open(type(exc).__name__, critical, "half-open" if trial else "closed")

    @rule(seconds=st.sampled_from([1.0, 5.0, RESET_TIMEOUT]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        if self.state != "closed" or self.failures:
            self.expected.append(("reset", self.state, "closed", False, None))
        self.state, self.failures, self.latched = "closed", 0, False

    @invariant()
    def events_follow_the_model(self) -> None:
        got = [
            (e.kind, e.old, e.new, e.latched, e.error_kind) for e in of(self.events, BreakerEvent)
        ]
        assert got == self.expected
        for event in of(self.events, BreakerEvent):
            assert event.breaker == "orders"
            assert SECRET not in (event.message or "")
            assert (event.message is None) == (event.error_kind is None)


def _raise(exc: Exception) -> Any:
    raise exc


TestBreakerEvents = BreakerEventsMachine.TestCase
TestBreakerEvents.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


def test_a_breaker_events_adapter_on_the_process_bus_adds_no_duplicate() -> None:
    """``BreakerEvents()`` (the process bus) on our breaker: each event once; with
    ``successes=True`` it still adds the success events (the breaker does not publish
    those). On another bus it publishes there too: one event per bus."""
    clock = ManualClock()
    other: list[Any] = []
    bus = EventBus()
    bus.add_listener(other.append)
    breaker = CircuitBreaker(
        fail_max=1,
        clock=clock,
        name="info",
        listeners=[BreakerEvents(), BreakerEvents(successes=True), BreakerEvents(bus)],
    )
    with collected() as events:
        breaker.call(lambda: "ok")
        with pytest.raises(NetworkError):
            breaker.call(_raise, NetworkError("down"))
        breaker.reset()
    assert [e.kind for e in of(events, BreakerEvent)] == [
        "success",
        "failure",
        "state_change",
        "reset",
    ]
    assert [e.kind for e in other] == ["failure", "state_change", "reset"]


def test_an_async_breaker_on_a_file_reports_its_transitions(tmp_path: Path) -> None:
    breaker = CircuitBreaker(fail_max=1, name="feed", state_path=tmp_path / "b.json")

    async def down() -> None:
        raise NetworkError("down")

    with collected() as events:
        with pytest.raises(NetworkError):
            asyncio.run(breaker.call_async(down))
        breaker.reset()
    got = [(e.kind, e.old, e.new) for e in of(events, BreakerEvent)]
    assert got == [
        ("failure", None, None),
        ("state_change", "closed", "open"),
        ("reset", "open", "closed"),
    ]


# --- listeners never change outcomes; nothing built while nobody listens ---------------------


def test_a_raising_listener_changes_no_outcome(mode: str) -> None:
    """Every event raises in its listener: each call returns or raises exactly as without it."""
    clock = ManualClock()
    limiter = RateLimiter(RateLimit(2, 1.0), clock=clock)
    breaker = CircuitBreaker(fail_max=1, clock=clock)
    policy = RetryPolicy(attempts=2, clock=clock)
    with raising_listener() as seen:
        assert acquire(limiter, mode, 2, None) == 0.0
        assert acquire(limiter, mode, 1, None) > 0
        with pytest.raises(RateLimitedError):
            acquire(limiter, mode, 2, 0.0)
        limiter.pause(0.5)
        if mode == "sync":
            assert policy.call(flaky(1)) == "ok"
            with pytest.raises(NetworkError):
                policy.call(flaky(5))
            with pytest.raises(NetworkError):
                breaker.call(_raise, NetworkError("down"))
        else:
            assert asyncio.run(policy.call_async(aflaky(1))) == "ok"
            with pytest.raises(NetworkError):
                asyncio.run(policy.call_async(aflaky(5)))

            async def down() -> None:
                raise NetworkError("down")

            with pytest.raises(NetworkError):
                asyncio.run(breaker.call_async(down))
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "ok")
        breaker.reset()
    kinds = {(type(e).__name__, e.kind) for e in seen}
    assert kinds >= {
        ("LimiterEvent", "admitted"),
        ("LimiterEvent", "waited"),
        ("LimiterEvent", "refused"),
        ("LimiterEvent", "paused"),
        ("RetryAttemptEvent", "attempt"),
        ("RetryAttemptEvent", "gave_up"),
        ("BreakerEvent", "failure"),
        ("BreakerEvent", "state_change"),
        ("BreakerEvent", "reset"),
    }


def test_nothing_is_built_while_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap path: with no listener, no event object is ever constructed (the event
    types are replaced by ones that fail the test if built)."""

    def built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"an event was built while nobody listens: {args}")

    assert not EVENTS.listeners
    monkeypatch.setattr(_ratelimit, "LimiterEvent", built)
    monkeypatch.setattr(_retry, "RetryAttemptEvent", built)
    monkeypatch.setattr(_breaker, "BreakerEvent", built)
    clock = ManualClock()
    limiter = RateLimiter(RateLimit(2, 1.0), clock=clock)
    limiter.acquire(2)
    limiter.acquire(1)
    assert not limiter.try_acquire(2)
    limiter.pause(1.0)
    with pytest.raises(NetworkError):
        RetryPolicy(attempts=2, clock=clock).call(flaky(5))
    breaker = CircuitBreaker(fail_max=1, clock=clock)
    with pytest.raises(NetworkError):
        breaker.call(_raise, NetworkError("down"))
    breaker.reset()
