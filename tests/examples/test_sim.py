"""The exchange simulator, driven by the unmodified Hyperliquid SDK over real HTTP."""

from __future__ import annotations

import itertools
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

from resilient_trading import (
    ExchangeUnavailableError,
    NetworkError,
    NonceError,
    RateLimitedError,
    RequestTimeoutError,
    classify,
    classify_response,
)
from resilient_trading.testing import FaultConfig, Simulator
from resilient_trading.testing._engine import round_px, valid_px

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
            "resilient_trading.testing",
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
    from resilient_trading.testing._server import _Budget

    clock = FakeClock()
    budget = _Budget(200, 60.0, clock)
    admitted: list[tuple[float, int]] = []
    for weight, gap in zip(weights, gaps, strict=False):
        clock.now += gap
        if budget.spend("1.2.3.4", weight):
            admitted.append((clock.now, weight))
    for t, _ in admitted:
        assert sum(w for t2, w in admitted if t <= t2 < t + 60.0) <= 200


def test_modify_replaces_an_open_order_and_refuses_a_closed_one(
    sim: Simulator, wallet: Any
) -> None:
    info = Info(sim.base_url, skip_ws=True)
    ex = Exchange(wallet, sim.base_url)
    px = int(mid(info) * 0.8)
    cloid = Cloid.from_int(99)
    placed = ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}}, cloid=cloid)
    oid = placed["response"]["data"]["statuses"][0]["resting"]["oid"]
    moved = ex.modify_order(
        cloid, "BTC", True, 0.002, px - 100, {"limit": {"tif": "Gtc"}}, cloid=cloid
    )
    new_oid = moved["response"]["data"]["statuses"][0]["resting"]["oid"]
    assert new_oid != oid
    assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "canceled"
    found = info.query_order_by_cloid(wallet.address, cloid)["order"]
    assert (found["order"]["oid"], found["order"]["limitPx"]) == (new_oid, str(px - 100))
    again = ex.modify_order(oid, "BTC", True, 0.002, px, {"limit": {"tif": "Gtc"}})
    assert again["response"]["data"]["statuses"][0] == {
        "error": "Cannot modify canceled or filled order"
    }


def test_forced_faults_hit_only_the_requests_they_name(wallet: Any) -> None:
    faults = FaultConfig(stall_seconds=0.5)
    with Simulator(seed=3, accounts={wallet.address: 10_000.0}, faults=faults) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url, timeout=0.2)
        faults.force("stale_status", only="orderStatus")
        faults.force("http_502_after", only="order")
        info.all_mids()  # not named: untouched
        assert faults.pending() == 2
        px = int(mid(info) * 0.8)
        with pytest.raises(ServerError):
            ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}}, cloid=Cloid.from_int(5))
        assert sim.snapshot()["orders_placed"] == 1  # applied before the 502
        lagging = info.query_order_by_cloid(wallet.address, Cloid.from_int(5))
        assert lagging == {"status": "unknownOid"}  # the stale read
        assert info.query_order_by_cloid(wallet.address, Cloid.from_int(5))["status"] == "order"
        faults.force("stall_after", only="/exchange")
        with pytest.raises(requests.exceptions.Timeout):
            ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
        assert sim.snapshot()["orders_placed"] == 2
        with pytest.raises(ValueError):
            faults.force("meteor")


# --- issue #14: account limits and fidelity --------------------------------------------------


def _gtc(ex: Exchange, px: float, sz: float = 0.001, *, buy: bool = True) -> dict[str, Any]:
    return dict(ex.order("BTC", buy, sz, round(px), {"limit": {"tif": "Gtc"}}))


def _statuses(answer: dict[str, Any]) -> list[Any]:
    return list(answer["response"]["data"]["statuses"])


