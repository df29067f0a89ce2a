"""The supervised WebSocket feed against the simulator's real ``/ws`` on 127.0.0.1.

Each test names the property it checks; silence limits and backoffs are small so the file
runs in seconds. Waiting is polling with a deadline, never a fixed sleep for a condition.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info

from resilient_trading.presets.hyperliquid import Feed, StaleFeedError
from resilient_trading.testing import Simulator

pytestmark = pytest.mark.timeout(60)

FAST: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "ping_interval": 0.5,
    "pong_timeout": 0.5,
    "seed": 7,
}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``condition`` until true; returns the seconds it took (fails at the deadline)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - start


def ignore(message: dict[str, Any]) -> None:
    return None


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=3, auto_fund=100_000) as simulator:
        simulator.ws.push_interval = 0.05
        yield simulator


def test_dropped_connection_reconnects_and_resubscribes_within_the_backoff(sim: Simulator) -> None:
    got: list[dict[str, Any]] = []
    with Feed(sim.base_url, **FAST) as feed:
        # a long silence limit: the watchdog must not be what brings the data back
        key = feed.subscribe({"type": "l2Book", "coin": "ETH"}, got.append, max_silence=3.0)
        wait_for(feed.fresh)
        for round_ in range(1, 4):
            subscribes = sim.ws.counters["ws_subscribes"]
            seen = len(got)
            assert sim.ws.drop_all() == 1

            def back(r: int = round_, n: int = seen) -> bool:
                return feed.reconnects >= r and len(got) > n

            took = wait_for(back)
            # backoff_max (0.2 s) + handshake + one push interval, with room for a busy machine
            assert took < 1.2, took
            assert sim.ws.counters["ws_subscribes"] == subscribes + 1  # resubscribed, once
        assert feed.status()[key].reconnects == 3
        assert got[-1]["channel"] == "l2Book"


def test_frozen_socket_is_detected_within_its_silence_limit_then_recycled(sim: Simulator) -> None:
    limit = 0.3
    with Feed(sim.base_url, **FAST) as feed:
        key = feed.subscribe({"type": "allMids"}, lambda m: None, max_silence=limit)
        wait_for(feed.fresh)
        sim.ws.freeze()
        took = wait_for(lambda: feed.status()[key].state == "stale")
        assert took < limit + 0.3, took  # the watchdog ticks every max_silence / 5
        assert not feed.fresh()
        wait_for(lambda: feed.connections >= 2)  # resubscribe did not help: recycled
        assert feed.status()[key].resubscribes >= 1
        sim.ws.freeze(False)
        wait_for(feed.fresh)
        assert feed.status()[key].stale_periods >= 1


def test_gate_closes_while_stale_and_opens_after(sim: Simulator) -> None:
    with Feed(sim.base_url, **FAST) as feed:
        key = feed.subscribe(
            {"type": "candle", "coin": "BTC", "interval": "1m"}, ignore, max_silence=0.3
        )
        gate = feed.gate(key)
        assert not gate.is_open()  # nothing received yet: closed
        wait_for(gate.is_open)
        gate.check()
        sim.ws.freeze()
        wait_for(lambda: not gate.is_open())
        with pytest.raises(StaleFeedError, match="candle:btc,1m"):
            gate.check()
        sim.ws.freeze(False)
        wait_for(gate.is_open)
        gate.check()


def test_a_fill_made_while_disconnected_is_delivered_exactly_once(sim: Simulator) -> None:
    wallet = eth_account.Account.create()
    user = wallet.address.lower()
    exchange = Exchange(wallet, sim.base_url)
    info = Info(sim.base_url, skip_ws=True)
    fills: list[int] = []
    events: list[int] = []

    def on_fills(message: dict[str, Any]) -> None:
        fills.extend(f["tid"] for f in message["data"]["fills"])

    def on_events(message: dict[str, Any]) -> None:
        events.extend(f["tid"] for f in message["data"].get("fills", []))

    with Feed(sim.base_url, info=info, user=user, **FAST) as feed:
        feed.subscribe({"type": "userFills", "user": user}, on_fills)
        feed.subscribe({"type": "userEvents", "user": user}, on_events)
        wait_for(lambda: all(s.state == "live" for s in feed.status().values()))
        exchange.market_open("ETH", True, 0.01)  # a fill seen live
        wait_for(lambda: len(fills) == 1 and len(events) == 1)
        with sim.ws.outage():
            wait_for(lambda: all(s.state == "down" for s in feed.status().values()))
            exchange.market_open("ETH", True, 0.01)  # a fill nobody pushes
            exchange.market_close("ETH")  # and another
        wait_for(lambda: len(fills) >= 3 and len(events) >= 3)
        time.sleep(0.3)  # a duplicate would arrive within a few pushes: give it the chance
    tids = [f["tid"] for f in info.user_fills(user)]
    assert sorted(fills) == sorted(tids) == sorted(events), (fills, events, tids)
    assert feed.gap_filled >= 2  # userEvents has no snapshot: only REST gap fill brings them


def test_no_more_new_connections_per_minute_than_allowed_when_every_drop_is_at_once(
    sim: Simulator, tmp_path: Path
) -> None:
    cap = 4
    shared: dict[str, Any] = {"state_path": str(tmp_path / "ws.json"), "max_new_connections": cap}
    feeds = [Feed(sim.base_url, **shared, **FAST) for _ in range(2)]  # two bots, one IP
    for feed in feeds:
        feed.subscribe({"type": "allMids"}, lambda m: None, max_silence=1.0)
        feed.start()
    try:
        wait_for(lambda: all(f.fresh() for f in feeds))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            sim.ws.drop_all()
            time.sleep(0.02)  # a hostile server: drops everything every 20 ms
        wait_for(lambda: sim.ws.counters["ws_connections"] >= cap)
    finally:
        for feed in feeds:
            feed.stop()
    times = sim.ws.handshake_times
    assert len(times) == cap, times
    assert sim.ws.counters["ws_refused_limit"] == 0  # the server never had to refuse one


def test_pings_keep_a_quiet_connection_open_and_a_missing_pong_recycles_it(
    sim: Simulator,
) -> None:
    sim.ws.idle_timeout = 0.6
    user = "0x" + "ab" * 20
    with Feed(sim.base_url, **{**FAST, "ping_interval": 0.2, "pong_timeout": 0.3}) as feed:
        feed.subscribe({"type": "orderUpdates", "user": user}, ignore)  # silent by nature
        wait_for(lambda: sim.ws.counters["ws_pings"] >= 8, timeout=5.0)
        assert sim.ws.counters["ws_idle_closed"] == 0
        assert feed.connections == 1
        sim.ws.freeze()  # no pong any more
        wait_for(lambda: feed.connections >= 2, timeout=3.0)
        sim.ws.freeze(False)


def test_async_api_reconnects_and_leaks_no_thread_or_socket(sim: Simulator) -> None:
    threads = set(threading.enumerate())
    sockets = open_sockets()

    async def main() -> int:
        got: list[str] = []

        async def on_trade(message: dict[str, Any]) -> None:
            got.append(message["channel"])

        async with Feed(sim.base_url, **FAST) as feed:
            feed.subscribe({"type": "trades", "coin": "SOL"}, on_trade, max_silence=0.5)
            while not feed.fresh():
                await asyncio.sleep(0.01)
            sim.ws.drop_all()
            while feed.reconnects < 1 or not feed.fresh():
                await asyncio.sleep(0.01)
        return len(got)

    assert asyncio.run(main()) >= 2
    feed = Feed(sim.base_url, **FAST).start()
    feed.subscribe({"type": "allMids"}, ignore, max_silence=0.5)
    wait_for(feed.fresh)
    feed.stop()
    wait_for(lambda: set(threading.enumerate()) <= threads)
    wait_for(lambda: open_sockets() <= sockets)


def test_an_unreachable_shared_count_never_lets_a_connection_through_uncounted(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    dead_redis = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with Feed(sim.base_url, redis_url=dead_redis, **FAST) as feed:
        feed.subscribe({"type": "allMids"}, ignore, max_silence=0.5)
        wait_for(lambda: caplog.text.count("cannot count the new connection") >= 2)
        assert feed.connections == 0 and not feed.fresh()
    assert sim.ws.counters["ws_connections"] == 0


def record_client_messages(sim: Simulator) -> list[float]:
    """Arrival times (monotonic) at the simulator of every message any client sent."""
    times: list[float] = []
    original = sim.ws._on_text

    def on_text(conn: Any, text: str) -> None:
        times.append(time.monotonic())
        original(conn, text)

    sim.ws._on_text = on_text  # type: ignore[method-assign]
    return times


def test_two_feeds_sharing_a_state_never_send_more_messages_per_window_than_the_cap(
    sim: Simulator, tmp_path: Path
) -> None:
    cap, window = 6, 1.0
    arrivals = record_client_messages(sim)
    shared: dict[str, Any] = {
        "state_path": str(tmp_path / "ws.json"),
        "max_messages": cap,
        "message_window": window,
        **FAST,
        "ping_interval": 0.05,  # 40 pings a second between them without the cap
        "pong_timeout": 3.0,
    }
    feeds = [Feed(sim.base_url, **shared) for _ in range(2)]  # two bots, one IP
    for feed in feeds:
        feed.subscribe({"type": "allMids"}, ignore)
        feed.start()
    try:
        wait_for(lambda: len(arrivals) >= 2 * cap + 2, timeout=8.0)  # three windows' worth
    finally:
        for feed in feeds:
            feed.stop()
    # admission is counted at send time; allow 50 ms of delivery jitter on the window
    for start in arrivals:
        inside = [t for t in arrivals if start <= t < start + window - 0.05]
        assert len(inside) <= cap, (len(inside), arrivals)


def test_a_connection_beyond_the_shared_open_cap_waits_until_a_slot_frees(
    sim: Simulator, tmp_path: Path
) -> None:
    shared: dict[str, Any] = {
        "state_path": str(tmp_path / "ws.json"),
        "max_connections": 2,
        "connection_ttl": 5.0,  # long: the slot must free by release, not by expiry
        **FAST,
    }
    feeds = [Feed(sim.base_url, **shared) for _ in range(3)]
    try:
        for feed in feeds:
            feed.subscribe({"type": "allMids"}, ignore)
            feed.start()
        wait_for(lambda: sum(f.connections for f in feeds) == 2)
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:  # the third keeps waiting, the server sees two
            assert sim.ws.active() <= 2
            assert sum(f.connections for f in feeds) == 2
            time.sleep(0.02)
        holder = next(f for f in feeds if f.connections == 1)
        waiter = next(f for f in feeds if f.connections == 0)
        holder.stop()
        took = wait_for(lambda: waiter.connections == 1)
        assert took < 1.5, took  # it looks again every ttl / 10 (0.5 s)
        assert sim.ws.counters["ws_refused_limit"] == 0
    finally:
        for feed in feeds:
            feed.stop()


HOLDER = """
import sys, time
from resilient_trading.presets.hyperliquid import Feed
feed = Feed(sys.argv[1], state_path=sys.argv[2], max_connections=1, connection_ttl=1.0,
            backoff_initial=0.05, backoff_max=0.2)
