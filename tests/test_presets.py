"""The Hyperliquid preset: documented weights, classified constructors, the order settlement.

The settlement (``_orders.Settlement``) decides without I/O, so its rules are checked here
directly, with a stateful hypothesis machine against a model exchange; the end-to-end proof
with the real SDK is tests/test_exchange_faults.py.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import eth_account
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_trading import (
    ExchangeUnavailableError,
    NetworkError,
    RateLimit,
    RateLimitedError,
    RateLimiter,
    ResilienceError,
)
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.presets.hyperliquid._orders import Finish, Item, Lookup, Send, Settlement
from resilient_trading.testing import FaultConfig, ManualClock, Simulator

pytestmark = pytest.mark.timeout(120)


def used(limiter: RateLimiter) -> int:
    return limiter.status().windows[0].used


# --- weights ----------------------------------------------------------------------------------


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
    assert hl.items_weight("delegatorRewards", 60) == 3
    assert hl.items_weight("meta", 1000) == 0
    assert hl.exchange_weight(1) == 1
    assert hl.exchange_weight(39) == 1
    assert hl.exchange_weight(40) == 2
    assert hl.exchange_weight(79) == 2
    assert RateLimit(1200, 60.0) == hl.REST_LIMIT
    assert hl.rest_limit(0.05).budget == 1140


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(0, 500),
    method=st.sampled_from(
        [
            ("bulk_orders", "order_requests"),
            ("bulk_cancel", "cancel_requests"),
            ("bulk_cancel_by_cloid", "cancel_requests"),
            ("bulk_modify_orders_new", "modify_requests"),
        ]
    ),
)
def test_a_batch_weighs_the_same_however_it_is_passed(length: int, method: tuple[str, str]) -> None:
    """Issue #11: ``bulk_orders(builder=None, order_requests=[400])`` weighed 1, not 11."""
    name, parameter = method
    weight = hl.EXCHANGE_WEIGHTS[name]
    assert callable(weight)
    batch: list[dict[str, Any]] = [{}] * length
    expected = hl.exchange_weight(length)
    assert weight(batch) == expected
    assert weight(**{parameter: batch}) == expected
    assert weight(builder=None, **{parameter: batch}) == expected
    assert weight(**{parameter: batch}, builder=None) == expected


def test_info_methods_charge_items_after_the_answer() -> None:
    class Info:
        def candles_snapshot(self, name: str, interval: str, start: int, end: int) -> list[int]:
            return list(range(130))

        def all_mids(self) -> dict[str, str]:
            return {"BTC": "1"}

        def user_staking_rewards(self, address: str) -> list[int]:
            return list(range(45))

    limiter = RateLimiter(hl.REST_LIMIT, clock=ManualClock())
    info = hl.wrap_info(Info(), limiter)
    info.all_mids()
    assert used(limiter) == 2
    info.candles_snapshot("BTC", "1m", 0, 1)
    assert used(limiter) == 2 + 20 + 2
    info.user_staking_rewards("0xabc")
    assert used(limiter) == 24 + 20 + 2  # delegatorRewards: +1 per 20 items


# --- the real SDK against the simulator: weights, constructors -------------------------------


@pytest.fixture
def wallet() -> Any:
    return eth_account.Account.create()


def test_market_paths_and_lookups_are_charged_what_they_spend(wallet: Any) -> None:
    faults = FaultConfig()
    with Simulator(seed=2, auto_fund=10_000.0, faults=faults) as sim:
        limiter = RateLimiter(RateLimit(10_000, 60.0))
        raw = hl.make_exchange(wallet, sim.base_url, limiter)
        ex = hl.wrap_exchange(raw, limiter)
        assert used(limiter) == hl.CONSTRUCTOR_WEIGHT
        start = sim.snapshot()["weight"]
        ex.market_open("BTC", True, 0.001)  # allMids (2) + the order (1)
        assert used(limiter) - hl.CONSTRUCTOR_WEIGHT == 3
        ex.market_close("BTC")  # clearinghouseState (2) + allMids (2) + the order (1)
        assert used(limiter) - hl.CONSTRUCTOR_WEIGHT == 3 + 5
        assert sim.snapshot()["weight"] - start == 8  # what the exchange counted

        from resilient_trading import RetryPolicy

        safe = hl.wrap_exchange(raw, limiter, retry=RetryPolicy(3, 0.01))
        before = used(limiter)
        faults.force("lost_response", only="order")
        px = int(float(raw.info.all_mids()["BTC"]) * 0.8)
        safe.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
        assert used(limiter) - before == 1 + 2  # the order, then one orderStatus lookup


