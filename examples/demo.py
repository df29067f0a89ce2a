"""``make demo``: the example bot against the bundled exchange simulator, faults on.

Starts the simulator (faults at a few percent of requests), the bot with a throwaway key, and
an operator's CLI process that reads and writes the bot's state and breaker while it runs.
The bot serves ``/metrics`` and ``/healthz`` on a free port of 127.0.0.1 (``--metrics-port
0``): the demo prints where, with the ``resilient-trading status`` and ``metrics`` commands
for its state directory, looks at both once half-way, and repeats it all in the summary.
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
import time
from collections.abc import Callable
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
            "resilient_trading.testing",
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
    workdir: Path,
    url: str,
    key: str,
    duration: float,
    *,
    tag: str = "bot",
    speed: float = 60.0,
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
            # The simulator compresses market time by `speed`: so does the horizon the
            # address's action budget is paced to (7 days become 168 / speed hours).
            "--address-lasts-hours",
            f"{168.0 / speed:g}",
            # /metrics and /healthz on a free port (the bot prints it); a runway "under a
            # day" is scaled by the same speed.
            "--metrics-port",
            "0",
            "--runway-alert-hours",
            f"{24.0 / speed:g}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def cli_command() -> list[str]:
    """The public ``resilient-trading`` console script, next to this Python (a virtualenv's
    ``bin/``) or on ``PATH``."""
    beside = Path(sys.executable).with_name("resilient-trading")
    found = str(beside) if beside.exists() else shutil.which("resilient-trading")
    if found is None:
        raise SystemExit("the resilient-trading command is not installed (pip install -e .)")
    return [found]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *args],
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


def where_to_look(workdir: Path, endpoint: str | None) -> list[str]:
    """The lines that tell an operator where to look at the running bot."""
    lines = []
    if endpoint is not None:
        lines.append(f"  metrics:  {endpoint}/metrics   (Prometheus text)")
        lines.append(f"  health:   {endpoint}/healthz   (200: can trade; 503 and the reasons)")
    lines.append(f"  status:   resilient-trading status --state-dir {workdir}")
    lines.append(
        f"  exporter: resilient-trading metrics --listen 127.0.0.1:9464 --state-dir {workdir}"
    )
    return lines


def peek(endpoint: str, found: dict[str, Any]) -> None:
    """Look at the bot's /healthz and /metrics once, as a supervisor and Prometheus would."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    try:
        health = requests.get(endpoint + "/healthz", timeout=10)
        body = health.json()
        text = requests.get(endpoint + "/metrics", timeout=10).text
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
    except (requests.RequestException, ValueError) as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[demo] the bot's endpoint did not answer: {found['error']}", flush=True)
        return
    breakers = {
        dict(labels)["breaker"]: int(value)
        for (name, labels), value in values.items()
        if name == "resilient_trading_breaker_state"
    }
    ratio = [
        v for (name, _), v in values.items() if name == "resilient_trading_budget_utilisation_ratio"
    ]
    found.update(
        healthz=health.status_code,
        reasons=body.get("reasons", []),
        samples=len(values),
        breakers=breakers,
        budget_used=ratio[0] if ratio else None,
    )
    states = ", ".join(f"{k}={'closed' if v == 0 else 'open'}" for k, v in sorted(breakers.items()))
    used = f"{ratio[0]:.0%}" if ratio else "?"
    print(
        f"[demo] GET /healthz -> {health.status_code} {body.get('status')}"
        + (f" ({'; '.join(found['reasons'])})" if found["reasons"] else "")
        + f"; GET /metrics -> {len(values)} samples: budget {used} used, breakers {states}",
        flush=True,
    )


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
    from examples.hyperliquid_bot.state import open_state
    from resilient_trading import RateLimiter, ResilienceError, RetryPolicy
    from resilient_trading.presets import hyperliquid as hl

    try:
        state = open_state(workdir / "state.json").read()
    except ResilienceError as exc:
        return False, f"state file unreadable: {exc}"
    # The check shares the bot's budget too: the exchange counts every request from this IP.
    limiter = RateLimiter(
        hl.REST_LIMIT.scaled(0.9), state_path=workdir / "budget.json", key="hyperliquid"
    )
    retry = RetryPolicy(attempts=8, base_delay=0.2, max_delay=2.0)
    info = hl.wrap_info(retry.call(hl.make_info, url, limiter, timeout=5), limiter, retry=retry)
    user = info.user_state(address)
    listed = info.frontend_open_orders(address)
    exchange_open = {o.get("cloid") for o in listed}
    coin = "BTC"
    szi = 0.0
    for item in user.get("assetPositions", []):
        if item["position"]["coin"] == coin:
            szi = float(item["position"]["szi"])
    mine_open = set(state.live_orders())
    problems = []
    if abs(szi - state.position.szi) > 1e-9:
        problems.append(f"position: state {state.position.szi} vs exchange {szi}")
    stops = [
        float(o["sz"])
        for o in listed
        if o.get("coin") == coin
        and o.get("orderType") in ("Stop Market", "Stop Limit")
        and o.get("reduceOnly")
        and (o.get("side") == "B") == (szi < 0)
    ]
    if szi != 0 and not any(size >= abs(szi) - 1e-12 for size in stops):
        problems.append(f"position {szi} {coin} has no working stop")
    if mine_open != exchange_open:
        problems.append(
            f"open orders differ: state {sorted(mine_open)} vs exchange {sorted(exchange_open)}"
        )
    return not problems, "; ".join(problems) or "state matches the exchange"


