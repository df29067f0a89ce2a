"""The bot's reconcile and order placement, in-process, against a small fake exchange.

The fake (:class:`FakeVenue`) implements the bot's ``Venue`` protocol with a tiny market:
IOC entries and closes fill at the mid, take-profits and stop-losses rest until the price
crosses them; an order's size on the exchange may shrink behind the bot's back (a grouped stop
shrinks with its position) and is said only by a ``fresh`` lookup and the listing. Faults are
armed per write: the answer lost after the exchange applied it, a refusal before it, the stop
of a grouped entry refused, an entry that finds no match, or a crash (the bot process dies
before or after the exchange applied the write; a new bot starts on the same state file).
The state is the real :class:`~resilient_trading.TypedStore` in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from examples.hyperliquid_bot.bot import Bot, finished, read_history
from examples.hyperliquid_bot.config import BotConfig
from examples.hyperliquid_bot.protection import is_protected
from examples.hyperliquid_bot.state import (
    SCHEMA_VERSION,
    BotState,
    Counters,
    Order,
    Position,
    migrate,
    open_state,
)
from examples.hyperliquid_bot.strategies import Candle, Signal
from examples.hyperliquid_bot.venue import (
    AccountView,
    Found,
    OrderRequest,
    Placed,
    RestingOrder,
    VenueStatus,
)
from resilient_trading import CircuitOpenError, ExchangeUnavailableError, Journal, LockedJsonStore

EQUITY = 10_000.0
#: The largest entry the bot can make here: min(equity * leverage, max_position_usd) / price,
#: at the lowest price the machine below moves to.
MAX_ENTRY = 2_000.0 / 80.0


class Crash(BaseException):
    """The bot process dies here (not an Exception: nothing in the bot may catch it)."""


@dataclasses.dataclass
class FakeOrder:
    request: OrderRequest
    oid: int
    status: str = "open"
    #: What is left of it on the exchange (the requested size unless shrunk).
    size: float = 0.0

    def __post_init__(self) -> None:
        self.size = self.size or self.request.size


class FakeVenue:
    """A one-coin exchange in memory, implementing the bot's ``Venue`` protocol."""

    def __init__(self, price: float = 100.0) -> None:
        self.price = price
        self.szi = 0.0
        self.entry_px: float | None = None
        self.orders: dict[str, FakeOrder] = {}
        self.sent: Counter[str] = Counter()
        self.faults: list[str] = []
        self.blocked: str | None = None
        self.minute = 0
        self.next_oid = 1
        self.cancels = 0
        self.reduce_calls = 0

    # --- the market ---------------------------------------------------------------------------

    def _fill(self, is_buy: bool, size: float, *, reduce_only: bool) -> float:
        if reduce_only:
            reducible = -self.szi if is_buy else self.szi
            size = min(size, max(0.0, reducible))
        if size <= 0:
            return 0.0
        self.szi = round(self.szi + (size if is_buy else -size), 9)
        self.entry_px = None if self.szi == 0 else self.price
        return size

    def move(self, price: float) -> None:
        """The price moves: take-profits and stop-losses it crosses fire."""
        self.price = price
        for order in self.orders.values():
            r = order.request
            if order.status != "open" or r.kind not in ("tp", "sl"):
                continue
            # A sell stop fires at or below its trigger, a sell take-profit at or above.
            below = (r.kind == "sl") != r.is_buy
            if (price <= r.px) if below else (price >= r.px):
                filled = self._fill(r.is_buy, order.size, reduce_only=True)
                order.status = "filled" if filled else "canceled"

    def _apply(
        self, request: OrderRequest, *, refuse: bool = False, unmatched: bool = False
    ) -> Placed:
        self.sent[request.cloid] += 1
        if request.cloid in self.orders:
            return Placed(request.cloid, "rejected", error="Duplicate cloid")
        oid = self.next_oid
        self.next_oid += 1
        order = FakeOrder(request, oid)
        self.orders[request.cloid] = order
        if refuse:
            order.status = "rejected"
        elif unmatched and request.kind in ("tp", "sl"):
            order.status = "canceled"  # a grouped exit goes with its entry
        elif request.kind in ("entry", "close"):
            marketable = request.px >= self.price if request.is_buy else request.px <= self.price
            filled = (
                marketable
                and not unmatched
                and self._fill(request.is_buy, request.size, reduce_only=request.reduce_only)
            )
            order.status = "filled" if filled else "unfilled"
        return Placed(request.cloid, order.status, oid)  # type: ignore[arg-type]

    def _write(self, requests: Sequence[OrderRequest]) -> list[Placed]:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refused":
            raise ExchangeUnavailableError("503 before processing", operation="order")
        if fault == "crash_before":
            raise Crash
        refuse_stop = fault == "stop_refused"
        unmatched = fault == "unfilled"  # the entry's IOC finds no match, its exits go too
        placed = [
            self._apply(r, refuse=refuse_stop and r.kind == "sl", unmatched=unmatched)
            for r in requests
        ]
        if fault == "lost":
            raise ExchangeUnavailableError("answer lost after retries", operation="order")
        if fault == "crash_after":
            raise Crash
        return placed

    # --- Venue --------------------------------------------------------------------------------

    def account(self, coin: str) -> AccountView:
        return AccountView(Position(szi=self.szi, entry_px=self.entry_px), EQUITY)

    def open_orders(self) -> list[RestingOrder]:
        return [
            RestingOrder(
                coin=o.request.coin,
                oid=o.oid,
                cloid=cloid,
                is_buy=o.request.is_buy,
                size=o.size,
                reduce_only=o.request.reduce_only,
                is_stop=o.request.kind == "sl",
            )
            for cloid, o in self.orders.items()
            if o.status == "open"
        ]

    def order_status(self, cloid: str, *, fresh: bool = False) -> Found:
        """Like the gateway: the size only when ``fresh`` (the stream's cache has none)."""
        order = self.orders.get(cloid)
        if order is None:
            return Found("never_placed")
        return Found(order.status, order.oid, order.size if fresh else None)  # type: ignore[arg-type]

    def mid(self, coin: str) -> float:
        return self.price

    def sz_decimals(self, coin: str) -> int:
        return 3

    def candles(self, coin: str, interval: str, lookback: int) -> list[Candle]:
        self.minute += 1
        p = self.price
        return [
            Candle(t=(10**6 + self.minute + i) * 60_000, open=p, high=p, low=p, close=p, volume=1.0)
            for i in range(-lookback + 1, 1)
        ]

    def entries_blocked(self) -> str | None:
        return self.blocked

    def enter(self, orders: Sequence[OrderRequest]) -> list[Placed]:
        if self.blocked:
            raise CircuitOpenError(
                f"entries refused: {self.blocked}",
                name="exchange",
                latched=True,
                reason=self.blocked,
                opened_at=None,
                retry_at=None,
            )
        return self._write(orders)

    def reduce(self, order: OrderRequest) -> Placed:
        assert order.reduce_only
        self.reduce_calls += 1
        (placed,) = self._write([order])
        return placed

    def cancel(self, coin: str, cloid: str) -> None:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refused":
            raise ExchangeUnavailableError("503 before processing", operation="cancel")
        if fault == "crash_before":
            raise Crash
        order = self.orders.get(cloid)
        if order is not None and order.status == "open":
            order.status = "canceled"
            self.cancels += 1
        if fault == "lost":
            raise ExchangeUnavailableError("answer lost", operation="cancel")
        if fault == "crash_after":
            raise Crash

    def status(self) -> VenueStatus:
        return VenueStatus(price=self.price, retries=0, breaker="closed", budget_used=0.0)

    # --- checks -------------------------------------------------------------------------------

    def stops(self) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.status == "open" and o.request.kind == "sl"]

    def protected(self) -> bool:
        needed = abs(self.szi)
        return needed == 0 or any(
            o.request.is_buy == (self.szi < 0) and o.size >= needed - 1e-12 for o in self.stops()
        )