def test_make_info_turns_a_429_into_a_pause_for_every_sharer(wallet: Any, tmp_path: Any) -> None:
    """A 429 inside the SDK's constructor was a raw ClientError: now RateLimitedError, and
    the shared limiter pauses."""
    with Simulator(seed=1, budget=30) as sim:  # spotMeta (20) passes, meta (20) is refused
        state = tmp_path / "budget.json"
        limiter = RateLimiter(RateLimit(10_000, 60.0), state_path=state)
        other = RateLimiter(RateLimit(10_000, 60.0), state_path=state)
        with pytest.raises(RateLimitedError) as info:
            hl.make_info(sim.base_url, limiter, default_pause=7.0)
        assert info.value.__cause__ is not None
        assert other.status().paused_until is not None
        with pytest.raises(RateLimitedError):
            hl.make_exchange(wallet, sim.base_url, RateLimiter(RateLimit(10_000, 60.0)))


@pytest.mark.parametrize("kind", ["malformed", "http_502", "reset"])
def test_make_exchange_raises_only_classified_errors(wallet: Any, kind: str) -> None:
    faults = FaultConfig()
    with Simulator(seed=1, faults=faults) as sim:
        faults.force(kind, only="spotMeta")
        with pytest.raises(ResilienceError) as info:
            hl.make_exchange(wallet, sim.base_url, RateLimiter(RateLimit(10_000, 60.0)))
        assert info.value.retryable
        faults.force(kind, only="meta")
        with pytest.raises(ResilienceError):
            hl.make_info(sim.base_url, RateLimiter(RateLimit(10_000, 60.0)))


def test_use_nonces_makes_the_sdk_sign_with_the_source(wallet: Any) -> None:
    from resilient_trading import NonceError

    with Simulator(seed=1, auto_fund=10_000.0) as sim:
        limiter = RateLimiter(RateLimit(10_000, 60.0))
        raw = hl.make_exchange(wallet, sim.base_url, limiter)
        fixed = int(sim.clock() * 1000)
        restore = hl.use_nonces(lambda: fixed)  # a broken source: the same nonce twice
        try:
            assert raw.update_leverage(5, "BTC")["status"] == "ok"
            with pytest.raises(NonceError):
                hl.wrap_exchange(raw, limiter).update_leverage(5, "BTC")
        finally:
            restore()
        assert raw.update_leverage(5, "BTC")["status"] == "ok"  # the SDK's clock again
        with pytest.raises(TypeError):
            hl.use_nonces(42)


def test_wrap_exchange_arguments() -> None:
    limiter = RateLimiter(hl.REST_LIMIT)
    with pytest.raises(ValueError, match="order paths"):
        hl.wrap_exchange(object(), limiter, unsafe_retry={"order"})
    with pytest.raises(TypeError):
        hl.wrap_exchange(object(), limiter, unsafe_retry="usd_transfer")


# --- the settlement, against a model exchange -------------------------------------------------

NO_MATCH = "Order could not immediately match against any resting orders."


class ModelExchange:
    """Hyperliquid's rules for orders with cloids: a cloid is placed at most once; an IOC
    that finds no match is refused and leaves no trace."""

    def __init__(self, no_match: set[str]) -> None:
        self.placed: dict[str, int] = {}
        self.no_match = no_match
        self.applies = 0
        self.duplicates: dict[str, int] = {}

    def apply(self, items: tuple[Item, ...]) -> dict[str, Any]:
        self.applies += 1
        statuses: list[Any] = []
        for item in items:
            assert item.cloid is not None
            if item.cloid in self.placed:
                self.duplicates[item.cloid] = self.duplicates.get(item.cloid, 0) + 1
                statuses.append({"error": f"Duplicate cloid: {item.cloid}"})
            elif item.cloid in self.no_match:
                statuses.append({"error": NO_MATCH})
            else:
                self.placed[item.cloid] = 1000 + len(self.placed)
                statuses.append({"resting": {"oid": self.placed[item.cloid], "cloid": item.cloid}})
        return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}

    def status(self, cloid: str) -> dict[str, Any]:
        if cloid not in self.placed:
            return {"status": "unknownOid"}
        order = {"oid": self.placed[cloid], "cloid": cloid, "origSz": "1", "limitPx": "1"}
        return {"status": "order", "order": {"order": order, "status": "open"}}