def address_status(workdir: Path, address: str) -> dict[str, Any]:
    """The address's action budget as the bot left it (``address.json``)."""
    from resilient_trading.presets import hyperliquid as hl

    if not (workdir / "address.json").exists():
        return {"address_used": 0, "address_cap": None, "address_runway_s": None}
    budget = hl.AddressBudget(address, state_path=workdir / "address.json")
    try:
        status = budget.status()
    finally:
        budget.close()
    runway = status.runway
    return {
        "address_used": status.used,
        "address_cap": status.cap,
        "address_runway_s": None if runway is None else round(runway.total_seconds()),
        "address_throttled": status.throttled,
        "address_summary": status.summary(),
    }


def summarize(
    workdir: Path, counters: dict[str, Any], state_ok: bool, detail: str, extra: dict[str, Any]
) -> dict[str, Any]:
    from examples.hyperliquid_bot.state import open_state
    from resilient_trading import CircuitBreaker

    state = open_state(workdir / "state.json").read()
    trips = sum(
        CircuitBreaker(name=name, state_path=workdir / "breaker.json").snapshot().trips
        for name in ("exchange", "protect")
    )
    c = state.counters
    result = {
        "iterations": c.iterations,
        "orders_placed": c.orders_placed,
        "faults_injected": counters.get("faults_injected", 0),
        "retries": c.retries,
        "breaker_trips": trips,
        "http_429": counters.get("http_429", 0),
        "duplicate_orders": counters.get("duplicate_cloids", 0),
        "state_ok": state_ok,
        "transient_errors": c.transient_errors,
        "critical_errors": c.critical_errors,
        "stops_rearmed": c.stops_rearmed,
        "entries_refused": c.entries_refused,
        "ws_reconnects": c.ws_reconnects,
        "ws_stale_periods": c.ws_stale_periods,
        "ws_gap_fills": c.ws_gap_fills,
        "exchange_requests": counters.get("requests", 0),
        "exchange_weight": counters.get("weight", 0),
        "faults_by_kind": counters.get("faults", {}),
        **extra,
    }
    pnl = state.pnl
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
    print(f"equity {pnl.start_equity} -> {pnl.equity}; {detail}")
    rate = result.get("rest_weight_per_min")
    if rate is not None:
        print(
            f"REST weight {rate:.0f}/min after the start ({rate / 1200:.0%} of Hyperliquid's "
            f"1200/min); the WebSocket reconnected {result['ws_reconnects']} times, went stale "
            f"{result['ws_stale_periods']} times, {result['ws_gap_fills']} fills were recovered "
            "over REST after a gap"
        )
    if result.get("address_summary"):
        print(
            f"address action budget: {result['address_summary']} at the demo's pace "
            "(market time runs faster here: a real run trades, and spends, far less per hour)"
        )
    files = ", ".join(sorted(p.name for p in workdir.iterdir()))
    print(f"files kept under {workdir}: {files}")
    return result


