"""The WebSocket face of the simulator: ``/ws`` on the same port as ``/info`` and ``/exchange``.

It speaks Hyperliquid's message shapes (hyperliquid.gitbook.io/hyperliquid-docs/for-developers/
api/websocket, and the SDK's ``hyperliquid/websocket_manager.py``)::

    -> {"method": "subscribe", "subscription": {"type": "allMids"}}
    <- {"channel": "subscriptionResponse", "data": {"method": "subscribe", "subscription": ...}}
    <- {"channel": "allMids", "data": {"mids": {"BTC": "60000.0", ...}}}
    -> {"method": "ping"}                       <- {"channel": "pong"}
    -> {"method": "post", "id": 7, "request": {"type": "info", "payload": {...}}}
    <- {"channel": "post", "data": {"id": 7, "response": {"type": "info", "payload": ...}}}

Channels: ``allMids``, ``l2Book``, ``trades``, ``candle`` (pushed every :attr:`WsHub.push_interval`
seconds), ``orderUpdates`` (a change of an order's status), ``userFills`` (a first message with
``isSnapshot: true``, then each new fill), ``userEvents`` (channel ``user``, ``{"fills": [...]}``).
Like the exchange, a resubscribe replays nothing but the ``userFills`` snapshot: a fill made
while a client was away reaches it only through that snapshot or ``userFillsByTime`` over REST.

Limits (Hyperliquid's *Rate limits and user limits* page): 10 connections per IP, 30 new
connections per minute per IP (a handshake over either is answered ``429``), 1000
subscriptions per IP, 2000 client messages per minute per connection, and a connection idle
for :attr:`WsHub.idle_timeout` seconds (60: no message either way) is closed.

Faults, for tests: :meth:`WsHub.drop_all` (every connection reset, no close frame),
:meth:`WsHub.freeze` (sockets stay open, nothing is sent, pongs included), :attr:`WsHub.delay`
(every server message held that long), :meth:`WsHub.outage` (connections dropped and new
handshakes refused with ``503`` while it lasts: make a fill inside it to test gap fill).

The framing is the ``websockets`` library's sans-I/O :class:`~websockets.server.ServerProtocol`,
run over the socket the HTTP server accepted, so ``/ws`` shares the HTTP API's port.

Why this module is long: a connection's whole life (admission under the per-IP limits, the
read loop, subscribe and post, the pushes and the injected faults) shares the hub's state
under one lock; the limits and faults above are each a few lines inside that one loop.
"""

from __future__ import annotations

import collections
import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

    from resilient_trading.testing._server import Simulator

__all__ = ["WsHub"]

#: Hyperliquid's WebSocket limits per IP (and per connection for messages).
MAX_CONNECTIONS = 10
MAX_NEW_PER_MINUTE = 30
MAX_SUBSCRIPTIONS = 1000
MAX_MESSAGES_PER_MINUTE = 2000
IDLE_TIMEOUT = 60.0
_TICK = 0.02


@dataclass
class _Conn:
    ip: str
    sock: socket.socket
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    fills_seen: dict[str, int] = field(default_factory=dict)  # user -> fills already pushed
    orders_seen: dict[int, str] = field(default_factory=dict)  # oid -> status pushed
    outbox: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    sent_times: collections.deque[float] = field(default_factory=collections.deque)
    killed: bool = False
    last_activity: float = 0.0
    last_push: float = 0.0


def sub_key(subscription: dict[str, Any]) -> str:
    """A subscription's identity (the SDK's ``subscription_to_identifier``, plus the user)."""
    parts = [str(subscription.get("type"))]
    for name in ("coin", "interval", "user"):
        if name in subscription:
            parts.append(str(subscription[name]).lower())
    return ":".join(parts)


