"""RateLimitedClient: weights, classification, the 429 pause, composition order, presets."""

from __future__ import annotations

import asyncio
import itertools
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from resilient_trading import (
    CircuitBreaker,
    CircuitOpenError,
    NetworkError,
    RateLimit,
    RateLimitedClient,
    RateLimitedError,
    RateLimiter,
    RetryPolicy,
)
from resilient_trading._clock import ManualClock
from resilient_trading.presets import hyperliquid as hl
from tests._http import http_server

pytestmark = pytest.mark.timeout(60)


class Api:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_next = 0
        self.version = "1.0"

    def ping(self) -> str:
        self.calls.append("ping")
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionResetError(104, "reset")
        return "pong"

    def batch(self, items: list[int]) -> int:
        self.calls.append("batch")
        return len(items)

    async def aping(self) -> str:
        self.calls.append("aping")
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionResetError(104, "reset")
        return "apong"


def used(limiter: RateLimiter) -> int:
    return limiter.status().windows[0].used


def test_methods_acquire_their_weight_and_attributes_pass_through() -> None:
    limiter = RateLimiter(RateLimit(100, 60.0), clock=ManualClock())
    client = RateLimitedClient(
        Api(), limiter=limiter, weights={"ping": 7, "batch": lambda items: len(items)}
    )
    assert client.version == "1.0"
    assert client.ping() == "pong"
    assert used(limiter) == 7
    assert client.batch([1, 2, 3]) == 3
    assert used(limiter) == 10
    assert client.weight_of("other") == 1


def test_errors_are_classified_with_the_original_as_cause() -> None:
    api = Api()
    api.fail_next = 1
    client = RateLimitedClient(api, limiter=RateLimiter(RateLimit(100, 60.0)))
    with pytest.raises(NetworkError) as info:
        client.ping()
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert info.value.operation == "Api.ping"


def test_retry_inside_breaker_and_every_attempt_pays() -> None:
    clock = ManualClock()
    limiter = RateLimiter(RateLimit(100, 60.0), clock=clock)
    breaker = CircuitBreaker(fail_max=1, reset_timeout=30.0, clock=clock)
    api = Api()
    api.fail_next = 2
    client = RateLimitedClient(
        api,
        limiter=limiter,
        weights={"ping": 5},
        breaker=breaker,
        retry=RetryPolicy(attempts=3, base_delay=0.1, clock=clock),
    )
    assert client.ping() == "pong"  # two failures absorbed by retry: the breaker never saw them
    assert breaker.state == "closed"
    assert used(limiter) == 15  # three attempts, five each
    api.fail_next = 5
    with pytest.raises(NetworkError):
        client.ping()  # outlasted retry: one failure for the breaker, which opens (fail_max=1)
    assert breaker.state == "open"
    spent = used(limiter)
    with pytest.raises(CircuitOpenError):
        client.ping()
    assert used(limiter) == spent  # an open breaker refuses at once and spends no budget


def test_idempotency_check_stops_a_second_send() -> None:
    clock = ManualClock()
    api = Api()
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
    assert client.ping() == "it went through"
    assert api.calls == ["ping"]
    assert checks == ["asked"]


def test_response_check_turns_an_error_answer_into_an_exception() -> None:
    class Exchange:
        def order(self) -> dict[str, Any]:
            return {"status": "err", "response": "Insufficient margin to place order."}

    client = hl.wrap_exchange(Exchange(), RateLimiter(hl.REST_LIMIT))
    from resilient_trading import InsufficientFundsError

    with pytest.raises(InsufficientFundsError):
        client.order()


def test_async_methods_are_guarded_too() -> None:
    clock = ManualClock()
    limiter = RateLimiter(RateLimit(100, 60.0), clock=clock)
    api = Api()
    api.fail_next = 1
    client = RateLimitedClient(
        api,
        limiter=limiter,
        weights={"aping": 4},
        breaker=CircuitBreaker(clock=clock),
        retry=RetryPolicy(attempts=2, base_delay=0.1, clock=clock),
    )
    assert asyncio.run(client.aping()) == "apong"
    assert used(limiter) == 8


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


def test_a_429_without_retry_after_uses_the_default_pause() -> None:
    from hyperliquid.utils.error import ClientError

    class Info:
        def all_mids(self) -> None:
            raise ClientError(429, None, "null", None, {"Content-Type": "application/json"})

    clock = ManualClock(1000.0)
    limiter = RateLimiter(hl.REST_LIMIT, clock=clock)
    client = hl.wrap_info(Info(), limiter, default_pause=7.0)
    with pytest.raises(RateLimitedError):
        client.all_mids()
    assert limiter.status().paused_until == pytest.approx(1007.0)


def test_bad_client_arguments() -> None:
    limiter = RateLimiter(RateLimit(10, 1.0))
    with pytest.raises(TypeError):
        RateLimitedClient(Api(), limiter="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RateLimitedClient(Api(), limiter=limiter, weights={"ping": "heavy"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        RateLimitedClient(Api(), limiter=limiter, default_pause=0)
    with pytest.raises(ValueError):
        RateLimitedClient(Api(), limiter=limiter, weights={"ping": lambda: -1}).ping()


# --- the Hyperliquid preset -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_type", "weight"),
    [
        ("l2Book", 2),
        ("allMids", 2),
        ("clearinghouseState", 2),
        ("orderStatus", 2),
        ("spotClearinghouseState", 2),
        ("exchangeStatus", 2),
        ("userRole", 60),
        ("meta", 20),
        ("openOrders", 20),
        ("candleSnapshot", 20),
    ],
)
def test_documented_info_weights(request_type: str, weight: int) -> None:
    assert hl.info_weight(request_type) == weight


def test_documented_extra_and_exchange_weights() -> None:
    assert hl.items_weight("candleSnapshot", 119) == 1
    assert hl.items_weight("candleSnapshot", 120) == 2
    assert hl.items_weight("userFills", 40) == 2
    assert hl.items_weight("meta", 1000) == 0
    assert hl.exchange_weight(1) == 1
    assert hl.exchange_weight(39) == 1
    assert hl.exchange_weight(40) == 2
    assert hl.exchange_weight(79) == 2
    assert RateLimit(1200, 60.0) == hl.REST_LIMIT
    assert hl.rest_limit(0.05).budget == 1140


def test_preset_maps_sdk_methods_and_charges_items_after_the_answer() -> None:
    class Info:
        def candles_snapshot(self, name: str, interval: str, start: int, end: int) -> list[int]:
            return list(range(130))

        def all_mids(self) -> dict[str, str]:
            return {"BTC": "1"}

    limiter = RateLimiter(hl.REST_LIMIT, clock=ManualClock())
    info = hl.wrap_info(Info(), limiter)
    info.all_mids()
    assert used(limiter) == 2
    info.candles_snapshot("BTC", "1m", 0, 1)
    assert used(limiter) == 2 + 20 + 2

    class Exchange:
        def bulk_orders(self, orders: list[int]) -> dict[str, str]:
            return {"status": "ok"}

    ex = hl.wrap_exchange(Exchange(), limiter)
    ex.bulk_orders(list(range(80)))
    assert used(limiter) == 24 + 3