def trade_by_hand(workdir: Path, url: str, key: str) -> Callable[[], None]:
    """A market buy on the bot's account, as an operator would make by hand (signed with the
    bot's nonce file, charged to its budget). Built now, sent when called."""
    from eth_account import Account
    from hyperliquid.utils.types import Cloid

    from examples.hyperliquid_bot.nonce import NonceSource, install
    from resilient_trading import RateLimiter, ResilienceError, RetryPolicy
    from resilient_trading.presets import hyperliquid as hl

    install(NonceSource(workdir / "nonce.json"))
    limiter = RateLimiter(
        hl.REST_LIMIT.scaled(0.9), state_path=workdir / "budget.json", key="hyperliquid"
    )
    # The simulator's faults hit this trade too: retried safely (looked up by its cloid).
    retry = RetryPolicy(attempts=8, base_delay=0.1, max_delay=1.0)
    raw = retry.call(hl.make_exchange, Account.from_key(key), url, limiter, timeout=5)
    exchange = hl.wrap_exchange(raw, limiter, retry=retry)

    def send() -> None:
        cloid = Cloid.from_str("0x" + os.urandom(16).hex())
        try:
            exchange.market_open("BTC", True, 0.001, None, 0.05, cloid)
        except ResilienceError as exc:  # say so, the run goes on
            print(f"[demo] the trade by hand failed: {exc}", flush=True)

    return send


