"""The exchange itself: prices, accounts, orders, fills, margin and Hyperliquid's rules.

Everything here is deterministic under a seed: prices are a seeded random walk indexed by
simulated minute, so the same seed and the same requests give the same prices and fills.

Why this module is long: matching, margin, the ledger and the address budget read and change
each other's state under one lock (a fill moves a position, the margin, the fees and the
budget at once), and a reader checks them against Hyperliquid's rules side by side.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["COINS", "CoinSpec", "Engine"]

TAKER_FEE = 0.00035
MIN_NOTIONAL = 10.0
DAY_MS = 86_400_000
#: Hyperliquid's address budget ("Rate limits and user limits", hyperliquid-docs gitbook):
#: 10,000 requests to start, one more per USDC traded; cancels may go on to
#: ``min(cap + 100000, 2 * cap)``; over the cap, one request per 10 s.
ADDRESS_BUFFER = 10_000
CANCEL_HEADROOM = 100_000
THROTTLED_EVERY_MS = 10_000
#: ``scheduleCancel``: at least 5 s ahead, at most 10 triggers per UTC day, and refused below
#: $1,000,000 of lifetime volume (the SDK's ``Exchange.schedule_cancel`` docstring; the
#: volume rule from the refusal text recorded in issue #14).
SCHEDULE_MIN_AHEAD_MS = 5_000
SCHEDULE_TRIGGERS_PER_DAY = 10
SCHEDULE_VOLUME = 1_000_000.0
#: Open orders per address (1000, more with volume: docs, "Rate limits and user limits").
MAX_OPEN_ORDERS = 1000
#: How many orders ``orderStatus`` remembers per address (about 2000 on the exchange).
ORDER_RETENTION = 2000
#: ``bulk_orders`` groupings (the SDK's ``Grouping``). ``normalTpsl``: the first order is the
#: entry, the others its take-profit/stop-loss children, which wait for the entry to fill
#: (status ``waitingForFill``), then go live sized to what filled (the action answers
#: ``"waitingForTrigger"`` for a child whose entry filled at once: the answer recorded in
#: nktkas/hyperliquid#96). ``positionTpsl``: take-profit/stop-loss attached to the position
#: (a size of 0: the whole position, whatever it is when the trigger fires).
GROUPINGS = ("na", "normalTpsl", "positionTpsl")
WAITING = "waitingForFill"
TRIGGER_WAIT = "waitingForTrigger"
#: The statuses of an order that may still trade.
LIVE = frozenset({"open", WAITING})


@dataclass(frozen=True)
class CoinSpec:
    name: str
    sz_decimals: int
    max_leverage: int
    start_price: float
    volatility: float  # per simulated minute


COINS = (
    CoinSpec("BTC", 5, 40, 60_000.0, 0.0020),
    CoinSpec("ETH", 4, 25, 3_000.0, 0.0025),
    CoinSpec("SOL", 2, 20, 150.0, 0.0035),
)

INTERVAL_MINUTES = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}


def fmt(x: float) -> str:
    """Numbers as Hyperliquid sends them: decimal strings without exponent."""
    text = format(Decimal(repr(float(x))).normalize(), "f")
    return "0" if text in ("-0", "") else text


class PriceSeries:
    """One coin's deterministic random walk of one-minute closes, with regimes (trends)."""

    def __init__(self, spec: CoinSpec, seed: int) -> None:
        self.spec = spec
        self._rng = random.Random(f"{seed}:{spec.name}")
        self._closes: list[float] = [spec.start_price]
        self._drift = 0.0

    def close(self, minute: int) -> float:
        """Close of simulated minute ``minute`` (0 = the start); minutes before 0 mirror."""
        index = abs(minute)
        while len(self._closes) <= index:
            if self._rng.random() < 0.03:  # a new regime: trend up, down or chop
                self._drift = self._rng.choice((-1.0, 0.0, 0.0, 1.0)) * self.spec.volatility * 0.6
            step = self._rng.gauss(self._drift, self.spec.volatility)
            self._closes.append(self._closes[-1] * math.exp(step))
        return self._closes[index]

    def wiggle(self, minute: int) -> tuple[float, float]:
        """Deterministic high/low extensions of a candle, as fractions."""
        r = random.Random(f"{self.spec.name}:{minute}")
        return r.random() * self.spec.volatility * 0.5, r.random() * self.spec.volatility * 0.5


