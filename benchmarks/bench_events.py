"""What events cost a guarded call (issue #17: within 1.5x of the bare guarded call).

The guarded call is the stack of bench_breaker.py (CircuitBreaker + RetryPolicy + in-process
RateLimiter around a successful call). It is measured bare (nobody listens) and with an
event listener, an EventMetrics listener and the Prometheus exporter attached. The
primitives publish their own events (no wiring): with listeners attached, every guarded
call publishes the limiter's ``admitted`` event, so this measures one event built and
delivered to both listeners per call. Once more with ``BreakerEvents(successes=True)`` (a
second event, the breaker's success, on every call), and once with
``BreakerEvents(latency=True)`` (each call timed: a ``call`` event with its duration, observed
by EventMetrics' ``resilient_trading_call_duration_seconds`` histogram). The bare stack is
also measured with a ``BreakerEvents()`` attached (latency off, the default) to show that
it adds nothing to the call. Best of N rounds, the
configurations alternating within each round, so a busy machine slows them alike. Also: an
emitting site while nobody listens, and one event built and delivered to EventMetrics.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_breaker import per_op, work  # the same timing loop and guarded function
from prometheus_client import CollectorRegistry

from resilient_trading import (
    BreakerEvents,
    CircuitBreaker,
    EventMetrics,
    RateLimit,
    RateLimiter,
    RetryPolicy,
    StoreEvent,
    add_listener,
    emit,
)
from resilient_trading._events import listening
from resilient_trading._metrics import serve

BIG = 10_000_000
ROUNDS = 7
TARGET = 1.5


def guarded(
    *, successes: bool = False, latency: bool = False, adapter: bool = False
) -> Callable[[], int]:
    """The bench_breaker.py stack (its events are native: published whenever anyone
    listens); with ``successes``, its breaker also publishes every success; with
    ``latency``, it times every call; with ``adapter``, a default ``BreakerEvents()``."""
    wanted = successes or latency or adapter
    listeners = [BreakerEvents(successes=successes, latency=latency)] if wanted else []
    breaker = CircuitBreaker(fail_max=5, reset_timeout=30.0, listeners=listeners)
    retry = RetryPolicy(attempts=5, name="work")
    limiter = RateLimiter(RateLimit(BIG, 60.0))

    def attempt() -> int:
        limiter.acquire(1)
        return work()

    def call() -> int:
        return int(breaker.call(retry.call, attempt))

    return call


def main() -> None:
    bare_call = guarded()
    evented_call = guarded()
    every_call = guarded(successes=True)
    timed_call = guarded(latency=True)
    adapter_call = guarded(adapter=True)
    registry = CollectorRegistry()
    seen = [0]

    def count(event: object) -> None:
        seen[0] += 1

    best = {name: float("inf") for name in ("bare", "adapter", "evented", "every", "timed")}
    quiet_site = float("inf")
    with tempfile.TemporaryDirectory() as state_dir:
        server = serve("127.0.0.1", 0, state_dir=state_dir, registry=registry)
        metrics = EventMetrics(registry)
        event = StoreEvent(kind="commit", path="/srv/bot/state.json", generation=1)

        def site() -> None:  # what every emitting site does
            if listening():
                emit(event)

        try:
            for _ in range(ROUNDS):
                assert not listening()
                best["bare"] = min(best["bare"], per_op(bare_call))
                best["adapter"] = min(best["adapter"], per_op(adapter_call))
                quiet_site = min(quiet_site, per_op(site))
                removers = [add_listener(count), add_listener(metrics)]
                try:
                    best["evented"] = min(best["evented"], per_op(evented_call))
                    best["every"] = min(best["every"], per_op(every_call))
                    best["timed"] = min(best["timed"], per_op(timed_call))
                    delivered = per_op(lambda: emit(StoreEvent("commit", "/s.json", 1)))
                finally:
                    for remove in removers:
                        remove()
        finally:
            server.shutdown()
            server.server_close()

    removers = [add_listener(count)]
    before = seen[0]
    evented_call()
    per_call = seen[0] - before
    for remove in removers:
        remove()
    assert per_call >= 1, "the guarded call published no event: the benchmark measures nothing"
    bare = best["bare"]
    print(
        f"{'guarded successful call (best of ' + str(ROUNDS) + ')':58} {'time':>10} {'vs bare':>8}"
    )
    for name, value in [
        ("bare: breaker + retry + limiter, nobody listening", bare),
        ("bare + BreakerEvents() (latency off), nobody listening", best["adapter"]),
        ("with a listener + EventMetrics + exporter attached", best["evented"]),
        ("same, and the breaker's success events", best["every"]),
        ("same, with latency=True instead (every call timed)", best["timed"]),
    ]:
        print(f"{name:58} {value * 1e6:8.2f}us {value / bare:7.2f}x")
    print(f"{'an emitting site, nobody listening':58} {quiet_site * 1e9:8.0f}ns")
    print(
        f"{'one event built, delivered to 2 listeners (EventMetrics)':58} {delivered * 1e6:8.2f}us"
    )
    print(f"{'events published per guarded call, listeners attached':58} {per_call:8d}")
    ratio = best["evented"] / bare
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"overhead with events attached: {ratio:.2f}x ({verdict} the {TARGET}x target)")


if __name__ == "__main__":
    main()
