"""The exchange simulator, driven by the unmodified Hyperliquid SDK over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import eth_account
import pytest
import requests
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.error import ClientError, ServerError
from hyperliquid.utils.types import Cloid
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.hl_sim import FaultConfig, Simulator
from examples.hl_sim._engine import round_px, valid_px
from resilient_trading import (
    ExchangeUnavailableError,
    NetworkError,
    NonceError,
    RateLimitedError,
    RequestTimeoutError,
    classify,
    classify_response,
)

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wallet() -> Any:
    return eth_account.Account.create()


@pytest.fixture
def sim(wallet: Any) -> Iterator[Simulator]:
    with Simulator(seed=3, speed=60, accounts={wallet.address: 10_000.0}) as s:
        yield s


def mid(info: Info, coin: str = "BTC") -> float:
    return float(info.all_mids()[coin])


def test_meta_mids_candles_and_user_state(sim: Simulator, wallet: Any) -> None:
    info = Info(sim.base_url, skip_ws=True)
    names = [a["name"] for a in info.meta()["universe"]]
    assert names == ["BTC", "ETH", "SOL"]
    assert set(info.all_mids()) == {"BTC", "ETH", "SOL"}
    now = int(time.time() * 1000)
    candles = info.candles_snapshot("ETH", "1m", now - 30 * 60_000, now)
    assert len(candles) >= 30
    for c in candles:
        assert float(c["l"]) <= min(float(c["o"]), float(c["c"])) <= float(c["h"])
    state = info.user_state(wallet.address)
    assert state["marginSummary"]["accountValue"] == "10000"
    assert info.l2_snapshot("BTC")["levels"][0]


def test_place_query_cancel_by_cloid_and_fills_move_position_and_margin(
    sim: Simulator, wallet: Any
) -> None:
    info = Info(sim.base_url, skip_ws=True)
    ex = Exchange(wallet, sim.base_url)
    px = mid(info)
    entry = Cloid.from_int(1)
    res = ex.order("BTC", True, 0.02, round(px * 1.01), {"limit": {"tif": "Ioc"}}, cloid=entry)
    assert "filled" in res["response"]["data"]["statuses"][0]
    state = info.user_state(wallet.address)
    assert state["assetPositions"][0]["position"]["szi"] == "0.02"
    assert float(state["marginSummary"]["totalMarginUsed"]) > 0
    assert info.query_order_by_cloid(wallet.address, entry)["order"]["status"] == "filled"
    assert len(info.user_fills(wallet.address)) == 1
    resting = Cloid.from_int(2)
    res = ex.order(
        "BTC",
        False,
        0.02,
        round(px * 1.5),
        {"limit": {"tif": "Gtc"}},
        reduce_only=True,
        cloid=resting,
    )
    assert "resting" in res["response"]["data"]["statuses"][0]
    assert [o["cloid"] for o in info.open_orders(wallet.address)] == [str(resting)]
    assert ex.cancel_by_cloid("BTC", resting)["response"]["data"]["statuses"] == ["success"]
    assert info.open_orders(wallet.address) == []
    assert info.query_order_by_cloid(wallet.address, resting)["order"]["status"] == "canceled"
    assert info.query_order_by_cloid(wallet.address, Cloid.from_int(99))["status"] == "unknownOid"


def test_exchange_rules_refuse_like_the_real_one(sim: Simulator, wallet: Any) -> None:
    info = Info(sim.base_url, skip_ws=True)
    ex = Exchange(wallet, sim.base_url)
    px = mid(info)

    def error_of(res: dict[str, Any]) -> str:
        return str(res["response"]["data"]["statuses"][0]["error"])

    assert "minimum value of $10" in error_of(
        ex.order("BTC", True, 0.0001, round(px), {"limit": {"tif": "Gtc"}})
    )
    assert "Insufficient margin" in error_of(
        ex.order("BTC", True, 9.0, round(px), {"limit": {"tif": "Gtc"}})
    )
    assert "could not immediately match" in error_of(
        ex.order("BTC", True, 0.01, round(px * 0.9), {"limit": {"tif": "Ioc"}})
    )
    raw = ex.order("BTC", True, 0.01, round(px) + 0.5, {"limit": {"tif": "Gtc"}})
    assert "tick size" in error_of(raw)
    assert ex.update_leverage(100, "BTC")["status"] == "err"
    assert ex.update_leverage(5, "BTC")["status"] == "ok"
    cl = Cloid.from_int(5)
    ex.order("BTC", True, 0.01, round(px * 0.5), {"limit": {"tif": "Gtc"}}, cloid=cl)
    assert "Duplicate cloid" in error_of(
        ex.order("BTC", True, 0.01, round(px * 0.5), {"limit": {"tif": "Gtc"}}, cloid=cl)
    )
    assert sim.snapshot()["duplicate_cloids"] == 1
    err = classify_response(ex.order("BTC", True, 9.0, round(px), {"limit": {"tif": "Gtc"}}))
    assert type(err).__name__ == "InsufficientFundsError"


def test_wrong_signer_and_duplicate_nonce_are_refused(sim: Simulator, wallet: Any) -> None:
    stranger = eth_account.Account.create()
    res = Exchange(stranger, sim.base_url).update_leverage(5, "BTC")
    assert res == {
        "status": "err",
        "response": f"User or API Wallet {stranger.address.lower()} does not exist.",
    }
    import hyperliquid.exchange as hx

    fixed = int(time.time() * 1000)
    original = hx.get_timestamp_ms
    hx.get_timestamp_ms = lambda: fixed  # two signings in the same millisecond
    try:
        ex = Exchange(wallet, sim.base_url)
        assert ex.update_leverage(5, "BTC")["status"] == "ok"
        dup = ex.update_leverage(6, "BTC")
    finally:
        hx.get_timestamp_ms = original
    assert dup == {"status": "err", "response": f"Invalid nonce: duplicate nonce {fixed}"}
    assert isinstance(classify_response(dup), NonceError)


def test_the_ip_weight_budget_answers_429_null_and_slides() -> None:
    clock = FakeClock()
    with Simulator(seed=1, clock=clock, budget=1200, window=60.0) as sim:
        info = Info(sim.base_url, skip_ws=True)  # spotMeta + meta: 40
        for _ in range(58):
            info.meta()  # 20 each: 40 + 1160 = 1200
        with pytest.raises(ClientError) as exc:
            info.meta()
        assert exc.value.status_code == 429
        assert exc.value.error_message == "null"
        assert isinstance(classify(exc.value), RateLimitedError)
        clock.now += 30
        with pytest.raises(ClientError):  # still inside the same window
            info.all_mids()
        clock.now += 31
        assert info.all_mids()  # the window slid past the burst
        assert sim.snapshot()["http_429"] == 2


def test_budget_frees_as_the_window_slides() -> None:
    clock = FakeClock()
    with Simulator(seed=1, clock=clock, budget=100, window=60.0) as sim:
        info = Info(sim.base_url, skip_ws=True)  # 40
        info.meta()
        info.meta()  # 80
        info.meta()  # 100
        with pytest.raises(ClientError):
            info.meta()
        clock.now += 61
        assert info.meta()["universe"]
        assert sim.snapshot()["http_429"] == 1


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("reset", NetworkError),
        ("http_502", ExchangeUnavailableError),
        ("http_503", ExchangeUnavailableError),
        ("stall", RequestTimeoutError),
    ],
)
def test_each_fault_is_what_the_sdk_sees_in_production(
    kind: str, expected: type[Exception], wallet: Any
) -> None:
    faults = FaultConfig(stall_seconds=2.0)
    with Simulator(seed=1, faults=faults, accounts={wallet.address: 1e4}) as sim:
        info = Info(sim.base_url, skip_ws=True, timeout=0.5)
        faults.force(kind)
        with pytest.raises((requests.RequestException, ServerError)) as exc:
            info.all_mids()
        assert isinstance(classify(exc.value), expected)
        assert info.all_mids()  # the next request is fine
        assert sim.snapshot()["faults"][kind] == 1


def test_malformed_body_reaches_the_sdk_as_its_parse_error_dict(wallet: Any) -> None:
    faults = FaultConfig()
    with Simulator(seed=1, faults=faults) as sim:
        info = Info(sim.base_url, skip_ws=True)
        faults.force("malformed")
        answer = info.all_mids()
        assert "Could not parse JSON" in answer["error"]
        assert isinstance(classify_response(answer), ExchangeUnavailableError)


def test_lost_response_applies_the_order_but_the_client_sees_a_reset(wallet: Any) -> None:
    faults = FaultConfig()
    with Simulator(seed=1, faults=faults, accounts={wallet.address: 1e4}) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url)
        cl = Cloid.from_int(42)
        faults.force("lost_response")
        with pytest.raises(requests.ConnectionError) as exc:
            ex.order("BTC", True, 0.01, round(mid(info) * 0.5), {"limit": {"tif": "Gtc"}}, cloid=cl)
        assert isinstance(classify(exc.value), NetworkError)
        assert info.query_order_by_cloid(wallet.address, cl)["order"]["status"] == "open"


def test_same_seed_same_prices_and_fills(wallet: Any) -> None:
    base = float(int(time.time()))

    def run() -> tuple[list[Any], Any]:
        clock = FakeClock()
        clock.now = base
        with Simulator(seed=9, speed=60, clock=clock, accounts={wallet.address: 1e4}) as sim:
            info = Info(sim.base_url, skip_ws=True)
            start_ms = int(base * 1000)
            candles = info.candles_snapshot("SOL", "1m", start_ms - 3_600_000, start_ms)
            clock.now += 30
            ex = Exchange(wallet, sim.base_url)
            px = float(info.all_mids()["SOL"])
            res = ex.order("SOL", True, 1.0, round_px(px * 1.01, 2), {"limit": {"tif": "Ioc"}})
            return candles, res["response"]["data"]["statuses"]

    assert run() == run()


def test_counters_endpoint_and_command_line() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.hl_sim",
            "--port",
            "0",
            "--seed",
            "2",
            "--fault-rate",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        Info(url, skip_ws=True).all_mids()
        counters = requests.post(url + "/info", json={"type": "simCounters"}, timeout=5).json()
        assert counters["requests"] == 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert json.loads(out.strip().splitlines()[-1])["requests"] == 3


@settings(max_examples=50, deadline=None)
@given(price=st.floats(min_value=0.001, max_value=200_000), decimals=st.integers(0, 5))
def test_rounded_prices_are_always_valid(price: float, decimals: int) -> None:
    assert valid_px(round_px(price, decimals), decimals)


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.sampled_from([2, 20, 60]), min_size=1, max_size=120),
    gaps=st.lists(st.floats(0, 5), min_size=120, max_size=120),
)
def test_budget_never_lets_more_than_the_limit_through_any_window(
    weights: list[int], gaps: list[float]
) -> None:
    from examples.hl_sim._server import _Budget

    clock = FakeClock()
    budget = _Budget(200, 60.0, clock)
    admitted: list[tuple[float, int]] = []
    for weight, gap in zip(weights, gaps, strict=False):
        clock.now += gap
        if budget.spend("1.2.3.4", weight):
            admitted.append((clock.now, weight))
    for t, _ in admitted:
        assert sum(w for t2, w in admitted if t <= t2 < t + 60.0) <= 200
