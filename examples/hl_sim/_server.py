"""The HTTP face of the simulator: Hyperliquid's /info and /exchange, its IP weight budget, its
nonce and signature rules, and faults injected at the HTTP layer (real resets, real stalls)."""

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

from examples.hl_sim._engine import COINS, Engine

__all__ = ["FaultConfig", "Simulator"]

FAULT_KINDS = ("reset", "stall", "http_502", "http_503", "malformed", "lost_response")
CHEAP_INFO = {
    "l2Book",
    "allMids",
    "clearinghouseState",
    "orderStatus",
    "spotClearinghouseState",
    "exchangeStatus",
}
PER_20 = {"userFills", "userFillsByTime", "historicalOrders", "fundingHistory", "userFunding"}


@dataclass
class FaultConfig:
    """Fault rates (each a probability per request, 0 by default) and the stall length."""

    reset: float = 0.0
    stall: float = 0.0
    http_502: float = 0.0
    http_503: float = 0.0
    malformed: float = 0.0
    lost_response: float = 0.0  # /exchange only: applied, then the connection is reset
    stall_seconds: float = 3.0
    _forced: collections.deque[str] = field(default_factory=collections.deque, repr=False)

    @classmethod
    def uniform(cls, rate: float, **kwargs: Any) -> FaultConfig:
        """Every fault kind at ``rate`` / 6 (a total of about ``rate`` per request)."""
        share = rate / len(FAULT_KINDS)
        config = cls(**kwargs)
        for kind in FAULT_KINDS:
            setattr(config, kind, share)
        return config

    def force(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` eligible requests suffer ``kind`` (for deterministic tests)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        self._forced.extend([kind] * count)


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
    ) -> None:
        self.faults = faults or FaultConfig()
        self.engine = Engine(
            seed=seed, speed=speed, clock=clock, accounts=accounts, auto_fund=auto_fund
        )
        self.budget = _Budget(budget, window, clock)
        self.clock = clock
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()
        self.counters: dict[str, Any] = {
            "requests": 0,
            "weight": 0,
            "http_429": 0,
            "faults": dict.fromkeys(FAULT_KINDS, 0),
            "bad_signatures": 0,
            "bad_nonces": 0,
        }
        self._stop = threading.Event()
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
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> dict[str, Any]:
        """All counters: requests, weight, 429s, faults by kind, orders, duplicate cloids."""
        with self._lock, self.engine.lock:
            out: dict[str, Any] = json.loads(json.dumps(self.counters))
            out.update(self.engine.counters)
            out["faults_injected"] = sum(out["faults"].values())
            return out

    # --- request handling ---------------------------------------------------------------------

    def _pick_fault(self, path: str) -> str | None:
        with self._lock:
            eligible = [k for k in FAULT_KINDS if k != "lost_response" or path == "/exchange"]
            if self.faults._forced and self.faults._forced[0] in eligible:
                kind = self.faults._forced.popleft()
            else:
                roll = self._rng.random()
                kind = None
                for k in eligible:
                    roll -= getattr(self.faults, k)
                    if roll < 0:
                        kind = k
                        break
            if kind:
                self.counters["faults"][kind] += 1
            return kind

    def handle(self, path: str, ip: str, body: bytes) -> tuple[int, Any]:
        """Process one request; returns (HTTP status, JSON-able answer or raw bytes)."""
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 422, {
                "code": 422,
                "msg": "Failed to deserialize the JSON body into the target type",
            }
        if not isinstance(request, dict):
            return 422, {"code": 422, "msg": "Failed to deserialize the JSON body"}
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
            batch = action.get("orders") or action.get("cancels") or [None]
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
                return 422, {"code": 422, "msg": "Failed to deserialize the JSON body"}
        if kind == "clearinghouseState":
            return 200, eng.clearinghouse(eng.account(user))
        if kind in ("openOrders", "frontendOpenOrders"):
            orders = [o for o in eng.orders.values() if o.user == user and o.status == "open"]
            orders.sort(key=lambda o: -o.oid)
            return 200, [o.frontend() if kind == "frontendOpenOrders" else o.wire() for o in orders]
        if kind == "orderStatus":
            ref = req.get("oid")
            if not isinstance(ref, int | str):
                return 422, {"code": 422, "msg": "Failed to deserialize the JSON body"}
            return 200, eng.order_status(user, ref)
        if kind in ("userFills", "userFillsByTime"):
            acct = eng.account(user)
            return 200, list(reversed(acct.fills[-2000:])) if acct else []
        return 422, {"code": 422, "msg": f"Unknown info type {kind}"}

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
            return 422, {"code": 422, "msg": "Failed to deserialize the JSON body"}
        try:
            signer = recover_agent_or_user_from_l1_action(
                action, signature, req.get("vaultAddress"), nonce, req.get("expiresAfter"), False
            ).lower()
        except Exception:  # a malformed signature: the real exchange answers the same way
            with self._lock:
                self.counters["bad_signatures"] += 1
            return 200, {"status": "err", "response": "Invalid signature"}
        acct = eng.account(signer, create=True)
        if acct is None:
            with self._lock:
                self.counters["bad_signatures"] += 1
            return 200, {
                "status": "err",
                "response": f"User or API Wallet {signer} does not exist.",
            }
        now_ms = int(self.clock() * 1000)
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
        kind = action.get("type")
        if kind == "order":
            statuses = [eng.place(signer, wire) for wire in action.get("orders", [])]
            return 200, {
                "status": "ok",
                "response": {"type": "order", "data": {"statuses": statuses}},
            }
        if kind in ("cancel", "cancelByCloid"):
            statuses = []
            for item in action.get("cancels", []):
                if kind == "cancel":
                    statuses.append(eng.cancel(signer, item.get("a"), item.get("o"), None))
                else:
                    statuses.append(eng.cancel(signer, item.get("asset"), None, item.get("cloid")))
            return 200, {
                "status": "ok",
                "response": {"type": "cancel", "data": {"statuses": statuses}},
            }
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
        return 200, {"status": "err", "response": f"Unknown action type {kind}"}

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

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_counters = b"simCounters" in body or b"simFreeze" in body
                fault = None if is_counters else sim._pick_fault(self.path)
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
                if fault == "lost_response" and self.path == "/exchange":
                    return self._reset()
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                if fault == "malformed" and status == 200:
                    data = data[: max(1, len(data) // 2)]
                self._send(status, data)

        return Handler


def _num(x: float) -> str:
    from examples.hl_sim._engine import fmt

    return fmt(x)
