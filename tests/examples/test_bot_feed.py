"""The bot over the supervised WebSocket feed (issue #16), with the real SDK, a real WebSocket
and the simulator: an idle bot spends almost no REST weight; a stale feed refuses new entries
while protection goes on; a fill made while the bot was cut off reaches it exactly once after
the reconnect, and the position it did not open gets a stop."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from examples.hyperliquid_bot.bot import Bot
from examples.hyperliquid_bot.config import BotConfig, load_config, validate_config
from examples.hyperliquid_bot.exchange import Gateway
from examples.hyperliquid_bot.state import status_from_exchange
from examples.hyperliquid_bot.strategies import Candle, Signal
from examples.hyperliquid_bot.stream import MarketStream
from resilient_trading import RateLimiter
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.presets.hyperliquid._feed_rules import message_identifier
from resilient_trading.testing import FaultConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"


def config(**feed: Any) -> BotConfig:
    base = load_config(CONFIG).model_dump()
    return validate_config({**base, "feed": {**base["feed"], **feed}})


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A strategy that wants a long when ``on()`` says so."""

    on: Callable[[], bool]

    def evaluate(self, candles: Sequence[Candle]) -> Signal | None:
        close = candles[-1].close
        return (
            Signal("fixed", "long", close, close * 0.98, close * 1.04, 1.0) if self.on() else None
        )


def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def buy_by_hand(wallet: Any, url: str, size: float) -> None:
    """A position the bot did not open: an SDK market order on its account."""
    hl.make_exchange(wallet, url, RateLimiter(hl.rest_limit())).market_open("BTC", True, size)


