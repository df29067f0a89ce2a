"""The breaker under faults (issue #11): Redis dying mid-call never replaces the user's outcome;
clock steps never wedge it; generators cannot fool it; listeners cannot break a call; a
cancelled trial is released; the state lock's timeout is the caller's; the CLI reports a bad
record clearly and reaches a Redis-backed breaker."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_trading import (
    CircuitBreaker,
    CircuitOpenError,
    InsufficientFundsError,
    LockedJsonStore,
    LockTimeoutError,
    NetworkError,
    StateCorruptedError,
)
from resilient_trading._breaker import CircuitBreakerListener
from resilient_trading._cli import main as cli
from resilient_trading._clock import ManualClock
from tests._breaker_modes import MODES, guard
from tests._redis_server import redis_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def transient() -> None:
    raise ConnectionResetError(104, "reset")


def ok() -> str:
    return "ok"


class Recorder(CircuitBreakerListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.events.append(("state", (str(old_state), str(new_state))))

    def outcome_not_recorded(self, cb: Any, exc: BaseException) -> None:
        self.events.append(("not recorded", exc))


def until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# --- item 2: bookkeeping never replaces the user's outcome ---------------------------------------


@pytest.mark.parametrize("outcome", ["result", "own error"])
def test_redis_killed_during_the_call_never_replaces_its_outcome(
    mode: str, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #11 item 2: the order was placed, then Redis died: the caller must get the
    result (or the call's own error), never a NetworkError from the bookkeeping."""
    recorder = Recorder()
    with redis_server() as server:
        breaker = CircuitBreaker(name="orders", redis_url=server.url, listeners=[recorder])
        with pytest.raises(NetworkError):  # one failure counted: the success must write
            guard(breaker, mode, transient)
        placed: list[str] = []

        def place_order() -> str:
            placed.append("order")
            server.proc.kill()  # Redis dies while the order is in flight
            server.proc.wait()
            if outcome == "own error":
                raise InsufficientFundsError("Insufficient margin to place order.")
            return "order 42 resting"

        with caplog.at_level(logging.ERROR, logger="resilient_trading.breaker"):
            if outcome == "result":
                assert guard(breaker, mode, place_order) == "order 42 resting"
            else:
                with pytest.raises(InsufficientFundsError):
                    guard(breaker, mode, place_order)
        assert placed == ["order"]
        missed = [exc for kind, exc in recorder.events if kind == "not recorded"]
        assert len(missed) == 1 and isinstance(missed[0], NetworkError)
        assert any("could not record" in r.message for r in caplog.records)
        # Admission cannot be read now: refused with a typed error before calling.
        with pytest.raises(NetworkError):
            guard(breaker, mode, place_order)
        assert placed == ["order"]


def test_a_damaged_record_refuses_before_calling_and_reset_repairs_it(
    mode: str, tmp_path: Path
) -> None:
    path = tmp_path / "breakers.json"
    breaker = CircuitBreaker(name="exchange", state_path=path)
    with LockedJsonStore(path).transaction() as doc:
        del doc["breakers"]["exchange"]["opened_at"]
    called: list[int] = []
    with pytest.raises(StateCorruptedError, match="opened_at") as info:
        guard(breaker, mode, lambda: called.append(1))
    assert str(path) in str(info.value)
    assert called == []
    breaker.reset()
    assert guard(breaker, mode, ok) == "ok"


# --- item 14: clock steps ------------------------------------------------------------------------


def test_wall_clock_step_back_does_not_stretch_a_per_process_open_period(mode: str) -> None:
    clock = ManualClock(1_000_000.0)
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, clock=clock)
    with pytest.raises(NetworkError):
        guard(breaker, mode, transient)
    clock.step(-3600.0)  # NTP or an operator sets the clock back an hour
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        guard(breaker, mode, ok)
    clock.advance(1.0)
    assert guard(breaker, mode, ok) == "ok"  # due after reset_timeout, not an hour more
    assert breaker.state == "closed"


def test_retry_at_is_on_todays_wall_clock_after_a_step(mode: str, tmp_path: Path) -> None:
    """A bot that sleeps until ``CircuitOpenError.retry_at`` must not sleep an extra hour."""
    clock = ManualClock(1_000_000.0)
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, clock=clock)
    with pytest.raises(NetworkError):
        guard(breaker, mode, transient)
    clock.step(-3600.0)
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError) as info:
        guard(breaker, mode, ok)
    assert info.value.retry_at == pytest.approx(clock.time() + 20.0)
    assert breaker.snapshot().retry_at == pytest.approx(clock.time() + 20.0)
    shared = CircuitBreaker(
        fail_max=1, reset_timeout=30.0, state_path=tmp_path / "b.json", clock=clock
    )
    with pytest.raises(NetworkError):
        guard(shared, mode, transient)
    clock.step(-3600.0)
    assert shared.snapshot().retry_at == clock.time()  # due now, as admission treats it


