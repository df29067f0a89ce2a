"""``make soak``: minutes standing in for the seven-day testnet run.

The bot trades against the simulator under a high fault rate with time-compressed candles,
is killed with SIGKILL at random moments and restarted on the same state, while another
process spends the same shared rate budget. At the end the market is frozen, the bot
reconciles once more, and the invariants are checked: no duplicate order at the exchange, no
429, the state file always parsed and matches the exchange. Exits 1 if any invariant breaks.

``make soak SOAK_MODE=week`` runs the compressed week instead (``examples/soak_week.py``):
a week of the address's action budget in minutes, the dead man's switch, the state file's
size and commit time from the first day to the last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.demo import (  # noqa: E402
    freeze_market,
    sim_counters,
    start_bot,
    start_simulator,
    summarize,
    verify_state,
)
from examples.soak_week import SHARER  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fault-rate", type=float, default=0.12)
    parser.add_argument("--speed", type=float, default=120.0)
    parser.add_argument("--dir", default=str(ROOT / ".soak"))
    args = parser.parse_args(argv)
    from eth_account import Account

    from examples.hyperliquid_bot.state import open_state
    from resilient_trading import ResilienceError

    workdir = Path(args.dir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rng = random.Random(args.seed)
    account = Account.create()
    key = account.key.hex()
    sim, url = start_simulator(
        workdir, seed=args.seed, fault_rate=args.fault_rate, speed=args.speed
    )
    print(
        f"soak: {args.seconds:g}s, faults on {args.fault_rate:.0%} of requests, files in {workdir}",
        flush=True,
    )
    until = time.time() + args.seconds
    sharer = subprocess.Popen(
        [sys.executable, "-c", SHARER, url, str(workdir / "budget.json"), str(until)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    restarts = 0
    state_always_parsed = True
    broken: list[str] = []
    try:
        while time.time() < until - 5:
            bot = start_bot(workdir, url, key, args.seconds, tag=f"bot{restarts}")
            lifetime = min(rng.uniform(4.0, 20.0), max(1.0, until - 5 - time.time()))
            drain = threading.Thread(
                target=lambda p=bot: [None for _ in p.stdout or []], daemon=True
            )
            drain.start()
            time.sleep(lifetime)
            bot.send_signal(signal.SIGKILL)
            bot.wait()
            restarts += 1
            state = workdir / "state.json"
            if state.exists():
                try:
                    open_state(state).read()  # parses and fits the typed BotState
                except ResilienceError as exc:
                    state_always_parsed = False
                    broken.append(f"after kill {restarts}: {exc}")
            print(
                f"[soak] killed the bot (kill -9) after {lifetime:.1f}s; restarts: {restarts}",
                flush=True,
            )
        freeze_market(url)
        final = start_bot(workdir, url, key, 8.0, tag="final")
        final.communicate(timeout=120)
        sharer.wait(timeout=60)
        counters = sim_counters(url)
        state_ok, detail = verify_state(workdir, url, account.address)
    finally:
        for proc in (sharer, sim):
            if proc.poll() is None:
                proc.terminate()
        sim.wait(timeout=10)
    result = summarize(
        workdir,
        counters,
        state_ok,
        detail,
        {
            "restarts_survived": restarts,
            "state_always_parsed": state_always_parsed,
            "final_bot_exit": final.returncode,
        },
    )
    failures = []
    if result["duplicate_orders"]:
        failures.append("duplicate orders at the exchange")
    if result["http_429"]:
        failures.append("the exchange answered 429")
    if not state_ok:
        failures.append(f"state does not match the exchange: {detail}")
    if not state_always_parsed:
        failures.append("; ".join(broken))
    if final.returncode != 0:
        failures.append(f"the final bot run exited {final.returncode}")
    result["invariants_ok"] = not failures
    for failure in failures:
        print(f"INVARIANT BROKEN: {failure}")
    print(json.dumps(result, sort_keys=True))
    return 0 if not failures else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
