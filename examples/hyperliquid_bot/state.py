"""The bot's state as typed records, kept in the library's :class:`~resilient_trading.TypedStore`.

One document per bot (``state.json``)::

    BotState
      last_candle   the newest closed candle already decided on (ms)
      orders        {cloid: Order}: every order the bot placed, with its kind and status
      position      Position: size (``szi``, negative when short), entry price, its stop
      pnl           Pnl: equity at the first reconcile and now
      counters      Counters: iterations, orders placed, errors... (added once per commit)
      operator      OperatorNotes: what an operator's tool wrote (the demo's CLI process)

Records are Pydantic models validated on every read: an unknown key, a status that is not an
:data:`OrderStatus` or a negative counter is a :class:`~resilient_trading.StateCorruptedError`
naming the file, never a ``KeyError`` deep in the loop. ``Order``, ``Position``, ``Pnl`` and
``Counters`` are frozen (change one with ``model_copy(update=...)``); ``BotState`` itself is
the transaction's document, so its fields are assigned (and validated on assignment).

Files written before the typed state (``"version": 1``, raw exchange statuses) are upgraded
on read by :func:`migrate` (the store's ``schema_version``/``migrate`` hook) and written in the
new layout by the next commit.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from resilient_trading import LockedJsonStore, TypedStore

__all__ = [
    "LIVE",
    "SCHEMA_VERSION",
    "BotState",
    "Counters",
    "OperatorNotes",
    "Order",
    "OrderKind",
    "OrderStatus",
    "Pnl",
    "Position",
    "migrate",
    "open_state",
    "status_from_exchange",
]

#: The layout this code writes (the old dict layout, ``"version": 1``, is schema 0 or 1).
SCHEMA_VERSION = 2

#: ``pending``: the intent is saved, the exchange's answer not seen yet (a crash or a lost
#: answer); ``open``: resting or waiting for its trigger; ``filled``: filled or triggered;
#: ``unfilled``: an IOC that found no match, or an order the market refused as it stands;
#: ``rejected``: any other refusal; ``canceled``; ``never_placed``: after a lost answer, the
#: exchange has never heard of it.
OrderStatus = Literal[
    "pending", "open", "filled", "unfilled", "rejected", "canceled", "never_placed"
]
#: ``entry`` opens a position; ``tp``/``sl`` protect it; ``close`` is a reduce-only exit.
OrderKind = Literal["entry", "tp", "sl", "close"]
#: Statuses of an order that may still trade.
LIVE: frozenset[OrderStatus] = frozenset({"pending", "open"})
_STATUSES: frozenset[str] = frozenset(get_args(OrderStatus))


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Order(_Record):
    """One order the bot placed, keyed by its cloid in :attr:`BotState.orders`."""

    coin: str
    kind: OrderKind
    is_buy: bool
    size: float = Field(gt=0)
    #: The limit price (entries, closes) or the trigger price (take-profit, stop-loss).
    px: float = Field(gt=0)
    status: OrderStatus = "pending"
    reduce_only: bool = False
    strategy: str = ""
    oid: int | None = None
    #: When the intent was saved (ms since the epoch).
    t: int = 0

    @property
    def live(self) -> bool:
        """The order may still trade (``pending`` or ``open``)."""
        return self.status in LIVE

    def settled(self, status: OrderStatus, oid: int | None, size: float | None = None) -> Order:
        """This order with what the exchange said of it (a known oid is kept): its status, and
        the size it has left there when the exchange said so (a stop that shrank with its
        position protects only what is left of it)."""
        update: dict[str, object] = {"status": status, "oid": oid if oid is not None else self.oid}
        if size is not None and size > 0 and status == "open":
            update["size"] = size
        return self.model_copy(update=update)


class Position(_Record):
    """The position on the bot's coin: ``szi`` > 0 long, < 0 short, 0 flat."""

    szi: float = 0.0
    entry_px: float | None = None
    #: The stop the bot chose for this position (re-armed at this price if the stop is lost).
    stop_px: float | None = Field(default=None, gt=0)

    @property
    def flat(self) -> bool:
        return self.szi == 0


class Pnl(_Record):
    start_equity: float | None = None
    equity: float | None = None