feed.subscribe({"type": "allMids"}, lambda m: None)
feed.start()
while feed.connections == 0:
    time.sleep(0.01)
print("connected", flush=True)
time.sleep(60)
"""


def test_a_killed_holders_slot_expires_and_frees_the_connection_cap(
    sim: Simulator, tmp_path: Path
) -> None:
    state = str(tmp_path / "ws.json")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, sim.base_url, state], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "connected"
        feed = Feed(sim.base_url, state_path=state, max_connections=1, connection_ttl=1.0, **FAST)
        feed.subscribe({"type": "allMids"}, ignore)
        with feed:
            deadline = time.monotonic() + 1.2  # past one ttl: the live holder refreshes its slot
            while time.monotonic() < deadline:
                assert feed.connections == 0
                time.sleep(0.02)
            holder.kill()  # SIGKILL: no release, the slot must expire
            holder.wait()
            took = wait_for(lambda: feed.connections == 1)
            assert took < 1.0 + 0.5, took  # ttl, plus one look every ttl / 10
    finally:
        holder.kill()
        holder.wait()


def test_subscriptions_beyond_the_cap_are_refused_and_resubscribing_one_is_not_counted() -> None:
    feed = Feed("http://127.0.0.1:1", max_subscriptions=2)
    feed.subscribe({"type": "l2Book", "coin": "ETH"}, ignore)
    feed.subscribe({"type": "l2Book", "coin": "BTC"}, ignore)
    feed.subscribe({"type": "l2Book", "coin": "eth"}, print)  # the same one: a second callback
    with pytest.raises(ValueError, match=r"max_subscriptions=2"):
        feed.subscribe({"type": "trades", "coin": "SOL"}, ignore)
    assert len(feed.status()) == 2
