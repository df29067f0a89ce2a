"""The primitives emit their own events (issue #17, "Events, once"): the store, the Hyperliquid
address budget, dead man's switch and feed fire the right events with the right fields, their
text is redacted, nothing is built while nobody listens, and a raising listener never changes
the outcome of the call it observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import (
    AddressEvent,
    AlertEvent,
    DeadmanEvent,
    FeedEvent,
    LockedJsonStore,
    LockTimeoutError,
    ManualClock,
    StateCorruptedError,
    StoreEvent,
    add_listener,
)
from resilient_trading._events import EVENTS, listening
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.presets.hyperliquid._deadman import Heartbeat, run_watchdog, write_heartbeat
from resilient_trading.testing import Simulator
from tests._listeners import collected, raising_listener

pytestmark = pytest.mark.timeout(60)

SECRET = "0x" + "cd" * 32
ADDRESS = "0x" + "ab" * 20


def of(events: list[Any], cls: type, kind: str | None = None) -> list[Any]:
    return [e for e in events if isinstance(e, cls) and kind in (None, getattr(e, "kind", None))]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true (fails at the deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


def test_nothing_is_built_while_nobody_listens() -> None:
    """The fast path: with no listener, ``listening()`` is false and emitting sites skip
    building their event."""
    assert not EVENTS.listeners
    assert not listening()
    with collected():
        assert listening()
    assert not listening()


# --- the store -------------------------------------------------------------------------------

_STORE_OPS = st.lists(st.sampled_from(["commit", "abort", "read", "commit_async"]), max_size=10)


@settings(max_examples=25, deadline=None)
@given(ops=_STORE_OPS)
def test_one_commit_event_per_commit_with_its_generation(ops: list[str]) -> None:
    """Property: a sequence of transactions (sync and async, some aborted by an exception)
    gives exactly one ``commit`` event per commit, in order, carrying the generation written;
    aborted transactions and reads emit nothing."""

    async def commit_async(store: LockedJsonStore) -> None:
        async with store.transaction_async() as doc:
            doc["n"] = doc.get("n", 0) + 1

    with tempfile.TemporaryDirectory() as tmp, collected() as events:
        path = os.path.join(tmp, "state.json")
        commits = 0
        with LockedJsonStore(path, durable=False) as store:
            for op in ops:
                if op == "commit":
                    with store.transaction() as doc:
                        doc["n"] = doc.get("n", 0) + 1
                    commits += 1
                elif op == "commit_async":
                    asyncio.run(commit_async(store))
                    commits += 1
                elif op == "abort":
                    with contextlib.suppress(KeyError), store.transaction() as doc:
                        doc["n"] = -1
                        raise KeyError("abandon")
                else:
                    store.read()
            assert store.read().get("n", 0) == commits
    mine = [e for e in events if isinstance(e, StoreEvent) and e.path == path]
    assert [(e.kind, e.generation) for e in mine] == [("commit", g) for g in range(1, commits + 1)]


def _hold(store: LockedJsonStore, held: threading.Event, seconds: float) -> threading.Thread:
    """A thread that holds ``store``'s lock (a transaction) for ``seconds``."""

    def run() -> None:
        with store.transaction():
            held.set()
            threading.Event().wait(seconds)  # the holder's own hold time, not a test wait

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_held_lock_is_a_conflict_wait_and_a_timeout_a_lock_timeout(tmp_path: Path) -> None:
    """Another holder of the lock (a second store on the same file: its own ``flock``) makes
    a transaction wait: one ``conflict_wait`` event with the seconds waited, then its commit.
    Not taken within ``lock_timeout``: one ``lock_timeout`` event, and the same
    ``LockTimeoutError`` as without a listener."""
    path = tmp_path / "state.json"
    holder = LockedJsonStore(path, durable=False)
    waiter = LockedJsonStore(path, durable=False, lock_timeout=10)
    with collected() as events:
        thread = _hold(holder, threading.Event(), 0.3)
        with waiter.transaction() as doc:
            doc["x"] = 1
        thread.join()
        waits = of(events, StoreEvent, "conflict_wait")
        assert len(waits) == 1 and waits[0].path == str(path)
        assert 0.0 < waits[0].seconds < 10
        assert [e.generation for e in of(events, StoreEvent, "commit")] == [1, 2]
        events.clear()
        with waiter.transaction():  # free: no conflict
            pass
        assert of(events, StoreEvent, "conflict_wait") == []

        hurried = LockedJsonStore(path, durable=False, lock_timeout=0.05)
        release = threading.Event()

        def hold_until_released() -> None:
            with holder.transaction():
                held.set()
                release.wait(10)

        held = threading.Event()
        thread = threading.Thread(target=hold_until_released, daemon=True)
        thread.start()
        assert held.wait(10)
        try:
            with pytest.raises(LockTimeoutError), hurried.transaction():
                pass
        finally:
            release.set()
            thread.join()
        timeouts = of(events, StoreEvent, "lock_timeout")
        assert len(timeouts) == 1 and timeouts[0].seconds >= 0.04
    for store in (holder, waiter, hurried):
        store.close()


