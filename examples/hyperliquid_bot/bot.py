"""The example Hyperliquid bot: two strategies on candles, resilient plumbing underneath.

Usage::

    HYPERLIQUID_PRIVATE_KEY=0x... python examples/hyperliquid_bot/bot.py \\
        --config examples/hyperliquid_bot/config.toml [--check-config] \\
        [--exchange sim|testnet] [--base-url URL] [--duration SECONDS]

The trading logic (strategies, sizing, the order lifecycle) reads like trading; every exchange
call goes through :class:`~examples.hyperliquid_bot.exchange.Gateway`, which wraps the official
SDK once with the library's rate limiter, circuit breaker and retry policy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.hyperliquid_bot.config import BotConfig, ConfigError, load_config
from examples.hyperliquid_bot.risk import position_size, round_price
from examples.hyperliquid_bot.strategies import Candle, Signal, build_strategies
from resilient_trading import (
    CircuitOpenError,
    CriticalError,
    LockedJsonStore,
    ResilienceError,
    TransientError,
)

__all__ = ["Bot", "main"]

log = logging.getLogger("bot")

TESTNET_URL = "https://api.hyperliquid-testnet.xyz"
INTERVAL_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
OPEN = ("pending", "open")


def new_cloid() -> str:
    """A fresh client order id: 16 random bytes as Hyperliquid wants them."""
    return "0x" + secrets.token_hex(16)


def empty_state() -> dict[str, Any]:
    return {
        "version": 1,
        "last_candle": 0,
        "orders": {},
        "position": {"szi": 0.0, "entry_px": None},
        "pnl": {"start_equity": None, "equity": None},
        "counters": {
            "iterations": 0,
            "orders_placed": 0,
            "signals": 0,
            "retries": 0,
            "transient_errors": 0,
            "critical_errors": 0,
            "breaker_rejections": 0,
            "restarts": 0,
        },
    }


class Bot:
    """One trading loop over one coin, its state in a :class:`LockedJsonStore`."""

    def __init__(self, config: BotConfig, gateway: Any, state_dir: Path) -> None:
        self.config = config
        self.gw = gateway
        self.state_dir = state_dir
        self.store = LockedJsonStore(state_dir / "state.json")
        self.strategies = build_strategies(config.trend, config.mean_reversion)
        self.stopping = False
        self.started = False
        self.last_status = 0.0
        self.last_error = ""
        self.retries_saved = 0

    # --- state ------------------------------------------------------------------------------

    def _bump(self, counter: str, by: int = 1) -> None:
        with self.store.transaction() as doc:
            counters = doc.setdefault("counters", empty_state()["counters"])
            counters[counter] = counters.get(counter, 0) + by

    def start(self) -> None:
        """Create or load the state, then reconcile it with the exchange."""
        with self.store.transaction() as doc:
            if not doc:
                doc.update(empty_state())
            doc["counters"]["restarts"] = doc["counters"].get("restarts", 0) + 1
        self.reconcile()

    def reconcile(self) -> None:
        """Make the state agree with the exchange: position, open orders, pending intents.

        A ``pending`` order is one whose intent was saved but whose answer we never saw (a crash
        or a lost response). We ask the exchange by cloid: if it exists we adopt what it says;
        if not, it was never placed, and we say so. Nothing is ever sent twice.
        """
        user = self.gw.user_state()
        snapshot = self.store.read()
        mine_open = any(o.get("status") in OPEN for o in snapshot.get("orders", {}).values())
        listed = self.gw.open_orders() if mine_open else []
        open_orders = {o.get("cloid"): o for o in listed if o.get("cloid")}
        updates: dict[str, dict[str, Any]] = {}
        for cloid, order in snapshot.get("orders", {}).items():
            if order.get("status") not in OPEN:
                continue
            if cloid in open_orders:
                updates[cloid] = {"status": "open", "oid": open_orders[cloid].get("oid")}
                continue
            found = self.gw.order_status(cloid)
            updates[cloid] = {"status": found["status"], "oid": found.get("oid")}
        position = _position(user, self.config.coin)
        equity = float(user.get("marginSummary", {}).get("accountValue", 0.0))
        with self.store.transaction() as doc:
            for cloid, change in updates.items():
                doc["orders"][cloid].update(change)
            doc["position"] = position
            doc["pnl"]["equity"] = equity
            if doc["pnl"].get("start_equity") is None:
                doc["pnl"]["start_equity"] = equity
        if position["szi"] == 0:
            self._cancel_orphan_exits()

    def _cancel_orphan_exits(self) -> None:
        """With no position, a resting take-profit or stop-loss has nothing to protect."""
        doc = self.store.read()
        for cloid, order in doc.get("orders", {}).items():
            if order.get("kind") in ("tp", "sl") and order.get("status") == "open":
                self.gw.cancel(self.config.coin, cloid)
                with self.store.transaction() as d:
                    d["orders"][cloid]["status"] = "canceled"

    # --- trading ----------------------------------------------------------------------------

    def step(self) -> None:
        """One decision: reconcile, read candles, maybe open a position with its exits."""
        self._bump("iterations")
        self.reconcile()
        doc = self.store.read()
        interval_ms = INTERVAL_MS[self.config.interval]
        raw = self.gw.candles(
            self.config.coin, self.config.interval, self.config.lookback, interval_ms
        )
        candles = [Candle.from_hyperliquid(c) for c in raw]
        if len(candles) < 3:
            return
        closed = candles[:-1]  # the last candle is still forming
        newest = closed[-1].t
        if newest <= doc.get("last_candle", 0):
            return
        busy = doc["position"]["szi"] != 0 or any(
            o.get("status") in OPEN for o in doc.get("orders", {}).values()
        )
        signal_ = None if busy else self._decide(closed)
        with self.store.transaction() as d:
            d["last_candle"] = newest
        if signal_ is not None:
            self._bump("signals")
            self.open_position(signal_)

    def _decide(self, candles: list[Candle]) -> Signal | None:
        best: Signal | None = None
        for strategy in self.strategies:
            candidate = strategy.evaluate(candles)
            if candidate and (best is None or candidate.confidence > best.confidence):
                best = candidate
        return best

    def open_position(self, signal_: Signal) -> None:
        coin = self.config.coin
        info = self.gw.asset(coin)
        equity = float(self.store.read()["pnl"].get("equity") or 0.0)
        # The signal was made on the last closed candle; the market has moved since. Keep its
        # stop and target distances, measured from the price we actually trade at.
        mid = self.gw.mid(coin)
        signal_ = dataclasses.replace(
            signal_,
            entry=mid,
            stop=mid - (signal_.entry - signal_.stop),
            target=mid + (signal_.target - signal_.entry),
        )
        sizing = position_size(
            signal_,
            equity=equity,
            risk_per_trade=self.config.risk.risk_per_trade,
            leverage=self.config.risk.leverage,
            max_position_usd=self.config.risk.max_position_usd,
            sz_decimals=info["szDecimals"],
        )
        if sizing.size <= 0 or signal_.stop <= 0:
            log.info("signal %s %s skipped: %s", signal_.strategy, signal_.side, sizing.reason)
            return
        slip = 1.01 if signal_.is_buy else 0.99
        entry_px = round_price(mid * slip, info["szDecimals"])
        entry = self._place(
            coin,
            "entry",
            signal_.is_buy,
            sizing.size,
            entry_px,
            {"limit": {"tif": "Ioc"}},
            reduce_only=False,
            strategy=signal_.strategy,
        )
        if entry != "filled":
            return
        for kind, px in (("tp", signal_.target), ("sl", signal_.stop)):
            trigger = round_price(px, info["szDecimals"])
            self._place(
                coin,
                kind,
                not signal_.is_buy,
                sizing.size,
                trigger,
                {"trigger": {"triggerPx": trigger, "isMarket": True, "tpsl": kind}},
                reduce_only=True,
                strategy=signal_.strategy,
            )

    def _place(
        self,
        coin: str,
        kind: str,
        is_buy: bool,
        size: float,
        px: float,
        order_type: dict[str, Any],
        *,
        reduce_only: bool,
        strategy: str,
    ) -> str:
        """Save the intent, send the order once (retries ask the exchange first), save the
        result."""
        cloid = new_cloid()
        with self.store.transaction() as doc:
            doc["orders"][cloid] = {
                "coin": coin,
                "kind": kind,
                "side": "buy" if is_buy else "sell",
                "sz": size,
                "px": px,
                "status": "pending",
                "strategy": strategy,
                "oid": None,
                "t": int(time.time() * 1000),
            }
        result = self.gw.place(coin, is_buy, size, px, order_type, reduce_only, cloid)
        with self.store.transaction() as doc:
            doc["orders"][cloid].update({"status": result["status"], "oid": result.get("oid")})
            doc["counters"]["orders_placed"] += 1
        log.info(
            "%s %s %s %s @ %s -> %s",
            kind,
            "buy" if is_buy else "sell",
            size,
            coin,
            px,
            result["status"],
        )
        return str(result["status"])

    # --- the loop -----------------------------------------------------------------------------

    def run(self, duration: float | None) -> int:
        """Trade until ``duration`` seconds pass or a signal stops us. Returns the exit code."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self.stopping and (deadline is None or time.monotonic() < deadline):
            started = time.monotonic()
            try:
                if self.gw.latched():
                    self.last_error = "breaker latched: waiting for an operator reset"
                elif not self.started:
                    self.start()
                    self.started = True
                else:
                    self.step()
                    self.last_error = ""
            except CircuitOpenError as exc:
                self._bump("breaker_rejections")
                self.last_error = f"breaker open: {exc}"
            except TransientError as exc:
                self._bump("transient_errors")
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("transient error, will retry next loop: %s", exc)
            except CriticalError as exc:
                self._bump("critical_errors")
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("critical error, trading stops until reset: %s", exc)
            self.status_line()
            pause = self.config.loop_seconds - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)
        if self.started and not self.gw.latched():
            try:
                self.reconcile()  # leave a state file that matches the exchange
            except (TransientError, CircuitOpenError) as exc:
                log.warning("final reconciliation failed: %s", exc)
        self.status_line(force=True)
        return 0

    def status_line(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_status < 3.0:
            return
        self.last_status = now
        status = self.gw.status()
        if status["retries"] > self.retries_saved:
            self._bump("retries", status["retries"] - self.retries_saved)
            self.retries_saved = status["retries"]
        doc = self.store.read()
        if not doc:
            return
        open_orders = sum(1 for o in doc.get("orders", {}).values() if o.get("status") in OPEN)
        print(
            f"[bot] price={status['price']} pos={doc['position']['szi']} open_orders={open_orders}"
            f" iter={doc['counters']['iterations']} errors={doc['counters']['transient_errors']}"
            f"/{doc['counters']['critical_errors']} retries={status['retries']}"
            f" breaker={status['breaker']} budget={status['budget_used']:.0%}"
            + (f" last_error={self.last_error[:80]!r}" if self.last_error else ""),
            flush=True,
        )


def _position(user_state: dict[str, Any], coin: str) -> dict[str, Any]:
    for item in user_state.get("assetPositions", []):
        pos = item.get("position", {})
        if pos.get("coin") == coin:
            entry = pos.get("entryPx")
            return {
                "szi": float(pos.get("szi", 0.0)),
                "entry_px": None if entry is None else float(entry),
            }
    return {"szi": 0.0, "entry_px": None}


def _connect_until_up(
    config: BotConfig, key: str, base_url: str, state_dir: Path, duration: float | None
) -> Any:
    """Connect, waiting out transient trouble and an open (not latched) breaker."""
    from examples.hyperliquid_bot.exchange import Gateway

    deadline = None if duration is None else time.monotonic() + duration
    while True:
        try:
            return Gateway.connect(config, key, base_url, state_dir)
        except (TransientError, CircuitOpenError) as exc:
            if isinstance(exc, CircuitOpenError) and exc.latched:
                raise
            if deadline is not None and time.monotonic() > deadline:
                raise
            log.warning("cannot connect yet (%s); retrying", exc)
            time.sleep(1.0)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The resilient-trading example Hyperliquid bot.")
    parser.add_argument("--config", required=True, help="the TOML configuration file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration and exit (0 when valid)",
    )
    parser.add_argument("--exchange", choices=("sim", "testnet"), default="sim")
    parser.add_argument("--base-url", help="the simulator's URL (with --exchange sim)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until stopped)",
    )
    parser.add_argument("--state-dir", help="override the configuration's state_dir")
    parser.add_argument("--log-file", help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid configuration {args.config}:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"configuration {args.config} is valid")
        return 0
    key = os.environ.get("HYPERLIQUID_PRIVATE_KEY")
    if not key:
        print("HYPERLIQUID_PRIVATE_KEY is not set", file=sys.stderr)
        return 2
    if args.exchange == "testnet":
        base_url = TESTNET_URL
    elif args.base_url:
        base_url = args.base_url
    else:
        print(
            "--exchange sim needs --base-url (make demo starts the simulator for you)",
            file=sys.stderr,
        )
        return 2
    state_dir = Path(args.state_dir or (Path(args.config).resolve().parent / config.state_dir))
    state_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    try:
        gateway = _connect_until_up(config, key, base_url, state_dir, args.duration)
        del key
        bot = Bot(config, gateway, state_dir)
        signal.signal(signal.SIGTERM, lambda *_: setattr(bot, "stopping", True))
        code = bot.run(args.duration)
    except ResilienceError as exc:
        print(f"bot stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps({"bot": "stopped", "state": str(state_dir / "state.json")}))
    return code


if __name__ == "__main__":
    sys.exit(main())
