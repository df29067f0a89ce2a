"""The default ``wrap_exchange`` never doubles an order: the real SDK against the simulator.

Every order path (order, bulk_orders, modify_order, bulk_modify_orders_new, cancel,
cancel_by_cloid, bulk_cancel, bulk_cancel_by_cloid, market_open, market_close), sync and
async, meets a lost answer, a timeout after the action was applied and a 502 after it was
applied (and, for the single order, every other fault kind): each intended order exists
exactly once on the exchange, the call returns what happened, and the breaker stays closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilient_trading import RetryPolicy
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.testing import FaultConfig, Simulator
from tests._exchange_rig import TIMEOUT, Rig, fast_retry, make_rig

pytestmark = pytest.mark.timeout(120)

AFTER_FAULTS = ("lost_response", "stall_after", "http_502_after")
BEFORE_FAULTS = ("stall", "reset", "http_503", "malformed")


@pytest.fixture(scope="module")
def faults() -> FaultConfig:
    return FaultConfig(stall_seconds=3 * TIMEOUT)


@pytest.fixture(scope="module")
def sim(faults: FaultConfig) -> Iterator[Simulator]:
    with Simulator(seed=5, speed=1, faults=faults, auto_fund=100_000.0, budget=10**9) as s:
        yield s


@pytest.fixture
def rig(sim: Simulator, faults: FaultConfig) -> Iterator[Rig]:
    yield make_rig(sim, faults, fast_retry())
    faults._forced.clear()


@pytest.fixture
def plain_rig(sim: Simulator, faults: FaultConfig) -> Iterator[Rig]:
    """Wrapped with no retry policy: ``wrap_exchange(raw, limiter, breaker=...)``."""
    yield make_rig(sim, faults, None)
    faults._forced.clear()


def gtc(rig: Rig, *, frac: float = 0.8, sz: float = 0.001) -> dict[str, Any]:
    return {
        "coin": "BTC",
        "is_buy": True,
        "sz": sz,
        "limit_px": int(rig.mid() * frac),
        "order_type": {"limit": {"tif": "Gtc"}},
        "reduce_only": False,
    }


def place(rig: Rig, count: int) -> list[int]:
    """Orders placed without faults (the setup of cancel and modify cases)."""
    answer = rig.raw.bulk_orders([gtc(rig, frac=0.8 - 0.01 * i) for i in range(count)])
    return [s["resting"]["oid"] for s in answer["response"]["data"]["statuses"]]


def kinds(answer: Any) -> list[str]:
    return [o.kind for o in hl.outcomes(answer)]


# --- each path: set up, call under a fault, check the exchange ------------------------------

Case = Callable[[Rig, str], None]


def case_order(rig: Rig, mode: str) -> None:
    req = gtc(rig)
    answer = rig.call(mode, "order", "BTC", True, req["sz"], req["limit_px"], req["order_type"])
    assert kinds(answer) == ["resting"]
    assert [o.status for o in rig.orders()] == ["open"]


def case_bulk_orders(rig: Rig, mode: str) -> None:
    answer = rig.call(mode, "bulk_orders", [gtc(rig, frac=0.8), gtc(rig, frac=0.7)])
    assert kinds(answer) == ["resting", "resting"]
    assert (
        sorted(o.px for o in rig.orders())
        == sorted(
            int(o["limit"]) for o in [{"limit": gtc(rig, frac=f)["limit_px"]} for f in (0.8, 0.7)]
        )
        or len(rig.orders()) == 2
    )
    assert len(rig.orders()) == 2


def case_modify_order(rig: Rig, mode: str) -> None:
    (oid,) = place(rig, 1)
    new_px = int(rig.mid() * 0.75)
    answer = rig.call(
        mode, "modify_order", oid, "BTC", True, 0.002, new_px, {"limit": {"tif": "Gtc"}}
    )
    assert kinds(answer) == ["resting"]
    open_orders = [o for o in rig.orders() if o.status == "open"]
    assert [(o.px, o.sz) for o in open_orders] == [(new_px, 0.002)]
    assert len(rig.orders()) == 2  # the original (replaced) and its replacement, once


def case_bulk_modify_orders_new(rig: Rig, mode: str) -> None:
    oids = place(rig, 2)
    modifies = [{"oid": oid, "order": gtc(rig, frac=0.6 - 0.01 * i)} for i, oid in enumerate(oids)]
    answer = rig.call(mode, "bulk_modify_orders_new", modifies)
    assert kinds(answer) == ["resting", "resting"]
    assert len([o for o in rig.orders() if o.status == "open"]) == 2
    assert len(rig.orders()) == 4


def case_cancel(rig: Rig, mode: str) -> None:
    (oid,) = place(rig, 1)
    answer = rig.call(mode, "cancel", "BTC", oid)
    assert kinds(answer) == ["success"]
    assert [o.status for o in rig.orders()] == ["canceled"]


def case_cancel_by_cloid(rig: Rig, mode: str) -> None:
    from hyperliquid.utils.types import Cloid

    cloid = Cloid.from_int(7)
    rig.raw.order("BTC", True, 0.001, int(rig.mid() * 0.8), {"limit": {"tif": "Gtc"}}, cloid=cloid)
    answer = rig.call(mode, "cancel_by_cloid", "BTC", cloid)
    assert kinds(answer) == ["success"]
    assert [o.status for o in rig.orders()] == ["canceled"]


def case_bulk_cancel(rig: Rig, mode: str) -> None:
    oids = place(rig, 2)
    answer = rig.call(mode, "bulk_cancel", [{"coin": "BTC", "oid": oid} for oid in oids])
    assert kinds(answer) == ["success", "success"]
    assert [o.status for o in rig.orders()] == ["canceled", "canceled"]


def case_bulk_cancel_by_cloid(rig: Rig, mode: str) -> None:
    from hyperliquid.utils.types import Cloid

    cloids = [Cloid.from_int(11), Cloid.from_int(12)]
    rig.raw.bulk_orders([{**gtc(rig), "cloid": c} for c in cloids])
    answer = rig.call(mode, "bulk_cancel_by_cloid", [{"coin": "BTC", "cloid": c} for c in cloids])
    assert kinds(answer) == ["success", "success"]
    assert [o.status for o in rig.orders()] == ["canceled", "canceled"]


def case_market_open(rig: Rig, mode: str) -> None:
    answer = rig.call(mode, "market_open", "BTC", True, 0.001)
    assert kinds(answer) == ["filled"]
    assert len(rig.orders()) == 1
    assert rig.szi() == pytest.approx(0.001)


def case_market_close(rig: Rig, mode: str) -> None:
    rig.raw.market_open("BTC", True, 0.002)
    answer = rig.call(mode, "market_close", "BTC")
    assert kinds(answer) == ["filled"]
    assert len(rig.orders()) == 2  # the opening order and one closing order
    assert rig.szi() == 0.0


CASES: dict[str, tuple[Case, str]] = {
    "order": (case_order, "order"),
    "bulk_orders": (case_bulk_orders, "order"),
    "modify_order": (case_modify_order, "batchModify"),
    "bulk_modify_orders_new": (case_bulk_modify_orders_new, "batchModify"),
    "cancel": (case_cancel, "cancel"),
    "cancel_by_cloid": (case_cancel_by_cloid, "cancelByCloid"),
    "bulk_cancel": (case_bulk_cancel, "cancel"),
    "bulk_cancel_by_cloid": (case_bulk_cancel_by_cloid, "cancelByCloid"),
    "market_open": (case_market_open, "order"),
    "market_close": (case_market_close, "order"),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", AFTER_FAULTS)
@pytest.mark.parametrize("path", list(CASES))
def test_every_order_path_settles_exactly_once_after_an_unknown_outcome(
    rig: Rig, path: str, fault: str, mode: str
) -> None:
    case, action = CASES[path]
    rig.arm(fault, action)
    case(rig, mode)
    assert rig.faults.pending() == 0  # the fault did happen
    assert rig.breaker.state == "closed"
    assert not rig.breaker.latched


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", AFTER_FAULTS)
@pytest.mark.parametrize("path", list(CASES))
def test_without_a_retry_policy_every_order_path_is_settled_by_asking(
    plain_rig: Rig, path: str, fault: str, mode: str
) -> None:
    """The default (no retry policy): nothing is ever sent twice, yet an answer lost after
    the action was applied is settled by looking it up, and the call returns the outcome."""
    case, action = CASES[path]
    plain_rig.arm(fault, action)
    case(plain_rig, mode)
    assert plain_rig.faults.pending() == 0
    assert plain_rig.breaker.state == "closed"


@pytest.mark.parametrize("fault", BEFORE_FAULTS)
@pytest.mark.parametrize("path", ["order", "bulk_orders", "cancel", "modify_order"])
def test_a_request_refused_before_it_was_applied_is_sent_again_once(
    rig: Rig, path: str, fault: str
) -> None:
    case, action = CASES[path]
    rig.arm(fault, action)
    case(rig, "sync")
    assert rig.faults.pending() == 0
    assert rig.breaker.state == "closed"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_duplicate_cloid_after_an_unknown_outcome_is_adopted_not_a_latch(
    rig: Rig, mode: str
) -> None:
    """A lagging read says "unknown" for an order that landed: the re-send gets
    ``Duplicate cloid``, which means the first attempt landed: adopt it."""
    rig.faults.force("lost_response", only="order")
    rig.faults.force("stale_status", only="orderStatus")
    before = rig.sim.snapshot()["duplicate_cloids"]
    case_order(rig, mode)
    assert rig.sim.snapshot()["duplicate_cloids"] == before + 1
    assert rig.breaker.state == "closed"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_ioc_without_a_match_is_an_outcome_sent_once(rig: Rig, mode: str) -> None:
    requests_before = rig.sim.snapshot()["requests"]
    px = int(rig.mid() * 0.5)  # a buy far below the market: nothing to match
    answer = rig.call(mode, "order", "BTC", True, 0.001, px, {"limit": {"tif": "Ioc"}})
    assert kinds(answer) == ["not_filled"]
    assert rig.sim.snapshot()["requests"] == requests_before + 1  # never retried
    assert rig.breaker.state == "closed"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_partly_refused_batch_is_not_sent_again(rig: Rig, mode: str) -> None:
    """Issue #11 item 1: A fills, B finds no match; A must not fill again."""
    a = {**gtc(rig, frac=1.1), "order_type": {"limit": {"tif": "Ioc"}}}
    b = {**gtc(rig, frac=0.5), "order_type": {"limit": {"tif": "Ioc"}}}
    answer = rig.call(mode, "bulk_orders", [a, b])
    assert kinds(answer) == ["filled", "not_filled"]
    assert rig.szi() == pytest.approx(0.001)
    assert len(rig.orders()) == 1
    assert rig.breaker.state == "closed"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cancel_that_raced_a_fill_is_an_outcome(rig: Rig, mode: str) -> None:
    filled = rig.raw.market_open("BTC", True, 0.001)
    oid = filled["response"]["data"]["statuses"][0]["filled"]["oid"]
    answer = rig.call(mode, "cancel", "BTC", oid)
    assert kinds(answer) == ["gone"]
    assert rig.breaker.state == "closed"
    assert not rig.breaker.latched