def test_an_async_transaction_reports_its_conflict_wait(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    holder = LockedJsonStore(path, durable=False)
    waiter = LockedJsonStore(path, durable=False)

    async def commit() -> None:
        async with waiter.transaction_async() as doc:
            doc["x"] = 1

    with collected() as events:
        thread = _hold(holder, threading.Event(), 0.3)
        asyncio.run(commit())
        thread.join()
    waits = of(events, StoreEvent, "conflict_wait")
    assert len(waits) == 1 and waits[0].seconds > 0
    holder.close()
    waiter.close()


def test_a_damaged_file_is_a_corrupted_event_and_a_restore_a_restored_one(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with LockedJsonStore(path, durable=False) as store:
        for n in (1, 2):
            with store.transaction() as doc:
                doc["n"] = n
        path.write_bytes(b'{"torn": "' + SECRET.encode())
        with collected() as events:
            with pytest.raises(StateCorruptedError):
                store.read()
            assert store.restore_backup() == 1
    corrupted = of(events, StoreEvent, "corrupted")
    assert corrupted and corrupted[0].path == str(path) and corrupted[0].message
    assert all(SECRET not in (e.message or "") for e in events)
    restored = of(events, StoreEvent, "restored")
    assert [(e.path, e.generation) for e in restored] == [(str(path), 1)]


def test_a_raising_listener_changes_no_store_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    with (
        LockedJsonStore(path, durable=False) as store,
        raising_listener() as seen,
        caplog.at_level(logging.ERROR, logger="resilient_trading.events"),
    ):
        assert store.update(lambda d: d.setdefault("n", 7)) == 7
        with store.transaction() as doc:
            doc["m"] = 1
        path.write_bytes(b"garbage")
        with pytest.raises(StateCorruptedError):  # the store's error, not the listener's
            store.read()
        assert store.restore_backup() == 1
        assert store.read() == {"n": 7}
    # the restore parses the damaged file once more: a second "corrupted", a true report
    assert [e.kind for e in seen] == ["commit", "commit", "corrupted", "corrupted", "restored"]
    assert any("event listener" in r.getMessage() for r in caplog.records)


# --- store events run after the lock is released (#17 review, item 4) --------------------------


def _lock_is_free(path: str) -> bool:
    """Whether another open file description could take the store's lock now (``flock`` is
    per open file description: this conflicts with a holder in this process too)."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _on_disk_generation(path: str) -> int:
    with LockedJsonStore(path) as fresh:  # a new store: parses what is on disk
        fresh.read()
        snapshot = fresh._file.snapshot
    assert snapshot is not None
    return int(snapshot.generation)


_STORE_LOCK_OPS = st.lists(
    st.sampled_from(["commit", "commit_async", "abort", "abort_async", "restore", "damage"]),
    max_size=10,
)


@settings(max_examples=25, deadline=None)
@given(ops=_STORE_LOCK_OPS)
def test_store_events_reach_listeners_after_the_lock_is_released(ops: list[str]) -> None:
    """Property: whatever the sequence of transactions (sync and async, committed or aborted),
    restores and damaged files, every store event reaches a listener while the store's lock
    is free, and a ``commit`` only once its generation is on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.json")
        seen: list[tuple[str, bool]] = []

        def listener(event: Any) -> None:
            if isinstance(event, StoreEvent) and event.path == path:
                seen.append((event.kind, _lock_is_free(path)))
                if event.kind == "commit":
                    assert _on_disk_generation(path) == event.generation

        async def transaction_async(store: LockedJsonStore, abort: bool) -> None:
            with contextlib.suppress(KeyError, StateCorruptedError):
                async with store.transaction_async() as doc:
                    doc["n"] = doc.get("n", 0) + 1
                    if abort:
                        raise KeyError("abandon")

        remove = add_listener(listener)
        try:
            with LockedJsonStore(path, durable=False) as store:
                for op in ops:
                    if op in ("commit", "abort"):
                        with (
                            contextlib.suppress(KeyError, StateCorruptedError),
                            store.transaction() as doc,
                        ):
                            doc["n"] = doc.get("n", 0) + 1
                            if op == "abort":
                                raise KeyError("abandon")
                    elif op in ("commit_async", "abort_async"):
                        asyncio.run(transaction_async(store, op == "abort_async"))
                    elif op == "restore":
                        with contextlib.suppress(StateCorruptedError, ValueError):
                            store.restore_backup(force=True)
                    else:
                        Path(path).write_bytes(b"garbage")
        finally:
            remove()
    assert all(free for _, free in seen), seen
    commits = sum(kind == "commit" for kind, _ in seen)
    assert commits <= ops.count("commit") + ops.count("commit_async")


_OTHER_PROCESS = """
import sys
from resilient_trading import LockedJsonStore, LockTimeoutError, StateCorruptedError
try:
    with LockedJsonStore(sys.argv[1], lock_timeout=0) as store:
        with store.transaction() as doc:
            doc["other"] = 1
except LockTimeoutError:
    sys.exit(3)
except StateCorruptedError:
    print("took the lock (the file is damaged)")
"""


@pytest.mark.parametrize(
    "kind", ["commit", "commit_async", "restored", "corrupted", "conflict_wait"]
)
def test_a_slow_listener_never_blocks_another_process(tmp_path: Path, kind: str) -> None:
    """A listener that blocks on a store event (until the other process is done) does not
    keep the lock: another process takes it at once (``lock_timeout=0``)."""
    path = tmp_path / "state.json"
    store = LockedJsonStore(path, durable=False)
    for n in (1, 2):
        with store.transaction() as doc:
            doc["n"] = n
    if kind == "corrupted":
        path.write_bytes(b"garbage")
    entered, done = threading.Event(), threading.Event()
    event_kind = "commit" if kind == "commit_async" else kind

    def slow(event: Any) -> None:
        if isinstance(event, StoreEvent) and event.kind == event_kind and not entered.is_set():
            entered.set()
            done.wait(30)  # a slow listener: it returns once the other process finished

    async def commit_async() -> None:
        async with store.transaction_async() as doc:
            doc["n"] = 3

    def work() -> None:
        with contextlib.suppress(StateCorruptedError):
            if kind == "commit":
                store.update(lambda doc: doc.update(n=3))
            elif kind == "commit_async":
                asyncio.run(commit_async())
            elif kind == "restored":
                store.restore_backup(force=True)
            elif kind == "corrupted":
                store.update(lambda doc: doc.update(n=3))
            else:
                holder = LockedJsonStore(path, durable=False)
                thread = _hold(holder, threading.Event(), 0.2)  # conflict: this one waits
                store.update(lambda doc: doc.update(n=3))
                thread.join()
                holder.close()

    remove = add_listener(slow)
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        assert entered.wait(30), f"no {event_kind} event"
        other = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        done.set()
        remove()
        worker.join(30)
        store.close()
    assert other.returncode == 0, (other.returncode, other.stdout, other.stderr)


# --- the address budget ------------------------------------------------------------------------

_ADDRESS_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("acquire"),
            st.integers(1, 5),
            st.sampled_from(["action", "cancel", "close"]),
        ),
        st.tuples(st.just("advance"), st.floats(0, 600), st.just("")),
        st.tuples(st.just("refuse"), st.just(0), st.just("")),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ADDRESS_OPS)
