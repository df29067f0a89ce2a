"""``make soak SOAK_MODE=week``: a week of the bot's budgets squeezed into minutes.

The seven-day unattended run, compressed: the address's action budget starts from a small
buffer (``--address-buffer``) and is paced to a horizon of ``--days`` days of
``--day-seconds`` seconds each, so a week of budget pacing happens in a few minutes. The bot
(at the demo's pace: one-minute candles every second) runs with a dead man's switch beating
from its own process, is killed with SIGKILL at random moments and restarted on the same
state; the switch's watchdog (``resilient-trading watchdog``) must cancel the killed bot's
orders. Each life rests a *bait*, a GTC buy at half the mid with a cloid starting
``0xba17``, that the bot never tracks: after a kill only the switch can cancel it, so the
switch's cancel is exercised on the kills it is on the book for (and ``--no-watchdog`` must
make the run fail). A clean exit cancels its own bait. Another process spends the same IP
budget. An observer (the simulator seen from another IP, without faults) samples the
exchange every ``--sample-every`` seconds: the position against its open stop orders, the
live state file, the address budget. At the end
the market is frozen, the bot reconciles once more and stops cleanly.

The report (a printed table and ``week_report.json`` in the run directory) holds: actions
spent, the runway at each ``userRateLimit`` sync, time throttled, orders cancelled by the
switch after kills, positions ever unprotected past the grace, duplicates, 429s, and the live
state file's size and commit time at the start and the end. Exits 1 when an invariant breaks
(see ``docs/howto/week.md`` for each one and for the grace).

The verdicts (the grace, flatness, the invariants, the projection) are pure functions in
``examples/soak_week_rules.py``. Run ``python examples/soak_week.py bot ...`` and it is the bot
itself with its switch (what the soak starts for each life of the bot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.soak_week_rules import (  # noqa: E402
    Sample,
    actions_by_day,
    broken,
    exposures,
    projection,
    runway_days,
    time_throttled,
)

BOT_CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"
#: The observer's own address at the simulator (TEST-NET-2): its reads have their own IP
#: budget and no injected faults, so watching never changes what the bot sees.
OBSERVER_IP = "198.51.100.7"
#: Weight of one sample: ``clearinghouseState`` (2) + ``frontendOpenOrders`` (20).
SAMPLE_WEIGHT = 22
STOP_TYPES = frozenset({"Stop Market", "Stop Limit"})

#: The other process sharing the IP budget (the bot's budget file and key), as a ``-c`` script:
#: ``URL BUDGET_FILE UNTIL``; prints how many reads it made.
SHARER = """
import sys, time
from resilient_trading import RateLimiter, ResilienceError
from resilient_trading.presets import hyperliquid as hl
url, budget, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
limiter = RateLimiter(hl.REST_LIMIT.scaled(0.9), state_path=budget, key="hyperliquid")
info = None
calls = 0
while time.time() < until:
    try:
        if info is None:
            info = hl.wrap_info(hl.make_info(url, limiter, timeout=2), limiter)
        info.all_mids()
        calls += 1
    except (ResilienceError, OSError, ValueError):
        pass
    time.sleep(0.5)
print(calls)
"""


# --- the bot's process: the bot with its dead man's switch -------------------------------------

#: The cloids of the soak's bait orders start with this (16 bytes: ``0xba17`` + 28 hex digits).
BAIT_PREFIX = "0xba17"
#: The bait: a resting GTC buy this far below the mid (never fills), worth about $12.
BAIT_PRICE_RATIO = 0.5
BAIT_USD = 12.0


class CalledOff(BaseException):
    """The bait was called off (a clean exit) while it waited for the address budget: like a
    cancellation, it unwinds the wait before anything is sent."""


class StoppableClock:
    """The system clock, whose waits end with :class:`CalledOff` once ``stop`` is set (the
    bait's pacing under a throttled address can last longer than the bot's life)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if self.stop.wait(max(0.0, seconds)):
            raise CalledOff

    async def sleep_async(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds))


