"""RetryPolicy: transient only, retry_after first, capped; call_checked never sends twice and
classifies its check. Every behaviour runs in both modes (sync and async) through ``run``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_trading import (
    CircuitOpenError,
    CriticalError,
    InsufficientFundsError,
    NetworkError,
    RateLimitedError,
    RetryPolicy,
)
from resilient_trading._clock import ManualClock
from resilient_trading._retry import RetryEvent
from resilient_trading._retry_rules import backoff, next_delay

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every behaviour test runs once through the sync and once through the async loop."""
    return str(request.param)


def run(policy: RetryPolicy, mode: str, fn: Callable[[], Any]) -> Any:
    """``policy.call(fn)`` or, in async mode, ``call_async`` of a coroutine doing ``fn()``."""
    if mode == "sync":
        return policy.call(fn)

    async def coro() -> Any:
        return fn()

    return asyncio.run(policy.call_async(coro))


def run_checked(
    policy: RetryPolicy, mode: str, fn: Callable[[], Any], check: Callable[[], Any]
) -> Any:
    """``call_checked`` or ``call_checked_async`` (with an async ``fn`` and an async ``check``)."""
    if mode == "sync":
        return policy.call_checked(fn, check)

    async def coro() -> Any:
        return fn()

    async def acheck() -> Any:
        return check()

    return asyncio.run(policy.call_checked_async(coro, acheck))


def flaky(failures: list[BaseException]) -> Any:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


# --- the pure rules ---------------------------------------------------------------------------


@given(
    attempt=st.integers(1, 3000),
    base=st.floats(0, 10, allow_nan=False),
    cap=st.floats(0, 100, allow_nan=False),
)
def test_backoff_doubles_from_base_and_never_exceeds_the_cap(
    attempt: int, base: float, cap: float
) -> None:
    if base > cap:
        base, cap = cap, base
    value = backoff(attempt, base, cap)
    assert 0.0 <= value <= cap
    if base and attempt < 60:
        assert value == min(base * 2 ** (attempt - 1), cap)
    if not base:
        assert value == 0.0


@pytest.mark.parametrize("attempt", [1024, 1025, 1026, 2049, 10**9])
def test_backoff_of_a_huge_attempt_number_is_the_cap_at_once(attempt: int) -> None:
    """No overflow and no huge integer: past 2 ** 1023 the cap has long been reached."""
    started = time.monotonic()
    assert backoff(attempt, 0.5, 30.0) == 30.0
    assert backoff(attempt, 1e-300, 5.0) == 5.0
    assert time.monotonic() - started < 0.1


def test_backoff_matches_tenacity_wait_exponential() -> None:
    tenacity = pytest.importorskip("tenacity")
    wait = tenacity.wait_exponential(multiplier=0.5, max=30.0)
    for attempt in range(1, 40):
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        assert backoff(attempt, 0.5, 30.0) == pytest.approx(float(wait(state)))


@given(
    own=st.floats(0, 60, allow_nan=False),
    retry_after=st.none() | st.floats(0, 600, allow_nan=False),
    waited=st.floats(0, 600, allow_nan=False),
    max_total=st.none() | st.floats(0, 600, allow_nan=False),
)
def test_next_delay_is_the_longer_wait_unless_it_breaks_the_total_cap(
    own: float, retry_after: float | None, waited: float, max_total: float | None
) -> None:
    delay = next_delay(own=own, retry_after=retry_after, waited=waited, max_total=max_total)
    wanted = max(own, retry_after or 0.0)
    if max_total is not None and waited + wanted > max_total:
        assert delay is None
    else:
        assert delay == wanted


@pytest.mark.parametrize(("waited", "max_total"), [(0.0, 1.5), (2.0, 3.5), (8.5, 10.0)])
def test_a_wait_that_ends_exactly_at_max_total_is_allowed(waited: float, max_total: float) -> None:
    """``max_total`` is the most time spent waiting: reaching it is fine, passing it is not."""
    assert next_delay(own=1.5, retry_after=None, waited=waited, max_total=max_total) == 1.5
    assert next_delay(own=1.5, retry_after=None, waited=waited + 0.25, max_total=max_total) is None


# --- behaviour, both modes ----------------------------------------------------------------------


