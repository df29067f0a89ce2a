"""The bot under the account's limits and the operator's halt, against the simulator.

- The address action budget (issue #14): every action the bot sends is counted on the
  ``address.json`` of its state directory, and agrees with the exchange's own count.
- The fleet-wide halt (issue #15): two bot processes reading one halt flag both stop new
  entries within one loop of ``resilient-trading halt`` and trade again after ``resume``,
  while their closes still go out.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.hyperliquid_bot.config import load_config
from examples.hyperliquid_bot.exchange import Gateway
from examples.hyperliquid_bot.venue import OrderRequest
from resilient_trading import Halt
from resilient_trading.testing import FaultConfig, Simulator
from tests.examples.test_bot_logic import FakeVenue, make_bot

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"


@pytest.mark.timeout(60)
def test_every_bot_action_is_counted_on_the_address_budget(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    config = load_config(CONFIG)
    with (
        contextlib.ExitStack() as stack,
        Simulator(seed=2, speed=60, faults=FaultConfig(), accounts={wallet.address: 1e4}) as sim,
    ):
        gw = Gateway.connect(config, wallet.key.hex(), sim.base_url, tmp_path)
        stack.callback(gw.close)
        assert gw.address_budget is not None
        mid = gw.mid("BTC")
        cloid = "0x" + "ef" * 16
        stop = OrderRequest(cloid, "BTC", "sl", False, 0.01, float(round(mid * 0.5)))
        assert gw.reduce(stop).status == "open"
        gw.cancel("BTC", cloid)
        local = gw.address_budget.status()
        # updateLeverage at connect, the stop, its cancel: three actions, counted locally...
        assert local.used == 3
        assert (tmp_path / "address.json").exists()
        synced = gw.address_budget.sync()
        # ...and the exchange's userRateLimit agrees.
        assert synced.used == local.used
        assert "/10000 runway=" in gw.status().address


#: One bot process for the halt test: the real Gateway and Bot, a strategy that always wants a
#: long, and a close after every entry, so that every new candle is a new entry decision. One
#: JSON line per loop: ``{"halted", "entered", "refused", "closed"}``.
RUNNER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from examples.hyperliquid_bot.bot import Bot, read_history
from examples.hyperliquid_bot.config import load_config
from examples.hyperliquid_bot.exchange import Gateway
from examples.hyperliquid_bot.strategies import Signal
from resilient_trading import Halt

class Always:
    def evaluate(self, candles):
        c = candles[-1].close
        return Signal("always", "long", c, c * 0.98, c * 1.04, 1.0)

root, config_path, url, state_dir, halt_dir = sys.argv[1:6]
config = load_config(config_path)
state = Path(state_dir)
gateway = Gateway.connect(config, __import__("os").environ["KEY"], url, state)
where = {"redis_url": halt_dir} if halt_dir.startswith("redis://") else {"state_dir": halt_dir}
bot = Bot(config, gateway, state, halt=Halt(**where))
bot.strategies = [Always()]
bot.start()
entries = 0
while True:
    before = bot.store.read().counters
    bot.step()
    after = bot.store.read()
    every = {**read_history(bot.history), **after.orders}  # finished orders: the history
    entered = sum(o.kind == "entry" for o in every.values())
    closed = bot.close_position() is not None
    print(json.dumps({
        "halted": bot.halted is not None,
        "entered": entered > entries,
        "refused": after.counters.entries_refused > before.entries_refused,
        "closed": closed,
    }), flush=True)
    entries = entered
    time.sleep(0.1)
"""


class Runner:
    """One bot process and the lines it printed (read on a thread)."""

    def __init__(self, url: str, state_dir: Path, halt_dir: str) -> None:
        state_dir.mkdir()
        env = {**os.environ, "KEY": eth_account.Account.create().key.hex()}
        args = [str(ROOT), str(CONFIG), url, str(state_dir), halt_dir]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(json.loads(line))

    def pump(self) -> int:
        while not self._queue.empty():
            self.lines.append(self._queue.get_nowait())
        return len(self.lines)


