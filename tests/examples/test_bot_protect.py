"""Positions always protected and the degraded mode, with the real SDK against the simulator."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from examples.hyperliquid_bot.bot import Bot, read_history
from examples.hyperliquid_bot.config import load_config
from examples.hyperliquid_bot.exchange import Gateway, ProtectGuard
from examples.hyperliquid_bot.strategies import Candle, Signal
from resilient_trading import (
    AuthenticationError,
    CircuitBreaker,
    CircuitOpenError,
    ManualClock,
    RateLimiter,
    TransientError,
)
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.testing import FaultConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"


@dataclasses.dataclass(frozen=True)
class AlwaysLong:
    """A strategy that always wants a long: 2% stop, 4% target."""

    def evaluate(self, candles: Sequence[Candle]) -> Signal | None:
        close = candles[-1].close
        return Signal("always", "long", close, close * 0.98, close * 1.04, 1.0)


def stops(gw: Gateway, szi: float) -> list[dict[str, Any]]:
    """The exchange's reduce-only stops closing a position of ``szi``."""
    listed: list[dict[str, Any]] = gw.info.frontend_open_orders(gw.address)
    return [
        o
        for o in listed
        if o["orderType"] == "Stop Market" and o["reduceOnly"] and (o["side"] == "B") == (szi < 0)
    ]


def open_by_hand(gw: Gateway, wallet: Any, url: str, size: float) -> float:
    """A position the bot did not open (and has no stop for): an SDK market order."""
    raw = hl.make_exchange(wallet, url, RateLimiter(hl.rest_limit()))
    raw.market_open("BTC", True, size)
    return gw.account("BTC").position.szi


_OPENED: list[Gateway] = []


def connect(sim: Simulator, wallet: Any, state_dir: Path) -> Gateway:
    gw = Gateway.connect(load_config(CONFIG), wallet.key.hex(), sim.base_url, state_dir)
    _OPENED.append(gw)
    return gw


@pytest.fixture(autouse=True)
def _close_gateways() -> Iterator[None]:
    """Stop every gateway's WebSocket feed when its test ends."""
    yield
    while _OPENED:
        _OPENED.pop().close()


