"""Typed events (issue #17): the adapters fire the right events with the right fields, events
carry redacted text only, and a raising listener never changes the observed call's outcome.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_trading import (
    AuthenticationError,
    CircuitBreaker,
    CircuitOpenError,
    ManualClock,
    NetworkError,
    RetryPolicy,
)
from resilient_trading._events import (
    BreakerEvent,
    BreakerEvents,
    EventBus,
    HaltEvent,
    RetryAttemptEvent,
    add_listener,
    emit,
    retry_events,
)

SECRET = "0x" + "cd" * 32


@pytest.fixture
def bus() -> tuple[EventBus, list[Any]]:
    events: list[Any] = []
    bus = EventBus()
    bus.add_listener(events.append)
    return bus, events


def _raise(exc: Exception) -> Any:
    raise exc


# ok, a transient failure, a critical failure
_OUTCOMES = st.lists(st.sampled_from(["ok", "transient", "critical"]), max_size=12)


@given(outcomes=_OUTCOMES)
def test_breaker_events_follow_a_model_of_the_breaker(outcomes: list[str]) -> None:
    """Property: one ``failure`` event per counted failure, one ``state_change`` to open when
    the model opens (``latched`` exactly when a critical error did it), with the cause's kind
    and redacted text; refused calls emit nothing; a reset is one ``reset`` event."""
    events: list[Any] = []
    bus = EventBus()
    bus.add_listener(events.append)
    clock = ManualClock(1000.0)
    breaker = CircuitBreaker(
        fail_max=3, reset_timeout=60, clock=clock, listeners=[BreakerEvents(bus)]
    )
    is_open, failures, latched = False, 0, False
    expected: list[tuple[str, Any]] = []
    for outcome in outcomes:
        if is_open:
            with pytest.raises(CircuitOpenError):
                breaker.call(lambda: "ok")
            continue
        if outcome == "ok":
            assert breaker.call(lambda: "ok") == "ok"
            failures = 0
            continue
        exc: Exception = (
            NetworkError(f"reset key={SECRET}")
            if outcome == "transient"
            else AuthenticationError(f"bad key {SECRET}")
        )
        with pytest.raises(type(exc)):
            breaker.call(_raise, exc)
        failures += 1
        expected.append(("failure", type(exc).__name__))
        if outcome == "critical" or failures >= 3:
            is_open, latched = True, outcome == "critical"
            expected.append(("state_change", (type(exc).__name__, latched)))
    breaker.reset()
    if is_open or failures:
        expected.append(("reset", None))
    got: list[tuple[str, Any]] = []
    for event in events:
        assert isinstance(event, BreakerEvent)
        assert event.breaker == "default"
        assert SECRET not in repr(event)
        if event.kind == "failure":
            got.append(("failure", event.error_kind))
        elif event.kind == "state_change":
            assert (event.old, event.new) == ("closed", "open")
            assert event.message is not None and "<redacted>" in event.message
            got.append(("state_change", (event.error_kind, event.latched)))
        else:
            assert event.kind == "reset" and event.new == "closed"
            got.append(("reset", None))
    assert got == expected


def test_a_raising_listener_does_not_change_the_call_outcome(
    bus: tuple[EventBus, list[Any]],
) -> None:
    events_bus, events = bus

    def boom(event: object) -> None:
        raise RuntimeError("listener bug")

    events_bus.add_listener(boom)
    events_bus.add_listener(events.append)  # a later listener still gets the event
    breaker = CircuitBreaker(fail_max=1, listeners=[BreakerEvents(events_bus)])
    assert breaker.call(lambda: 42) == 42
    with pytest.raises(NetworkError):
        breaker.call(_raise, NetworkError("down"))
    kinds = [event.kind for event in events]
    assert kinds.count("failure") == 2 and kinds.count("state_change") == 2


def test_emit_never_raises_and_remover_removes() -> None:
    seen: list[Any] = []

    def boom(event: object) -> None:
        raise ValueError("bug")

    remove_boom = add_listener(boom)
    remove_seen = add_listener(seen.append)
    try:
        emit(HaltEvent(kind="halted", location="x", reason="r"))
    finally:
        remove_boom()
        remove_seen()
    emit(HaltEvent(kind="resumed", location="x"))
    assert [event.kind for event in seen] == ["halted"]


@given(failures=st.integers(0, 5), attempts=st.integers(1, 6))
def test_retry_events_one_per_wait(failures: int, attempts: int) -> None:
    """Property: a retry policy emits exactly one ``attempt`` event per wait, numbered 1.., with
    the redacted error kind; none when the first call succeeds."""
    events: list[Any] = []
    bus = EventBus()
    bus.add_listener(events.append)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionResetError(f"reset {SECRET}")
        return "ok"

    policy = RetryPolicy(
        attempts=attempts, clock=ManualClock(), on_retry=retry_events("place order", bus)
    )
    if failures < attempts:
        assert policy.call(flaky) == "ok"
    else:
        with pytest.raises(NetworkError):
            policy.call(flaky)
    waits = min(failures, attempts - 1)
    assert [event.attempt for event in events] == list(range(1, waits + 1))
    for event in events:
        assert isinstance(event, RetryAttemptEvent)
        assert event.operation == "place order" and event.error_kind == "NetworkError"
        assert event.delay >= 0 and SECRET not in repr(event)


def test_halt_handle_emits_one_event_per_change(tmp_path: Any) -> None:
    from resilient_trading import Halt

    seen: list[Any] = []
    remove = add_listener(seen.append)
    try:
        halt = Halt(state_dir=tmp_path)
        for _ in range(3):
            halt.halted()
        halt.halt("incident")
        for _ in range(3):
            halt.halted()
        halt.resume()
        halt.halted()
    finally:
        remove()
    assert [(e.kind, e.reason) for e in seen] == [("halted", "incident"), ("resumed", None)]
