"""The HTTP face of the simulator: Hyperliquid's /info and /exchange, its IP weight budget, its
nonce and signature rules, and faults injected at the HTTP layer (real resets, real stalls).

Why this module is long: it has one branch per request type the SDK sends (``/info`` and
``/exchange``), kept beside the weight budget, nonce and signature rules and the fault
injection that wrap them all.
"""

from __future__ import annotations

import collections
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from resilient_trading._validate import check_int, check_number
from resilient_trading.testing._engine import COINS, GROUPINGS, Engine
from resilient_trading.testing._ws import WsHub

__all__ = ["EXTRA_FAULT_KINDS", "FAULT_KINDS", "FaultConfig", "Simulator"]

#: The faults :meth:`FaultConfig.uniform` spreads its rate over. ``reset``, ``stall``,
#: ``http_502`` and ``http_503`` happen before the request is processed; ``malformed`` cuts a
#: processed answer in half; ``lost_response`` (``/exchange`` only) processes the request, then
#: resets the connection.
FAULT_KINDS = ("reset", "stall", "http_502", "http_503", "malformed", "lost_response")
#: Faults only injected when asked (a rate or :meth:`FaultConfig.force`). ``/exchange`` only:
#: the request is processed, then the answer stalls until the client times out
#: (``stall_after``) or becomes a 502 (``http_502_after``). ``orderStatus`` only: a lagging
#: read that answers ``unknownOid`` whatever the exchange knows (``stale_status``).
EXTRA_FAULT_KINDS = ("stall_after", "http_502_after", "stale_status")
_AFTER = frozenset({"lost_response", "stall_after", "http_502_after"})
#: ``/info`` weights, written from Hyperliquid's docs apart from the preset's table
#: (``presets/hyperliquid/_weights.py``) on purpose: the simulator is what the preset's
#: weights are tested against, so it must not read them.
CHEAP_INFO = {
    "l2Book",
    "allMids",
    "clearinghouseState",
    "orderStatus",
    "spotClearinghouseState",
    "exchangeStatus",
}
PER_20 = {"userFills", "userFillsByTime", "historicalOrders", "fundingHistory", "userFunding"}
#: Every 422 the exchange sends: ``text/plain``, this body (the API's OpenAPI description of
#: every endpoint, e.g. nktkas.gitbook.io/hyperliquid-api, "422 Failed to deserialize the JSON
#: body into the target type, text/plain").
DESERIALIZE = b"Failed to deserialize the JSON body into the target type"
#: Hyperliquid refuses a cancel batch over this many (the refusal text is recorded in
#: issue #14: ``Signed action over weight limit of 200.``).
MAX_CANCEL_BATCH = 200


