"""DeadMansSwitch: a killed bot's orders are cancelled within the deadline, in both modes
(the exchange's scheduleCancel, the local watchdog); a living bot's orders never are."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import ManualClock, StateCorruptedError
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.presets.hyperliquid._deadman import (
    Heartbeat,
    read_heartbeat,
    refresh_interval,
    run_watchdog,
    stale,
    write_heartbeat,
)
from resilient_trading.testing import Simulator

pytestmark = pytest.mark.timeout(60)

BOT = """
import sys, time, eth_account
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from resilient_trading.presets.hyperliquid import DeadMansSwitch
url, key, state, deadline = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ex = Exchange(eth_account.Account.from_key(key), url)
px = round(float(Info(url, skip_ws=True).all_mids()["BTC"]) * 0.5)
for _ in range(3):
    ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
switch = DeadMansSwitch(ex, deadline=deadline, state_dir=state, refresh_every=1.0).start()
print(switch.mode, flush=True)
time.sleep(600)
"""


# --- decisions -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    beat_at=st.floats(0, 1e9),
    deadline=st.floats(5, 3600),
    age=st.floats(-1e6, 1e6),
    stopped=st.booleans(),
    fired=st.booleans(),
)
def test_stale_only_past_the_deadline_and_only_once(
    beat_at: float, deadline: float, age: float, stopped: bool, fired: bool
) -> None:
    beat = Heartbeat(
        "0xab",
        1,
        beat_at=beat_at,
        deadline=deadline,
        mode="watchdog",
        stopped=stopped,
        fired_at=beat_at if fired else None,
    )
    now = beat_at + age
    assert stale(beat, now) == (not stopped and not fired and now - beat_at > deadline)


def test_heartbeat_round_trips_and_a_bad_one_names_its_file(tmp_path: Path) -> None:
    beat = Heartbeat("0xab", 7, beat_at=1.5, deadline=10.0, mode="exchange")
    write_heartbeat(str(tmp_path), beat)
    assert read_heartbeat(str(tmp_path)) == beat
    (tmp_path / "heartbeat.json").write_text(json.dumps({"version": 1, "pid": "x"}))
    with pytest.raises(StateCorruptedError, match=r"heartbeat\.json"):
        read_heartbeat(str(tmp_path))
    assert read_heartbeat(str(tmp_path / "none")) is None


def test_refresh_interval_comes_from_the_address_budget() -> None:
    assert refresh_interval(30.0) == 10.0
    from datetime import timedelta

    budget = hl.AddressBudget("0x" + "ab" * 20, lasts=timedelta(days=7))
    # 10,000 actions over 7 days: ~0.0165/s; a tenth of that: one re-arm per ~10 minutes
    assert refresh_interval(30.0, budget) == pytest.approx(604_800 / 10_000 * 10, rel=0.01)


def test_arguments_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="deadline"):
        hl.DeadMansSwitch(object(), deadline=0.0)
    with pytest.raises(ValueError, match="state_dir"):
        hl.DeadMansSwitch(object(), mode="watchdog")


def test_watchdog_fires_once_per_death_and_stands_down_on_a_clean_stop(tmp_path: Path) -> None:
    clock = ManualClock(start=1000.0)
    fired: list[str] = []

    def cancel(address: str) -> int:
        fired.append(address)
        return 0

    write_heartbeat(str(tmp_path), Heartbeat("0xab", 1, 1000.0, 5.0, "watchdog"))

    def once() -> None:
        run_watchdog(str(tmp_path), cancel=cancel, clock=clock, once=True)

    once()
    clock.advance(4.0)
    once()
    assert fired == []  # alive
    clock.advance(2.0)
    once()
    once()
    assert fired == ["0xab"]  # dead: cancelled once
    write_heartbeat(str(tmp_path), Heartbeat("0xab", 2, clock.time(), 5.0, "watchdog"))
    clock.advance(6.0)
    once()
    assert fired == ["0xab", "0xab"]  # a restarted bot died again
    write_heartbeat(str(tmp_path), Heartbeat("0xab", 3, clock.time(), 5.0, "watchdog", True))
    clock.advance(60.0)
    run_watchdog(str(tmp_path), cancel=cancel, clock=clock)  # returns: the bot stopped
    assert len(fired) == 2


def test_the_exchange_refusal_falls_back_to_the_watchdog_and_stop_disarms(
    tmp_path: Path,
) -> None:
    with Simulator(auto_fund=10_000) as sim:
        ex = Exchange(eth_account.Account.create(), sim.base_url)
        switch = hl.DeadMansSwitch(ex, deadline=30.0, state_dir=tmp_path)
        assert switch.arm() == "watchdog"
        switch.stop()
        beat = read_heartbeat(str(tmp_path))
        assert beat is not None and beat.stopped
        with pytest.raises(RuntimeError, match="enough volume"):
            hl.DeadMansSwitch(ex, deadline=30.0).arm()  # no state_dir: nowhere to fall back


# --- kill -9, for real -----------------------------------------------------------------------


def _spawn_bot(sim: Simulator, state: Path, deadline: float) -> tuple[subprocess.Popen[str], Any]:
    wallet = eth_account.Account.create()
    proc = subprocess.Popen(
        [sys.executable, "-c", BOT, sim.base_url, wallet.key.hex(), str(state), str(deadline)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, wallet


def _spawn_watchdog(sim: Simulator, state: Path, wallet: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "HYPERLIQUID_PRIVATE_KEY": wallet.key.hex()}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resilient_trading._cli_watchdog",
            "--state",
            str(state),
            "--url",
            sim.base_url,
            "--poll",
            "0.2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("mode", ["exchange", "watchdog"])
def test_kill_9_cancels_the_dead_bots_orders_within_the_deadline_never_a_living_ones(
    tmp_path: Path, procs: list[subprocess.Popen[str]], mode: str
) -> None:
    deadline = 6.0 if mode == "exchange" else 2.0  # scheduleCancel: at least 5 s ahead
    volume = 0.0 if mode == "exchange" else 1_000_000.0
    sim = Simulator(seed=4, auto_fund=10_000, schedule_cancel_volume=volume, budget=10**9)
    with sim:
        info = Info(sim.base_url, skip_ws=True)
        bots = []
        for name in ("dying", "living"):
            proc, wallet = _spawn_bot(sim, tmp_path / name, deadline)
            procs.append(proc)
            bots.append((proc, wallet))
        for name, (proc, wallet) in zip(("dying", "living"), bots, strict=True):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == mode
            assert len(info.open_orders(wallet.address)) == 3
            if mode == "watchdog":
                dog = _spawn_watchdog(sim, tmp_path / name, wallet)
                procs.append(dog)
                assert dog.stdout is not None
                assert dog.stdout.readline().startswith("watching")
        (dying, dying_wallet), (_living, living_wallet) = bots
        os.kill(dying.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        dying.wait(timeout=10)
        while info.open_orders(dying_wallet.address):
            assert time.monotonic() - killed_at < deadline + 1.5, "orders outlived the deadline"
            threading.Event().wait(0.1)
        gone_after = time.monotonic() - killed_at
        # the living bot, well past the deadline: every order still there
        until = killed_at + deadline + 2.0
        while time.monotonic() < until:
            assert len(info.open_orders(living_wallet.address)) == 3
            threading.Event().wait(0.25)
        assert gone_after <= deadline + 1.5


def test_a_wrapped_exchange_counts_the_re_arm_once_and_falls_back_too(tmp_path: Path) -> None:
    from resilient_trading import RateLimiter

    wallet = eth_account.Account.create()
    with Simulator(auto_fund=10_000, schedule_cancel_volume=0) as sim:
        limiter = RateLimiter(hl.rest_limit())
        budget = hl.AddressBudget(wallet.address)
        raw = hl.make_exchange(wallet, sim.base_url, limiter)
        wrapped = hl.wrap_exchange(raw, limiter, address_budget=budget)
        switch = hl.DeadMansSwitch(wrapped, deadline=30.0, address_budget=budget)
        assert switch.arm() == "exchange"
        assert budget.status().used == 1  # counted by the wrapper, not twice
        switch.stop()
        assert budget.status().used == 2
    with Simulator(auto_fund=10_000) as sim:  # below the volume: the wrapper raises it
        limiter = RateLimiter(hl.rest_limit())
        raw = hl.make_exchange(wallet, sim.base_url, limiter)
        wrapped = hl.wrap_exchange(raw, limiter)
        switch = hl.DeadMansSwitch(wrapped, deadline=30.0, state_dir=tmp_path)
        assert switch.arm() == "watchdog"


@pytest.mark.parametrize("keep", [True, False])
def test_the_watchdog_keeps_a_dead_bots_stop_and_cancels_what_could_grow_the_position(
    keep: bool,
) -> None:
    """A dead bot holds a long with its reduce-only stop and take-profit, and a resting buy:
    by default the watchdog's cancel leaves the position protected (stop and take-profit
    stay) and cancels the buy; ``keep_reduce_only=False`` cancels everything."""
    from resilient_trading import RateLimiter
    from resilient_trading.presets.hyperliquid._deadman import cancel_open_orders

    wallet = eth_account.Account.create()
    with Simulator(seed=4, auto_fund=10_000, budget=10**9) as sim:
        info = Info(sim.base_url, skip_ws=True)
        ex = hl.make_exchange(wallet, sim.base_url, RateLimiter(hl.rest_limit()))
        ex.market_open("BTC", True, 0.01)
        mid = float(info.all_mids()["BTC"])
        stop: Any = {"trigger": {"triggerPx": round(mid * 0.9), "isMarket": True, "tpsl": "sl"}}
        take: Any = {"trigger": {"triggerPx": round(mid * 1.1), "isMarket": True, "tpsl": "tp"}}
        ex.order("BTC", False, 0.01, round(mid * 0.9), stop, reduce_only=True)
        ex.order("BTC", False, 0.01, round(mid * 1.1), take, reduce_only=True)
        ex.order("BTC", True, 0.001, round(mid * 0.5), {"limit": {"tif": "Gtc"}})
        assert len(info.frontend_open_orders(wallet.address)) == 3
        cancelled = cancel_open_orders(ex, info, wallet.address.lower(), keep_reduce_only=keep)
        left = info.frontend_open_orders(wallet.address)
        if keep:
            assert cancelled == 1
            assert len(left) == 2 and all(o["reduceOnly"] for o in left)
        else:
            assert cancelled == 3 and left == []


# --- issue #15, D5: the watchdog reads the exchange's answer to its cancels --------------------


def test_a_refused_cancel_is_retried_at_the_next_poll_and_only_then_marked_fired(
    tmp_path: Path,
) -> None:
    """The address is throttled (no budget left): the exchange answers ``{"status": "err"}``
    with HTTP 200 and the raw SDK does not raise. The watchdog must not believe the orders
    are gone: no ``fired_at``, the order still open; once the exchange accepts, it cancels."""
    from resilient_trading.presets.hyperliquid._deadman import (
        Heartbeat,
        cancel_open_orders,
        read_heartbeat,
        write_heartbeat,
    )

    wallet = eth_account.Account.create()
    address = wallet.address.lower()
    with Simulator(seed=5, accounts={wallet.address: 10_000.0}, address_buffer=0) as sim:
        ex = Exchange(wallet, sim.base_url)
        info = Info(sim.base_url, skip_ws=True)
        mid = float(info.all_mids()["BTC"])
        placed = ex.order("BTC", True, 0.01, round(mid * 0.8), {"limit": {"tif": "Gtc"}})
        assert "resting" in placed["response"]["data"]["statuses"][0]  # the throttle's slot
        stale_beat = Heartbeat(address, 999_999, time.time() - 60, deadline=3.0, mode="watchdog")
        write_heartbeat(str(tmp_path), stale_beat)

        def cancel(addr: str) -> int:
            return cancel_open_orders(ex, info, addr)

        run_watchdog(str(tmp_path), cancel=cancel, once=True)  # refused: over the budget
        beat = read_heartbeat(str(tmp_path))
        assert beat is not None and beat.fired_at is None
        assert len(info.frontend_open_orders(wallet.address)) == 1
        with sim.engine.lock:
            sim.engine.address_buffer = 10_000  # the exchange accepts again
        run_watchdog(str(tmp_path), cancel=cancel, once=True)
        beat = read_heartbeat(str(tmp_path))
        assert beat is not None and beat.fired_at is not None
        assert info.frontend_open_orders(wallet.address) == []


def test_orders_gone_meanwhile_count_as_done(tmp_path: Path) -> None:
    """An order filled or cancelled between the listing and the cancel is done, not a refusal."""
    from resilient_trading.presets.hyperliquid._deadman import cancel_open_orders

    wallet = eth_account.Account.create()
    with Simulator(seed=6, accounts={wallet.address: 10_000.0}) as sim:
        ex = Exchange(wallet, sim.base_url)
        info = Info(sim.base_url, skip_ws=True)
        mid = float(info.all_mids()["BTC"])
        for frac in (0.8, 0.7):
            ex.order("BTC", True, 0.01, round(mid * frac), {"limit": {"tif": "Gtc"}})
        listed: list[dict[str, Any]] = info.frontend_open_orders(wallet.address)
        assert len(listed) == 2
        ex.cancel("BTC", int(listed[0]["oid"]))  # by hand, after the watchdog listed it

        class Listed:  # the watchdog's listing, taken before the hand cancel
            def frontend_open_orders(self, address: str) -> list[dict[str, Any]]:
                return listed

        assert cancel_open_orders(ex, Listed(), wallet.address.lower()) == 1
        assert info.frontend_open_orders(wallet.address) == []


_GONE = {"error": "Order was never placed, already canceled, or filled. asset=0"}
_REFUSED = {"error": "Too many cumulative requests sent (2 > 0) for cumulative volume traded $0."}


@given(st.lists(st.sampled_from(["success", "gone", "refused"]), min_size=1, max_size=8))
def test_settle_cancels_counts_successes_and_raises_on_any_refusal(kinds: list[str]) -> None:
    """Reference: the number of ``success`` statuses, or a ResilienceError when any status is
    a refusal other than "already gone"; a top-level ``err`` and a short answer raise too."""
    from resilient_trading import ResilienceError
    from resilient_trading.presets.hyperliquid._deadman import settle_cancels

    table: dict[str, Any] = {"success": "success", "gone": _GONE, "refused": _REFUSED}
    statuses = [table[k] for k in kinds]
    answer = {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}
    if "refused" in kinds:
        with pytest.raises(ResilienceError):
            settle_cancels(answer, len(kinds))
    else:
        assert settle_cancels(answer, len(kinds)) == kinds.count("success")
    with pytest.raises(ResilienceError):
        settle_cancels(answer, len(kinds) + 1)  # an order the answer says nothing about
    with pytest.raises(ResilienceError, match="Too many"):
        settle_cancels({"status": "err", "response": _REFUSED["error"]}, len(kinds))
    with pytest.raises(ResilienceError):
        settle_cancels(None, len(kinds))


class _CountingStop(threading.Event):
    """A stop event that counts the watchdog's polls (its waits between them)."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.polls += 1
        return super().wait(timeout)