def ws_faults(
    sim: Any, duration: float, stop: threading.Event, log: list[str], trade: Callable[[], None]
) -> None:
    """WebSocket faults while the bot runs: every connection dropped, then the server silent
    on an open socket (longer than the bot's ``feed.max_silence``), then an outage (dropped,
    reconnects refused) during which a trade by hand fills on the bot's account: the bot must
    learn of that fill after the reconnect (and protect the position it did not open)."""
    freeze_for, outage_for = 6.5, 3.0
    schedule = [
        (duration * 0.25, "drop", 0.0),
        (duration * 0.35, "freeze", freeze_for),
        (duration * 0.35 + freeze_for + 2.0, "outage", outage_for),
    ]
    started = time.monotonic()
    for at, kind, lasts in schedule:
        if stop.wait(max(0.0, started + at - time.monotonic())):
            return
        line = f"[demo] WebSocket fault: {kind}" + (f" for {lasts:g}s" if lasts else "")
        print(line, flush=True)
        log.append(kind)
        if kind == "drop":
            sim.ws.drop_all()
        elif kind == "freeze":
            sim.ws.freeze()
            stop.wait(lasts)
            sim.ws.freeze(False)
        else:
            with sim.ws.outage():
                stop.wait(lasts / 3)
                print("[demo] a trade by hand on the bot's account while it is cut off", flush=True)
                trade()
                stop.wait(lasts * 2 / 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.06)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument(
        "--no-ws-faults", action="store_true", help="do not drop, freeze or cut the WebSocket"
    )
    parser.add_argument("--dir", default=str(ROOT / ".demo"))
    args = parser.parse_args(argv)
    from eth_account import Account

    from resilient_trading.testing import FaultConfig, Simulator

    workdir = Path(args.dir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(
        f"demo: files go to {workdir} (git-ignored); a fresh simulator, a throwaway key, "
        f"{args.duration:g}s, faults on {args.fault_rate:.0%} of requests"
        + ("" if args.no_ws_faults else " and WebSocket drops, a freeze and an outage"),
        flush=True,
    )
    account = Account.create()
    key = account.key.hex()
    # In this process, so that the WebSocket faults can be injected (sim.ws).
    sim = Simulator(
        seed=args.seed,
        speed=args.speed,
        faults=FaultConfig.uniform(args.fault_rate, stall_seconds=2.5),
        auto_fund=10_000.0,
    ).start()
    url = sim.base_url
    stop = threading.Event()
    cli_log: list[str] = []
    ws_log: list[str] = []
    watcher = threading.Thread(target=operator, args=(workdir, stop, cli_log), daemon=True)
    trade = (lambda: None) if args.no_ws_faults else trade_by_hand(workdir, url, key)
    faulter = threading.Thread(
        target=ws_faults, args=(sim, args.duration, stop, ws_log, trade), daemon=True
    )
    warm: tuple[float, int] = (0.0, 0)
    endpoint: str | None = None
    peeked: dict[str, Any] = {}

    def mark_warm() -> None:
        nonlocal warm
        warm = (time.monotonic(), int(sim.snapshot().get("weight", 0)))

    try:
        print(f"demo: simulator at {url}; starting the bot", flush=True)
        bot = start_bot(workdir, url, key, args.duration, speed=args.speed)
        watcher.start()
        if not args.no_ws_faults:
            faulter.start()
        # REST weight is measured from here (the start's snapshots are done) to the end.
        warmer = threading.Timer(min(8.0, args.duration * 0.2), mark_warm)
        warmer.daemon = True
        warmer.start()
        freeze_after = max(args.duration * 0.8, args.duration - 6.0)
        freezer = threading.Timer(freeze_after, freeze_market, args=(url,))
        freezer.daemon = True
        freezer.start()
        assert bot.stdout is not None
        for line in bot.stdout:
            print(line.rstrip(), flush=True)
            if endpoint is None and line.startswith("[bot] metrics: "):
                endpoint = line.split()[2].removesuffix("/metrics")
                print("[demo] while the bot runs, look here:", flush=True)
                for where in where_to_look(workdir, endpoint):
                    print(f"[demo] {where}", flush=True)
                looker = threading.Timer(args.duration * 0.5, peek, args=(endpoint, peeked))
                looker.daemon = True
                looker.start()
        bot.wait(timeout=60)
        ended = time.monotonic()
        stop.set()
        watcher.join(timeout=30)
        if faulter.is_alive():
            faulter.join(timeout=30)
        counters = sim.snapshot()
        ws = dict(sim.ws.counters)
        state_ok, detail = verify_state(workdir, url, account.address)
    finally:
        stop.set()
        sim.stop()
    cli_ok = all("ERROR" not in line for line in cli_log)
    started_at, weight_then = warm
    minutes = (ended - started_at) / 60 if started_at else 0.0
    rest_per_min = (int(counters.get("weight", 0)) - weight_then) / minutes if minutes else None
    result = summarize(
        workdir,
        counters,
        state_ok,
        detail,
        {
            "bot_exit": bot.returncode,
            "cli_runs": len(cli_log),
            "cli_ok": cli_ok,
            "rest_weight_per_min": None if rest_per_min is None else round(rest_per_min, 1),
            "ws_faults": ws_log,
            "ws_connections": ws.get("ws_connections", 0),
            **address_status(workdir, account.address),
            "metrics_url": None if endpoint is None else endpoint + "/metrics",
            "healthz_url": None if endpoint is None else endpoint + "/healthz",
            "healthz_status": peeked.get("healthz"),
            "metrics_samples": peeked.get("samples", 0),
        },
    )
    metrics_ok = endpoint is not None and peeked.get("samples", 0) > 0
    print(
        "where to look (the endpoint lives as long as the bot; `status` and the exporter read "
        "the state directory at any time):"
    )
    for where in where_to_look(workdir, endpoint):
        print(where)
    if peeked.get("healthz") is not None:
        print(
            f"half-way, /healthz answered {peeked['healthz']}"
            + (f" ({'; '.join(peeked['reasons'])})" if peeked["reasons"] else "")
            + f" and /metrics {peeked['samples']} samples"
        )
    result["metrics_ok"] = metrics_ok
    print(json.dumps(result, sort_keys=True))
    return 0 if state_ok and bot.returncode == 0 and cli_ok and metrics_ok else 1


if __name__ == "__main__":
    sys.exit(main())