class Recorder:
    """Forwards to the wrapped exchange, remembering each ``bulk_orders`` grouping (what went
    on the wire, beside what the simulator made of it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.groupings: list[tuple[int, str]] = []

    def bulk_orders(self, requests: list[Any], builder: Any, grouping: str) -> Any:
        self.groupings.append((len(requests), grouping))
        return self.inner.bulk_orders(requests, builder, grouping)


@pytest.mark.timeout(90)
def test_an_entry_goes_out_grouped_with_its_exits(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    with Simulator(seed=3, speed=60, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)
        recorder = Recorder(gw.entries)
        gw.entries = recorder  # type: ignore[assignment]
        bot = Bot(load_config(CONFIG), gw, tmp_path)
        bot.strategies = [AlwaysLong()]  # type: ignore[list-item]
        bot.start()
        deadline = time.monotonic() + 30
        while gw.account("BTC").position.flat and time.monotonic() < deadline:
            bot.step()  # polls: a new candle closes every simulated minute (one second)
        szi = gw.account("BTC").position.szi
        assert szi > 0 and stops(gw, szi)
        assert sim.snapshot()["orders_placed"] == 3  # entry, take-profit, stop-loss
        assert recorder.groupings == [(3, "normalTpsl")]  # in one grouped action
        assert bot.store.read().position.stop_px is not None


@pytest.mark.timeout(90)
def test_a_failed_stop_placement_is_rearmed_by_the_next_reconcile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = eth_account.Account.create()
    faults = FaultConfig()
    config = load_config(CONFIG)
    with Simulator(seed=2, speed=60, faults=faults, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)
        szi = open_by_hand(gw, wallet, sim.base_url, 0.01)
        assert szi > 0 and not stops(gw, szi)
        bot = Bot(config, gw, tmp_path)
        # Every attempt of the stop's placement fails (a 503 before it is processed).
        faults.force("http_503", config.exchange.retry_attempts, only="order")
        with caplog.at_level(logging.WARNING, logger="bot"), pytest.raises(TransientError):
            bot.start()
        assert not stops(gw, szi)
        assert faults.pending() == 0
        with caplog.at_level(logging.WARNING, logger="bot"):
            bot.reconcile()
        (stop,) = stops(gw, szi)
        assert float(stop["sz"]) == pytest.approx(szi)
        assert "no working stop" in caplog.text
        state = bot.store.read()
        assert [o.status for o in state.orders.values()] == ["open"]  # the live state
        assert [o.status for o in read_history(bot.history).values()] == ["never_placed"]
        assert state.counters.stops_rearmed == 2
        assert sim.snapshot()["duplicate_cloids"] == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("item", "exit_kind"), [(1, "take-profit"), (2, "stop-loss")])
def test_one_exit_of_the_grouped_entry_refused_leaves_no_position_without_a_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, item: int, exit_kind: str
) -> None:
    """The exchange refuses one item of the ``normalTpsl`` group (entry, take-profit, stop)
    while the others go through: after the next reconcile the position has exactly one
    working stop sized to it, and nothing was sent twice."""
    wallet = eth_account.Account.create()
    faults = FaultConfig()
    with Simulator(seed=3, speed=60, faults=faults, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)
        bot = Bot(load_config(CONFIG), gw, tmp_path)
        bot.strategies = [AlwaysLong()]  # type: ignore[list-item]
        bot.start()
        faults.reject_item(item, grouping="normalTpsl")
        deadline = time.monotonic() + 30
        with caplog.at_level(logging.WARNING, logger="bot"):
            while gw.account("BTC").position.flat and time.monotonic() < deadline:
                bot.step()
            assert faults.pending() == 0, f"the {exit_kind} was never refused"
            assert sim.snapshot()["item_errors"] == 1
            szi = gw.account("BTC").position.szi
            assert szi > 0
            bot.reconcile()
        (stop,) = stops(gw, szi)  # one stop, never two
        assert float(stop["sz"]) == pytest.approx(szi)
        if exit_kind == "stop-loss":
            assert "no working stop" in caplog.text  # re-armed, and it says so
        assert bot.store.read().position.stop_px is not None
        assert sim.snapshot()["duplicate_cloids"] == 0


@pytest.mark.timeout(120)
def test_under_the_address_throttle_the_refused_stop_is_rearmed_before_any_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The address is over its action cap (the exchange lets one action through per 10 s and
    the bot's budget paces one per 11 s): the grouped entry's stop-loss is refused, and the next
    reconcile re-arms it through the throttle (closes and stops go first); no second entry."""
    wallet = eth_account.Account.create()
    faults = FaultConfig()
    with Simulator(
        seed=3, speed=60, faults=faults, accounts={wallet.address: 10_000.0}, address_buffer=0
    ) as sim:
        gw = connect(sim, wallet, tmp_path)
        bot = Bot(load_config(CONFIG), gw, tmp_path)
        bot.strategies = [AlwaysLong()]  # type: ignore[list-item]
        bot.start()
        faults.reject_item(2, grouping="normalTpsl")
        deadline = time.monotonic() + 60
        with caplog.at_level(logging.WARNING):
            while gw.account("BTC").position.flat and time.monotonic() < deadline:
                bot.step()
            assert faults.pending() == 0
            szi = gw.account("BTC").position.szi
            assert szi > 0
            assert gw.address_budget is not None and gw.address_budget.status().throttled
            placed = sim.snapshot()["orders_placed"]
            bot.reconcile()
        (stop,) = stops(gw, szi)
        assert float(stop["sz"]) == pytest.approx(szi)
        assert "no working stop" in caplog.text
        assert sim.snapshot()["orders_placed"] == placed + 1  # the stop, and no entry
        assert sim.snapshot()["duplicate_cloids"] == 0
        assert sim.snapshot()["http_429"] == 0