def test_wall_clock_step_forward_does_not_shorten_a_per_process_open_period(mode: str) -> None:
    clock = ManualClock(1_000_000.0)
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, clock=clock)
    with pytest.raises(NetworkError):
        guard(breaker, mode, transient)
    clock.step(+3600.0)
    with pytest.raises(CircuitOpenError):
        guard(breaker, mode, ok)


def test_shared_breaker_is_never_wedged_by_a_step_back(mode: str, tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    path = tmp_path / "breakers.json"
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, state_path=path, clock=clock)
    with pytest.raises(NetworkError):
        guard(breaker, mode, transient)
    clock.step(-3600.0)
    # opened_at is now an hour in the future: impossible, so a step; due at once.
    other = CircuitBreaker(fail_max=1, reset_timeout=30.0, state_path=path, clock=clock)
    assert guard(other, mode, ok) == "ok"
    assert breaker.state == "closed"


# --- item 16: generators cannot fool the breaker ----------------------------------------------


def gen() -> Iterator[int]:
    yield 1
    raise ConnectionResetError(104, "reset")


async def agen() -> AsyncIterator[int]:
    yield 1
    raise ConnectionResetError(104, "reset")


def undecorated(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # no functools.wraps: looks like a function
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    "fn", [gen, agen, functools.wraps(gen)(undecorated(gen)), undecorated(gen), undecorated(agen)]
)
def test_generators_are_refused_with_a_hint_and_count_nothing(mode: str, fn: Any) -> None:
    breaker = CircuitBreaker(fail_max=5)
    for _ in range(6):
        with pytest.raises(TypeError, match="generator"):
            guard(breaker, mode, fn) if mode == "sync" else asyncio.run(breaker.call_async(fn))
    assert breaker.state == "closed"
    assert breaker.fail_counter == 0


def test_a_refused_generator_frees_the_trial_it_was_given() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=1, reset_timeout=5.0, clock=clock)
    with pytest.raises(NetworkError):
        breaker.call(transient)
    clock.advance(5)
    with pytest.raises(TypeError):
        breaker.call(undecorated(gen))
    assert breaker.state == "open"
    assert breaker.call(ok) == "ok"  # the next call is the trial, at once


def test_lambda_returning_a_coroutine_is_guarded_through_its_await() -> None:
    """Issue #11 item 16: ``breaker.call(lambda: coro())`` was a success before it ran."""
    breaker = CircuitBreaker(fail_max=5)

    async def failing() -> None:
        raise ConnectionResetError(104, "reset")

    async def main() -> None:
        for _ in range(5):
            with pytest.raises(NetworkError):
                await breaker.call(lambda: failing())
        with pytest.raises(CircuitOpenError):
            await breaker.call(lambda: failing())

    asyncio.run(main())
    assert breaker.state == "open"


def test_call_async_accepts_a_plain_function() -> None:
    breaker = CircuitBreaker()
    assert asyncio.run(breaker.call_async(ok)) == "ok"  # type: ignore[arg-type]


# --- item 17: listeners ---------------------------------------------------------------------------


def test_pybreaker_listeners_get_a_real_old_state(mode: str) -> None:
    import pybreaker

    seen: list[tuple[str, str]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            seen.append((old_state.name, new_state.name))

    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=1, reset_timeout=5.0, clock=clock, listeners=[Listener()])
    with pytest.raises(NetworkError):
        guard(breaker, mode, transient)
    clock.advance(5)
    assert guard(breaker, mode, ok) == "ok"
    assert seen == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]