def test_a_first_success_is_returned_as_is_without_waiting(mode: str) -> None:
    events: list[RetryEvent] = []
    clock = ManualClock()
    policy = RetryPolicy(clock=clock, on_retry=events.append)
    result = object()
    assert run(policy, mode, lambda: result) is result
    assert policy.call(max, 3, 9, key=abs) == 9
    assert clock.slept == [] and events == []


def test_retry_honours_retry_after_over_its_own_backoff(mode: str) -> None:
    clock = ManualClock()
    fn = flaky([RateLimitedError("429", retry_after=7.0), ConnectionResetError()])
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=4.0, clock=clock, jitter=False)
    assert run(policy, mode, fn) == "done"
    assert clock.slept == [7.0, 1.0]


def test_retry_backoff_doubles_and_is_capped(mode: str) -> None:
    clock = ManualClock()
    fn = flaky([ConnectionResetError()] * 5)
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0, clock=clock, jitter=False)
    assert run(policy, mode, fn) == "done"
    assert clock.slept == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_between_half_and_all_of_the_backoff(mode: str) -> None:
    clock = ManualClock()
    policy = RetryPolicy(attempts=8, base_delay=1.0, max_delay=8.0, clock=clock, seed=3)
    run(policy, mode, flaky([ConnectionResetError()] * 7))
    assert len(clock.slept) == 7
    for attempt, slept in enumerate(clock.slept, start=1):
        own = min(8.0, 2.0 ** (attempt - 1))
        assert own / 2 <= slept <= own


def test_same_seed_same_delays_in_both_modes() -> None:
    slept = []
    for mode in ("sync", "async"):
        clock = ManualClock()
        policy = RetryPolicy(attempts=6, base_delay=0.3, max_delay=5.0, clock=clock, seed=11)
        run(policy, mode, flaky([ConnectionResetError()] * 5))
        slept.append(clock.slept)
    assert slept[0] == slept[1]


def test_retry_total_cap_and_attempts_give_up_with_attempt_number(mode: str) -> None:
    clock = ManualClock()
    policy = RetryPolicy(
        attempts=10, base_delay=1.0, max_delay=10.0, max_total=3.5, clock=clock, jitter=False
    )
    with pytest.raises(NetworkError) as info:
        run(policy, mode, flaky([ConnectionResetError()] * 10))
    assert sum(clock.slept) <= 3.5
    assert info.value.attempt == 3
    assert isinstance(info.value.__cause__, ConnectionResetError)
    clock2 = ManualClock()
    with pytest.raises(NetworkError) as info2:
        run(
            RetryPolicy(attempts=3, base_delay=0.1, clock=clock2),
            mode,
            flaky([ConnectionResetError()] * 5),
        )
    assert info2.value.attempt == 3
    assert len(clock2.slept) == 2


def test_max_total_counts_every_wait_so_far(mode: str) -> None:
    clock = ManualClock()
    policy = RetryPolicy(
        attempts=10, base_delay=1.0, max_delay=10.0, max_total=2.5, clock=clock, jitter=False
    )
    with pytest.raises(NetworkError) as info:
        run(policy, mode, flaky([ConnectionResetError()] * 10))
    assert clock.slept == [1.0]  # 1 + 2 would exceed 2.5
    assert info.value.attempt == 2


class Stop(BaseException):
    """Stands for KeyboardInterrupt, SystemExit or a task's cancellation."""


def test_base_exceptions_are_never_retried_nor_classified(mode: str) -> None:
    clock = ManualClock()
    fn = flaky([ConnectionResetError(), Stop()])
    with pytest.raises(Stop):
        run(RetryPolicy(attempts=5, clock=clock), mode, fn)
    assert fn.calls == [1, 1]
    assert len(clock.slept) == 1


def test_single_attempt_never_sleeps(mode: str) -> None:
    clock = ManualClock()
    fn = flaky([ConnectionResetError()])
    with pytest.raises(NetworkError) as info:
        run(RetryPolicy(attempts=1, clock=clock), mode, fn)
    assert info.value.attempt == 1
    assert fn.calls == [1]
    assert clock.slept == []


