"""``resilient-trading limits status``: file and Redis budgets, never creating, never hanging."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resilient_trading import RateLimit, RateLimiter

pytestmark = pytest.mark.timeout(60)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_trading._cli", "limits", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_status_of_a_file_budget(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    # windows far longer than two CLI start-ups on a loaded machine (one took over 1 s here)
    limiter = RateLimiter(RateLimit(1200, 60.0), RateLimit(100, 30.0), state_path=path)
    limiter.acquire(20)
    limiter.close()
    for args in ([str(path)], ["--state", str(path)]):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert sorted(w["used"] for w in report["windows"]) == [20, 20]
        assert "mode" not in report  # a sharer's own outage mode is not visible from outside


def test_a_mistyped_path_creates_nothing_and_fails_clearly(tmp_path: Path) -> None:
    """Issue #11 item 20: no empty file, exit code 1, a message naming the path."""
    path = tmp_path / "typo.json"
    out = cli(str(path))
    assert out.returncode == 1
    assert str(path) in out.stderr and "nothing was created" in out.stderr
    assert "Traceback" not in out.stderr
    assert not path.exists()
    out = cli(str(tmp_path))
    assert out.returncode == 1 and "directory" in out.stderr


def test_a_locked_budget_times_out_with_a_clear_message(tmp_path: Path) -> None:
    """Issue #11 item 20: a budget held locked by a stuck process never hangs the CLI."""
    path = tmp_path / "budget.json"
    limiter = RateLimiter(RateLimit(10, 1.0), state_path=path)
    limiter.acquire(1)
    limiter.close()
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        start = time.monotonic()
        out = cli(str(path), "--lock-timeout", "0.5")
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
    # either the read needs no lock (records are never overwritten in place) or it gives up
    assert elapsed < 10
    if out.returncode != 0:
        assert "stayed locked for 0.5s" in out.stderr


def test_a_corrupt_budget_is_named(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    path.write_text('{"v": 2, "rings": "nope"}')
    out = cli(str(path))
    assert out.returncode == 1
    assert str(path) in out.stderr and "rings" in out.stderr


def test_status_of_a_redis_budget(redis_url: str) -> None:
    limiter = RateLimiter(RateLimit(40, 30.0), redis_url=redis_url, key="cli")  # > a CLI start
    limiter.acquire(7)
    out = cli("--redis", redis_url, "--key", "cli")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["windows"][0]["used"] == 7
    limiter.close()


def test_an_unreachable_redis_says_sharers_run_on_their_local_share() -> None:
    out = cli("--redis", "redis://127.0.0.1:1/0", "--key", "cli", "--timeout", "0.5")
    assert out.returncode == 1
    assert "local share" in out.stderr and "fallback" in out.stderr