@pytest.mark.timeout(90)
def test_latched_breaker_refuses_entries_while_cancels_and_closes_go_out(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    with Simulator(seed=4, speed=60, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)

        def refused() -> None:
            raise AuthenticationError("the key was revoked (test)")

        with pytest.raises(AuthenticationError):
            gw.breaker.call(refused)
        assert gw.breaker.latched and gw.entries_blocked() is not None
        szi = open_by_hand(gw, wallet, sim.base_url, 0.01)
        bot = Bot(load_config(CONFIG), gw, tmp_path)
        bot.strategies = [AlwaysLong()]  # type: ignore[list-item]
        bot.start()  # reconcile: the stop is re-armed although the breaker is latched
        assert stops(gw, szi)
        placed = bot.close_position()  # a reduce-only close goes out
        assert placed is not None and placed.status == "filled"
        assert gw.account("BTC").position.flat
        bot.step()  # the stop has nothing left to protect: its cancel goes out
        assert not gw.open_orders()
        sent = sim.snapshot()["orders_placed"]
        deadline = time.monotonic() + 30
        while bot.store.read().counters.entries_refused == 0 and time.monotonic() < deadline:
            bot.step()
        assert bot.store.read().counters.entries_refused >= 1
        assert sim.snapshot()["orders_placed"] == sent  # no entry went out
        assert gw.account("BTC").position.flat
        with pytest.raises(CircuitOpenError):  # and the venue itself refuses one
            gw.enter([])


# --- issue #15: protection judged on the exchange, never stopped by a breaker -----------------


def enter_long(bot: Bot, gw: Gateway) -> float:
    """Step the bot (always long) until its grouped entry fills; the position's size."""
    bot.strategies = [AlwaysLong()]  # type: ignore[list-item]
    bot.start()
    deadline = time.monotonic() + 30
    while gw.account("BTC").position.flat and time.monotonic() < deadline:
        bot.step()
    szi = gw.account("BTC").position.szi
    assert szi > 0
    return szi


@pytest.mark.timeout(90)
def test_a_stop_the_exchange_shrank_is_replaced_by_one_covering_the_position(
    tmp_path: Path,
) -> None:
    """D1: half the position closed by hand (the exchange shrinks the grouped stop to fit),
    then bought back: the reconcile after these fills looks the stop up with its size on the
    exchange, arms one stop for the whole position and cancels the small one."""
    wallet = eth_account.Account.create()
    with Simulator(seed=3, speed=60, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)
        bot = Bot(load_config(CONFIG), gw, tmp_path)
        szi = enter_long(bot, gw)
        raw = hl.make_exchange(wallet, sim.base_url, RateLimiter(hl.rest_limit()))
        half = round(szi / 2, 5)
        raw.market_close("BTC", sz=half)
        (small,) = stops(gw, szi)
        assert float(small["sz"]) < szi  # the exchange shrank it
        raw.market_open("BTC", True, half)
        szi = gw._read_account("BTC").position.szi
        deadline = time.monotonic() + 10
        while not any(float(o["sz"]) >= szi for o in stops(gw, szi)):
            assert time.monotonic() < deadline, "half the position stayed without a stop"
            bot.reconcile()  # the first one after the stream reports the fills
        (stop,) = stops(gw, szi)
        assert float(stop["sz"]) == pytest.approx(szi)
        state = bot.store.read()
        assert state.counters.stops_rearmed == 1
        assert state.position.stop_px is not None
        assert float(stop["triggerPx"]) == pytest.approx(state.position.stop_px)
        assert sim.snapshot()["duplicate_cloids"] == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("trouble", ["latched", "open"])
def test_a_position_without_a_stop_gets_one_while_protect_is_latched_or_open(
    tmp_path: Path, trouble: str
) -> None:
    """D2: the ``protect`` breaker latched (one critical error) or open (a run of transient
    failures, its reset timeout not over): the next reconcile still reads the position, arms
    its stop, and a reduce-only close still goes out; entries stay refused, the latch stays."""
    wallet = eth_account.Account.create()
    config = load_config(CONFIG)
    with Simulator(seed=4, speed=60, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)
        szi = open_by_hand(gw, wallet, sim.base_url, 0.01)

        def failing() -> None:
            if trouble == "latched":
                raise AuthenticationError("the key was revoked (test)")
            raise TransientError("503 (test)")

        for _ in range(1 if trouble == "latched" else config.exchange.breaker_fail_max):
            with pytest.raises((AuthenticationError, TransientError)):
                gw.protect_breaker.call(failing)
        snap = gw.protect_breaker.snapshot()
        assert str(snap.state) == "open" and snap.latched == (trouble == "latched")
        bot = Bot(config, gw, tmp_path)
        bot.reconcile()  # the next reconcile, before any reset timeout
        (stop,) = stops(gw, szi)
        assert float(stop["sz"]) == pytest.approx(szi)
        assert bot.store.read().counters.stops_rearmed == 1
        assert gw.entries_blocked() is not None  # entries still wait
        placed = bot.close_position()
        assert placed is not None and placed.status == "filled"
        assert gw.account("BTC").position.flat
        if trouble == "latched":
            assert gw.protect_breaker.latched  # only an operator's reset lifts it


@pytest.mark.timeout(90)
def test_the_operator_closes_the_position_of_a_running_bot(tmp_path: Path) -> None:
    """Nit 7: ``--close-position`` (its own process, the running bot's state directory) sends
    one reduce-only IOC for the whole position and exits 0; the running bot adopts the close
    and cancels the stop left with nothing to protect."""
    wallet = eth_account.Account.create()
    with Simulator(seed=3, speed=60, accounts={wallet.address: 10_000.0}) as sim:
        gw = connect(sim, wallet, tmp_path)
        running = Bot(load_config(CONFIG), gw, tmp_path)
        szi = open_by_hand(gw, wallet, sim.base_url, 0.01)
        running.start()
        assert stops(gw, szi)
        command = ["--config", str(CONFIG), "--state-dir", str(tmp_path)]
        command += ["--base-url", sim.base_url, "--close-position"]
        done = subprocess.run(
            [sys.executable, "-m", "examples.hyperliquid_bot", *command],
            cwd=ROOT,
            env={**os.environ, "HYPERLIQUID_PRIVATE_KEY": wallet.key.hex()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1]) == {"close": "filled", "flat": True}
        assert gw._read_account("BTC").position.flat
        running.reconcile()
        assert not gw.open_orders()  # the orphan stop is cancelled
        kinds = {o.kind: o.status for o in read_history(running.history).values()}
        assert kinds == {"close": "filled", "sl": "canceled"}
        running.close()


class ProtectGuardMachine(RuleBasedStateMachine):
    """``ProtectGuard`` over a real breaker (per-process state, a manual clock): whatever the
    breaker's state, every call runs exactly once and its own outcome comes back (never a
    refusal); a critical error seen while the breaker admits latches it until a reset, and a
    latch or an open breaker keeps blocking entries as before."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self.breaker = CircuitBreaker(fail_max=2, reset_timeout=5.0, clock=self.clock)
        self.guard = ProtectGuard(self.breaker)
        self.ran = 0
        self.calls = 0
        self.latched = False

    def _call(self, outcome: str) -> None:
        def fn() -> str:
            self.ran += 1
            if outcome == "critical":
                raise AuthenticationError("revoked (test)")
            if outcome == "transient":
                raise TransientError("503 (test)")
            return "ok"

        was_refusing = self.breaker.latched or str(self.breaker.state) == "open"
        self.calls += 1
        if outcome == "ok":
            assert self.guard.call(fn) == "ok"
        else:
            with pytest.raises(AuthenticationError if outcome == "critical" else TransientError):
                self.guard.call(fn)
        if outcome == "critical" and not was_refusing:
            self.latched = True

    @rule(outcome=st.sampled_from(["ok", "transient", "critical"]))
    def call(self, outcome: str) -> None:
        self._call(outcome)

    @rule(seconds=st.floats(min_value=0.0, max_value=10.0))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def operator_reset(self) -> None:
        self.breaker.reset()
        self.latched = False

    @invariant()
    def every_call_ran_once(self) -> None:
        assert self.ran == self.calls

    @invariant()
    def a_critical_error_latches_until_a_reset(self) -> None:
        if self.latched:
            assert self.breaker.latched


ProtectGuardMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
test_protect_guard = ProtectGuardMachine.TestCase
