"""The pure rules of Hyperliquid's per-address action budget (``_address_rules.py``).

Issue #14's rule, as the exchange documents it: 10,000 actions to start plus one per USDC
traded; cancels may go on to ``min(cap + 100000, 2 * cap)``; over the cap, one action per
10 s. On top of it the budget paces ordinary actions to a horizon (a token bucket of
``burst`` refilled at ``remaining / time left``) and, once throttled, admits one action per
``throttle_interval``, cancels and closes first.

Checked here without I/O: :func:`decide`, :func:`synced` and :func:`refused` against a small
reference model (a state machine, clock steps included); exact boundaries (the cap, the
cancel allowance, the throttle interval, the horizon, the clock-step guard); the last hour's
pace and the runway; the record's JSON round trip and corrupted records refused with
:class:`StateCorruptedError`; the status an operator reads. Times before the epoch are valid
inputs: the rules take ``now`` as any float (a manual clock may start anywhere), and a minute
is ``floor(now / 60)`` there too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilient_trading import StateCorruptedError
from resilient_trading.presets.hyperliquid import _address_rules as rules
from resilient_trading.presets.hyperliquid._address_rules import (
    AddressState,
    AddressStatus,
    Decision,
    Kind,
    Pace,
    cancel_cap,
    decide,
    refused,
    send_kind,
    start,
    synced,
)

pytestmark = pytest.mark.timeout(60)

ALL_KINDS: list[Kind] = ["action", "cancel", "close"]
ADDRESS = "0x" + "cd" * 20
PACE = Pace(lasts=3600.0, burst=2, throttle_interval=11.0)


def with_cap(state: AddressState, *, used: int, cap: int) -> AddressState:
    return replace(state, used=used, cap=cap)


# --- the exchange's numbers and the kinds --------------------------------------------------------


def test_the_exchange_numbers_are_the_documented_ones() -> None:
    """Hyperliquid's *Rate limits and user limits*: 10,000 to start, cancels 100,000 further,
    one action per 10 s over the cap; ``userRateLimit`` weighs 20."""
    assert rules.INITIAL_BUFFER == 10_000
    assert rules.CANCEL_HEADROOM == 100_000
    assert rules.EXCHANGE_THROTTLE_SECONDS == 10.0
    assert rules.USER_RATE_LIMIT_WEIGHT == 20


def test_the_kinds_checked_at_run_time_are_the_kinds_the_type_names() -> None:
    assert rules.KINDS == get_args(Kind) == ("action", "cancel", "close")


@pytest.mark.parametrize(
    ("operation", "answer_type", "requests", "kind"),
    [
        ("Exchange.cancel", "cancel", [{"reduce_only": False}], "cancel"),
        ("Exchange.bulk_cancel", "cancel", [], "cancel"),
        ("Exchange.market_close", "order", [], "close"),
        ("Exchange.market_close", "order", [{"reduce_only": False}], "close"),
        ("Exchange.bulk_orders", "order", [{"reduce_only": True}, {"reduce_only": 1}], "close"),
        (
            "Exchange.bulk_orders",
            "order",
            [{"reduce_only": True}, {"reduce_only": False}],
            "action",
        ),
        ("Exchange.order", "order", [{"reduce_only": False}], "action"),
        ("Exchange.order", "order", [{}], "action"),
        ("Exchange.order", "order", [], "action"),  # nothing reduce-only: an ordinary action
        ("Exchange.order", "order", ["not a mapping"], "action"),
        ("Exchange.market_open", "order", [{"reduce_only": False}], "action"),
    ],
)
def test_send_kind_cancels_reduce_only_closes_and_ordinary_actions(
    operation: str, answer_type: str, requests: list[Any], kind: str
) -> None:
    assert send_kind(operation, answer_type, requests) == kind


@given(
    answer_type=st.sampled_from(["order", "cancel", "default"]),
    operation=st.sampled_from(["Exchange.order", "Exchange.market_close", "Exchange.modify"]),
    flags=st.lists(st.none() | st.booleans(), max_size=4),
)
def test_send_kind_agrees_with_the_rule(
    answer_type: str, operation: str, flags: list[bool | None]
) -> None:
    requests = [{} if f is None else {"reduce_only": f} for f in flags]
    if answer_type == "cancel":
        expected = "cancel"
    elif operation.endswith("market_close") or (flags and all(flags)):
        expected = "close"
    else:
        expected = "action"
    assert send_kind(operation, answer_type, requests) == expected


# --- the cancel allowance ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "allowance"),
    [(10_000, 20_000), (100_000, 200_000), (100_001, 200_001), (500_000, 600_000), (1, 2)],
)
def test_cancels_may_go_to_the_smaller_of_cap_plus_100000_and_twice_the_cap(
    cap: int, allowance: int
) -> None:
    assert cancel_cap(cap) == allowance


@given(st.integers(0, 10**9))
def test_cancel_allowance_property(cap: int) -> None:
    allowance = cancel_cap(cap)
    assert allowance == min(cap + 100_000, 2 * cap)
    assert cap <= allowance <= cap + 100_000


# --- records are values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        AddressState(),
        Decision(True, 0.0, False),
        PACE,
        AddressStatus.of_record(AddressState().to_json(), location="x", now=0.0),
    ],
)
def test_records_are_immutable(value: Any) -> None:
    field = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, getattr(value, field))


def test_the_default_record_is_all_zeros_with_the_initial_buffer() -> None:
    assert dataclasses.astuple(AddressState()) == (
        "",  # address
        0,  # used
        10_000,  # cap
        0.0,  # cum_vlm
        0.0,  # started_at
        0.0,  # horizon_end
        None,  # synced_at
        None,  # sync_claimed_at
        0.0,  # tokens
        0.0,  # tokens_at
        False,  # throttled
        0.0,  # next_slot
        False,  # warned
        (),  # minutes
    )


def test_a_fresh_budget_starts_full_with_its_horizon_ahead() -> None:
    pace = Pace(lasts=7 * 86_400.0, burst=20, throttle_interval=11.0)
    state = start(1_000.0, pace, ADDRESS)
    assert state == AddressState(
        address=ADDRESS,
        used=0,
        cap=10_000,
        cum_vlm=0.0,
        started_at=1_000.0,
        horizon_end=1_000.0 + 7 * 86_400.0,
        tokens=20.0,
        tokens_at=1_000.0,
        throttled=False,
        next_slot=1_000.0,
        warned=False,
        minutes=(),
    )
    assert state.remaining == 10_000
    assert state.per_hour(1_000.0) == 0.0
    assert state.runway(1_000.0) is None  # no actions: no end in sight


# --- the JSON record -----------------------------------------------------------------------------

finite = st.floats(-1e10, 1e10, allow_nan=False, allow_infinity=False)
states = st.builds(
    AddressState,
    address=st.sampled_from(["", ADDRESS, "0x" + "01" * 20]),
    used=st.integers(0, 10**7),
    cap=st.integers(0, 10**7),
    cum_vlm=st.floats(0, 1e12, allow_nan=False),
    started_at=finite,
    horizon_end=finite,
    synced_at=st.none() | finite,
    sync_claimed_at=st.none() | finite,
    tokens=finite,
    tokens_at=finite,
    throttled=st.booleans(),
    next_slot=finite,
    warned=st.booleans(),
    minutes=st.lists(
        st.tuples(st.integers(-(10**8), 10**8), st.integers(0, 10**6)), max_size=5
    ).map(tuple),
)

#: A record with every field away from its default (so a field that is not stored shows).
FULL = AddressState(
    address=ADDRESS,
    used=123,
    cap=4_567,
    cum_vlm=89.5,
    started_at=1.5,
    horizon_end=2.5,
    synced_at=3.5,
    sync_claimed_at=4.5,
    tokens=5.5,
    tokens_at=6.5,
    throttled=True,
    next_slot=7.5,
    warned=True,
    minutes=((8, 9), (10, 11)),
)


@given(states)
def test_the_record_round_trips_through_json_text(state: AddressState) -> None:
    text = json.dumps(state.to_json(), allow_nan=False)
    assert AddressState.from_json(json.loads(text), where="x") == state


@pytest.mark.parametrize(
    "state",
    [FULL, replace(FULL, synced_at=None, sync_claimed_at=None), replace(FULL, throttled=False)],
)
def test_the_json_form_is_json_native_and_versioned(state: AddressState) -> None:
    """What ``to_json`` gives is what a store hands back (lists, not tuples), with version 1."""
    raw = state.to_json()
    assert raw == json.loads(json.dumps(raw))
    assert raw["version"] == 1
    assert raw["minutes"] == [[m, c] for m, c in state.minutes]
    assert AddressState.from_json(raw, where="x") == state


def test_a_record_without_an_address_is_read_as_the_empty_address() -> None:
    raw = FULL.to_json()
    del raw["address"]
    assert AddressState.from_json(raw, where="x") == replace(FULL, address="")


WHERE = "/srv/bot/address.json"
REQUIRED = [f.name for f in dataclasses.fields(AddressState) if f.name != "address"]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "a string",
        42,
        {k: v for k, v in FULL.to_json().items() if k != "version"},
        {**FULL.to_json(), "version": 2},
        {**FULL.to_json(), "version": 0},
        {**FULL.to_json(), "version": "1"},
    ],
)
def test_a_record_that_is_not_version_1_is_refused_naming_where(raw: Any) -> None:
    with pytest.raises(StateCorruptedError, match="not a version-1 record") as info:
        AddressState.from_json(raw, where=WHERE)
    assert info.value.path == WHERE
    assert WHERE in str(info.value)
    assert "delete it" in str(info.value)  # what to do next


def test_the_refusal_quotes_only_the_start_of_the_record() -> None:
    raw = "x" * 200
    with pytest.raises(StateCorruptedError) as info:
        AddressState.from_json(raw, where=WHERE)
    assert "x" * 80 in str(info.value)
    assert "x" * 81 not in str(info.value)


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_record_missing_a_field_is_refused(missing: str) -> None:
    raw = FULL.to_json()
    del raw[missing]
    with pytest.raises(StateCorruptedError, match="has a bad field") as info:
        AddressState.from_json(raw, where=WHERE)
    assert info.value.path == WHERE
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("used", "many"),
        ("used", None),
        ("cap", [1]),
        ("cum_vlm", "lots"),
        ("started_at", None),
        ("horizon_end", "soon"),
        ("synced_at", "yesterday"),
        ("sync_claimed_at", {}),
        ("tokens", "five"),
        ("tokens_at", None),
        ("next_slot", "later"),
        ("minutes", 5),
        ("minutes", [[1]]),
        ("minutes", [[1, "two"]]),
        # values a loose reading would take for something else
        ("throttled", "false"),
        ("warned", 0),
        ("used", -5),
        ("used", 2.7),
        ("cap", True),
        ("cap", "10000"),
        ("tokens", float("nan")),
        ("next_slot", float("inf")),
        ("cum_vlm", float("-inf")),
        ("synced_at", True),
        ("address", 7),
        ("minutes", [[1.5, 2]]),
        ("minutes", [[1, -2]]),
        ("minutes", "[[1, 2]]"),
    ],
)
def test_a_record_with_a_bad_field_is_refused_never_read_as_zeros(name: str, value: Any) -> None:
    raw = {**FULL.to_json(), name: value}
    with pytest.raises(StateCorruptedError, match="has a bad field") as info:
        AddressState.from_json(raw, where=WHERE)
    assert info.value.path == WHERE
    assert WHERE in str(info.value)
    assert info.value.__cause__ is not None


# --- the last hour's pace and the runway ---------------------------------------------------------


def reference_per_hour(minutes: list[tuple[int, int]], started_at: float, now: float) -> float:
    """Actions in the 60 minutes up to ``now``'s minute, per hour of the budget's age (at
    least a minute, at most the hour)."""
    this_minute = math.floor(now / 60)
    recent = sum(c for m, c in minutes if this_minute - 60 < m <= this_minute)
    age = min(max(now - started_at, 60.0), 3600.0)
    return recent * 3600.0 / age


@given(
    now=st.floats(-1e9, 1e10, allow_nan=False),
    offsets=st.lists(st.tuples(st.integers(-70, 0), st.integers(0, 100)), max_size=6),
    age=st.floats(-100.0, 10_000.0, allow_nan=False),
)
def test_per_hour_counts_the_last_sixty_minutes_over_the_age(
    now: float, offsets: list[tuple[int, int]], age: float
) -> None:
    this_minute = math.floor(now / 60)
    minutes = sorted({this_minute + dm: c for dm, c in offsets}.items())
    state = AddressState(started_at=now - age, minutes=tuple(minutes))
    assert state.per_hour(now) == pytest.approx(
        reference_per_hour(minutes, now - age, now), rel=1e-9
    )


def test_per_hour_window_boundary_is_sixty_minutes() -> None:
    now = 100 * 60 + 30.0  # in minute 100
    inside = AddressState(started_at=0.0, minutes=((41, 7),))  # 59 minutes before
    outside = AddressState(started_at=0.0, minutes=((40, 7),))  # 60 minutes before
    assert inside.per_hour(now) == 7.0
    assert outside.per_hour(now) == 0.0
    assert inside.per_hour(100 * 60 - 0.5) == 7.0  # the end of minute 99: 58 minutes on


def test_per_hour_before_the_epoch_uses_the_floor_of_the_minute() -> None:
    # now = -30 s is in minute -1 (not 0): the hour is minutes -60 .. -1.
    assert AddressState(started_at=-7200.0, minutes=((-60, 5),)).per_hour(-30.0) == 5.0
    assert AddressState(started_at=-7200.0, minutes=((-61, 5),)).per_hour(-30.0) == 0.0
    assert AddressState(started_at=-7200.0, minutes=((0, 5),)).per_hour(-30.0) == 5.0


@pytest.mark.parametrize(
    ("age", "per_hour"),
    [
        (30.0, 3 * 60.0),  # younger than a minute: scaled as a minute old
        (60.0, 3 * 60.0),
        (1800.0, 3 * 2.0),  # half an hour old: doubled
        (3600.0, 3.0),
        (7200.0, 3.0),  # older than an hour: the last hour only
    ],
)
def test_per_hour_scales_up_a_budget_younger_than_an_hour(age: float, per_hour: float) -> None:
    now = 50_000.0
    state = AddressState(started_at=now - age, minutes=((int(now // 60), 3),))
    assert state.per_hour(now) == pytest.approx(per_hour)


@pytest.mark.parametrize(("used", "cap", "remaining"), [(0, 10, 10), (4, 10, 6), (10, 10, 0)])
def test_remaining_is_cap_minus_used(used: int, cap: int, remaining: int) -> None:
    assert AddressState(used=used, cap=cap).remaining == remaining


def test_remaining_is_never_negative_over_the_cap() -> None:
    assert AddressState(used=15, cap=10).remaining == 0


def test_runway_is_remaining_at_the_last_hours_pace() -> None:
    now = 100_000.0
    minute = int(now // 60)
    one_per_hour = AddressState(cap=100, used=1, started_at=0.0, minutes=((minute, 1),))
    assert one_per_hour.per_hour(now) == 1.0
    assert one_per_hour.runway(now) == timedelta(hours=99)
    four_per_hour = replace(one_per_hour, minutes=((minute - 1, 1), (minute, 3)))
    assert four_per_hour.runway(now) == timedelta(hours=99 / 4)
    spent = replace(four_per_hour, used=100)
    assert spent.runway(now) == timedelta(0)
    idle = replace(one_per_hour, minutes=((minute - 60, 1),))
    assert idle.runway(now) is None


@given(
    used=st.integers(0, 20_000),
    cap=st.integers(0, 20_000),
    count=st.integers(0, 500),
    now=st.floats(3600.0, 1e10, allow_nan=False),
)
def test_runway_property(used: int, cap: int, count: int, now: float) -> None:
    state = AddressState(
        used=used, cap=cap, started_at=0.0, minutes=((math.floor(now / 60), count),)
    )
    runway = state.runway(now)
    if count == 0:
        assert runway is None
    else:
        assert runway is not None
        assert runway.total_seconds() == pytest.approx(max(0, cap - used) / count * 3600, rel=1e-6)


# --- the minute counts ---------------------------------------------------------------------------


@given(
    t0=st.floats(-1e9, 1e10, allow_nan=False),
    steps=st.lists(st.tuples(st.floats(0, 1000, allow_nan=False), st.integers(1, 5)), max_size=30),
)
def test_counted_actions_are_kept_per_minute_for_the_last_hour(
    t0: float, steps: list[tuple[float, int]]
) -> None:
    """Cancels (never paced) at non-decreasing times: ``minutes`` is, in order, the count of
    each minute (``floor(t / 60)``) of the hour up to the last action's minute."""
    state = replace(start(t0, PACE), cap=10**9)
    now = t0
    counts: Counter[int] = Counter()
    last_minute = math.floor(t0 / 60)
    for dt, n in steps:
        now += dt
        state, decision = decide(state, now, n, "cancel", PACE)
        assert decision == Decision(True, 0.0, False)
        counts[math.floor(now / 60)] += n
        last_minute = math.floor(now / 60)
    expected = tuple(sorted((m, c) for m, c in counts.items() if m > last_minute - 60))
    assert state.minutes == expected
    assert state.used == sum(n for _, n in steps)