def test_other_actions_are_sent_once_unless_idempotent_or_named(rig: Rig) -> None:
    from resilient_trading import ExchangeUnavailableError

    start = rig.sim.snapshot()
    rig.faults.force("http_503", only="setReferrer")
    with pytest.raises(ExchangeUnavailableError):
        rig.sync.set_referrer("FRIEND")  # not idempotent: never retried by default
    after = rig.sim.snapshot()
    assert after["faults"]["http_503"] == start["faults"]["http_503"] + 1
    assert after["requests"] == start["requests"]  # no second attempt reached the exchange
    rig.breaker.reset()

    rig.faults.force("http_503", only="updateLeverage")
    assert rig.sync.update_leverage(5, "BTC")["status"] == "ok"  # idempotent: retried

    retry = RetryPolicy(attempts=3, base_delay=0.01)
    brave = hl.wrap_exchange(rig.raw, rig.sync.limiter, retry=retry, unsafe_retry={"set_referrer"})
    rig.faults.force("http_503", only="setReferrer")
    assert brave.set_referrer("FRIEND")["status"] == "ok"  # the caller said so


def test_an_outcome_that_stays_unknown_names_the_cloid(rig: Rig) -> None:
    from resilient_trading import ExchangeUnavailableError

    rig.faults.force("lost_response", only="order")
    rig.faults.force("http_503", 10, only="orderStatus")
    one_shot = hl.wrap_exchange(rig.raw, rig.sync.limiter, retry=RetryPolicy(3, 0.01))
    with pytest.raises(ExchangeUnavailableError) as info:
        one_shot.order("BTC", True, 0.001, int(rig.mid() * 0.8), {"limit": {"tif": "Gtc"}})
    assert len(rig.orders()) == 1  # sent once, never again without an answer
    # The cloids are on the error on every Python (add_note is 3.11+).
    assert info.value.unknown_cloids == (rig.orders()[0].cloid,)
    notes = getattr(info.value, "__notes__", None)
    if notes is not None:  # Python 3.11+
        assert "outcome unknown for 0x" in notes[0]
