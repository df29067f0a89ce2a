"""Positions always protected and the degraded mode, with the real SDK against the simulator."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import eth_account
import pytest

from examples.hyperliquid_bot.bot import Bot, read_history
from examples.hyperliquid_bot.config import load_config
from examples.hyperliquid_bot.exchange import Gateway
from examples.hyperliquid_bot.strategies import Candle, Signal
from resilient_trading import AuthenticationError, CircuitOpenError, RateLimiter, TransientError
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