def test_address_budget_refuses_past_the_cap_with_the_exchanges_text() -> None:
    wallet = eth_account.Account.create()
    clock = FakeClock()
    with Simulator(seed=1, clock=clock, auto_fund=10_000, address_buffer=4) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url)
        px = mid(info) * 0.5
        oids = [_statuses(_gtc(ex, px))[0]["resting"]["oid"] for _ in range(2)]
        batch = ex.bulk_orders(  # a batch of 2 counts 2: 4 used of 4
            [
                {
                    "coin": "BTC",
                    "is_buy": True,
                    "sz": 0.001,
                    "limit_px": round(px),
                    "order_type": {"limit": {"tif": "Gtc"}},
                    "reduce_only": False,
                }
            ]
            * 2
        )
        assert batch["status"] == "ok"
        limits = info.user_rate_limit(wallet.address)
        assert limits == {
            "cumVlm": "0",
            "nRequestsUsed": 4,
            "nRequestsCap": 4,
            "nRequestsSurplus": 0,
        }
        first = _gtc(ex, px)  # over the cap: one request per 10 s still goes through
        assert first["status"] == "ok"
        refused = _gtc(ex, px)
        assert refused == {
            "status": "err",
            "response": "Too many cumulative requests sent (6 > 4) for cumulative volume "
            "traded $0.00.",
        }
        err = classify_response(refused)
        assert isinstance(err, RateLimitedError)
        assert (err.source, err.retry_after) == ("address", 10.0)
        # cancels have their own allowance: min(cap + 100000, 2 * cap) = 8
        assert ex.cancel("BTC", oids[0])["status"] == "ok"
        clock.now += 10.5
        assert _gtc(ex, px)["status"] == "ok"  # the next 10 s slot
        assert sim.snapshot()["address_refusals"] == 1
        assert info.user_rate_limit(wallet.address)["nRequestsUsed"] == 7


def test_volume_traded_raises_the_cap_one_per_usdc() -> None:
    wallet = eth_account.Account.create()
    with Simulator(seed=1, auto_fund=10_000, address_buffer=10) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url)
        answer = ex.market_open("BTC", True, 0.01)
        filled = _statuses(answer)[0]["filled"]
        traded = float(filled["totalSz"]) * float(filled["avgPx"])
        limits = info.user_rate_limit(wallet.address)
        assert limits["nRequestsCap"] == 10 + int(traded)
        assert float(limits["cumVlm"]) == pytest.approx(traded)
        sim.credit_volume(wallet.address, 1000)
        assert info.user_rate_limit(wallet.address)["nRequestsCap"] == 1010 + int(traded)


def test_schedule_cancel_refused_below_a_million_of_volume() -> None:
    wallet = eth_account.Account.create()
    with Simulator(seed=1, auto_fund=10_000) as sim:
        ex = Exchange(wallet, sim.base_url)
        answer = ex.schedule_cancel(int(time.time() * 1000) + 60_000)
        assert answer == {
            "status": "err",
            "response": "Cannot set scheduled cancel time until enough volume traded. "
            "Required: $1000000. Traded: $0.00.",
        }


def test_schedule_cancel_fires_at_its_time_5s_minimum_10_triggers_a_day() -> None:
    wallet = eth_account.Account.create()
    clock = FakeClock()
    with Simulator(seed=1, clock=clock, auto_fund=10_000, schedule_cancel_volume=0) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url)
        px = mid(info) * 0.5
        now_ms = int(clock.now * 1000)
        assert ex.schedule_cancel(now_ms + 4_000)["status"] == "err"  # under 5 s ahead
        for _ in range(10):
            _gtc(ex, px)
            assert ex.schedule_cancel(int(clock.now * 1000) + 6_000) == {
                "status": "ok",
                "response": {"type": "default"},
            }
            assert len(info.open_orders(wallet.address)) == 1
            clock.now += 6.5
            assert info.open_orders(wallet.address) == []  # fired: all orders cancelled
        assert ex.schedule_cancel(int(clock.now * 1000) + 6_000)["status"] == "err"  # 10 today
        assert sim.snapshot()["scheduled_cancels_fired"] == 10
        # a disarmed switch never fires
        clock.now += 86_400
        _gtc(ex, px)
        assert ex.schedule_cancel(int(clock.now * 1000) + 6_000)["status"] == "ok"
        assert ex.schedule_cancel(None)["status"] == "ok"
        clock.now += 10
        assert len(info.open_orders(wallet.address)) == 1


def test_expires_after_in_the_past_is_refused_and_classified_as_a_nonce_problem(
    sim: Simulator, wallet: Any
) -> None:
    ex = Exchange(wallet, sim.base_url)
    ex.set_expires_after(int(time.time() * 1000) - 1_000)
    answer = ex.update_leverage(5, "BTC")
    assert answer["status"] == "err"
    assert "already expired" in answer["response"]
    assert isinstance(classify_response(answer), NonceError)
    ex.set_expires_after(int(time.time() * 1000) + 60_000)
    assert ex.update_leverage(5, "BTC")["status"] == "ok"


def test_reduce_only_shrinks_to_the_position_and_never_flips(sim: Simulator, wallet: Any) -> None:
    info = Info(sim.base_url, skip_ws=True)
    ex = Exchange(wallet, sim.base_url)
    ex.market_open("SOL", True, 0.5)
    px = float(info.all_mids()["SOL"])
    answer = ex.order("SOL", False, 2.0, round(px * 0.9, 2), {"limit": {"tif": "Ioc"}}, True)
    assert _statuses(answer)[0]["filled"]["totalSz"] == "0.5"
    assert info.user_state(wallet.address)["assetPositions"] == []


