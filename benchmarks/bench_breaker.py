"""A guarded successful call: our breaker + retry + in-process limiter against pybreaker +
tenacity + pyrate-limiter stacked by hand, measured in the same run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pybreaker
import tenacity
from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

from resilient_trading import CircuitBreaker, RateLimit, RateLimitedClient, RateLimiter, RetryPolicy

BIG = 10_000_000
N = 20000


def per_op(fn: Callable[[], object], n: int = N) -> float:
    for _ in range(500):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def work() -> int:
    return 1


class Api:
    def work(self) -> int:
        return 1


def main() -> None:
    bare = per_op(work)

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(5), reraise=True)
    limiter = Limiter(InMemoryBucket([Rate(BIG, Duration.MINUTE)]))

    def by_hand() -> int:
        def attempt() -> int:
            limiter.try_acquire("k", 1)
            return work()

        return int(breaker.call(retrying, attempt))

    hand = per_op(by_hand)

    ours_breaker = CircuitBreaker(fail_max=5, reset_timeout=30.0)
    ours_retry = RetryPolicy(attempts=5)
    ours_limiter = RateLimiter(RateLimit(BIG, 60.0))

    def ours_stack() -> int:
        def attempt() -> int:
            ours_limiter.acquire(1)
            return work()

        return int(ours_breaker.call(ours_retry.call, attempt))

    ours = per_op(ours_stack)
    client = RateLimitedClient(Api(), limiter=ours_limiter, breaker=ours_breaker, retry=ours_retry)
    method = client.work
    ours_client = per_op(method)
    breaker_only = per_op(lambda: ours_breaker.call(work))

    print(f"{'guarded successful call':48} {'time':>10} {'vs hand stack':>14}")
    for name, value in [
        ("bare call", bare),
        ("pybreaker + tenacity + pyrate-limiter by hand", hand),
        ("ours: CircuitBreaker + RetryPolicy + RateLimiter", ours),
        ("ours: RateLimitedClient (all three, proxied)", ours_client),
        ("ours: CircuitBreaker alone", breaker_only),
    ]:
        print(f"{name:48} {value * 1e6:8.2f}us {value / hand:13.2f}x")


if __name__ == "__main__":
    main()
