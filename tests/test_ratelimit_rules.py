"""The reservation rule itself (pure, no I/O) against a brute-force reference model."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_trading import _limiter_rules as rules

LIMITS = [(30, 2.0), (8, 0.5)]  # (budget, period): a slow budget and a burst cap


def fresh_state() -> rules.LimiterState:
    return rules.LimiterState(rings=[rules.ring_for(b, p, 0.0) for b, p in LIMITS])


def windows_ok(entries: list[tuple[float, int]]) -> bool:
    """No sliding window [s, s + period) of any limit holds more than its budget."""
    ordered = sorted(entries)
    for budget, period in LIMITS:
        for i, (start, _) in enumerate(ordered):
            total = sum(w for t, w in ordered[i:] if t < start + period - 1e-9)
            if total > budget:
                return False
    return True


def reference_earliest(entries: list[tuple[float, int]], start: float, weight: int) -> float:
    """Brute force: the earliest t >= start at which every window (t - period, t] fits."""
    candidates = sorted({start} | {t + p for t, _ in entries for _, p in LIMITS if t + p > start})
    for t in candidates:
        if all(sum(w for te, w in entries if te > t - p + 1e-9) + weight <= b for b, p in LIMITS):
            return t
    raise AssertionError("nothing fits")  # pragma: no cover


class ReservationMachine(RuleBasedStateMachine):
    """Reserve (with or without a wait limit), release, pause, let time pass.

    Model: the exact reserved times. Properties: no window over budget; FIFO (never before an
    earlier reservation); never later than the reference's earliest time by more than one
    bucket (rounding stamps up is the only slack)."""

    def __init__(self) -> None:
        super().__init__()
        self.state = fresh_state()
        self.now = 1000.0
        self.entries: list[tuple[float, int]] = []  # (reserved time, weight), all reservations
        self.live: list[rules.Decision] = []  # reservations not yet reached
        self.paused_until = 0.0
        self.tail = 0.0
        self.tokens = 0
        self.token_of: list[int] = []
        self.next = 0.0
        self.contended_until = 0.0
        self.slack = max(r.width_ms for r in self.state.rings) / 1000 + 0.002
        rules.trim(self.state, self.now)

    @rule(weight=st.integers(1, 8), limit=st.none() | st.floats(0, 3))
    def reserve(self, weight: int, limit: float | None) -> None:
        rules.trim(self.state, self.now)
        self.tokens += 1
        decision = rules.plan(self.state, self.now, weight, token=self.tokens)
        at = self.now + decision.wait
        start = max(self.now, self.paused_until, self.tail)
        if self.now < self.contended_until:  # contended: paced at the average rate
            start = max(start, self.next)
        best = reference_earliest(self.entries, start, weight)
        assert at <= best + self.slack, (best, at)  # never later than FIFO allows
        assert at >= self.now - 1e-9
        if limit is not None and decision.wait > limit:
            return  # refused: nothing recorded
        rules.apply(self.state, decision)
        self.entries.append((at, weight))
        self.token_of.append(decision.token)
        if decision.paced:
            self.next = max(self.next, at) + max(weight * p / b for b, p in LIMITS)
        if decision.wait > 0:
            self.contended_until = max(self.contended_until, decision.at_ms / 1000 + 2.0)
        if decision.wait > 0:
            self.tail = max(self.tail, decision.at_ms / 1000)
            self.live.append(decision)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        decision = data.draw(st.sampled_from(self.live))
        rules.trim(self.state, self.now)
        found = rules.release(self.state, decision.at_ms, decision.weight, decision.token)
        self.live.remove(decision)
        if found:
            self.entries = self._without(decision)
            self.tail = max([d.at_ms / 1000 for d in self.live], default=0.0)

    def _without(self, decision: rules.Decision) -> list[tuple[float, int]]:
        pos = self.token_of.index(decision.token)
        del self.token_of[pos]
        return self.entries[:pos] + self.entries[pos + 1 :]

    @rule(seconds=st.floats(0, 2.5))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        rules.trim(self.state, self.now)
        self.live = [d for d in self.live if d.at_ms / 1000 > self.now]
        if not self.live:
            self.tail = 0.0

    @rule(seconds=st.floats(0, 3))
    def pause(self, seconds: float) -> None:
        rules.pause(self.state, self.now, seconds)
        self.paused_until = max(self.paused_until, math.ceil((self.now + seconds) * 1000) / 1000)

    @invariant()
    def never_over_budget(self) -> None:
        assert windows_ok(self.entries)

    @invariant()
    def state_round_trips_through_json(self) -> None:
        data = json.loads(json.dumps(rules.to_json(self.state)))
        again = rules.from_json(data)
        assert rules.to_json(again) == json.loads(json.dumps(rules.to_json(self.state)))


TestReservationMachine = ReservationMachine.TestCase
TestReservationMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.tuples(st.integers(1, 8), st.floats(0, 0.3)), min_size=1, max_size=40))
def test_no_reservation_ever_moves_and_nobody_starves(arrivals: list[tuple[int, float]]) -> None:
    """Whatever the weights: a reservation keeps its time (later arrivals only backfill gaps),
    every window stays within budget, and the queue drains at the budget's rate."""
    state = fresh_state()
    now = 50.0
    entries: list[tuple[float, int]] = []
    for weight, gap in arrivals:
        now += gap
        rules.trim(state, now)
        before = [list(q) for q in state.queue]
        decision = rules.plan(state, now, weight)
        rules.apply(state, decision)
        entries.append((now + decision.wait, weight))
        assert all(q in state.queue for q in before)  # nobody ahead was moved
    assert windows_ok(entries)
    total = sum(w for w, _ in arrivals)
    assert max(t for t, _ in entries) - now <= (total / 8 + 1) * 0.5 + 1


