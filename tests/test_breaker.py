"""CircuitBreaker: transient runs open it for a while, one critical error latches it, state is
shared and survives restarts. (RetryPolicy: tests/test_retry.py; the pure rules:
tests/test_breaker_rules.py; faults: tests/test_breaker_faults.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    CriticalError,
    InsufficientFundsError,
    NetworkError,
)
from resilient_trading._breaker import CircuitBreakerListener
from resilient_trading._clock import ManualClock
from tests._breaker_modes import MODES, guard

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Every behaviour test runs through ``call`` and through ``call_async``."""
    return str(request.param)


def transient() -> None:
    raise ConnectionResetError(104, "reset")


def critical() -> None:
    raise InsufficientFundsError("Insufficient margin to place order.")


def ok() -> str:
    return "ok"


# --- a reference model ----------------------------------------------------------------------


class Model:
    def __init__(self, fail_max: int, reset_timeout: float) -> None:
        self.fail_max, self.reset_timeout = fail_max, reset_timeout
        self.state, self.failures, self.latched, self.opened_at = "closed", 0, False, 0.0

    def admit(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.latched:
            return False
        if self.state == "open" and now >= self.opened_at + self.reset_timeout:
            self.state = "half-open"
            return True
        return False

    def outcome(self, kind: str, now: float) -> None:
        if kind == "critical":
            self.state, self.latched, self.opened_at = "open", True, now
        elif kind == "transient":
            if self.state == "closed":
                self.failures += 1
                if self.failures >= self.fail_max:
                    self.state, self.opened_at = "open", now
            elif self.state == "half-open":
                self.state, self.opened_at = "open", now
        elif self.state == "half-open" and not self.latched:
            self.state, self.failures = "closed", 0
        elif self.state == "closed":
            self.failures = 0

    def reset(self) -> None:
        self.state, self.failures, self.latched = "closed", 0, False


class BreakerMachine(RuleBasedStateMachine):
    """Two breaker instances share one state file and must both agree with the model, whether
    each call goes through ``call`` or ``call_async``."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.path = Path(tempfile.mkdtemp()) / "breakers.json"
        self.clock = ManualClock(1000.0)
        self.breakers = [
            CircuitBreaker(fail_max=3, reset_timeout=10.0, state_path=self.path, clock=self.clock)
            for _ in range(2)
        ]
        self.model = Model(3, 10.0)

    @rule(
        which=st.integers(0, 1),
        kind=st.sampled_from(["success", "transient", "critical"]),
        mode=st.sampled_from(MODES),
    )
    def call(self, which: int, kind: str, mode: str) -> None:
        fn = {"success": ok, "transient": transient, "critical": critical}[kind]
        admitted = self.model.admit(self.clock.time())
        called = []

        def spy() -> Any:
            called.append(1)
            return fn()

        refusal: CircuitOpenError | None = None
        try:
            guard(self.breakers[which], mode, spy)
        except CircuitOpenError as exc:
            refusal = exc
        except (NetworkError, CriticalError):
            pass
        assert (refusal is None) == admitted
        if refusal is not None:
            assert refusal.latched == self.model.latched
        assert bool(called) == admitted
        if admitted:
            self.model.outcome(kind, self.clock.time())

    @rule(seconds=st.floats(0, 15, allow_nan=False))
    def elapse(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(which=st.integers(0, 1))
    def reset(self, which: int) -> None:
        self.breakers[which].reset()
        self.model.reset()

    @rule()
    def restart(self) -> None:
        self.breakers[0] = CircuitBreaker(
            fail_max=3, reset_timeout=10.0, state_path=self.path, clock=self.clock
        )

    @invariant()
    def agree(self) -> None:
        for breaker in self.breakers:
            snap = breaker.snapshot()
            assert snap.state == self.model.state
            assert snap.latched == self.model.latched
            if self.model.state == "closed":
                assert snap.failures == self.model.failures


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_state_is_a_str_enum() -> None:
    breaker = CircuitBreaker()
    assert breaker.state == "closed"
    assert isinstance(breaker.state, BreakerState)
    assert str(BreakerState.HALF_OPEN) == "half-open"


def test_open_error_says_why_and_when(mode: str) -> None:
    clock = ManualClock(500.0)
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, clock=clock)
    with pytest.raises(NetworkError) as failed:
        guard(breaker, mode, transient)
    assert isinstance(failed.value.__cause__, ConnectionResetError)
    with pytest.raises(CircuitOpenError) as info:
        guard(breaker, mode, ok)
    assert not info.value.latched
    assert info.value.retry_at == 530.0
    assert info.value.opened_at == 500.0
    assert "NetworkError" in (info.value.reason or "")
    with pytest.raises(CriticalError):
        guard(CircuitBreaker(clock=clock), mode, critical)


def test_critical_latches_until_reset_even_after_reset_timeout(mode: str) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=5, reset_timeout=1.0, clock=clock)
    with pytest.raises(InsufficientFundsError):
        guard(breaker, mode, critical)
    clock.advance(1000)
    with pytest.raises(CircuitOpenError) as info:
        guard(breaker, mode, ok)
    assert info.value.latched
    assert info.value.retry_at is None
    breaker.reset()
    assert guard(breaker, mode, ok) == "ok"


def test_fail_max_transient_failures_open_then_one_trial_closes_it(mode: str) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=3, reset_timeout=10.0, clock=clock)
    for _ in range(2):
        with pytest.raises(NetworkError):
            guard(breaker, mode, transient)
    assert guard(breaker, mode, ok) == "ok"  # a success clears the run
    assert breaker.fail_counter == 0
    for _ in range(3):
        with pytest.raises(NetworkError):
            guard(breaker, mode, transient)
    assert breaker.state == "open"
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        guard(breaker, mode, ok)
    clock.advance(0.1)
    with pytest.raises(NetworkError):  # the trial fails: open again, for a full period
        guard(breaker, mode, transient)
    assert breaker.state == "open"
    assert breaker.snapshot().trips == 2  # closed->open, then half-open->open
    clock.advance(10)
    assert guard(breaker, mode, ok) == "ok"
    assert breaker.state == "closed"


def test_before_call_listeners_run_in_both_modes(mode: str) -> None:
    """Issue #12 drift bug: call_async never called the before_call listeners."""
    seen: list[str] = []

    class Listener(CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            seen.append("before")

        def success(self, cb: Any) -> None:
            seen.append("success")

    breaker = CircuitBreaker(listeners=[Listener()])
    assert guard(breaker, mode, ok) == "ok"
    assert seen == ["before", "success"]


def test_a_trial_raising_an_excluded_exception_closes_the_breaker(mode: str) -> None:
    """Issue #12 drift bug: the async path left the breaker half-open (the sync path closed
    it: an excluded exception is a business outcome, the service answered)."""
    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=1, reset_timeout=5.0, exclude=(KeyError,), clock=clock)
    with pytest.raises(NetworkError):
        guard(breaker, mode, transient)
    clock.advance(5)

    def business() -> None:
        raise KeyError("no such order")

    with pytest.raises(KeyError):
        guard(breaker, mode, business)
    assert breaker.state == "closed"
    assert guard(breaker, mode, ok) == "ok"


def test_half_open_admits_exactly_one_trial_among_concurrent_tasks() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=1, reset_timeout=5.0, clock=clock)
    with pytest.raises(NetworkError):
        breaker.call(transient)
    clock.advance(6)

    async def main() -> list[str]:
        gate = asyncio.Event()

        async def slow() -> str:
            await gate.wait()
            return "trial"

        async def attempt() -> str:
            try:
                return await breaker.call(slow)
            except CircuitOpenError:
                return "refused"

        tasks = [asyncio.create_task(attempt()) for _ in range(5)]
        await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert sorted(results) == ["refused"] * 4 + ["trial"]
    assert breaker.state == "closed"