def test_only_a_full_reduce_only_close_is_exempt_from_the_ten_dollar_minimum(
    sim: Simulator, wallet: Any
) -> None:
    info = Info(sim.base_url, skip_ws=True)
    ex = Exchange(wallet, sim.base_url)
    ex.market_open("SOL", True, 0.1)  # about $15
    px = float(info.all_mids()["SOL"])
    partial = ex.order("SOL", False, 0.05, round(px * 0.9, 2), {"limit": {"tif": "Ioc"}}, True)
    assert "minimum value of $10" in _statuses(partial)[0]["error"]
    full = ex.order("SOL", False, 0.1, round(px * 0.9, 2), {"limit": {"tif": "Ioc"}}, True)
    assert "filled" in _statuses(full)[0]


def test_every_422_is_text_plain_like_the_exchanges(sim: Simulator) -> None:
    for path, body in (
        ("/info", b"not json"),
        ("/info", b'{"type": "noSuchInfo"}'),
        ("/exchange", b'{"action": {"type": "noSuchAction"}, "nonce": 1, "signature": {}}'),
    ):
        res = requests.post(sim.base_url + path, data=body, timeout=5)
        assert res.status_code == 422
        assert res.headers["Content-Type"].startswith("text/plain")
        assert res.text == "Failed to deserialize the JSON body into the target type"
    with pytest.raises(ClientError) as exc:  # what the SDK makes of it
        Info(sim.base_url, skip_ws=True).post("/info", {"type": "noSuchInfo"})
    assert exc.value.status_code == 422


def test_open_order_limit_and_cancel_batch_cap() -> None:
    wallet = eth_account.Account.create()
    with Simulator(seed=1, auto_fund=10_000, max_open_orders=3) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url)
        px = mid(info) * 0.5
        oids = [_statuses(_gtc(ex, px))[0]["resting"]["oid"] for _ in range(3)]
        assert "Too many open orders" in _statuses(_gtc(ex, px))[0]["error"]
        over = [{"coin": "BTC", "oid": oids[0]}] * 201
        assert ex.bulk_cancel(over) == {
            "status": "err",
            "response": "Signed action over weight limit of 200.",
        }
        assert ex.bulk_cancel([{"coin": "BTC", "oid": oid} for oid in oids])["status"] == "ok"
    assert Simulator().engine.max_open_orders == 1000  # the exchange's default


def test_order_status_forgets_the_oldest_closed_orders() -> None:
    wallet = eth_account.Account.create()
    with Simulator(seed=1, auto_fund=10_000, order_retention=3) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = Exchange(wallet, sim.base_url)
        px = mid(info) * 0.5
        oids = [_statuses(_gtc(ex, px))[0]["resting"]["oid"] for _ in range(5)]
        # all five are open: open orders are never forgotten
        assert all(info.query_order_by_oid(wallet.address, o)["status"] == "order" for o in oids)
        ex.bulk_cancel([{"coin": "BTC", "oid": oid} for oid in oids])
        _gtc(ex, px)
        known = [info.query_order_by_oid(wallet.address, o)["status"] for o in oids]
        assert known == ["unknownOid", "unknownOid", "unknownOid", "order", "order"]
    assert Simulator().engine.order_retention == 2000


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 5), st.booleans(), st.floats(0, 12)), min_size=1, max_size=40
    ),
    buffer=st.integers(1, 20),
)
def test_address_budget_model_never_lets_more_through_than_the_rules(
    steps: list[tuple[int, bool, float]], buffer: int
) -> None:
    """Over the cap, no two accepted requests are under 10 s apart; under it, all pass."""
    from resilient_trading.testing._engine import Account, Engine

    clock = FakeClock()
    engine = Engine(
        seed=0, speed=1, clock=clock, accounts=None, auto_fund=None, address_buffer=buffer
    )
    acct = Account("0xabc", 0.0)
    over_times: list[float] = []
    for n, cancel, dt in steps:
        clock.now += dt
        before = acct.n_requests
        limit = min(buffer + 100_000, 2 * buffer) if cancel else buffer
        refusal = engine.charge_address(acct, n, cancel=cancel)
        if before + n <= limit:
            assert refusal is None
        elif refusal is None:
            over_times.append(clock.now)
        else:
            assert refusal.startswith(f"Too many cumulative requests sent ({before + n} > ")
            assert acct.n_requests == before  # a refused action is not counted
    assert all(b - a >= 10 - 1e-3 for a, b in itertools.pairwise(over_times))
