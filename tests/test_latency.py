"""Call-latency histograms (issue #17): ``BreakerEvents(latency=True)`` times each guarded
call and ``EventMetrics`` observes ``resilient_trading_call_duration_seconds{breaker,outcome}``.

Properties: the histogram counts exactly the calls that ran to a success or a counted failure
and sums their exact durations (simulated time); each failure is still published once;
concurrent threads and asyncio tasks keep their own start times; a raising listener or clock
changes no outcome; with latency off nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry

from resilient_trading import (
    BreakerEvent,
    BreakerEvents,
    CircuitBreaker,
    CircuitOpenError,
    EventBus,
    EventMetrics,
    ManualClock,
    NetworkError,
    add_listener,
)
from resilient_trading._metrics import CALL_BUCKETS
from tests._listeners import collected, raising_listener

pytestmark = pytest.mark.timeout(60)

HIST = "resilient_trading_call_duration_seconds"


@contextlib.contextmanager
def metrics() -> Iterator[CollectorRegistry]:
    """A fresh registry counting this process's events while the block runs."""
    registry = CollectorRegistry()
    remove = add_listener(EventMetrics(registry))
    try:
        yield registry
    finally:
        remove()


def sample(registry: CollectorRegistry, suffix: str, **labels: str) -> float:
    return registry.get_sample_value(HIST + suffix, labels) or 0.0


def calls(events: list[Any]) -> list[BreakerEvent]:
    return [e for e in events if isinstance(e, BreakerEvent) and e.kind == "call"]


def run(breaker: CircuitBreaker, asynchronous: bool, fn: Any) -> Any:
    """``breaker.call(fn)``, or ``call_async`` of a coroutine doing ``fn()``."""
    if not asynchronous:
        return breaker.call(fn)

    async def coro() -> Any:
        return fn()

    return asyncio.run(breaker.call_async(coro))


class LatencyMachine(RuleBasedStateMachine):
    """Calls that succeed or fail after a known simulated time, sync or async, with the
    breaker opening, refusing and trialling on the way: the histogram matches a model that
    counts each call that ran to an outcome and adds up its duration."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self.breaker = CircuitBreaker(
            fail_max=3,
            reset_timeout=5.0,
            name="orders",
            clock=self.clock,
            listeners=[BreakerEvents(latency=True, clock=self.clock)],
        )
        self.registry = CollectorRegistry()
        self.events: list[Any] = []
        self.removers = [
            add_listener(EventMetrics(self.registry)),
            add_listener(self.events.append),
        ]
        self.count = {"success": 0, "failure": 0}
        self.total = {"success": 0.0, "failure": 0.0}

    def teardown(self) -> None:
        for remove in self.removers:
            remove()

    def _call(self, seconds: float, fails: bool, asynchronous: bool) -> None:
        ran = []

        def fn() -> str:
            ran.append(True)
            self.clock.advance(seconds)
            if fails:
                raise NetworkError("down")
            return "ok"

        try:
            assert run(self.breaker, asynchronous, fn) == "ok"
        except CircuitOpenError:
            assert not ran  # refused: not called, not timed
            return
        except NetworkError:
            assert fails
        outcome = "failure" if fails else "success"
        self.count[outcome] += 1
        self.total[outcome] += seconds

    @rule(
        seconds=st.sampled_from([0.0, 0.003, 0.04, 0.7, 12.0]),
        fails=st.booleans(),
        asynchronous=st.booleans(),
    )
    def call(self, seconds: float, fails: bool, asynchronous: bool) -> None:
        self._call(seconds, fails, asynchronous)

    @rule(seconds=st.sampled_from([1.0, 5.0]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def histogram_counts_the_calls_and_sums_their_time(self) -> None:
        for outcome in ("success", "failure"):
            labels = {"breaker": "orders", "outcome": outcome}
            assert sample(self.registry, "_count", **labels) == self.count[outcome]
            assert sample(self.registry, "_sum", **labels) == pytest.approx(
                self.total[outcome], abs=1e-9
            )

    @invariant()
    def each_failure_is_published_once(self) -> None:
        failures = [e for e in self.events if isinstance(e, BreakerEvent) and e.kind == "failure"]
        assert len(failures) == self.count["failure"]
        assert len(calls(self.events)) == sum(self.count.values())


TestLatency = LatencyMachine.TestCase
TestLatency.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)


def test_buckets_span_http_calls_and_an_observation_lands_in_its_bucket() -> None:
    assert CALL_BUCKETS[0] == 0.005 and CALL_BUCKETS[-1] == 30.0
    assert list(CALL_BUCKETS) == sorted(CALL_BUCKETS)
    clock = ManualClock()
    breaker = CircuitBreaker(
        name="info", clock=clock, listeners=[BreakerEvents(latency=True, clock=clock)]
    )
    with metrics() as registry:
        breaker.call(clock.advance, 0.004)
        breaker.call(clock.advance, 0.2)
    labels = {"breaker": "info", "outcome": "success"}
    assert sample(registry, "_bucket", le="0.005", **labels) == 1
    assert sample(registry, "_bucket", le="0.25", **labels) == 2
    assert sample(registry, "_bucket", le="+Inf", **labels) == 2


class ContextClock:
    """A clock whose time is per thread and per asyncio task (a context variable): each
    concurrent call runs in its own simulated time, so a start time taken from another
    call's time gives a visibly wrong duration."""

    def __init__(self) -> None:
        self.now: contextvars.ContextVar[float] = contextvars.ContextVar("now", default=0.0)

    def time(self) -> float:
        return self.now.get()

    def monotonic(self) -> float:
        return self.now.get()

    def sleep(self, seconds: float) -> None:
        self.now.set(self.now.get() + seconds)

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)


