"""The exchange as the bot sees it: one :class:`Venue` protocol returning typed results.

:class:`~examples.hyperliquid_bot.exchange.Gateway` implements it over the official SDK (the
resilience wrapped in once, at construction); the tests implement it with a small in-process
fake, so reconcile and order placement are tested without a network as well as end to end.

Two kinds of writes, two doors:

- :meth:`Venue.enter` opens risk (an entry with its take-profit and stop-loss as one grouped
  action). It is refused while the venue is *degraded* (:meth:`Venue.entries_blocked`).
- :meth:`Venue.reduce` and :meth:`Venue.cancel` only ever reduce risk (reduce-only orders,
  cancels). They still go out while entries are blocked: a breaker that stops new entries
  must not stop the bot from protecting or closing what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from examples.hyperliquid_bot.state import OrderKind, OrderStatus, Position
from examples.hyperliquid_bot.strategies import Candle

__all__ = ["AccountView", "Found", "OrderRequest", "Placed", "RestingOrder", "Venue", "VenueStatus"]


@dataclass(frozen=True)
class OrderRequest:
    """One order to send. ``px`` is the limit price (``entry``, ``close``: IOC) or the
    trigger price (``tp``, ``sl``: market when triggered, always reduce-only)."""

    cloid: str
    coin: str
    kind: OrderKind
    is_buy: bool
    size: float
    px: float

    @property
    def reduce_only(self) -> bool:
        return self.kind != "entry"


@dataclass(frozen=True)
class Placed:
    """What became of one sent order. ``pending`` means the outcome is not known yet
    (look it up by cloid before anything else); ``error`` says why a refused one was refused."""

    cloid: str
    status: OrderStatus
    oid: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Found:
    """What the exchange knows of one cloid (``never_placed`` when nothing). ``size`` is what
    is left of it on the exchange, when the answer says (a grouped stop shrinks with its
    position: the size the bot asked for is not the size that protects)."""

    status: OrderStatus
    oid: int | None = None
    size: float | None = None


@dataclass(frozen=True)
class RestingOrder:
    """One order on the book (or waiting for its trigger)."""

    coin: str
    oid: int
    cloid: str | None
    is_buy: bool
    size: float
    reduce_only: bool
    #: A stop-loss trigger (``Stop Market``/``Stop Limit``): what protects a position.
    is_stop: bool

    def protects(self, position: Position, coin: str) -> bool:
        """This order is a working stop closing (all of) ``position``."""
        return (
            self.coin == coin
            and self.is_stop
            and self.reduce_only
            and self.is_buy == (position.szi < 0)
            and self.size >= abs(position.szi) - 1e-12
        )


@dataclass(frozen=True)
class AccountView:
    position: Position
    equity: float
    #: Read from the exchange just now (``False``: a cached view, the stream reporting no
    #: fill since). A stop shrinks only with its position: its size is looked up again when
    #: the view is fresh (after a fill, a write of the bot's, a resync, a gap).
    fresh: bool = True


@dataclass(frozen=True)
class VenueStatus:
    """For the status line."""

    price: float | None
    retries: int
    breaker: str
    budget_used: float
    #: The address's action budget (``120/10000 runway=5d3h``), when there is one.
    address: str = ""
    #: The WebSocket feed, since the start: reconnections, stale periods, fills recovered
    #: over REST after a gap.
    ws_reconnects: int = 0
    ws_stale_periods: int = 0
    ws_gap_fills: int = 0


class Venue(Protocol):
    """What the bot needs from an exchange."""

    def account(self, coin: str) -> AccountView:
        """The position on ``coin`` (its stop unknown: the exchange does not know it) and
        the account's equity."""
        ...

    def open_orders(self) -> list[RestingOrder]: ...

    def order_status(self, cloid: str, *, fresh: bool = False) -> Found:
        """What the exchange knows of ``cloid``; ``fresh``: ask the exchange itself, not a
        cache (a stream), and say the order's size (a stop, whenever the account is fresh)."""
        ...

    def mid(self, coin: str) -> float: ...

    def sz_decimals(self, coin: str) -> int: ...

    def candles(self, coin: str, interval: str, lookback: int) -> list[Candle]:
        """The last ``lookback`` candles, oldest first (the last one still forming)."""
        ...

    def entries_blocked(self) -> str | None:
        """Why new entries are refused now (a breaker open or latched), or ``None``."""
        ...

    def enter(self, orders: Sequence[OrderRequest]) -> list[Placed]:
        """Send an entry and its exits as one grouped action; one :class:`Placed` per order.
        Raises :class:`~resilient_trading.CircuitOpenError` while entries are blocked."""
        ...

    def reduce(self, order: OrderRequest) -> Placed:
        """Send one reduce-only order (a stop, a take-profit, a close), even while entries
        are blocked."""
        ...

    def cancel(self, coin: str, cloid: str) -> None:
        """Cancel by cloid (an order already gone counts as cancelled), even while entries
        are blocked."""
        ...

    def status(self) -> VenueStatus: ...
