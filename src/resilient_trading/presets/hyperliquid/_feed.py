"""A supervised WebSocket feed for Hyperliquid: reconnect, resubscribe, staleness gate, gap fill.

One connection to ``/ws`` (the ``websockets`` library's asyncio client), kept alive:

- reconnect with exponential backoff and jitter (:func:`backoff_delay`); new connections,
  open connections and messages sent are counted on one
  :class:`~resilient_trading.backends.SharedState` (memory, a file, or Redis) so every process
  sharing it stays under Hyperliquid's per-IP WebSocket limits together: 30 new connections per
  minute, 10 open connections, 2000 messages sent per minute (each send waits for room);
- at most 1000 subscriptions per feed (the 1001st is refused); the feed sends no ``post``
  requests, so the 100-posts-in-flight limit does not apply to it;
- every subscription is sent again after a reconnect;
- ``{"method": "ping"}`` every ``ping_interval`` (the server closes a connection idle for 60 s);
  no ``pong`` within ``pong_timeout`` means the connection is dead: it is recycled;
- per subscription, a staleness watchdog (``max_silence``): silent too long, it is resubscribed;
  silent as long again, the connection is recycled;
- after a reconnect, fills missed during the gap are fetched over REST (``userFillsByTime``
  through the :class:`~hyperliquid.info.Info` you pass, so a wrapped Info charges the REST
  budget) and order updates by ``oid`` (``orderStatus``); each fill is delivered exactly once
  (de-duplicated by ``tid``), each order status change once (by ``oid`` and status).

Sync bots call :meth:`Feed.start` (the loop runs in one thread, callbacks run there) and
:meth:`Feed.stop`; async code uses ``async with Feed(...)`` and callbacks run on its loop
(a callback may be a coroutine function).

Why this module is long: one connection's life is one asyncio state machine (supervise, connect,
serve, ping and staleness watchdog, read, deliver, gap fill), and every step reads and changes the
same connection, subscription table and de-duplication sets, so it is read as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from resilient_trading._clock import SYSTEM_CLOCK, Clock, monotonic_of
from resilient_trading._errors import ResilienceError
from resilient_trading._events import AlertEvent, FeedEvent, emit, event_text, listening
from resilient_trading._validate import check_int, check_number, check_optional_number
from resilient_trading.backends import SharedState, open_state
from resilient_trading.presets.hyperliquid._feed_rules import (
    CONNECTION_TTL,
    MAX_CONNECTIONS,
    MAX_MESSAGES_PER_MINUTE,
    MAX_NEW_CONNECTIONS,
    MAX_SUBSCRIPTIONS,
    MESSAGE_WINDOW,
    NEW_CONNECTION_WINDOW,
    StaleFeedError,
    SubState,
    WatchInput,
    admit_message,
    admit_open,
    backoff_delay,
    identifier,
    message_identifier,
    refresh_open,
    release_open,
    watch,
)

__all__ = ["Feed", "FeedGate", "FeedStatus"]

log = logging.getLogger("resilient_trading.feed")

Callback = Callable[[dict[str, Any]], Awaitable[None] | None]
_SEEN_LIMIT = 20_000  # tids / order states remembered for de-duplication


@dataclass(frozen=True)
class FeedStatus:
    """One subscription's health, from :meth:`Feed.status`.

    Attributes:
        subscription: What was subscribed.
        state: ``pending`` (sent, nothing received yet), ``live``, ``stale`` (silent longer
            than ``max_silence``) or ``down`` (no connection).
        age: Seconds since its last message (``None``: none yet).
        messages: Messages delivered to it.
        reconnects: Reconnections of the feed since it started.
        resubscribes: Times the watchdog resubscribed it.
        stale_periods: Times it went stale.
        max_silence: Its silence limit (``None``: never stale).
    """

    subscription: dict[str, Any]
    state: SubState
    age: float | None
    messages: int
    reconnects: int
    resubscribes: int
    stale_periods: int
    max_silence: float | None

    @property
    def fresh(self) -> bool:
        """Live and heard from within ``max_silence`` (always, without a limit, once live)."""
        if self.state != "live":
            return False
        return self.max_silence is None or (self.age is not None and self.age <= self.max_silence)


class _Sub:
    def __init__(self, subscription: dict[str, Any], max_silence: float | None, now: float):
        self.subscription = dict(subscription)
        self.callbacks: list[Callback] = []
        self.max_silence = max_silence
        self.state: SubState = "down"
        self.since = now
        self.last_message: float | None = None
        self.messages = 0
        self.resubscribes = 0
        self.stale_periods = 0
        self.resubscribed = False
        self.stale_reported = False  # a "stale" event went out; the next message is "fresh"


class FeedGate:
    """The staleness gate: open while every subscription it watches is fresh.

    Consult it before a new entry; cancels and reduce-only closes need not ask.

    Example:
        >>> from resilient_trading.presets.hyperliquid import Feed
        >>> feed = Feed("http://127.0.0.1:1")
        >>> key = feed.subscribe({"type": "allMids"}, print, max_silence=5.0)
        >>> gate = feed.gate(key)
        >>> gate.is_open()  # nothing received yet
        False
    """

    def __init__(self, feed: Feed, keys: tuple[str, ...]) -> None:
        self._feed, self._keys = feed, keys

    def is_open(self) -> bool:
        """True when every watched subscription is fresh."""
        return self._feed.fresh(*self._keys)

    def __bool__(self) -> bool:
        return self.is_open()

    def check(self) -> None:
        """Return if open; raise :class:`StaleFeedError` naming the stale subscriptions."""
        status = self._feed.status()
        keys = self._keys or tuple(k for k, s in status.items() if s.max_silence is not None)
        stale = [k for k in keys if k not in status or not status[k].fresh]
        if stale:
            raise StaleFeedError(
                f"market data is stale for {', '.join(stale)}: make no new entries until the "
                "feed recovers (it resubscribes and reconnects by itself)",
                operation="Feed.gate",
            )


class Feed:
    """One supervised WebSocket connection to Hyperliquid (or the simulator).

    Args:
        base_url: The REST URL (``constants.MAINNET_API_URL``...); the feed connects to
            ``ws(s)://.../ws``.
        info: An SDK ``Info`` (ideally wrapped with :func:`wrap_info`, so its requests are
            charged to the REST budget) used for gap fill; ``None``: no gap fill.
        user: The address whose fills and orders are gap-filled (default: the ``user`` of a
            ``userFills``/``orderUpdates``/``userEvents`` subscription).
        state_path / redis_url / key: Where the connection and message counts are shared (see
            :func:`~resilient_trading.backends.open_state`); neither: this process only. Give
            every process on one IP the same one so they stay under the limits together.
        max_new_connections / window: The new-connection cap (Hyperliquid: 30 per 60 s per IP).
        max_connections: Open connections at once, shared (Hyperliquid: 10 per IP); a feed
            finding every slot taken waits for one.
        connection_ttl: An open connection's slot is refreshed every third of this while
            connected and frees itself this long after its holder dies (``kill -9``).
        max_messages / message_window: Messages sent (subscribes, unsubscribes, pings) per
            window, shared (Hyperliquid: 2000 per 60 s per IP); a send waits for room.
        max_subscriptions: Subscriptions of this feed (Hyperliquid: 1000 per IP); the next
            one is refused with ``ValueError``.
        ping_interval: Seconds between pings (under the server's 60 s idle close).
        pong_timeout: A ping unanswered this long marks the connection dead.
        backoff_initial / backoff_max / jitter: Reconnect delays (see :func:`backoff_delay`).
        open_timeout: Seconds a connection handshake may take.
        clock: Time source (monotonic reading for ages, ``sleep_async`` for backoff).
        seed: Seeds the jitter (``None``: random).

    The feed sends no ``post`` requests, so Hyperliquid's limit of 100 posts in flight does not
    concern it.

    Example:
        >>> from resilient_trading.presets.hyperliquid import Feed
        >>> feed = Feed("https://api.hyperliquid-testnet.xyz", ping_interval=30.0)
        >>> feed.subscribe({"type": "l2Book", "coin": "ETH"}, print, max_silence=10.0)
        'l2Book:eth'
    """

    def __init__(
        self,
        base_url: str,
        *,
        info: Any = None,
        user: str | None = None,
        state_path: str | None = None,
        redis_url: str | None = None,
        key: str = "resilient-trading:hyperliquid:ws-connections",
        max_new_connections: int = MAX_NEW_CONNECTIONS,
        window: float = NEW_CONNECTION_WINDOW,
        max_connections: int = MAX_CONNECTIONS,
        connection_ttl: float = CONNECTION_TTL,
        max_messages: int = MAX_MESSAGES_PER_MINUTE,
        message_window: float = MESSAGE_WINDOW,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        ping_interval: float = 20.0,
        pong_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        jitter: float = 0.5,
        open_timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        seed: int | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.url = "ws" + base_url.rstrip("/")[len("http") :] + "/ws"
        self._max_new = check_int("max_new_connections", max_new_connections, minimum=1)
        self._window = check_number("window", window)
        self._max_open = check_int("max_connections", max_connections, minimum=1)
        self._ttl = check_number("connection_ttl", connection_ttl)
        self._max_messages = check_int("max_messages", max_messages, minimum=1)
        self._message_window = check_number("message_window", message_window)
        self._max_subs = check_int("max_subscriptions", max_subscriptions, minimum=1)
        self._ping_interval = check_number("ping_interval", ping_interval)
        self._pong_timeout = check_number("pong_timeout", pong_timeout)
        self._backoff_initial = check_number("backoff_initial", backoff_initial)
        self._backoff_max = check_number("backoff_max", backoff_max)
        self._jitter = check_number("jitter", jitter, positive=False)
        if self._jitter > 1:
            raise ValueError(f"jitter must be within [0, 1], got {jitter!r}")
        self._open_timeout = check_number("open_timeout", open_timeout)
        self._info = info
        self._user = user.lower() if user else None
        self._clock = clock
        self._rng = random.Random(seed)
        self._shared: SharedState = open_state(
            state_path=state_path, redis_url=redis_url, key=key, clock=clock
        )
        self._subs: dict[str, _Sub] = {}
        self._lock = threading.Lock()  # guards _subs against the thread API
        self._seen_tids: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._seen_orders: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._open_oids: dict[int, dict[str, Any]] = {}
        self._last_fill_ms: int | None = None
        self.connections = 0
        self.gap_filled = 0
        self.stale_periods = 0
        self._ws: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._started_ms = int(self._clock.time() * 1000)

    # --- public API ---------------------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        """Connections opened after the first."""
        return max(0, self.connections - 1)

    def subscribe(
        self,
        subscription: dict[str, Any],
        callback: Callback,
        *,
        max_silence: float | None = None,
    ) -> str:
        """Subscribe (now if connected, else at the next connection); returns its key.

        ``max_silence``: seconds of silence after which the subscription counts as stale
        (``None``: never; right for ``orderUpdates``/``userFills``, quiet by nature).
        """
        if not isinstance(subscription, dict) or "type" not in subscription:
            raise ValueError(f"subscription must be a dict with a 'type', got {subscription!r}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        limit = check_optional_number("max_silence", max_silence)
        key = identifier(subscription)
        with self._lock:
            sub = self._subs.get(key)
            if sub is None and len(self._subs) >= self._max_subs:
                raise ValueError(
                    f"cannot subscribe to {key}: this feed already has {len(self._subs)} "
                    f"subscriptions, the most allowed (max_subscriptions={self._max_subs}; "
                    "Hyperliquid allows 1000 per IP); drop one or use a broader subscription"
                )
            if sub is None:
                sub = _Sub(subscription, limit, self._now())
                self._subs[key] = sub
            elif limit is not None:
                sub.max_silence = limit
            sub.callbacks.append(callback)
            if self._user is None and "user" in subscription:
                self._user = str(subscription["user"]).lower()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing: next connection
                self._loop.call_soon_threadsafe(self._send_subscribe_soon, key)
        return key

    def status(self) -> dict[str, FeedStatus]:
        """Every subscription's :class:`FeedStatus`, by key."""
        now = self._now()
        with self._lock:
            return {
                key: FeedStatus(
                    subscription=dict(sub.subscription),
                    state=sub.state,
                    age=None if sub.last_message is None else max(0.0, now - sub.last_message),
                    messages=sub.messages,
                    reconnects=self.reconnects,
                    resubscribes=sub.resubscribes,
                    stale_periods=sub.stale_periods,
                    max_silence=sub.max_silence,
                )
                for key, sub in self._subs.items()
            }

    def fresh(self, *keys: str) -> bool:
        """True when every named subscription (default: every one with a ``max_silence``)
        is fresh (:attr:`FeedStatus.fresh`)."""
        status = self.status()
        names = keys or tuple(k for k, s in status.items() if s.max_silence is not None)
        return all(k in status and status[k].fresh for k in names)

    def gate(self, *keys: str) -> FeedGate:
        """A :class:`FeedGate` over ``keys`` (default: every subscription with a limit)."""
        return FeedGate(self, tuple(keys))

    # --- thread API ---------------------------------------------------------------------------

    def start(self) -> Feed:
        """Run the feed on its own event loop in a daemon thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("this Feed is already started; call stop() first")
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._begin()
                ready.set()
                await self._main()

            try:
                asyncio.run(main())
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="resilient-trading-feed", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection and join the thread (idempotent)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the feed thread did not stop within {timeout} s")
        self._thread = None
        self._shared.close()

    def __enter__(self) -> Feed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- async API ----------------------------------------------------------------------------

    async def __aenter__(self) -> Feed:
        self._begin()
        self._task = asyncio.get_running_loop().create_task(self._main())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._shared.close()

    # --- the loop -----------------------------------------------------------------------------

    def _now(self) -> float:
        reading = monotonic_of(self._clock)
        return self._clock.time() if reading is None else reading

    def _begin(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()

    async def _main(self) -> None:
        assert self._stopping is not None
        task = asyncio.get_running_loop().create_task(self._supervise())
        stop_wait = asyncio.get_running_loop().create_task(self._stopping.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stop_wait):
                pending.cancel()
            for pending in (task, stop_wait):
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
            self._mark_all("down")
            self._loop = None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the feed is stopping."""
        assert self._stopping is not None
        sleeper = asyncio.ensure_future(self._clock.sleep_async(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (sleeper, stopper):
                pending.cancel()
        return self._stopping.is_set()

    async def _admit(self, token: str) -> bool:
        """Wait for a slot under the shared connection caps; True if stopping instead."""
        while True:
            wait = await asyncio.to_thread(
                self._shared.transact,
                lambda state, now: admit_open(
                    state,
                    now,
                    token,
                    limit=self._max_open,
                    ttl=self._ttl,
                    new_limit=self._max_new,
                    new_window=self._window,
                ),
            )
            if wait == 0.0:
                return False
            log.info("feed: a shared connection cap is reached, waiting %.1f s", wait)
            # a slot may be released before it expires: look again at least every ttl / 10
            if await self._sleep(min(wait, self._ttl / 10)):
                return True

    async def _hold(self, ws: Any, token: str) -> None:
        """Refresh this connection's slot every ``ttl / 3``; close the connection if it is lost."""
        while True:
            await self._clock.sleep_async(self._ttl / 3)
            try:
                held = await asyncio.to_thread(
                    self._shared.transact,
                    lambda state, now: refresh_open(
                        state, now, token, limit=self._max_open, ttl=self._ttl
                    ),
                )
            except (ResilienceError, OSError) as exc:
                log.warning("feed: cannot refresh the connection's slot (%s); closing it", exc)
                held = False
            if not held:
                log.warning("feed: the connection's shared slot expired and is taken; closing")
                ws.transport.abort()
                return

    async def _release(self, token: str) -> None:
        try:
            await asyncio.to_thread(
                self._shared.transact,
                lambda state, now: release_open(state, now, token, ttl=self._ttl),
            )
        except (ResilienceError, OSError) as exc:  # the slot expires by itself
            log.warning("feed: cannot release the connection's slot (%s); it will expire", exc)

    async def _send(self, ws: Any, message: dict[str, Any]) -> None:
        """Send ``message`` once the shared messages-per-window cap has room."""
        while True:
            wait = await asyncio.to_thread(
                self._shared.transact,
                lambda state, now: admit_message(
                    state, now, limit=self._max_messages, window=self._message_window
                ),
            )
            if wait == 0.0:
                break
            log.info("feed: the shared message cap is reached, waiting %.2f s", wait)
            await self._clock.sleep_async(wait)
        await ws.send(json.dumps(message))

    async def _supervise(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        attempt = 0
        while True:
            healthy = False
            token = uuid.uuid4().hex
            try:
                if await self._admit(token):
                    return
            except (ResilienceError, OSError) as exc:  # the shared count is unreachable
                log.warning("feed: cannot count the new connection (%s); not connecting", exc)
                ws = None
            else:
                ws = await self._connect(connect)
                if ws is None:
                    await self._release(token)
            if ws is not None:
                hold = asyncio.get_running_loop().create_task(self._hold(ws, token))
                self.connections += 1
                self._ws = ws
                if self.connections > 1 and listening():
                    emit(FeedEvent(kind="reconnected", count=self.connections - 1))
                try:
                    healthy = await self._serve(ws)
                except (OSError, TimeoutError, WebSocketException, ResilienceError) as exc:
                    log.warning("feed: connection lost: %s; reconnecting", exc)
                    if listening():
                        emit(FeedEvent(kind="disconnected", message=event_text(exc)))
                finally:
                    self._ws = None
                    self._mark_all("down")
                    ws.transport.abort()
                    hold.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await hold
                    await self._release(token)
            if healthy:
                attempt = 0
            delay = backoff_delay(
                attempt,
                initial=self._backoff_initial,
                maximum=self._backoff_max,
                jitter=self._jitter,
                rng=self._rng,
            )
            attempt += 1
            if await self._sleep(delay):
                return

    async def _connect(self, connect: Any) -> Any:
        """One handshake; the connection, or ``None`` if it failed (logged)."""
        from websockets.exceptions import WebSocketException

        try:
            return await connect(
                self.url,
                open_timeout=self._open_timeout,
                ping_interval=None,  # our own JSON ping: the server's 60 s rule wants one
                compression=None,
                proxy=None,
                max_size=2**24,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("feed: connecting to %s failed: %s", self.url, exc)
            return None

    async def _serve(self, ws: Any) -> bool:
        """Run one connection until it dies or must be recycled; True if data flowed."""
        now = self._now()
        with self._lock:
            keys = list(self._subs)
            for sub in self._subs.values():
                sub.state, sub.since, sub.resubscribed = "pending", now, False
        for key in keys:
            await self._send_subscribe(ws, key)
        gap = None
        if self.connections > 1:
            gap = asyncio.get_running_loop().create_task(self._gap_fill())
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        healthy = False
        try:
            last_ping = self._now()
            ping_sent: float | None = None
            while not reader.done():
                await asyncio.wait({reader}, timeout=self._tick())
                now = self._now()
                healthy = healthy or any(s.messages for s in self._subs.values())
                if ping_sent is not None and self._pong_at >= ping_sent:
                    ping_sent = None
                if ping_sent is not None and now - ping_sent > self._pong_timeout:
                    log.warning(
                        "feed: no pong in %.1f s; recycling the connection", now - ping_sent
                    )
                    return healthy
                if ping_sent is None and now - last_ping >= self._ping_interval:
                    last_ping = ping_sent = now
                    await self._send(ws, {"method": "ping"})
                if await self._watchdog(ws, now):
                    return healthy
            reader.result()  # raises what ended the connection
            return healthy
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if gap is not None and not gap.done():
                gap.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gap

    _pong_at = float("-inf")

    def _tick(self) -> float:
        limits = [s.max_silence for s in self._subs.values() if s.max_silence is not None]
        return max(0.01, min([self._ping_interval, self._pong_timeout, *limits]) / 5)

    async def _watchdog(self, ws: Any, now: float) -> bool:
        """Resubscribe silent subscriptions; True when the connection must be recycled."""
        for key, sub in list(self._subs.items()):
            action = watch(WatchInput(sub.state, sub.since, sub.max_silence, sub.resubscribed), now)
            if action == "ok":
                continue
            if sub.state != "stale":
                sub.stale_periods += 1
                self.stale_periods += 1
                if listening():
                    sub.stale_reported = True
                    self._emit_staleness(key, "stale", now - sub.since)
            sub.state = "stale"
            if action == "recycle":
                log.warning("feed: %s still silent after a resubscribe; recycling", key)
                return True
            log.warning("feed: %s silent for %.1f s; resubscribing", key, now - sub.since)
            sub.resubscribes += 1
            sub.resubscribed, sub.since = True, now
            await self._send(ws, {"method": "unsubscribe", "subscription": sub.subscription})
            await self._send_subscribe(ws, key)
        return False

    @staticmethod
    def _emit_staleness(key: str, kind: Literal["stale", "fresh"], seconds: float) -> None:
        if kind == "stale":
            text = f"no message for {seconds:.1f} s: resubscribing, then reconnecting"
        else:
            text = f"messages flow again after {seconds:.1f} s"
        emit(FeedEvent(kind=kind, subscription=key, seconds=seconds, message=text))
        subject = f"feed:{key}"
        if kind == "stale":
            emit(AlertEvent(subject=subject, state="stale", message=text))
        else:
            emit(AlertEvent(subject=subject, state="ok", message=text, severity="info"))

    def _send_subscribe_soon(self, key: str) -> None:
        ws = self._ws
        if ws is not None:
            with self._lock:
                sub = self._subs[key]
                if sub.state == "down":
                    sub.state, sub.since = "pending", self._now()
            asyncio.get_running_loop().create_task(self._send_subscribe_logged(ws, key))

    async def _send_subscribe_logged(self, ws: Any, key: str) -> None:
        from websockets.exceptions import WebSocketException

        try:
            await self._send_subscribe(ws, key)
        except (OSError, WebSocketException, ResilienceError) as exc:  # resent on reconnect
            log.warning(
                "feed: subscribing to %s failed (%s); it is sent again on reconnect", key, exc
            )

    async def _send_subscribe(self, ws: Any, key: str) -> None:
        subscription = self._subs[key].subscription
        await self._send(ws, {"method": "subscribe", "subscription": subscription})

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                continue  # "Websocket connection established." and other plain text
            if not isinstance(message, dict):
                continue
            channel = message.get("channel")
            if channel == "pong":
                self._pong_at = self._now()
                continue
            if channel == "subscriptionResponse":
                self._acknowledged(message.get("data"))
                continue
            if channel == "error":
                log.warning("feed: the server said: %s", message.get("data"))
                continue
            key = message_identifier(message)
            if key is None or key not in self._subs:
                continue
            await self._deliver(key, message)

    def _acknowledged(self, data: Any) -> None:
        """The server confirmed a subscribe: a quiet subscription is live from now on."""
        subscription = data.get("subscription") if isinstance(data, dict) else None
        if not isinstance(subscription, dict) or data.get("method") != "subscribe":
            return
        with self._lock:
            sub = self._subs.get(identifier(subscription))
            if sub is not None and sub.state == "pending":
                sub.state = "live"

    def _mark_all(self, state: SubState) -> None:
        with self._lock:
            for sub in self._subs.values():
                sub.state = state

    # --- delivery and dedupe ------------------------------------------------------------------

    async def _deliver(self, key: str, message: dict[str, Any], *, count: bool = True) -> None:
        sub = self._subs[key]
        if count:
            now = self._now()
            with self._lock:
                reported, sub.stale_reported = sub.stale_reported, False
                last = sub.last_message
                sub.last_message, sub.since = now, now
                sub.messages += 1
                sub.state, sub.resubscribed = "live", False
            if reported and listening():
                self._emit_staleness(key, "fresh", 0.0 if last is None else now - last)
        delivered = self._dedupe(key, message)
        if delivered is None:
            return
        for callback in list(sub.callbacks):
            try:
                result = callback(delivered)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a user callback must not kill the feed; logged with its trace
                log.exception("feed: a callback for %s raised; the feed goes on", key)

    def _dedupe(self, key: str, message: dict[str, Any]) -> dict[str, Any] | None:
        channel = message.get("channel")
        data = message.get("data")
        if channel in ("userFills", "user") and isinstance(data, dict):
            fills = [f for f in data.get("fills") or [] if self._first_fill(key, f)]
            if not fills and data.get("fills"):
                return None
            return {**message, "data": {**data, "fills": fills}}
        if channel == "orderUpdates" and isinstance(data, list):
            fresh = [u for u in data if self._first_order_state(u)]
            return {**message, "data": fresh} if fresh else None
        return message

    def _first_fill(self, key: str, fill: Any) -> bool:
        if not isinstance(fill, dict) or not isinstance(fill.get("tid"), int):
            return True
        mark = (key, int(fill["tid"]))
        if isinstance(fill.get("time"), int):
            self._last_fill_ms = max(self._last_fill_ms or 0, int(fill["time"]))
        if mark in self._seen_tids:
            return False
        self._seen_tids[mark] = None
        while len(self._seen_tids) > _SEEN_LIMIT:
            self._seen_tids.popitem(last=False)
        return True

    def _first_order_state(self, update: Any) -> bool:
        order = update.get("order") if isinstance(update, dict) else None
        if not isinstance(order, dict) or not isinstance(order.get("oid"), int):
            return True
        oid, status = int(order["oid"]), str(update.get("status"))
        if status == "open":
            self._open_oids[oid] = order
        else:
            self._open_oids.pop(oid, None)
        mark = (oid, status)
        if mark in self._seen_orders:
            return False
        self._seen_orders[mark] = None
        while len(self._seen_orders) > _SEEN_LIMIT:
            self._seen_orders.popitem(last=False)
        return True

    # --- gap fill -----------------------------------------------------------------------------

    async def _gap_fill(self) -> None:
        """After a reconnect: fills since the last one seen, and the fate of open orders."""
        info, user = self._info, self._user
        if info is None or user is None:
            return
        since = (self._last_fill_ms if self._last_fill_ms is not None else self._started_ms) - 1
        fill_keys = [k for k, s in self._subs.items() if s.subscription["type"] == "userFills"]
        fill_keys += [k for k, s in self._subs.items() if s.subscription["type"] == "userEvents"]
        if fill_keys:
            try:
                fills = await asyncio.to_thread(info.user_fills_by_time, user, since)
            except Exception as exc:
                log.warning("feed: gap fill (userFillsByTime) failed: %s", exc)
            else:
                fills = sorted(
                    (f for f in fills or [] if isinstance(f, dict) and f.get("time", 0) > since),
                    key=lambda f: (f.get("time", 0), f.get("tid", 0)),
                )
                for key in fill_keys:
                    new = [f for f in fills if (key, f.get("tid")) not in self._seen_tids]
                    if not new:
                        continue
                    self.gap_filled += len(new)
                    if listening():
                        emit(FeedEvent(kind="gap_filled", subscription=key, count=len(new)))
                    channel = "user" if key == "userEvents" else "userFills"
                    data: dict[str, Any] = {"fills": new, "gapFill": True}
                    if channel == "userFills":
                        data.update(user=user, isSnapshot=False)
                    await self._deliver(key, {"channel": channel, "data": data}, count=False)
        if "orderUpdates" in self._subs and self._open_oids:
            updates = []
            for oid in list(self._open_oids):
                try:
                    answer = await asyncio.to_thread(info.query_order_by_oid, user, oid)
                except Exception as exc:
                    log.warning("feed: gap fill (orderStatus %s) failed: %s", oid, exc)
                    continue
                found = answer.get("order") if isinstance(answer, dict) else None
                if isinstance(found, dict) and found.get("status") not in (None, "open"):
                    updates.append(
                        {
                            "order": found.get("order", self._open_oids[oid]),
                            "status": found["status"],
                            "statusTimestamp": found.get("statusTimestamp", 0),
                        }
                    )
            if updates:
                if listening():
                    emit(
                        FeedEvent(
                            kind="gap_filled", subscription="orderUpdates", count=len(updates)
                        )
                    )
                message = {"channel": "orderUpdates", "data": updates}
                await self._deliver("orderUpdates", message, count=False)