@pytest.mark.timeout(90)
def test_an_idle_protected_bot_spends_under_a_tenth_of_the_rest_budget(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    threads_before = sum(t.name == "resilient-trading-feed" for t in threading.enumerate())
    with Simulator(seed=3, speed=60, faults=FaultConfig(), accounts={wallet.address: 1e4}) as sim:
        gw = Gateway.connect(config(), wallet.key.hex(), sim.base_url, tmp_path)
        try:
            assert gw.stream is not None
            bot = Bot(load_config(CONFIG), gw, tmp_path)
            bot.strategies = [Fixed(lambda: False)]  # type: ignore[list-item]
            buy_by_hand(wallet, sim.base_url, 0.01)
            bot.start()  # the position gets its stop (REST: the start's snapshots)
            until(gw.stream.gate.is_open, "the feed's gate")
            for _ in range(3):
                bot.step()  # the fill, the stop's first update, the candle history: settled
                time.sleep(0.5)
            assert bot.store.read().counters.stops_rearmed == 1
            # A reconnect: the stop rests from before the resubscribe, so the stream will not
            # report it until it changes; the reconcile after the gap looks it up once.
            sim.ws.drop_all()
            until(lambda: gw.stream is not None and gw.stream.feed.reconnects >= 1, "reconnect")
            until(gw.stream.gate.is_open, "the feed's gate after the reconnect")
            for _ in range(2):
                bot.step()
            before, started = sim.snapshot()["weight"], time.monotonic()
            steps = 0
            while time.monotonic() - started < 6.0:
                bot.step()
                steps += 1
                time.sleep(0.25)  # faster than the bot's 2 s loop: any per-loop read shows
            per_min = (sim.snapshot()["weight"] - before) * 60 / (time.monotonic() - started)
            assert steps >= 10
            print(f"idle REST weight: {per_min:.0f}/min over {steps} steps")
            # Under 10% of Hyperliquid's 1200/min (REST polling: ~44 per loop).
            assert per_min < 120, per_min
            assert gw.account("BTC").position.szi == pytest.approx(0.01)  # still the truth
        finally:
            gw.close()
        feeds = [t for t in threading.enumerate() if t.name == "resilient-trading-feed"]
        assert len(feeds) == threads_before  # its feed thread is gone


@pytest.mark.timeout(90)
def test_a_stale_feed_refuses_entries_and_a_missed_fill_is_recovered_once(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    want = threading.Event()
    with Simulator(seed=4, speed=60, faults=FaultConfig(), accounts={wallet.address: 1e4}) as sim:
        sim.ws.push_interval = 0.05
        gw = Gateway.connect(
            config(max_silence=0.5, backoff_max=0.3), wallet.key.hex(), sim.base_url, tmp_path
        )
        try:
            assert gw.stream is not None
            bot = Bot(load_config(CONFIG), gw, tmp_path)
            bot.strategies = [Fixed(want.is_set)]  # type: ignore[list-item]
            bot.start()
            until(gw.stream.gate.is_open, "the feed's gate")
            # Stale: the socket stays open, the server goes silent. No new entry goes out.
            sim.ws.freeze()
            until(lambda: gw.entries_blocked() is not None, "the gate to close")
            assert "stale" in str(gw.entries_blocked())
            want.set()
            until(lambda: _step(bot).counters.entries_refused >= 1, "a refused entry")
            assert sim.snapshot()["orders_placed"] == 0
            # The gate reads the age at once; the feed's watchdog counts the stale period on
            # its next tick: wait for it before the server speaks again.
            until(lambda: gw.status().ws_stale_periods >= 1, "the stale period counted")
            sim.ws.freeze(False)
            want.clear()
            until(lambda: gw.entries_blocked() is None, "the gate to open again")
            # Cut off (dropped, reconnects refused): a fill the bot does not hear of.
            with sim.ws.outage():
                buy_by_hand(wallet, sim.base_url, 0.01)
                bot.step()  # no stream: the position is read over REST and protected
            until(lambda: gw.stream is not None and gw.stream.live(), "the reconnect")
            until(lambda: gw.stream is not None and gw.stream.recovered >= 1, "the missed fill")
            time.sleep(0.3)  # any second delivery of that fill would arrive here
            assert gw.stream.recovered == 1  # exactly once
            state = _step(bot)
            assert state.position.szi == pytest.approx(0.01)
            assert state.counters.stops_rearmed == 1
            assert gw.status().ws_reconnects >= 1 and gw.status().ws_stale_periods >= 1
        finally:
            gw.close()


def _step(bot: Bot) -> Any:
    bot.step()
    return bot.store.read()


# --- the stream's bookkeeping, without a network ------------------------------------------------

MINUTE = 60_000


def raw_candle(t: int, close: float) -> dict[str, Any]:
    ohlc = {"o": close, "h": close, "l": close, "c": close, "v": 1.0}
    return {"t": t, "T": t + MINUTE - 1, "s": "BTC", "i": "1m", **ohlc}


class StreamMachine(RuleBasedStateMachine):
    """The :class:`MarketStream` against a small model: the candle buffer follows the stream
    from a REST seed, asks for a new seed after a missed candle or a reconnect; the account
    is read again after a fill or a write; nothing cached survives a reconnect."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.feed = hl.Feed("http://127.0.0.1:1")  # never started: messages are fed by hand
        self.stream = MarketStream(
            self.feed,
            coin="BTC",
            interval="1m",
            interval_ms=MINUTE,
            user="0x" + "ab" * 20,
            max_silence=5.0,
            resync=60.0,
            clock=lambda: self.now,
        )
        self.model: dict[int, float] | None = None  # None: a seed is needed
        self.orders: dict[str, str] = {}
        self.account_stale = True
        self.newest = 10 * MINUTE

    def deliver(self, message: dict[str, Any]) -> None:
        for key, sub in self.feed._subs.items():  # what the feed's reader does for a message
            if message_identifier(message) == key:
                for callback in sub.callbacks:
                    callback(message)

    @rule(n=st.integers(min_value=1, max_value=5))
    def seed(self, n: int) -> None:
        history = [
            Candle(self.newest - i * MINUTE, 1.0, 1.0, 1.0, float(i), 1.0) for i in range(n)
        ][::-1]
        self.stream.seed(history)
        self.model = {c.t: c.close for c in history}

    @rule(step=st.sampled_from([0, 1, 1, 2]), close=st.floats(min_value=1, max_value=1e5))
    def candle(self, step: int, close: float) -> None:
        t = self.newest + step * MINUTE
        self.deliver({"channel": "candle", "data": raw_candle(t, close)})
        if self.model is not None:
            if step == 2:
                self.model = None  # a candle was missed
            else:
                self.model[t] = close
        self.newest = t

    @rule()
    def reconnect(self) -> None:
        self.feed.connections += 1
        assert not self.stream.live()  # the look after a gap goes to REST
        self.model, self.orders, self.account_stale = None, {}, True

    @rule(
        cloid=st.sampled_from(["0x" + "01" * 16, "0x" + "02" * 16]),
        status=st.sampled_from(["open", "filled", "canceled", "triggered"]),
    )
    def order_update(self, cloid: str, status: str) -> None:
        order = {"coin": "BTC", "oid": int(cloid[2:4], 16), "cloid": cloid}
        self.deliver({"channel": "orderUpdates", "data": [{"order": order, "status": status}]})
        self.orders[cloid] = status_from_exchange(status)

    @rule(
        cloid=st.sampled_from(["0x" + "01" * 16, "0x" + "02" * 16]),
        status=st.sampled_from(["open", "filled"]),
    )
    def rest_lookup(self, cloid: str, status: str) -> None:
        """A REST answer is kept only where the stream has said nothing yet."""
        self.stream.remember(cloid, status_from_exchange(status), 7)
        self.orders.setdefault(cloid, status_from_exchange(status))

    @rule()
    def fill(self) -> None:
        user = "0x" + "ab" * 20
        fill = {"tid": int(self.now * 1000) + len(self.orders), "coin": "BTC", "time": 1}
        self.deliver({"channel": "userFills", "data": {"user": user, "fills": [fill]}})
        self.account_stale = True

    @rule()
    def account_read(self) -> None:
        self.stream.account_read()
        self.account_stale = False

    @rule(seconds=st.floats(min_value=0, max_value=90))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        if seconds > 60:
            self.account_stale = True

    @invariant()
    def candles_follow_the_model(self) -> None:
        got = self.stream.candles(1000)
        if self.model is None:
            assert got is None
        else:
            assert got is not None
            assert [(c.t, c.close) for c in got] == sorted(self.model.items())

    @invariant()
    def orders_follow_the_model(self) -> None:
        for cloid in ("0x" + "01" * 16, "0x" + "02" * 16):
            known = self.stream.order(cloid)
            assert (known[0] if known else None) == self.orders.get(cloid)

    @invariant()
    def a_fill_or_an_old_read_makes_the_account_stale(self) -> None:
        if self.account_stale:
            assert self.stream.account_stale()


TestStreamMachine = StreamMachine.TestCase
TestStreamMachine.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