def test_clock_step_back_in_shared_state_moves_stored_times_with_it() -> None:
    """Issue #11 item 14: a wall clock stepped back an hour neither wedges nor widens."""
    state = fresh_state()
    rules.trim(state, 10_000.0)
    for _ in range(8):
        rules.apply(state, rules.plan(state, 10_000.0, 1))
    assert rules.plan(state, 10_000.0, 1).wait > 0  # the burst cap is full
    healed = rules.trim(state, 6_400.0)  # an hour back
    assert healed == 3_600_000
    decision = rules.plan(state, 6_400.0, 1)
    assert 0 < decision.wait <= 0.5 + 0.01  # same wait as before the step, not an hour
    rules.trim(state, 6_400.51)
    assert rules.plan(state, 6_400.51, 8).wait == 0


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ([1, 2], "state"),
        ({"v": 1, "log": []}, "v"),
        ({"v": 2, "rings": [], "paused_until": float("nan")}, "paused_until"),
        ({"v": 2, "rings": [], "paused_until": float("inf")}, "paused_until"),
        (
            {"v": 2, "rings": [{"budget": 5, "period": 100, "width": 1, "buckets": [[1, 1e400]]}]},
            "rings[0].buckets[0]",
        ),
        (
            {
                "v": 2,
                "rings": [{"budget": 5, "period": 100, "width": 1, "buckets": [[2, 1], [1, 1]]}],
            },
            "rings[0].buckets[1]",
        ),
        ({"v": 2, "rings": "x"}, "rings"),
        ({"v": 2, "rings": [], "queue": [[1, 2]]}, "queue[0]"),
    ],
)
def test_a_bad_stored_state_names_the_field(data: object, where: str) -> None:
    """Issue #11 item 15: wrong shapes, NaN and 1e400 are named, never a raw TypeError."""
    with pytest.raises(rules.BadState) as info:
        rules.from_json(data)
    assert info.value.where == where


@settings(max_examples=40, deadline=None)
@given(
    think=st.lists(st.floats(0, 0.004), min_size=30, max_size=30),
    weights=st.lists(st.integers(1, 3), min_size=3, max_size=3),
)
def test_sharers_that_come_back_at_once_never_overfill_a_window(
    think: list[float], weights: list[int]
) -> None:
    """Three simulated sharers, each asking again right after its turn: the saturated case
    where backfilling and pacing interleave. Regression: a backfill once checked its window
    at its rounded-up stamp and let one unit too many in."""
    state = rules.LimiterState(rings=[rules.ring_for(40, 0.5, 0.0)])
    due = [0.0, 0.0, 0.0]
    entries: list[tuple[float, int]] = []
    for step in range(400):
        who = min(range(3), key=lambda i: due[i])
        now = due[who]
        weight = weights[(who + step) % 3]
        rules.trim(state, now)
        decision = rules.plan(state, now, weight)
        rules.apply(state, decision)
        entries.append((now + decision.wait, weight))
        due[who] = now + decision.wait + think[step % len(think)]
    ordered = sorted(entries)
    for i, (start, _) in enumerate(ordered):
        assert sum(w for t, w in ordered[i:] if t < start + 0.5 - 1e-9) <= 40