class WsHub:
    """Every WebSocket connection of one :class:`~resilient_trading.testing.Simulator`.

    Attributes you may set at any time: :attr:`delay` (seconds each server message is held),
    :attr:`idle_timeout`, :attr:`push_interval` (market data cadence), :attr:`max_connections`,
    :attr:`max_new_per_minute`, :attr:`max_subscriptions`.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.delay = 0.0
        self.idle_timeout = IDLE_TIMEOUT
        self.push_interval = 0.25
        self.max_connections = MAX_CONNECTIONS
        self.max_new_per_minute = MAX_NEW_PER_MINUTE
        self.max_subscriptions = MAX_SUBSCRIPTIONS
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._handshakes: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._frozen = False
        self._refusing = False
        self._stop = threading.Event()
        self._trade_id = 1
        self.counters: dict[str, int] = {
            "ws_connections": 0,
            "ws_refused_limit": 0,
            "ws_refused_outage": 0,
            "ws_dropped": 0,
            "ws_idle_closed": 0,
            "ws_subscribes": 0,
            "ws_pings": 0,
            "ws_posts": 0,
            "ws_messages_sent": 0,
        }
        #: Monotonic times of every accepted handshake (tests check the per-minute cap).
        self.handshake_times: list[float] = []

    # --- fault controls -----------------------------------------------------------------------

    def drop_all(self) -> int:
        """Reset every open connection (no close frame, like a dead route); returns how many."""
        with self._lock:
            for conn in self._conns:
                conn.killed = True
            return len(self._conns)

    def freeze(self, frozen: bool = True) -> None:
        """Frozen: sockets stay open, the server sends nothing (no data, no pong) and ignores
        what it receives. ``freeze(False)`` thaws."""
        with self._lock:
            self._frozen = frozen

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Drop every connection and refuse new handshakes (``503``) until the block exits."""
        with self._lock:
            self._refusing = True
        self.drop_all()
        try:
            yield
        finally:
            with self._lock:
                self._refusing = False

    def active(self) -> int:
        """Open connections right now."""
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        """End every connection loop (the simulator's ``stop`` calls this)."""
        self._stop.set()

    # --- one connection -----------------------------------------------------------------------

    def _admit(self, ip: str) -> tuple[int, str] | None:
        now = time.monotonic()
        with self._lock:
            if self._refusing:
                self.counters["ws_refused_outage"] += 1
                return 503, "Service Unavailable\n"
            window = self._handshakes[ip]
            while window and window[0] <= now - 60.0:
                window.popleft()
            open_here = sum(1 for c in self._conns if c.ip == ip)
            if len(window) >= self.max_new_per_minute or open_here >= self.max_connections:
                self.counters["ws_refused_limit"] += 1
                return 429, "Too many connections\n"
            window.append(now)
            self.handshake_times.append(now)
            self.counters["ws_connections"] += 1
            return None

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        """Run one WebSocket connection on the handler's socket until it ends."""
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Request
        from websockets.protocol import State
        from websockets.server import ServerProtocol

        handler.close_connection = True
        sock: socket.socket = handler.connection
        ip = handler.client_address[0]
        head = handler.requestline + "\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items()) + "\r\n"
        proto = ServerProtocol(max_size=2**20)
        proto.receive_data(head.encode("latin-1"))
        events = proto.events_received()
        if not events or not isinstance(events[0], Request):
            return
        refusal = self._admit(ip)
        response = proto.reject(refusal[0], refusal[1]) if refusal else proto.accept(events[0])
        proto.send_response(response)
        try:
            for chunk in proto.data_to_send():
                sock.sendall(chunk)
        except OSError:
            return
        if refusal or proto.state is not State.OPEN:
            return
        conn = _Conn(ip=ip, sock=sock, last_activity=time.monotonic())
        with self._lock:
            self._conns.append(conn)
        self._enqueue(conn, "Websocket connection established.")
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([sock], [], [], _TICK)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        return  # the client went away
                    proto.receive_data(data)
                    for event in proto.events_received():
                        if not isinstance(event, Frame):
                            continue
                        if event.opcode is Opcode.TEXT and not self._frozen:
                            conn.last_activity = time.monotonic()
                            self._on_text(conn, bytes(event.data).decode("utf-8", "replace"))
                        elif event.opcode is Opcode.PING and not self._frozen:
                            conn.last_activity = time.monotonic()
                if conn.killed:
                    self._reset(sock)
                    with self._lock:
                        self.counters["ws_dropped"] += 1
                    return
                now = time.monotonic()
                if not self._frozen and conn.subs and now - conn.last_push >= self.push_interval:
                    conn.last_push = now
                    self._push(conn)
                if now - conn.last_activity > self.idle_timeout and proto.state is State.OPEN:
                    with self._lock:
                        self.counters["ws_idle_closed"] += 1
                    proto.send_close(1000, "idle")
                    for chunk in proto.data_to_send():
                        sock.sendall(chunk)
                    return
                while conn.outbox and conn.outbox[0][0] <= now:
                    _, payload = conn.outbox.popleft()
                    if not self._frozen and proto.state is State.OPEN:
                        proto.send_text(payload)
                        conn.last_activity = now
                        with self._lock:
                            self.counters["ws_messages_sent"] += 1
                for chunk in proto.data_to_send():
                    if self._frozen and proto.state is State.OPEN:
                        continue  # frozen: pongs and data are swallowed
                    if chunk:
                        sock.sendall(chunk)
                if _closed(proto):
                    return  # the client closed (its close frame is answered above)
        except OSError:
            return
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def _enqueue(self, conn: _Conn, message: Any) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        conn.outbox.append((time.monotonic() + self.delay, text.encode()))

    # --- client messages ----------------------------------------------------------------------

    def _on_text(self, conn: _Conn, text: str) -> None:
        now = time.monotonic()
        while conn.sent_times and conn.sent_times[0] <= now - 60.0:
            conn.sent_times.popleft()
        conn.sent_times.append(now)
        if len(conn.sent_times) > MAX_MESSAGES_PER_MINUTE:
            self._enqueue(conn, {"channel": "error", "data": "Too many messages"})
            return
        try:
            message = json.loads(text)
        except ValueError:
            self._enqueue(conn, {"channel": "error", "data": f"Invalid message: {text[:80]}"})
            return
        method = message.get("method") if isinstance(message, dict) else None
        if method == "ping":
            with self._lock:
                self.counters["ws_pings"] += 1
            self._enqueue(conn, {"channel": "pong"})
        elif method in ("subscribe", "unsubscribe"):
            self._on_subscribe(conn, str(method), message.get("subscription"))
        elif method == "post":
            self._on_post(conn, message)
        else:
            self._enqueue(conn, {"channel": "error", "data": f"Unknown method: {method}"})

    def _on_subscribe(self, conn: _Conn, method: str, subscription: Any) -> None:
        if not isinstance(subscription, dict) or subscription.get("type") not in _CHANNELS:
            self._enqueue(
                conn, {"channel": "error", "data": f"Invalid subscription {subscription}"}
            )
            return
        key = sub_key(subscription)
        if method == "unsubscribe":
            conn.subs.pop(key, None)
        else:
            with self._lock:
                total = sum(len(c.subs) for c in self._conns if c.ip == conn.ip)
                if key not in conn.subs and total >= self.max_subscriptions:
                    refusal = {"channel": "error", "data": "Too many subscriptions"}
                    self._enqueue(conn, refusal)
                    return
                self.counters["ws_subscribes"] += 1
            conn.subs[key] = subscription
        self._enqueue(
            conn,
            {
                "channel": "subscriptionResponse",
                "data": {"method": method, "subscription": subscription},
            },
        )
        if method == "subscribe":
            self._first(conn, subscription)

    def _on_post(self, conn: _Conn, message: dict[str, Any]) -> None:
        with self._lock:
            self.counters["ws_posts"] += 1
        request = message.get("request") or {}
        kind = request.get("type") if isinstance(request, dict) else None
        ident = message.get("id")
        body: dict[str, Any]
        if kind not in ("info", "action"):
            body = {"type": "error", "payload": f"Invalid post request type: {kind}"}
        else:
            path = "/info" if kind == "info" else "/exchange"
            payload = json.dumps(request.get("payload") or {}).encode()
            status, answer = self.sim.handle(path, conn.ip, payload)
            if status != 200 or isinstance(answer, bytes):
                text = answer.decode() if isinstance(answer, bytes) else f"HTTP {status}"
                body = {"type": "error", "payload": text}
            elif kind == "info":
                body = {"type": "info", "payload": {"type": "info", "data": answer}}
            else:
                body = {"type": "action", "payload": answer}
        self._enqueue(conn, {"channel": "post", "data": {"id": ident, "response": body}})

    # --- pushes -------------------------------------------------------------------------------

    def _first(self, conn: _Conn, subscription: dict[str, Any]) -> None:
        """What a new subscription receives at once (and the bookmarks for what follows)."""
        eng = self.sim.engine
        kind = subscription["type"]
        user = str(subscription.get("user", "")).lower()
        with eng.lock:
            acct = eng.account(user) if user else None
            fills = list(acct.fills) if acct else []
            if kind in ("userFills", "userEvents"):
                conn.fills_seen[user] = len(fills)
            if kind == "userFills":
                snapshot = {"isSnapshot": True, "user": user, "fills": fills[-2000:]}
                self._enqueue(conn, {"channel": "userFills", "data": snapshot})
            if kind == "orderUpdates":
                for order in eng.orders.values():
                    if order.user == user:
                        conn.orders_seen[order.oid] = order.status
        if kind in _MARKET:
            self._push_market(conn, subscription)

    def _push(self, conn: _Conn) -> None:
        eng = self.sim.engine
        with eng.lock:
            eng.sweep()
            for subscription in list(conn.subs.values()):
                kind = subscription["type"]
                if kind in _MARKET:
                    self._push_market(conn, subscription)
                    continue
                user = str(subscription.get("user", "")).lower()
                acct = eng.account(user)
                if kind in ("userFills", "userEvents") and acct is not None:
                    new = acct.fills[conn.fills_seen.get(user, len(acct.fills)) :]
                    if new:
                        conn.fills_seen[user] = len(acct.fills)
                        for sub in conn.subs.values():
                            if sub["type"] == "userFills" and sub.get("user", "").lower() == user:
                                data = {"user": user, "fills": new}
                                self._enqueue(conn, {"channel": "userFills", "data": data})
                            if sub["type"] == "userEvents" and sub.get("user", "").lower() == user:
                                self._enqueue(conn, {"channel": "user", "data": {"fills": new}})
                if kind == "orderUpdates":
                    changes = []
                    for order in eng.orders.values():
                        if order.user == user and conn.orders_seen.get(order.oid) != order.status:
                            conn.orders_seen[order.oid] = order.status
                            changes.append(
                                {
                                    "order": order.wire(),
                                    "status": order.status,
                                    "statusTimestamp": order.status_ts or order.timestamp,
                                }
                            )
                    if changes:
                        self._enqueue(conn, {"channel": "orderUpdates", "data": changes})

    def _push_market(self, conn: _Conn, subscription: dict[str, Any]) -> None:
        eng = self.sim.engine
        kind = subscription["type"]
        coin = subscription.get("coin")
        if kind == "allMids":
            _, mids = self.sim._info({"type": "allMids"})
            self._enqueue(conn, {"channel": "allMids", "data": {"mids": mids}})
            return
        if coin not in eng.coins:
            return
        if kind == "l2Book":
            _, book = self.sim._info({"type": "l2Book", "coin": coin})
            self._enqueue(conn, {"channel": "l2Book", "data": book})
        elif kind == "trades":
            with self._lock:
                tid, self._trade_id = self._trade_id, self._trade_id + 1
            px = self.sim._info({"type": "allMids"})[1][coin]
            trade = {
                "coin": coin,
                "side": "B" if tid % 2 else "A",
                "px": px,
                "sz": "0.1",
                "hash": f"0x{tid:064x}",
                "time": eng.sim_ms(),
                "tid": tid,
                "users": ["0x" + "0" * 40, "0x" + "1" * 40],
            }
            self._enqueue(conn, {"channel": "trades", "data": [trade]})
        elif kind == "candle":
            now_ms = eng.sim_ms()
            try:
                candles = eng.candles(coin, str(subscription.get("interval")), now_ms, now_ms)
            except ValueError:
                return
            if candles:
                self._enqueue(conn, {"channel": "candle", "data": candles[-1]})


def _closed(proto: Any) -> bool:
    from websockets.protocol import State

    return bool(proto.state is not State.OPEN)


_MARKET = frozenset({"allMids", "l2Book", "trades", "candle"})
_CHANNELS = _MARKET | {"orderUpdates", "userFills", "userEvents"}