class SettlementMachine(RuleBasedStateMachine):
    """Drive one batch's settlement through any sequence of answers, lost answers, refusals
    and stale reads, with or without a retry policy: an order is never placed twice, a
    cloid the exchange said it already has (``Duplicate cloid``) is never sent again, nothing
    is sent twice without a retry policy, and when the settlement finishes, every status it
    reports is the truth."""

    def __init__(self) -> None:
        super().__init__()
        self.settlement: Settlement | None = None
        self.exchange = ModelExchange(set())
        self.finish: Finish | None = None
        self.sends: dict[str, int] = {}
        self.known: set[str] = set()  # cloids the settlement read a Duplicate cloid answer for

    def _next(self) -> Lookup | Send | Finish | None:
        """The settlement's next step; an attempt that ends (raises) is followed by the next
        attempt, as the retry policy would, when there is one."""
        assert self.settlement is not None
        try:
            return self.settlement.next()
        except ResilienceError:
            if not self.settlement.resend:
                return None  # without a retry policy the call ends here, raised
            self.settlement.begin_attempt()
            return self.settlement.next()

    @precondition(lambda self: self.settlement is None)
    @rule(size=st.integers(1, 4), no_match=st.sets(st.integers(0, 3)), resend=st.booleans())
    def start(self, size: int, no_match: set[int], resend: bool) -> None:
        items = [Item(i, "order", {"i": i}, cloid=f"0x{i:032x}") for i in range(size)]
        self.exchange = ModelExchange({f"0x{i:032x}" for i in no_match})
        self.sends = {}
        self.known = set()
        self.settlement = Settlement(
            items, answer_type="order", single=False, operation="t", resend=resend
        )
        self.settlement.begin_attempt()

    def _pending(self) -> Send | None:
        if self.settlement is None or self.finish is not None:
            return None
        io = self._next()
        return io if isinstance(io, Send) else None

    def _lookup(self) -> Lookup | None:
        if self.settlement is None or self.finish is not None:
            return None
        io = self._next()
        return io if isinstance(io, Lookup) else None

    @precondition(lambda self: self._pending() is not None)
    @rule(how=st.sampled_from(["answered", "lost", "unreadable", "refused", "429", "unsent"]))
    def send(self, how: str) -> None:
        io = self._pending()
        assert io is not None and self.settlement is not None
        for item in io.items:
            assert item.state == "pending"  # never an item whose outcome is unknown
            assert item.cloid is not None
            assert item.cloid not in self.known  # the exchange said it has it: never again
            self.sends[item.cloid] = self.sends.get(item.cloid, 0) + 1
            assert self.settlement.resend or self.sends[item.cloid] == 1
        if how in ("answered", "lost", "unreadable"):
            answer = self.exchange.apply(io.items)
        if how == "answered":
            statuses = answer["response"]["data"]["statuses"]
            for item, status in zip(io.items, statuses, strict=True):
                if "Duplicate cloid" in str(status):
                    assert item.cloid is not None
                    self.known.add(item.cloid)
            self.settlement.sent(io.items, answer)
        elif how == "unreadable":
            self.settlement.sent(io.items, {"error": "Could not parse JSON: {"})
        elif how == "refused":
            with pytest.raises(ResilienceError):
                self.settlement.sent(
                    io.items, {"status": "err", "response": "Invalid nonce: duplicate nonce 1"}
                )
        elif how == "429":
            self.settlement.failed(io.items, RateLimitedError("429"))
        else:  # lost after it was applied, or never sent: the same to the settlement
            self.settlement.failed(io.items, NetworkError("reset"))

    @precondition(lambda self: self._lookup() is not None)
    @rule(how=st.sampled_from(["true", "stale", "unreadable"]))
    def look_up(self, how: str) -> None:
        io = self._lookup()
        assert io is not None and self.settlement is not None and io.item.cloid is not None
        if how == "true":
            self.settlement.looked_up(io.item, self.exchange.status(io.item.cloid))
        elif how == "stale":
            self.settlement.looked_up(io.item, {"status": "unknownOid"})
        else:
            with pytest.raises(ExchangeUnavailableError):
                self.settlement.looked_up(io.item, {"oops": 1})

    @precondition(
        lambda self: (
            self.settlement is not None
            and self.finish is None
            and isinstance(self._next(), Finish | type(None))
        )
    )
    @rule()
    def finished(self) -> None:
        io = self._next()
        assert self.settlement is not None
        if io is None:  # raised without a retry policy: what is unknown is named
            for item in self.settlement.items:
                if item.state != "done" and item.ever_unknown:
                    assert str(item.cloid) in self.settlement.unknown_refs()
            self.settlement = None
            return
        assert isinstance(io, Finish)
        self.finish = io
        for item, outcome in zip(self.settlement.items, hl.outcomes(io.answer), strict=True):
            assert item.cloid is not None
            if outcome.kind == "resting":
                assert outcome.raw["resting"]["oid"] == self.exchange.placed[item.cloid]
            else:  # never a false claim: unconfirmed (a lagging read) or truly not placed
                assert outcome.kind == "unconfirmed" or item.cloid not in self.exchange.placed
            assert "Duplicate cloid" not in str(outcome.raw)  # never a false refusal
        self.settlement, self.finish = None, None  # the next call starts afresh

    @invariant()
    def placed_at_most_once(self) -> None:
        # the model refuses a second placement; the settlement must never *report* one
        assert len(self.exchange.placed) <= 4