def test_minutes_merge_within_a_minute_and_open_a_new_one_after_it() -> None:
    state = replace(start(0.0, PACE), cap=10**6)
    for t, n in [(60.0, 1), (119.5, 2), (120.0, 3), (125.0, 1), (3659.0, 4), (3660.0, 5)]:
        state, _ = decide(state, t, n, "cancel", PACE)
    # minute 1 (60 s .. 120 s) falls out of the hour at minute 61; minute 2 is still in it
    assert state.minutes == ((2, 4), (60, 4), (61, 5))
    assert state.used == 16


def test_minutes_before_the_epoch_are_floored() -> None:
    state = replace(start(-200.0, PACE), cap=10**6)
    state, _ = decide(state, -90.0, 1, "cancel", PACE)  # minute -2
    state, _ = decide(state, -30.0, 2, "cancel", PACE)  # minute -1
    state, _ = decide(state, -1.0, 3, "cancel", PACE)  # minute -1
    assert state.minutes == ((-2, 1), (-1, 5))


# --- exact boundaries of decide ------------------------------------------------------------------


def past_horizon(used: int, cap: int, *, throttled: bool = False) -> AddressState:
    """A record past its horizon: nothing is paced, so only the cap and the throttle act."""
    return replace(start(0.0, PACE), used=used, cap=cap, throttled=throttled, horizon_end=-1.0)


