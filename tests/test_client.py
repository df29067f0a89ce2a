"""RateLimitedClient: weights, classification, the 429 pause, composition order, idempotency.

Every behaviour runs in both modes (the ``mode`` fixture): the sync and async shells share
one plan (weight, retry, check) and must not drift apart again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import (
    CircuitBreaker,
    CircuitOpenError,
    CriticalError,
    InsufficientFundsError,
    NetworkError,
    RateLimit,
    RateLimitedClient,
    RateLimitedError,
    RateLimiter,
    RetryPolicy,
)
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.testing import ManualClock
from tests._http import http_server

pytestmark = pytest.mark.timeout(60)


class SyncApi:
    """A client whose ``ping`` fails ``fail_next`` times with a reset, then answers."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_next = 0
        self.version = "1.0"
        self.answer: Any = "pong"

    def _ping(self) -> Any:
        self.calls.append("ping")
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionResetError(104, "reset")
        return self.answer

    def ping(self) -> Any:
        return self._ping()

    def batch(self, items: list[int]) -> int:
        self.calls.append("batch")
        return len(items)


class AsyncApi(SyncApi):
    async def ping(self) -> Any:
        await asyncio.sleep(0)
        return self._ping()


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_api(mode: str) -> SyncApi:
    return AsyncApi() if mode == "async" else SyncApi()


