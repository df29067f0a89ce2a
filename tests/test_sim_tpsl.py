"""The simulator models ``bulk_orders`` groupings (issue #15), driven by the unmodified SDK.

``normalTpsl``: the first order is the entry, the others its take-profit/stop-loss. While the
entry rests they wait (``waitingForFill``, not open orders, listed under the entry's
``children``); when it fills they go live sized to what filled (answered
``waitingForTrigger`` when the entry fills at once); an entry cancelled unfilled takes them
along; one firing cancels its siblings (``siblingFilledCanceled``); they never exceed the
position they reduce. ``positionTpsl``: take-profit/stop-loss on the position itself.
``FaultConfig.reject_item`` refuses one item of an action while the others go through.

Prices move on a seeded random walk the tests can read ahead of time
(``engine.series[coin].close(minute)``), and the simulator runs on a :class:`ManualClock`,
so "wait until the entry fills" is "advance the clock to the minute it must fill".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.error import ClientError
from hyperliquid.utils.types import Cloid
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from resilient_trading import RateLimit, RateLimiter, RetryPolicy
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.testing import FaultConfig, ManualClock, Simulator
from resilient_trading.testing._engine import LIVE, WAITING, Engine, Order, Position

pytestmark = pytest.mark.timeout(60)

SPEED = 60.0  # one simulated minute per second of the (manual) clock
GTC: Any = {"limit": {"tif": "Gtc"}}
IOC: Any = {"limit": {"tif": "Ioc"}}


class Rig:
    def __init__(self, sim: Simulator, clock: ManualClock, faults: FaultConfig) -> None:
        self.sim, self.clock, self.faults = sim, clock, faults
        self.wallet = eth_account.Account.create()
        self.address = self.wallet.address.lower()
        self.info = Info(sim.base_url, skip_ws=True)
        self.exchange = Exchange(self.wallet, sim.base_url)
        self.next_cloid = 1

    def cloid(self) -> Cloid:
        self.next_cloid += 1
        return Cloid.from_int(self.next_cloid)

    def mid(self) -> float:
        with self.sim.engine.lock:
            return self.sim.engine.mid("BTC")

    def minute(self) -> float:
        with self.sim.engine.lock:
            return self.sim.engine.sim_minutes()

    def future_low(self, below: float) -> tuple[int, float]:
        """The first whole minute ahead whose mid is under ``below`` (and that mid)."""
        series = self.sim.engine.series["BTC"]
        start = int(self.minute()) + 2
        for m in range(start, start + 20_000):
            if series.close(m - 1) < below:
                return m, series.close(m - 1)
        raise AssertionError("the walk never goes that low")

    def future_high(self, above: float) -> tuple[int, float]:
        series = self.sim.engine.series["BTC"]
        start = int(self.minute()) + 2
        for m in range(start, start + 20_000):
            if series.close(m - 1) > above:
                return m, series.close(m - 1)
        raise AssertionError("the walk never goes that high")

    def go_to(self, minute: int) -> None:
        """Advance the clock to the start of simulated ``minute``; a request sweeps."""
        self.clock.advance(max(0.0, (minute - self.minute()) * 60.0 / SPEED))
        self.info.all_mids()  # any request fills crossed limits and fires triggers

    def status(self, cloid: Cloid) -> str:
        answer = self.info.query_order_by_cloid(self.wallet.address, cloid)
        return str(answer["order"]["status"]) if answer["status"] == "order" else "unknownOid"

    def live(self, cloid: Cloid) -> dict[str, Any]:
        answer = self.info.query_order_by_cloid(self.wallet.address, cloid)
        order: dict[str, Any] = answer["order"]["order"]
        return order

    def szi(self) -> float:
        with self.sim.engine.lock:
            pos = self.sim.engine.accounts[self.address].positions.get("BTC")
            return pos.szi if pos else 0.0

    def group(
        self,
        entry_px: float,
        size: float = 0.001,
        *,
        tp: float,
        sl: float,
        is_buy: bool = True,
        tif: Any = GTC,
        child_size: float | None = None,
    ) -> tuple[Any, list[Cloid]]:
        """Entry, take-profit and stop-loss in one ``normalTpsl`` action: (answer, cloids)."""
        cloids = [self.cloid(), self.cloid(), self.cloid()]
        exit_size = size if child_size is None else child_size
        requests: list[Any] = [
            {
                "coin": "BTC",
                "is_buy": is_buy,
                "sz": size,
                "limit_px": entry_px,
                "order_type": tif,
                "reduce_only": False,
                "cloid": cloids[0],
            },
            *(
                {
                    "coin": "BTC",
                    "is_buy": not is_buy,
                    "sz": exit_size,
                    "limit_px": px,
                    "order_type": {"trigger": {"triggerPx": px, "isMarket": True, "tpsl": kind}},
                    "reduce_only": True,
                    "cloid": cloid,
                }
                for kind, px, cloid in (("tp", tp, cloids[1]), ("sl", sl, cloids[2]))
            ),
        ]
        return self.exchange.bulk_orders(requests, grouping="normalTpsl"), cloids


@pytest.fixture
def rig() -> Iterator[Rig]:
    clock = ManualClock(start=time.time())
    faults = FaultConfig()
    with Simulator(seed=5, speed=SPEED, faults=faults, clock=clock.time, auto_fund=100_000) as sim:
        yield Rig(sim, clock, faults)


def statuses(answer: Any) -> list[Any]:
    assert answer["status"] == "ok", answer
    found: list[Any] = answer["response"]["data"]["statuses"]
    return found


# --- normalTpsl with the SDK ------------------------------------------------------------------


def test_children_of_a_resting_entry_wait_for_its_fill(rig: Rig) -> None:
    px = int(rig.mid() * 0.99)
    answer, (entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5))
    found = statuses(answer)
    assert "resting" in found[0] and found[1:] == [WAITING, WAITING]
    assert [o.kind for o in hl.outcomes(answer)] == ["resting", "waiting", "waiting"]
    # Not open orders: the entry alone is; the children are listed under it.
    (listed,) = rig.info.open_orders(rig.wallet.address)
    assert listed["cloid"] == entry.to_raw()
    (front,) = rig.info.frontend_open_orders(rig.wallet.address)
    assert sorted(c["cloid"] for c in front["children"]) == sorted([tp.to_raw(), sl.to_raw()])
    assert {c["orderType"] for c in front["children"]} == {"Take Profit Market", "Stop Market"}
    assert rig.status(tp) == rig.status(sl) == WAITING


def test_children_go_live_sized_to_the_fill_when_the_entry_fills(rig: Rig) -> None:
    rig.exchange.order("BTC", True, 0.005, int(rig.mid() * 1.01), IOC)  # a position already
    minute, low = rig.future_low(rig.mid() * 0.995)
    px = int(low) + 1  # under the mid now, crossed at ``minute``
    answer, (entry, tp, sl) = rig.group(
        px, 0.002, tp=int(px * 1.5), sl=int(px * 0.5), child_size=0.003
    )
    assert statuses(answer)[1:] == [WAITING, WAITING]
    rig.go_to(minute)
    assert rig.status(entry) == "filled"
    assert rig.status(tp) == rig.status(sl) == "open"
    assert rig.szi() == pytest.approx(0.007)
    # Sized to what their entry filled (0.002), not to what they asked (0.003).
    assert float(rig.live(tp)["sz"]) == float(rig.live(sl)["sz"]) == pytest.approx(0.002)
    listed = rig.info.frontend_open_orders(rig.wallet.address)
    assert sorted(o["cloid"] for o in listed) == sorted([tp.to_raw(), sl.to_raw()])
    assert all(o["reduceOnly"] and o["isTrigger"] and not o["children"] for o in listed)


def test_an_entry_filled_at_once_answers_waiting_for_trigger(rig: Rig) -> None:
    px = int(rig.mid() * 1.01)
    answer, (_entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5), tif=IOC)
    found = statuses(answer)
    assert "filled" in found[0] and found[1:] == ["waitingForTrigger", "waitingForTrigger"]
    assert [o.kind for o in hl.outcomes(answer)] == ["filled", "waiting", "waiting"]
    assert rig.status(tp) == rig.status(sl) == "open"
    assert len(rig.info.open_orders(rig.wallet.address)) == 2


def test_children_of_a_refused_entry_are_refused(rig: Rig) -> None:
    px = int(rig.mid() * 0.9)  # an IOC buy under the mid cannot match
    answer, (_entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5), tif=IOC)
    found = statuses(answer)
    assert "could not immediately match" in found[0]["error"]
    assert all("not placed" in f["error"] for f in found[1:])
    assert rig.status(tp) == rig.status(sl) == "unknownOid"
    assert rig.info.open_orders(rig.wallet.address) == []


def test_cancelling_an_unfilled_entry_cancels_its_children(rig: Rig) -> None:
    px = int(rig.mid() * 0.99)
    _answer, (entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5))
    assert statuses(rig.exchange.cancel_by_cloid("BTC", entry)) == ["success"]
    assert rig.status(entry) == rig.status(tp) == rig.status(sl) == "canceled"
    assert rig.info.frontend_open_orders(rig.wallet.address) == []
    # The price crossing the entry later changes nothing: nothing goes live.
    minute, _ = rig.future_low(px)
    rig.go_to(minute)
    assert rig.status(tp) == rig.status(sl) == "canceled" and rig.szi() == 0.0


def test_a_waiting_child_can_be_cancelled_alone(rig: Rig) -> None:
    minute, low = rig.future_low(rig.mid() * 0.995)
    px = int(low) + 1
    _answer, (entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5))
    assert statuses(rig.exchange.cancel_by_cloid("BTC", tp)) == ["success"]
    rig.go_to(minute)
    assert (rig.status(entry), rig.status(tp), rig.status(sl)) == ("filled", "canceled", "open")


def test_a_modified_entry_keeps_its_children(rig: Rig) -> None:
    px = int(rig.mid() * 0.99)
    _answer, (entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5))
    moved = rig.exchange.modify_order(entry, "BTC", True, 0.001, px - 10, GTC, cloid=entry)
    assert "resting" in statuses(moved)[0]
    (front,) = rig.info.frontend_open_orders(rig.wallet.address)
    assert front["limitPx"] == str(px - 10) and len(front["children"]) == 2
    assert rig.status(tp) == rig.status(sl) == WAITING


def test_one_child_firing_cancels_its_sibling(rig: Rig) -> None:
    px = int(rig.mid() * 1.01)
    minute, low = rig.future_low(rig.mid() * 0.995)
    stop = int(low) + 1
    _answer, (_entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=stop, tif=IOC)
    assert rig.szi() == pytest.approx(0.001)
    rig.go_to(minute)
    assert (rig.status(sl), rig.status(tp)) == ("triggered", "siblingFilledCanceled")
    assert rig.szi() == 0.0 and rig.info.open_orders(rig.wallet.address) == []


def test_children_shrink_with_the_position_and_go_with_it(rig: Rig) -> None:
    px = int(rig.mid() * 1.01)
    _answer, (_entry, tp, sl) = rig.group(px, 0.004, tp=int(px * 1.5), sl=int(px * 0.5), tif=IOC)
    rig.exchange.order("BTC", False, 0.001, int(px * 0.97), IOC, reduce_only=True)
    assert rig.szi() == pytest.approx(0.003)
    assert float(rig.live(tp)["sz"]) == float(rig.live(sl)["sz"]) == pytest.approx(0.003)
    rig.exchange.order("BTC", False, 0.003, int(px * 0.97), IOC, reduce_only=True)
    assert rig.szi() == 0.0
    assert rig.status(tp) == rig.status(sl) == "reduceOnlyCanceled"


# --- the one-item fault -----------------------------------------------------------------------


def test_one_item_of_a_group_can_be_refused_while_the_others_go_through(rig: Rig) -> None:
    rig.faults.reject_item(1, grouping="normalTpsl")
    assert rig.faults.pending() == 1
    rig.exchange.order("BTC", True, 0.001, int(rig.mid() * 0.9), GTC)  # "na": not eligible
    assert rig.faults.pending() == 1
    px = int(rig.mid() * 1.01)
    answer, (_entry, tp, sl) = rig.group(px, tp=int(px * 1.5), sl=int(px * 0.5), tif=IOC)
    found = statuses(answer)
    assert "filled" in found[0] and found[2] == "waitingForTrigger"
    assert found[1] == {"error": "Price must be divisible by tick size. asset=0"}
    assert rig.faults.pending() == 0 and rig.sim.snapshot()["item_errors"] == 1
    assert (rig.status(tp), rig.status(sl)) == ("unknownOid", "open")
    assert rig.szi() == pytest.approx(0.001)


def test_the_one_item_fault_through_the_wrapper_settles_each_item(rig: Rig) -> None:
    """The wrapper returns the refusal of the TP as an outcome (never re-sent), beside the
    entry's fill and the SL's acceptance; the exchange holds one entry fill and one stop."""
    limiter = RateLimiter(RateLimit(100_000, 60.0))
    raw = hl.make_exchange(rig.wallet, rig.sim.base_url, limiter)
    safe = hl.wrap_exchange(raw, limiter, retry=RetryPolicy(3, 0.01, max_total=1.0))
    rig.faults.reject_item(1, "Insufficient margin to place order. asset=0")
    px = int(rig.mid() * 1.01)
    cloids = [rig.cloid(), rig.cloid(), rig.cloid()]
    base: Any = {"coin": "BTC", "sz": 0.001}
    requests: list[Any] = [
        {**base, "is_buy": True, "limit_px": px, "order_type": IOC, "reduce_only": False},
        {
            **base,
            "is_buy": False,
            "limit_px": int(px * 1.5),
            "order_type": {"trigger": {"triggerPx": int(px * 1.5), "isMarket": True, "tpsl": "tp"}},
            "reduce_only": True,
        },
        {
            **base,
            "is_buy": False,
            "limit_px": int(px * 0.5),
            "order_type": {"trigger": {"triggerPx": int(px * 0.5), "isMarket": True, "tpsl": "sl"}},
            "reduce_only": True,
        },
    ]
    for request, cloid in zip(requests, cloids, strict=True):
        request["cloid"] = cloid
    result = safe.bulk_orders(requests, grouping="normalTpsl")
    outcomes = hl.outcomes(result)
    assert [o.kind for o in outcomes] == ["filled", "error", "waiting"]
    assert "Insufficient margin" in str(outcomes[1].error)
    assert rig.sim.snapshot()["orders_placed"] == 2  # entry and stop, once each
    (stop,) = rig.info.open_orders(rig.wallet.address)
    assert stop["cloid"] == cloids[2].to_raw()


def test_reject_item_checks_its_arguments() -> None:
    faults = FaultConfig()
    with pytest.raises(ValueError, match="index must be >= 0"):
        faults.reject_item(-1)
    with pytest.raises(TypeError, match="index must be an int"):
        faults.reject_item(True)
    with pytest.raises(ValueError, match="count must be >= 1"):
        faults.reject_item(1, count=0)
    with pytest.raises(ValueError, match="grouping must be None or one of"):
        faults.reject_item(0, grouping="tpsl")
    assert faults.pending() == 0


# --- positionTpsl and the wire ----------------------------------------------------------------


def test_position_tpsl_attaches_to_the_position_and_follows_it(rig: Rig) -> None:
    px = int(rig.mid() * 1.01)
    trig: Any = {"triggerPx": int(px * 0.5), "isMarket": True, "tpsl": "sl"}
    stop: Any = {
        "coin": "BTC",
        "is_buy": False,
        "sz": 0.0,
        "limit_px": int(px * 0.5),
        "order_type": {"trigger": trig},
        "reduce_only": True,
    }
    refused = statuses(rig.exchange.bulk_orders([stop], grouping="positionTpsl"))
    assert refused == [{"error": "Reduce only order would increase position. asset=0"}]
    rig.exchange.order("BTC", True, 0.002, px, IOC)
    assert statuses(rig.exchange.bulk_orders([stop], grouping="positionTpsl")) == [
        "waitingForTrigger"
    ]
    (front,) = rig.info.frontend_open_orders(rig.wallet.address)
    assert front["isPositionTpsl"] and float(front["sz"]) == pytest.approx(0.002)
    rig.exchange.order("BTC", True, 0.001, px, IOC)  # the position grows: so does its stop
    (front,) = rig.info.frontend_open_orders(rig.wallet.address)
    assert float(front["sz"]) == pytest.approx(0.003)
    rig.exchange.order("BTC", False, 0.003, int(px * 0.97), IOC, reduce_only=True)
    assert rig.info.frontend_open_orders(rig.wallet.address) == []


def test_an_unknown_grouping_is_a_422(rig: Rig) -> None:
    with pytest.raises(ClientError) as caught:
        rig.exchange.bulk_orders(
            [
                {
                    "coin": "BTC",
                    "is_buy": True,
                    "sz": 0.001,
                    "limit_px": int(rig.mid() * 0.9),
                    "order_type": GTC,
                    "reduce_only": False,
                }
            ],
            grouping="bracket",
        )
    assert caught.value.status_code == 422


# --- the group rule, against any order of fills and cancels -----------------------------------

USER = "0x" + "ab" * 20


class GroupRule(RuleBasedStateMachine):
    """Any sequence of grouped entries, price moves, cancels and closes, straight on the
    engine: no live child whose entry was cancelled unfilled, no child larger than the
    position it reduces, no waiting child of an entry that is not resting unfilled."""

    @initialize()
    def start(self) -> None:
        self.clock = ManualClock(start=1_700_000_000.0)
        self.engine = Engine(
            seed=11, speed=SPEED, clock=self.clock.time, accounts={USER: 1e9}, auto_fund=None
        )
        self.entries: list[int] = []
        self.next_cloid = 0

    def _wire(self, is_buy: bool, sz: float, px: float, order_type: Any, reduce: bool) -> Any:
        return {"a": 0, "b": is_buy, "p": str(int(px)), "s": f"{sz:.3f}", "r": reduce,
                "t": order_type}  # fmt: skip

    def _mid(self) -> float:
        return self.engine.mid("BTC")

    @rule(
        is_buy=st.booleans(),
        away=st.floats(-0.004, 0.004),
        size=st.integers(1, 5),
        child=st.integers(1, 6),
        ioc=st.booleans(),
        spread=st.floats(0.001, 0.01),
    )
    def entry(
        self, is_buy: bool, away: float, size: int, child: int, ioc: bool, spread: float
    ) -> None:
        with self.engine.lock:
            self.engine.sweep()
            mid = self._mid()
            px = mid * (1 + away)
            up, down = int(mid * (1 + spread)), int(mid * (1 - spread))
            tp, sl = (up, down) if is_buy else (down, up)
            tif = {"limit": {"tif": "Ioc" if ioc else "Gtc"}}
            wires = [
                self._wire(is_buy, size / 1000, px, tif, False),
                *(
                    self._wire(
                        not is_buy,
                        child / 1000,
                        trig,
                        {"trigger": {"triggerPx": str(trig), "isMarket": True, "tpsl": kind}},
                        True,
                    )
                    for kind, trig in (("tp", tp), ("sl", sl))
                ),
            ]
            found = self.engine.place_action(USER, wires, "normalTpsl")
            order = self.engine._order_of(found[0])
            if order is not None:
                self.entries.append(order.oid)

    @rule(whole=st.booleans(), size=st.integers(1, 6), spread=st.floats(0.001, 0.01))
    def position_stop(self, whole: bool, size: int, spread: float) -> None:
        with self.engine.lock:
            szi = self._position().szi
            if not szi:
                return
            trig = int(self._mid() * (1 - spread if szi > 0 else 1 + spread))
            kind = {"trigger": {"triggerPx": str(trig), "isMarket": True, "tpsl": "sl"}}
            wire = self._wire(szi < 0, 0 if whole else size / 1000, trig, kind, True)
            assert self.engine.place_action(USER, [wire], "positionTpsl") == ["waitingForTrigger"]

    @rule(seconds=st.floats(0.5, 30.0))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        with self.engine.lock:
            self.engine.sweep()

    @precondition(lambda self: bool(self.entries))
    @rule(pick=st.integers(0, 10_000))
    def cancel_entry(self, pick: int) -> None:
        oid = self.entries[pick % len(self.entries)]
        with self.engine.lock:
            self.engine.cancel(USER, 0, oid, None)

    @precondition(lambda self: bool(self.entries))
    @rule(pick=st.integers(0, 10_000), which=st.integers(0, 1))
    def cancel_child(self, pick: int, which: int) -> None:
        with self.engine.lock:
            parent = self.engine.orders[self.entries[pick % len(self.entries)]]
            if len(parent.children) > which:
                self.engine.cancel(USER, 0, parent.children[which], None)

    @rule(fraction=st.sampled_from([0.25, 0.5, 1.0]))
    def close_by_hand(self, fraction: float) -> None:
        with self.engine.lock:
            szi = self._position().szi
            size = round(abs(szi) * fraction, 5)
            if size <= 0:
                return
            mid = self._mid()
            px = mid * (0.95 if szi > 0 else 1.05)
            self.engine.place_action(
                USER, [self._wire(szi < 0, size, px, {"limit": {"tif": "Ioc"}}, True)], "na"
            )

    def _position(self) -> Position:
        return self.engine.accounts[USER].positions.get("BTC", Position())

    def _children(self) -> list[tuple[Order, Order]]:
        out = []
        for order in self.engine.orders.values():
            if order.parent is not None:
                out.append((self.engine.orders[order.parent], order))
        return out

    @invariant()
    def no_live_child_of_an_entry_cancelled_unfilled(self) -> None:
        with self.engine.lock:
            for parent, child in self._children():
                if parent.status not in LIVE and parent.filled_sz <= 0:
                    assert child.status not in LIVE, (parent, child)

    @invariant()
    def no_child_larger_than_the_position_it_reduces(self) -> None:
        with self.engine.lock:
            szi = self._position().szi
            for _, child in self._children():
                if child.status == "open":
                    reducible = max(0.0, -szi if child.is_buy else szi)
                    assert 0 < child.sz <= reducible + 1e-9, (child, szi)

    @invariant()
    def no_position_stop_larger_than_the_position(self) -> None:
        with self.engine.lock:
            szi = self._position().szi
            for order in self.engine.orders.values():
                if order.position_tpsl and order.status == "open":
                    reducible = max(0.0, -szi if order.is_buy else szi)
                    assert 0 < order.sz <= reducible + 1e-9, (order, szi)
                    assert not order.follows or order.sz == pytest.approx(reducible)

    @invariant()
    def no_child_larger_than_what_its_entry_filled(self) -> None:
        with self.engine.lock:
            for parent, child in self._children():
                if child.status == "open":
                    assert child.sz <= parent.filled_sz + 1e-9, (parent, child)

    @invariant()
    def children_wait_only_on_a_resting_unfilled_entry(self) -> None:
        with self.engine.lock:
            for parent, child in self._children():
                if child.status == WAITING:
                    assert parent.status == "open" and parent.filled_sz == 0, (parent, child)


GroupRule.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_group_rule_holds_under_any_fills_and_cancels = GroupRule.TestCase