def test_address_events_follow_the_budget(ops: list[tuple[str, Any, str]]) -> None:
    """Property: each acquire that waited gives one ``waited`` event with the seconds it
    returned (none when it did not wait); each ``refused()`` one ``refused`` event; a
    ``throttled`` event (and its alert) exactly when the budget enters throttled mode; at most
    one ``runway_low`` for all the sequence."""
    clock = ManualClock(start=1_000_000.0)
    budget = hl.AddressBudget(ADDRESS, clock=clock, lasts=timedelta(hours=1), burst=3)
    budget._state.transact(lambda raw, now: (_small(now), None))  # a cap the ops can reach
    with collected() as events:
        for op, arg, kind in ops:
            before = budget.status().throttled
            start = len(events)
            if op == "acquire":
                waited = budget.acquire(arg, kind=kind)  # type: ignore[arg-type]
                new = events[start:]
                waits = of(new, AddressEvent, "waited")
                assert [e.seconds for e in waits] == ([waited] if waited > 0 else [])
            elif op == "advance":
                clock.advance(arg)
                assert events[start:] == []
            else:
                budget.refused()
                assert len(of(events[start:], AddressEvent, "refused")) == 1
            after = budget.status().throttled
            entered = of(events[start:], AddressEvent, "throttled")
            assert len(entered) == int(after and not before)
            alerts = of(events[start:], AlertEvent)
            assert all(a.subject == f"address:{ADDRESS}" for a in alerts)
    assert len(of(events, AddressEvent, "runway_low")) <= 1
    assert all(e.address == ADDRESS for e in of(events, AddressEvent))