@dataclasses.dataclass(frozen=True)
class Always:
    """A strategy that always wants in, on one side, 2% stop and 4% target."""

    side: str = "long"

    def evaluate(self, candles: Sequence[Candle]) -> Signal | None:
        close = candles[-1].close
        long = self.side == "long"
        return Signal(
            strategy="always",
            side="long" if long else "short",
            entry=close,
            stop=close * (0.98 if long else 1.02),
            target=close * (1.04 if long else 0.96),
            confidence=1.0,
        )


def make_bot(venue: FakeVenue, state_dir: Path, side: str = "long") -> Bot:
    bot = Bot(BotConfig(), venue, state_dir)
    bot.strategies = [Always(side)]  # type: ignore[list-item]
    return bot


class CrashingJournal(Journal):
    """The real journal; when ``crash`` holds ``True``, the process dies right after an
    append is durable, before the live state's commit (the window the order is in both)."""

    def __init__(self, path: Path, crash: list[bool]) -> None:
        super().__init__(path)
        self.crash = crash

    def append_many(self, records: Any) -> None:
        super().append_many(records)
        if self.crash[0]:
            self.crash[0] = False
            raise Crash


def history_cloids(bot: Bot) -> list[str]:
    """The cloid of every line of the history, duplicates included."""
    return [str(entry.record["cloid"]) for entry in bot.history.iter_records()]