@pytest.mark.parametrize("kind", ["action", "close"])
def test_actions_and_closes_up_to_the_cap_go_at_once_and_over_it_are_throttled(kind: Kind) -> None:
    now = 100.0
    at_cap, decision = decide(past_horizon(7, 10), now, 3, kind, PACE)
    assert decision == Decision(True, 0.0, False)
    assert (at_cap.used, at_cap.throttled) == (10, False)
    over, decision = decide(past_horizon(7, 10), now, 4, kind, PACE)
    assert decision == Decision(True, 0.0, True)  # the first throttled slot is free
    assert (over.used, over.throttled, over.next_slot) == (11, True, now + 11.0)


def test_cancels_up_to_the_allowance_go_at_once_and_over_it_take_a_slot() -> None:
    now = 100.0
    state = past_horizon(15, 10)  # over the cap; the allowance is 20
    within, decision = decide(state, now, 5, "cancel", PACE)
    assert decision == Decision(True, 0.0, False)
    assert (within.used, within.throttled, within.next_slot) == (20, False, state.next_slot)
    over, decision = decide(state, now, 6, "cancel", PACE)
    assert decision == Decision(True, 0.0, True)
    assert (over.used, over.throttled, over.next_slot) == (21, True, now + 11.0)


def test_a_cancel_within_the_allowance_while_throttled_says_so_and_keeps_the_slots() -> None:
    state = replace(past_horizon(12, 10, throttled=True), next_slot=150.0)
    new, decision = decide(state, 100.0, 1, "cancel", PACE)
    assert decision == Decision(True, 0.0, True)
    assert (new.used, new.throttled, new.next_slot) == (13, True, 150.0)