def test_a_slow_call_does_not_block_other_threads() -> None:
    breaker = CircuitBreaker()
    inside, release = threading.Event(), threading.Event()

    def slow() -> str:
        inside.set()
        release.wait(10)
        return "slow"

    t = threading.Thread(target=breaker.call, args=(slow,))
    t.start()
    assert inside.wait(5)
    assert breaker.call(ok) == "ok"  # completes while the slow call still holds its thread
    release.set()
    t.join()


def test_an_order_outcome_is_an_answer_never_a_failure(mode: str) -> None:
    """An error neither transient nor critical (an IOC that found nothing to match) says the
    exchange works: it is raised as it is, never counted, and it settles a trial as a success."""
    from resilient_trading import OrderNotFilled

    clock = ManualClock()
    breaker = CircuitBreaker(fail_max=2, reset_timeout=5.0, clock=clock)

    def ioc() -> None:
        raise OrderNotFilled("Order could not immediately match against any resting orders.")

    for _ in range(5):
        with pytest.raises(OrderNotFilled):
            guard(breaker, mode, ioc)
    assert breaker.state == "closed" and breaker.fail_counter == 0
    for _ in range(2):
        with pytest.raises(NetworkError):
            guard(breaker, mode, transient)
    clock.advance(5)
    with pytest.raises(OrderNotFilled):
        guard(breaker, mode, ioc)  # the trial: the exchange answered
    assert breaker.state == "closed"


def test_excluded_exceptions_do_not_count(mode: str) -> None:
    breaker = CircuitBreaker(fail_max=1, exclude=(KeyError,))
    with pytest.raises(KeyError):
        guard(breaker, mode, lambda: dict[str, int]()["missing"])
    assert breaker.state == "closed"