def _until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.01)


def test_a_damaged_heartbeat_never_kills_the_watchdog_and_the_last_good_one_still_fires(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat file is damaged while the watchdog runs: it keeps running, logs the damage
    once, and still cancels once the last good beat is past its deadline (once per death)."""
    clock = ManualClock(start=1000.0)
    fired: list[str] = []
    stop = _CountingStop()
    write_heartbeat(str(tmp_path), Heartbeat("0xab", 1, 1000.0, 5.0, "watchdog"))

    def cancel(address: str) -> int:
        fired.append(address)
        return 1

    dog = threading.Thread(
        target=run_watchdog,
        args=(str(tmp_path),),
        kwargs={"cancel": cancel, "poll": 0.01, "clock": clock, "stop": stop},
        daemon=True,
    )
    with caplog.at_level(logging.WARNING, logger="resilient_trading"):
        dog.start()
        _until(lambda: stop.polls >= 2)  # it has read the good beat
        (tmp_path / "garbage").write_text("{not json")
        os.replace(tmp_path / "garbage", tmp_path / "heartbeat.json")
        seen = stop.polls
        _until(lambda: stop.polls >= seen + 3)
        assert fired == [] and dog.is_alive()  # alive: not yet past the deadline
        clock.advance(10.0)
        _until(lambda: fired == ["0xab"])
        seen = stop.polls
        _until(lambda: stop.polls >= seen + 5)
        stop.set()
        dog.join(timeout=5)
    assert fired == ["0xab"]  # once per death
    assert caplog.text.count("cannot be read") == 1


def test_a_mark_that_cannot_be_written_leaves_the_cancels_standing_and_fires_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Bookkeeping after the cancel fails (disk full writing ``fired_at``): the watchdog lives
    on, says so, and does not cancel the same death again (the mark is kept in memory)."""
    import errno

    from resilient_trading.presets.hyperliquid import _deadman

    clock = ManualClock(start=1000.0)
    fired: list[str] = []
    stop = _CountingStop()
    write_heartbeat(str(tmp_path), Heartbeat("0xab", 1, 1000.0, 5.0, "watchdog"))

    def full(state_dir: str, beat: Heartbeat) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def cancel(address: str) -> int:
        fired.append(address)
        return 1

    monkeypatch.setattr(_deadman, "write_heartbeat", full)
    dog = threading.Thread(
        target=run_watchdog,
        args=(str(tmp_path),),
        kwargs={"cancel": cancel, "poll": 0.01, "clock": clock, "stop": stop},
        daemon=True,
    )
    with caplog.at_level(logging.WARNING, logger="resilient_trading"):
        dog.start()
        _until(lambda: stop.polls >= 2)
        clock.advance(10.0)
        _until(lambda: fired == ["0xab"])
        seen = stop.polls
        _until(lambda: stop.polls >= seen + 5)
        assert dog.is_alive()
        stop.set()
        dog.join(timeout=5)
    assert fired == ["0xab"]
    assert "could not mark" in caplog.text