class Bait(threading.Thread):
    """One resting, non-reduce-only order per bot life that only the switch may cancel.

    The bot keeps no trace of it (its cloid is not in the bot's state), so after a
    ``kill -9`` nothing but the dead man's switch can take it off the book: the soak's
    "orders of killed bots left open" counts it. Placed from the bot's process with the same
    key, budgets and nonces as the bot (``budget.json``, ``address.json``, ``nonce.json``)
    so it costs what any order costs (under a throttled address it may wait past the life's
    end and never be placed: the report counts the kills it was on the book for); a clean
    exit calls it off or cancels it (:meth:`cancel`).
    """

    def __init__(self, url: str, key: str, state_dir: Path, *, lasts_hours: float) -> None:
        super().__init__(name="soak-bait", daemon=True)
        self.url, self.key, self.state_dir = url, key, state_dir
        self.lasts_hours = lasts_hours
        self.cloid = BAIT_PREFIX + os.urandom(14).hex()
        self.stop = threading.Event()
        #: ``True`` once the exchange has the bait resting; ``False`` if it never got there.
        self.placed: bool | None = None
        self.exchange: Any = None

    def run(self) -> None:
        from eth_account import Account
        from hyperliquid.utils.types import Cloid

        from examples.hyperliquid_bot.nonce import NonceSource, install
        from resilient_trading import RateLimiter, ResilienceError, RetryPolicy
        from resilient_trading.presets import hyperliquid as hl

        wallet = Account.from_key(self.key)
        limiter = RateLimiter(
            hl.REST_LIMIT.scaled(0.9), state_path=self.state_dir / "budget.json", key="hyperliquid"
        )
        budget = hl.AddressBudget(
            wallet.address,
            lasts=timedelta(hours=self.lasts_hours),
            state_path=self.state_dir / "address.json",
            clock=StoppableClock(self.stop),
        )
        retry = RetryPolicy(attempts=4, base_delay=0.1, max_delay=2.0)
        install(NonceSource(self.state_dir / "nonce.json"))  # what the bot installs too
        while not self.stop.is_set():
            try:
                info = hl.wrap_info(
                    hl.make_info(self.url, limiter, timeout=2), limiter, retry=retry
                )
                mid = float(info.all_mids()["BTC"])
                raw = hl.make_exchange(
                    wallet, self.url, limiter, meta=info.meta(), spot_meta=info.spot_meta()
                )
                self.exchange = hl.wrap_exchange(
                    raw, limiter, retry=retry, address_budget=budget, info=info
                )
                px = float(round(mid * BAIT_PRICE_RATIO))
                size = round(BAIT_USD / px, 5)
                answer = self.exchange.order(
                    "BTC", True, size, px, {"limit": {"tif": "Gtc"}}, cloid=Cloid(self.cloid)
                )
                kinds = [outcome.kind for outcome in hl.outcomes(answer)]
                self.placed = kinds == ["resting"]
                print(f"bait {self.cloid}: {kinds} at {px:g}", flush=True)
                return
            except CalledOff:
                print(f"bait {self.cloid}: called off while paced, never sent", flush=True)
                break
            except (ResilienceError, OSError, ValueError, KeyError) as exc:
                print(f"bait {self.cloid} not placed yet: {exc!r}", flush=True)
                self.stop.wait(1.0)
        self.placed = False

    def cancel(self, *, timeout: float = 60.0) -> bool:
        """Stop trying; cancel the bait if it was placed. ``True`` when none is left."""
        from hyperliquid.utils.types import Cloid

        from resilient_trading import ResilienceError

        self.stop.set()
        self.join(timeout)
        if self.is_alive():
            print(f"bait {self.cloid}: still being placed after {timeout:g}s", flush=True)
            return False
        if not self.placed:
            return True
        try:
            answer = self.exchange.cancel_by_cloid("BTC", Cloid(self.cloid))
        except ResilienceError as exc:
            print(f"bait {self.cloid}: cancel failed: {exc!r}", flush=True)
            return False
        print(f"bait {self.cloid}: cancelled on the clean exit: {answer}", flush=True)
        return True


def bot_process(argv: Sequence[str]) -> int:
    """The bot, with a :class:`DeadMansSwitch` in watchdog mode beating from this process,
    and its :class:`Bait`.

    ``kill -9`` stops the beats, and ``resilient-trading watchdog`` cancels the orders. The
    switch is disarmed only when the bot stops cleanly (exit 0) and its bait is cancelled: a
    crash is not a decision, and a bait left on the book is the switch's to cancel.
    """
    from eth_account import Account

    from resilient_trading.presets import hyperliquid as hl

    parser = argparse.ArgumentParser(prog="soak_week.py bot")
    parser.add_argument("--switch-deadline", type=float, required=True)
    parser.add_argument("--state-dir", required=True)
    known, rest = parser.parse_known_args(argv)
    key = os.environ["HYPERLIQUID_PRIVATE_KEY"]
    address = Account.from_key(key).address
    # The watchdog mode needs only the address (a fresh account may not scheduleCancel).
    signer = SimpleNamespace(vault_address=None, account_address=address)
    switch = hl.DeadMansSwitch(
        signer, deadline=known.switch_deadline, state_dir=known.state_dir, mode="watchdog"
    )
    switch.start()
    seen = argparse.ArgumentParser(add_help=False)
    seen.add_argument("--base-url", required=True)
    seen.add_argument("--address-lasts-hours", type=float, required=True)
    where, _ = seen.parse_known_args(rest)
    bait = Bait(where.base_url, key, Path(known.state_dir), lasts_hours=where.address_lasts_hours)
    bait.start()  # before the bot's imports: on the book early in each life

    from examples.hyperliquid_bot.bot import main as bot_main

    code = bot_main([*rest, "--state-dir", known.state_dir])
    if code == 0 and not bait.cancel():
        code = 1  # the bait stays for the watchdog: not a clean stop
    if code == 0:
        switch.stop()
    return code