TestSettlement = SettlementMachine.TestCase
TestSettlement.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def _cancel_answer(*statuses: Any) -> dict[str, Any]:
    return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": list(statuses)}}}


def _found(status: str) -> dict[str, Any]:
    return {"status": "order", "order": {"order": {}, "status": status}}


def test_lost_cancels_are_sent_again_without_lookups_and_a_gone_answer_is_explained() -> None:
    """A lost cancel batch is sent again at the next attempt, unlooked (a lagging read
    cannot make it report an open order as gone); only a "gone" answer to the re-send is
    looked up, to tell our own landed cancel (success) from a fill (gone)."""
    items = [Item(i, "cancel", {"oid": i}, oid=i) for i in range(3)]
    s = Settlement(items, answer_type="cancel", single=False, operation="bulk_cancel")
    s.begin_attempt()
    io = s.next()
    assert isinstance(io, Send)
    s.failed(io.items, NetworkError("reset"))
    with pytest.raises(NetworkError):
        s.next()  # this attempt is over; the retry policy decides on the next
    s.begin_attempt()
    again = s.next()
    assert isinstance(again, Send)
    assert [i.oid for i in again.items] == [0, 1, 2]
    gone = {"error": "Order was never placed, already canceled, or filled. asset=0"}
    s.sent(again.items, _cancel_answer(gone, "success", gone))
    for truth in ("canceled", "filled"):
        look = s.next()
        assert isinstance(look, Lookup)
        s.looked_up(look.item, _found(truth))
    done = s.next()
    assert isinstance(done, Finish)
    assert [o.kind for o in hl.outcomes(done.answer)] == ["success", "success", "gone"]


def test_without_a_retry_policy_a_lost_cancel_is_looked_up_never_resent() -> None:
    items = [Item(i, "cancel", {"oid": i}, oid=i) for i in range(3)]
    s = Settlement(items, answer_type="cancel", single=False, operation="bulk_cancel", resend=False)
    s.begin_attempt()
    io = s.next()
    assert isinstance(io, Send)
    s.failed(io.items, NetworkError("reset"))
    for truth in ("canceled", "open", "filled"):
        look = s.next()
        assert isinstance(look, Lookup)
        s.looked_up(look.item, _found(truth))
    with pytest.raises(NetworkError):
        s.next()  # the open one would need a re-send: not without a policy
    assert s.unknown_refs() == ["1"]