@dataclass
class Order:
    oid: int
    user: str
    coin: str
    is_buy: bool
    sz: float
    px: float
    reduce_only: bool
    kind: str  # "limit" | "trigger"
    tif: str | None
    trigger_px: float | None
    tpsl: str | None
    cloid: str | None
    timestamp: int
    orig_sz: float
    status: str = "open"
    status_ts: int = 0
    filled_sz: float = 0.0  # how much of it has filled so far
    #: ``normalTpsl``: a child's entry (its parent's oid); a parent's take-profit/stop-loss.
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    #: ``positionTpsl``: attached to the position; ``follows``: sized to the whole position.
    position_tpsl: bool = False
    follows: bool = False

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "coin": self.coin,
            "side": "B" if self.is_buy else "A",
            "limitPx": fmt(self.px),
            "sz": fmt(self.sz),
            "oid": self.oid,
            "timestamp": self.timestamp,
            "origSz": fmt(self.orig_sz),
        }
        if self.cloid:
            out["cloid"] = self.cloid
        return out

    def frontend(self, children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out = self.wire()
        out.update(
            {
                "isTrigger": self.kind == "trigger",
                "triggerPx": fmt(self.trigger_px or 0.0),
                "triggerCondition": self._condition(),
                "reduceOnly": self.reduce_only,
                "orderType": self._order_type(),
                "tif": self.tif,
                "isPositionTpsl": self.position_tpsl,
                "children": children or [],
            }
        )
        return out

    def _condition(self) -> str:
        if self.kind != "trigger":
            return "N/A"
        above = (self.tpsl == "tp") != self.is_buy
        return f"Price {'above' if above else 'below'} {fmt(self.trigger_px or 0.0)}"

    def _order_type(self) -> str:
        if self.kind == "trigger":
            return "Take Profit Market" if self.tpsl == "tp" else "Stop Market"
        return "Limit"


@dataclass
class Position:
    szi: float = 0.0
    entry_px: float = 0.0
    realized: float = 0.0


@dataclass
class Account:
    address: str
    cash: float
    leverage: dict[str, int] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    nonces: set[int] = field(default_factory=set)
    cloids: set[str] = field(default_factory=set)
    cum_vlm: float = 0.0  # USDC traded, lifetime (the address budget grows with it)
    n_requests: int = 0  # actions counted against the address budget
    last_throttled_ms: int = -THROTTLED_EVERY_MS
    scheduled_cancel_ms: int | None = None
    triggers: dict[int, int] = field(default_factory=dict)  # UTC day -> scheduleCancel fires
    history: list[int] = field(default_factory=list)  # oids, oldest first (orderStatus memory)


class Engine:
    """The matching engine and ledger. All methods are called under :attr:`lock`."""

    def __init__(
        self,
        *,
        seed: int,
        speed: float,
        clock: Callable[[], float],
        accounts: dict[str, float] | None,
        auto_fund: float | None,
        address_buffer: int = ADDRESS_BUFFER,
        actions_per_usd: float = 1.0,
        max_open_orders: int = MAX_OPEN_ORDERS,
        order_retention: int = ORDER_RETENTION,
    ) -> None:
        self.lock = threading.RLock()
        self._clock = clock
        self.frozen_at: float | None = None
        self.speed = speed
        self.start = clock()
        self.coins = {spec.name: spec for spec in COINS}
        self.asset_of = {spec.name: i for i, spec in enumerate(COINS)}
        self.series = {spec.name: PriceSeries(spec, seed) for spec in COINS}
        self.accounts: dict[str, Account] = {
            a.lower(): Account(a.lower(), float(v)) for a, v in (accounts or {}).items()
        }
        self.auto_fund = auto_fund
        self.address_buffer = address_buffer
        self.actions_per_usd = actions_per_usd
        self.max_open_orders = max_open_orders
        self.order_retention = order_retention
        self.schedule_volume = SCHEDULE_VOLUME
        self.orders: dict[int, Order] = {}
        self.by_cloid: dict[tuple[str, str], int] = {}
        self.next_oid = 1_000_000
        self.next_tid = 1
        self.counters: dict[str, int] = {
            "orders_placed": 0,
            "fills": 0,
            "duplicate_cloids": 0,
            "rejected_orders": 0,
            "cancels": 0,
            "address_refusals": 0,
            "scheduled_cancels_fired": 0,
        }

    # --- time and prices ----------------------------------------------------------------------

    def clock(self) -> float:
        return self._clock() if self.frozen_at is None else self.frozen_at

    def freeze(self) -> None:
        """Stop the market's clock: prices, candles and triggers stand still."""
        if self.frozen_at is None:
            self.frozen_at = self._clock()

    def wall_ms(self) -> int:
        """The exchange's real time in ms (nonces, ``expiresAfter``, ``scheduleCancel``)."""
        return int(self._clock() * 1000)

    def sim_minutes(self) -> float:
        return (self.clock() - self.start) * self.speed / 60.0

    def sim_ms(self) -> int:
        return int(self.start * 1000 + self.sim_minutes() * 60_000)

    def mid(self, coin: str) -> float:
        m = self.sim_minutes()
        whole = math.floor(m)
        frac = m - whole
        series = self.series[coin]
        a, b = series.close(whole - 1), series.close(whole)
        return round_px(a + (b - a) * frac, self.coins[coin].sz_decimals)

    def candles(self, coin: str, interval: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        step = INTERVAL_MINUTES.get(interval)
        if step is None:
            raise ValueError(f"unknown interval {interval}")
        series = self.series[coin]
        origin = int(self.start * 1000)
        now_minute = math.floor(self.sim_minutes())
        first = max((start_ms - origin) // 60_000 // step * step, now_minute - 5000 * step)
        last = min((end_ms - origin) // 60_000, now_minute)
        out = []
        minute = first
        while minute <= last:
            closes = [series.close(m) for m in range(minute - 1, minute + step)]
            opens, body = closes[0], closes[1:]
            up, down = series.wiggle(minute)
            high = max(opens, *body) * (1 + up)
            low = min(opens, *body) * (1 - down)
            if minute + step - 1 > now_minute:  # the forming candle ends at the current mid
                body = [series.close(m) for m in range(minute, now_minute + 1)] or [opens]
                high, low = max(opens, *body), min(opens, *body)
            t = origin + minute * 60_000
            out.append(
                {
                    "t": t,
                    "T": t + step * 60_000 - 1,
                    "s": coin,
                    "i": interval,
                    "o": fmt(round_px(opens, 0)),
                    "c": fmt(round_px(body[-1], 0)),
                    "h": fmt(round_px(high, 0)),
                    "l": fmt(round_px(low, 0)),
                    "v": fmt(round(abs(series.wiggle(minute + 7)[0]) * 1e5, 3)),
                    "n": 10 + minute % 50,
                }
            )
            minute += step
        return out

    # --- accounts -----------------------------------------------------------------------------

    def account(self, address: str, *, create: bool = False) -> Account | None:
        address = address.lower()
        acct = self.accounts.get(address)
        if acct is None and create and self.auto_fund is not None:
            acct = self.accounts[address] = Account(address, self.auto_fund)
        return acct

    def leverage(self, acct: Account, coin: str) -> int:
        return acct.leverage.get(coin, min(20, self.coins[coin].max_leverage))

    def unrealized(self, acct: Account) -> float:
        return sum((self.mid(c) - p.entry_px) * p.szi for c, p in acct.positions.items() if p.szi)

    def margin_used(self, acct: Account) -> float:
        used = sum(
            abs(p.szi) * self.mid(c) / self.leverage(acct, c)
            for c, p in acct.positions.items()
            if p.szi
        )
        for order in self.orders.values():
            if (
                order.user == acct.address
                and order.status == "open"
                and order.kind == "limit"
                and not order.reduce_only
            ):
                used += order.sz * order.px / self.leverage(acct, order.coin)
        return used

    def account_value(self, acct: Account) -> float:
        return acct.cash + self.unrealized(acct)

    def clearinghouse(self, acct: Account | None) -> dict[str, Any]:
        positions = []
        total_ntl = 0.0
        value = 0.0
        used = 0.0
        if acct is not None:
            value = self.account_value(acct)
            used = self.margin_used(acct)
            for coin, pos in sorted(acct.positions.items()):
                if not pos.szi:
                    continue
                mark = self.mid(coin)
                lev = self.leverage(acct, coin)
                ntl = abs(pos.szi) * mark
                total_ntl += ntl
                positions.append(
                    {
                        "type": "oneWay",
                        "position": {
                            "coin": coin,
                            "szi": fmt(pos.szi),
                            "entryPx": fmt(pos.entry_px),
                            "positionValue": fmt(round(ntl, 6)),
                            "unrealizedPnl": fmt(round((mark - pos.entry_px) * pos.szi, 6)),
                            "returnOnEquity": "0",
                            "liquidationPx": None,
                            "leverage": {"type": "cross", "value": lev},
                            "marginUsed": fmt(round(ntl / lev, 6)),
                            "maxLeverage": self.coins[coin].max_leverage,
                            "cumFunding": {"allTime": "0", "sinceChange": "0", "sinceOpen": "0"},
                        },
                    }
                )
        summary = {
            "accountValue": fmt(round(value, 6)),
            "totalNtlPos": fmt(round(total_ntl, 6)),
            "totalRawUsd": fmt(round(value, 6)),
            "totalMarginUsed": fmt(round(used, 6)),
        }
        return {
            "marginSummary": summary,
            "crossMarginSummary": dict(summary),
            "crossMaintenanceMarginUsed": fmt(round(used / 2, 6)),
            "withdrawable": fmt(round(max(0.0, value - used), 6)),
            "assetPositions": positions,
            "time": self.sim_ms(),
        }

    # --- matching -----------------------------------------------------------------------------

    def _fill(self, order: Order, px: float, sz: float, crossed: bool) -> dict[str, Any]:
        acct = self.accounts[order.user]
        pos = acct.positions.setdefault(order.coin, Position())
        signed = sz if order.is_buy else -sz
        start = pos.szi
        closed_pnl = 0.0
        if start and (start > 0) != (signed > 0):  # reducing (maybe flipping)
            closing = min(abs(signed), abs(start))
            closed_pnl = (px - pos.entry_px) * closing * (1 if start > 0 else -1)
            remaining = start + signed
            if abs(remaining) < 1e-12:
                pos.szi, pos.entry_px = 0.0, 0.0
            elif (remaining > 0) == (start > 0):
                pos.szi = remaining
            else:
                pos.szi, pos.entry_px = remaining, px
        else:
            total = start + signed
            pos.entry_px = (pos.entry_px * abs(start) + px * abs(signed)) / abs(total)
            pos.szi = total
        pos.szi = round(pos.szi, self.coins[order.coin].sz_decimals)
        fee = px * sz * TAKER_FEE
        acct.cash += closed_pnl - fee
        acct.cum_vlm += px * sz
        pos.realized += closed_pnl
        direction = (
            "Open " if closed_pnl == 0 and (start == 0 or (start > 0) == (signed > 0)) else "Close "
        ) + ("Long" if (signed > 0) == (closed_pnl == 0) else "Short")
        fill = {
            "coin": order.coin,
            "px": fmt(px),
            "sz": fmt(sz),
            "side": "B" if order.is_buy else "A",
            "time": self.sim_ms(),
            "startPosition": fmt(start),
            "dir": direction,
            "closedPnl": fmt(round(closed_pnl, 6)),
            "hash": f"0x{self.next_tid:064x}",
            "oid": order.oid,
            "crossed": crossed,
            "fee": fmt(round(fee, 6)),
            "tid": self.next_tid,
            "feeToken": "USDC",
        }
        if order.cloid:
            fill["cloid"] = order.cloid
        self.next_tid += 1
        acct.fills.append(fill)
        self.counters["fills"] += 1
        self._filled(order, sz)
        return fill

    def sweep(self) -> None:
        """Fire due scheduled cancels, fill resting limit orders the price crossed and fire
        triggers (called per request)."""
        now = self.wall_ms()
        for acct in self.accounts.values():
            if acct.scheduled_cancel_ms is not None and now >= acct.scheduled_cancel_ms:
                acct.scheduled_cancel_ms = None
                day = now // DAY_MS
                acct.triggers[day] = acct.triggers.get(day, 0) + 1
                self.counters["scheduled_cancels_fired"] += 1
                for order in self.orders.values():
                    if order.user == acct.address and order.status == "open":
                        self._close(order, "scheduledCancel")
                        self.counters["cancels"] += 1
        for order in list(self.orders.values()):
            if order.status != "open":
                continue
            mid = self.mid(order.coin)
            if order.kind == "limit":
                if (order.is_buy and mid <= order.px) or (not order.is_buy and mid >= order.px):
                    size = order.sz
                    if order.reduce_only:  # never flips: shrinks to the position, or cancels
                        pos = self.accounts[order.user].positions.get(order.coin, Position())
                        size = min(size, max(0.0, -pos.szi if order.is_buy else pos.szi))
                        size = round(size, self.coins[order.coin].sz_decimals)
                        if size <= 0:
                            self._close(order, "reduceOnlyCanceled")
                            continue
                    self._fill(order, order.px, size, crossed=False)
                    self._close(order, "filled")
                continue
            trig = order.trigger_px or 0.0
            fire = ((order.tpsl == "tp") == order.is_buy and mid <= trig) or (
                (order.tpsl == "tp") != order.is_buy and mid >= trig
            )
            if not fire:
                continue
            pos = self.accounts[order.user].positions.get(order.coin, Position())
            size = order.sz
            if order.reduce_only:
                reducible = -pos.szi if order.is_buy else pos.szi
                size = min(size, max(0.0, reducible))
            if size <= 0:
                self._close(order, "canceled")
                continue
            self._fill(order, mid, round(size, self.coins[order.coin].sz_decimals), crossed=True)
            self._close(order, "triggered")

    def _close(self, order: Order, status: str) -> None:
        order.status = status
        order.status_ts = self.sim_ms()
        if order.filled_sz <= 0:  # an entry closed unfilled takes its waiting children along
            for child in self._children(order):
                if child.status == WAITING:
                    child.status, child.status_ts = "canceled", order.status_ts

    # --- groups: normalTpsl and positionTpsl ----------------------------------------------------

    def _children(self, order: Order) -> list[Order]:
        return [self.orders[oid] for oid in order.children if oid in self.orders]

    def waiting_children(self, order: Order) -> list[dict[str, Any]]:
        """``frontendOpenOrders``: an entry lists its take-profit/stop-loss still waiting."""
        return [c.frontend() for c in self._children(order) if c.status == WAITING]

    def _filled(self, order: Order, sz: float) -> None:
        """After ``sz`` of ``order`` filled: its waiting children go live sized to what has
        filled; a child's fill cancels its siblings; the group's children fit the position."""
        dec = self.coins[order.coin].sz_decimals
        order.filled_sz = round(order.filled_sz + sz, dec)
        now = self.sim_ms()
        for child in self._children(order):
            if child.status not in LIVE:
                continue
            if child.status == WAITING:
                child.status, child.status_ts = "open", now
            child.sz = round(min(child.orig_sz, order.filled_sz), dec)
        parent = self.orders.get(order.parent) if order.parent is not None else None
        if parent is not None:  # one take-profit/stop-loss of the group fired: the others go
            for sibling in self._children(parent):
                if sibling is not order and sibling.status in LIVE:
                    self._close(sibling, "siblingFilledCanceled")
        self._fit(order.user, order.coin, skip=order.oid)

    def _fit(self, user: str, coin: str, *, skip: int | None = None) -> None:
        """Grouped take-profits/stop-losses never exceed the position they reduce: they shrink
        with it (a ``positionTpsl`` one for the whole position follows it), and are cancelled
        (``reduceOnlyCanceled``) when it is gone or flipped."""
        pos = self.accounts[user].positions.get(coin, Position())
        dec = self.coins[coin].sz_decimals
        for order in list(self.orders.values()):
            if (
                order.oid == skip
                or order.user != user
                or order.coin != coin
                or order.status != "open"
                or (order.parent is None and not order.position_tpsl)
            ):
                continue
            reducible = round(max(0.0, -pos.szi if order.is_buy else pos.szi), dec)
            if reducible <= 0:
                self._close(order, "reduceOnlyCanceled")
            elif order.follows:
                order.sz = reducible
            elif order.position_tpsl:
                order.sz = min(order.orig_sz, reducible)
            else:
                order.sz = min(order.sz, reducible)

    def _order_of(self, status: Any) -> Order | None:
        """The order a ``resting``/``filled`` status names (None for an error)."""
        for key in ("resting", "filled"):
            body = status.get(key) if isinstance(status, dict) else None
            if isinstance(body, dict):
                return self.orders.get(body.get("oid"))  # type: ignore[arg-type]
        return None

    def place_action(
        self,
        user: str,
        wires: list[Any],
        grouping: str,
        rejects: dict[int, str] | None = None,
    ) -> list[Any]:
        """One ``order`` action → one status per order. ``rejects``: item index → an error
        text to answer for that item instead of placing it (the one-item fault)."""
        refused = rejects or {}

        def one(index: int, wire: Any) -> Any:
            if index in refused:
                self.counters["rejected_orders"] += 1
                return {"error": refused[index]}
            if not isinstance(wire, dict):
                return {"error": "Order has invalid price or size."}
            return self.place(user, wire)

        if grouping == "normalTpsl" and wires:
            return self._place_normal_tpsl(user, wires, one)
        if grouping == "positionTpsl":
            return [self._place_position_tpsl(user, i, w, one) for i, w in enumerate(wires)]
        return [one(i, w) for i, w in enumerate(wires)]

    def _place_normal_tpsl(
        self, user: str, wires: list[Any], one: Callable[[int, Any], Any]
    ) -> list[Any]:
        statuses = [one(0, wires[0])]
        parent = self._order_of(statuses[0])
        for index, wire in enumerate(wires[1:], start=1):
            asset = wire.get("a") if isinstance(wire, dict) else None
            if parent is None:
                # Unverified text (docs/howto/simulator.md lists it): the entry was refused.
                statuses.append(
                    {"error": f"Entry of the normalTpsl group was not placed. asset={asset}"}
                )
                continue
            problem = self._child_problem(parent, wire)
            if problem is not None:
                statuses.append({"error": f"{problem} asset={asset}"})
                continue
            status = one(index, wire)
            child = self._order_of(status)
            if child is None:
                statuses.append(status)
                continue
            child.parent = parent.oid
            parent.children.append(child.oid)
            if parent.filled_sz > 0:
                dec = self.coins[child.coin].sz_decimals
                child.sz = round(min(child.orig_sz, parent.filled_sz), dec)
                statuses.append(TRIGGER_WAIT)
            else:
                child.status = WAITING
                statuses.append(WAITING)
        if parent is not None and parent.filled_sz > 0:
            self._fit(user, parent.coin)
        return statuses

    @staticmethod
    def _child_problem(parent: Order, wire: Any) -> str | None:
        """Why ``wire`` cannot be a take-profit/stop-loss of ``parent`` (unverified texts)."""
        kind = wire.get("t") if isinstance(wire, dict) else None
        trigger = kind.get("trigger") if isinstance(kind, dict) else None
        if parent.kind != "limit":
            return "The first order of a normalTpsl group must be a limit order."
        if not isinstance(trigger, dict) or not wire.get("r"):
            return "A normalTpsl child must be a reduce-only take-profit/stop-loss trigger."
        if wire.get("a") != COIN_INDEX.get(parent.coin) or bool(wire.get("b")) == parent.is_buy:
            return "A normalTpsl child must close its entry (same asset, other side)."
        return None

    def _place_position_tpsl(
        self, user: str, index: int, wire: Any, one: Callable[[int, Any], Any]
    ) -> Any:
        kind = wire.get("t") if isinstance(wire, dict) else None
        trigger = kind.get("trigger") if isinstance(kind, dict) else None
        asset = wire.get("a") if isinstance(wire, dict) else None
        if not isinstance(trigger, dict) or not wire.get("r"):
            # Unverified text (docs/howto/simulator.md lists it).
            return {
                "error": "A positionTpsl order must be a reduce-only take-profit/stop-loss "
                f"trigger. asset={asset}"
            }
        if not isinstance(asset, int) or not 0 <= asset < len(COINS):
            return {"error": f"Invalid asset: {asset}"}
        spec = COINS[asset]
        pos = self.accounts[user].positions.get(spec.name, Position())
        reducible = round(max(0.0, -pos.szi if wire.get("b") else pos.szi), spec.sz_decimals)
        if reducible <= 0:
            return {"error": f"Reduce only order would increase position. asset={asset}"}
        try:
            size = float(wire["s"])
        except (KeyError, TypeError, ValueError):
            return {"error": "Order has invalid price or size."}
        follows = size == 0
        status = one(index, {**wire, "s": fmt(reducible if follows else min(size, reducible))})
        order = self._order_of(status)
        if order is None:
            return status
        order.position_tpsl, order.follows = True, follows
        return TRIGGER_WAIT

    # --- actions ------------------------------------------------------------------------------

    # Where the per-order error texts come from (docs/howto/simulator.md lists the rest as
    # unverified): Hyperliquid's docs, "Error responses"
    # (hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/error-responses): "Price
    # must be divisible by tick size.", "Order must have minimum value of $10.", "Insufficient
    # margin to place order.", "Reduce only order would increase position.", "Post only order
    # would have immediately matched, bbo was {bbo}.", "Order could not immediately match
    # against any resting orders.". The " asset=N" suffix, the cancel and modify texts,
    # "Invalid asset", "Duplicate cloid", "Too many open orders" and the size texts are
    # unverified.

    def place(self, user: str, wire: dict[str, Any]) -> dict[str, Any]:
        """One order wire (``a``, ``b``, ``p``, ``s``, ``r``, ``t``, ``c``) → its status."""
        acct = self.accounts[user]
        asset = wire.get("a")
        if not isinstance(asset, int) or not 0 <= asset < len(COINS):
            return {"error": f"Invalid asset: {asset}"}
        spec = COINS[asset]
        coin = spec.name
        cloid = wire.get("c")
        if cloid is not None and cloid in acct.cloids:
            self.counters["duplicate_cloids"] += 1
            return {"error": f"Duplicate cloid: {cloid}"}
        try:
            px = float(wire["p"])
            sz = float(wire["s"])
        except (KeyError, TypeError, ValueError):
            return {"error": "Order has invalid price or size."}
        if not (math.isfinite(px) and math.isfinite(sz)) or sz <= 0 or px <= 0:
            return {"error": "Order has invalid size."}
        if round(sz, spec.sz_decimals) != sz:
            return {"error": "Order has invalid size."}
        kind_spec = wire.get("t", {})
        is_buy = bool(wire.get("b"))
        reduce_only = bool(wire.get("r"))
        trigger = kind_spec.get("trigger") if isinstance(kind_spec, dict) else None
        limit = kind_spec.get("limit") if isinstance(kind_spec, dict) else None
        check_px = float(trigger["triggerPx"]) if trigger else px
        if not valid_px(px, spec.sz_decimals) or not valid_px(check_px, spec.sz_decimals):
            return {"error": f"Price must be divisible by tick size. asset={asset}"}
        mid = self.mid(coin)
        pos = acct.positions.get(coin, Position())
        reducible = round(max(0.0, -pos.szi if is_buy else pos.szi), spec.sz_decimals)
        if reduce_only and not trigger:
            if reducible <= 0:
                return {"error": f"Reduce only order would increase position. asset={asset}"}
            sz = min(sz, reducible)  # the exchange shrinks it to the position: never flips
        # Only a reduce-only order closing the whole position is exempt from the minimum.
        full_close = reduce_only and reducible > 0 and sz >= reducible
        if sz * (check_px if trigger else px) < MIN_NOTIONAL and not full_close:
            return {"error": f"Order must have minimum value of ${MIN_NOTIONAL:.0f}. asset={asset}"}
        if self.open_count(user) >= self.max_open_orders:
            # Unverified text (docs/howto/simulator.md lists it).
            return {"error": f"Too many open orders (max {self.max_open_orders}). asset={asset}"}
        if not reduce_only:
            need = sz * (px if limit else check_px) / self.leverage(acct, coin)
            free = self.account_value(acct) - self.margin_used(acct)
            if need > free:
                self.counters["rejected_orders"] += 1
                return {"error": f"Insufficient margin to place order. asset={asset}"}
        order = Order(
            oid=self.next_oid,
            user=user,
            coin=coin,
            is_buy=is_buy,
            sz=sz,
            px=px,
            reduce_only=reduce_only,
            kind="trigger" if trigger else "limit",
            tif=(limit or {}).get("tif") if limit else None,
            trigger_px=float(trigger["triggerPx"]) if trigger else None,
            tpsl=trigger.get("tpsl") if trigger else None,
            cloid=cloid,
            timestamp=self.sim_ms(),
            orig_sz=sz,
            status_ts=self.sim_ms(),
        )
        marketable = (is_buy and px >= mid) or (not is_buy and px <= mid)
        if limit and order.tif == "Ioc" and not marketable:
            return {
                "error": "Order could not immediately match against any resting orders. "
                f"asset={asset}"
            }
        if limit and order.tif == "Alo" and marketable:
            return {
                "error": f"Post only order would have immediately matched, bbo was {fmt(mid)}. "
                f"asset={asset}"
            }
        self.next_oid += 1
        self.orders[order.oid] = order
        if cloid:
            acct.cloids.add(cloid)
            self.by_cloid[(user, cloid)] = order.oid
        self._remember(acct, order)
        self.counters["orders_placed"] += 1
        resting: dict[str, Any] = {"oid": order.oid}
        if cloid:
            resting["cloid"] = cloid
        if limit and marketable:
            fill_px = round_px(mid * (1.0002 if is_buy else 0.9998), spec.sz_decimals)
            fill_px = min(fill_px, px) if is_buy else max(fill_px, px)
            self._fill(order, fill_px, sz, crossed=True)
            self._close(order, "filled")
            return {"filled": {"totalSz": fmt(sz), "avgPx": fmt(fill_px), **resting}}
        return {"resting": resting}

    def open_count(self, user: str) -> int:
        return sum(1 for o in self.orders.values() if o.user == user and o.status == "open")

    def _remember(self, acct: Account, order: Order) -> None:
        """Keep about ``order_retention`` orders per address for ``orderStatus``: the oldest
        closed ones are forgotten (``unknownOid``), as the exchange forgets them."""
        acct.history.append(order.oid)
        while len(acct.history) > self.order_retention:
            oldest = self.orders.get(acct.history[0])
            if oldest is not None and oldest.status in LIVE:
                break
            acct.history.pop(0)
            if oldest is not None:
                del self.orders[oldest.oid]
                if oldest.cloid:
                    self.by_cloid.pop((acct.address, oldest.cloid), None)

    # --- the address budget and the dead man's switch -----------------------------------------

    def requests_cap(self, acct: Account) -> int:
        return self.address_buffer + int(acct.cum_vlm * self.actions_per_usd)

    def charge_address(self, acct: Account, n: int, *, cancel: bool) -> str | None:
        """Count an action of ``n`` requests; the refusal text when over the budget."""
        cap = self.requests_cap(acct)
        limit = min(cap + CANCEL_HEADROOM, 2 * cap) if cancel else cap
        now = self.wall_ms()
        if acct.n_requests + n > limit:
            if now - acct.last_throttled_ms < THROTTLED_EVERY_MS:
                self.counters["address_refusals"] += 1
                # Recorded from the exchange (issue #14); the real text goes on after the
                # volume with advice this simulator leaves out.
                return (
                    f"Too many cumulative requests sent ({acct.n_requests + n} > {limit}) "
                    f"for cumulative volume traded ${acct.cum_vlm:.2f}."
                )
            acct.last_throttled_ms = now  # over the cap: one request per 10 s goes through
        acct.n_requests += n
        return None

    def rate_limit(self, acct: Account | None) -> dict[str, Any]:
        """``userRateLimit``: ``{cumVlm, nRequestsUsed, nRequestsCap, nRequestsSurplus}``."""
        if acct is None:
            return {
                "cumVlm": "0.0",
                "nRequestsUsed": 0,
                "nRequestsCap": self.address_buffer,
                "nRequestsSurplus": 0,
            }
        return {
            "cumVlm": fmt(round(acct.cum_vlm, 6)),
            "nRequestsUsed": acct.n_requests,
            "nRequestsCap": self.requests_cap(acct),
            "nRequestsSurplus": 0,
        }

    def schedule_cancel(self, acct: Account, when: Any) -> str | None:
        """Arm (``when`` in ms) or disarm (``None``) the dead man's switch; the refusal text."""
        if acct.cum_vlm < self.schedule_volume:
            # Recorded from the exchange (issue #14).
            return (
                "Cannot set scheduled cancel time until enough volume traded. "
                f"Required: ${self.schedule_volume:.0f}. Traded: ${acct.cum_vlm:.2f}."
            )
        if when is None:
            acct.scheduled_cancel_ms = None
            return None
        now = self.wall_ms()
        if not isinstance(when, int) or when < now + SCHEDULE_MIN_AHEAD_MS:
            # Unverified text: the rule is the SDK's docstring, the words are ours.
            return "Scheduled cancel time must be at least 5 seconds in the future."
        if acct.triggers.get(now // DAY_MS, 0) >= SCHEDULE_TRIGGERS_PER_DAY:
            # Unverified text: the rule is the SDK's docstring, the words are ours.
            return "Scheduled cancel already triggered 10 times today (resets at 00:00 UTC)."
        acct.scheduled_cancel_ms = when
        return None

    def cancel(self, user: str, asset: int, oid: int | None, cloid: str | None) -> Any:
        if cloid is not None:
            oid = self.by_cloid.get((user, cloid))
        order = self.orders.get(oid) if oid is not None else None
        if (
            order is None
            or order.user != user
            or order.status not in LIVE
            or self.asset_of.get(order.coin) != asset
        ):
            return {"error": f"Order was never placed, already canceled, or filled. asset={asset}"}
        self._close(order, "canceled")
        self.counters["cancels"] += 1
        return "success"

    def modify(self, user: str, ref: Any, wire: dict[str, Any]) -> dict[str, Any]:
        """Replace the open order ``ref`` (an oid, or a cloid) by ``wire``: the old order is
        cancelled and a new one placed (a new oid; its own cloid, which may be the old one)."""
        oid = self.by_cloid.get((user, ref)) if isinstance(ref, str) else ref
        order = self.orders.get(oid) if isinstance(oid, int) else None
        if order is None or order.user != user or order.status != "open":
            return {"error": "Cannot modify canceled or filled order"}
        acct = self.accounts[user]
        kids: list[int] = []
        if order.filled_sz <= 0:  # waiting children move to the replacement
            kids, order.children = order.children, []
        self._close(order, "canceled")
        reused = order.cloid if order.cloid is not None and wire.get("c") == order.cloid else None
        if reused is not None:
            acct.cloids.discard(reused)
        status = self.place(user, wire)
        new = self._order_of(status)
        if new is None:
            order.status = "open"  # the replacement was refused: the old order stays
            order.children = order.children or kids
            if reused is not None:
                acct.cloids.add(reused)
        else:
            self.counters["modifies"] = self.counters.get("modifies", 0) + 1
            new.children = kids
            for child in self._children(new):
                child.parent = new.oid
            # A replaced take-profit/stop-loss stays in its group, or on its position.
            new.position_tpsl, new.follows = order.position_tpsl, order.follows
            group = self.orders.get(order.parent) if order.parent is not None else None
            if group is not None:
                new.parent = group.oid
                group.children = [new.oid if c == order.oid else c for c in group.children]
            if new.position_tpsl or new.parent is not None:
                self._fit(user, new.coin)
            if new.filled_sz > 0 and kids:
                self._filled(new, 0.0)  # it filled at once: its children go live
        return status

    def order_status(self, user: str, ref: int | str) -> dict[str, Any]:
        oid = self.by_cloid.get((user, ref)) if isinstance(ref, str) else ref
        order = self.orders.get(oid) if oid is not None else None
        if order is None or order.user != user:
            return {"status": "unknownOid"}
        return {
            "status": "order",
            "order": {
                "order": order.frontend(),
                "status": order.status,
                "statusTimestamp": order.status_ts,
            },
        }


COIN_INDEX = {spec.name: i for i, spec in enumerate(COINS)}


def valid_px(px: float, sz_decimals: int) -> bool:
    """Hyperliquid perp prices: at most 5 significant figures and 6 - szDecimals decimals
    (integers are always allowed)."""
    if px == int(px):
        return True
    decimals = max(0, 6 - sz_decimals)
    if round(px, decimals) != px:
        return False
    return float(f"{px:.5g}") == px


def round_px(px: float, sz_decimals: int) -> float:
    value = float(f"{px:.5g}")
    return round(value, max(0, 6 - sz_decimals))