def _small(now: float) -> dict[str, Any]:
    """A fresh record with a cap of 12 actions."""
    from resilient_trading.presets.hyperliquid._address_rules import Pace, start

    return start(now, Pace(lasts=3600.0, burst=3, throttle_interval=11.0), ADDRESS).to_json() | {
        "cap": 12
    }


def test_runway_low_is_one_event_and_one_alert() -> None:
    clock = ManualClock(start=1_000_000.0)
    budget = hl.AddressBudget(ADDRESS, clock=clock, lasts=timedelta(hours=1), burst=50)
    with collected() as events:
        for _ in range(40):
            budget.acquire(1)
    low = of(events, AddressEvent, "runway_low")
    assert len(low) == 1
    assert low[0].runway_seconds is not None and low[0].runway_seconds < 86_400
    assert low[0].cap == budget.status().cap and 0 < (low[0].used or 0) <= budget.status().used
    alerts = of(events, AlertEvent)
    assert [(a.subject, a.state) for a in alerts] == [(f"address:{ADDRESS}", "runway_low")]


class _FailingInfo:
    """An SDK ``Info`` stand-in whose ``userRateLimit`` fails with a secret in its text."""

    def user_rate_limit(self, address: str) -> Any:
        raise ConnectionError(f"reset while sending key={SECRET}")


def test_a_sync_is_a_synced_event_and_a_failed_sync_a_redacted_sync_failed_one() -> None:
    with Simulator(seed=2, auto_fund=10_000) as sim:
        wallet = eth_account.Account.create()
        budget = hl.AddressBudget(wallet.address, info=Info(sim.base_url, skip_ws=True))
        with collected() as events:
            status = budget.sync()
    synced = of(events, AddressEvent, "synced")
    assert [(e.address, e.used, e.cap) for e in synced] == [
        (wallet.address.lower(), status.used, status.cap)
    ]
    failing = hl.AddressBudget(ADDRESS, info=_FailingInfo())
    with collected() as events:
        assert failing.acquire(1) == 0.0  # the failed sync never replaces the action
    failed = of(events, AddressEvent, "sync_failed")
    assert len(failed) == 1 and failed[0].message and "ConnectionError" in failed[0].message
    assert SECRET not in failed[0].message


def test_a_raising_listener_changes_no_address_outcome() -> None:
    def run() -> list[float]:
        clock = ManualClock(start=1_000_000.0)
        budget = hl.AddressBudget(ADDRESS, clock=clock, lasts=timedelta(hours=1), burst=2)
        out = [budget.acquire(1) for _ in range(5)]
        budget.refused()
        out += [budget.acquire(1, kind="cancel"), budget.acquire(1)]
        return out

    bare = run()
    with raising_listener() as seen:
        assert run() == bare
    assert of(seen, AddressEvent, "waited") and of(seen, AddressEvent, "throttled")


# --- the dead man's switch ---------------------------------------------------------------------


