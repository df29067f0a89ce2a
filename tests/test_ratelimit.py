"""RateLimiter: never over budget in any sliding window, near-full use, typed refusals."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import RateLimit, RateLimitedError, RateLimiter
from resilient_trading._clock import ManualClock

pytestmark = pytest.mark.timeout(120)


def window_ok(admits: list[tuple[float, int]], limit: RateLimit) -> bool:
    """The property: for every admit time t, the weight admitted in [t, t + period) fits."""
    admits = sorted(admits)
    for i, (t, _) in enumerate(admits):
        total = 0
        for t2, w2 in admits[i:]:
            if t2 >= t + limit.period - 1e-9:
                break
            total += w2
        if total > limit.budget:
            return False
    return True


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 1.0), ValueError),
        ((-5, 1.0), ValueError),
        ((10, 0.0), ValueError),
        ((10, -1.0), ValueError),
        ((10, float("nan")), ValueError),
        ((10, float("inf")), ValueError),
        ((10.5, 1.0), TypeError),
        (("10", 1.0), TypeError),
        ((True, 1.0), TypeError),
    ],
)
def test_bad_limits_are_refused_at_once(args: tuple[Any, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RateLimit(*args)


@pytest.mark.parametrize(
    ("weight", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (11, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        (float("nan"), TypeError),
    ],
)
def test_bad_weights_are_refused_at_once(weight: Any, error: type[Exception]) -> None:
    limiter = RateLimiter(RateLimit(10, 1.0), clock=ManualClock())
    with pytest.raises(error):
        limiter.acquire(weight)
    with pytest.raises(error):
        limiter.try_acquire(weight)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError):
        RateLimiter((10, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        RateLimiter(RateLimit(10, 1.0), key="")
    with pytest.raises(ValueError, match="not both"):
        RateLimiter(RateLimit(10, 1.0), state_path="/tmp/x", redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="timeout"):
        RateLimiter(RateLimit(10, 1.0)).acquire(1, timeout=-1)


def test_timeout_too_short_raises_at_once_without_sleeping() -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(RateLimit(10, 60.0), clock=clock)
    assert limiter.acquire(10) == 0.0
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire(1, timeout=5.0)
    assert clock.slept == []
    assert info.value.source == "local"
    assert info.value.retry_after is not None
    assert 59.0 <= info.value.retry_after <= 60.7
    with pytest.raises(RateLimitedError):
        limiter.acquire(1, timeout=0)


def test_acquire_waits_exactly_until_the_window_slides() -> None:
    clock = ManualClock(0.0)
    limiter = RateLimiter(RateLimit(10, 1.0), clock=clock)
    limiter.acquire(10)
    waited = limiter.acquire(3)
    assert 1.0 <= waited <= 1.0 + 0.011
    assert limiter.last_admitted_at == clock.time()


def test_all_limits_must_hold() -> None:
    clock = ManualClock(0.0)
    limiter = RateLimiter(RateLimit(100, 60.0), RateLimit(5, 1.0), clock=clock)
    assert [limiter.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(1.01)
    assert limiter.try_acquire()


def test_pause_makes_every_sharer_wait(tmp_path: Path) -> None:
    a = RateLimiter(RateLimit(100, 1.0), state_path=tmp_path / "b.json")
    b = RateLimiter(RateLimit(100, 1.0), state_path=tmp_path / "b.json")
    a.pause(30.0)
    assert not b.try_acquire()
    status = b.status()
    assert status.paused_until is not None
    assert status.paused_until > time.time() + 25
    with pytest.raises(RateLimitedError):
        b.acquire(1, timeout=1.0)


def test_charge_records_weight_known_after_the_call() -> None:
    clock = ManualClock(0.0)
    limiter = RateLimiter(RateLimit(10, 1.0), clock=clock)
    limiter.acquire(2)
    limiter.charge(9)  # the answer was bigger than expected: over budget for a moment
    assert limiter.status().windows[0].used == 11
    assert not limiter.try_acquire(1)
    with pytest.raises(ValueError):
        limiter.charge(-1)


def test_wall_clock_steps_neither_wedge_nor_widen_the_in_process_budget() -> None:
    """Issue #11 item 14: the per-process budget runs on the monotonic clock."""
    clock = ManualClock(10_000.0)
    limiter = RateLimiter(RateLimit(5, 1.0), clock=clock)
    limiter.acquire(5)
    clock.step(-3600.0)  # the wall clock jumped back an hour
    assert not limiter.try_acquire(1)
    clock.step(+3661.0)  # ...and forward past the window: no extra budget either
    assert not limiter.try_acquire(1)
    clock.advance(1.0)  # a real second later the window has slid, as always
    assert limiter.try_acquire(5)


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 10), st.floats(0, 0.4, allow_nan=False)), min_size=1, max_size=60
    )
)
def test_admission_matches_a_brute_force_reference(steps: list[tuple[int, float]]) -> None:
    limit = RateLimit(20, 1.0)
    clock = ManualClock(1000.0)
    limiter = RateLimiter(limit, clock=clock)
    admits: list[tuple[float, int]] = []
    for weight, gap in steps:
        clock.advance(gap)
        now = clock.time()
        # Reference: a request fits when the weight in (now - period, now] plus it fits.
        recent = sum(w for t, w in admits if t > now - limit.period)
        fits_exactly = recent + weight <= limit.budget
        # Bucket rounding keeps an entry at most one bucket (period / 100) longer: a request
        # that fits even counting those must be admitted.
        fits_with_rounding = (
            sum(w for t, w in admits if t > now - limit.period - limit.period / 100) + weight
            <= limit.budget
        )
        admitted = limiter.try_acquire(weight)
        if admitted:
            assert fits_exactly
            admits.append((now, weight))
        else:
            assert not fits_with_rounding
    assert window_ok(admits, limit)


