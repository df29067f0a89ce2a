"""Market data, order updates and fills over the library's supervised WebSocket feed.

:class:`MarketStream` subscribes one :class:`~resilient_trading.presets.hyperliquid.Feed` to
what the bot reads every loop, so that the loop costs no REST weight while the feed is live:

- ``candle`` (the bot's coin and interval) and ``allMids``: the candles the strategies read
  and the mid an entry is priced at. Both have a silence limit: the feed's **gate** over them
  is closed while either is stale, and the bot makes no new entries then;
- ``orderUpdates`` and ``userFills`` for the bot's address: each order's latest status (by
  cloid), and a mark that the position changed (a fill), so the account is read again.

REST stays for what a stream cannot give: the candle history at start (``candleSnapshot``),
the account (``clearinghouseState``) after a fill, a write or at most every ``resync`` seconds,
an order the stream has not reported, and a full reconcile after every reconnect (the
*gap*): the feed itself fetches the fills missed while it was away (``userFillsByTime``) and
delivers each once; the stream then forgets what it cached, so the next loop reads the account
and every live order over REST once before trusting the stream again.

The callbacks run on the feed's thread; they only update a few dictionaries under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from examples.hyperliquid_bot.state import OrderStatus, status_from_exchange
from examples.hyperliquid_bot.strategies import Candle
from resilient_trading.presets import hyperliquid as hl

__all__ = ["MarketStream"]

_KEEP = 2_000  # candles kept (the bot reads at most 1000)


class MarketStream:
    """What the bot reads each loop, kept current by a :class:`~hl.Feed`.

    Args:
        feed: The feed (not yet started; :meth:`start` starts it).
        coin / interval / interval_ms: The bot's market.
        user: The bot's address (order updates and fills).
        max_silence: Seconds the candle and mid streams may stay silent before the gate
            closes (and the feed resubscribes, then reconnects).
        resync: Longest time the stream's account view is trusted without a REST read.
        clock: Monotonic clock (tests).
    """

    def __init__(
        self,
        feed: hl.Feed,
        *,
        coin: str,
        interval: str,
        interval_ms: int,
        user: str,
        max_silence: float,
        resync: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feed = feed
        self.coin = coin
        self.interval_ms = interval_ms
        self.resync = resync
        self._clock = clock
        self._lock = threading.Lock()
        self._mids: dict[str, float] = {}
        self._candles: dict[int, Candle] = {}
        self._seeded = False
        self._orders: dict[str, tuple[OrderStatus, int]] = {}
        self._position_changed = True
        self._epoch = -1  # the feed's connection count the caches were last trusted at
        self._account_at = float("-inf")
        self.fills = 0
        #: Fills made while the feed was away, delivered after a reconnect (by the
        #: resubscribe's snapshot or the feed's ``userFillsByTime`` gap fill), each once.
        self.recovered = 0
        candle = feed.subscribe(
            {"type": "candle", "coin": coin, "interval": interval},
            self._on_candle,
            max_silence=max_silence,
        )
        mids = feed.subscribe({"type": "allMids"}, self._on_mids, max_silence=max_silence)
        feed.subscribe({"type": "orderUpdates", "user": user}, self._on_orders)
        feed.subscribe({"type": "userFills", "user": user}, self._on_fills)
        self.gate = feed.gate(candle, mids)

    def start(self) -> MarketStream:
        self.feed.start()
        return self

    def stop(self) -> None:
        self.feed.stop()

    # --- callbacks (the feed's thread) --------------------------------------------------------

    def _on_candle(self, message: dict[str, Any]) -> None:
        raw = message.get("data")
        if not isinstance(raw, dict):
            return
        candle = Candle.from_hyperliquid(raw)
        with self._lock:
            if not self._seeded:
                return  # the history comes from REST first; a seed covers this one
            newest = max(self._candles) if self._candles else candle.t
            if candle.t > newest + self.interval_ms:
                self._seeded = False  # a candle was missed: fetch the history again
                return
            self._candles[candle.t] = candle
            while len(self._candles) > _KEEP:
                del self._candles[min(self._candles)]

    def _on_mids(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        mids = data.get("mids") if isinstance(data, dict) else None
        if isinstance(mids, dict):
            with self._lock:
                self._mids.update({str(k): float(v) for k, v in mids.items()})

    def _on_orders(self, message: dict[str, Any]) -> None:
        updates = message.get("data")
        if not isinstance(updates, list):
            return
        with self._lock:
            for update in updates:
                order = update.get("order") if isinstance(update, dict) else None
                if not isinstance(order, dict) or not order.get("cloid"):
                    continue
                status = status_from_exchange(str(update.get("status")))
                self._orders[str(order["cloid"])] = (status, int(order["oid"]))

    def _on_fills(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        fills = data.get("fills") if isinstance(data, dict) else None
        if fills and isinstance(data, dict):
            # The feed delivers each fill once (by tid): after a reconnect, what the snapshot
            # or the gap fill brings is exactly what was missed.
            catch_up = bool(data.get("isSnapshot") or data.get("gapFill"))
            with self._lock:
                self._position_changed = True
                self.fills += len(fills)
                if catch_up and self.feed.connections > 1:
                    self.recovered += len(fills)

    # --- what the gateway asks ----------------------------------------------------------------

    def live(self) -> bool:
        """The stream can be trusted now: connected, fresh, and no gap since the last look.

        After a reconnect it answers ``False`` once and forgets its caches: the caller reads
        the account and every live order over REST (the reconcile after a gap).
        """
        connections = self.feed.connections
        with self._lock:
            if connections != self._epoch:
                self._epoch = connections
                self._orders.clear()
                self._position_changed = True
                self._seeded = False
                return False
        return self.gate.is_open()

    def mid(self, coin: str) -> float | None:
        with self._lock:
            return self._mids.get(coin)

    def candles(self, lookback: int) -> list[Candle] | None:
        """The last ``lookback`` candles (the last one still forming), or ``None`` when the
        history must be fetched over REST (:meth:`seed`)."""
        with self._lock:
            if not self._seeded:
                return None
            ordered = [self._candles[t] for t in sorted(self._candles)]
        return ordered[-lookback:]

    def seed(self, candles: list[Candle]) -> None:
        """The history from ``candleSnapshot`` replaces the buffer; the stream's updates go
        on from it."""
        with self._lock:
            self._candles = {c.t: c for c in candles[-_KEEP:]}
            self._seeded = bool(candles)

    def order(self, cloid: str) -> tuple[OrderStatus, int] | None:
        """The latest status the stream reported for ``cloid`` (``None``: none yet)."""
        with self._lock:
            return self._orders.get(cloid)

    def remember(self, cloid: str, status: OrderStatus, oid: int) -> None:
        """What a REST lookup said of ``cloid``, unless the stream has already reported it
        (the stream's own report is never older than a lookup made before it arrived). An
        order resting since before the (re)subscribe is otherwise never reported until it
        changes, and would be looked up over REST on every loop."""
        with self._lock:
            self._orders.setdefault(cloid, (status, oid))

    def account_stale(self) -> bool:
        """The position may have changed (a fill) or the view is older than ``resync``."""
        with self._lock:
            return self._position_changed or self._clock() - self._account_at > self.resync

    def account_read(self) -> None:
        """The account was just read over REST."""
        with self._lock:
            self._position_changed = False
            self._account_at = self._clock()

    def touched(self) -> None:
        """The bot sent a write: read the account again next time."""
        with self._lock:
            self._position_changed = True

    def counters(self) -> tuple[int, int, int]:
        """Reconnects, stale periods and fills recovered after a gap, since the start."""
        return self.feed.reconnects, self.feed.stale_periods, self.recovered