def test_concurrent_threads_keep_their_own_start_times() -> None:
    """Every thread's call has begun before any ends; each is timed from its own start."""
    clock = ContextClock()
    breaker = CircuitBreaker(name="threads", listeners=[BreakerEvents(latency=True, clock=clock)])
    n = 6
    barrier = threading.Barrier(n, timeout=20)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        clock.now.set(1000.0 * (i + 1))  # each thread's own timeline

        def fn() -> None:
            barrier.wait()  # all have taken their start time
            clock.sleep(0.01 * (i + 1))

        try:
            breaker.call(fn)
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)

    with collected() as events:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors
    got = sorted(round(e.seconds or -1.0, 9) for e in calls(events))
    assert got == [round(0.01 * (i + 1), 9) for i in range(n)]


@pytest.mark.parametrize("home", ["memory", "file"])
def test_concurrent_tasks_keep_their_start_times_across_awaits(home: str, tmp_path: Path) -> None:
    """Tasks interleave at awaits (and, on a file breaker, settle in worker threads): each
    call is timed from its own start."""
    clock = ContextClock()
    breaker = CircuitBreaker(
        name="tasks",
        state_path=tmp_path / "b.json" if home == "file" else None,
        listeners=[BreakerEvents(latency=True, clock=clock)],
    )
    n = 5

    async def main() -> None:
        started = 0
        all_started = asyncio.Event()

        async def fn(i: int) -> None:
            nonlocal started
            started += 1
            if started == n:
                all_started.set()
            await all_started.wait()  # every task has its start time now
            clock.sleep(0.1 * (i + 1))
            await asyncio.sleep(0)

        async def one(i: int) -> None:
            clock.now.set(500.0 * (i + 1))
            await breaker.call_async(fn, i)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout=20)

    with collected() as events:
        asyncio.run(main())
    got = sorted(round(e.seconds or -1.0, 9) for e in calls(events))
    assert got == [round(0.1 * (i + 1), 9) for i in range(n)]