ULP = 1e-9  # seconds: sums of float clock steps differ in their last digits, nothing more


class LimiterMachine(RuleBasedStateMachine):
    """Acquire, try, advance time and pause, against a model of the admitted log."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = RateLimit(30, 2.0)
        self.clock = ManualClock(50.0)
        self.limiter = RateLimiter(self.limit, clock=self.clock)
        self.admits: list[tuple[float, int]] = []
        self.paused_until = 0.0

    @rule(weight=st.integers(1, 30))
    def try_acquire(self, weight: int) -> None:
        if self.limiter.try_acquire(weight):
            assert self.clock.time() >= self.paused_until - ULP
            self.admits.append((self.clock.time(), weight))

    @rule(weight=st.integers(1, 30))
    def acquire(self, weight: int) -> None:
        self.limiter.acquire(weight)
        assert self.clock.time() >= self.paused_until - ULP  # a float's last digit, not early
        self.admits.append((self.clock.time(), weight))

    @rule(seconds=st.floats(0, 3, allow_nan=False))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.floats(0, 5, allow_nan=False))
    def pause(self, seconds: float) -> None:
        self.limiter.pause(seconds)
        self.paused_until = max(self.paused_until, self.clock.time() + seconds)

    @invariant()
    def never_over_budget(self) -> None:
        assert window_ok(self.admits, self.limit)

    @invariant()
    def status_agrees(self) -> None:
        now = self.clock.time()
        used = sum(w for t, w in self.admits if t > now - self.limit.period + 1e-9)
        reported = self.limiter.status().windows[0].used
        # Bucketed entries may linger one bucket longer than the exact log.
        assert (
            used
            <= reported
            <= used
            + sum(
                w
                for t, w in self.admits
                if now - self.limit.period - 0.03 < t <= now - self.limit.period + 1e-9
            )
        )


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


_SHARER = """
import json, sys, time
from resilient_trading import RateLimit, RateLimiter
budget, period, state, url = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
until = float(sys.argv[5])
limiter = RateLimiter(
    RateLimit(budget, period), state_path=state or None, redis_url=url or None, key="shared"
)
weights = [1, 2, 3]
out = []
i = 0
while time.time() < until:
    w = weights[i % 3]
    i += 1
    limiter.acquire(w)
    out.append((limiter.last_admitted_at, w))