# --- the pieces, pinned one by one (so a flipped operator or a nudged constant is noticed) ---


def test_ring_for_sizes_buckets_from_the_period_and_in_flight() -> None:
    assert rules.ring_for(1200, 60.0, 0.0) == rules.Ring(1200, 60_000, 600)
    assert rules.ring_for(10, 1.0, 0.5) == rules.Ring(10, 1500, 15)
    assert rules.ring_for(3, 0.05, 0.0) == rules.Ring(3, 50, 1)  # never a zero-width bucket
    assert rules.ring_for(3, 0.0015, 0.0).period_ms == 2  # rounded up, never down
    assert rules.MAX_AHEAD_MS == 24 * 3600 * 1000


def test_tokens_are_40_bit_and_a_forked_child_draws_its_own() -> None:
    tokens = {rules.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(0 <= t < 2**40 for t in tokens)
    assert max(tokens) >= 2**39  # all 40 bits are used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, str(rules.new_token()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = int(os.read(read, 64))
    os.close(read)
    assert child != rules.new_token()  # reseeded after the fork: not the parent's next token


def test_ring_add_keeps_buckets_sorted_and_merged() -> None:
    ring = rules.Ring(100, 1000, 10)
    for stamp, weight in [(50, 1), (21, 2), (30, 3), (40, 4), (25, 5), (50, 6), (1, 7)]:
        ring.add(stamp, weight)
    assert list(ring.buckets) == [[1, 7], [3, 10], [4, 4], [5, 7]]  # 21, 25 and 30 -> 3
    assert ring.total == 28
    ring.remove(25, 2)  # bucket 3
    ring.remove(31, 9)  # bucket 4: at most what it holds
    ring.remove(999, 5)  # no such bucket: nothing
    assert list(ring.buckets) == [[1, 7], [3, 8], [4, 0], [5, 7]] and ring.total == 22
    ring.trim(0)  # drops the emptied bucket only when it reaches the front
    assert ring.buckets[0] == [1, 7]
    ring.trim(1010)  # bucket 1 (stamp 10) leaves at 1010
    assert [b[0] for b in ring.buckets] == [3, 4, 5] and ring.total == 15
    ring.trim(1030)  # bucket 3 leaves; the empty bucket 4 at the front goes with it
    assert list(ring.buckets) == [[5, 7]] and ring.total == 7


def test_ready_at_fits_used_at_read_the_window_exactly() -> None:
    ring = rules.Ring(10, 1000, 10)
    ring.add(100, 4)  # stamp 100
    ring.add(300, 5)  # stamp 300
    assert ring.ready_at(500.0, 1) == 500.0  # 9 + 1 fits
    assert ring.ready_at(500.0, 2) == 1100.0  # the 4 at 100 must leave first
    assert ring.ready_at(1100.0, 2) == 1100.0  # ...and it has left at exactly 1100
    assert ring.ready_at(500.0, 6) == 1300.0  # both must leave
    assert ring.ready_at(500.0, 11) == 1500.0  # over the budget: one period on
    assert ring.used_at(500.0) == 9 and ring.used_at(1100.0) == 5 and ring.used_at(1300.0) == 0
    assert ring.used_at(89.0) == 0 and ring.used_at(90.0) == 4  # up to a bucket ahead counts
    assert ring.used_at(99.5) == 4  # a stamp less than a bucket ahead counts now
    assert ring.fits_at(500.0, 1) and not ring.fits_at(500.0, 2)
    assert ring.fits_at(1100.0, 5) and not ring.fits_at(1099.0, 2)
    assert not ring.fits_at(50.0, 2)  # a window reaching the two later stamps is full too
    assert ring.fits_at(50.0, 1)
    assert ring.fits_at(-900.0, 10)  # its window ends exactly at the first stamp
    assert not ring.fits_at(-899.0, 10)  # one later, it reaches it


def test_state_counts_reservations_ahead_and_decisions_say_so() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10)])
    rules.trim(state, 1.0)
    first = rules.plan(state, 1.0, 10, token=1)
    assert (first.wait, first.at_ms, first.start_ms, first.ahead, first.ahead_weight) == (
        0.0,
        1000,
        1000,
        0,
        0,
    )
    rules.apply(state, first)
    second = rules.plan(state, 1.0, 4, token=2)
    assert second.at_ms == 2000 and second.wait == pytest.approx(1.0)
    rules.apply(state, second)
    third = rules.plan(state, 1.0, 3, token=3)
    assert (third.ahead, third.ahead_weight) == (1, 4) and state.tail_ms == 2000
    assert state.reserved() == 4
    assert third.at_ms == 2000  # fits beside the 4 once the 10 has left
    rules.apply(state, third)
    assert [q[1] for q in state.queue] == [4, 3] and state.reserved() == 7
    assert not rules.release(state, 2000, 3, token=99)  # wrong token: nothing given back
    assert rules.release(state, 2000, 3, token=3)
    assert state.queue == [[2000, 4, 2]] and state.rings[0].total == 14
    rules.trim(state, 2.0)  # reached: no longer queued
    assert state.queue == [] and state.tail_ms == 0