class Counters(_Record):
    """Running totals. The bot adds a step's tally with ``+`` inside the step's one commit."""

    iterations: int = Field(default=0, ge=0)
    orders_placed: int = Field(default=0, ge=0)
    signals: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    transient_errors: int = Field(default=0, ge=0)
    critical_errors: int = Field(default=0, ge=0)
    breaker_rejections: int = Field(default=0, ge=0)
    restarts: int = Field(default=0, ge=0)
    #: Entries a signal asked for while the bot was degraded (a breaker open or latched).
    entries_refused: int = Field(default=0, ge=0)
    #: Stops placed by reconcile for a position found without one.
    stops_rearmed: int = Field(default=0, ge=0)
    #: The WebSocket feed: reconnections, stale periods, fills recovered after a gap.
    ws_reconnects: int = Field(default=0, ge=0)
    ws_stale_periods: int = Field(default=0, ge=0)
    ws_gap_fills: int = Field(default=0, ge=0)

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            **{name: getattr(self, name) + getattr(other, name) for name in Counters.model_fields}
        )

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in Counters.model_fields)


class OperatorNotes(_Record):
    """Written by an operator's tool (``resilient-trading state set ... operator.checks N``)."""

    checks: int = Field(default=0, ge=0)


class BotState(BaseModel):
    """The whole document; the object a transaction yields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    last_candle: int = 0
    orders: dict[str, Order] = Field(default_factory=dict)
    position: Position = Position()
    pnl: Pnl = Pnl()
    counters: Counters = Counters()
    operator: OperatorNotes = OperatorNotes()

    def live_orders(self) -> dict[str, Order]:
        """The orders that may still trade, by cloid."""
        return {cloid: order for cloid, order in self.orders.items() if order.live}


def status_from_exchange(raw: str) -> OrderStatus:
    """The bot's status for one of the exchange's order statuses (``orderStatus``)."""
    if raw in _STATUSES:
        return raw  # type: ignore[return-value]
    if raw in ("triggered",):
        return "filled"
    if raw in ("resting", "waitingForFill", "waitingForTrigger"):
        return "open"
    if raw == "iocCancelRejected":
        return "unfilled"
    if raw.endswith("Canceled") or raw == "scheduledCancel":
        return "canceled"
    return "rejected"  # "rejected", "...Rejected" and anything newer: it will not trade


_OLD_COUNTERS = frozenset(Counters.model_fields)


def migrate(data: dict[str, Any], from_version: int) -> dict[str, Any]:
    """Upgrade a document written before the typed state (the store's ``migrate`` hook).

    The old layout (``"version": 1``) kept ``side`` as ``"buy"``/``"sell"``, ``sz``, raw
    exchange statuses and open-ended counters. A document already in the new layout (the
    CLI's ``state set`` may write one back unversioned) passes through unchanged.
    """
    if "version" not in data:
        return data
    orders: dict[str, Any] = {}
    for cloid, old in (data.get("orders") or {}).items():
        orders[cloid] = {
            "coin": old.get("coin", "BTC"),
            "kind": old.get("kind", "entry"),
            "is_buy": old.get("side") == "buy",
            "size": old.get("sz"),
            "px": old.get("px"),
            "status": status_from_exchange(str(old.get("status", "pending"))),
            "reduce_only": old.get("kind") in ("tp", "sl"),
            "strategy": old.get("strategy") or "",
            "oid": old.get("oid"),
            "t": old.get("t") or 0,
        }
    position = data.get("position") or {}
    counters = data.get("counters") or {}
    new: dict[str, Any] = {
        "last_candle": data.get("last_candle", 0),
        "orders": orders,
        "position": {"szi": position.get("szi", 0.0), "entry_px": position.get("entry_px")},
        "pnl": data.get("pnl") or {},
        "counters": {k: v for k, v in counters.items() if k in _OLD_COUNTERS},
    }
    if isinstance(data.get("operator"), dict):
        new["operator"] = {"checks": data["operator"].get("checks", 0)}
    return new


def open_state(path: str | os.PathLike[str]) -> TypedStore[BotState]:
    """The bot's state file as a :class:`~resilient_trading.TypedStore` of :class:`BotState`."""
    store = LockedJsonStore(path, schema_version=SCHEMA_VERSION, migrate=migrate)
    return TypedStore(store, BotState)
