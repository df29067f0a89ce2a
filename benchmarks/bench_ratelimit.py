"""RateLimiter acquire cost at steady state against pyrate-limiter, measured in the same run.

Steady state: two limits (a long window and a short burst cap, like Hyperliquid's per-minute
budget beside a per-second cap), and each limiter is first driven for longer than its longest
window, so every window is full of admissions before anything is measured. Budgets are large
so nothing waits: this measures the cost of one admission with a full log. Ours and theirs
run in interleaved batches (medians of seven each), so a busy machine slows both alike.

Rows: in process (ours in memory vs pyrate ``InMemoryBucket``); across processes on one host
(ours ``state_path`` vs pyrate ``SQLiteBucket``); across machines (ours ``redis_url``, one Lua
round trip, vs pyrate ``RedisBucket``, weight 20, and a plain ``PING`` for the round trip:
redis-py's ``Redis.ping()``, what a user's own round trip costs; ours skips redis-py's per-call
layers, see ``_limiter_redis``). The stored state printed is every string key of the budget
(header and logs), not only the header.

Run: ``python benchmarks/bench_ratelimit.py`` (needs the dev extras: pyrate-limiter, redis and
a ``redis-server`` binary).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pyrate_limiter import InMemoryBucket, Limiter, Rate, RedisBucket, SQLiteBucket

from resilient_trading import RateLimit, RateLimiter

BIG = 10_000_000
LONG, SHORT = 2.0, 0.2  # seconds: the windows' shapes (buckets per window) match 60 s / 1 s
WARM = LONG + 0.3


def warm(fn: Callable[[], object], seconds: float = WARM) -> None:
    """Drive ``fn`` for ``seconds`` (default: longer than the longest window)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        fn()


def batch(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def side_by_side(
    a: Callable[[], object], b: Callable[[], object], n: int, m: int, rounds: int = 7
) -> tuple[float, float]:
    """Median seconds per call of ``a`` and ``b`` over ``rounds`` interleaved batches (a, b,
    a, b...), so a busy machine slows both alike. Each is at steady state when measured:
    driven for a full window first, and before each batch for as long as it sat idle during
    the other's batch plus the short window (so every window is full again)."""
    warm(a)
    warm(b)
    times_a, times_b = [], []
    idle_a = idle_b = 0.0
    for _ in range(rounds):
        warm(a, idle_a + SHORT + 0.05)
        took = batch(a, n // rounds)
        times_a.append(took / (n // rounds))
        idle_b = took
        warm(b, idle_b + SHORT + 0.05)
        took = batch(b, m // rounds)
        times_b.append(took / (m // rounds))
        idle_a = took
    return statistics.median(times_a), statistics.median(times_b)


def ours(**kwargs: object) -> RateLimiter:
    return RateLimiter(RateLimit(5 * BIG, LONG), RateLimit(BIG, SHORT), **kwargs)  # type: ignore[arg-type]


def rates() -> list[Rate]:
    return [Rate(BIG, int(SHORT * 1000)), Rate(5 * BIG, int(LONG * 1000))]


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="rt-bench-rl-")
    rows: list[tuple[str, float, float, str]] = []

    mem = ours()
    pyrate_mem = Limiter(InMemoryBucket(rates()))
    rows.append(
        (
            "in process (memory)",
            *side_by_side(
                lambda: mem.acquire(1), lambda: pyrate_mem.try_acquire("k", 1), 45000, 45000
            ),
            "InMemoryBucket",
        )
    )

    file = ours(state_path=os.path.join(tmp, "budget.json"))  # compact packed form, see docs
    sqlite_bucket = SQLiteBucket.init_from_file(rates(), db_path=os.path.join(tmp, "p.sqlite"))
    pyrate_file = Limiter(sqlite_bucket)
    rows.append(
        (
            "one host (file / SQLite)",
            *side_by_side(
                lambda: file.acquire(1), lambda: pyrate_file.try_acquire("k", 1), 9000, 900
            ),
            "SQLiteBucket",
        )
    )

    ping = None
    try:
        import redis

        from tests._redis_server import redis_server
    except ImportError:  # pragma: no cover
        redis_server = None  # type: ignore[assignment]
    if redis_server is not None:
        with redis_server() as server:
            shared = ours(redis_url=server.url, key="bench")
            client = redis.Redis.from_url(server.url)
            pyrate_redis = Limiter(RedisBucket.init(rates(), client, "pyrate"))
            ours_redis, theirs_redis = side_by_side(
                lambda: shared.acquire(20), lambda: pyrate_redis.try_acquire("k", 20), 3600, 3600
            )
            rows.append(
                ("across machines (Redis)", ours_redis, theirs_redis, "RedisBucket, weight 20")
            )
            # PING interleaved with ours too: the ratio the target is about (redis-py's
            # ``ping()``, a user's round trip), then a bare PING on a redis-py connection (no
            # client layers: the network and the server alone), for scale
            ours_ping, ping = side_by_side(lambda: shared.acquire(20), client.ping, 3600, 3600)
            conn = client.connection_pool.get_connection()
            frame = (b"*1\r\n$4\r\nPING\r\n",)

            def bare_ping() -> object:
                conn.send_packed_command(frame, check_health=False)  # type: ignore[no-untyped-call]
                return conn.read_response()

            ours_bare, bare = side_by_side(lambda: shared.acquire(20), bare_ping, 3600, 3600)
            client.connection_pool.release(conn)
            # the header and every limit's log (the heartbeats are a sorted set beside them)
            size = sum(
                int(client.strlen(k))
                for k in client.scan_iter(match="resilient-trading:limiter:{bench}*")
                if client.type(k) == b"string"
            )

    targets = {  # issue #13: ours against theirs, same run
        "in process (memory)": ("no slower", 1.0),
        "one host (file / SQLite)": (">= 20x faster", 20.0),
        "across machines (Redis)": ("no slower", 1.0),
    }
    print(f"steady state: two limits ({LONG:g} s and {SHORT:g} s windows), every window full")
    print(
        f"{'path':26} {'ours':>10} {'pyrate-limiter':>16} {'ours faster':>12}  "
        f"{'target (issue #13)':22} (their bucket)"
    )
    for name, a, b, what in rows:
        goal, need = targets[name]
        verdict = f"{goal}: {'met' if b / a >= need else 'NOT met'}"
        print(f"{name:26} {a * 1e6:8.1f}us {b * 1e6:14.1f}us {b / a:10.1f}x  {verdict:22} ({what})")
    if ping is not None:
        ratio = ours_ping / ping  # measured side by side
        print(
            f"Redis PING round trip (redis-py ping()): {ping * 1e6:.1f}us beside ours "
            f"{ours_ping * 1e6:.1f}us: ours = {ratio:.2f}x PING "
            f"(target <= 1.6x: {'met' if ratio <= 1.6 else 'NOT met'}), "
            f"pyrate = {theirs_redis / ping:.2f}x PING"
        )
        print(
            f"bare PING (no client layers): {bare * 1e6:.1f}us beside ours "
            f"{ours_bare * 1e6:.1f}us = {ours_bare / bare:.2f}x; our stored state: {size} bytes"
        )


if __name__ == "__main__":
    main()
