"""AddressBudget: Hyperliquid's per-address action budget, paced, throttled, shared.

The decisions are checked as pure functions (hypothesis, a state machine); the claims about
the exchange with the real SDK against the simulator; sharing with real processes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hyperliquid.info import Info
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_trading import ManualClock, RateLimit, RateLimitedError, RateLimiter
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.presets.hyperliquid._address_rules import (
    AddressState,
    Pace,
    cancel_cap,
    decide,
    refused,
    start,
    synced,
)
from resilient_trading.testing import Simulator

pytestmark = pytest.mark.timeout(60)

ADDRESS = "0x" + "ab" * 20

# --- the pure decisions ----------------------------------------------------------------------


def run_until_admitted(
    state: AddressState, now: float, n: int, kind: Any, pace: Pace
) -> tuple[AddressState, float, float]:
    """The acquire loop on simulated time: (state, time admitted, time to send)."""
    for _ in range(10_000):
        state, decision = decide(state, now, n, kind, pace)
        if decision.admitted:
            return state, now, now + decision.wait
        now += decision.wait
    raise AssertionError("never admitted")


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(50, 5000),
    hours=st.floats(0.5, 200),
    burst=st.integers(1, 30),
    count=st.integers(1, 60),
)
def test_ordinary_actions_never_outrun_the_pace_to_the_horizon(
    cap: int, hours: float, burst: int, count: int
) -> None:
    """Spending as fast as allowed, by time t at most burst + 1 + remaining * t / horizon."""
    pace = Pace(lasts=hours * 3600, burst=burst, throttle_interval=11.0)
    state = replace_cap(start(0.0, pace), cap)
    now = 0.0
    rate = cap / pace.lasts
    for i in range(count):
        if state.used + 1 > cap:
            break
        state, now, _ = run_until_admitted(state, now, 1, "action", pace)
        assert i + 1 <= burst + 1 + rate * now + 1e-6


def replace_cap(state: AddressState, cap: int) -> AddressState:
    return synced(state, 0.0, {"nRequestsUsed": 0, "nRequestsCap": cap, "cumVlm": "0"})


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["action", "cancel", "close"]), min_size=1, max_size=30),
    gaps=st.lists(st.floats(0, 30), min_size=30, max_size=30),
)
def test_throttled_sends_are_an_interval_apart_cancels_within_allowance_never_wait(
    kinds: list[Any], gaps: list[float]
) -> None:
    pace = Pace(lasts=86_400.0, burst=5, throttle_interval=11.0)
    state = refused(replace_cap(start(0.0, pace), 1000), 0.0, 11.0)  # the exchange refused
    now = 0.0
    throttled_sends: list[float] = []
    for kind, gap in zip(kinds, gaps, strict=False):
        now += gap
        before = state.used
        state, admitted_at, send_at = run_until_admitted(state, now, 1, kind, pace)
        if kind == "cancel" and before + 1 <= cancel_cap(state.cap):
            assert send_at == now  # cancels have their own allowance: never throttled
        else:
            throttled_sends.append(send_at)
            now = admitted_at
    throttled_sends.sort()
    assert all(b - a >= 11.0 - 1e-9 for a, b in itertools.pairwise(throttled_sends))


def test_a_sync_with_headroom_ends_throttled_mode() -> None:
    pace = Pace(lasts=3600.0, burst=5, throttle_interval=11.0)
    state = refused(replace_cap(start(0.0, pace), 10), 0.0, 11.0)
    assert state.throttled
    still = synced(state, 1.0, {"nRequestsUsed": 12, "nRequestsCap": 10, "cumVlm": "0"})
    assert still.throttled
    freed = synced(state, 1.0, {"nRequestsUsed": 12, "nRequestsCap": 1012, "cumVlm": "1002"})
    assert not freed.throttled
    assert decide(freed, 1.0, 1, "action", pace)[1].wait == 0.0


class BudgetMachine(RuleBasedStateMachine):
    """The stored record against a reference count: used = synced value + admitted since."""

    def __init__(self) -> None:
        super().__init__()
        self.pace = Pace(lasts=3600.0, burst=3, throttle_interval=11.0)
        self.state = replace_cap(start(0.0, self.pace), 20)
        self.now = 0.0
        self.model_used = 0
        self.last_plain_throttled: float | None = None

    @rule(n=st.integers(1, 4), kind=st.sampled_from(["action", "cancel", "close"]))
    def act(self, n: int, kind: Any) -> None:
        within = self.state.used + n <= (
            cancel_cap(self.state.cap) if kind == "cancel" else self.state.cap
        )
        was_throttled = self.state.throttled
        self.state, admitted_at, send_at = run_until_admitted(
            self.state, self.now, n, kind, self.pace
        )
        self.model_used += n
        if kind == "cancel" and within:
            assert send_at == self.now
        if kind == "close" and within and not was_throttled:
            assert send_at == self.now  # closes are never paced
        self.now = admitted_at

    @rule(dt=st.floats(0, 120))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def refuse(self) -> None:
        self.state = refused(self.state, self.now, 11.0)
        self.model_used = self.state.used

    @precondition(lambda self: self.state.throttled)
    @rule(extra=st.integers(0, 50))
    def sync(self, extra: int) -> None:
        answer = {"nRequestsUsed": self.model_used, "nRequestsCap": 20 + extra, "cumVlm": "0"}
        self.state = synced(self.state, self.now, answer)
        assert self.state.throttled == (self.model_used >= 20 + extra)

    @invariant()
    def count_matches(self) -> None:
        assert self.state.used == self.model_used

    @invariant()
    def record_round_trips(self) -> None:
        raw = json.loads(json.dumps(self.state.to_json()))
        assert AddressState.from_json(raw, where="test") == self.state


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


def test_a_bad_record_names_where_it_is() -> None:
    from resilient_trading import StateCorruptedError

    with pytest.raises(StateCorruptedError, match="budget at /x"):
        AddressState.from_json({"version": 1, "used": "many"}, where="/x")


def test_arguments_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="address"):
        hl.AddressBudget("bob")
    with pytest.raises(ValueError, match="lasts"):
        hl.AddressBudget(ADDRESS, lasts=timedelta(0))
    with pytest.raises(ValueError, match="burst"):
        hl.AddressBudget(ADDRESS, burst=0)


def test_runway_warning_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(start=1_000_000.0)
    budget = hl.AddressBudget(ADDRESS, clock=clock, lasts=timedelta(hours=1), burst=50)
    with caplog.at_level(logging.WARNING, logger="resilient_trading.address"):
        for _ in range(40):
            budget.acquire(1)
    warnings = [r for r in caplog.records if "runs out" in r.getMessage()]
    assert len(warnings) == 1
    status = budget.status()
    assert status.runway is not None and status.runway < timedelta(days=1)
    assert status.per_hour == pytest.approx(40 * 60)  # 40 in the first minute, scaled


# --- with the real SDK against the simulator -------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())


@pytest.fixture
def small_sim(clock: ManualClock) -> Iterator[Simulator]:
    with Simulator(seed=2, clock=clock.time, auto_fund=10_000, address_buffer=6) as sim:
        yield sim


def _wrapped(sim: Simulator, wallet: Any, budget: hl.AddressBudget, *, mode: str = "sync") -> Any:
    limiter = RateLimiter(hl.rest_limit())
    raw = hl.make_exchange(wallet, sim.base_url, limiter)
    if mode == "async":
        return hl.wrap_exchange_async(raw, limiter, address_budget=budget)
    return hl.wrap_exchange(raw, limiter, address_budget=budget)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_refusal_throttles_the_address_and_cancels_still_pass(
    small_sim: Simulator, clock: ManualClock, mode: str
) -> None:
    # A budget that believes it has plenty (no info to sync from): the exchange refuses.
    wallet = eth_account.Account.create()
    budget = hl.AddressBudget(wallet.address, clock=clock, lasts=timedelta(minutes=1), burst=50)
    ex = _wrapped(small_sim, wallet, budget, mode=mode)
    budget.info = None  # never syncs: the exchange's refusal is what it learns from
    px = round(float(Info(small_sim.base_url, skip_ws=True).all_mids()["BTC"]) * 0.5)

    def run(coro_or_value: Any) -> Any:
        return asyncio.run(coro_or_value) if mode == "async" else coro_or_value

    def place() -> Any:
        return ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})

    oids = []
    for _ in range(6):
        oids.append(hl.outcomes(run(place()))[0].oid)
    run(place())  # the 7th: over the cap, the exchange's one-per-10-s lets it through
    with pytest.raises(RateLimitedError) as exc:
        run(place())
    assert (exc.value.source, exc.value.retry_after) == ("address", 10.0)
    assert budget.status().throttled
    sent_before = small_sim.snapshot()["requests"]
    slept_before = sum(clock.slept)
    answer = run(ex.cancel("BTC", oids[0]))  # cancels: their own allowance, not throttled
    assert [o.kind for o in hl.outcomes(answer)] == ["success"]
    assert sum(clock.slept) == slept_before
    run(place())  # waits for the next slot (11 s of the manual clock), then goes through
    assert sum(clock.slept) - slept_before >= 10.0
    snap = small_sim.snapshot()
    assert snap["address_refusals"] == 1  # no retry storm: one refusal, no more
    assert snap["requests"] - sent_before == 2


def test_the_budget_paces_to_its_horizon(clock: ManualClock) -> None:
    with Simulator(seed=2, clock=clock.time, auto_fund=10_000, address_buffer=100) as sim:
        wallet = eth_account.Account.create()
        budget = hl.AddressBudget(wallet.address, clock=clock, lasts=timedelta(hours=1), burst=2)
        ex = _wrapped(sim, wallet, budget)
        px = round(float(Info(sim.base_url, skip_ws=True).all_mids()["BTC"]) * 0.5)
        t0 = clock.time()
        for _ in range(6):
            ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
        # ~100 actions over 3600 s: one per ~36 s after the burst of 2
        assert clock.time() - t0 >= 4 * 30
        status = budget.status()
        limits = Info(sim.base_url, skip_ws=True).user_rate_limit(wallet.address)
        assert (status.used, status.cap) == (limits["nRequestsUsed"], limits["nRequestsCap"])
        assert status.remaining == limits["nRequestsCap"] - limits["nRequestsUsed"]
        assert status.runway is not None
        assert status.runway.total_seconds() == pytest.approx(
            status.remaining / status.per_hour * 3600
        )
        assert status.synced_at is not None  # synced from userRateLimit at the first action


def test_sync_charges_the_ip_limiter_twenty() -> None:
    with Simulator(seed=2, auto_fund=10_000) as sim:
        wallet = eth_account.Account.create()
        limiter = RateLimiter(RateLimit(1200, 60.0))
        budget = hl.AddressBudget(
            wallet.address, info=Info(sim.base_url, skip_ws=True), limiter=limiter
        )
        before = sim.snapshot()["weight"]
        status = budget.sync()
        assert status.cap == 10_000 and status.used == 0
        assert sim.snapshot()["weight"] - before == 20
        assert limiter.status().windows[0].used >= 20


CHILD = """
import sys, eth_account
from datetime import timedelta
from resilient_trading import NonceSource, RateLimiter
from resilient_trading.presets import hyperliquid as hl
url, key, state, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
wallet = eth_account.Account.from_key(key)
# Two processes signing with one key must share their nonces (the SDK's own clock collides).
hl.use_nonces(NonceSource(state_path=state + ".nonce"))
limiter = RateLimiter(hl.rest_limit())
budget = hl.AddressBudget(wallet.address, state_path=state, lasts=timedelta(days=7))
ex = hl.wrap_exchange(hl.make_exchange(wallet, url, limiter), limiter, address_budget=budget)
px = round(float(ex.info.all_mids()["BTC"]) * 0.5)
for _ in range(n):
    ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