class BrokenClock(ManualClock):
    def monotonic(self) -> float:
        raise RuntimeError("clock broke")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_raising_listener_or_clock_changes_no_outcome(asynchronous: bool) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        fail_max=1,
        name="orders",
        clock=clock,
        listeners=[BreakerEvents(latency=True, clock=clock)],
    )
    with raising_listener() as seen:
        assert run(breaker, asynchronous, lambda: "ok") == "ok"
        with pytest.raises(NetworkError):
            run(breaker, asynchronous, lambda: (_ for _ in ()).throw(NetworkError("down")))
    assert [e.outcome for e in calls(seen)] == ["success", "failure"]
    assert str(breaker.state) == "open"  # the failure was still counted
    broken = CircuitBreaker(
        name="broken", listeners=[BreakerEvents(latency=True, clock=BrokenClock())]
    )
    with collected() as events:
        assert run(broken, asynchronous, lambda: 7) == 7
    assert calls(events) == []


def test_latency_off_times_nothing() -> None:
    """With latency off (the default, or only successes), no clock is read, no hook is
    added to the call, and no ``call`` event is published."""

    class CountingClock(ManualClock):
        reads = 0

        def monotonic(self) -> float:
            CountingClock.reads += 1
            return super().monotonic()

    clock = CountingClock()
    breaker = CircuitBreaker(
        name="quiet",
        listeners=[BreakerEvents(clock=clock), BreakerEvents(successes=True, clock=clock)],
    )
    assert "before_call" not in breaker._hooks
    with collected() as events:
        breaker.call(lambda: "ok")
        with pytest.raises(NetworkError):
            breaker.call(lambda: (_ for _ in ()).throw(NetworkError("down")))
    assert CountingClock.reads == 0
    assert calls(events) == []
    kinds = [e.kind for e in events if isinstance(e, BreakerEvent)]
    assert kinds == ["success", "failure"]


def test_refused_and_excluded_calls_are_not_timed_and_leave_no_stale_start() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        fail_max=1,
        reset_timeout=10.0,
        name="orders",
        clock=clock,
        exclude=[KeyError],
        listeners=[BreakerEvents(latency=True, clock=clock)],
    )
    empty: dict[str, int] = {}
    with collected() as events:
        with pytest.raises(KeyError):
            breaker.call(lambda: empty["x"])  # an answer: not timed
        with pytest.raises(NetworkError):
            breaker.call(lambda: (_ for _ in ()).throw(NetworkError("down")))
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "never")  # refused: started, never finished
        clock.advance(100.0)
        assert breaker.call(clock.advance, 0.5) is None  # the trial: timed from its own start
    assert [(e.outcome, e.seconds) for e in calls(events)] == [
        ("failure", 0.0),
        ("success", 0.5),
    ]


def test_another_bus_gets_its_failure_and_call_events() -> None:
    """Aimed at another bus, the adapter publishes the failure there too (the breaker's own
    goes to the process bus), plus the timed call."""
    bus = EventBus()
    other: list[Any] = []
    bus.add_listener(other.append)
    clock = ManualClock()
    breaker = CircuitBreaker(
        name="orders", clock=clock, listeners=[BreakerEvents(bus, latency=True, clock=clock)]
    )
    with pytest.raises(NetworkError):
        breaker.call(lambda: (_ for _ in ()).throw(NetworkError("down")))
    assert [(e.kind, e.outcome) for e in other] == [("call", "failure"), ("failure", None)]


def test_a_pybreaker_breaker_is_timed_too() -> None:
    """pybreaker calls every hook: its calls are timed, and its failures (which it does not
    publish itself) are published by the adapter, once."""
    pybreaker = pytest.importorskip("pybreaker")
    clock = ManualClock()
    breaker = pybreaker.CircuitBreaker(
        fail_max=5, name="pb", listeners=[BreakerEvents(latency=True, clock=clock)]
    )
    with collected() as events:
        breaker.call(clock.advance, 0.3)
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    got = [(e.kind, e.outcome, e.seconds) for e in events if isinstance(e, BreakerEvent)]
    assert got == [("call", "success", 0.3), ("call", "failure", 0.0), ("failure", None, None)]