# --- the observer ------------------------------------------------------------------------------


class Observer:
    """The simulator seen from :data:`OBSERVER_IP`, without faults, through its public
    ``Simulator.handle`` (the HTTP endpoints' code). ``user_rate_limit`` makes it an ``Info``
    for :class:`AddressBudget`'s syncs."""

    def __init__(self, sim: Any, address: str) -> None:
        self.sim = sim
        self.address = address.lower()
        self.weight = 0
        self.refused = 0  # 429s of the observer's own budget (kept at 0 by its pace)

    def info(self, request: dict[str, Any]) -> Any:
        status, answer = self.sim.handle("/info", OBSERVER_IP, json.dumps(request).encode())
        if status == 429:
            self.refused += 1
        if status != 200:
            raise RuntimeError(f"the simulator answered {status} to the observer's {request}")
        return answer

    def user_rate_limit(self, address: str) -> Any:
        self.weight += 20
        return self.info({"type": "userRateLimit", "user": address})

    def look(self) -> tuple[float, bool, list[dict[str, Any]]]:
        """The position (``szi``), whether a reduce-only stop covers it, the open orders."""
        self.weight += SAMPLE_WEIGHT
        user = self.info({"type": "clearinghouseState", "user": self.address})
        listed: list[dict[str, Any]] = self.info(
            {"type": "frontendOpenOrders", "user": self.address}
        )
        szi = sum(
            float(item["position"]["szi"])
            for item in user.get("assetPositions", [])
            if item["position"]["coin"] == "BTC"
        )
        covered = any(
            o.get("coin") == "BTC"
            and o.get("orderType") in STOP_TYPES
            and o.get("reduceOnly")
            and (o.get("side") == "B") == (szi < 0)
            and float(o["sz"]) >= abs(szi) - 1e-12
            for o in listed
        )
        return szi, szi == 0 or covered, listed

    def order_status(self, oid: int) -> str:
        self.weight += 2
        answer = self.info({"type": "orderStatus", "user": self.address, "oid": oid})
        return str(answer.get("order", {}).get("status", answer.get("status")))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def history_bytes(workdir: Path) -> int:
    """The history journal's size, the live file and every rotated one."""
    return sum(_size(p) for p in workdir.glob("history*.jsonl"))


def commit_cost(state: Path, n: int = 25) -> dict[str, float]:
    """Milliseconds of a commit and of a read of the bot's state (median and best of ``n``),
    timed with its own :class:`~resilient_trading.TypedStore` on a copy of the live file in
    its directory (same disk; the bot is not slowed). The best is the cost the file's size
    imposes; the median adds whatever else the machine is doing."""
    from examples.hyperliquid_bot.state import open_state

    with tempfile.TemporaryDirectory(dir=state.parent, prefix="commit-probe-") as tmp:
        copy = Path(tmp) / "state.json"
        shutil.copyfile(state, copy)
        store = open_state(copy)
        commits, reads = [], []
        for _ in range(n):
            began = time.perf_counter()
            with store.transaction() as doc:
                doc.counters = doc.counters
            commits.append(time.perf_counter() - began)
            began = time.perf_counter()
            store.read()
            reads.append(time.perf_counter() - began)
    return {
        "bytes": _size(state),
        "commit_ms": round(statistics.median(commits) * 1000, 2),
        "commit_ms_best": round(min(commits) * 1000, 2),
        "read_ms": round(statistics.median(reads) * 1000, 2),
        "read_ms_best": round(min(reads) * 1000, 3),
    }