def test_a_reservation_queued_before_a_later_one_keeps_the_queue_sorted() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10)])
    rules.trim(state, 1.0)
    state.queue = [[3000, 1, 1], [5000, 1, 2]]
    decision = rules.Decision(4000, 1000, 3.0, 4000.0, 1, 7, 0, 0)
    rules.apply(state, decision)
    assert [q[0] for q in state.queue] == [3000, 4000, 5000]
    again = rules.Decision(3000, 1000, 2.0, 3000.0, 1, 8, 0, 0)
    rules.apply(state, again)
    assert [q[2] for q in state.queue] == [1, 8, 7, 2]  # after the equal time already queued


def test_pacing_and_contention_follow_the_slowest_limit() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10), rules.Ring(4, 100, 1)])
    rules.trim(state, 1.0)
    rules.apply(state, rules.plan(state, 1.0, 2))
    assert state.next_ms == pytest.approx(1000.0 + 200.0)  # 2 * 1000 / 10 > 2 * 100 / 4
    assert state.contended_until_ms == 0  # no wait: not contended
    waited = rules.plan(state, 1.0, 3)
    assert waited.wait > 0 and waited.at_ms == 1100
    rules.apply(state, waited)
    assert state.contended_until_ms == 1100 + 1000  # the longest window after it
    paced = rules.plan(state, 1.0, 1)  # contended now: at the pace, not before
    assert paced.exact_ms >= state.next_ms - 1e-9 or paced.exact_ms >= 1100


def test_charge_and_pause() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10), rules.Ring(20, 2000, 20)])
    rules.charge(state, 1.0005, 3)
    assert [list(r.buckets) for r in state.rings] == [[[101, 3]], [[51, 3]]]
    rules.pause(state, 1.0, 2.0)
    assert state.paused_until_ms == 3000
    rules.pause(state, 1.0, 1.0)  # a shorter pause never shortens one in force
    assert state.paused_until_ms == 3000
    assert rules.plan(state, 1.0, 1).at_ms == 3000


def test_a_step_back_moves_every_stored_time() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10)])
    rules.trim(state, 10.0)
    state.rings[0].add(10_005, 2)
    state.rings[0].add(10_012, 1)
    state.queue = [[10_500, 1, 5]]
    state.paused_until_ms, state.next_ms, state.contended_until_ms = 10_300, 10_200.0, 10_900
    assert rules.trim(state, 9.0) == 1000
    assert list(state.rings[0].buckets) == [[901, 2], [902, 1]]
    assert state.queue == [[9_500, 1, 5]] and state.last_ms == 9000
    assert (state.paused_until_ms, state.next_ms, state.contended_until_ms) == (9300, 9200.0, 9900)
    assert rules.trim(state, 9.0) == 0  # no step: nothing moves
    state.rings[0].buckets.append([903, 1])
    rules.trim(state, 8.9951)  # a step smaller than a bucket rounds up: merged, never earlier
    assert [b[0] for b in state.rings[0].buckets] == [901, 902, 903]