@dataclass
class FaultConfig:
    """Fault rates (each a probability per request, 0 by default) and the stall length."""

    reset: float = 0.0
    stall: float = 0.0
    http_502: float = 0.0
    http_503: float = 0.0
    malformed: float = 0.0
    lost_response: float = 0.0  # /exchange only: applied, then the connection is reset
    stall_after: float = 0.0  # /exchange only: applied, then stalls and resets
    http_502_after: float = 0.0  # /exchange only: applied, then answered with a 502
    stale_status: float = 0.0  # orderStatus only: answers unknownOid (a lagging read)
    stall_seconds: float = 3.0
    _forced: collections.deque[tuple[str, str | None]] = field(
        default_factory=collections.deque, repr=False
    )
    _items: collections.deque[tuple[int, str | None, str | None]] = field(
        default_factory=collections.deque, repr=False
    )

    @classmethod
    def uniform(cls, rate: float, **kwargs: Any) -> FaultConfig:
        """Every fault kind at ``rate`` / 6 (a total of about ``rate`` per request)."""
        share = rate / len(FAULT_KINDS)
        config = cls(**kwargs)
        for kind in FAULT_KINDS:
            setattr(config, kind, share)
        return config

    def force(self, kind: str, count: int = 1, *, only: str | None = None) -> None:
        """Make the next ``count`` eligible requests suffer ``kind`` (for deterministic tests).

        Each request takes the first forced fault it is eligible for, in the order forced.

        ``only`` narrows which requests are eligible: a path (``"/exchange"``, ``"/info"``),
        an ``/exchange`` action type (``"order"``, ``"cancel"``, ``"cancelByCloid"``,
        ``"batchModify"``, ``"updateLeverage"``) or an ``/info`` request type
        (``"orderStatus"``, ``"allMids"``...).
        """
        if kind not in FAULT_KINDS and kind not in EXTRA_FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS + EXTRA_FAULT_KINDS}")
        self._forced.extend([(kind, only)] * count)

    def reject_item(
        self,
        index: int,
        message: str | None = None,
        *,
        count: int = 1,
        grouping: str | None = None,
    ) -> None:
        """Refuse item ``index`` of the next ``count`` ``order`` actions while their other
        items are processed (e.g. the take-profit of an entry grouped ``normalTpsl``, index 1,
        refused while the entry and the stop-loss go through).

        ``message`` is the error text the item answers (by default the exchange's documented
        ``Price must be divisible by tick size. asset=N``); ``grouping`` narrows the eligible
        actions to one grouping (``"na"``, ``"normalTpsl"``, ``"positionTpsl"``). An action
        with no item at ``index`` is not eligible.
        """
        check_int("index", index)
        check_int("count", count, minimum=1)
        if grouping is not None and grouping not in GROUPINGS:
            raise ValueError(f"grouping must be None or one of {GROUPINGS}, got {grouping!r}")
        self._items.extend([(index, message, grouping)] * count)

    def pending(self) -> int:
        """How many forced faults (``force``, ``reject_item``) have not been injected yet."""
        return len(self._forced) + len(self._items)


def info_weight(request: dict[str, Any]) -> int:
    kind = request.get("type")
    if kind in CHEAP_INFO:
        return 2
    if kind == "userRole":
        return 60
    return 20


