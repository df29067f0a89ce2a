"""The bot's own endpoint: ``/metrics`` for Prometheus, ``/healthz`` for a supervisor.

``--metrics-port PORT`` (or ``[metrics] port``) serves both on ``127.0.0.1`` (``[metrics]
host``) from a daemon thread; port 0 picks a free port, printed and logged at start.

- ``/metrics``: the library's fleet view of this bot's own state directory
  (:class:`~resilient_trading.FleetCollector`: budgets, breakers, address runway, halt, stores)
  read at each scrape, this process's events (:class:`~resilient_trading.EventMetrics`:
  failures, retries, limiter waits...), and the bot's own health
  (``resilient_trading_bot_*``, see :class:`MetricsServer`).
- ``/healthz``: JSON, ``200`` while the bot can trade, ``503`` with the reasons when it cannot:
  a breaker latched, the halt raised, the market-data feed silent beyond
  ``[metrics] feed_stale_seconds``, the loop not completing a step for ``[metrics]
  stalled_loops`` loop intervals, an address runway under ``[metrics] runway_alert_hours``,
  shared state that cannot be read, or the bot not started yet. What is wrong is decided in
  one pure function, :func:`assess`.

The trading loop only ever *publishes* to the endpoint (:meth:`Heartbeat.beat`: one attribute
assignment, no lock, no I/O): a slow, hanging or failing scrape cannot block or break it.
Scrapes are bounded: at most ``max_connections`` open at once (more are closed at once), a
client that sends nothing is dropped after ``client_timeout`` seconds, the shared state is
read by one scrape at a time (a scrape that cannot get its turn within ``scrape_timeout``
answers 503), and an exception in the exporter is logged and answered 500.

Needs the ``metrics`` extra (``pip install 'resilient-trading[metrics]'``);
:func:`require_metrics` says so at start, before anything trades.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from resilient_trading import safe_text

__all__ = [
    "EXTRA",
    "Beat",
    "FeedReading",
    "Finding",
    "HealthLimits",
    "Heartbeat",
    "MetricsExtraMissingError",
    "MetricsServer",
    "Observed",
    "assess",
    "report",
    "require_metrics",
]

log = logging.getLogger("bot.health")

#: How to install what ``--metrics-port`` needs.
EXTRA = "pip install 'resilient-trading[metrics]'"


class MetricsExtraMissingError(ImportError):
    """``--metrics-port`` (or ``[metrics] port``) was given but ``prometheus-client`` is not
    installed. Raised at start, before anything trades: install the ``metrics`` extra, or
    run without a metrics port."""


def require_metrics() -> None:
    """Raise :class:`MetricsExtraMissingError` unless ``prometheus-client`` imports."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise MetricsExtraMissingError(
            "--metrics-port needs the prometheus-client package, which is not installed: "
            f"{EXTRA} (or run the bot without --metrics-port / [metrics] port)"
        ) from exc


# --- what the loop publishes -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Beat:
    """The loop's state after one completed step (success or handled error)."""

    #: When (monotonic seconds).
    at: float
    #: Loops completed since the process started.
    loops: int
    #: The start (connect, first reconcile) has succeeded.
    started: bool
    #: Why the operator's halt stops new entries (as the bot read it this step), or ``None``.
    halted: str | None
    #: Why the bot is degraded or what last failed (``""``: nothing).
    degraded: str