def test_sync_rings_adds_what_is_missing_and_drops_only_empty_foreign_rings() -> None:
    mine = rules.Ring(10, 1000, 10)
    foreign_full = rules.Ring(5, 500, 5)
    foreign_full.add(10, 1)
    foreign_empty = rules.Ring(7, 700, 7)
    state = rules.LimiterState(rings=[foreign_full, foreign_empty])
    got = rules.sync_rings(state, [rules.Ring(10, 1000, 10), rules.Ring(5, 500, 5)])
    assert got[0] == mine and got[1] is foreign_full
    assert state.rings == [foreign_full, got[0]]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"v": 2, "rings": [], "last": True}, "last"),
        ({"v": 2, "rings": [], "last": -1}, "last"),
        ({"v": 2, "rings": [], "last": 2**62 + 1}, "last"),
        ({"v": 2, "rings": [], "last": 1.5}, "last"),
        ({"v": 2, "rings": [], "next": True}, "next"),
        ({"v": 2, "rings": [], "next": -1.0}, "next"),
        ({"v": 2, "rings": [], "next": 2.0**62 * 2}, "next"),
        ({"v": 2, "rings": [], "contended": "1"}, "contended"),
        ({"v": 2, "rings": [1]}, "rings[0]"),
        (
            {"v": 2, "rings": [{"budget": 0, "period": 1, "width": 1, "index": []}]},
            "rings[0].budget",
        ),
        (
            {"v": 2, "rings": [{"budget": 1, "period": 0, "width": 1, "index": []}]},
            "rings[0].period",
        ),
        (
            {"v": 2, "rings": [{"budget": 1, "period": 1, "width": 0, "index": []}]},
            "rings[0].width",
        ),
        ({"v": 2, "rings": [], "queue": [[1, 2, -3]]}, "queue[0]"),
        ({"v": 2, "rings": [], "queue": "x"}, "queue"),
    ],
)
def test_every_bad_field_is_named(data: object, where: str) -> None:
    with pytest.raises(rules.BadState) as info:
        rules.from_json(data)
    assert info.value.where == where


def _compact(index: object, weight: object) -> dict[str, object]:
    ring = {"budget": 5, "period": 100, "width": 1, "index": index, "weight": weight}
    return {"v": 2, "rings": [ring]}


@pytest.mark.parametrize(
    ("index", "weight"),
    [
        ([1, 2], [1]),  # lengths differ
        ([1, 1], [1, 1]),  # not strictly ascending
        ([2, 1], [1, 1]),
        ([-1, 2], [1, 1]),
        ([1, 2**62 + 1], [1, 1]),
        ([1, 2], [-1, 1]),
        ([1, 2], [1, 2**62 + 1]),
        ([1.0, 2], [1, 1]),  # not ints
        ([1, 2], [1, True]),
        ("12", [1, 1]),
        ([1, 2], None),
    ],
)
def test_a_bad_compact_ring_is_refused(index: object, weight: object) -> None:
    with pytest.raises(rules.BadState) as info:
        rules.from_json(_compact(index, weight))
    assert info.value.where == "rings[0].index"


def test_the_json_forms_are_read_as_written() -> None:
    state = rules.from_json(_compact({}, {}))  # Redis' cjson writes an empty list as {}
    assert state.rings[0].total == 0 and not state.rings[0].buckets
    state = rules.from_json(_compact([3, 9], [2, 0]))
    assert list(state.rings[0].buckets) == [[3, 2], [9, 0]] and state.rings[0].total == 2
    legacy = {
        "v": 2,
        "rings": [{"budget": 5, "period": 100, "width": 1, "buckets": [[3, 2.0], [4, 1]]}],
        "queue": [[9, 1, 2], [4, 1, 3]],
        "paused_until": 7,
        "last": 8,
        "next": 9.5,
        "contended": 10,
    }
    state = rules.from_json(legacy)
    assert list(state.rings[0].buckets) == [[3, 2], [4, 1]] and state.rings[0].total == 3
    assert state.queue == [[4, 1, 3], [9, 1, 2]]  # sorted by time
    assert (state.paused_until_ms, state.last_ms, state.next_ms, state.contended_until_ms) == (
        7,
        8,
        9.5,
        10,
    )
    assert rules.from_json({"v": 2, "rings": {}}) == rules.LimiterState(rings=[])
    assert rules.from_json(None) == rules.LimiterState(rings=[])
    assert rules.from_json(rules.to_json(state)) == state
    with pytest.raises(rules.BadState, match="expected 2 items"):
        rules.from_json(
            {"v": 2, "rings": [{"budget": 5, "period": 100, "width": 1, "buckets": [[1]]}]}
        )