def run(mode: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` (a method of the client) in ``mode`` and return its result."""
    if mode == "async":

        async def main() -> Any:
            result = fn()
            assert isinstance(result, Awaitable)
            return await result

        return asyncio.run(main())
    return fn()


def used(limiter: RateLimiter) -> int:
    return limiter.status().windows[0].used


def test_methods_acquire_their_weight_and_attributes_pass_through(mode: str) -> None:
    limiter = RateLimiter(RateLimit(100, 60.0), clock=ManualClock())
    client = RateLimitedClient(
        make_api(mode), limiter=limiter, weights={"ping": 7, "batch": lambda items: len(items)}
    )
    assert client.version == "1.0"
    assert run(mode, client.ping) == "pong"
    assert used(limiter) == 7
    assert client.batch([1, 2, 3]) == 3
    assert used(limiter) == 10
    assert client.weight_of("other") == 1


def test_errors_are_classified_with_the_original_as_cause(mode: str) -> None:
    api = make_api(mode)
    api.fail_next = 1
    client = RateLimitedClient(api, limiter=RateLimiter(RateLimit(100, 60.0)))
    with pytest.raises(NetworkError) as info:
        run(mode, client.ping)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert info.value.operation == f"{type(api).__name__}.ping"


def test_retry_inside_breaker_and_every_attempt_pays(mode: str) -> None:
    clock = ManualClock()
    limiter = RateLimiter(RateLimit(100, 60.0), clock=clock)
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, clock=clock)
    api = make_api(mode)
    api.fail_next = 2
    client = RateLimitedClient(
        api,
        limiter=limiter,
        weights={"ping": 5},
        breaker=breaker,
        retry=RetryPolicy(attempts=3, base_delay=0.1, clock=clock),
    )
    assert run(mode, client.ping) == "pong"  # two failures absorbed by retry
    assert breaker.state == "closed"
    assert used(limiter) == 15  # three attempts, five each
    api.fail_next = 5
    with pytest.raises(NetworkError):
        run(mode, client.ping)  # outlasted retry: one failure for the breaker, which opens
    assert breaker.state == "open"
    spent = used(limiter)
    with pytest.raises(CircuitOpenError):
        run(mode, client.ping)
    assert used(limiter) == spent  # an open breaker refuses at once and spends no budget


def test_idempotency_check_stops_a_second_send(mode: str) -> None:
    """Issue #12: the async path ignored ``idempotency_checks`` and sent twice."""
    clock = ManualClock()
    api = make_api(mode)
    api.fail_next = 1
    checks: list[str] = []

    def check() -> str | None:
        checks.append("asked")
        return "it went through"

    client = RateLimitedClient(
        api,
        limiter=RateLimiter(RateLimit(100, 60.0), clock=clock),
        retry=RetryPolicy(attempts=3, base_delay=0.1, clock=clock),
        idempotency_checks={"ping": check},
    )
    assert run(mode, client.ping) == "it went through"
    assert api.calls == ["ping"]  # sent once
    assert checks == ["asked"]


def test_an_async_check_is_awaited() -> None:
    clock = ManualClock()
    api = AsyncApi()
    api.fail_next = 1

    async def check() -> str | None:
        await asyncio.sleep(0)
        return "found"

    client = RateLimitedClient(
        api,
        limiter=RateLimiter(RateLimit(100, 60.0), clock=clock),
        retry=RetryPolicy(attempts=3, base_delay=0.1, clock=clock),
        idempotency_checks={"ping": check},
    )
    assert asyncio.run(client.ping()) == "found"
    assert api.calls == ["ping"]


@settings(max_examples=25, deadline=None)
@given(
    failures=st.integers(0, 4),
    answers=st.lists(st.sampled_from(["none", "found", "reset"]), min_size=4, max_size=4),
    is_async=st.booleans(),
)
def test_a_call_with_a_check_is_sent_again_only_when_the_check_says_nothing_happened(
    failures: int, answers: list[str], is_async: bool
) -> None:
    """The model: after a failed attempt the check is asked; "found" ends the call with the
    found result, "none" allows one more send, "reset" (the check failed) uses an attempt."""
    mode = "async" if is_async else "sync"
    clock = ManualClock()
    api = make_api(mode)
    api.fail_next = failures
    script = iter(answers)
    asked: list[str] = []

    def check() -> str | None:
        answer = next(script)
        asked.append(answer)
        if answer == "reset":
            raise ConnectionResetError(104, "reset during the check")
        return "found" if answer == "found" else None

    client = RateLimitedClient(
        api,
        limiter=RateLimiter(RateLimit(1000, 60.0), clock=clock),
        retry=RetryPolicy(attempts=5, base_delay=0.01, clock=clock),
        idempotency_checks={"ping": check},
    )
    try:
        result = run(mode, client.ping)
    except NetworkError:
        result = None
    assert (result, len(api.calls)) == _model(failures, answers, attempts=5)


def _model(failures: int, answers: list[str], *, attempts: int) -> tuple[str | None, int]:
    """The reference: send; before each later attempt ask; send again only after "none"."""
    fails, sends = failures, 0

    def send() -> str | None:
        nonlocal fails, sends
        sends += 1
        if fails:
            fails -= 1
            return None
        return "pong"

    result = send()
    script = iter(answers)
    for _ in range(attempts - 1):
        if result is not None:
            break
        answer = next(script)
        if answer == "found":
            return "found", sends
        if answer == "none":
            result = send()
    return result, sends


def test_response_check_turns_an_error_answer_into_an_exception(mode: str) -> None:
    api = make_api(mode)
    api.answer = {"status": "err", "response": "Insufficient margin to place order."}
    client = RateLimitedClient(
        api, limiter=RateLimiter(hl.REST_LIMIT), response_check=hl.check_response
    )
    with pytest.raises(InsufficientFundsError):
        run(mode, client.ping)


def test_a_429_pauses_every_sharer_for_retry_after(tmp_path: Path) -> None:
    counter = itertools.count()

    def respond(_: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if next(counter) == 0:
            return 429, {"Retry-After": "2"}, b"slow down"
        return 200, {}, b"ok"

    class Http:
        def __init__(self, url: str) -> None:
            self.url = url

        def get(self) -> str:
            response = requests.get(self.url, timeout=5)
            response.raise_for_status()
            return response.text

    state = tmp_path / "budget.json"
    mine = RateLimiter(RateLimit(100, 60.0), state_path=state)
    theirs = RateLimiter(RateLimit(100, 60.0), state_path=state)
    with http_server(respond) as url:
        client = RateLimitedClient(Http(url), limiter=mine)
        with pytest.raises(RateLimitedError) as info:
            client.get()
        assert info.value.retry_after == 2.0
        assert not theirs.try_acquire()  # the other process's limiter sees the pause
        paused = theirs.status().paused_until
        assert paused is not None
        assert client.get() == "ok"  # waits out the pause, then succeeds


def test_a_429_without_retry_after_uses_the_default_pause(mode: str) -> None:
    from hyperliquid.utils.error import ClientError

    class Info:
        def all_mids(self) -> None:
            raise ClientError(429, None, "null", None, {"Content-Type": "application/json"})

    class AsyncInfo:
        async def all_mids(self) -> None:
            raise ClientError(429, None, "null", None, {"Content-Type": "application/json"})

    clock = ManualClock(1000.0)
    limiter = RateLimiter(hl.REST_LIMIT, clock=clock)
    client = hl.wrap_info(AsyncInfo() if mode == "async" else Info(), limiter, default_pause=7.0)
    with pytest.raises(RateLimitedError):
        run(mode, client.all_mids)
    assert limiter.status().paused_until == pytest.approx(1007.0)


def test_a_critical_error_is_never_retried(mode: str) -> None:
    clock = ManualClock()
    api = make_api(mode)

    def refuse() -> Any:
        api.calls.append("ping")
        raise CriticalError("refused")

    api._ping = refuse  # type: ignore[method-assign]
    client = RateLimitedClient(
        api,
        limiter=RateLimiter(RateLimit(100, 60.0), clock=clock),
        retry=RetryPolicy(attempts=5, base_delay=0.1, clock=clock),
    )
    with pytest.raises(CriticalError):
        run(mode, client.ping)
    assert api.calls == ["ping"]


def test_bad_client_arguments() -> None:
    limiter = RateLimiter(RateLimit(10, 1.0))
    with pytest.raises(TypeError):
        RateLimitedClient(SyncApi(), limiter="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RateLimitedClient(SyncApi(), limiter=limiter, weights={"ping": "heavy"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        RateLimitedClient(SyncApi(), limiter=limiter, default_pause=0)
    with pytest.raises(ValueError):
        RateLimitedClient(SyncApi(), limiter=limiter, weights={"ping": lambda: -1}).ping()


def test_a_failed_charge_after_the_call_never_replaces_its_result(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Charging per-item weight is bookkeeping after the call: when it fails, the caller still
    gets the result (an error would make a retry send the call again), and the failure is
    logged."""

    def broken(result: Any) -> int:
        raise OSError("the budget's disk is full")

    api = make_api(mode)
    client = RateLimitedClient(
        api, limiter=RateLimiter(RateLimit(100, 60.0)), extra_weights={"ping": broken}
    )
    with caplog.at_level("ERROR", logger="resilient_trading.client"):
        assert run(mode, client.ping) == "pong"
    assert "charging the per-item weight failed" in caplog.text
