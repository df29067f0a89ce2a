"""NonceSource: strictly increasing across real processes, on a file and on Redis."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import CriticalError, NonceSource
from resilient_trading.testing import ManualClock

pytestmark = pytest.mark.timeout(60)

_WORKER = """
import json, sys, time
from resilient_trading import NonceSource
path, url, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
source = NonceSource(state_path=path or None, redis_url=url or None, key="signer")
time.sleep(max(0.0, start - time.time()))
print(json.dumps([source.next() for _ in range(300)]))
"""


def run_workers(path: str, url: str, n: int = 4) -> list[list[int]]:
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, path, url, str(start)], stdout=subprocess.PIPE
        )
        for _ in range(n)
    ]
    out = []
    for proc in procs:
        data, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        out.append(json.loads(data))
    return out


def check(seqs: list[list[int]]) -> None:
    every = [n for seq in seqs for n in seq]
    assert len(set(every)) == len(every)  # unique across processes
    for seq in seqs:
        assert all(b > a for a, b in itertools.pairwise(seq))  # increasing per process
    now = time.time() * 1000
    assert all(now - 60_000 < n < now + 60_000 for n in every)  # millisecond timestamps


def test_processes_sharing_a_file_never_reuse_a_nonce(tmp_path: Path) -> None:
    check(run_workers(str(tmp_path / "nonce.json"), ""))


def test_processes_sharing_redis_never_reuse_a_nonce(redis_url: str) -> None:
    check(run_workers("", redis_url))


def test_threads_in_one_process_never_reuse_a_nonce() -> None:
    source = NonceSource()
    seen: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        got = [source.next() for _ in range(500)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 2000


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=30))
def test_max_of_now_and_last_plus_one_even_when_the_clock_steps(steps: list[float]) -> None:
    clock = ManualClock(1_800_000_000.0)
    source = NonceSource(clock=clock)
    last = 0
    for step in steps:
        clock.step(step)
        n = source.next()
        assert n == max(int(clock.time() * 1000), last + 1)
        last = n


@pytest.mark.parametrize("home", ["memory", "file", "redis"])
def test_a_floor_a_day_ahead_is_refused_not_signed(
    home: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A nonce Hyperliquid would refuse (more than a day ahead of T) is never handed out."""
    clock = ManualClock(1_800_000_000.0)
    kwargs: dict[str, object] = {}
    if home == "file":
        kwargs["state_path"] = tmp_path / "nonce.json"
    if home == "redis":
        kwargs["redis_url"] = request.getfixturevalue("redis_url")
    source = NonceSource(clock=clock, key="refuse", **kwargs)  # type: ignore[arg-type]
    source.next()
    clock.step(-2 * 86_400.0)  # the host clock stepped back two days
    with pytest.raises(CriticalError, match="ahead of this host's clock") as info:
        source.next()
    assert "NTP" in str(info.value)
    clock.step(2 * 86_400.0)
    assert source.next() > 1_800_000_000_000


def test_unreachable_redis_is_a_network_error_naming_no_secret() -> None:
    from resilient_trading import NetworkError

    source = NonceSource(redis_url="redis://user:hunter2@127.0.0.1:1/0", redis_timeout=0.5)
    with pytest.raises(NetworkError) as info:
        source.next()
    assert "hunter2" not in str(info.value)