# --- the run -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Life:
    """One bot process: when it started and how it ended."""

    started: float
    ended: float | None = None
    killed: bool = False
    #: Orders that could open or grow a position (not reduce-only) open at the kill.
    open_at_kill: int = 0
    #: Whether this life's bait (:class:`Bait`) was among them.
    bait_at_kill: bool = False
    cancelled_by_switch: int = 0
    #: Orders that went another way first (a stop triggered, its take-profit then cancelled
    #: by the exchange as reduce-only with no position left).
    gone_before_switch: int = 0
    left_open: int = 0
    #: Reduce-only orders (stop, take-profit) the switch left working after the kill.
    protection_kept: int = 0
    switch_seconds: float | None = None
    switch_missed: bool = False


class Week:
    """The compressed week: processes, the observer's thread, the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.dir)
        self.horizon = args.days * args.day_seconds
        self.samples: list[Sample] = []
        self.syncs: list[dict[str, Any]] = []
        self.lives: list[Life] = []
        self.failures: list[str] = []
        self.t0 = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.state_start: dict[str, float] | None = None
        self.watchdog_starts = 0
        #: Orders already counted as left open by an earlier kill (not counted again).
        self.left_open_oids: set[int] = set()
        #: The bot process of the current life (killed on the way out if still running).
        self.bot: subprocess.Popen[str] | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- processes ---

    def start_bot(self, url: str, key: str, duration: float, tag: str) -> subprocess.Popen[str]:
        env = {**os.environ, "HYPERLIQUID_PRIVATE_KEY": key, "PYTHONUNBUFFERED": "1"}
        lasts_hours = self.horizon / 3600
        out = open(self.workdir / f"{tag}.out", "w")  # noqa: SIM115 (the bait's lines, tracebacks)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "bot",
                "--switch-deadline",
                str(self.args.switch_deadline),
                "--state-dir",
                str(self.workdir),
                "--config",
                str(BOT_CONFIG),
                "--base-url",
                url,
                "--duration",
                str(duration),
                "--log-file",
                str(self.workdir / f"{tag}.log"),
                "--address-lasts-hours",
                f"{lasts_hours:.6f}",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            text=True,
        )
        out.close()  # the child has it
        with self.lock:
            self.lives.append(Life(started=self.now()))
        self.bot = proc
        return proc

    def bot_ended(self, *, killed: bool) -> Life:
        with self.lock:
            life = self.lives[-1]
            life.ended, life.killed = self.now(), killed
        return life

    def start_watchdog(self, url: str, key: str) -> subprocess.Popen[str]:
        beside = Path(sys.executable).with_name("resilient-trading")
        command = str(beside) if beside.exists() else shutil.which("resilient-trading")
        if command is None:
            raise SystemExit("the resilient-trading command is not installed (pip install -e .)")
        self.watchdog_starts += 1
        log = open(self.workdir / "watchdog.log", "a")  # noqa: SIM115 (the child keeps it)
        return subprocess.Popen(
            [command, "watchdog", "--state", str(self.workdir), "--url", url, "--poll", "0.5"],
            cwd=ROOT,
            env={**os.environ, "HYPERLIQUID_PRIVATE_KEY": key},
            stdout=log,
            stderr=log,
            text=True,
        )

    # --- watching ---

    def watch(self, observer: Observer, budget: Any) -> None:
        """Sample every ``sample_every`` seconds; sync the address budget every ``sync_every``."""
        args = self.args
        next_sync = 0.0
        while not self.stop.wait(args.sample_every):
            now = self.now()
            try:
                if now >= next_sync:
                    status = budget.sync()
                    runway = status.runway
                    runway_s = None if runway is None else runway.total_seconds()
                    self.syncs.append(
                        {
                            "t": round(now, 1),
                            "day": round(now / args.day_seconds, 2),
                            "used": status.used,
                            "cap": status.cap,
                            "per_hour": round(status.per_hour, 1),
                            "runway_s": None if runway_s is None else round(runway_s),
                            "runway_days": runway_days(status.used, runway_s, args.day_seconds),
                            "throttled": status.throttled,
                        }
                    )
                    next_sync = now + args.sync_every
                szi, protected, listed = observer.look()
                throttled = budget.status().throttled
            except Exception as exc:  # a watcher's error is reported in the report, not raised
                self.failures.append(f"the observer failed at {now:.1f}s: {exc!r}")
                continue
            with self.lock:
                life = self.lives[-1] if self.lives else None
                since = life.started if life is not None and life.ended is None else None
            self.samples.append(
                Sample(
                    t=round(now, 2),
                    szi=szi,
                    protected=protected,
                    open_orders=len(listed),
                    bot_since=since,
                    throttled=throttled,
                    state_bytes=_size(self.workdir / "state.json"),
                    history_bytes=history_bytes(self.workdir),
                )
            )
            state = self.workdir / "state.json"
            if self.state_start is None and now >= args.day_seconds and state.exists():
                self.state_start = commit_cost(state)

    def after_kill(
        self, observer: Observer, life: Life, listed: list[dict[str, Any]], pid: int
    ) -> None:
        """Wait for the switch to act on the dead bot (process ``pid``); check that its orders
        are gone. A bot killed before its switch's first beat has placed nothing: its
        orders are checked all the same, without waiting for a switch it never armed."""
        heartbeat = self.workdir / "heartbeat.json"
        # With no watchdog nothing can fire: look once the deadline (and a poll) has passed.
        patience = 1.5 if self.args.no_watchdog else 20.0
        deadline = time.monotonic() + self.args.switch_deadline + patience
        fired = armed = False
        while time.monotonic() < deadline:
            try:
                beat = json.loads(heartbeat.read_text())
            except FileNotFoundError:
                break  # no bot ever beat: nothing to fire
            except (OSError, ValueError):
                time.sleep(0.2)  # read mid-replace: look again
                continue
            armed = beat.get("pid") == pid
            fired = beat.get("fired_at") is not None and beat["fired_at"] >= beat["beat_at"]
            if fired or not armed:
                break
            time.sleep(0.2)
        life.switch_seconds = round(self.now() - (life.ended or 0.0), 1) if fired else None
        _, _, still = observer.look()
        # The watchdog cancels what could open or grow a position (the bot's entries, the
        # bait) and keeps reduce-only orders (the position's stop and take-profit): those are
        # not "left open". An order an earlier kill already left open is not counted again.
        risky = [
            o for o in listed if not o.get("reduceOnly") and o["oid"] not in self.left_open_oids
        ]
        life.open_at_kill = len(risky)
        life.bait_at_kill = any(str(o.get("cloid")).startswith(BAIT_PREFIX) for o in risky)
        life.protection_kept = sum(1 for o in still if o.get("reduceOnly"))
        for order in risky:
            status = observer.order_status(int(order["oid"]))
            if status in ("canceled", "scheduledCancel"):
                life.cancelled_by_switch += 1
            elif status != "open":
                life.gone_before_switch += 1
        left = [o for o in still if not o.get("reduceOnly") and o["oid"] not in self.left_open_oids]
        life.left_open = len(left)
        self.left_open_oids.update(o["oid"] for o in left)
        life.switch_missed = armed and not fired

    # --- the whole week ---

    def run(self) -> dict[str, Any]:
        from eth_account import Account

        from examples.hyperliquid_bot.state import open_state
        from resilient_trading import ResilienceError
        from resilient_trading.presets import hyperliquid as hl
        from resilient_trading.testing import FaultConfig, Simulator

        args = self.args
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        rng = random.Random(args.seed)
        account = Account.from_key("0x" + rng.randbytes(32).hex())
        key = account.key.hex()
        sim = Simulator(
            seed=args.seed,
            speed=args.speed,
            faults=FaultConfig.uniform(args.fault_rate, stall_seconds=2.5),
            auto_fund=args.auto_fund,
            address_buffer=args.address_buffer,
            actions_per_usd=args.actions_per_usd,
        ).start()
        url = sim.base_url
        observer = Observer(sim, account.address)
        budget = hl.AddressBudget(
            account.address,
            info=observer,
            lasts=timedelta(seconds=self.horizon),
            state_path=self.workdir / "address.json",
        )
        print(
            f"soak week: {args.days} days of {args.day_seconds:g}s, address buffer "
            f"{args.address_buffer} (+{args.actions_per_usd:g} per USDC traded), "
            f"faults on {args.fault_rate:.0%} of requests, "
            f"files in {self.workdir}",
            flush=True,
        )
        self.t0 = time.monotonic()
        budget.sync()  # the week (the budget's horizon) starts now
        until = time.time() + self.horizon
        sharer = subprocess.Popen(
            [sys.executable, "-c", SHARER, url, str(self.workdir / "budget.json"), str(until)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        watchdog = None if args.no_watchdog else self.start_watchdog(url, key)
        watcher = threading.Thread(target=self.watch, args=(observer, budget), daemon=True)
        watcher.start()
        state_always_parsed = True
        final_exit: int | None = None
        state_ok, detail = False, "not checked"
        try:
            while self.now() < self.horizon - 3:
                bot = self.start_bot(url, key, self.horizon * 2, tag=f"bot{len(self.lives)}")
                lifetime = min(rng.uniform(args.kill_min, args.kill_max), self.horizon - self.now())
                ends = time.monotonic() + max(1.0, lifetime)
                while time.monotonic() < ends:
                    if watchdog is not None and watchdog.poll() is not None:
                        watchdog = self.start_watchdog(url, key)  # its start met a fault
                    time.sleep(0.2)
                _, _, listed = observer.look()
                bot.send_signal(signal.SIGKILL)
                bot.wait()
                life = self.bot_ended(killed=True)
                self.after_kill(observer, life, listed, bot.pid)
                state = self.workdir / "state.json"
                if state.exists():
                    try:
                        open_state(state).read()  # parses and fits the typed BotState
                    except ResilienceError as exc:
                        state_always_parsed = False
                        self.failures.append(f"after kill {len(self.lives)}: {exc}")
                print(
                    f"[week] day {self.now() / args.day_seconds:.1f}: killed bot "
                    f"{len(self.lives)} (kill -9) after {lifetime:.1f}s; it had "
                    f"{life.open_at_kill} entries working (bait: "
                    f"{'yes' if life.bait_at_kill else 'no'}), the switch cancelled "
                    f"{life.cancelled_by_switch}, left open {life.left_open}",
                    flush=True,
                )
            sim.handle("/info", OBSERVER_IP, b'{"type": "simFreeze"}')
            final = self.start_bot(url, key, args.final_seconds, tag="final")
            final.wait(timeout=args.final_seconds + 120)
            self.bot_ended(killed=False)
            final_exit = final.returncode
            self.stop.set()
            watcher.join(timeout=30)
            state_ok, detail = verify(self.workdir, observer)
            sharer.wait(timeout=60)
            try:
                if watchdog is not None:
                    watchdog.wait(timeout=15)  # it stands down after the bot's clean stop
            except subprocess.TimeoutExpired:
                self.failures.append("the watchdog did not stand down after the clean stop")
            ended_state = commit_cost(self.workdir / "state.json")
            final_sync = budget.sync()
            counters = sim.snapshot()
        finally:
            self.stop.set()
            for proc in (self.bot, sharer, watchdog):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
            budget.close()
            sim.stop()
        return self.report(
            counters=counters,
            final_sync=final_sync,
            ended_state=ended_state,
            state_ok=state_ok,
            detail=detail,
            state_always_parsed=state_always_parsed,
            final_exit=final_exit,
            observer=observer,
        )

    def report(
        self,
        *,
        counters: dict[str, Any],
        final_sync: Any,
        ended_state: dict[str, float],
        state_ok: bool,
        detail: str,
        state_always_parsed: bool,
        final_exit: int | None,
        observer: Observer,
    ) -> dict[str, Any]:
        from examples.hyperliquid_bot.state import open_state

        args = self.args
        samples = self.samples
        episodes = exposures(samples)
        over = [e for e in episodes if e.charged > args.grace]
        kills = [life for life in self.lives if life.killed]
        day1 = [s.state_bytes for s in samples if s.t < args.day_seconds] or [0]
        last = [s.state_bytes for s in samples if s.t >= self.horizon - args.day_seconds] or [0]
        start_state = self.state_start or ended_state
        history = history_bytes(self.workdir)
        state = open_state(self.workdir / "state.json").read()
        elapsed = max(self.now(), 1.0)
        http_429 = int(counters.get("http_429", 0)) - observer.refused
        result: dict[str, Any] = {
            "days": args.days,
            "day_seconds": args.day_seconds,
            "address_buffer": args.address_buffer,
            "actions_per_usd": args.actions_per_usd,
            "fault_rate": args.fault_rate,
            "grace_seconds": args.grace,
            "switch_deadline_seconds": args.switch_deadline,
            "elapsed_seconds": round(elapsed, 1),
            "actions_spent": final_sync.used,
            "actions_cap": final_sync.cap,
            "actions_by_day": actions_by_day(
                [(float(s["t"]), int(s["used"])) for s in self.syncs], args.day_seconds, args.days
            ),
            "runway_at_syncs": self.syncs,
            "time_throttled_seconds": round(time_throttled(samples), 1),
            "kills": len(kills),
            "watchdog": not args.no_watchdog,
            "kills_with_entries_working": sum(1 for life in kills if life.open_at_kill),
            "kills_with_bait": sum(1 for life in kills if life.bait_at_kill),
            "orders_cancelled_by_switch": sum(life.cancelled_by_switch for life in kills),
            "stops_kept_by_switch": sum(life.protection_kept for life in kills),
            "orders_gone_before_switch": sum(life.gone_before_switch for life in kills),
            "orders_left_open_after_kills": sum(life.left_open for life in kills),
            "kills_switch_missed": sum(1 for life in kills if life.switch_missed),
            "switch_seconds_max": max(
                (life.switch_seconds for life in kills if life.switch_seconds is not None),
                default=None,
            ),
            "samples": len(samples),
            "unprotected_samples": sum(1 for s in samples if not s.protected),
            "unprotected_episodes": len(episodes),
            "unprotected_longest_with_bot_seconds": round(
                max((e.charged for e in episodes), default=0.0), 1
            ),
            "positions_unprotected_after_grace": len(over),
            "unprotected_worst": None
            if not over
            else dataclasses.asdict(max(over, key=lambda e: e.charged)),
            "duplicate_orders": int(counters.get("duplicate_cloids", 0)),
            "http_429": http_429,
            "observer_weight": observer.weight,
            "orders_placed": state.counters.orders_placed,
            "stops_rearmed": state.counters.stops_rearmed,
            "state_bytes_start": int(start_state["bytes"]),
            "state_bytes_end": int(ended_state["bytes"]),
            "state_bytes_max_day1": max(day1),
            "state_bytes_max_last_day": max(last),
            "commit_ms_start": start_state["commit_ms"],
            "commit_ms_end": ended_state["commit_ms"],
            "commit_ms_best_start": start_state["commit_ms_best"],
            "commit_ms_best_end": ended_state["commit_ms_best"],
            "read_ms_best_start": start_state["read_ms_best"],
            "read_ms_best_end": ended_state["read_ms_best"],
            "read_ms_start": start_state["read_ms"],
            "read_ms_end": ended_state["read_ms"],
            "history_bytes_end": history,
            "history_bytes_per_order": round(history / max(1, state.counters.orders_placed), 1),
            "per_real_minute": {
                "actions": round(final_sync.used / elapsed * 60, 2),
                "orders_placed": round(state.counters.orders_placed / elapsed * 60, 2),
                "history_bytes": round(history / elapsed * 60, 1),
                "volume_usd": round(
                    (final_sync.cap - args.address_buffer) / args.actions_per_usd / elapsed * 60, 1
                ),
            },
            "state_always_parsed": state_always_parsed,
            "state_ok": state_ok,
            "state_detail": detail,
            "final_bot_exit": final_exit,
            "watchdog_starts": self.watchdog_starts,
            "bot_lives": len(self.lives),
            "bot_alive_seconds": round(
                sum((life.ended or elapsed) - life.started for life in self.lives), 1
            ),
        }
        failures = [*self.failures, *broken(result)]
        result["failures"] = failures
        result["invariants_ok"] = not failures
        result["projection"] = projection(result)
        return result


def verify(workdir: Path, observer: Observer) -> tuple[bool, str]:
    """The state file parses and agrees with the exchange: position, open orders, a stop."""
    from examples.hyperliquid_bot.state import open_state
    from resilient_trading import ResilienceError

    try:
        state = open_state(workdir / "state.json").read()
    except ResilienceError as exc:
        return False, f"state file unreadable: {exc}"
    szi, protected, listed = observer.look()
    problems = []
    if abs(szi - state.position.szi) > 1e-9:
        problems.append(f"position: state {state.position.szi} vs exchange {szi}")
    if not protected:
        problems.append(f"position {szi} BTC has no working stop")
    mine = set(state.live_orders())
    theirs = {str(o.get("cloid")) for o in listed}
    if mine != theirs:
        problems.append(f"open orders differ: state {sorted(mine)} vs exchange {sorted(theirs)}")
    return not problems, "; ".join(problems) or "state matches the exchange"


def print_table(result: dict[str, Any]) -> None:
    """The report as a table (the JSON file has the series too)."""
    rows = [
        ("compressed week", f"{result['days']} days of {result['day_seconds']:g}s"),
        ("actions spent / cap", f"{result['actions_spent']} / {result['actions_cap']}"),
        ("actions by day", " ".join(str(n) for n in result["actions_by_day"])),
        (
            "runway at syncs (days)",
            " ".join(
                "-" if s["runway_days"] is None else f"{s['runway_days']:g}"
                for s in result["runway_at_syncs"]
            ),
        ),
        ("time throttled", f"{result['time_throttled_seconds']:g}s"),
        (
            "kills (with entries working)",
            f"{result['kills']} ({result['kills_with_entries_working']}; with the bait "
            f"{result['kills_with_bait']}; watchdog {'on' if result['watchdog'] else 'OFF'})",
        ),
        (
            "orders cancelled by the switch",
            f"{result['orders_cancelled_by_switch']} (left open: "
            f"{result['orders_left_open_after_kills']}, gone another way first: "
            f"{result['orders_gone_before_switch']})",
        ),
        ("stops kept by the switch", f"{result['stops_kept_by_switch']} (reduce-only: they stay)"),
        (
            "unprotected past grace (time with no bot alive not charged)",
            f"{result['positions_unprotected_after_grace']} (episodes "
            f"{result['unprotected_episodes']}, longest with a bot alive "
            f"{result['unprotected_longest_with_bot_seconds']:g}s, grace "
            f"{result['grace_seconds']:g}s)",
        ),
        ("duplicates", str(result["duplicate_orders"])),
        ("429s", str(result["http_429"])),
        (
            "state file bytes start -> end",
            f"{result['state_bytes_start']} -> {result['state_bytes_end']} (max day 1 "
            f"{result['state_bytes_max_day1']}, last day {result['state_bytes_max_last_day']})",
        ),
        (
            "commit ms start -> end",
            f"{result['commit_ms_start']} -> {result['commit_ms_end']} (best "
            f"{result['commit_ms_best_start']} -> {result['commit_ms_best_end']})",
        ),
        ("read ms start -> end", f"{result['read_ms_start']} -> {result['read_ms_end']}"),
        (
            "history",
            f"{result['history_bytes_end']} bytes, {result['history_bytes_per_order']} per order",
        ),
        ("state matches the exchange", f"{result['state_ok']} ({result['state_detail']})"),
    ]
    p = result.get("projection")
    if p:
        rows.append(
            (
                "a real week at this pace",
                f"{p['actions_per_day']} actions/day ({p['actions_week']} a week), volume "
                f"${p['volume_usd_per_day']}/day (real cap after 7 days {p['cap_week']}), "
                f"history {p['history_bytes_per_day']} bytes/day, state {p['state_bytes']} bytes",
            )
        )
    width = max(len(name) for name, _ in rows)
    print()
    print("=== compressed week ===")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for failure in result["failures"]:
        print(f"INVARIANT BROKEN: {failure}")
    print("invariants: " + ("all hold" if result["invariants_ok"] else "BROKEN"))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--day-seconds", type=float, default=40.0, help="one compressed day")
    parser.add_argument(
        "--address-buffer",
        type=int,
        default=50,
        help="the address's initial actions (Hyperliquid: 10,000; small: the week spends it)",
    )
    parser.add_argument(
        "--actions-per-usd",
        type=float,
        default=0.0005,
        help="actions the cap grows by per USDC traded (Hyperliquid: 1; less compresses it)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fault-rate", type=float, default=0.06)
    parser.add_argument("--speed", type=float, default=60.0, help="the demo's market pace")
    parser.add_argument("--auto-fund", type=float, default=10_000.0)
    parser.add_argument("--kill-min", type=float, default=6.0)
    parser.add_argument("--kill-max", type=float, default=25.0)
    parser.add_argument("--switch-deadline", type=float, default=3.0)
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds a live bot has to protect a position it finds without a stop",
    )
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--sync-every", type=float, default=None)
    parser.add_argument("--final-seconds", type=float, default=8.0)
    parser.add_argument("--dir", default=str(ROOT / ".soak" / "week"))
    parser.add_argument(
        "--no-watchdog",
        action="store_true",
        help="start no watchdog: a check of the report, which must then fail (exit 1) with "
        "the killed bots' orders left open",
    )
    args = parser.parse_args(argv)
    if not args.actions_per_usd > 0:
        parser.error("--actions-per-usd must be > 0")
    if args.days < 1 or args.day_seconds <= 0 or args.address_buffer < 1:
        parser.error("--days, --day-seconds and --address-buffer must be positive")
    if args.sample_every * 60 < 1:
        parser.error("--sample-every must be >= 1/60 s")
    # The observer's own IP budget (1200/min) bounds how often it may look.
    if SAMPLE_WEIGHT * 60 / args.sample_every > 1000:
        parser.error(f"--sample-every {args.sample_every:g}s would exceed the observer's budget")
    if args.sync_every is None:
        args.sync_every = max(args.sample_every, args.day_seconds / 6)  # 4 compressed hours
    if not 0 < args.kill_min <= args.kill_max:
        parser.error("need 0 < --kill-min <= --kill-max")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bot"]:
        return bot_process(argv[1:])
    args = parse(argv)
    result = Week(args).run()
    report = Path(args.dir) / "week_report.json"
    report.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print_table(result)
    print(f"report: {report}")
    return 0 if result["invariants_ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