def wait_for(runners: list[Runner], ok: Any, what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(ok(r) for r in runners):
        for r in runners:
            r.pump()
            assert r.proc.poll() is None, f"a bot process died (exit {r.proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "resilient_trading", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(params=["directory", "redis"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, list[str]]:
    """Where the fleet's halt flag lives: the bot's argument, and the CLI's."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url, ["--redis", url]
    (tmp_path / "fleet").mkdir()
    return str(tmp_path / "fleet"), ["--state-dir", str(tmp_path / "fleet")]


@pytest.mark.timeout(150)
def test_two_bots_stop_new_entries_within_one_loop_of_halt_and_resume(
    tmp_path: Path, fleet: tuple[str, list[str]]
) -> None:
    halt_at, where = fleet
    # A large IP budget: two bots looping fast on one IP would otherwise meet 429s.
    with Simulator(seed=6, speed=60, auto_fund=10_000, budget=100_000) as sim:
        runners = [Runner(sim.base_url, tmp_path / f"bot{i}", halt_at) for i in (1, 2)]
        try:
            wait_for(runners, lambda r: any(x["entered"] for x in r.lines), "first entries")
            cli("halt", *where, "--reason", "test incident")
            marks = [r.pump() for r in runners]
            # The loop running when the flag was raised may still enter; the next one may not.
            wait_for(
                runners,
                lambda r: any(x["refused"] for x in r.lines[marks[runners.index(r)] + 1 :]),
                "a refused entry on each bot",
            )
            for r, mark in zip(runners, marks, strict=True):
                after = r.lines[mark + 1 :]
                assert after and all(x["halted"] for x in after), after
                assert not any(x["entered"] for x in after), after
            cli("resume", *where)
            marks = [r.pump() for r in runners]
            wait_for(
                runners,
                lambda r: any(x["entered"] for x in r.lines[marks[runners.index(r)] :]),
                "entries after resume",
            )
            for r, mark in zip(runners, marks, strict=True):
                after = r.lines[mark + 1 :]
                assert not any(x["halted"] for x in after), after
        finally:
            for r in runners:
                r.proc.kill()
                r.proc.wait(timeout=10)
        assert sim.snapshot()["duplicate_cloids"] == 0


# --- the halt in the bot's logic, in-process against the fake venue ---------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(st.tuples(st.booleans(), st.sampled_from([None, 95.0, 104.5])), max_size=8))
def test_no_entry_goes_out_in_a_halted_step_and_protection_never_stops(
    plan: list[tuple[bool, float | None]],
) -> None:
    """Whatever the order of halts, resumes and price moves: a step taken while the flag is
    raised sends no entry; the position always has its stop after a step; orphans are
    cancelled and a reduce-only close goes out while halted."""
    with tempfile.TemporaryDirectory() as tmp:
        venue = FakeVenue()
        halt = Halt(state_dir=tmp)
        bot = make_bot(venue, Path(tmp))
        bot.halt = halt
        bot.start()
        for halted, move in plan:
            if halted:
                halt.halt("test")
            else:
                halt.resume()
            if move is not None:
                venue.move(move)
            entries_before = sum(o.request.kind == "entry" for o in venue.orders.values())
            bot.step()
            entries = sum(o.request.kind == "entry" for o in venue.orders.values())
            assert (bot.halted is not None) == halted
            if halted:
                assert entries == entries_before
            assert venue.protected()
        halt.halt("closing")
        bot.step()
        if venue.szi:
            placed = bot.close_position()
            assert placed is not None and placed.status == "filled"
        bot.step()  # exits left without a position are cancelled, halted or not
        assert venue.szi == 0 and not venue.stops()
        halt.close()


def test_an_unreadable_halt_flag_counts_as_halted(tmp_path: Path) -> None:
    venue = FakeVenue()
    bot = make_bot(venue, tmp_path)
    bot.halt = Halt(state_dir=tmp_path)
    (tmp_path / "halt.json").write_text("not a flag")
    bot.start()
    bot.step()
    assert bot.halted is not None and "unreadable" in bot.halted
    assert not venue.orders  # no entry
    assert bot.store.read().counters.entries_refused == 1