def test_a_cancel_batch_goes_in_chunks_the_exchange_accepts() -> None:
    items = [Item(i, "cancel", {"oid": i}, oid=i) for i in range(450)]
    s = Settlement(items, answer_type="cancel", single=False, operation="bulk_cancel")
    s.begin_attempt()
    sizes = []
    while not isinstance(io := s.next(), Finish):
        assert isinstance(io, Send)
        sizes.append(len(io.items))
        s.sent(io.items, _cancel_answer(*["success"] * len(io.items)))
    assert sizes == [200, 200, 50]
    assert [o.kind for o in hl.outcomes(io.answer)] == ["success"] * 450


_CANCELLED = [
    "canceled",
    "marginCanceled",
    "reduceOnlyCanceled",
    "selfTradeCanceled",
    "siblingFilledCanceled",
    "scheduledCancel",
]


@given(
    status=st.sampled_from([*_CANCELLED, "open", "filled"]),
    orig=st.integers(1, 10_000),
    left=st.integers(0, 10_000),
)
def test_an_adopted_order_is_reported_as_what_it_became(status: str, orig: int, left: int) -> None:
    """A lost answer, then the order found: open is resting, filled is filled, cancelled
    (by anyone) is ``canceled``, and a cancelled order that partly filled first (an IOC's
    rest) reports the part that filled."""
    left = min(left, orig)
    cloid = "0x" + "0" * 31 + "7"
    order = {
        "oid": 7,
        "cloid": cloid,
        "origSz": str(Decimal(orig) / 1000),
        "sz": str(Decimal(0 if status == "filled" else left) / 1000),
        "limitPx": "100",
    }
    s = Settlement(
        [Item(0, "order", {}, cloid=cloid)], answer_type="order", single=True, operation="o"
    )
    s.begin_attempt()
    io = s.next()
    assert isinstance(io, Send)
    s.failed(io.items, NetworkError("reset"))
    look = s.next()
    assert isinstance(look, Lookup)
    s.looked_up(look.item, {"status": "order", "order": {"order": order, "status": status}})
    done = s.next()
    assert isinstance(done, Finish)
    (outcome,) = hl.outcomes(done.answer)
    assert outcome.adopted and outcome.oid == 7 and outcome.cloid == cloid
    if status == "open":
        assert outcome.kind == "resting"
    elif status == "filled":
        assert outcome.kind == "filled"
        assert Decimal(outcome.raw["filled"]["totalSz"]) == Decimal(orig) / 1000
    elif left < orig:
        assert outcome.kind == "filled"
        assert Decimal(outcome.raw["filled"]["totalSz"]) == Decimal(orig - left) / 1000
    else:
        assert outcome.kind == "canceled"


@given(st.one_of(st.text(max_size=40), st.from_regex(r"0x[0-9a-fA-F]{32}", fullmatch=True)))
def test_a_cloid_str_is_taken_exactly_when_the_exchange_could_read_it(value: str) -> None:
    """A hex str (``Outcome.cloid``) becomes the SDK's ``Cloid``; anything else is a
    ``TypeError`` raised before the call is guarded (never an SDK AttributeError inside)."""
    from resilient_trading.presets.hyperliquid._cloids import as_cloid

    if re.fullmatch(r"0x[0-9a-fA-F]{32}", value):
        assert as_cloid(value, "cloid").to_raw() == value
    else:
        with pytest.raises(TypeError, match="cloid"):
            as_cloid(value, "cloid")


def test_grouped_exits_waiting_for_their_entry_are_a_waiting_outcome() -> None:
    """``normalTpsl`` children answer ``"waitingForFill"``/``"waitingForTrigger"``: accepted
    orders to track, never an error (a bot reading them as errors would place them again)."""
    answer = {
        "status": "ok",
        "response": {
            "type": "order",
            "data": {"statuses": [{"resting": {"oid": 7}}, "waitingForFill", "waitingForTrigger"]},
        },
    }
    kinds = [o.kind for o in hl.outcomes(answer)]
    assert kinds == ["resting", "waiting", "waiting"]
    assert all(o.error is None for o in hl.outcomes(answer))