def test_throttled_actions_go_one_per_interval() -> None:
    state = replace(past_horizon(20, 10, throttled=True), next_slot=111.0)
    early, decision = decide(state, 100.0, 1, "action", PACE)
    assert decision == Decision(False, 11.0, True)
    assert (early.used, early.next_slot) == (20, 111.0)
    on_time, decision = decide(state, 111.0, 1, "action", PACE)
    assert decision == Decision(True, 0.0, True)
    assert (on_time.used, on_time.next_slot, on_time.throttled) == (21, 122.0, True)
    late, decision = decide(state, 130.0, 2, "action", PACE)
    assert decision == Decision(True, 0.0, True)
    assert (late.used, late.next_slot) == (22, 141.0)


def test_a_throttled_action_within_the_cap_still_waits_for_its_slot() -> None:
    """Throttled mode (the exchange refused) holds until a sync shows headroom."""
    state = replace(past_horizon(0, 10, throttled=True), next_slot=111.0)
    new, decision = decide(state, 100.0, 1, "action", PACE)
    assert decision == Decision(False, 11.0, True)
    assert new.throttled and new.used == 0


@pytest.mark.parametrize("kind", ["cancel", "close"])
def test_throttled_cancels_and_closes_reserve_the_next_slot(kind: Kind) -> None:
    state = replace(past_horizon(30, 10, throttled=True), next_slot=111.0)  # over both allowances
    first, decision = decide(state, 100.0, 1, kind, PACE)
    assert decision == Decision(True, 11.0, True)  # counted now, sent at the slot
    assert (first.used, first.next_slot) == (31, 122.0)
    second, decision = decide(first, 100.0, 1, kind, PACE)
    assert decision == Decision(True, 22.0, True)
    assert (second.used, second.next_slot) == (32, 133.0)
    free, decision = decide(state, 200.0, 1, kind, PACE)  # the slot is long past
    assert decision == Decision(True, 0.0, True)
    assert free.next_slot == 211.0