print(json.dumps(out))
"""


def _run_sharers(
    state: str, url: str, limit: RateLimit, seconds: float, procs: int = 3
) -> list[tuple[float, int]]:
    until = time.time() + 1.0 + seconds
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SHARER,
                str(limit.budget),
                str(limit.period),
                state,
                url,
                str(until),
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(procs)
    ]
    admits: list[tuple[float, int]] = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        admits.extend((float(t), int(w)) for t, w in json.loads(out))
    return admits


def _assert_window_and_utilisation(admits: list[tuple[float, int]], limit: RateLimit) -> None:
    assert window_ok(admits, limit)
    admits.sort()
    start, end = admits[0][0], admits[-1][0]
    full_windows = int((end - start) // limit.period)
    assert full_windows >= 3
    sent = sum(w for t, w in admits if t < start + full_windows * limit.period)
    utilisation = sent / (full_windows * limit.budget)
    assert utilisation >= 0.9, utilisation


def test_processes_share_one_budget_through_a_file(tmp_path: Path) -> None:
    limit = RateLimit(40, 0.5)
    admits = _run_sharers(str(tmp_path / "budget.json"), "", limit, 3.0)
    _assert_window_and_utilisation(admits, limit)


def test_processes_share_one_budget_through_redis(redis_url: str) -> None:
    limit = RateLimit(40, 0.5)
    admits = _run_sharers("", redis_url, limit, 3.0)
    _assert_window_and_utilisation(admits, limit)


_HAMMER = """
import sys
from resilient_trading import RateLimit, RateLimiter
limiter = RateLimiter(RateLimit(1000, 0.2), state_path=sys.argv[1])
print("go", flush=True)
while True:
    limiter.acquire(1)
"""


def test_sigkill_of_a_sharer_mid_acquire_does_not_break_the_others(tmp_path: Path) -> None:
    path = str(tmp_path / "budget.json")
    for _ in range(5):
        victim = subprocess.Popen([sys.executable, "-c", _HAMMER, path], stdout=subprocess.PIPE)
        assert victim.stdout is not None
        victim.stdout.readline()
        time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        survivor = RateLimiter(RateLimit(1000, 0.2), state_path=path)
        assert survivor.acquire(1, timeout=1.0) <= 1.0
        survivor.close()


def test_async_tasks_share_a_limiter_and_the_loop_stays_responsive() -> None:
    limit = RateLimit(10, 0.2)
    limiter = RateLimiter(limit)

    async def main() -> tuple[list[tuple[float, int]], int]:
        admits: list[tuple[float, int]] = []
        beats = 0
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal beats
            while not done.is_set():
                beats += 1
                await asyncio.sleep(0.005)

        async def task(weight: int) -> None:
            for _ in range(5):
                await limiter.acquire_async(weight)
                admits.append((limiter.last_admitted_at or 0.0, weight))

        beat = asyncio.create_task(heartbeat())
        await asyncio.gather(*(task(w) for w in (1, 2, 3, 1, 2)))
        done.set()
        await beat
        return admits, beats

    admits, beats = asyncio.run(main())
    assert len(admits) == 25
    assert window_ok(admits, limit)
    assert beats >= 20  # the loop kept running while tasks waited for budget


def test_cli_limits_status(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    limiter = RateLimiter(RateLimit(1200, 60.0), state_path=path)
    limiter.acquire(20)
    out = subprocess.run(
        [sys.executable, "-m", "resilient_trading._cli", "limits", "status", "--state", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["windows"][0]["used"] == 20
    assert report["windows"][0]["remaining"] == 1180
