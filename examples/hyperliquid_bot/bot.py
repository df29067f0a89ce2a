"""The example Hyperliquid bot: two strategies on candles, resilient plumbing underneath.

Usage::

    HYPERLIQUID_PRIVATE_KEY=0x... python examples/hyperliquid_bot/bot.py \\
        --config examples/hyperliquid_bot/config.toml [--check-config] \\
        [--exchange sim|testnet] [--base-url URL] [--duration SECONDS] [--metrics-port PORT]
        [--close-position]

(``python -m examples.hyperliquid_bot ...`` from the repository root is the same.)
``--close-position`` closes the position with one reduce-only IOC and exits (beside a
running bot on the same state directory: raise the halt first so it makes no new entry).

The trading logic (strategies, sizing, the order lifecycle) reads like trading. The bot talks
to a :class:`~examples.hyperliquid_bot.venue.Venue` (typed results), implemented over the
official SDK by :class:`~examples.hyperliquid_bot.exchange.Gateway`, which wraps the SDK once
with the library's rate limiter, circuit breakers and retry policy. Its state is a typed
:class:`~examples.hyperliquid_bot.state.BotState` in a :class:`~resilient_trading.TypedStore`.

Positions are always protected: an entry goes out with its take-profit and stop-loss as one
grouped action, and every reconcile re-arms a stop for a position found without one. While a
breaker is open or latched the bot is *degraded*: no new entries, but cancels, stops and
reduce-only closes still go out. The same holds while the operator's fleet-wide halt is
raised (``resilient-trading halt``; read once per step) and while the market-data stream is
stale (the feed's gate).

With ``--metrics-port PORT`` (or ``[metrics] port``) the bot serves ``/metrics`` (Prometheus)
and ``/healthz`` (200 while it can trade, 503 with the reasons) on 127.0.0.1 from a daemon
thread (:mod:`examples.hyperliquid_bot.health`); the loop only publishes a heartbeat to it.
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
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.hyperliquid_bot.config import BotConfig, ConfigError, load_config, validate_config
from examples.hyperliquid_bot.health import (
    FeedReading,
    HealthLimits,
    Heartbeat,
    MetricsExtraMissingError,
    MetricsServer,
    require_metrics,
)
from examples.hyperliquid_bot.protection import carry_stop, is_protected, orphan_exits, stop_price
from examples.hyperliquid_bot.risk import position_size, round_price
from examples.hyperliquid_bot.state import (
    BotState,
    Counters,
    Order,
    OrderStatus,
    Position,
    open_state,
)
from examples.hyperliquid_bot.strategies import Candle, Signal, build_strategies
from examples.hyperliquid_bot.venue import (
    AccountView,
    Found,
    OrderRequest,
    Placed,
    RestingOrder,
    Venue,
)
from resilient_trading import (
    CircuitOpenError,
    CriticalError,
    Halt,
    Journal,
    ResilienceError,
    TransientError,
)

__all__ = [
    "Bot",
    "Plan",
    "apply_overrides",
    "close_once",
    "finished",
    "main",
    "parse_args",
    "read_history",
]

log = logging.getLogger("bot")

TESTNET_URL = "https://api.hyperliquid-testnet.xyz"
#: How far past the mid an IOC entry or close may trade.
SLIPPAGE = 0.01


def new_cloid() -> str:
    """A fresh client order id: 16 random bytes as Hyperliquid wants them."""
    return "0x" + secrets.token_hex(16)


@dataclasses.dataclass
class Plan:
    """One step, decided from what the exchange says: what to record, then what to send.

    Built by :meth:`Bot.look` (reads only); committed in one transaction (with the step's
    counters and the intents of every order to send); then sent; then its results committed.
    """

    account: AccountView
    #: What the exchange said of our live orders, by cloid.
    updates: dict[str, Found]
    #: Every order of the state with the updates applied.
    orders: dict[str, Order]
    #: Exits left open with no position to protect: cancel them.
    orphans: list[str]
    #: The position has no working stop: this reduce-only stop re-arms it.
    rearm: OrderRequest | None = None
    #: Our stops too small for the position: cancelled once :attr:`rearm` is working.
    replaced: list[str] = dataclasses.field(default_factory=list)
    #: An entry with its take-profit and stop-loss (one grouped action).
    entry: list[OrderRequest] = dataclasses.field(default_factory=list)
    strategy: str = ""
    #: The newest candle already decided on, and the one this step decided on.
    last_candle: int = 0
    newest_candle: int | None = None

    def intents(self) -> list[OrderRequest]:
        return ([self.rearm] if self.rearm else []) + self.entry


class Bot:
    """One trading loop over one coin, its state a typed :class:`BotState` in a TypedStore.

    ``venue`` is the exchange (:class:`~examples.hyperliquid_bot.venue.Venue`), or pass
    ``connect`` to build it inside the loop (connection trouble is then one more transient
    error of the loop, waited out like the others). ``halt`` is the fleet's operator flag
    (:class:`~resilient_trading.Halt`), read once per step: while it is raised the bot makes
    no new entries, and keeps protecting and closing what it holds. ``heartbeat`` (a
    :class:`~examples.hyperliquid_bot.health.Heartbeat`) hears of every completed loop, for
    the ``/healthz`` endpoint.
    """

    def __init__(
        self,
        config: BotConfig,
        venue: Venue | None,
        state_dir: Path,
        *,
        connect: Callable[[], Venue] | None = None,
        clock: Callable[[], float] = time.time,
        halt: Halt | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        if venue is None and connect is None:
            raise ValueError("give a venue, or connect=fn() -> Venue")
        self.config = config
        self._venue = venue
        self._connect = connect
        self.state_dir = state_dir
        self.store = open_state(state_dir / "state.json")
        #: Finished orders, moved out of the live state (see :meth:`_archive`).
        self.history = Journal(state_dir / "history.jsonl")
        self.strategies = build_strategies(config.trend, config.mean_reversion)
        self.clock = clock
        self.stopping = False
        self.started = False
        self.last_status = 0.0
        self.last_error = ""
        self.retries_saved = 0
        self.ws_saved = (0, 0, 0)
        self.halt = halt
        self.heartbeat = heartbeat
        #: Why new entries are halted by the operator (read once per step), or ``None``.
        self.halted: str | None = None
        #: Counters of this step, added to the stored ones by the step's commit.
        self.tally = Counters(restarts=1)

    @property
    def venue(self) -> Venue:
        if self._venue is None:
            assert self._connect is not None
            self._venue = self._connect()
            self._connect = None  # the key it closes over is no longer needed
        return self._venue

    # --- state ------------------------------------------------------------------------------

    def count(self, **by: int) -> None:
        """Add to this step's counters (stored by the step's commit, never on their own)."""
        self.tally = self.tally + Counters(**by)

    def flush(self) -> None:
        """Store the counters of a step that made no commit of its own (it failed early)."""
        if self.tally:
            with self.store.transaction() as state:
                self._fold(state)

    def _fold(self, state: BotState) -> None:
        state.counters = state.counters + self.tally
        self.tally = Counters()  # if the commit fails, the next commit carries them

    def start(self) -> None:
        """Load (or create) the state and reconcile it with the exchange."""
        self.sync(decide=False)
        self.started = True

    def reconcile(self) -> None:
        """Make the state agree with the exchange, and make sure the position has a stop."""
        self.sync(decide=False)

    def step(self) -> None:
        """One decision: reconcile, read candles, maybe open a position with its exits."""
        self.count(iterations=1)
        self.check_halt()
        self.sync(decide=True)

    def check_halt(self) -> str | None:
        """Read the operator's halt flag (once per step); log when it changes.

        A flag that cannot be read (a damaged file, Redis down) counts as halted: new entries
        wait until it can be read again, protection and closes go on.
        """
        if self.halt is None:
            return None
        try:
            status = self.halt.halted()
            now = None if status is None else f"halted by {status.by}: {status.reason}"
        except ResilienceError as exc:
            now = f"halt flag unreadable ({type(exc).__name__}: {exc})"
        if now != self.halted:
            if now is None:
                log.warning("halt lifted at %s: new entries allowed again", self.halt.location)
            else:
                log.warning("%s: no new entries; protection and closes go on", now)
        self.halted = now
        return now

    # --- one step: look, decide, commit, send, commit -----------------------------------------

    def sync(self, *, decide: bool) -> None:
        """Look, maybe decide, commit once; then send what was decided and commit its results
        (a step that sends nothing makes one commit)."""
        plan = self.look()
        if decide:
            self.decide(plan)
        self.record(plan)
        if plan.orphans or plan.intents():
            self.execute(plan)

    def look(self) -> Plan:
        """Ask the exchange about the position and every live order; nothing is written.

        A ``pending`` order is one whose intent was saved but whose answer we never saw (a
        crash or a lost response): it is looked up by its cloid and adopted as the exchange
        knows it, or marked ``never_placed``. Nothing is ever sent twice. Live orders are
        looked up by cloid (weight 2 each, from the stream's cache when it is live).
        Protection is judged on what the exchange holds: whenever the account was read afresh
        (a fill, a write of the bot's, a resync, a gap: when a stop can have shrunk with its
        position) the position's stops are looked up over REST with their size there. The
        open-orders listing (weight 20) is read only when the position has no stop we know
        to cover it: it shows a stop the bot did not place, or one a lagging lookup missed,
        before a new one is armed (and our too-small ones are cancelled once it works).
        """
        coin = self.config.coin
        account = self.venue.account(coin)
        state = self.store.read()
        recheck = account.fresh and not account.position.flat
        updates: dict[str, Found] = {}
        for cloid, order in state.live_orders().items():
            updates[cloid] = self.venue.order_status(cloid, fresh=recheck and order.kind == "sl")
        stored = state.position
        if stored.flat and _entry_failed(state.orders, updates):
            stored = stored.model_copy(update={"stop_px": None})  # its entry never filled
        position = carry_stop(stored, account.position)
        orders = _apply(state.orders, updates)
        listing: list[RestingOrder] = []
        if not is_protected(position, coin, listing, orders):
            listing = self.venue.open_orders()
            for resting in listing:
                if resting.cloid in orders:  # a lagging lookup; the size the exchange holds
                    updates[resting.cloid] = Found("open", resting.oid, resting.size)
            orders = _apply(state.orders, updates)
        account = dataclasses.replace(account, position=position)
        plan = Plan(account, updates, orders, orphans=[], last_candle=state.last_candle)
        if position.flat:
            plan.orphans = orphan_exits(orders)
        elif not is_protected(position, coin, listing, orders):
            plan.rearm = self._stop_for(position)
            plan.replaced = [
                cloid
                for cloid, order in orders.items()
                if order.kind == "sl" and order.status == "open" and order.coin == coin
            ]
        return plan

    def _stop_for(self, position: Position) -> OrderRequest:
        """A reduce-only stop for the whole position (see :mod:`.protection`)."""
        coin = self.config.coin
        decimals = self.venue.sz_decimals(coin)
        mid = self.venue.mid(coin) if position.stop_px is None and not position.entry_px else 0.0
        px = stop_price(position, fallback=self.config.risk.fallback_stop, mid=mid)
        size = round(abs(position.szi), decimals)
        long = position.szi > 0
        return OrderRequest(new_cloid(), coin, "sl", not long, size, round_price(px, decimals))

    def decide(self, plan: Plan) -> None:
        """Read the candles and, when flat, idle and not degraded, plan an entry."""
        candles = self.venue.candles(self.config.coin, self.config.interval, self.config.lookback)
        if len(candles) < 3:
            return
        closed = candles[:-1]  # the last candle is still forming
        newest = closed[-1].t
        if newest <= plan.last_candle:
            return
        plan.newest_candle = newest
        busy = any(order.live for order in plan.orders.values())
        if not plan.account.position.flat or busy or plan.orphans:
            return
        signal_ = self._best(closed)
        if signal_ is None:
            return
        self.count(signals=1)
        blocked = self.halted or self.venue.entries_blocked()
        if blocked is not None:
            self.count(entries_refused=1)
            log.warning(
                "degraded: %s %s entry refused (%s); protection and closes still run",
                signal_.strategy,
                signal_.side,
                blocked,
            )
            return
        plan.entry = self._entry(signal_, plan.account.equity)
        plan.strategy = signal_.strategy

    def _best(self, candles: list[Candle]) -> Signal | None:
        best: Signal | None = None
        for strategy in self.strategies:
            candidate = strategy.evaluate(candles)
            if candidate and (best is None or candidate.confidence > best.confidence):
                best = candidate
        return best

    def _entry(self, signal_: Signal, equity: float) -> list[OrderRequest]:
        """The entry (IOC at the mid plus slippage) with its take-profit and stop-loss."""
        coin = self.config.coin
        decimals = self.venue.sz_decimals(coin)
        # The signal was made on the last closed candle; the market has moved since. Keep its
        # stop and target distances, measured from the price we actually trade at.
        mid = self.venue.mid(coin)
        signal_ = dataclasses.replace(
            signal_,
            entry=mid,
            stop=mid - (signal_.entry - signal_.stop),
            target=mid + (signal_.target - signal_.entry),
        )
        risk = self.config.risk
        sizing = position_size(
            signal_,
            equity=equity,
            risk_per_trade=risk.risk_per_trade,
            leverage=risk.leverage,
            max_position_usd=risk.max_position_usd,
            sz_decimals=decimals,
        )
        if sizing.size <= 0 or signal_.stop <= 0 or signal_.target <= 0:
            log.info("signal %s %s skipped: %s", signal_.strategy, signal_.side, sizing.reason)
            return []
        buy = signal_.is_buy
        slip = 1 + SLIPPAGE if buy else 1 - SLIPPAGE
        size = sizing.size
        return [
            OrderRequest(new_cloid(), coin, "entry", buy, size, round_price(mid * slip, decimals)),
            OrderRequest(
                new_cloid(), coin, "tp", not buy, size, round_price(signal_.target, decimals)
            ),
            OrderRequest(
                new_cloid(), coin, "sl", not buy, size, round_price(signal_.stop, decimals)
            ),
        ]

    def record(self, plan: Plan) -> None:
        """The step's one commit: what the exchange said, the intents, the counters."""
        now = int(self.clock() * 1000)
        with self.store.transaction() as state:
            orders = dict(state.orders)
            for cloid, found in plan.updates.items():
                if cloid in orders:
                    orders[cloid] = orders[cloid].settled(found.status, found.oid, found.size)
            for request in plan.intents():
                orders[request.cloid] = _intent(request, plan.strategy, now)
            state.orders = orders
            position = plan.account.position
            if plan.entry:
                (stop,) = [r for r in plan.entry if r.kind == "sl"]
                position = position.model_copy(update={"stop_px": stop.px})
            state.position = position
            equity = plan.account.equity
            start = state.pnl.start_equity if state.pnl.start_equity is not None else equity
            state.pnl = state.pnl.model_copy(update={"equity": equity, "start_equity": start})
            if plan.newest_candle is not None:
                state.last_candle = plan.newest_candle
            self._archive(state)
            self._fold(state)

    def _archive(self, state: BotState) -> None:
        """Move the finished orders out of the live state, inside the step's commit.

        Finished: see :func:`finished` (a filled entry waits for its own exits). Each is
        appended to :attr:`history` FIRST (durable when ``append_many`` returns), THEN dropped
        from ``state``, which the enclosing transaction commits. A crash between the two
        leaves an order in both places, never in neither; the next commit appends it again,
        so :func:`read_history` keeps the last record of each cloid.
        """
        done = finished(state.orders)
        if not done:
            return
        self.history.append_many(
            {"cloid": cloid, **state.orders[cloid].model_dump()} for cloid in done
        )
        state.orders = {c: o for c, o in state.orders.items() if c not in done}

    def execute(self, plan: Plan) -> None:
        """Send what the plan decided (its intents are saved), then save what came back."""
        coin = self.config.coin
        results: dict[str, Placed] = {}
        try:
            for cloid in plan.orphans:
                self.venue.cancel(coin, cloid)  # nothing left to protect
                results[cloid] = Placed(cloid, "canceled")
            if plan.rearm is not None:
                stop = plan.rearm
                log.warning(
                    "position %s %s has no working stop: re-arming a stop at %s",
                    plan.account.position.szi,
                    coin,
                    stop.px,
                )
                self.count(stops_rearmed=1, orders_placed=1)
                results[stop.cloid] = self.venue.reduce(stop)
                _log_placed(stop, results[stop.cloid])
                if results[stop.cloid].status == "open":
                    for cloid in plan.replaced:  # too small: the new stop covers it all
                        self.venue.cancel(coin, cloid)
                        results[cloid] = Placed(cloid, "canceled")
            if plan.entry:
                self.count(orders_placed=len(plan.entry))
                for request, placed in zip(plan.entry, self.venue.enter(plan.entry), strict=True):
                    results[request.cloid] = placed
                    _log_placed(request, placed)
        finally:
            self._commit_results(results)

    def _commit_results(self, results: dict[str, Placed]) -> None:
        with self.store.transaction() as state:
            if state.position.flat and _entry_failed(state.orders, results):
                state.position = state.position.model_copy(update={"stop_px": None})
            orders = dict(state.orders)
            for cloid, placed in results.items():
                if cloid in orders:
                    orders[cloid] = orders[cloid].settled(placed.status, placed.oid)
            state.orders = orders
            self._archive(state)
            self._fold(state)

    def close_position(self) -> Placed | None:
        """Close the whole position with a reduce-only IOC (goes out even while degraded)."""
        coin = self.config.coin
        position = self.venue.account(coin).position
        if position.flat:
            return None
        decimals = self.venue.sz_decimals(coin)
        long = position.szi > 0
        mid = self.venue.mid(coin)
        px = round_price(mid * (1 - SLIPPAGE if long else 1 + SLIPPAGE), decimals)
        close = OrderRequest(new_cloid(), coin, "close", not long, abs(position.szi), px)
        with self.store.transaction() as state:
            state.orders = {**state.orders, close.cloid: _intent(close, "close", self._ms())}
            self.count(orders_placed=1)
            self._fold(state)
        placed = self.venue.reduce(close)
        _log_placed(close, placed)
        self._commit_results({close.cloid: placed})
        return placed

    def _ms(self) -> int:
        return int(self.clock() * 1000)

    def close(self) -> None:
        """Release the history journal's file and lock."""
        self.history.close()

    # --- the loop -----------------------------------------------------------------------------

    def run(self, duration: float | None) -> int:
        """Trade until ``duration`` seconds pass or a signal stops us. Returns the exit code.

        While a breaker is open or latched the bot is *degraded*: it keeps reconciling and
        protecting (cancels, stops, reduce-only closes), and refuses new entries.
        """
        deadline = None if duration is None else time.monotonic() + duration
        while not self.stopping and (deadline is None or time.monotonic() < deadline):
            started = time.monotonic()
            committed = False
            try:
                if not self.started:
                    self.start()
                else:
                    self.step()
                committed = True
                blocked = self.halted or self.venue.entries_blocked()
                self.last_error = f"degraded: {blocked}" if blocked else ""
            except CircuitOpenError as exc:
                self.count(breaker_rejections=1)
                self.last_error = f"breaker open: {exc}"
            except TransientError as exc:
                self.count(transient_errors=1)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("transient error, will retry next loop: %s", exc)
            except CriticalError as exc:
                self.count(critical_errors=1)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("critical error, entries stop until a breaker reset: %s", exc)
            if self.heartbeat is not None:  # one attribute assignment: never blocks the loop
                self.heartbeat.beat(
                    started=self.started, halted=self.halted, degraded=self.last_error
                )
            self.status_line()
            if not committed:
                self.flush()  # a failed step still stores its counters: one commit per loop
            pause = self.config.loop_seconds - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)
        if self.started:
            try:
                self.reconcile()  # leave a state file that matches the exchange
            except (TransientError, CircuitOpenError) as exc:
                log.warning("final reconciliation failed: %s", exc)
        self.status_line(force=True)
        self.flush()
        return 0

    def status_line(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._venue is None or (not force and now - self.last_status < 3.0):
            return
        self.last_status = now
        status = self.venue.status()
        if status.retries > self.retries_saved:
            self.count(retries=status.retries - self.retries_saved)
            self.retries_saved = status.retries
        ws = (status.ws_reconnects, status.ws_stale_periods, status.ws_gap_fills)
        if ws != self.ws_saved:
            before = self.ws_saved
            self.count(
                ws_reconnects=max(0, ws[0] - before[0]),
                ws_stale_periods=max(0, ws[1] - before[1]),
                ws_gap_fills=max(0, ws[2] - before[2]),
            )
            self.ws_saved = ws
        state = self.store.read()
        counters = state.counters + self.tally
        print(
            f"[bot] price={status.price} pos={state.position.szi}"
            f" open_orders={len(state.live_orders())}"
            f" iter={counters.iterations} errors={counters.transient_errors}"
            f"/{counters.critical_errors} retries={status.retries}"
            f" breaker={status.breaker} budget={status.budget_used:.0%}"
            + (f" actions={status.address}" if status.address else "")
            + f" ws_reconnects={status.ws_reconnects} ws_stale={status.ws_stale_periods}"
            + (f" last_error={self.last_error[:80]!r}" if self.last_error else ""),
            flush=True,
        )


def finished(orders: dict[str, Order]) -> list[str]:
    """The cloids of orders the bot no longer acts on: filled (an entry only once its own
    exits, saved with it in one step, are settled), unfilled, rejected, canceled, never_placed."""
    exits_live = {(o.coin, o.t) for o in orders.values() if o.live and o.kind in ("tp", "sl")}
    return [
        cloid
        for cloid, order in orders.items()
        if not order.live and not (order.kind == "entry" and (order.coin, order.t) in exits_live)
    ]


def read_history(history: Journal) -> dict[str, Order]:
    """Every finished order in ``history`` by cloid, once each (a crash between the append
    and the live state's commit appends an order twice: the last record wins)."""
    orders: dict[str, Order] = {}
    for entry in history.iter_records():
        record = dict(entry.record)
        cloid = str(record.pop("cloid"))
        orders[cloid] = Order.model_validate(record)
    return orders


def _apply(orders: dict[str, Order], updates: dict[str, Found]) -> dict[str, Order]:
    return {
        c: o.settled(updates[c].status, updates[c].oid, updates[c].size) if c in updates else o
        for c, o in orders.items()
    }


#: What an entry that will never fill ends as.
_NOT_FILLED: frozenset[OrderStatus] = frozenset(
    {"unfilled", "rejected", "canceled", "never_placed"}
)


def _entry_failed(orders: dict[str, Order], found: dict[str, Found] | dict[str, Placed]) -> bool:
    """An entry among ``found`` ended without filling: the stop saved with its intent (on the
    flat position) belongs to no position, and must not be given to a later one."""
    return any(
        cloid in orders and orders[cloid].kind == "entry" and result.status in _NOT_FILLED
        for cloid, result in found.items()
    )


def _intent(request: OrderRequest, strategy: str, t: int) -> Order:
    return Order(
        coin=request.coin,
        kind=request.kind,
        is_buy=request.is_buy,
        size=request.size,
        px=request.px,
        reduce_only=request.reduce_only,
        strategy=strategy,
        t=t,
    )


def _log_placed(request: OrderRequest, placed: Placed) -> None:
    log.info(
        "%s %s %s %s @ %s -> %s%s",
        request.kind,
        "buy" if request.is_buy else "sell",
        request.size,
        request.coin,
        request.px,
        placed.status,
        f" ({placed.error})" if placed.error else "",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
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
    parser.add_argument(
        "--address-lasts-hours",
        type=float,
        help="override exchange.address_lasts_hours (the demo scales it by the simulator's speed)",
    )
    parser.add_argument("--log-file", help="also log to this file")
    parser.add_argument(
        "--close-position",
        action="store_true",
        help="close the position with one reduce-only IOC and exit (0: flat), beside a "
        "running bot too; raise the halt first so that it makes no new entry",
    )
    parser.add_argument(
        "--halt-dir",
        help="the fleet's halt flag directory (`resilient-trading halt --state-dir DIR`); "
        "default: the state directory",
    )
    parser.add_argument(
        "--halt-redis", help="read the fleet's halt flag from this Redis instead of a directory"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics and /healthz on this port (0: a free one, printed at start); "
        "overrides [metrics] port; needs pip install 'resilient-trading[metrics]'",
    )
    parser.add_argument("--metrics-host", help="override [metrics] host (default 127.0.0.1)")
    parser.add_argument(
        "--runway-alert-hours",
        type=float,
        help="override [metrics] runway_alert_hours (the demo scales it by the simulator's speed)",
    )
    return parser.parse_args(argv)


def apply_overrides(config: BotConfig, args: argparse.Namespace) -> BotConfig:
    """The configuration with the command line's overrides, validated like the file.

    Raises:
        ConfigError: An override is out of bounds (the lines name the key).
    """
    exchange: dict[str, object] = {}
    metrics: dict[str, object] = {}
    if args.address_lasts_hours is not None:
        exchange["address_lasts_hours"] = args.address_lasts_hours
    if args.metrics_port is not None:
        metrics["port"] = args.metrics_port
    if args.metrics_host is not None:
        metrics["host"] = args.metrics_host
    if args.runway_alert_hours is not None:
        metrics["runway_alert_hours"] = args.runway_alert_hours
    if not exchange and not metrics:
        return config
    return validate_config(
        {
            **config.model_dump(),
            "exchange": {**config.exchange.model_dump(), **exchange},
            "metrics": {**config.metrics.model_dump(), **metrics},
        }
    )


def close_once(connect: Callable[[], Venue], config: BotConfig, state_dir: Path) -> int:
    """The operator's ``--close-position``: one reduce-only IOC for the whole position, its
    intent and result in the bot's state (a running bot adopts it). 0 when flat after it."""
    venue: Venue | None = None
    bot: Bot | None = None
    try:
        venue = connect()
        bot = Bot(config, venue, state_dir)
        placed = bot.close_position()
        flat = venue.account(config.coin).position.flat
    except ResilienceError as exc:
        print(f"close failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if bot is not None:
            bot.close()
        close = getattr(venue, "close", None)
        if callable(close):
            close()
    outcome = "already flat" if placed is None else placed.status
    print(json.dumps({"close": outcome, "flat": flat}))
    return 0 if flat else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid configuration {args.config}:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    try:
        config = apply_overrides(config, args)
    except ConfigError as exc:
        print("invalid command-line override:", "; ".join(exc.lines), file=sys.stderr)
        return 2
    if args.check_config:
        print(f"configuration {args.config} is valid")
        return 0
    if config.metrics.port is not None:
        try:
            require_metrics()  # at start, before anything trades
        except MetricsExtraMissingError as exc:
            print(f"cannot serve metrics: {exc}", file=sys.stderr)
            return 2
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

    from examples.hyperliquid_bot.exchange import Gateway

    if args.close_position:
        return close_once(
            lambda: Gateway.connect(config, key, base_url, state_dir), config, state_dir
        )
    gateways: list[Gateway] = []

    def connect() -> Venue:
        gateways.append(Gateway.connect(config, key, base_url, state_dir))
        return gateways[-1]

    def feeds() -> list[FeedReading]:
        """The watched market-data streams (the server's thread; the feed's status is locked)."""
        stream = gateways[-1].stream if gateways else None
        if stream is None:
            return []
        return [
            FeedReading(key, status.age, status.state)
            for key, status in stream.feed.status().items()
            if status.max_silence is not None
        ]

    heartbeat = Heartbeat()
    server: MetricsServer | None = None
    port = config.metrics.port
    if port is not None:
        metrics = config.metrics
        limits = HealthLimits(
            loop_seconds=config.loop_seconds,
            stalled_loops=metrics.stalled_loops,
            feed_stale_seconds=metrics.feed_stale_seconds,
            runway_alert_seconds=metrics.runway_alert_hours * 3600,
        )
        server = MetricsServer(
            state_dir=state_dir,
            heartbeat=heartbeat,
            limits=limits,
            feeds=feeds,
            host=metrics.host,
            port=port,
        )
        try:
            server.start()
        except OSError as exc:
            server.close()
            print(
                f"cannot serve metrics on {metrics.host}:{port}: {exc.strerror or exc}; "
                "pick another --metrics-port (0: any free port)",
                file=sys.stderr,
            )
            return 2
        log.info("serving %s/metrics and %s/healthz", server.url, server.url)
        print(f"[bot] metrics: {server.url}/metrics health: {server.url}/healthz", flush=True)
    try:
        if args.halt_redis:
            halt = Halt(redis_url=args.halt_redis)
        else:
            halt = Halt(state_dir=Path(args.halt_dir) if args.halt_dir else state_dir)
    except ValueError as exc:
        print(f"cannot read the halt flag: {exc}", file=sys.stderr)
        if server is not None:
            server.close()
        return 2
    bot: Bot | None = None
    try:
        bot = Bot(config, None, state_dir, connect=connect, halt=halt, heartbeat=heartbeat)
        signal.signal(signal.SIGTERM, lambda *_: setattr(bot, "stopping", True))
        code = bot.run(args.duration)
    except ResilienceError as exc:
        print(f"bot stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.close()
        halt.close()
        if bot is not None:
            bot.close()
        for gateway in gateways:
            gateway.close()
    print(json.dumps({"bot": "stopped", "state": str(state_dir / "state.json")}))
    return code


if __name__ == "__main__":
    sys.exit(main())