def test_decorator_and_listeners(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []

    class Listener(CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            events.append(str(new_state))

        def failure(self, cb: Any, exc: BaseException) -> None:
            events.append(type(exc).__name__)

    breaker = CircuitBreaker(fail_max=1, listeners=[Listener()])

    @breaker
    def guarded() -> None:
        transient()

    with (
        caplog.at_level(logging.DEBUG, logger="resilient_trading.breaker"),
        pytest.raises(NetworkError),
    ):
        guarded()
    assert events == ["NetworkError", "open"]
    assert any(r.levelno == logging.ERROR and "open" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"fail_max": 0}, ValueError),
        ({"fail_max": 1.5}, TypeError),
        ({"reset_timeout": 0}, ValueError),
        ({"reset_timeout": float("nan")}, ValueError),
        ({"name": ""}, ValueError),
        ({"exclude": ["KeyError"]}, TypeError),
        ({"state_path": "/tmp/x.json", "redis_url": "redis://127.0.0.1:1/0"}, ValueError),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        CircuitBreaker(**kwargs)


def test_latch_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    with pytest.raises(CriticalError):
        CircuitBreaker(name="exchange", state_path=path).call(critical)
    restarted = CircuitBreaker(name="exchange", state_path=path)
    assert restarted.latched
    assert restarted.state == "open"
    assert CircuitBreaker(name="other", state_path=path).state == "closed"
    assert path.stat().st_mode & 0o777 == 0o600


_TRIPPER = """
import sys, time
from resilient_trading import CircuitBreaker, CircuitOpenError
path = sys.argv[1]
breaker = CircuitBreaker(name="exchange", state_path=path)
try:
    breaker.call(lambda: (_ for _ in ()).throw(PermissionError("denied")))
except Exception as exc:
    print("tripped", type(exc).__name__, flush=True)
sys.stdin.readline()  # wait until the operator has reset it
print("after", breaker.call(lambda: "ok"), breaker.state, flush=True)
"""


def test_processes_share_the_latch_and_the_cli_resets_it(tmp_path: Path) -> None:
    path = str(tmp_path / "breakers.json")
    bot = subprocess.Popen(
        [sys.executable, "-c", _TRIPPER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bot.stdout is not None and bot.stdin is not None
    assert bot.stdout.readline().startswith("tripped CriticalError")
    status = subprocess.run(
        [sys.executable, "-m", "resilient_trading._cli", "breaker", "status", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)["exchange"]
    assert report["latched"] is True
    assert report["state"] == "open"
    reset = subprocess.run(
        [
            sys.executable,
            "-m",
            "resilient_trading._cli",
            "breaker",
            "reset",
            path,
            "--name",
            "exchange",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 0, reset.stderr
    bot.stdin.write("\n")
    bot.stdin.flush()
    assert bot.stdout.readline().strip() == "after ok closed"
    bot.wait(timeout=30)
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "resilient_trading._cli",
            "breaker",
            "reset",
            path,
            "--name",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr


def test_redis_breakers_share_state(redis_url: str) -> None:
    clock = ManualClock()
    a = CircuitBreaker(name="x", fail_max=2, redis_url=redis_url, clock=clock)
    b = CircuitBreaker(name="x", fail_max=2, redis_url=redis_url, clock=clock)
    with pytest.raises(NetworkError):
        a.call(transient)
    with pytest.raises(NetworkError):
        b.call(transient)
    assert a.state == "open"
    with pytest.raises(CircuitOpenError):
        a.call(ok)
    with pytest.raises(CircuitOpenError):
        b.call(ok)
    b.reset()
    assert a.call(ok) == "ok"
    with pytest.raises(CriticalError):
        a.call(critical)
    assert b.latched


def test_pybreaker_storage_shares_a_plain_pybreaker_through_our_homes(
    tmp_path: Path, redis_url: str
) -> None:
    import pybreaker

    from resilient_trading import PybreakerStorage

    for kwargs in ({"state_path": tmp_path / "b.json"}, {"redis_url": redis_url}):
        first = pybreaker.CircuitBreaker(
            fail_max=2, reset_timeout=60, state_storage=PybreakerStorage("api", **kwargs)
        )
        for _ in range(2):
            with pytest.raises((ZeroDivisionError, pybreaker.CircuitBreakerError)):
                first.call(lambda: 1 / 0)
        second = pybreaker.CircuitBreaker(
            fail_max=2, reset_timeout=60, state_storage=PybreakerStorage("api", **kwargs)
        )
        assert second.current_state == "open"
        assert second.fail_counter == 2
        with pytest.raises(pybreaker.CircuitBreakerError):
            second.call(lambda: "never called")
        # The same layout as CircuitBreaker: ours reads it too.
        assert CircuitBreaker(name="api", **kwargs).state == "open"
    with pytest.raises(ValueError, match="not both"):
        PybreakerStorage("x", state_path=tmp_path / "c.json", redis_url=redis_url)
