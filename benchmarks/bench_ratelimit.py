"""RateLimiter acquire overhead against pyrate-limiter, measured in the same run.

In process: ours (memory) vs pyrate-limiter's ``InMemoryBucket``. Across processes: ours
(``state_path``, flock + in-place file) vs pyrate-limiter's ``SQLiteBucket`` (file-backed;
without ``use_file_lock``, which crashes with filelock 4.x). Redis: ours vs ``RedisBucket``.
Budgets are large so nothing waits: this measures the cost of an admission.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate, RedisBucket, SQLiteBucket

from resilient_trading import RateLimit, RateLimiter

BIG = 10_000_000


def per_op(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="rt-bench-rl-")
    rows = []

    ours = RateLimiter(RateLimit(BIG, 60.0))
    theirs = Limiter(InMemoryBucket([Rate(BIG, Duration.MINUTE)]))
    rows.append(
        (
            "in process (memory)",
            per_op(lambda: ours.acquire(1), 20000),
            per_op(lambda: theirs.try_acquire("k", 1), 20000),
            "InMemoryBucket",
        )
    )

    ours_file = RateLimiter(RateLimit(BIG, 60.0), state_path=os.path.join(tmp, "budget.json"))
    sqlite_bucket = SQLiteBucket.init_from_file(
        [Rate(BIG, Duration.MINUTE)], db_path=os.path.join(tmp, "pyrate.sqlite")
    )
    theirs_file = Limiter(sqlite_bucket)
    rows.append(
        (
            "cross-process (file)",
            per_op(lambda: ours_file.acquire(1), 3000),
            per_op(lambda: theirs_file.try_acquire("k", 1), 1000),
            "SQLiteBucket",
        )
    )

    try:
        from tests._redis_server import redis_server
    except ImportError:  # pragma: no cover
        redis_server = None  # type: ignore[assignment]
    if redis_server is not None:
        import redis

        with redis_server() as server:
            ours_redis = RateLimiter(RateLimit(BIG, 60.0), redis_url=server.url, key="bench")
            bucket = RedisBucket.init(
                [Rate(BIG, Duration.MINUTE)], redis.Redis.from_url(server.url), "pyrate"
            )
            theirs_redis = Limiter(bucket)
            rows.append(
                (
                    "across machines (Redis)",
                    per_op(lambda: ours_redis.acquire(1), 2000),
                    per_op(lambda: theirs_redis.try_acquire("k", 1), 2000),
                    "RedisBucket",
                )
            )

    print(f"{'path':26} {'ours':>10} {'pyrate-limiter':>16} {'speed-up':>9}  (their bucket)")
    for name, a, b, what in rows:
        print(f"{name:26} {a * 1e6:8.1f}us {b * 1e6:14.1f}us {b / a:8.1f}x  ({what})")


if __name__ == "__main__":
    main()