def test_edges_of_the_window_and_of_the_checks() -> None:
    ring = rules.Ring(10, 1000, 10)
    ring.add(100, 4)
    ring.add(300, 5)
    assert ring.ready_at(1300.0, 10) == 1300.0  # every bucket has left by then
    assert ring.ready_at(500.0, 5) == 1100.0  # freeing exactly the excess is enough
    assert not ring.fits_at(300.0, 2)  # an entry stamped at the send time counts
    assert rules.ring_for(1, 1.0000000001, 0.0).period_ms == 1000  # float noise is not a ms
    for field, value in [("last", 2**62), ("paused_until", 0), ("next", 2.0**62)]:
        assert rules.from_json({"v": 2, "rings": [], field: value}) is not None
    ring_1 = {"budget": 1, "period": 1, "width": 1, "index": [0, 2**62], "weight": [2**62, 0]}
    state = rules.from_json({"v": 2, "rings": [ring_1]})
    assert list(state.rings[0].buckets) == [[0, 2**62], [2**62, 0]]
    legacy_equal = {"budget": 5, "period": 100, "width": 1, "buckets": [[1, 1], [1, 1]]}
    with pytest.raises(rules.BadState, match="not ascending"):
        rules.from_json({"v": 2, "rings": [legacy_equal]})


def test_pacing_ends_the_moment_contention_does() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10)])
    state.queue = [[500, 1, 1]]  # (untrimmed: forces the general path without moving a time)
    state.contended_until_ms, state.next_ms = 1000, 1500.0
    assert rules.plan(state, 1.0, 1).at_ms == 1000  # not paced at exactly contended_until
    assert rules.plan(state, 0.999, 1).at_ms == 1500  # paced just before


def test_sync_rings_matches_budget_and_period_together() -> None:
    same_budget = rules.Ring(10, 2000, 20)
    same_budget.add(10, 1)
    same_period = rules.Ring(3, 1000, 10)
    same_period.add(10, 1)
    state = rules.LimiterState(rings=[same_budget, same_period])
    got = rules.sync_rings(state, [rules.Ring(10, 1000, 10)])
    assert got[0] is not same_budget and got[0] is not same_period
    assert state.rings == [same_budget, same_period, got[0]]


def test_a_light_request_backfills_a_gap_before_a_waiting_heavy_one() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10)])
    rules.trim(state, 0.0)
    rules.apply(state, rules.plan(state, 0.0, 8))  # paced: the next one no earlier than 800
    heavy = rules.plan(state, 0.0, 5)
    assert heavy.at_ms == 1000
    rules.apply(state, heavy)
    light = rules.plan(state, 0.0, 2)
    assert light.at_ms == 800 and light.ahead == 1  # before the heavy one, delaying nobody
    assert rules.plan(state, 0.0, 3).at_ms == 1000  # 3 more would overfill: behind it


def test_small_details_of_trim_pace_tokens_and_messages() -> None:
    state = rules.LimiterState(rings=[rules.Ring(10_000, 1000, 10)])
    rules.trim(state, 10.0)
    rules.apply(state, rules.plan(state, 10.0, 1))
    assert state.next_ms == pytest.approx(10_000.1)  # a pace under a millisecond is kept
    assert rules.plan(state, 10.0, 1).token == 0
    state.queue = [[10_005, 1, 1]]
    rules.trim(state, 10.0)
    assert state.queue == [[10_005, 1, 1]]  # 5 ms ahead: still waiting
    rules.trim(state, 11.5)
    assert not state.rings[0].buckets and state.rings[0].total == 0  # the window emptied
    assert str(rules.BadState("rings[0]", "bad")) == "rings[0]: bad"
    ring = rules.Ring(10, 1000, 10)
    ring.add(100, 4)
    ring.add(300, 5)
    assert ring.fits_at(1300.0, 10)  # both have left: the whole budget
    ring.add(1200, 1)
    assert ring.fits_at(1300.0, 9) and not ring.fits_at(1300.0, 10)
