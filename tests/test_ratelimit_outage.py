"""A real redis-server SIGKILLed and restarted empty under three sharing processes.

Issue #13 "Redis outages survived": no exception, every sharer keeps being admitted during the
outage (on its local share), no window over budget across the outage and the restart, and the
full budget is used again afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests._redis_server import free_port, start_redis_server

pytestmark = pytest.mark.timeout(60)

BUDGET, PERIOD = 30, 0.5
KILL_AT, RESTART_AT, END_AT = 1.5, 3.5, 10.0

_SHARER = """
import json, sys, time
from resilient_trading import RateLimit, RateLimiter
url, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
limiter = RateLimiter(RateLimit(30, 0.5), redis_url=url, key="outage")
time.sleep(max(0.0, start - time.time()))
out, errors = [], []
while time.time() < end:
    try:
        limiter.acquire(1, timeout=5.0)
    except Exception as exc:  # the property under test: nothing escapes
        errors.append(repr(exc))
        continue
    # the reserved instant as wall time: the Redis clock in shared mode (same host), the
    # monotonic clock on the local share
    budget = limiter._budget
    at = limiter.last_admitted_at
    if budget.mode == "fallback":
        at = time.time() - (time.monotonic() - at)
    out.append((at, budget.mode))
print(json.dumps({"admits": out, "errors": errors}))
"""


def test_sharers_survive_a_redis_killed_and_restarted_empty() -> None:
    workdir = tempfile.mkdtemp(prefix="rt-outage-")
    port = free_port()
    server = start_redis_server(port, workdir, "--maxmemory-policy", "noeviction")
    url = f"redis://127.0.0.1:{port}/0"
    start = time.time() + 1.5
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _SHARER, url, str(start), str(start + END_AT)],
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        time.sleep(max(0.0, start + KILL_AT - time.time()))
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(max(0.0, start + RESTART_AT - time.time()))
        # empty: the window's history is gone
        server = start_redis_server(port, workdir, "--maxmemory-policy", "noeviction")
        results = []
        for child in children:
            out, _ = child.communicate(timeout=40)
            assert child.returncode == 0
            results.append(json.loads(out))
    finally:
        server.kill()
        server.wait()
    for r in results:
        assert r["errors"] == []
    # every sharer kept being admitted while Redis was down (after one full-window pause)
    for r in results:
        during = [t for t, _ in r["admits"] if start + KILL_AT + 1.0 < t < start + RESTART_AT]
        assert during, "a sharer stopped during the outage"
        assert any(mode == "fallback" for _, mode in r["admits"])
    # no window over budget at any time (2 ms allowed for converting between clocks)
    times = sorted(t for r in results for t, _ in r["admits"])
    for i, t in enumerate(times):
        inside = sum(1 for t2 in times[i : i + BUDGET + 5] if t2 < t + PERIOD - 0.002)
        if inside > BUDGET:
            for k, r in enumerate(results):
                print(
                    k, [(round(t2 - start, 4), m) for t2, m in r["admits"] if t <= t2 < t + PERIOD]
                )
        assert inside <= BUDGET, (t - start, inside)
    # full use again at the end
    tail = [t for t in times if t > start + END_AT - 1.0]
    assert len(tail) >= 0.9 * BUDGET * (1.0 / PERIOD) * 0.9, len(tail)


@pytest.mark.parametrize("on_error", ["raise", "fallback"])
def test_acquire_on_a_hung_redis_returns_within_its_timeout(on_error: str) -> None:
    """Issue #11 item 22: ``acquire(timeout=1)`` took 5 s on a hung Redis."""
    from resilient_trading import NetworkError, RateLimit, RateLimiter

    workdir = tempfile.mkdtemp(prefix="rt-hung-")
    port = free_port()
    server = start_redis_server(port, workdir, "--maxmemory-policy", "noeviction")
    try:
        limiter = RateLimiter(
            RateLimit(10, 0.3),
            redis_url=f"redis://127.0.0.1:{port}/0",
            key="hung",
            on_backend_error=on_error,  # type: ignore[arg-type]
        )
        limiter.acquire(1)
        os.kill(server.pid, signal.SIGSTOP)  # alive but answering nothing
        started = time.monotonic()
        if on_error == "raise":
            with pytest.raises(NetworkError, match="cannot be reached"):
                limiter.acquire(1, timeout=1.0)
        else:
            limiter.acquire(1, timeout=1.0)  # on the local share after one window
            assert limiter.status().mode == "fallback"
        assert time.monotonic() - started < 1.5
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()