def state_agrees(bot: Bot, venue: FakeVenue) -> None:
    state = bot.store.read()
    assert not finished(state.orders), "a finished order stayed in the live state"
    history = read_history(bot.history)
    assert not set(history) & set(state.orders), "an order in both after a clean commit"
    assert set(venue.orders) <= set(history) | set(state.orders), "an order sent, then lost"
    assert state.position.szi == venue.szi
    exchange_open = {c for c, o in venue.orders.items() if o.status == "open"}
    assert set(state.live_orders()) == exchange_open
    every = {**read_history(bot.history), **state.orders}  # finished orders are in the history
    for cloid, order in every.items():  # every order as the exchange knows it
        known = venue.orders.get(cloid)
        assert order.status == (known.status if known else "never_placed"), cloid


# --- placement and protection ------------------------------------------------------------------


def test_an_entry_goes_out_with_its_take_profit_and_stop_in_one_action(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    bot.step()
    kinds = sorted(o.request.kind for o in venue.orders.values())
    assert kinds == ["entry", "sl", "tp"]
    assert venue.szi > 0 and venue.protected()
    state = bot.store.read()
    assert state.position.stop_px == pytest.approx(98.0)
    assert state.counters.orders_placed == 3
    bot.reconcile()  # the position is the exchange's, read by the next reconcile
    state_agrees(bot, venue)


def test_a_refused_stop_is_rearmed_by_the_next_reconcile(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    venue.faults.append("stop_refused")  # the entry fills, its stop-loss is refused
    bot.step()
    assert venue.szi > 0 and not venue.protected()
    bot.reconcile()
    assert venue.protected()
    (stop,) = venue.stops()
    assert stop.request.px == pytest.approx(98.0)  # the entry's own stop, not a fallback
    assert bot.store.read().counters.stops_rearmed == 1
    state_agrees(bot, venue)


def test_a_stop_shrunk_on_the_exchange_is_replaced_by_one_for_the_whole_position(
    tmp_path: Path,
) -> None:
    """The size the bot asked for is not what protects: the exchange's is (issue #15, D1)."""
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    bot.step()
    (small,) = venue.stops()
    small.size = round(venue.szi / 2, 3)  # shrunk with the position, which then grew back
    assert not venue.protected()
    bot.reconcile()
    assert venue.protected()
    (stop,) = venue.stops()  # replaced: the small one is cancelled, not left beside it
    assert stop.size == pytest.approx(venue.szi) and small.status == "canceled"
    assert stop.request.px == pytest.approx(98.0)  # at the entry's own stop
    assert bot.store.read().counters.stops_rearmed == 1
    state_agrees(bot, venue)


def test_the_stop_of_an_entry_that_did_not_fill_is_not_given_to_a_later_position(
    tmp_path: Path,
) -> None:
    """Issue #15 nit 8: the stop saved with an entry's intent belongs to that entry only."""
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    venue.faults.append("unfilled")
    bot.step()
    assert venue.szi == 0 and bot.store.read().position.stop_px is None
    venue.szi, venue.entry_px = 1.0, 100.0  # a position opened by hand
    bot.reconcile()
    (stop,) = venue.stops()
    assert stop.request.px == pytest.approx(97.0)  # the fallback stop, not the entry's 98


@settings(max_examples=200, deadline=None)
@given(
    szi=st.floats(min_value=0.001, max_value=50.0).map(lambda x: round(x, 3)),
    asked=st.floats(min_value=0.001, max_value=50.0).map(lambda x: round(x, 3)),
    held=st.none() | st.floats(min_value=0.001, max_value=50.0).map(lambda x: round(x, 3)),
    short=st.booleans(),
)
def test_a_stop_protects_by_the_size_the_exchange_holds(
    szi: float, asked: float, held: float | None, short: bool
) -> None:
    position = Position(szi=-szi if short else szi, entry_px=100.0)
    stop = Order(coin="BTC", kind="sl", is_buy=short, size=asked, px=90.0, status="open")
    seen = stop.settled("open", 7, held)
    assert seen.size == (asked if held is None else held)
    assert is_protected(position, "BTC", [], {"c": seen}) == (seen.size >= szi - 1e-12)
    assert stop.settled("filled", 7, held).size == asked  # only a working order's size


def test_a_position_found_without_a_stop_gets_the_fallback_stop(tmp_path: Path) -> None:
    venue = FakeVenue()
    venue.szi, venue.entry_px = -1.5, 100.0  # opened by hand, unknown to the bot
    bot = make_bot(venue, tmp_path)
    bot.start()
    (stop,) = venue.stops()
    assert stop.request.is_buy and stop.request.size == 1.5
    assert stop.request.px == pytest.approx(103.0)  # risk.fallback_stop above the entry


@settings(max_examples=40, deadline=None)
@given(
    szi=st.integers(min_value=-50_000, max_value=50_000).filter(bool).map(lambda n: n / 1000),
    entry=st.none() | st.floats(min_value=1.0, max_value=1e5),
    price=st.floats(min_value=1.0, max_value=1e5),
)
def test_a_rearmed_stop_protects_and_is_armed_once(
    szi: float, entry: float | None, price: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        venue = FakeVenue(price=price)
        venue.szi, venue.entry_px = szi, entry
        bot = make_bot(venue, Path(tmp))
        bot.start()
        bot.reconcile()  # the stop just armed is recognised: nothing armed again
        (stop,) = venue.stops()
        assert venue.protected()
        base = entry or price
        assert (stop.request.px < base) if szi > 0 else (stop.request.px > base)
        assert bot.store.read().counters.stops_rearmed == 1


def test_exits_left_without_a_position_are_cancelled(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    bot.step()
    venue.move(110.0)  # the take-profit fires: flat, the stop is left resting
    assert venue.szi == 0 and len(venue.stops()) == 1
    bot.reconcile()
    assert venue.stops() == []
    state_agrees(bot, venue)


def test_an_order_a_lagging_lookup_called_never_placed_is_adopted_when_listed(
    tmp_path: Path,
) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    bot.step()
    (stop_id,) = [c for c, o in venue.orders.items() if o.request.kind == "sl"]
    with bot.store.transaction() as state:  # what a lagging orderStatus left behind
        state.orders = {
            **state.orders,
            stop_id: state.orders[stop_id].settled("never_placed", None),
        }
    bot.reconcile()
    assert bot.store.read().orders[stop_id].status == "open"
    assert len(venue.stops()) == 1  # adopted, not re-armed a second time
    state_agrees(bot, venue)


# --- degraded mode -----------------------------------------------------------------------------


def test_degraded_refuses_entries_but_cancels_and_closes_go_out(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    bot.step()
    assert venue.szi > 0
    venue.blocked = "breaker 'exchange' latched (AuthenticationError)"
    sent_before = sum(venue.sent.values())
    venue.move(104.5)  # take-profit fires: flat; the stop must be cancelled
    bot.step()  # the stop left without a position is cancelled
    assert venue.cancels == 1 and venue.stops() == []
    bot.step()  # a signal comes: refused
    assert sum(venue.sent.values()) == sent_before  # no entry went out
    assert bot.store.read().counters.entries_refused == 1
    venue.szi, venue.entry_px = 2.0, 104.5  # a position again (say, adopted)
    placed = bot.close_position()
    assert placed is not None and placed.status == "filled"
    assert venue.szi == 0


def test_the_venue_refusal_is_a_backstop_when_the_check_races(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    plan = bot.look()
    bot.decide(plan)
    venue.blocked = "breaker 'exchange' latched"  # latched between decide and send
    bot.record(plan)
    with pytest.raises(CircuitOpenError):
        bot.execute(plan)
    assert venue.szi == 0 and not venue.sent
    bot.reconcile()  # the intents were never sent: the exchange never heard of them
    assert not bot.store.read().orders  # finished: moved to the history
    assert {o.status for o in read_history(bot.history).values()} == {"never_placed"}


# --- counters: one commit per step -------------------------------------------------------------


def generation(path: Path) -> int:
    value: int = json.loads(path.read_text())["generation"]
    return value


def test_a_quiet_step_commits_once_with_its_counters(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.start()
    bot.step()  # in a position, protected: the next steps decide nothing
    before = generation(tmp_path / "state.json")
    for _ in range(3):
        bot.step()
    assert generation(tmp_path / "state.json") - before == 3
    assert bot.store.read().counters.iterations == 4


# --- the state file ----------------------------------------------------------------------------


OLD_LAYOUT: dict[str, Any] = {
    "version": 1,
    "last_candle": 1_700_000_000_000,
    "orders": {
        "0x" + "01" * 16: {
            "coin": "BTC",
            "kind": "entry",
            "side": "buy",
            "sz": 0.01,
            "px": 60_000.0,
            "status": "filled",
            "strategy": "trend",
            "oid": 7,
            "t": 1,
        },
        "0x" + "02" * 16: {
            "coin": "BTC",
            "kind": "sl",
            "side": "sell",
            "sz": 0.01,
            "px": 58_000.0,
            "status": "reduceOnlyCanceled",
            "strategy": "trend",
            "oid": 8,
            "t": 2,
        },
    },
    "position": {"szi": 0.0, "entry_px": None},
    "pnl": {"start_equity": 10_000.0, "equity": 10_010.0},
    "counters": {"iterations": 12, "orders_placed": 2, "retries": 1, "gone_counter": 3},
    "operator": {"checks": 4},
}


def test_an_old_layout_state_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with LockedJsonStore(path) as raw, raw.transaction() as doc:
        doc.update(OLD_LAYOUT)
    store = open_state(path)
    state = store.read()
    stop = state.orders["0x" + "02" * 16]
    assert stop.status == "canceled" and stop.reduce_only and not stop.is_buy
    assert state.counters.iterations == 12 and state.operator.checks == 4
    with store.transaction() as state:
        state.counters = state.counters + Counters(iterations=1)
    on_disk = json.loads(path.read_text())
    assert on_disk["schema"] == SCHEMA_VERSION and "version" not in on_disk["data"]


def test_a_state_file_that_does_not_fit_names_the_file(tmp_path: Path) -> None:
    from resilient_trading import StateCorruptedError

    path = tmp_path / "state.json"
    store = open_state(path)
    with store.store.transaction() as doc:
        doc.update(BotState().model_dump(mode="json"))
        doc["orders"] = {
            "0xab": {
                "coin": "BTC",
                "kind": "entry",
                "is_buy": True,
                "size": 1.0,
                "px": 1.0,
                "status": "maybe",
            }
        }
    with pytest.raises(StateCorruptedError, match=r"state\.json"):
        store.read()


orders_st = st.builds(
    Order,
    coin=st.sampled_from(["BTC", "ETH"]),
    kind=st.sampled_from(["entry", "tp", "sl", "close"]),
    is_buy=st.booleans(),
    size=st.floats(min_value=0.001, max_value=1e6),
    px=st.floats(min_value=0.01, max_value=1e7),
    status=st.sampled_from(
        ["pending", "open", "filled", "unfilled", "rejected", "canceled", "never_placed"]
    ),
    oid=st.none() | st.integers(min_value=0, max_value=2**53),
)
states_st = st.builds(
    BotState,
    last_candle=st.integers(min_value=0, max_value=2**53),
    orders=st.dictionaries(
        st.text("0123456789abcdef", min_size=1, max_size=8), orders_st, max_size=5
    ),
    position=st.builds(Position, szi=st.floats(-1e6, 1e6), stop_px=st.none() | st.floats(1, 1e6)),
    counters=st.builds(Counters, iterations=st.integers(0, 10**9), signals=st.integers(0, 10**9)),
)


@settings(max_examples=60, deadline=None)
@given(state=states_st)
def test_every_state_survives_the_store_and_a_migration_pass(state: BotState) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_state(Path(tmp) / "state.json")
        with store.transaction() as doc:
            for name in BotState.model_fields:
                setattr(doc, name, getattr(state, name))
        assert store.read() == state
        assert migrate(state.model_dump(mode="json"), 0) == state.model_dump(mode="json")


RAW_STATUSES = [
    "open",
    "filled",
    "triggered",
    "canceled",
    "marginCanceled",
    "reduceOnlyCanceled",
    "scheduledCancel",
    "rejected",
    "iocCancelRejected",
    "perpMarginRejected",
    "pending",
    "never_placed",
    "unfilled",
]
old_orders_st = st.fixed_dictionaries(
    {
        "coin": st.just("BTC"),
        "kind": st.sampled_from(["entry", "tp", "sl"]),
        "side": st.sampled_from(["buy", "sell"]),
        "sz": st.floats(min_value=0.001, max_value=100),
        "px": st.floats(min_value=1, max_value=1e6),
        "status": st.sampled_from(RAW_STATUSES) | st.text(min_size=1, max_size=12),
        "strategy": st.sampled_from(["trend", "mean_reversion"]),
        "oid": st.none() | st.integers(min_value=0, max_value=2**40),
        "t": st.integers(min_value=0, max_value=2**42),
    }
)
old_docs_st = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "last_candle": st.integers(min_value=0, max_value=2**42),
        "orders": st.dictionaries(
            st.text("0123456789abcdef", min_size=4, max_size=8), old_orders_st, max_size=4
        ),
        "position": st.fixed_dictionaries(
            {"szi": st.floats(-10, 10), "entry_px": st.none() | st.floats(1, 1e6)}
        ),
        "pnl": st.fixed_dictionaries({"start_equity": st.none() | st.floats(0, 1e6)}),
        "counters": st.dictionaries(
            st.sampled_from(["iterations", "orders_placed", "retries", "old_counter"]),
            st.integers(min_value=0, max_value=10**6),
        ),
    }
)


@settings(max_examples=80, deadline=None)
@given(old=old_docs_st)
def test_every_old_layout_document_migrates_to_a_valid_state(old: dict[str, Any]) -> None:
    state = BotState.model_validate(migrate(old, 0))
    assert set(state.orders) == set(old["orders"])
    for cloid, order in state.orders.items():
        assert order.is_buy == (old["orders"][cloid]["side"] == "buy")
        if old["orders"][cloid]["status"] in ("filled", "triggered"):
            assert order.status == "filled"
        if old["orders"][cloid]["status"].endswith("Canceled"):
            assert order.status == "canceled"


def test_grouped_answers_waiting_for_their_entry_are_open() -> None:
    from examples.hyperliquid_bot.exchange import _placed

    requests = [
        OrderRequest("0x" + "01" * 16, "BTC", "entry", True, 0.01, 100.0),
        OrderRequest("0x" + "02" * 16, "BTC", "tp", False, 0.01, 104.0),
        OrderRequest("0x" + "03" * 16, "BTC", "sl", False, 0.01, 98.0),
    ]
    answer = {
        "status": "ok",
        "response": {
            "type": "order",
            "data": {
                "statuses": [
                    {"filled": {"oid": 5, "totalSz": "0.01", "avgPx": "100"}},
                    "waitingForFill",
                    "waitingForTrigger",
                ]
            },
        },
    }
    assert [p.status for p in _placed(requests, answer)] == ["filled", "open", "open"]
    refused = {
        **answer,
        "response": {
            "type": "order",
            "data": {
                "statuses": [{"error": "Order has invalid price."}, {"error": "x"}, {"error": "y"}]
            },
        },
    }
    placed = _placed(requests, refused)
    assert placed[0].status == "rejected" and "invalid price" in (placed[0].error or "")
    assert [p.status for p in _placed(requests, {"status": "ok"})] == ["pending"] * 3


# --- bounded live state: finished orders move to the history (issue #15) ---------------------


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=st.integers(min_value=1, max_value=12), take_profit=st.lists(st.booleans()))
def test_finished_orders_move_to_the_history_and_the_live_state_stays_small(
    tmp_path_factory: pytest.TempPathFactory, rounds: int, take_profit: list[bool]
) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path_factory.mktemp("bot"))
    bot.start()
    for i in range(rounds):
        bot.step()  # an entry (filled at once) with its take-profit and stop-loss
        assert len(bot.store.read().orders) <= 3
        tp = i < len(take_profit) and take_profit[i]
        venue.move(104.5 if tp else 97.5)  # one exit fills, the other is left open
        bot.step()  # flat: the other exit is canceled
        venue.price = 100.0
        bot.reconcile()
        state = bot.store.read()
        assert state.position.flat and not state.orders  # nothing left to act on
    state_agrees(bot, venue)
    cloids = history_cloids(bot)
    assert len(cloids) == len(set(cloids)) == 3 * rounds  # each finished order, once
    assert set(cloids) == set(venue.orders)
    bot.close()


def test_a_crash_between_the_append_and_the_commit_leaves_the_order_in_both(
    tmp_path: Path,
) -> None:
    venue = FakeVenue()
    crash = [False]
    bot = make_bot(venue, tmp_path)
    bot.history = CrashingJournal(tmp_path / "history.jsonl", crash)
    bot.start()
    bot.step()
    venue.move(104.5)  # the take-profit fills, the stop is an orphan
    crash[0] = True
    with pytest.raises(Crash):
        bot.step()  # appends the filled take-profit, dies before the commit
    bot.history.close()
    in_both = set(history_cloids(bot)) & set(bot.store.read().orders)
    assert len(in_both) == 1  # in both places, never in neither
    bot = make_bot(venue, tmp_path)  # a new process on the same files
    bot.start()  # moves it again, then cancels the stop: the entry and stop follow
    assert not bot.store.read().orders
    cloids = history_cloids(bot)
    assert len(cloids) == 4 and set(read_history(bot.history)) == set(venue.orders)
    assert Counter(cloids)[in_both.pop()] == 2  # a line twice, read as one order
    state_agrees(bot, venue)
    bot.close()


# --- whatever faults and crashes: never sent twice, and reconcile converges ------------------


class BotUnderFaults(RuleBasedStateMachine):
    """A bot stepping on the fake exchange while answers are lost, writes refused, stops
    refused and the process crashes; prices move. Model: the fake exchange itself."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.venue = FakeVenue(price=90.0)
        self.side = "long"
        self.crash_archive = [False]
        self.bot = self._new_bot()

    def _new_bot(self) -> Bot:
        bot = make_bot(self.venue, self.dir, self.side)
        bot.history = CrashingJournal(self.dir / "history.jsonl", self.crash_archive)
        return bot

    def _run(self, fn: Any) -> None:
        try:
            fn()
        except Crash:
            self.bot.close()
            self.bot = self._new_bot()  # restart on the same state
        except (ExchangeUnavailableError, CircuitOpenError):
            pass  # the loop counts it and goes on

    @rule()
    def step(self) -> None:
        self._run(self.bot.start if not self.bot.started else self.bot.step)

    @rule(
        fault=st.sampled_from(
            ["lost", "refused", "stop_refused", "unfilled", "crash_before", "crash_after"]
        )
    )
    def arm(self, fault: str) -> None:
        self.venue.faults.append(fault)

    @rule()
    def arm_crash_between_history_and_commit(self) -> None:
        self.crash_archive[0] = True

    @rule(price=st.floats(min_value=80.0, max_value=100.0))
    def move(self, price: float) -> None:
        self.venue.move(price)

    @rule()
    def flip_side(self) -> None:
        self.side = "short" if self.side == "long" else "long"
        self.bot.strategies = [Always(self.side)]  # type: ignore[list-item]

    @rule()
    def toggle_degraded(self) -> None:
        self.venue.blocked = None if self.venue.blocked else "breaker 'exchange' open"

    @precondition(lambda self: self.venue.szi != 0)
    @rule()
    def stop_cancelled_by_hand(self) -> None:
        for order in self.venue.stops():
            order.status = "canceled"

    @precondition(lambda self: self.venue.szi != 0)
    @rule()
    def stop_shrunk_behind_the_bots_back(self) -> None:
        for order in self.venue.stops():
            order.size = max(0.001, round(order.size / 2, 3))

    @invariant()
    def nothing_is_ever_sent_twice(self) -> None:
        assert all(n == 1 for n in self.venue.sent.values()), self.venue.sent

    @invariant()
    def every_order_is_live_or_in_the_history_and_the_live_state_is_small(self) -> None:
        live = self.bot.store.read().orders
        assert set(self.venue.orders) <= set(live) | set(read_history(self.bot.history))
        assert len(live) <= 6, live

    @invariant()
    def never_more_than_one_entry_of_exposure(self) -> None:
        assert abs(self.venue.szi) <= MAX_ENTRY + 1e-9

    def teardown(self) -> None:
        try:
            self.venue.faults.clear()
            self.crash_archive[0] = False
            self.venue.blocked = None
            if not self.bot.started:
                self.bot.start()
            self.bot.reconcile()  # one clean reconcile converges
            assert self.venue.protected(), "a position without a stop survived a reconcile"
            state_agrees(self.bot, self.venue)
            assert all(n == 1 for n in self.venue.sent.values())
        finally:
            self.bot.close()
            self.tmp.cleanup()


BotUnderFaults.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_bot_under_faults = BotUnderFaults.TestCase
