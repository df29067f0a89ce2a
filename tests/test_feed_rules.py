"""The feed's pure decisions (backoff, the shared connection cap, staleness, identifiers)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading.presets.hyperliquid._feed_rules import (
    WatchInput,
    admit_connection,
    admit_message,
    admit_open,
    backoff_delay,
    identifier,
    message_identifier,
    refresh_open,
    release_open,
    watch,
)


@given(
    attempt=st.integers(0, 10_000),
    initial=st.floats(0.001, 10.0),
    maximum=st.floats(0.001, 600.0),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(),
)
def test_backoff_never_exceeds_its_maximum_and_grows_until_it(
    attempt: int, initial: float, maximum: float, jitter: float, seed: int
) -> None:
    rng = random.Random(seed)
    delay = backoff_delay(attempt, initial=initial, maximum=maximum, jitter=jitter, rng=rng)
    base = min(maximum, initial * 2.0 ** min(attempt, 60))
    assert base * (1 - jitter) - 1e-9 <= delay <= base + 1e-9


class ConnectionCap(RuleBasedStateMachine):
    """Holders share one state; as time passes and the wall clock steps *back*, no window of
    ``window`` true seconds ever holds more than ``limit`` admitted connections. (A forward
    step expires the recorded times early: docs/howto/feed.md states that limit.)"""

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.now = 1_000.0
        self.limit, self.window = 3, 60.0
        self.admitted: list[float] = []  # the true times, on a clock that never steps
        self.true_now = 0.0

    @rule(seconds=st.floats(0.0, 90.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.true_now += seconds

    @rule(seconds=st.floats(-3600.0, 0.0))
    def wall_clock_steps_back(self, seconds: float) -> None:
        self.now += seconds  # the true time does not move

    @rule()
    def connect(self) -> None:
        self.state, wait = admit_connection(
            self.state, self.now, limit=self.limit, window=self.window
        )
        assert wait >= 0
        if wait == 0:
            self.admitted.append(self.true_now)

    @invariant()
    def never_more_than_the_limit_per_window(self) -> None:
        for start in self.admitted:
            inside = [t for t in self.admitted if start <= t < start + self.window]
            assert len(inside) <= self.limit


ConnectionCap.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestConnectionCap = ConnectionCap.TestCase


@given(st.lists(st.floats(0.0, 1e6), max_size=40), st.integers(1, 10))
def test_without_clock_steps_the_cap_is_exact(gaps: list[float], limit: int) -> None:
    state: Any = None
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap % 50
        state, wait = admit_connection(state, now, limit=limit, window=60.0)
        if wait == 0:
            admitted.append(now)
        else:
            assert wait <= 60.0
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + 60.0) <= limit


@given(
    st.floats(0.0, 100.0),
    st.floats(0.01, 10.0),
    st.booleans(),
    st.sampled_from(["pending", "live", "stale", "down"]),
)
def test_watchdog_resubscribes_then_recycles_only_past_the_silence_limit(
    elapsed: float, limit: float, resubscribed: bool, state: Any
) -> None:
    action = watch(WatchInput(state, 0.0, limit, resubscribed), elapsed)
    if state == "down" or elapsed <= limit:
        assert action == "ok"
    else:
        assert action == ("recycle" if resubscribed else "resubscribe")
    assert watch(WatchInput(state, 0.0, None, resubscribed), elapsed) == "ok"


COINS = st.sampled_from(["BTC", "ETH", "SOL", "kPEPE"])
USERS = st.from_regex(r"0x[0-9a-fA-F]{40}", fullmatch=True)


@given(coin=COINS, user=USERS, interval=st.sampled_from(["1m", "15m", "1h"]))
def test_every_message_routes_to_the_subscription_that_asked_for_it(
    coin: str, user: str, interval: str
) -> None:
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"type": "allMids"}, {"channel": "allMids", "data": {"mids": {}}}),
        ({"type": "l2Book", "coin": coin}, {"channel": "l2Book", "data": {"coin": coin}}),
        ({"type": "trades", "coin": coin}, {"channel": "trades", "data": [{"coin": coin}]}),
        (
            {"type": "candle", "coin": coin, "interval": interval},
            {"channel": "candle", "data": {"s": coin, "i": interval}},
        ),
        (
            {"type": "userFills", "user": user},
            {"channel": "userFills", "data": {"user": user.lower(), "fills": []}},
        ),
        ({"type": "orderUpdates", "user": user}, {"channel": "orderUpdates", "data": []}),
        ({"type": "userEvents", "user": user}, {"channel": "user", "data": {"fills": []}}),
    ]
    for subscription, message in pairs:
        assert identifier(subscription) == message_identifier(message)
    assert message_identifier({"channel": "pong"}) is None
    assert message_identifier({"channel": "trades", "data": []}) is None


@given(st.lists(st.floats(0.0, 1e6), max_size=40), st.integers(1, 10))
def test_messages_sent_stay_under_their_cap_and_keep_the_other_parts(
    gaps: list[float], limit: int
) -> None:
    state: Any = [5.0]  # the older format: a bare list of new-connection times
    now, sent = 0.0, []
    for gap in gaps:
        now += gap % 5
        state, wait = admit_message(state, now, limit=limit, window=10.0)
        if wait == 0:
            sent.append(now)
        else:
            assert 0 < wait <= 10.0
        assert state["new"] == [5.0]  # the new-connection count is not touched
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + 10.0) <= limit


class OpenConnections(RuleBasedStateMachine):
    """Feeds open, refresh (every ttl / 3 while alive), close and die (``kill -9``: they stop
    refreshing and their connection is gone). Connections alive at once never exceed the
    cap, and a dead holder's slot frees itself within ``ttl``."""

    limit, ttl = 3, 3.0

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.now = 1000.0
        self.connected: set[str] = set()
        self.dead_at: dict[str, float] = {}
        self.count = 0

    @rule()
    def open(self) -> None:
        self.count += 1
        token = f"t{self.count}"
        self.state, wait = admit_open(
            self.state, self.now, token, limit=self.limit, ttl=self.ttl, new_limit=1000,
            new_window=60.0,
        )  # fmt: skip
        if wait == 0:
            self.connected.add(token)
        else:
            assert len(self.connected) + len(self.dead_at) >= self.limit

    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        if self.connected:
            token = data.draw(st.sampled_from(sorted(self.connected)))
            self.connected.discard(token)
            self.state, _ = release_open(self.state, self.now, token, ttl=self.ttl)

    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        if self.connected:
            token = data.draw(st.sampled_from(sorted(self.connected)))
            self.connected.discard(token)
            self.dead_at[token] = self.now

    @rule(step=st.floats(0.0, 1.0))  # at most ttl / 3 between two refreshes of a live holder
    def tick(self, step: float) -> None:
        self.now += step
        for token in sorted(self.connected):
            self.state, held = refresh_open(
                self.state, self.now, token, limit=self.limit, ttl=self.ttl
            )
            assert held  # a holder refreshing in time never loses its slot
        for token, when in list(self.dead_at.items()):
            if self.now - when >= self.ttl:
                # expired: the slot no longer counts
                assert self.state.get("open", {}).get(token, 0.0) <= self.now
                del self.dead_at[token]

    @invariant()
    def never_more_than_the_cap(self) -> None:
        assert len(self.connected) <= self.limit
        if self.state is not None:
            assert len(self.state.get("open", {})) <= self.limit


OpenConnections.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestOpenConnections = OpenConnections.TestCase


def test_a_clock_step_back_cannot_strand_a_slot_beyond_its_ttl() -> None:
    state, wait = admit_open(None, 5000.0, "a", limit=1, ttl=2.0, new_limit=9, new_window=60.0)
    assert wait == 0
    # the wall clock steps back an hour: the slot still frees within ttl of the new "now"
    state, wait = admit_open(state, 1400.0, "b", limit=1, ttl=2.0, new_limit=9, new_window=60.0)
    assert 0 < wait <= 2.0
    state, wait = admit_open(state, 1402.5, "b", limit=1, ttl=2.0, new_limit=9, new_window=60.0)
    assert wait == 0