class Heartbeat:
    """What the trading loop tells the endpoint. :meth:`beat` replaces one attribute: it
    takes no lock and does no I/O, so nothing the endpoint does can slow the loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: When the process began (the loop's age before its first beat).
        self.born = clock()
        self.last: Beat | None = None
        self._loops = 0

    def beat(self, *, started: bool, halted: str | None, degraded: str) -> None:
        """Record one completed loop (called by the loop's thread only)."""
        self._loops += 1
        self.last = Beat(self.clock(), self._loops, started, halted, degraded)


# --- the decision: what is wrong, if anything ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeedReading:
    """One watched market-data subscription: seconds since its last message (``None``:
    nothing received yet) and its state (``live``, ``stale``, ``down``, ``pending``)."""

    subscription: str
    age: float | None
    state: str


@dataclasses.dataclass(frozen=True)
class HealthLimits:
    """When ``/healthz`` says the bot cannot trade (from ``[metrics]`` and ``loop_seconds``)."""

    loop_seconds: float
    stalled_loops: int
    feed_stale_seconds: float
    runway_alert_seconds: float

    @property
    def stall_seconds(self) -> float:
        return self.loop_seconds * self.stalled_loops


@dataclasses.dataclass(frozen=True)
class Observed:
    """Everything :func:`assess` looks at, read at one moment (``now``, monotonic)."""

    now: float
    born: float
    beat: Beat | None
    feeds: tuple[FeedReading, ...] = ()
    #: ``(breaker, reason)`` of every latched breaker in the shared state.
    latched: tuple[tuple[str, str], ...] = ()
    #: ``(address, runway seconds)`` of every address budget with a known runway.
    runways: tuple[tuple[str, float], ...] = ()
    #: Shared-state items that could not be read.
    problems: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Finding:
    """One reason the bot cannot trade: ``check`` (a low-cardinality name: ``started``,
    ``loop``, ``halt``, ``breaker``, ``feed``, ``runway``, ``state``) and the message."""

    check: str
    message: str


#: Every check :func:`assess` makes, in the order it reports them.
CHECKS = ("started", "loop", "halt", "breaker", "feed", "runway", "state")


def assess(seen: Observed, limits: HealthLimits) -> list[Finding]:
    """Why the bot cannot trade now (empty: it can). Pure: no I/O, no clock."""
    out: list[Finding] = []
    beat = seen.beat
    since_start = max(0.0, seen.now - seen.born)
    if beat is None or not beat.started:
        out.append(
            Finding(
                "started",
                f"not trading yet: connecting and reconciling with the exchange "
                f"({since_start:.0f} s since the start)",
            )
        )
    idle = max(0.0, seen.now - (seen.born if beat is None else beat.at))
    if idle > limits.stall_seconds:
        out.append(
            Finding(
                "loop",
                f"the trading loop has not completed a step for {idle:.0f} s (limit "
                f"{limits.stall_seconds:g} s, {limits.stalled_loops} loop intervals): stuck in "
                "a call or starved; see the bot's log",
            )
        )
    if beat is not None and beat.halted is not None:
        out.append(Finding("halt", f"{beat.halted}: no new entries (`resilient-trading resume`)"))
    for name, reason in seen.latched:
        out.append(
            Finding(
                "breaker",
                f"breaker {name} latched: {reason}; no new entries until an operator resets it "
                "(`resilient-trading breaker reset`)",
            )
        )
    for feed in seen.feeds:
        age = since_start if feed.age is None else feed.age
        if age > limits.feed_stale_seconds:
            heard = "nothing received yet" if feed.age is None else f"silent for {age:.0f} s"
            out.append(
                Finding(
                    "feed",
                    f"market data {feed.subscription} {heard} (limit "
                    f"{limits.feed_stale_seconds:g} s, state {feed.state}): no new entries "
                    "until the feed recovers",
                )
            )
    for address, runway in seen.runways:
        if runway < limits.runway_alert_seconds:
            out.append(
                Finding(
                    "runway",
                    f"address {address} action budget runway {runway / 3600:.1f} h (under "
                    f"{limits.runway_alert_seconds / 3600:g} h): slow the bot or raise the cap",
                )
            )
    out.extend(Finding("state", f"shared state: {problem}") for problem in seen.problems)
    return out


def report(seen: Observed, limits: HealthLimits) -> dict[str, Any]:
    """The ``/healthz`` body: ``status`` (``ok`` / ``unavailable``), ``reasons`` and what was
    looked at."""
    findings = assess(seen, limits)
    beat = seen.beat
    idle = max(0.0, seen.now - (seen.born if beat is None else beat.at))
    return {
        "status": "unavailable" if findings else "ok",
        "reasons": [f.message for f in findings],
        "failing": sorted({f.check for f in findings}),
        "loop": {
            "loops": 0 if beat is None else beat.loops,
            "started": beat is not None and beat.started,
            "seconds_since_step": round(idle, 3),
            "limit_seconds": limits.stall_seconds,
            "degraded": "" if beat is None else beat.degraded,
        },
        "halted": None if beat is None else beat.halted,
        "latched": [name for name, _ in seen.latched],
        "feed": {f.subscription: {"age_seconds": f.age, "state": f.state} for f in seen.feeds},
        "runway_seconds": {address: runway for address, runway in seen.runways},
    }


# --- the server ----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MetricsServer

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.owner.slots.acquire(blocking=False):
            log.warning("metrics endpoint: too many open connections, dropping %s", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.owner.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("metrics endpoint: a request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        # A client that sends nothing (or reads nothing) is dropped after this.
        self.connection.settimeout(self.server.owner.client_timeout)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        try:
            if path == "/healthz":
                status, ctype, body = owner.healthz()
            elif path in ("/", "/metrics"):
                status, ctype, body = owner.metrics()
            else:
                status, ctype, body = 404, "text/plain", b"try /metrics or /healthz\n"
        except Exception as exc:  # the exporter's own failure: logged and answered, never raised
            log.exception("metrics endpoint: %s failed", path)
            status, ctype = 500, "text/plain; charset=utf-8"
            body = f"the exporter failed: {type(exc).__name__} (see the bot's log)\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics endpoint: " + format, *args)


class MetricsServer:
    """``/metrics`` and ``/healthz`` for one bot, served from a daemon thread.

    Args:
        state_dir: The bot's state directory (its budget, breakers, address budget, halt).
        heartbeat: What the loop publishes (:class:`Heartbeat`).
        limits: When ``/healthz`` turns 503.
        feeds: Returns the watched market-data subscriptions now (called from the server's
            thread; must be thread-safe and quick). Default: none.
        host / port: Where to listen (port 0: a free one, see :attr:`url`).
        scrape_timeout: Longest wait for another scrape's read of the shared state.
        client_timeout: A connection that sends nothing for this long is dropped.
        max_connections: Connections served at once; more are closed at once.

    Besides the library's metrics, ``/metrics`` carries the bot's own health:
    ``resilient_trading_bot_healthy`` (1 when ``/healthz`` is 200),
    ``resilient_trading_bot_check_failing{check}`` (1 per failing check, see :data:`CHECKS`),
    ``resilient_trading_bot_loop_age_seconds`` (since the loop's last completed step),
    ``resilient_trading_bot_loops_total``, ``resilient_trading_bot_halted`` (the bot's own halt
    flag, wherever it lives) and ``resilient_trading_bot_feed_age_seconds{subscription}``.

    Example (in the bot: ``--metrics-port 0``)::

        server = MetricsServer(state_dir=Path(".bot"), heartbeat=Heartbeat(), limits=limits)
        server.start()
        print(server.url)  # http://127.0.0.1:PORT
        ...
        server.close()
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        heartbeat: Heartbeat,
        limits: HealthLimits,
        feeds: Callable[[], Sequence[FeedReading]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        scrape_timeout: float = 5.0,
        client_timeout: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        require_metrics()
        from prometheus_client import CollectorRegistry

        from resilient_trading import EventMetrics, FleetCollector, add_listener

        self.state_dir = state_dir
        self.heartbeat = heartbeat
        self.limits = limits
        self._feeds = feeds
        self.host, self.port = host, port
        self.scrape_timeout = scrape_timeout
        self.client_timeout = client_timeout
        self.slots = threading.BoundedSemaphore(max_connections)
        self._turn = threading.Lock()  # one read of the shared state at a time
        self._fleet = FleetCollector(state_dir=str(state_dir))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a collector: collect() below
        self.events = EventMetrics(self.registry)
        self._remove_listener = add_listener(self.events)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> MetricsServer:
        """Bind and serve. Raises :class:`OSError` when the address cannot be bound."""
        kind = _Server6 if ":" in self.host else _Server
        server = kind((self.host, self.port), _Handler, bind_and_activate=False)
        server.owner = self
        try:
            server.server_bind()
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and stop counting events. Idempotent."""
        self._remove_listener()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what is served ------------------------------------------------------------------------

    def observe(self) -> tuple[list[Any], Observed]:
        """Read the shared state once: its metric families, and what :func:`assess` needs.

        Raises:
            TimeoutError: Another scrape held the shared state for ``scrape_timeout``.
        """
        if not self._turn.acquire(timeout=self.scrape_timeout):
            raise TimeoutError(
                f"another scrape has been reading {self.state_dir} for over "
                f"{self.scrape_timeout:g} s"
            )
        try:
            families: list[Any] = []
            latched: tuple[tuple[str, str], ...] = ()
            runways: tuple[tuple[str, float], ...] = ()
            try:
                families = list(self._fleet.collect())
                view = self._fleet.last
                if view is None:
                    raise RuntimeError("the fleet collector returned no view")
                latched = tuple(
                    (b.name, b.reason or "a critical error") for b in view.breakers if b.latched
                )
                runways = tuple(
                    (a.address, a.runway_seconds)
                    for a in view.addresses
                    if a.runway_seconds is not None
                )
                problems = tuple(view.problems)
            except Exception as exc:  # reported as a reason and logged, never raised to the loop
                log.warning("metrics endpoint: cannot read %s", self.state_dir, exc_info=True)
                problems = (
                    f"cannot read {self.state_dir}: {type(exc).__name__}: {safe_text(exc, 300)}",
                )
        finally:
            self._turn.release()
        feeds: tuple[FeedReading, ...] = ()
        if self._feeds is not None:
            try:
                feeds = tuple(self._feeds())
            except Exception as exc:
                log.warning("metrics endpoint: cannot read the feed's status", exc_info=True)
                problems = (*problems, f"cannot read the feed's status: {type(exc).__name__}")
        seen = Observed(
            now=self.heartbeat.clock(),
            born=self.heartbeat.born,
            beat=self.heartbeat.last,
            feeds=feeds,
            latched=latched,
            runways=runways,
            problems=problems,
        )
        return families, seen

    def healthz(self) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` of ``/healthz``."""
        try:
            _, seen = self.observe()
        except TimeoutError as exc:
            body = {"status": "unavailable", "reasons": [f"health check timed out: {exc}"]}
            return 503, "application/json", _json(body)
        body = report(seen, self.limits)
        return (200 if body["status"] == "ok" else 503), "application/json", _json(body)

    def metrics(self) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` of ``/metrics`` (the Prometheus text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        try:
            text: bytes = generate_latest(self.registry)
        except TimeoutError as exc:
            return 503, "text/plain; charset=utf-8", f"busy: {exc}\n".encode()
        return 200, CONTENT_TYPE_LATEST, text

    def collect(self) -> Iterator[Any]:
        """The registry's collector: the fleet view, then the bot's health (one read)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families, seen = self.observe()
        yield from families
        findings = assess(seen, self.limits)
        p = "resilient_trading_bot_"
        yield GaugeMetricFamily(
            p + "healthy",
            "1 when /healthz answers 200 (the bot can trade)",
            value=int(not findings),
        )
        failing = GaugeMetricFamily(
            p + "check_failing", "1 when this health check fails", labels=["check"]
        )
        bad = {f.check for f in findings}
        for check in CHECKS:
            failing.add_metric([check], int(check in bad))
        yield failing
        beat = seen.beat
        idle = max(0.0, seen.now - (seen.born if beat is None else beat.at))
        yield GaugeMetricFamily(
            p + "loop_age_seconds", "Seconds since the loop last completed a step", value=idle
        )
        yield CounterMetricFamily(
            p + "loops", "Loops completed since the start", value=0 if beat is None else beat.loops
        )
        yield GaugeMetricFamily(
            p + "halted",
            "1 while the bot's own halt flag stops new entries",
            value=int(beat is not None and beat.halted is not None),
        )
        ages = GaugeMetricFamily(
            p + "feed_age_seconds",
            "Seconds since the subscription's last message",
            labels=["subscription"],
        )
        for feed in seen.feeds:
            if feed.age is not None:
                ages.add_metric([feed.subscription], feed.age)
        yield ages


def _json(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, sort_keys=True) + "\n").encode()