class _Budget:
    """Hyperliquid's REST budget per IP: ``limit`` weight per sliding ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self.log: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(
            collections.deque
        )

    def spend(self, ip: str, weight: int) -> bool:
        now = self.clock()
        log = self.log[ip]
        while log and log[0][0] <= now - self.window:
            log.popleft()
        if sum(w for _, w in log) + weight > self.limit:
            return False
        log.append((now, weight))
        return True

    def charge(self, ip: str, weight: int) -> None:
        if weight:
            self.log[ip].append((self.clock(), weight))


class Simulator:
    """A Hyperliquid-compatible exchange on 127.0.0.1 for the official SDK.

    Args:
        seed: Seeds prices and fault decisions.
        speed: Simulated seconds per real second (60: a one-minute candle every second).
        faults: Fault rates (:class:`FaultConfig`).
        accounts: Address → starting USDC for known users; others are refused like the real
            exchange refuses an unknown wallet, unless ``auto_fund`` is set.
        auto_fund: Give any new signer this much USDC (the demo's throwaway keys).
        budget: IP weight budget per ``window`` seconds (Hyperliquid: 1200 per 60).
        clock: Time source (tests may pass a fake).
        port: 0 picks a free port.
        address_buffer: The address budget's initial buffer (Hyperliquid: 10,000 actions, plus
            one per USDC traded); a small one lets a test reach the cap in seconds.
        actions_per_usd: Actions the cap grows by per USDC traded (Hyperliquid: 1). Below 1 it
            compresses what volume earns, so a compressed week can spend its budget (the
            bot's small test orders would otherwise earn far more than they spend).
        schedule_cancel_volume: Lifetime volume (USDC) an address needs before
            ``scheduleCancel`` is accepted (Hyperliquid: 1,000,000; 0 accepts it at once).
        max_open_orders: Open orders per address (Hyperliquid: 1000).
        order_retention: Orders per address ``orderStatus`` remembers (Hyperliquid: ~2000).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        speed: float = 1.0,
        faults: FaultConfig | None = None,
        accounts: dict[str, float] | None = None,
        auto_fund: float | None = None,
        budget: int = 1200,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
        port: int = 0,
        address_buffer: int = 10_000,
        actions_per_usd: float = 1.0,
        schedule_cancel_volume: float = 1_000_000.0,
        max_open_orders: int = 1000,
        order_retention: int = 2000,
    ) -> None:
        self.faults = faults or FaultConfig()
        self.engine = Engine(
            seed=seed,
            speed=speed,
            clock=clock,
            accounts=accounts,
            auto_fund=auto_fund,
            address_buffer=address_buffer,
            actions_per_usd=check_number("actions_per_usd", actions_per_usd, positive=False),
            max_open_orders=max_open_orders,
            order_retention=order_retention,
        )
        self.engine.schedule_volume = schedule_cancel_volume
        self.budget = _Budget(budget, window, clock)
        self.clock = clock
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()
        self.counters: dict[str, Any] = {
            "requests": 0,
            "weight": 0,
            "http_429": 0,
            "faults": dict.fromkeys(FAULT_KINDS + EXTRA_FAULT_KINDS, 0),
            "bad_signatures": 0,
            "bad_nonces": 0,
            "item_errors": 0,
        }
        self._stop = threading.Event()
        #: The WebSocket face at ``/ws`` (same port) and its fault controls (testing/_ws.py).
        self.ws = WsHub(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="hl-sim"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.ws.close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def credit_volume(self, address: str, usd: float) -> None:
        """Add ``usd`` of traded volume to ``address`` (its address budget and its right to
        ``scheduleCancel`` grow with it), as if it had traded."""
        with self.engine.lock:
            acct = self.engine.account(address, create=True)
            if acct is None:
                raise ValueError(f"unknown address {address} (pass accounts= or auto_fund=)")
            acct.cum_vlm += usd

    def snapshot(self) -> dict[str, Any]:
        """All counters: requests, weight, 429s, faults by kind, orders, duplicate cloids."""
        with self._lock, self.engine.lock:
            out: dict[str, Any] = json.loads(json.dumps(self.counters))
            out.update(self.engine.counters)
            out["faults_injected"] = sum(out["faults"].values())
            return out

    # --- request handling ---------------------------------------------------------------------

    def _pick_fault(self, path: str, body: bytes = b"") -> str | None:
        with self._lock:
            kinds = FAULT_KINDS + EXTRA_FAULT_KINDS
            request_type = _request_type(body)
            eligible = [k for k in kinds if k not in _AFTER or path == "/exchange"]
            if request_type != "orderStatus":
                eligible = [k for k in eligible if k != "stale_status"]
            kind: str | None = None
            for position, (forced, only) in enumerate(self.faults._forced):
                if forced in eligible and (only is None or only in (path, request_type)):
                    kind = forced
                    del self.faults._forced[position]
                    break
            if kind is None:
                roll = self._rng.random()
                for k in eligible:
                    roll -= getattr(self.faults, k)
                    if roll < 0:
                        kind = k
                        break
            if kind:
                self.counters["faults"][kind] = self.counters["faults"].get(kind, 0) + 1
            return kind

    def _item_rejects(self, wires: list[Any], grouping: str) -> dict[int, str]:
        """The one-item fault (:meth:`FaultConfig.reject_item`) for this ``order`` action:
        item index → the error text it answers instead of being placed."""
        with self._lock:
            for position, (index, message, only) in enumerate(self.faults._items):
                if index < len(wires) and only in (None, grouping):
                    del self.faults._items[position]
                    self.counters["item_errors"] += 1
                    wire = wires[index]
                    asset = wire.get("a") if isinstance(wire, dict) else None
                    # From Hyperliquid's docs ("Error responses"), as the engine's texts.
                    text = message or f"Price must be divisible by tick size. asset={asset}"
                    return {index: text}
            return {}

    def handle(self, path: str, ip: str, body: bytes) -> tuple[int, Any]:
        """Process one request; returns (HTTP status, JSON-able answer or raw bytes)."""
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 422, DESERIALIZE
        if not isinstance(request, dict):
            return 422, DESERIALIZE
        if path == "/info" and request.get("type") == "simCounters":
            return 200, self.snapshot()
        if path == "/info" and request.get("type") == "simFreeze":
            with self.engine.lock:
                self.engine.freeze()
            return 200, {"frozen": True}
        if path == "/info":
            weight = info_weight(request)
        elif path == "/exchange":
            action = request.get("action") or {}
            batch = (
                action.get("orders") or action.get("cancels") or action.get("modifies") or [None]
            )
            weight = 1 + len(batch) // 40
        else:
            return 404, {"code": 404, "msg": "Not Found"}
        with self._lock:
            self.counters["requests"] += 1
            if not self.budget.spend(ip, weight):
                self.counters["http_429"] += 1
                return 429, None
            self.counters["weight"] += weight
        with self.engine.lock:
            self.engine.sweep()
            if path == "/info":
                status, answer = self._info(request)
                extra = (
                    len(answer) // 60
                    if request.get("type") == "candleSnapshot" and isinstance(answer, list)
                    else 0
                )
                if request.get("type") in PER_20 and isinstance(answer, list):
                    extra = len(answer) // 20
                if extra:
                    with self._lock:
                        self.budget.charge(ip, extra)
                        self.counters["weight"] += extra
                return status, answer
            return self._exchange(request)

    def _info(self, req: dict[str, Any]) -> tuple[int, Any]:
        eng = self.engine
        kind = req.get("type")
        user = str(req.get("user", "")).lower()
        if kind == "meta":
            return 200, {
                "universe": [
                    {"name": c.name, "szDecimals": c.sz_decimals, "maxLeverage": c.max_leverage}
                    for c in COINS
                ]
            }
        if kind == "spotMeta":
            return 200, {"universe": [], "tokens": []}
        if kind == "allMids":
            return 200, {c.name: _num(eng.mid(c.name)) for c in COINS}
        if kind == "l2Book":
            coin = req.get("coin")
            if coin not in eng.coins:
                return 500, None
            mid = eng.mid(coin)
            levels = [
                [{"px": _num(mid * (1 - 0.0001 * i)), "sz": "1.0", "n": 1} for i in range(1, 6)],
                [{"px": _num(mid * (1 + 0.0001 * i)), "sz": "1.0", "n": 1} for i in range(1, 6)],
            ]
            return 200, {"coin": coin, "time": eng.sim_ms(), "levels": levels}
        if kind == "candleSnapshot":
            inner = req.get("req") or {}
            coin = inner.get("coin")
            if coin not in eng.coins:
                return 500, None
            try:
                return 200, eng.candles(
                    coin, str(inner.get("interval")), int(inner["startTime"]), int(inner["endTime"])
                )
            except (KeyError, ValueError, TypeError):
                return 422, DESERIALIZE
        if kind == "clearinghouseState":
            return 200, eng.clearinghouse(eng.account(user))
        if kind in ("openOrders", "frontendOpenOrders"):
            orders = [o for o in eng.orders.values() if o.user == user and o.status == "open"]
            orders.sort(key=lambda o: -o.oid)
            if kind == "frontendOpenOrders":  # an entry lists its children waiting for it
                return 200, [o.frontend(eng.waiting_children(o)) for o in orders]
            return 200, [o.wire() for o in orders]
        if kind == "orderStatus":
            ref = req.get("oid")
            if not isinstance(ref, int | str):
                return 422, DESERIALIZE
            return 200, eng.order_status(user, ref)
        if kind == "userRateLimit":
            return 200, eng.rate_limit(eng.account(user))
        if kind in ("userFills", "userFillsByTime"):
            acct = eng.account(user)
            return 200, list(reversed(acct.fills[-2000:])) if acct else []
        return 422, DESERIALIZE

    def _exchange(self, req: dict[str, Any]) -> tuple[int, Any]:
        from hyperliquid.utils.signing import recover_agent_or_user_from_l1_action

        eng = self.engine
        action = req.get("action")
        nonce = req.get("nonce")
        signature = req.get("signature")
        if (
            not isinstance(action, dict)
            or not isinstance(nonce, int)
            or not isinstance(signature, dict)
        ):
            return 422, DESERIALIZE
        kind = action.get("type")
        if kind not in _ACTIONS:
            return 422, DESERIALIZE  # the exchange parses actions into a closed set of types
        if kind == "order" and (
            not isinstance(action.get("orders"), list)
            or action.get("grouping", "na") not in GROUPINGS
        ):
            return 422, DESERIALIZE  # ... and a grouping into its enum
        try:
            signer = recover_agent_or_user_from_l1_action(
                action, signature, req.get("vaultAddress"), nonce, req.get("expiresAfter"), False
            ).lower()
        except Exception:  # a malformed signature (text unverified: see simulator.md)
            with self._lock:
                self.counters["bad_signatures"] += 1
            return 200, {"status": "err", "response": "Invalid signature"}
        acct = eng.account(signer, create=True)
        if acct is None:
            with self._lock:
                self.counters["bad_signatures"] += 1
            return 200, {  # recorded from the exchange (sonirico/go-hyperliquid#76)
                "status": "err",
                "response": f"User or API Wallet {signer} does not exist.",
            }
        now_ms = int(self.clock() * 1000)
        expires = req.get("expiresAfter")
        if isinstance(expires, int) and expires < now_ms:
            # Unverified text (docs/howto/simulator.md lists it); the rule is the docs':
            # an action signed with expiresAfter is rejected once that time has passed.
            return 200, {
                "status": "err",
                "response": f"Action already expired: expiresAfter {expires} < now {now_ms}.",
            }
        # The nonce texts below are unverified (simulator.md); the rules are the docs' (unique
        # per signer, within (now - 2 days, now + 1 day), above the smallest of the last 100).
        if nonce in acct.nonces:
            with self._lock:
                self.counters["bad_nonces"] += 1
            return 200, {"status": "err", "response": f"Invalid nonce: duplicate nonce {nonce}"}
        if not now_ms - 2 * 86_400_000 < nonce < now_ms + 86_400_000:
            with self._lock:
                self.counters["bad_nonces"] += 1
            return 200, {
                "status": "err",
                "response": f"Invalid nonce: nonce {nonce} is outside the accepted range",
            }
        if len(acct.nonces) >= 100:
            smallest = min(acct.nonces)
            if nonce < smallest:
                return 200, {
                    "status": "err",
                    "response": f"Invalid nonce: nonce {nonce} is too small",
                }
            acct.nonces.discard(smallest)
        acct.nonces.add(nonce)
        batch = action.get("orders") or action.get("cancels") or action.get("modifies")
        n = len(batch) if isinstance(batch, list) and batch else 1
        is_cancel = kind in ("cancel", "cancelByCloid")
        if is_cancel and n > MAX_CANCEL_BATCH:
            return 200, {"status": "err", "response": "Signed action over weight limit of 200."}
        refusal = eng.charge_address(acct, n, cancel=is_cancel)
        if refusal is not None:
            return 200, {"status": "err", "response": refusal}
        if kind == "scheduleCancel":
            problem = eng.schedule_cancel(acct, action.get("time"))
            if problem is not None:
                return 200, {"status": "err", "response": problem}
            return 200, {"status": "ok", "response": {"type": "default"}}
        if kind == "order":
            wires = action["orders"]
            grouping = action.get("grouping", "na")
            rejects = self._item_rejects(wires, grouping)
            return 200, _statuses("order", eng.place_action(signer, wires, grouping, rejects))
        if kind in ("cancel", "cancelByCloid"):
            statuses = []
            for item in action.get("cancels", []):
                if kind == "cancel":
                    statuses.append(eng.cancel(signer, item.get("a"), item.get("o"), None))
                else:
                    statuses.append(eng.cancel(signer, item.get("asset"), None, item.get("cloid")))
            return 200, _statuses("cancel", statuses)
        if kind == "batchModify":
            statuses = [
                eng.modify(signer, item.get("oid"), item.get("order") or {})
                if isinstance(item, dict)
                else {"error": "Invalid modify"}
                for item in action.get("modifies", [])
            ]
            return 200, _statuses("order", statuses)
        if kind == "setReferrer":
            return 200, {"status": "ok", "response": {"type": "default"}}
        if kind == "updateLeverage":
            asset = action.get("asset")
            lev = action.get("leverage")
            if (
                not isinstance(asset, int)
                or not 0 <= asset < len(COINS)
                or not isinstance(lev, int)
                or not 1 <= lev <= COINS[asset].max_leverage
            ):
                return 200, {"status": "err", "response": "Invalid leverage value"}
            acct.leverage[COINS[asset].name] = lev
            return 200, {"status": "ok", "response": {"type": "default"}}
        return 422, DESERIALIZE  # not reached: _ACTIONS lists only the types handled above

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _reset(self) -> None:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _send(
                self, status: int, body: bytes, content_type: str = "application/json"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if (
                    self.path.split("?")[0] == "/ws"
                    and "websocket" in str(self.headers.get("Upgrade", "")).lower()
                ):
                    return sim.ws.serve(self)
                return self._send(404, b'{"code": 404, "msg": "Not Found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_counters = b"simCounters" in body or b"simFreeze" in body
                fault = None if is_counters else sim._pick_fault(self.path, body)
                if fault == "reset":
                    return self._reset()
                if fault == "stall":
                    sim._stop.wait(sim.faults.stall_seconds)
                    return self._reset()
                if fault in ("http_502", "http_503"):
                    code = 502 if fault == "http_502" else 503
                    return self._send(
                        code, f"<html><body><h1>{code}</h1></body></html>".encode(), "text/html"
                    )
                status, answer = sim.handle(self.path, self.client_address[0], body)
                if fault == "stale_status" and status == 200:
                    answer = {"status": "unknownOid"}
                if fault == "lost_response" and self.path == "/exchange":
                    return self._reset()
                if fault == "stall_after" and self.path == "/exchange":
                    sim._stop.wait(sim.faults.stall_seconds)
                    return self._reset()
                if fault == "http_502_after" and self.path == "/exchange":
                    return self._send(502, b"<html><body><h1>502</h1></body></html>", "text/html")
                if isinstance(answer, bytes):  # the exchange's 422s are text/plain
                    return self._send(status, answer, "text/plain; charset=utf-8")
                data = json.dumps(answer).encode()
                if fault == "malformed" and status == 200:
                    data = data[: max(1, len(data) // 2)]
                self._send(status, data)

        return Handler


_ACTIONS = frozenset(
    {
        "order",
        "cancel",
        "cancelByCloid",
        "batchModify",
        "setReferrer",
        "updateLeverage",
        "scheduleCancel",
    }
)


def _statuses(answer_type: str, statuses: list[Any]) -> dict[str, Any]:
    """An accepted action's answer: one status per item."""
    return {"status": "ok", "response": {"type": answer_type, "data": {"statuses": statuses}}}


def _request_type(body: bytes) -> str | None:
    """The ``/info`` type or ``/exchange`` action type of a request body, if readable."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    action = request.get("action")
    kind = action.get("type") if isinstance(action, dict) else request.get("type")
    return kind if isinstance(kind, str) else None


def _num(x: float) -> str:
    from resilient_trading.testing._engine import fmt

    return fmt(x)
