"""RateLimiter entry points, every behaviour in both modes (sync and asyncio) and both local homes.

Fair FIFO admission, timeouts that mean wall time, try_acquire that never jumps the queue,
cancelled waiters that give their reservation back, pauses capped, bad state repaired.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resilient_trading import RateLimit, RateLimitedError, RateLimiter
from resilient_trading import _limiter_compact as compact
from resilient_trading._clock import ManualClock
from resilient_trading._ratelimit import MAX_PAUSE
from resilient_trading.backends import FileState

pytestmark = pytest.mark.timeout(60)

Acquire = Callable[..., float]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "file"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return {} if request.param == "memory" else {"state_path": tmp_path / "budget.json"}


@pytest.fixture(params=["memory", "file", "redis"])
def real_home(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Every home, Redis included (its Lua script runs the same rule), for real-time tests."""
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {} if request.param == "memory" else {"state_path": tmp_path / "budget.json"}


def acquirer(limiter: RateLimiter, mode: str) -> Acquire:
    """``limiter.acquire`` or ``acquire_async`` run to completion: one behaviour, two modes."""
    if mode == "sync":
        return limiter.acquire

    def run(weight: int = 1, **kwargs: Any) -> float:
        return asyncio.run(limiter.acquire_async(weight, **kwargs))

    return run


def test_timeout_is_wall_time_and_a_refusal_reserves_nothing(
    mode: str, home: dict[str, Any]
) -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(RateLimit(40, 1.0), clock=clock, **home)
    acquire = acquirer(limiter, mode)
    acquire(30)
    with pytest.raises(RateLimitedError) as info:
        acquire(20, timeout=0.5)  # needs the 30 to leave: 1 s away
    err = info.value
    assert clock.slept == []  # raised at once
    assert err.retry_after == pytest.approx(1.0, abs=0.011)
    text = str(err)
    assert "would wait 1.0" in text and "30/40 used per 1s" in text and "0.5s timeout" in text
    # nothing was reserved: a weight that fits now still goes now
    assert acquire(10) == 0.0
    assert clock.slept == []


def test_a_heavy_request_is_not_overtaken_by_light_ones(mode: str, home: dict[str, Any]) -> None:
    """Issue #13 item 1: the weight-20 request reserves its place; light ones queue behind."""
    clock = ManualClock(0.0)
    limiter = RateLimiter(RateLimit(40, 1.0), clock=clock, **home)
    acquire = acquirer(limiter, mode)
    for _ in range(39):
        acquire(1)
    waited = acquire(20)  # the window must free 19: the first entries leave at t = 1.0
    assert waited == pytest.approx(1.0, abs=0.011)
    heavy_at = limiter.last_admitted_at
    assert heavy_at is not None
    light = acquire(1)  # after the heavy one, never before it
    assert (limiter.last_admitted_at or 0) >= heavy_at
    assert light >= 0


def test_try_acquire_never_jumps_ahead_of_a_reservation(real_home: dict[str, Any]) -> None:
    limiter = RateLimiter(RateLimit(10, 0.4), **real_home)
    limiter.acquire(10)
    waiter = threading.Thread(target=limiter.acquire, args=(6,))
    waiter.start()
    deadline = time.monotonic() + 5
    while limiter.status().queued == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert limiter.status().queued == 1
    assert not limiter.try_acquire(1)  # it would fit after the 10 leave, but 6 is ahead
    waiter.join()
    assert limiter.try_acquire(4)  # 6 + 4 = 10: fits, nobody ahead


def test_a_cancelled_async_waiter_gives_its_reservation_back(real_home: dict[str, Any]) -> None:
    limit = RateLimit(10, 0.3)
    limiter = RateLimiter(limit, **real_home)

    async def main() -> float:
        await limiter.acquire_async(10)
        first = asyncio.create_task(limiter.acquire_async(10))  # due in ~0.3 s
        while limiter.status().queued == 0:
            await asyncio.sleep(0.001)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert limiter.status().queued == 0
        start = time.monotonic()
        await limiter.acquire_async(10)  # had it kept its place, this would wait ~0.6 s
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.45


class _InterruptingClock(ManualClock):
    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt


def test_an_interrupted_sync_waiter_gives_its_reservation_back(home: dict[str, Any]) -> None:
    clock = _InterruptingClock(0.0)
    limiter = RateLimiter(RateLimit(10, 1.0), clock=clock, **home)
    limiter.acquire(10)
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire(10)
    status = limiter.status()
    assert status.queued == 0 and status.reserved == 0


@pytest.mark.parametrize("seconds", [86_401.0, 1e12, float("inf")])
def test_a_huge_pause_is_capped_and_logged_never_raised(
    seconds: float, home: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #11 item 13: a Retry-After of days must not raise (and latch a breaker)."""
    clock = ManualClock(0.0)
    limiter = RateLimiter(RateLimit(10, 1.0), clock=clock, **home)
    with caplog.at_level(logging.WARNING, "resilient_trading.ratelimit"):
        limiter.pause(seconds)
    assert "capped" in caplog.text
    status = limiter.status()
    assert status.paused_until is not None
    assert status.paused_until == pytest.approx(status.now + MAX_PAUSE, abs=0.01)
    with pytest.raises(ValueError):
        limiter.pause(float("nan"))


@pytest.mark.parametrize(
    "stored",
    [
        "[1, 2, 3]",
        '{"v": 2, "rings": [], "paused_until": NaN}',
        '{"v": 2, "rings": [{"budget": 10, "period": 1000, "width": 10, '
        '"buckets": [[1, 1e400]]}], "paused_until": 0}',
        '{"v": 1, "limits": [[10, 1.0]], "paused_until": 0.0, "log": [[5.0, 3]]}',
    ],
)
def test_a_bad_state_file_is_repaired_safely_and_logged(
    stored: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #11 item 15: no raw TypeError, no wedge: the window counts as spent once."""
    path = tmp_path / "budget.json"
    path.write_text(stored)
    clock = ManualClock(50.0)
    limiter = RateLimiter(RateLimit(10, 1.0), state_path=path, clock=clock)
    with caplog.at_level(logging.WARNING, "resilient_trading.ratelimit"):
        waited = limiter.acquire(5)
    assert str(path) in caplog.text and "no valid limiter state" in caplog.text
    assert waited == pytest.approx(1.0, abs=0.011)  # one window treated as spent, no more
    assert limiter.acquire(5) <= 0.5 + 0.011  # then paced at the average rate, not wedged
    content: Any = FileState(path).read()
    assert isinstance(content, str) and compact.decode(content).rings  # rewritten, compact form


def test_in_flight_keeps_an_admission_in_the_window_longer() -> None:
    clock = ManualClock(0.0)
    limiter = RateLimiter(RateLimit(10, 1.0), clock=clock, in_flight=0.5)
    limiter.acquire(10)
    assert limiter.acquire(1) == pytest.approx(1.5, abs=0.011)
    assert limiter.in_flight == 0.5
    with pytest.raises(ValueError, match="in_flight"):
        RateLimiter(RateLimit(10, 1.0), in_flight=-1)


def test_status_reports_reservations_and_mode(real_home: dict[str, Any]) -> None:
    limiter = RateLimiter(RateLimit(10, 1.0), RateLimit(100, 60.0), **real_home)
    limiter.acquire(4)
    status = limiter.status()
    assert [w.used for w in status.windows] == [4, 4]
    assert status.mode == "shared" and status.queued == 0
    assert abs(status.now - time.time()) < 1.0
