"""The one place where the bot meets the exchange, wrapped once with the library.

:class:`Gateway` implements :class:`~examples.hyperliquid_bot.venue.Venue` over the official
SDK (``Info``, ``Exchange``) with one shared :class:`~resilient_trading.RateLimiter` carrying
Hyperliquid's weights, one :class:`~resilient_trading.RetryPolicy` and two persisted
:class:`~resilient_trading.CircuitBreaker` s, wired one way for everything (``hl.wrap_info``,
``hl.wrap_exchange``):

- ``exchange`` guards entries, the only calls that open risk;
- ``protect`` counts reads, cancels and reduce-only orders, but never refuses them
  (:class:`ProtectGuard`): protection must not depend on a breaker. Its failures open it (the
  exchange itself is struggling) and one critical error latches it, and either stops new
  entries; while it is open or latched the protective calls still go out, rate-limited,
  retried and classified, so a position found without a stop gets one. A latch on
  ``exchange`` (a critical error on an entry) stops new entries and nothing else.

Both wrappers share one :class:`~resilient_trading.presets.hyperliquid.AddressBudget`
(``address.json``): every action is counted and ordinary ones paced to last
``exchange.address_lasts_hours``; cancels and reduce-only orders are never paced while their
allowance lasts. With ``[feed] enabled`` the reads come from a
:class:`~examples.hyperliquid_bot.stream.MarketStream` (one supervised WebSocket) while it is
live, and over REST at the start, after a gap, and for what the stream has not reported;
new entries wait while its gate is closed (stale market data).

The exchange wrapper is safe by default: an order whose answer was lost is looked up by its
client order id before anything is sent again, so no order is ever placed twice, and an IOC
that did not match or a cancel that raced a fill is an outcome, not a failure.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from eth_account import Account

from examples.hyperliquid_bot.config import BotConfig
from examples.hyperliquid_bot.nonce import NonceSource, install
from examples.hyperliquid_bot.state import OrderStatus, Position, status_from_exchange
from examples.hyperliquid_bot.strategies import Candle
from examples.hyperliquid_bot.stream import MarketStream
from examples.hyperliquid_bot.venue import (
    AccountView,
    Found,
    OrderRequest,
    Placed,
    RestingOrder,
    VenueStatus,
)
from resilient_trading import CircuitBreaker, CircuitOpenError, RateLimiter, RetryPolicy
from resilient_trading.presets import hyperliquid as hl

__all__ = ["INTERVAL_MS", "Gateway", "ProtectGuard"]

T = TypeVar("T")

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
#: What an order's outcome (``hl.outcomes``) means to the bot.
_PLACED: dict[str, OrderStatus] = {
    "filled": "filled",
    "resting": "open",
    "waiting": "open",  # a grouped take-profit/stop-loss waiting for its entry or trigger
    "canceled": "canceled",  # a lost order found cancelled with nothing filled
    "not_filled": "unfilled",
    "not_placed": "unfilled",
    "gone": "rejected",
    "unconfirmed": "pending",  # most likely refused, not sure: reconcile looks it up
    "error": "rejected",
}
_STOP_TYPES = frozenset({"Stop Market", "Stop Limit"})


def _cloid(value: str) -> Any:
    from hyperliquid.utils.types import Cloid

    return Cloid.from_str(value)


def _wire(order: OrderRequest) -> dict[str, Any]:
    """The SDK's ``OrderRequest`` for one of ours."""
    if order.kind in ("tp", "sl"):
        order_type: dict[str, Any] = {
            "trigger": {"triggerPx": order.px, "isMarket": True, "tpsl": order.kind}
        }
    else:
        order_type = {"limit": {"tif": "Ioc"}}
    return {
        "coin": order.coin,
        "is_buy": order.is_buy,
        "sz": order.size,
        "limit_px": order.px,
        "order_type": order_type,
        "reduce_only": order.reduce_only,
        "cloid": _cloid(order.cloid),
    }


def _placed(orders: Sequence[OrderRequest], answer: Any) -> list[Placed]:
    found = hl.outcomes(answer, operation="bulk_orders")
    if len(found) != len(orders):
        # The wrapper settles every item; if it ever did not, the outcome is unknown.
        return [Placed(o.cloid, "pending") for o in orders]
    placed = []
    for order, outcome in zip(orders, found, strict=True):
        error = None if outcome.error is None else str(outcome.error)
        placed.append(Placed(order.cloid, _PLACED[outcome.kind], outcome.oid, error))
    return placed