def test_an_action_after_a_reserved_slot_waits_behind_it() -> None:
    state = replace(past_horizon(30, 10, throttled=True), next_slot=100.0)
    state, _ = decide(state, 100.0, 1, "cancel", PACE)
    _, decision = decide(state, 100.0, 1, "action", PACE)
    assert decision == Decision(False, 11.0, True)


def test_reserved_slots_more_than_100_intervals_ahead_are_a_clock_step() -> None:
    now = 1_000.0
    base = past_horizon(20, 10, throttled=True)
    farthest = replace(base, next_slot=now + 100 * 11.0)
    _, decision = decide(farthest, now, 1, "action", PACE)
    assert decision == Decision(False, 1100.0, True)  # 100 slots ahead: still believed
    beyond = replace(base, next_slot=now + 100 * 11.0 + 0.5)
    new, decision = decide(beyond, now, 1, "action", PACE)
    assert decision == Decision(True, 0.0, True)  # the clock stepped back: slots forgotten
    assert new.next_slot == now + 11.0
    stepped = replace(base, next_slot=now + 100.5 * 11.0)
    _, decision = decide(stepped, now, 1, "action", PACE)
    assert decision.admitted


def test_the_pace_spends_the_burst_then_waits_for_the_refill() -> None:
    pace = Pace(lasts=1000.0, burst=2, throttle_interval=11.0)
    state = replace(start(0.0, pace), cap=101)  # 101 over 1000 s
    state, decision = decide(state, 0.0, 2, "action", pace)
    assert decision == Decision(True, 0.0, False)
    assert (state.tokens, state.used) == (0.0, 2)
    state, decision = decide(state, 0.0, 1, "action", pace)
    # rate = 99 remaining / 1000 s; one token takes 1000 / 99 s
    assert not decision.admitted and not decision.throttled
    assert decision.wait == pytest.approx(1000 / 99)
    state, decision = decide(state, 5.0, 1, "action", pace)  # part refilled, at 99 / 995 s
    assert decision.wait == pytest.approx((1 - 99 / 995 * 5) / (99 / 995))
    assert state.tokens == pytest.approx(99 / 995 * 5) and state.tokens_at == 5.0
    state, decision = decide(state, 12.0, 1, "action", pace)
    assert decision == Decision(True, 0.0, False)
    assert state.tokens == pytest.approx(99 / 995 * 5 + 99 / 988 * 7 - 1)
    assert (state.used, state.tokens_at) == (3, 12.0)