"""


def test_two_processes_on_one_address_share_one_budget(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    state = tmp_path / "address.json"
    with Simulator(seed=2, auto_fund=10_000) as sim:
        info = Info(sim.base_url, skip_ws=True)
        parent = hl.AddressBudget(wallet.address, info=info, state_path=state)
        parent.sync()  # fresh: the children count without syncing
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, sim.base_url, wallet.key.hex(), str(state), "4"]
            )
            for _ in range(2)
        ]
        for proc in procs:
            assert proc.wait(timeout=50) == 0
        status = parent.status()
        limits = info.user_rate_limit(wallet.address)
        assert status.used == limits["nRequestsUsed"] == 8
        assert status.per_hour > 0


def test_two_budgets_on_one_redis_key_share_the_count(redis_url: str) -> None:
    address = eth_account.Account.create().address
    first = hl.AddressBudget(address, redis_url=redis_url)
    second = hl.AddressBudget(address, redis_url=redis_url)
    first.acquire(3)
    second.acquire(2, kind="cancel")
    assert first.status().used == second.status().used == 5
    assert first.status().location.startswith("redis")


def test_a_wall_clock_stepped_back_does_not_stall_the_throttled_slots() -> None:
    pace = Pace(lasts=3600.0, burst=5, throttle_interval=11.0)
    state = refused(replace_cap(start(86_400.0, pace), 10), 86_400.0, 11.0)
    # the clock steps back a day: the reserved slot is a day "ahead"
    state, decision = decide(state, 0.0, 1, "action", pace)
    assert decision.admitted and decision.wait == 0.0


def test_the_status_of_a_stored_record_needs_no_budget(tmp_path: Path) -> None:
    state = tmp_path / "address.json"
    address = eth_account.Account.create().address
    budget = hl.AddressBudget(address, state_path=state)
    budget.acquire(4)
    from resilient_trading.backends import FileState

    raw = FileState(state).read()  # what `limits status` reads
    status = hl.AddressStatus.of_record(raw, location=str(state), now=time.time())
    assert (status.address, status.used, status.cap) == (address.lower(), 4, 10_000)
    assert status.to_json()["runway_seconds"] == pytest.approx(
        budget.status().to_json()["runway_seconds"], rel=0.05
    )


def test_with_retry_one_refusal_then_the_next_slot_no_storm(
    small_sim: Simulator, clock: ManualClock
) -> None:
    from resilient_trading import RetryPolicy

    wallet = eth_account.Account.create()
    budget = hl.AddressBudget(wallet.address, clock=clock, lasts=timedelta(minutes=1), burst=50)
    limiter = RateLimiter(hl.rest_limit())
    raw = hl.make_exchange(wallet, small_sim.base_url, limiter)
    retry = RetryPolicy(attempts=5, base_delay=0.2, clock=clock)
    ex = hl.wrap_exchange(raw, limiter, retry=retry, address_budget=budget)
    budget.info = None  # learns from the refusal only
    px = round(float(Info(small_sim.base_url, skip_ws=True).all_mids()["BTC"]) * 0.5)
    for _ in range(7):  # 6 within the cap, the 7th through the exchange's 10 s slot
        ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
    answer = ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})  # refused, retried
    assert [o.kind for o in hl.outcomes(answer)] == ["resting"]
    started = clock.time()
    for _ in range(3):  # throttled: each waits for its slot instead of being refused first
        ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
    assert clock.time() - started >= 3 * 10.0
    assert small_sim.snapshot()["address_refusals"] == 1  # one refusal, never a storm
    assert budget.status().throttled


def test_limits_status_shows_an_address_budget_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``resilient-trading limits status`` on an AddressBudget's file shows used, cap and the
    runway the budget itself reports (issue #14: the operator sees the address budget)."""
    from resilient_trading._cli import main

    state = tmp_path / "address.json"
    with Simulator(seed=2, auto_fund=10_000) as sim:
        wallet = eth_account.Account.create()
        budget = hl.AddressBudget(
            wallet.address, info=Info(sim.base_url, skip_ws=True), state_path=state
        )
        budget.sync()
        for _ in range(3):
            budget.acquire(1)
        expected = budget.status()
    assert main(["limits", "status", str(state)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["used"], shown["cap"]) == (expected.used, expected.cap) == (3, 10_000)
    assert shown["remaining"] == expected.remaining
    assert shown["summary"].startswith("used 3/10000")
