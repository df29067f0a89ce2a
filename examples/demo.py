"""``make demo``: the example bot against the bundled exchange simulator, faults on.

Starts the simulator (faults at a few percent of requests), the bot with a throwaway key, and
an operator's CLI process that reads and writes the bot's state and breaker while it runs.
Prints the bot's status lines, then a short summary and, as the very last line, one JSON
object with the run's invariants. Files (state, breaker, budget, logs) go under ``.demo/``.
No key, no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BOT = ROOT / "examples" / "hyperliquid_bot" / "bot.py"
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"


def start_simulator(
    workdir: Path, *, seed: int, fault_rate: float, speed: float
) -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.hl_sim",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--speed",
            str(speed),
            "--fault-rate",
            str(fault_rate),
            "--stall-seconds",
            "2.5",
            "--auto-fund",
            "10000",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert sim.stdout is not None
    line = sim.stdout.readline().strip()
    if not line.startswith("listening on "):
        sim.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return sim, line.split()[-1]


def start_bot(
    workdir: Path, url: str, key: str, duration: float, *, tag: str = "bot"
) -> subprocess.Popen[str]:
    env = {**os.environ, "HYPERLIQUID_PRIVATE_KEY": key, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            str(BOT),
            "--config",
            str(CONFIG),
            "--base-url",
            url,
            "--duration",
            str(duration),
            "--state-dir",
            str(workdir),
            "--log-file",
            str(workdir / f"{tag}.log"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_trading._cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def operator(workdir: Path, stop: threading.Event, log: list[str]) -> None:
    """A second process touching the state and breaker now and then, as an operator would."""
    state, breaker = workdir / "state.json", workdir / "breaker.json"
    n = 0
    while not stop.wait(7.0):
        n += 1
        if not state.exists():
            continue
        read = cli("state", "get", str(state), "counters.iterations")
        wrote = cli("state", "set", str(state), "operator.checks", str(n))
        status = cli("breaker", "status", str(breaker)) if breaker.exists() else None
        ok = (
            read.returncode == 0
            and wrote.returncode == 0
            and (status is None or status.returncode == 0)
        )
        line = (
            f"[cli] iterations={read.stdout.strip() or '?'} operator.checks={n} "
            f"breaker={'ok' if status is None or status.returncode == 0 else 'error'}"
        )
        log.append(line if ok else line + f" ERROR {read.stderr.strip()} {wrote.stderr.strip()}")
        print(line, flush=True)


def sim_counters(url: str) -> dict[str, Any]:
    import requests

    answer: dict[str, Any] = requests.post(
        url + "/info", json={"type": "simCounters"}, timeout=10
    ).json()
    return answer


def freeze_market(url: str) -> None:
    """Stop the simulated market for the last seconds, so the bot's final reconciliation and
    the check below see the same exchange."""
    import requests

    requests.post(url + "/info", json={"type": "simFreeze"}, timeout=10)
    print("[demo] market frozen for the final reconciliation", flush=True)


def verify_state(workdir: Path, url: str, address: str) -> tuple[bool, str]:
    """The state file parses and agrees with the exchange: position and open orders."""
    from resilient_trading import LockedJsonStore, RateLimiter, ResilienceError, RetryPolicy
    from resilient_trading.presets import hyperliquid as hl

    try:
        doc = LockedJsonStore(workdir / "state.json").read()
    except ResilienceError as exc:
        return False, f"state file unreadable: {exc}"
    # The check shares the bot's budget too: the exchange counts every request from this IP.
    limiter = RateLimiter(
        hl.REST_LIMIT.scaled(0.9), state_path=workdir / "budget.json", key="hyperliquid"
    )
    retry = RetryPolicy(attempts=8, base_delay=0.2, max_delay=2.0)
    info = hl.wrap_info(retry.call(hl.make_info, url, limiter, timeout=5), limiter, retry=retry)
    user = info.user_state(address)
    exchange_open = {o.get("cloid") for o in info.frontend_open_orders(address)}
    coin = "BTC"
    szi = 0.0
    for item in user.get("assetPositions", []):
        if item["position"]["coin"] == coin:
            szi = float(item["position"]["szi"])
    mine_open = {
        c for c, o in doc.get("orders", {}).items() if o.get("status") in ("open", "pending")
    }
    problems = []
    if abs(szi - float(doc.get("position", {}).get("szi", 0.0))) > 1e-9:
        problems.append(f"position: state {doc['position']['szi']} vs exchange {szi}")
    if mine_open != exchange_open:
        problems.append(
            f"open orders differ: state {sorted(mine_open)} vs exchange {sorted(exchange_open)}"
        )
    return not problems, "; ".join(problems) or "state matches the exchange"


def summarize(
    workdir: Path, counters: dict[str, Any], state_ok: bool, detail: str, extra: dict[str, Any]
) -> dict[str, Any]:
    from resilient_trading import LockedJsonStore

    doc = LockedJsonStore(workdir / "state.json").read()
    breakers = LockedJsonStore(workdir / "breaker.json").read().get("breakers", {})
    c = doc.get("counters", {})
    result = {
        "iterations": c.get("iterations", 0),
        "orders_placed": c.get("orders_placed", 0),
        "faults_injected": counters.get("faults_injected", 0),
        "retries": c.get("retries", 0),
        "breaker_trips": sum(b.get("trips", 0) for b in breakers.values()),
        "http_429": counters.get("http_429", 0),
        "duplicate_orders": counters.get("duplicate_cloids", 0),
        "state_ok": state_ok,
        "transient_errors": c.get("transient_errors", 0),
        "critical_errors": c.get("critical_errors", 0),
        "exchange_requests": counters.get("requests", 0),
        "exchange_weight": counters.get("weight", 0),
        "faults_by_kind": counters.get("faults", {}),
        **extra,
    }
    pnl = doc.get("pnl", {})
    print()
    print("=== demo summary ===")
    print(
        f"ran {result['iterations']} decisions, placed {result['orders_placed']} orders "
        f"({result['duplicate_orders']} duplicates at the exchange)"
    )
    print(
        f"the simulator injected {result['faults_injected']} faults {result['faults_by_kind']}; "
        f"the bot retried {result['retries']} times, its breaker tripped "
        f"{result['breaker_trips']} times, the exchange answered 429 {result['http_429']} times"
    )
    print(f"equity {pnl.get('start_equity')} -> {pnl.get('equity')}; {detail}")
    files = ", ".join(sorted(p.name for p in workdir.iterdir()))
    print(f"files kept under {workdir}: {files}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.06)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--dir", default=str(ROOT / ".demo"))
    args = parser.parse_args(argv)
    from eth_account import Account

    workdir = Path(args.dir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(
        f"demo: files go to {workdir} (git-ignored); a fresh simulator, a throwaway key, "
        f"{args.duration:g}s, faults on {args.fault_rate:.0%} of requests",
        flush=True,
    )
    account = Account.create()
    key = account.key.hex()
    sim, url = start_simulator(
        workdir, seed=args.seed, fault_rate=args.fault_rate, speed=args.speed
    )
    stop = threading.Event()
    cli_log: list[str] = []
    watcher = threading.Thread(target=operator, args=(workdir, stop, cli_log), daemon=True)
    try:
        print(f"demo: simulator at {url}; starting the bot", flush=True)
        bot = start_bot(workdir, url, key, args.duration)
        watcher.start()
        freeze_after = max(args.duration * 0.8, args.duration - 6.0)
        freezer = threading.Timer(freeze_after, freeze_market, args=(url,))
        freezer.daemon = True
        freezer.start()
        assert bot.stdout is not None
        for line in bot.stdout:
            print(line.rstrip(), flush=True)
        bot.wait(timeout=60)
        stop.set()
        watcher.join(timeout=30)
        counters = sim_counters(url)
        state_ok, detail = verify_state(workdir, url, account.address)
    finally:
        stop.set()
        sim.terminate()
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
    cli_ok = all("ERROR" not in line for line in cli_log)
    result = summarize(
        workdir,
        counters,
        state_ok,
        detail,
        {"bot_exit": bot.returncode, "cli_runs": len(cli_log), "cli_ok": cli_ok},
    )
    print(json.dumps(result, sort_keys=True))
    return 0 if state_ok and bot.returncode == 0 and cli_ok else 1


if __name__ == "__main__":
    sys.exit(main())