def test_the_refill_never_exceeds_the_burst() -> None:
    pace = Pace(lasts=1000.0, burst=3, throttle_interval=11.0)
    state = replace(start(0.0, pace), cap=10**6, tokens=0.0)
    state, decision = decide(state, 500.0, 1, "action", pace)
    assert decision.admitted
    assert state.tokens == 2.0  # refilled to 3 (capped), one spent


def test_the_last_action_before_the_cap_is_paced_at_one_per_time_left() -> None:
    """With one action left, the refill rate is 1 / time left."""
    pace = Pace(lasts=100.0, burst=1, throttle_interval=11.0)
    state = replace(start(0.0, pace), used=9, cap=10, tokens=0.0)
    _, decision = decide(state, 0.0, 1, "action", pace)
    assert decision == Decision(False, 100.0, False)


def test_a_batch_larger_than_the_burst_needs_a_full_bucket_and_leaves_a_debt() -> None:
    pace = Pace(lasts=1000.0, burst=2, throttle_interval=11.0)
    state = replace(start(0.0, pace), cap=10**6)
    state, decision = decide(state, 0.0, 5, "action", pace)
    assert decision == Decision(True, 0.0, False)
    assert (state.tokens, state.used) == (-3.0, 5)
    _, decision = decide(state, 0.0, 1, "action", pace)
    assert not decision.admitted


def test_closes_within_the_cap_are_never_paced() -> None:
    pace = Pace(lasts=1000.0, burst=1, throttle_interval=11.0)
    state = replace(start(0.0, pace), cap=100, tokens=0.0)
    state, decision = decide(state, 0.0, 3, "close", pace)
    assert decision == Decision(True, 0.0, False)
    assert (state.used, state.tokens, state.tokens_at) == (3, 0.0, 0.0)


def test_past_the_horizon_actions_are_not_paced_and_just_before_it_they_are() -> None:
    pace = Pace(lasts=100.0, burst=1, throttle_interval=11.0)
    empty = replace(start(0.0, pace), cap=100, tokens=0.0)
    at_end, decision = decide(empty, 100.0, 1, "action", pace)
    assert decision == Decision(True, 0.0, False)
    assert (at_end.used, at_end.tokens, at_end.tokens_at) == (1, 0.0, 0.0)
    after, decision = decide(empty, 150.0, 1, "action", pace)
    assert decision == Decision(True, 0.0, False)
    assert (after.used, after.tokens) == (1, 0.0)
    before, decision = decide(empty, 99.5, 1, "action", pace)
    # 0.5 s left, 100 remaining: 200 a second; the bucket was last filled at 0 s
    assert decision == Decision(True, 0.0, False)
    assert before.tokens == pytest.approx(0.0)
    just_filled = replace(empty, tokens_at=99.5)
    _, decision = decide(just_filled, 99.5, 1, "action", pace)
    assert (decision.admitted, decision.throttled) == (False, False)
    assert decision.wait == pytest.approx(1 / 200)


def test_a_refill_timestamp_in_the_future_refills_nothing() -> None:
    pace = Pace(lasts=1000.0, burst=2, throttle_interval=11.0)
    state = replace(start(0.0, pace), cap=1000, tokens=0.0, tokens_at=50.0)
    new, decision = decide(state, 0.0, 1, "action", pace)  # the clock stepped back 50 s
    assert decision == Decision(False, 1.0, False)
    assert (new.tokens, new.tokens_at) == (0.0, 0.0)


# --- synced and refused --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("was_throttled", "used", "cap", "throttled"),
    [
        (True, 10, 10, True),  # no headroom: still throttled
        (True, 11, 10, True),
        (True, 9, 10, False),  # headroom: throttled mode ends
        (False, 10, 10, False),  # a sync never enters throttled mode: decide does
        (False, 11, 10, False),
        (False, 9, 10, False),
    ],
)
def test_a_sync_takes_the_exchanges_count_and_only_headroom_ends_throttling(
    was_throttled: bool, used: int, cap: int, throttled: bool
) -> None:
    state = replace(FULL, throttled=was_throttled)
    answer = {"nRequestsUsed": used, "nRequestsCap": cap, "cumVlm": "1234.5"}
    new = synced(state, 99.0, answer)
    assert new == replace(
        state,
        used=used,
        cap=cap,
        cum_vlm=1234.5,
        synced_at=99.0,
        sync_claimed_at=None,
        throttled=throttled,
    )


