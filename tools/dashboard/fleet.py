"""A live fleet to draw: the simulator, two bot processes, the fleet exporter, and the scrapes."""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.dashboard.samples import Samples, parse_exposition

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "render_dashboard.py"


def run_bot(args: argparse.Namespace) -> int:
    """One bot process of the fleet (``--bot NAME``): trades on the simulator through the
    library for ``--seconds``, serving its own EventMetrics on a port it prints first."""
    from datetime import timedelta

    import eth_account
    from prometheus_client import CollectorRegistry, start_http_server

    from resilient_trading import (
        CircuitBreaker,
        EventMetrics,
        LockedJsonStore,
        RateLimiter,
        ResilienceError,
        RetryPolicy,
        add_listener,
    )
    from resilient_trading.presets import hyperliquid as hl

    state = Path(args.state_dir)
    registry = CollectorRegistry()
    add_listener(EventMetrics(registry))
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(f"metrics http://127.0.0.1:{server.server_port}/metrics", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    limiter = RateLimiter(hl.rest_limit(), state_path=state / "budget.json")

    def breaker(name: str, fail_max: int, reset_timeout: float) -> CircuitBreaker:
        return CircuitBreaker(
            name=name,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_path=state / "breaker.json",
        )  # its events are published by the breaker itself

    info_breaker = breaker("info", 3, 6.0)
    orders_breaker = breaker("orders", 5, 20.0)
    retry = RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.5, name=f"{args.bot} call")
    wallet = eth_account.Account.create()
    info = hl.wrap_info(
        hl.make_info(args.url, limiter, timeout=2.0), limiter, breaker=info_breaker, retry=retry
    )
    budget = hl.AddressBudget(
        wallet.address,
        lasts=timedelta(hours=args.lasts_hours),
        burst=20,
        state_path=state / f"address-{args.bot}.json",
    )
    exchange = hl.wrap_exchange(
        hl.make_exchange(
            wallet, args.url, limiter, meta=info.meta(), spot_meta=info.spot_meta(), timeout=2.0
        ),
        limiter,
        breaker=orders_breaker,
        retry=retry,
        address_budget=budget,
    )
    store = LockedJsonStore(state / f"{args.bot}-positions.json")
    t0 = float(args.t0)
    end = t0 + float(args.seconds)
    backfill_at = t0 + float(args.seconds) * 0.35 if args.backfill else math.inf
    coin = "BTC" if args.bot.endswith("1") else "ETH"
    step = 0
    while time.time() < end and not stop["now"]:
        step += 1
        try:
            mid = float(info.all_mids()[coin])
            info.l2_snapshot(coin)
            if step % args.order_every == 0:
                answer = exchange.order(
                    coin, True, 0.01, round(mid * 0.9, 1), {"limit": {"tif": "Gtc"}}
                )
                placed = hl.outcomes(answer)[0]
                if placed.oid is not None:
                    exchange.cancel(coin, placed.oid)
            if time.time() >= backfill_at:  # a history backfill: 20 weight a call
                backfill_at = math.inf
                for _ in range(20):
                    info.user_fills(wallet.address)
            with store.transaction() as doc:
                doc["steps"] = step
                doc["mid"] = mid
        except ResilienceError as exc:  # what a bot does: note it, go on with the next loop
            print(f"{args.bot}: {type(exc).__name__}", file=sys.stderr, flush=True)
        time.sleep(args.pace)
    server.shutdown()
    return 0


def _start(argv: list[str], wait_for: str, env: Mapping[str, str]) -> tuple[Any, str]:
    """Start a process and wait for its first line starting with ``wait_for``."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=None, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(wait_for):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{argv[2:4]} did not start (first line {line!r}); see its stderr")
    return proc, line.split()[1] if wait_for == "metrics" else line


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError as exc:  # a target down for one scrape: Prometheus records `up 0`, goes on
        print(f"scrape of {url} failed: {type(exc).__name__}", file=sys.stderr)
        return None


def run_fleet(seconds: float, interval: float = 1.0) -> Samples:
    """Start the simulator, two bots and the fleet exporter; scrape them every ``interval``
    seconds for ``seconds``; play the faults; stop everything; return what was scraped."""
    from resilient_trading.testing import FaultConfig, Simulator

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    workdir = Path(tempfile.mkdtemp(prefix="dashboard-"))
    state = workdir / "state"
    state.mkdir()
    sim = Simulator(
        seed=17,
        faults=FaultConfig.uniform(0.01, stall_seconds=0.5),
        auto_fund=1e4,
        address_buffer=250_000,  # an account with some volume behind it
    )
    sim.start()
    procs: list[Any] = []
    samples = Samples()
    try:
        exporter, line = _start(
            [
                sys.executable,
                "-m",
                "resilient_trading",
                "metrics",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                str(state),
            ],
            "serving",
            env,
        )
        procs.append(exporter)
        targets = [("fleet", line.split()[1].removesuffix("/metrics") + "/metrics")]
        t0 = time.time() + 1.0
        fleet = (("bot-1", 24.0, 1, 0.5, False), ("bot-2", 168.0, 4, 1.0, True))
        for name, lasts, every, pace, backfill in fleet:
            bot, url = _start(
                [
                    sys.executable,
                    str(SCRIPT),
                    "--bot",
                    name,
                    "--state-dir",
                    str(state),
                    "--url",
                    sim.base_url,
                    "--seconds",
                    str(seconds + 2),
                    "--t0",
                    str(t0),
                    "--lasts-hours",
                    str(lasts),
                    "--order-every",
                    str(every),
                    "--pace",
                    str(pace),
                    *(["--backfill"] if backfill else []),
                ],
                "metrics",
                env,
            )
            procs.append(bot)
            targets.append(("bot", url))
        outage = (t0 + seconds * 0.3, t0 + seconds * 0.3 + 4.0)  # 4 s of 503s, every request
        normal_503 = sim.faults.http_503
        start = time.monotonic()
        for n in range(int(seconds / interval) + 1):
            at = time.time()
            sim.faults.http_503 = 1.0 if outage[0] <= at < outage[1] else normal_503
            for job, url in targets:
                text = _scrape(url)
                if text is not None:
                    instance = url.split("/")[2]
                    scraped = parse_exposition(text, job=job, instance=instance)
                    samples.add_scrape(at, scraped, instance)
            delay = start + (n + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the scrape interval (a tool's pace, not a test's wait)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return samples


def to_png(svg: Path, png: Path) -> str | None:
    """``svg`` as ``png`` through headless Chromium or rsvg-convert; the tool used, or None."""
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if chromium is not None:
        size = re.search(r'width="(\d+)" height="(\d+)"', svg.read_text())
        w, h = (size.group(1), size.group(2)) if size else ("1600", "2000")
        subprocess.run(
            [
                chromium,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                f"--screenshot={png}",
                f"--window-size={w},{h}",
                svg.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return "chromium"
    rsvg = shutil.which("rsvg-convert")
    if rsvg is not None:
        subprocess.run([rsvg, "-o", str(png), str(svg)], check=True, timeout=120)
        return "rsvg-convert"
    return None