def test_critical_and_open_breaker_are_never_retried(mode: str) -> None:
    clock = ManualClock()
    policy = RetryPolicy(attempts=5, clock=clock)
    fn = flaky([PermissionError("denied")])
    with pytest.raises(CriticalError):
        run(policy, mode, fn)
    assert fn.calls == [1]
    refusal = CircuitOpenError(
        "open", name="x", latched=True, reason=None, opened_at=None, retry_at=None
    )
    fn2 = flaky([refusal])
    with pytest.raises(CircuitOpenError):
        run(policy, mode, fn2)
    assert fn2.calls == [1]
    # A critical error after a transient one is raised at once, with its attempt number.
    fn3 = flaky([ConnectionResetError(), InsufficientFundsError("Insufficient margin")])
    with pytest.raises(InsufficientFundsError) as info:
        run(policy, mode, fn3)
    assert fn3.calls == [1, 1]
    assert info.value.attempt == 2
    assert len(clock.slept) == 1


def test_on_retry_sees_each_wait_and_a_raising_hook_does_not_stop_the_retry(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[RetryEvent] = []

    def on_retry(event: RetryEvent) -> None:
        events.append(event)
        raise RuntimeError("hook bug")

    clock = ManualClock()
    policy = RetryPolicy(attempts=4, base_delay=1.0, clock=clock, jitter=False, on_retry=on_retry)
    with caplog.at_level(logging.WARNING, logger="resilient_trading.retry"):
        assert run(policy, mode, flaky([ConnectionResetError()] * 2)) == "done"
    assert [(e.attempt, e.delay) for e in events] == [(1, 1.0), (2, 2.0)]
    assert all(isinstance(e.error, NetworkError) for e in events)
    assert any("on_retry" in r.message for r in caplog.records)


# --- call_checked: never twice ------------------------------------------------------------------


def test_idempotency_check_prevents_a_second_order(mode: str) -> None:
    clock = ManualClock()
    orders: list[str] = []

    def place() -> str:
        orders.append("sent")
        raise TimeoutError("read timed out")  # the order may have landed

    found = run_checked(
        RetryPolicy(attempts=4, base_delay=0.1, clock=clock), mode, place, lambda: "0xabc exists"
    )
    assert found == "0xabc exists"
    assert orders == ["sent"]


def test_check_is_not_asked_before_the_first_attempt_and_none_means_send_again(
    mode: str,
) -> None:
    clock = ManualClock()
    checks: list[int] = []
    fn = flaky([TimeoutError("read timed out")])

    def check() -> None:
        checks.append(1)

    assert run_checked(RetryPolicy(attempts=3, clock=clock), mode, fn, check) == "done"
    assert fn.calls == [1, 1]
    assert checks == [1]


def test_a_transient_error_in_check_uses_up_an_attempt_and_the_loop_goes_on(mode: str) -> None:
    """Issue #11 item 18: a network error inside check() was raised unclassified and the
    remaining attempts went unused."""
    clock = ManualClock()
    orders: list[str] = []

    def place() -> str:
        orders.append("sent")
        raise TimeoutError("read timed out")

    lookups = [ConnectionResetError(104, "reset"), None]

    def check() -> str | None:
        item = lookups.pop(0) if lookups else "found"
        if isinstance(item, BaseException):
            raise item
        return item

    policy = RetryPolicy(attempts=5, base_delay=1.0, clock=clock, jitter=False)
    assert run_checked(policy, mode, place, check) == "found"
    # attempt 1: place; attempt 2: check fails (transient); attempt 3: check None, place;
    # attempt 4: check finds the order.
    assert orders == ["sent", "sent"]
    assert clock.slept == [1.0, 2.0, 4.0]


def test_a_transient_error_in_check_on_the_last_attempt_is_raised_classified(mode: str) -> None:
    clock = ManualClock()

    def place() -> str:
        raise TimeoutError("read timed out")

    def check() -> str | None:
        raise ConnectionResetError(104, "reset")

    with pytest.raises(NetworkError) as info:
        run_checked(RetryPolicy(attempts=2, clock=clock), mode, place, check)
    assert info.value.attempt == 2
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_a_critical_error_in_check_is_raised_at_once(mode: str) -> None:
    clock = ManualClock()
    orders: list[str] = []

    def place() -> str:
        orders.append("sent")
        raise TimeoutError("read timed out")

    def check() -> str | None:
        raise PermissionError("denied")

    with pytest.raises(CriticalError) as info:
        run_checked(RetryPolicy(attempts=5, clock=clock), mode, place, check)
    assert info.value.attempt == 2
    assert orders == ["sent"]
    assert len(clock.slept) == 1


def test_call_checked_async_accepts_a_sync_check() -> None:
    clock = ManualClock()

    async def place() -> str:
        raise TimeoutError("read timed out")

    policy = RetryPolicy(attempts=3, clock=clock)
    assert asyncio.run(policy.call_checked_async(place, lambda: "landed")) == "landed"


def scripted(script: list[str]) -> tuple[Callable[[], str], Callable[[], str | None]]:
    """A call and its check playing ``script``: one outcome per attempt (check and call of one
    attempt share it); past the script's end every attempt is transient."""
    current: dict[str, str] = {}

    def next_outcome() -> str:
        return script.pop(0) if script else "transient"

    def check() -> str | None:
        current["o"] = next_outcome()
        if current["o"] == "check-transient":
            raise ConnectionResetError()
        return "found" if current["o"] == "check-found" else None

    def fn() -> str:
        outcome = current.pop("o", None) or next_outcome()
        if outcome in ("transient", "check-transient", "check-found"):
            raise ConnectionResetError()
        if outcome == "critical":
            raise PermissionError("denied")
        return "ok"

    return fn, check


@given(
    outcomes=st.lists(
        st.sampled_from(["transient", "critical", "ok", "check-transient", "check-found"]),
        min_size=1,
        max_size=8,
    ),
    attempts=st.integers(1, 6),
)
def test_call_checked_matches_a_reference_loop_in_both_modes(
    outcomes: list[str], attempts: int
) -> None:
    """Each attempt after the first asks check() first; model the loop and compare."""

    def expected() -> tuple[str, int]:
        for attempt in range(1, attempts + 1):
            outcome = outcomes[attempt - 1] if attempt <= len(outcomes) else "transient"
            if outcome == "critical":
                return ("critical", attempt)
            if outcome == "ok":
                return ("ok", attempt)
            if outcome == "check-found" and attempt > 1:
                return ("found", attempt)
        return ("gave-up", attempts)

    results = []
    for mode in ("sync", "async"):
        fn, check = scripted(list(outcomes))
        policy = RetryPolicy(attempts=attempts, base_delay=0.1, clock=ManualClock())
        try:
            result = run_checked(policy, mode, fn, check)
        except CriticalError as exc:
            result = f"critical@{exc.attempt}"
        except NetworkError as exc:
            result = f"network@{exc.attempt}"
        results.append(result)
    assert results[0] == results[1]
    kind, at = expected()
    if kind in ("ok", "found"):
        assert results[0] == kind
    elif kind == "critical":
        assert results[0] == f"critical@{at}"
    else:
        assert results[0] == f"network@{at}"


def test_retry_as_decorator_with_real_time_is_quick() -> None:
    calls: list[int] = []

    @RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
    def fn() -> int:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionResetError()
        return len(calls)

    started = time.monotonic()
    assert fn() == 2
    assert time.monotonic() - started < 1


def test_retry_as_decorator_of_a_coroutine_function_retries_it() -> None:
    """``@policy`` on an ``async def`` retries the coroutine (it used to hand back the first
    coroutine unretried, so its first transient error reached the caller)."""
    clock = ManualClock()
    calls: list[int] = []

    @RetryPolicy(attempts=4, base_delay=1.0, jitter=False, clock=clock)
    async def fetch(n: int, *, scale: int = 1) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return n * scale

    assert asyncio.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert asyncio.run(fetch(7, scale=2)) == 14
    assert calls == [7, 7, 7]
    assert clock.slept == [1.0, 2.0]


def test_call_of_a_coroutine_function_retries_it_like_the_breaker_does() -> None:
    """``policy.call(async_fn)`` is awaitable and retries (it used to return the first
    coroutine, unretried)."""
    clock = ManualClock()
    calls: list[int] = []

    async def fetch(n: int) -> int:
        calls.append(n)
        if len(calls) < 2:
            raise ConnectionResetError("reset")
        return n

    policy = RetryPolicy(attempts=3, base_delay=0.5, jitter=False, clock=clock)

    async def main() -> int:
        result: int = await policy.call(fetch, 4)
        return result

    assert asyncio.run(main()) == 4
    assert calls == [4, 4]
    assert clock.slept == [0.5]


def test_async_retry_does_not_block_the_loop() -> None:
    clock = ManualClock()
    ticks: list[int] = []

    async def fn() -> str:
        if len(ticks) < 2:
            raise ConnectionResetError()
        return "ok"

    async def ticker() -> None:
        for _ in range(50):
            ticks.append(1)
            await asyncio.sleep(0)

    async def main() -> str:
        tick = asyncio.create_task(ticker())
        result = await RetryPolicy(attempts=10, base_delay=0.2, clock=clock).call_async(fn)
        await tick
        return result

    assert asyncio.run(main()) == "ok"


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": 2.0}, TypeError, "attempts"),
        ({"base_delay": -1}, ValueError, "base_delay"),
        ({"base_delay": 5, "max_delay": 1}, ValueError, "base_delay"),
        ({"max_delay": float("inf")}, ValueError, "max_delay"),
        ({"max_delay": -1}, ValueError, "max_delay"),
        ({"max_total": -1}, ValueError, "max_total"),
    ],
)
def test_retry_bad_arguments(kwargs: dict[str, Any], error: type[Exception], names: str) -> None:
    """A bad value is refused at construction, by a message naming the argument."""
    with pytest.raises(error, match=rf"^{names} must"):
        RetryPolicy(**kwargs)