@pytest.mark.parametrize(
    ("used", "next_slot", "expected_used", "expected_slot"),
    [
        (5, 0.0, 10, 111.0),  # the exchange knows better: at least the cap was spent
        (12, 0.0, 12, 111.0),
        (5, 500.0, 10, 500.0),  # a slot already further out is kept
    ],
)
def test_a_refusal_throttles_and_pushes_the_next_slot_an_interval_out(
    used: int, next_slot: float, expected_used: int, expected_slot: float
) -> None:
    state = replace(start(0.0, PACE), used=used, cap=10, next_slot=next_slot)
    new = refused(state, 100.0, 11.0)
    assert new == replace(state, used=expected_used, throttled=True, next_slot=expected_slot)


# --- the reference model, driven by a state machine ----------------------------------------------


@dataclasses.dataclass
class Model:
    """The pacing and throttle rule as the docs state it (issue #14, account-limits.md)."""

    used: int
    cap: int
    throttled: bool
    next_slot: float
    tokens: float
    tokens_at: float
    horizon_end: float
    burst: int
    interval: float

    def decide(self, now: float, n: int, kind: Kind) -> Decision:
        if self.next_slot > now + 100 * self.interval:
            self.next_slot = now  # more than 100 slots reserved: the clock stepped back
        allowance = min(self.cap + 100_000, 2 * self.cap) if kind == "cancel" else self.cap
        fits = self.used + n <= allowance
        if fits and kind == "cancel":  # cancels within their allowance: at once, always
            self.used += n
            return Decision(True, 0.0, self.throttled)
        if fits and not self.throttled:
            if kind == "close" or now >= self.horizon_end:  # closes and past the horizon
                self.used += n
                return Decision(True, 0.0, False)
            rate = max(self.cap - self.used, 1) / (self.horizon_end - now)
            self.tokens = min(
                float(self.burst), self.tokens + rate * max(0.0, now - self.tokens_at)
            )
            self.tokens_at = now
            need = min(n, self.burst)
            if self.tokens >= need:
                self.tokens -= n
                self.used += n
                return Decision(True, 0.0, False)
            return Decision(False, (need - self.tokens) / rate, False)
        self.throttled = True  # one action per interval; cancels and closes reserve a slot
        if kind != "action":
            slot = max(self.next_slot, now)
            self.next_slot = slot + self.interval
            self.used += n
            return Decision(True, slot - now, True)
        if self.next_slot <= now:
            self.next_slot = now + self.interval
            self.used += n
            return Decision(True, 0.0, True)
        return Decision(False, self.next_slot - now, True)

    def sync(self, used: int, cap: int) -> None:
        self.used, self.cap = used, cap
        self.throttled = self.throttled and used >= cap

    def refuse(self, now: float, interval: float) -> None:
        self.used = max(self.used, self.cap)
        self.throttled = True
        self.next_slot = max(self.next_slot, now + interval)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