def _resting(raw: Mapping[str, Any]) -> RestingOrder:
    return RestingOrder(
        coin=str(raw.get("coin")),
        oid=int(raw["oid"]),
        cloid=raw.get("cloid") or None,
        is_buy=raw.get("side") == "B",
        size=float(raw.get("sz", 0.0)),
        reduce_only=bool(raw.get("reduceOnly")),
        is_stop=bool(raw.get("isTrigger")) and raw.get("orderType") in _STOP_TYPES,
    )


def _actions(status: hl.AddressStatus) -> str:
    """``120/10000 runway=5d3h`` (``runway=-``: no actions in the last hour)."""
    runway = "-"
    if status.runway is not None:
        hours = status.runway.total_seconds() / 3600
        runway = f"{int(hours // 24)}d{int(hours % 24)}h"
    throttled = " THROTTLED" if status.throttled else ""
    return f"{status.used}/{status.cap} runway={runway}{throttled}"


class ProtectGuard:
    """The ``protect`` breaker's counting without its refusal (a ``BreakerLike``).

    While ``breaker`` admits a call (closed, or the half-open trial), the call runs inside it:
    a run of transient failures opens it, one critical error latches it, and either stops new
    entries (:meth:`Gateway.entries_blocked`). While it refuses (open or latched), the call
    goes out anyway, outside it: the client around this guard still charges the rate limiter,
    retries transient failures and raises typed errors, so the bot keeps looking at its
    position, re-arming its stop, cancelling orphans and closing, and an operator still has to
    reset a latch before entries resume. ``bypassed`` counts the calls that went out that way.
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.bypassed = 0

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        ran = False

        def run() -> T:
            nonlocal ran
            ran = True
            return fn(*args, **kwargs)

        try:
            return self.breaker.call(run)
        except CircuitOpenError:
            if ran:  # raised by the call itself, not the breaker's refusal
                raise
        self.bypassed += 1
        return fn(*args, **kwargs)

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        ran = False

        async def run() -> T:
            nonlocal ran
            ran = True
            return await fn(*args, **kwargs)

        try:
            return await self.breaker.call_async(run)
        except CircuitOpenError:
            if ran:
                raise
        self.bypassed += 1
        return await fn(*args, **kwargs)


class Gateway:
    """The exchange as the bot sees it (a :class:`Venue`): every method resilient."""

    def __init__(
        self,
        *,
        address: str,
        info: Any,
        entries: hl.SafeExchange,
        reducer: hl.SafeExchange,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        protect_breaker: CircuitBreaker,
        meta: dict[str, Any],
        address_budget: hl.AddressBudget | None = None,
        stream: MarketStream | None = None,
    ) -> None:
        self.address = address
        self.info = info
        self.entries = entries
        self.reducer = reducer
        self.limiter = limiter
        self.breaker = breaker
        self.protect_breaker = protect_breaker
        self.address_budget = address_budget
        self.stream = stream
        self._account: AccountView | None = None
        self.assets = {a["name"]: a for a in meta["universe"]}
        self.retries = 0
        self.last_price: float | None = None
        self.last_candle_ms: int | None = None

    @classmethod
    def connect(cls, config: BotConfig, key: str, base_url: str, state_dir: Path) -> Gateway:
        """Build the resilient SDK clients; the key is used for the wallet and forgotten.

        Connecting retries transient trouble (the retry policy), counted by the ``protect``
        breaker but never refused by it (:class:`ProtectGuard`): a bot restarted with
        ``protect`` latched still connects, and protects what it holds.
        """
        ex_cfg = config.exchange
        limiter = RateLimiter(
            hl.REST_LIMIT.scaled(ex_cfg.budget_share),
            state_path=state_dir / "budget.json",
            key="hyperliquid",
        )
        breakers = [
            CircuitBreaker(
                fail_max=ex_cfg.breaker_fail_max,
                reset_timeout=ex_cfg.breaker_reset_timeout,
                name=name,
                state_path=state_dir / "breaker.json",
            )
            for name in ("exchange", "protect")
        ]
        breaker, protect = breakers
        holder: list[Gateway] = []

        def on_retry(event: object) -> None:
            if holder:
                holder[0].retries += 1

        retry = RetryPolicy(
            attempts=ex_cfg.retry_attempts,
            base_delay=ex_cfg.retry_base_delay,
            max_delay=ex_cfg.retry_max_delay,
            on_retry=on_retry,
        )
        install(NonceSource(state_dir / "nonce.json"))
        wallet = Account.from_key(key)
        timeout = ex_cfg.request_timeout
        pause = ex_cfg.pause_after_429
        guard = ProtectGuard(protect)
        raw_info = guard.call(retry.call, hl.make_info, base_url, limiter, timeout=timeout)
        info = hl.wrap_info(raw_info, limiter, breaker=guard, retry=retry, default_pause=pause)
        meta = info.meta()
        spot_meta = info.spot_meta()
        raw_exchange = hl.make_exchange(
            wallet, base_url, limiter, meta=meta, spot_meta=spot_meta, timeout=timeout
        )
        # One action budget for the address, shared (on its file) by every process of this
        # state directory; its userRateLimit syncs use the exchange's Info, charged to limiter.
        address_budget = hl.AddressBudget(
            wallet.address,
            lasts=timedelta(hours=ex_cfg.address_lasts_hours),
            burst=ex_cfg.address_burst,
            state_path=state_dir / "address.json",
        )

        def wrap(breaker: CircuitBreaker | ProtectGuard) -> hl.SafeExchange:
            return hl.wrap_exchange(
                raw_exchange,
                limiter,
                breaker=breaker,
                retry=retry,
                default_pause=pause,
                address_budget=address_budget,
            )

        stream = None
        if config.feed.enabled:
            # Candles, mids, order updates and fills over one supervised WebSocket; its gap
            # fill reads userFillsByTime through the wrapped Info (charged to the budget), and
            # its new connections are counted beside the REST budget (ws.json).
            feed = hl.Feed(
                base_url,
                info=info,
                user=wallet.address,
                state_path=str(state_dir / "ws.json"),
                backoff_max=config.feed.backoff_max,
            )
            stream = MarketStream(
                feed,
                coin=config.coin,
                interval=config.interval,
                interval_ms=INTERVAL_MS[config.interval],
                user=wallet.address.lower(),
                max_silence=config.feed.max_silence,
                resync=config.feed.resync_seconds,
            ).start()
        gateway = cls(
            address=wallet.address,
            info=info,
            entries=wrap(breaker),
            reducer=wrap(guard),
            limiter=limiter,
            breaker=breaker,
            protect_breaker=protect,
            meta=meta,
            address_budget=address_budget,
            stream=stream,
        )
        holder.append(gateway)
        try:
            gateway.reducer.update_leverage(config.risk.leverage, config.coin)
        except BaseException:
            gateway.close()  # no feed thread left behind by a failed connect
            raise
        return gateway

    # --- reads --------------------------------------------------------------------------------
    #
    # With a stream, each read is served by the WebSocket while it is live and has had no gap
    # since the last look; otherwise (and for anything it has not reported) over REST.

    def _streaming(self) -> MarketStream | None:
        stream = self.stream
        return stream if stream is not None and stream.live() else None

    def account(self, coin: str) -> AccountView:
        stream = self._streaming()
        cached = self._account
        if stream is not None and cached is not None and not stream.account_stale():
            return cached
        self._account = None
        if self.stream is not None:
            self.stream.account_read()  # before the read: a fill during it marks it stale
        view = self._read_account(coin)
        self._account = dataclasses.replace(view, fresh=False)  # served from the cache next
        return view

    def _read_account(self, coin: str) -> AccountView:
        user: dict[str, Any] = self.info.user_state(self.address)
        equity = float(user.get("marginSummary", {}).get("accountValue", 0.0))
        for item in user.get("assetPositions", []):
            pos = item.get("position", {})
            if pos.get("coin") == coin:
                entry = pos.get("entryPx")
                szi = float(pos.get("szi", 0.0))
                return AccountView(
                    Position(szi=szi, entry_px=None if entry is None else float(entry)), equity
                )
        return AccountView(Position(), equity)

    def open_orders(self) -> list[RestingOrder]:
        listed: list[dict[str, Any]] = self.info.frontend_open_orders(self.address)
        return [_resting(raw) for raw in listed]

    def mid(self, coin: str) -> float:
        stream = self._streaming()
        streamed = None if stream is None else stream.mid(coin)
        self.last_price = streamed if streamed else float(self.info.all_mids()[coin])
        return self.last_price

    def sz_decimals(self, coin: str) -> int:
        return int(self.assets[coin]["szDecimals"])

    def candles(self, coin: str, interval: str, lookback: int) -> list[Candle]:
        # From the stream's buffer even while it is stale (entries wait for the gate anyway);
        # over REST at the start, after a gap, or when a candle was missed.
        stream = self.stream
        if stream is not None:
            stream.live()  # a reconnect since the last look empties the buffer
        streamed = None if stream is None else stream.candles(lookback)
        if streamed:
            self.last_price = streamed[-1].close
            self.last_candle_ms = streamed[-1].t
            return streamed
        candles = self._candle_snapshot(coin, interval, lookback)
        if self.stream is not None:
            self.stream.seed(candles)
        return candles

    def _candle_snapshot(self, coin: str, interval: str, lookback: int) -> list[Candle]:
        # The exchange's clock, not ours, says which candle is the newest (the simulator may
        # compress time): after the first answer, ask relative to the newest candle seen.
        newest = self.last_candle_ms or int(time.time() * 1000)
        start = newest - lookback * INTERVAL_MS[interval]
        raw: list[Any] = self.info.candles_snapshot(coin, interval, start, newest + 10**9)
        if raw:
            self.last_price = float(raw[-1]["c"])
            self.last_candle_ms = int(raw[-1]["t"])
        return [Candle.from_hyperliquid(c) for c in raw[-lookback:]]

    def order_status(self, cloid: str, *, fresh: bool = False) -> Found:
        """What the exchange knows of ``cloid``: ``never_placed`` when it knows nothing.

        From the stream's cache while it is live, unless ``fresh``: then over REST
        (``orderStatus``, weight 2), with the order's size left on the exchange.
        """
        stream = self._streaming()
        known = None if stream is None or fresh else stream.order(cloid)
        if known is not None:
            return Found(*known)
        answer = self.info.query_order_by_cloid(self.address, _cloid(cloid))
        if answer.get("status") != "order":
            return Found("never_placed")
        order = answer["order"]
        size = order["order"].get("sz")
        found = Found(
            status_from_exchange(str(order["status"])),
            int(order["order"]["oid"]),
            None if size is None else float(size),
        )
        if stream is not None and found.oid is not None:
            stream.remember(cloid, found.status, found.oid)  # its changes come on the stream
        return found

    # --- writes -------------------------------------------------------------------------------

    def entries_blocked(self) -> str | None:
        for guard in (self.breaker, self.protect_breaker):
            snap = guard.snapshot()
            if snap.latched:
                return f"breaker {guard.name!r} latched ({snap.reason or 'a critical error'})"
            if snap.state == "open":
                return f"breaker {guard.name!r} open"
        if self.stream is not None and not self.stream.gate.is_open():
            return "market data stale (the WebSocket feed is recovering)"
        return None

    def enter(self, orders: Sequence[OrderRequest]) -> list[Placed]:
        """The entry and its exits in one action: ``normalTpsl`` grouping when it has exits.

        Refused (:class:`~resilient_trading.CircuitOpenError`) while either breaker is open
        or latched: the ``exchange`` breaker would refuse on its own, ``protect`` would not.
        """
        blocked = self.entries_blocked()
        if blocked is not None:
            latched = "latched" in blocked
            raise CircuitOpenError(
                f"new entry refused, the bot is degraded: {blocked}; cancels and reduce-only "
                "orders still go out",
                name=self.breaker.name,
                latched=latched,
                reason=blocked,
                opened_at=None,
                retry_at=None,
                operation="bulk_orders",
            )
        grouping = "normalTpsl" if len(orders) > 1 else "na"
        self._touched()
        answer = self.entries.bulk_orders([_wire(o) for o in orders], None, grouping)
        return _placed(orders, answer)

    def reduce(self, order: OrderRequest) -> Placed:
        if not order.reduce_only:
            raise ValueError(f"reduce() sends reduce-only orders, got an {order.kind!r}")
        self._touched()
        answer = self.reducer.bulk_orders([_wire(order)], None, "na")
        (placed,) = _placed([order], answer)
        return placed

    def cancel(self, coin: str, cloid: str) -> None:
        """Cancel by cloid; an order already gone counts as cancelled."""
        self._touched()
        self.reducer.cancel_by_cloid(coin, _cloid(cloid))

    def _touched(self) -> None:
        """A write goes out: the next look reads the account over REST."""
        if self.stream is not None:
            self.stream.touched()

    # --- observation --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the WebSocket feed (its thread and connection). Idempotent."""
        if self.stream is not None:
            self.stream.stop()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latched(self) -> bool:
        return self.breaker.latched or self.protect_breaker.latched

    def status(self) -> VenueStatus:
        def describe(guard: CircuitBreaker) -> str:
            snap = guard.snapshot()
            return str(snap.state) + (" LATCHED" if snap.latched else "")

        reconnects, stale, gap_fills = (0, 0, 0) if self.stream is None else self.stream.counters()
        return VenueStatus(
            price=self.last_price,
            retries=self.retries,
            breaker=f"{describe(self.breaker)}/{describe(self.protect_breaker)}",
            budget_used=self.limiter.status().utilisation,
            address="" if self.address_budget is None else _actions(self.address_budget.status()),
            ws_reconnects=reconnects,
            ws_stale_periods=stale,
            ws_gap_fills=gap_fills,
        )
