"""EventMetrics counts the events the limiter, the retry policy and the breaker publish by
themselves (issue #17): weight admitted, waits, refusals, pauses, retries and give-ups,
failures, transitions and latches, under stable, documented names that parse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilient_trading import (
    AuthenticationError,
    CircuitBreaker,
    EventMetrics,
    ManualClock,
    NetworkError,
    RateLimit,
    RateLimitedError,
    RateLimiter,
    RetryPolicy,
    _metrics,
    add_listener,
)

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def metrics() -> Iterator[CollectorRegistry]:
    """A fresh registry counting this process's events while the block runs."""
    registry = CollectorRegistry()
    remove = add_listener(EventMetrics(registry))
    try:
        yield registry
    finally:
        remove()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.integers(1, 6), max_size=12),
    asynchronous=st.booleans(),
)
def test_limiter_metrics_add_up_to_what_was_admitted_and_refused(
    weights: list[int], asynchronous: bool
) -> None:
    """Property: admitted weight, refusals and waits in the metrics equal what the calls
    saw (admitted weight summed, one refusal per ``RateLimitedError``, one wait observation
    per call that slept, their sum the time slept)."""
    clock = ManualClock(50.0)
    limiter = RateLimiter(RateLimit(10, 1.0), clock=clock, key="ip")
    admitted = refused = waits = 0
    slept = 0.0
    with metrics() as registry:
        for weight in weights:
            before = clock.monotonic()
            try:
                if asynchronous:
                    asyncio.run(limiter.acquire_async(weight, timeout=0.5))
                else:
                    limiter.acquire(weight, timeout=0.5)
            except RateLimitedError:
                refused += 1
                continue
            admitted += weight
            if clock.monotonic() > before:
                waits += 1
                slept += clock.monotonic() - before
    label = {"limiter": "ip"}
    assert value(registry, "resilient_trading_limiter_admitted_weight_total", **label) == admitted
    assert value(registry, "resilient_trading_limiter_refusals_total", **label) == refused
    assert value(registry, "resilient_trading_limiter_wait_seconds_count", **label) == waits
    assert value(registry, "resilient_trading_limiter_wait_seconds_sum", **label) == pytest.approx(
        slept
    )


def _raise(exc: Exception) -> Any:
    raise exc


def test_retry_and_breaker_metrics_come_from_their_own_events() -> None:
    clock = ManualClock()
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        raise NetworkError("down")

    with metrics() as registry:
        with pytest.raises(NetworkError):
            RetryPolicy(attempts=3, clock=clock).call(flaky)
        breaker = CircuitBreaker(fail_max=5, clock=clock, name="orders")
        with pytest.raises(AuthenticationError):
            breaker.call(_raise, AuthenticationError("bad key"))
        breaker.reset()
        limiter = RateLimiter(RateLimit(5, 1.0), clock=clock, key="ip")
        limiter.pause(2.0)
    kind = {"error_kind": "NetworkError"}
    assert value(registry, "resilient_trading_retries_total", **kind) == 2
    assert value(registry, "resilient_trading_retry_delay_seconds_count") == 2
    assert value(registry, "resilient_trading_retry_gave_up_total", **kind) == 1
    failure = {"breaker": "orders", "error_kind": "AuthenticationError"}
    assert value(registry, "resilient_trading_breaker_failures_total", **failure) == 1
    assert value(registry, "resilient_trading_breaker_latches_total", breaker="orders") == 1
    for state in ("open", "closed"):
        labels = {"breaker": "orders", "state": state}
        assert value(registry, "resilient_trading_breaker_transitions_total", **labels) == 1
    assert value(registry, "resilient_trading_limiter_pauses_total", limiter="ip") == 1


def test_every_in_process_name_is_documented_and_follows_the_conventions() -> None:
    """Each family EventMetrics registers parses, is in the module's documented table,
    counters end in ``_total``, and labels stay low-cardinality."""
    registry = CollectorRegistry()
    EventMetrics(registry)
    text = generate_latest(registry).decode()
    documented = _metrics.__doc__ or ""
    parsed = list(text_string_to_metric_families(text))
    families = [f for f in parsed if not f.name.endswith("_created")]  # client timestamps
    assert len(families) == 23
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name.startswith("resilient_trading_")
        assert f"``{name}" in documented, f"{name} is not in the documented table"
        for sample in family.samples:
            assert set(sample.labels) <= {"breaker", "error_kind", "state", "limiter", "mode"} | {
                "kind",
                "address",
                "outcome",
                "le",
            }