def test_a_raising_listener_never_changes_the_outcome(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("before")

        def success(self, cb: Any) -> None:
            raise RuntimeError("success")

        def failure(self, cb: Any, exc: BaseException) -> None:
            raise RuntimeError("failure")

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            raise AttributeError("'NoneType' object has no attribute 'name'")

    recorder = Recorder()
    clock = ManualClock()
    breaker = CircuitBreaker(
        fail_max=1, reset_timeout=5.0, clock=clock, listeners=[Broken(), recorder]
    )
    with caplog.at_level(logging.ERROR, logger="resilient_trading.breaker"):
        assert guard(breaker, mode, ok) == "ok"
        with pytest.raises(NetworkError):
            guard(breaker, mode, transient)
        clock.advance(5)
        assert guard(breaker, mode, ok) == "ok"
    assert [e for e in recorder.events if e[0] == "state"] == [
        ("state", ("closed", "open")),
        ("state", ("open", "half-open")),
        ("state", ("half-open", "closed")),
    ]
    assert sum("listener" in r.message for r in caplog.records) >= 5


# --- cancellation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("home", ["memory", "file"])
def test_a_cancelled_trial_is_released_not_left_half_open(home: str, tmp_path: Path) -> None:
    clock = ManualClock()
    kwargs: dict[str, Any] = {"state_path": tmp_path / "b.json"} if home == "file" else {}
    breaker = CircuitBreaker(fail_max=1, reset_timeout=60.0, clock=clock, **kwargs)
    with pytest.raises(NetworkError):
        breaker.call(transient)
    clock.advance(60)

    async def main() -> None:
        started = asyncio.Event()

        async def hangs() -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        task = asyncio.create_task(breaker.call_async(hangs))
        await asyncio.wait_for(started.wait(), 10)
        assert breaker.state == "half-open"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert breaker.state == "open"  # released: due at once, no waiting for a stale trial
    assert breaker.call(ok) == "ok"
    assert breaker.state == "closed"


def test_cancelled_while_admission_runs_in_a_thread_releases_the_trial(tmp_path: Path) -> None:
    clock = ManualClock()
    recorder = Recorder()
    breaker = CircuitBreaker(
        fail_max=1,
        reset_timeout=60.0,
        clock=clock,
        state_path=tmp_path / "b.json",
        listeners=[recorder],
    )
    with pytest.raises(NetworkError):
        breaker.call(transient)
    clock.advance(60)
    called: list[int] = []

    async def fn() -> str:
        called.append(1)
        return "ok"

    async def main() -> None:
        task = asyncio.create_task(breaker.call_async(fn))
        await asyncio.sleep(0)  # the admission is now running in a worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())  # the loop is gone now: the release must not need it
    until(lambda: ("state", ("open", "half-open")) in recorder.events)  # the trial was taken
    until(lambda: breaker.state == "open", seconds=3)  # ... and released
    assert called == []
    assert breaker.call(ok) == "ok"


# --- item 22: the state lock's timeout -----------------------------------------------------------


def test_lock_timeout_bounds_every_state_transition(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    recorder = Recorder()
    tripped = CircuitBreaker(fail_max=1, state_path=path, lock_timeout=0.2, name="tripped")
    with pytest.raises(NetworkError):
        tripped.call(transient)
    closed = CircuitBreaker(
        fail_max=1, state_path=path, lock_timeout=0.2, listeners=[recorder], name="closed"
    )
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with LockedJsonStore(path).transaction():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            tripped.reset()
        with pytest.raises(NetworkError):  # the call's own error, not the lock's
            closed.call(transient)
        assert time.monotonic() - started < 5  # two 0.2 s waits, not the 10 s default
        assert isinstance(recorder.events[-1][1], LockTimeoutError)
    finally:
        release.set()
        holder.join()
    tripped.reset()
    assert tripped.state == "closed"
    with pytest.raises(ValueError, match="lock_timeout"):
        CircuitBreaker(state_path=path, lock_timeout=-1)


# --- items 21 and #18: the CLI --------------------------------------------------------------------


def test_cli_status_of_a_record_with_missing_fields_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "breakers.json"
    CircuitBreaker(name="exchange", state_path=path)
    with LockedJsonStore(path).transaction() as doc:
        doc["breakers"]["exchange"] = {"state": "open", "latched": True}
    assert cli(["breaker", "status", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "opened_at" in err and "Traceback" not in err
    assert cli(["breaker", "reset", str(path), "--name", "exchange"]) == 0
    assert cli(["breaker", "status", str(path)]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["exchange"]["state"] == "closed"


def test_cli_on_a_missing_file_or_a_directory_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert cli(["breaker", "status", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists()
    assert cli(["breaker", "status", str(tmp_path)]) == 1
    assert "not a state file" in capsys.readouterr().err
    assert cli(["breaker", "status"]) == 1
    assert "--redis" in capsys.readouterr().err


def test_cli_status_and_reset_reach_a_redis_breaker(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker = CircuitBreaker(name="exchange", redis_url=redis_url)
    with pytest.raises(InsufficientFundsError):
        breaker.call(lambda: (_ for _ in ()).throw(InsufficientFundsError("no margin")))
    CircuitBreaker(name="info", redis_url=redis_url)
    assert cli(["breaker", "status", "--redis", redis_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report) == ["exchange", "info"]
    assert report["exchange"]["latched"] is True
    assert cli(["breaker", "reset", "--redis", redis_url, "--name", "exchange"]) == 0
    assert "is closed" in capsys.readouterr().out
    assert not breaker.latched
    assert breaker.call(ok) == "ok"
    assert cli(["breaker", "status", "--redis", redis_url, "--name", "nope"]) == 1
    assert "no breaker 'nope'" in capsys.readouterr().err


def test_cli_with_redis_down_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with redis_server() as server:
        url = server.url
        server.proc.kill()
        server.proc.wait()
        assert cli(["breaker", "status", "--redis", url]) == 1
        err = capsys.readouterr().err
        assert "NetworkError" in err and "Traceback" not in err