class _Flaky:
    """A real SDK ``Exchange`` whose ``schedule_cancel`` can be made to fail (the network)."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = self.inner = exchange  # ``inner``: where the switch finds the address
        self.down = False

    def schedule_cancel(self, when_ms: int | None) -> Any:
        if self.down:
            raise ConnectionError(f"connection reset (signature {SECRET})")
        return self.exchange.schedule_cancel(when_ms)


def test_the_switch_falls_back_with_an_event_and_an_alert(tmp_path: Path) -> None:
    with Simulator(auto_fund=10_000) as sim:  # below the volume: scheduleCancel is refused
        ex = Exchange(eth_account.Account.create(), sim.base_url)
        with collected() as events:
            switch = hl.DeadMansSwitch(ex, deadline=30.0, state_dir=tmp_path)
            assert switch.arm() == "watchdog"
            switch.stop()
    kinds = [e.kind for e in of(events, DeadmanEvent)]
    assert kinds == ["fallback", "armed", "disarmed"]
    armed = of(events, DeadmanEvent, "armed")[0]
    assert (armed.address, armed.mode) == (switch.address, "watchdog")
    alerts = of(events, AlertEvent)
    assert [(a.subject, a.state) for a in alerts] == [(f"deadman:{switch.address}", "fallback")]
    assert "enough volume" in (alerts[0].message or "")


def test_a_failed_refresh_is_an_event_and_an_alert_until_a_refresh_succeeds(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=time.time())
    with Simulator(auto_fund=10_000, schedule_cancel_volume=0, clock=clock.time) as sim:
        flaky = _Flaky(Exchange(eth_account.Account.create(), sim.base_url))
        switch = hl.DeadMansSwitch(flaky, deadline=30.0, refresh_every=5.0, clock=clock)
        with collected() as events:
            assert switch.arm() == "exchange"
            flaky.down = True
            clock.advance(6.0)
            switch.beat()  # logged, not raised: the armed time stands
            flaky.down = False
            clock.advance(6.0)
            switch.beat()
    kinds = [e.kind for e in of(events, DeadmanEvent)]
    assert kinds == ["armed", "refresh_failed", "armed"]
    failed = of(events, DeadmanEvent, "refresh_failed")[0]
    assert failed.message and "ConnectionError" in failed.message and SECRET not in failed.message
    assert [a.state for a in of(events, AlertEvent)] == ["refresh_failed", "ok"]


def test_the_watchdog_cancelling_is_a_critical_alert(tmp_path: Path) -> None:
    clock = ManualClock(start=1000.0)
    write_heartbeat(str(tmp_path), Heartbeat("0xab", 1, 1000.0, 5.0, "watchdog"))
    clock.advance(6.0)
    attempts: list[str] = []

    def cancel(address: str) -> int:
        attempts.append(address)
        if len(attempts) == 1:
            raise ConnectionError("exchange unreachable")
        return 3

    with collected() as events:
        run_watchdog(str(tmp_path), cancel=cancel, clock=clock, once=True)
        run_watchdog(str(tmp_path), cancel=cancel, clock=clock, once=True)
    kinds = [(e.kind, e.count) for e in of(events, DeadmanEvent)]
    assert kinds == [("watchdog_failed", 0), ("watchdog_cancelled", 3)]
    alerts = of(events, AlertEvent)
    assert [(a.subject, a.state, a.severity) for a in alerts] == [
        ("deadman:0xab", "watchdog_cancelled", "critical")
    ]


def test_a_raising_listener_changes_no_switch_outcome(tmp_path: Path) -> None:
    with Simulator(auto_fund=10_000) as sim, raising_listener() as seen:
        ex = Exchange(eth_account.Account.create(), sim.base_url)
        switch = hl.DeadMansSwitch(ex, deadline=30.0, state_dir=tmp_path)
        assert switch.arm() == "watchdog"
        switch.stop()
    assert of(seen, DeadmanEvent, "fallback")


# --- the feed ---------------------------------------------------------------------------------

FAST: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "ping_interval": 0.5,
    "pong_timeout": 0.5,
    "seed": 7,
}


def test_the_feed_reports_stale_fresh_disconnected_and_reconnected() -> None:
    with Simulator(seed=3, auto_fund=100_000) as sim, collected() as events:
        sim.ws.push_interval = 0.05
        with hl.Feed(sim.base_url, **FAST) as feed:
            key = feed.subscribe({"type": "allMids"}, lambda m: None, max_silence=0.3)
            wait_for(feed.fresh)
            assert of(events, FeedEvent) == []  # the first connection is no news
            sim.ws.freeze()
            wait_for(lambda: bool(of(events, FeedEvent, "stale")))
            sim.ws.freeze(False)
            wait_for(lambda: bool(of(events, FeedEvent, "fresh")))
            connections = feed.connections
            sim.ws.drop_all()
            wait_for(lambda: feed.connections > connections and feed.fresh())
            reconnects = feed.reconnects
    stale = of(events, FeedEvent, "stale")
    assert stale[0].subscription == key and stale[0].seconds >= 0.3
    fresh = of(events, FeedEvent, "fresh")
    assert fresh[0].subscription == key
    feed_alerts = [(a.subject, a.state) for a in of(events, AlertEvent)]
    assert feed_alerts[:2] == [(f"feed:{key}", "stale"), (f"feed:{key}", "ok")]
    reconnected = of(events, FeedEvent, "reconnected")
    assert [e.count for e in reconnected] == list(range(1, reconnects + 1))
    assert of(events, FeedEvent, "disconnected")


def test_a_gap_fill_is_an_event_with_its_count() -> None:
    with Simulator(seed=3, auto_fund=100_000) as sim, collected() as events:
        sim.ws.push_interval = 0.05
        wallet = eth_account.Account.create()
        user = wallet.address.lower()
        exchange = Exchange(wallet, sim.base_url)
        info = Info(sim.base_url, skip_ws=True)
        fills: list[int] = []
        with hl.Feed(sim.base_url, info=info, user=user, **FAST) as feed:
            feed.subscribe(
                {"type": "userFills", "user": user},
                lambda m: fills.extend(f["tid"] for f in m["data"]["fills"]),
            )
            wait_for(lambda: all(s.state == "live" for s in feed.status().values()))
            with sim.ws.outage():
                wait_for(lambda: all(s.state == "down" for s in feed.status().values()))
                exchange.market_open("ETH", True, 0.01)  # a fill nobody pushes
            wait_for(lambda: feed.gap_filled >= 1)
            gap_filled = feed.gap_filled
    filled = of(events, FeedEvent, "gap_filled")
    assert sum(e.count for e in filled) == gap_filled
    assert all(e.subscription and e.subscription == f"userFills:{user}" for e in filled)


# --- metrics -----------------------------------------------------------------------------------


def test_event_metrics_count_the_wired_events() -> None:
    """The new events reach Prometheus: store waits and corruptions, address, dead man's
    switch and feed events, parsed back with ``prometheus_client.parser``."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from resilient_trading import EventMetrics, emit

    registry = CollectorRegistry()
    remove = add_listener(EventMetrics(registry))
    try:
        emit(StoreEvent("conflict_wait", "/srv/bot/state.json", seconds=0.25))
        emit(StoreEvent("corrupted", "/srv/bot/state.json", message="bad checksum"))
        emit(AddressEvent("waited", ADDRESS, seconds=2.0))
        emit(AddressEvent("throttled", ADDRESS))
        emit(DeadmanEvent("watchdog_cancelled", ADDRESS, count=3))
        emit(FeedEvent("gap_filled", subscription="userFills:0xab", count=4))
        emit(FeedEvent("stale", subscription="allMids", seconds=31.0))
    finally:
        remove()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    p = "resilient_trading_"
    assert samples[(p + "store_events_total", (("kind", "conflict_wait"),))] == 1
    assert samples[(p + "store_events_total", (("kind", "corrupted"),))] == 1
    assert samples[(p + "store_lock_wait_seconds_sum", ())] == 0.25
    assert samples[(p + "address_events_total", (("address", ADDRESS), ("kind", "throttled")))] == 1
    assert samples[(p + "address_wait_seconds_sum", (("address", ADDRESS),))] == 2.0
    assert samples[(p + "deadman_events_total", (("kind", "watchdog_cancelled"),))] == 1
    assert samples[(p + "feed_events_total", (("kind", "stale"),))] == 1
    assert samples[(p + "feed_gap_filled_total", ())] == 4