def test_defaults_and_edge_values_are_the_documented_ones() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.base_delay, policy.max_delay) == (5, 0.5, 30.0)
    assert policy.max_total is None and policy.jitter is True
    # Zero waits, a zero total and base_delay == max_delay are all allowed.
    edge = RetryPolicy(base_delay=0, max_delay=0, max_total=0)
    assert (edge.base_delay, edge.max_delay, edge.max_total) == (0.0, 0.0, 0.0)
    assert RetryPolicy(base_delay=2.0, max_delay=2.0).backoff(5) == 2.0
    assert repr(RetryPolicy(attempts=3, base_delay=0.25, max_delay=4.0, max_total=9.0)) == (
        "RetryPolicy(attempts=3, base_delay=0.25, max_delay=4, max_total=9.0)"
    )


def test_retry_event_is_frozen() -> None:
    """A hook cannot change what the next hook (or the log) sees."""
    event = RetryEvent(1, NetworkError("reset"), 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.delay = 0.0  # type: ignore[misc]


def test_delay_is_the_jittered_backoff_or_the_servers_longer_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=False)
    assert policy.delay(3, NetworkError("reset")) == 4.0
    assert policy.delay(3, RateLimitedError("429", retry_after=7.0)) == 7.0
    assert policy.delay(3, RateLimitedError("429", retry_after=1.0)) == 4.0


def test_jitter_spreads_waits_over_the_whole_upper_half() -> None:
    """Jitter draws from [own/2, own]: over many seeded draws the waits reach both ends (so
    sharers really spread out), not a narrower band."""
    draws = [
        RetryPolicy(base_delay=1.0, seed=seed).delay(1, NetworkError("x")) for seed in range(400)
    ]
    assert all(0.5 <= d <= 1.0 for d in draws)
    assert min(draws) < 0.52
    assert max(draws) > 0.98
    assert len(set(draws)) > 300


def test_a_critical_error_keeps_its_cause_chain(mode: str) -> None:
    """A library error raised by ``fn`` is raised as is (no cause made up, never itself);
    a foreign exception classified as critical is raised with the original as its cause."""
    ours = InsufficientFundsError("Insufficient margin")
    with pytest.raises(InsufficientFundsError) as info:
        run(RetryPolicy(clock=ManualClock()), mode, flaky([ours]))
    assert info.value is ours
    assert info.value.__cause__ is None
    foreign = PermissionError("denied")
    with pytest.raises(CriticalError) as info2:
        run(RetryPolicy(clock=ManualClock()), mode, flaky([ConnectionResetError(), foreign]))
    assert info2.value.__cause__ is foreign