class DecideMachine(RuleBasedStateMachine):
    """decide / synced / refused against :class:`Model`, with waits, clock steps both ways
    and small caps, so the cap, the cancel allowance, the horizon and the throttle all act."""

    def __init__(self) -> None:
        super().__init__()
        self.pace = PACE
        self.now = 0.0
        self.state = start(0.0, self.pace)
        self.model = self.model_of(self.state)
        self.last = Decision(True, 0.0, False)

    def model_of(self, s: AddressState) -> Model:
        return Model(
            used=s.used,
            cap=s.cap,
            throttled=s.throttled,
            next_slot=s.next_slot,
            tokens=s.tokens,
            tokens_at=s.tokens_at,
            horizon_end=s.horizon_end,
            burst=self.pace.burst,
            interval=self.pace.throttle_interval,
        )

    @initialize(
        t0=st.floats(-1e6, 1e9, allow_nan=False),
        lasts=st.floats(1.0, 600.0),
        burst=st.integers(1, 4),
        interval=st.floats(1.0, 20.0),
        cap=st.integers(1, 25),
    )
    def begin(self, t0: float, lasts: float, burst: int, interval: float, cap: int) -> None:
        self.pace = Pace(lasts=lasts, burst=burst, throttle_interval=interval)
        self.now = t0
        self.state = replace(start(t0, self.pace), cap=cap)
        self.model = self.model_of(self.state)

    @rule(n=st.integers(1, 4), kind=st.sampled_from(ALL_KINDS))
    def act(self, n: int, kind: Kind) -> None:
        before = self.state
        self.state, decision = decide(self.state, self.now, n, kind, self.pace)
        expected = self.model.decide(self.now, n, kind)
        assert (decision.admitted, decision.throttled) == (expected.admitted, expected.throttled)
        assert close(decision.wait, expected.wait), (decision, expected)
        assert decision.wait >= 0.0
        if not decision.admitted:
            assert self.state.used == before.used
        self.last = decision

    @precondition(lambda self: self.last.wait > 0)
    @rule()
    def wait_as_told(self) -> None:
        self.now += self.last.wait
        self.last = Decision(True, 0.0, False)

    @rule(dt=st.floats(0.0, 60.0) | st.sampled_from([0.5, 1.0, 11.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(dt=st.floats(1.0, 5000.0))
    def clock_steps_back(self, dt: float) -> None:
        self.now -= dt

    @rule(interval=st.floats(1.0, 30.0))
    def refuse(self, interval: float) -> None:
        self.state = refused(self.state, self.now, interval)
        self.model.refuse(self.now, interval)

    @rule(used=st.integers(0, 60), cap=st.integers(1, 40))
    def sync(self, used: int, cap: int) -> None:
        answer = {"nRequestsUsed": used, "nRequestsCap": cap, "cumVlm": "0"}
        self.state = synced(self.state, self.now, answer)
        self.model.sync(used, cap)

    @invariant()
    def the_record_is_the_models(self) -> None:
        s, m = self.state, self.model
        assert (s.used, s.cap, s.throttled) == (m.used, m.cap, m.throttled)
        assert close(s.next_slot, m.next_slot), (s.next_slot, m.next_slot)
        assert close(s.tokens, m.tokens), (s.tokens, m.tokens)
        assert close(s.tokens_at, m.tokens_at)
        assert s.horizon_end == m.horizon_end
        assert s.tokens <= self.pace.burst

    @invariant()
    def the_record_round_trips(self) -> None:
        raw = json.loads(json.dumps(self.state.to_json()))
        assert AddressState.from_json(raw, where="test") == self.state


TestDecideMachine = DecideMachine.TestCase
TestDecideMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# --- the status an operator reads ----------------------------------------------------------------


def test_the_status_of_a_record_reports_every_number() -> None:
    now = 1_700_000_000.0
    minute = int(now // 60)
    state = replace(
        FULL,
        used=120,
        cap=10_000,
        started_at=now - 7200,
        horizon_end=now + 86_400,
        synced_at=now - 30,
        throttled=False,
        minutes=((minute - 1, 20), (minute, 10)),
    )
    status = AddressStatus.of_record(state.to_json(), location="state/address.json", now=now)
    assert status == AddressStatus(
        address=ADDRESS,
        used=120,
        cap=10_000,
        cancel_cap=20_000,
        remaining=9_880,
        per_hour=30.0,
        runway=timedelta(hours=9_880 / 30),
        throttled=False,
        horizon_end=datetime.fromtimestamp(now + 86_400, tz=timezone.utc),
        synced_at=datetime.fromtimestamp(now - 30, tz=timezone.utc),
        location="state/address.json",
    )
    assert status.to_json() == {
        "address": ADDRESS,
        "used": 120,
        "cap": 10_000,
        "cancel_cap": 20_000,
        "remaining": 9_880,
        "per_hour": 30.0,
        "runway_seconds": 9_880 / 30 * 3600,
        "throttled": False,
        "horizon_end": "2023-11-15T22:13:20+00:00",
        "synced_at": "2023-11-14T22:12:50+00:00",
        "location": "state/address.json",
    }


def test_the_status_of_a_never_synced_idle_record() -> None:
    status = AddressStatus.of_record(
        replace(FULL, synced_at=None, minutes=(), throttled=True).to_json(), location="x", now=0.0
    )
    assert (status.synced_at, status.runway, status.per_hour, status.throttled) == (
        None,
        None,
        0.0,
        True,
    )
    out = status.to_json()
    assert (out["synced_at"], out["runway_seconds"]) == (None, None)
    assert "runway" not in out
    assert json.loads(json.dumps(out)) == out


def test_the_status_of_a_corrupted_record_is_refused_naming_where() -> None:
    with pytest.raises(StateCorruptedError) as info:
        AddressStatus.of_record({"version": 1}, location=WHERE, now=0.0)
    assert info.value.path == WHERE


def status_with(runway: timedelta | None, *, throttled: bool = False) -> AddressStatus:
    return AddressStatus(
        address=ADDRESS,
        used=120,
        cap=10_000,
        cancel_cap=20_000,
        remaining=9_880,
        per_hour=1.0,
        runway=runway,
        throttled=throttled,
        horizon_end=datetime.fromtimestamp(0, tz=timezone.utc),
        synced_at=None,
        location="x",
    )


@pytest.mark.parametrize(
    ("runway", "throttled", "summary"),
    [
        (timedelta(days=5, hours=3, minutes=30), False, "used 120/10000, runway 5d 3h"),
        (timedelta(hours=3), False, "used 120/10000, runway 0d 3h"),
        (timedelta(hours=24), False, "used 120/10000, runway 1d 0h"),
        (timedelta(hours=23, minutes=59), False, "used 120/10000, runway 0d 23h"),
        (timedelta(days=30, hours=23), True, "used 120/10000, runway 30d 23h, throttled"),
        (timedelta(0), True, "used 120/10000, runway 0d 0h, throttled"),
        (None, False, "used 120/10000, runway unbounded"),
        (None, True, "used 120/10000, runway unbounded, throttled"),
    ],
)
def test_the_summary_line(runway: timedelta | None, throttled: bool, summary: str) -> None:
    assert status_with(runway, throttled=throttled).summary() == summary
