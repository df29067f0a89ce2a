"""Prometheus metrics: the fleet's shared state, and this process's events.

Needs the ``metrics`` extra (``pip install 'resilient-trading[metrics]'``: the official
``prometheus-client``), imported only when a collector is built.

Two sources, one naming scheme (``resilient_trading_*``, units in the name, ``_total`` for
counters, labels of low cardinality: names of budgets, breakers, stores, addresses):

* :class:`FleetCollector` reads the **shared** state at every scrape (a state directory and/or
  a Redis), like node_exporter reads the kernel: it works with no bot running, and one
  exporter shows the budget and breakers every bot shares. ``resilient-trading metrics
  --listen 127.0.0.1:9464 --state-dir DIR`` serves it, with ``/healthz`` (JSON: 200 when all
  is well, 503 with the reasons when something needs an operator).
* :class:`EventMetrics` is an event listener (``add_listener(EventMetrics(registry))``) that
  counts what happens inside this process: failures, transitions, retries and their delays,
  limiter waits.

Shared-state metrics (gauges unless noted):

=============================================================  =================================
``resilient_trading_halted``                                    1 while halted (or flag unreadable)
``resilient_trading_halt_unknown``                              1 while the flag cannot be read
``resilient_trading_needs_operator``                            1 when ``status`` would exit 3
``resilient_trading_state_read_errors``                         items that could not be read
``resilient_trading_budget_used_weight{budget,period_seconds}`` weight used in the window
``resilient_trading_budget_limit_weight{budget,period_seconds}`` the window's budget
``resilient_trading_budget_utilisation_ratio{budget}``          fullest window's used share
``resilient_trading_budget_paused{budget}``                     1 while every sharer is paused
``resilient_trading_breaker_state{breaker}``                    0 closed, 1 half-open, 2 open
``resilient_trading_breaker_latched{breaker}``                  1 when latched
``resilient_trading_breaker_consecutive_failures{breaker}``     consecutive failures counted
``resilient_trading_breaker_trips_total{breaker}``              times opened (counter)
``resilient_trading_breaker_opened_timestamp_seconds{breaker}`` when it last opened
``resilient_trading_address_actions_used{address}``             actions used of the cap
``resilient_trading_address_actions_cap{address}``              the address's action cap
``resilient_trading_address_runway_seconds{address}``           time left at the recent pace
``resilient_trading_address_throttled{address}``                1 while throttled
``resilient_trading_store_generation{store}``                   commits so far
``resilient_trading_store_last_commit_timestamp_seconds{store}`` last commit time
``resilient_trading_store_backup_age_seconds{store}``           age of the ``.bak``
=============================================================  =================================

In-process metrics (:class:`EventMetrics`, from the events every primitive publishes):

==================================================================  ===============================
``resilient_trading_breaker_failures_total{breaker,error_kind}``    failures counted
``resilient_trading_breaker_transitions_total{breaker,state}``      state changes, by new state
``resilient_trading_breaker_latches_total{breaker}``                critical errors that latched it
``resilient_trading_breaker_outcomes_not_recorded_total{breaker}``  outcomes not written
``resilient_trading_call_duration_seconds{breaker,outcome}``        guarded calls timed (hist.)
``resilient_trading_retries_total{error_kind}``                     retried attempts
``resilient_trading_retry_delay_seconds``                           backoff before a retry (hist.)
``resilient_trading_retry_gave_up_total{error_kind}``               calls the policy gave up
``resilient_trading_limiter_admitted_weight_total{limiter}``        weight admitted
``resilient_trading_limiter_wait_seconds{limiter}``                 sleep of admissions that waited
``resilient_trading_limiter_refusals_total{limiter}``               calls refused
``resilient_trading_limiter_pauses_total{limiter}``                 pauses (a 429)
``resilient_trading_limiter_fallback_changes_total{limiter,mode}``  outage local share entered/left
``resilient_trading_store_commits_total``                           store commits
``resilient_trading_store_events_total{kind}``                      lock waits, timeouts, damage
``resilient_trading_store_lock_wait_seconds``                       lock waits (histogram)
``resilient_trading_address_events_total{address,kind}``            address budget events
``resilient_trading_address_wait_seconds{address}``                 address pacing (histogram)
``resilient_trading_deadman_events_total{kind}``                    dead man's switch events
``resilient_trading_feed_events_total{kind}``                       feed events
``resilient_trading_feed_gap_filled_total``                         items gap-filled
``resilient_trading_halt_changes_total{state}``                     halt flag changes seen
``resilient_trading_alerts_total{state}``                           alert events
==================================================================  ===============================

``call_duration_seconds`` needs a ``BreakerEvents(latency=True)`` listener on the breaker
(off by default: timing costs a little on every call); its buckets span 5 ms to 30 s, the
range of HTTP calls to an exchange, and ``outcome`` is ``success`` or ``failure``.

The ``limiter`` label is the budget's file name, Redis key, or an in-process limiter's
``key``: the ``budget`` label of the shared-state metrics for the same budget. Items sharing
a name get label values told apart by their file (:func:`unique_labels`): no two samples of a
family carry the same labels. A budget's fallback mode lives in each process, not in the
shared state: it shows as ``limiter_fallback_changes_total`` from the process's events.

Why this module is long: it is the catalogue of every metric: each name, help text and label set is
declared one by one (twenty shared-state families, twenty-three in-process ones), plus the
exporter's bounded server, and the tables above
document each of them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from resilient_trading._events import (
    AddressEvent,
    AlertEvent,
    BreakerEvent,
    DeadmanEvent,
    FeedEvent,
    HaltEvent,
    LimiterEvent,
    RetryAttemptEvent,
    StoreEvent,
)
from resilient_trading._fleet_view import FleetView, read_fleet
from resilient_trading._redact import safe_text
from resilient_trading._validate import check_int, check_number

log = logging.getLogger("resilient_trading.metrics")

__all__ = [
    "EventMetrics",
    "FleetCollector",
    "exposition",
    "make_app",
    "serve",
    "unique_labels",
]

_BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

#: The buckets of ``resilient_trading_call_duration_seconds``: HTTP calls, 5 ms to 30 s.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "metrics need the prometheus-client package: pip install 'resilient-trading[metrics]'"
        ) from exc
    return prometheus_client


def _short(location: str) -> str:
    """A low-cardinality label: the file name, or the Redis key (a limiter's own ``key``)."""
    if "#" in location:
        key = location.rsplit("#", 1)[1]
        if key.startswith("resilient-trading:limiter:{") and key.endswith("}"):
            return key[len("resilient-trading:limiter:{") : -1]  # the limiter's key
        return key
    return os.path.basename(location) or location


def unique_labels(items: Sequence[tuple[str, str]]) -> list[str]:
    """One label value per ``(name, location)``, unique within the list.

    A name that only one item has is its label; items sharing a name (two files in a state
    directory each holding a breaker ``orders``; two state directories each with a
    ``budget.json``) are told apart as ``name@file`` (``name@location`` when even the file
    names agree), so no two samples of a family ever carry the same labels.

    >>> unique_labels([("orders", "/a/b1.json"), ("orders", "/a/b2.json"), ("info", "/a/b1.json")])
    ['orders@b1.json', 'orders@b2.json', 'info']
    """
    counts: dict[str, int] = {}
    for name, _ in items:
        counts[name] = counts.get(name, 0) + 1
    out: list[str] = []
    for name, location in items:
        if counts[name] == 1:
            out.append(name)
            continue
        store = location.split("#", 1)[0] if "#breakers." in location else location
        short = os.path.basename(store) or store
        clash = sum(
            1
            for n, loc in items
            if n == name
            and os.path.basename(loc.split("#", 1)[0] if "#breakers." in loc else loc) == short
        )
        out.append(f"{name}@{short}" if clash == 1 else f"{name}@{store}")
    seen: dict[str, int] = {}
    for i, label in enumerate(out):  # the same name twice at the very same place: number it
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[i] = f"{label}#{seen[label]}"
    return out


class FleetCollector:
    """A Prometheus collector that reads the shared state at each scrape.

    Args:
        state_dir: The bots' shared state directory, or several.
        redis_url: And/or their Redis, or several.
        expect_state: A source holding nothing of ours is a read error (``no_state``), as
            for the ``metrics`` command; leave it False in a bot reading its own state
            directory, still empty before its first write.

    Reading never fails a scrape: what cannot be read (a vanished directory, Redis down)
    counts in ``resilient_trading_state_read_errors`` and turns ``needs_operator`` to 1.

    Example:
        >>> import tempfile
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> registry = CollectorRegistry()
        >>> registry.register(FleetCollector(state_dir=tempfile.mkdtemp()))
        >>> b"resilient_trading_halted 0.0" in generate_latest(registry)
        True
    """

    def __init__(
        self,
        *,
        state_dir: str | Sequence[str] | None = None,
        redis_url: str | Sequence[str] | None = None,
        expect_state: bool = False,
    ) -> None:
        if not state_dir and not redis_url:
            raise ValueError("give state_dir or redis_url (or both)")
        self._expect_state = expect_state
        self._state_dir = state_dir
        self._redis_url = redis_url
        self._prom = _prometheus()
        self.last: FleetView | None = None

    def _read(self) -> FleetView:
        """The fleet now (kept in :attr:`last`)."""
        view = read_fleet(self._state_dir, self._redis_url, expect_state=self._expect_state)
        self.last = view
        return view

    def describe(self) -> list[Any]:
        return []  # read at scrape time only: nothing is touched at registration

    def collect(self) -> Iterator[Any]:
        yield from self._families(self._read())

    def _families(self, view: FleetView) -> Iterable[Any]:
        """The metric families of one view."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        gauge: Callable[..., Any] = GaugeMetricFamily
        counter: Callable[..., Any] = CounterMetricFamily
        p = "resilient_trading_"
        halt = view.halt_state
        # An unreadable flag counts as halted, as the bots treat it.
        yield gauge(p + "halted", "1 while the fleet is halted", value=int(halt != "not_halted"))
        yield gauge(
            p + "halt_unknown", "1 while the halt flag cannot be read", value=int(halt == "unknown")
        )
        yield gauge(
            p + "needs_operator",
            "1 when something needs an operator (status exits 3)",
            value=int(bool(view.reasons())),
        )
        yield gauge(
            p + "state_read_errors", "Shared-state items that could not be read", len(view.issues)
        )
        used = gauge(
            p + "budget_used_weight",
            "Weight used in the window",
            labels=["budget", "period_seconds"],
        )
        limit = gauge(
            p + "budget_limit_weight", "The window's budget", labels=["budget", "period_seconds"]
        )
        ratio = gauge(
            p + "budget_utilisation_ratio", "Fullest window's used share", labels=["budget"]
        )
        paused = gauge(p + "budget_paused", "1 while every sharer is paused", labels=["budget"])
        names = unique_labels([(_short(b.location), b.location) for b in view.budgets])
        for name, b in zip(names, view.budgets, strict=True):
            for w in b.windows:
                period = f"{w.period:g}"
                used.add_metric([name, period], w.used)
                limit.add_metric([name, period], w.budget)
            ratio.add_metric([name], b.utilisation)
            paused.add_metric([name], int(b.paused_until is not None))
        yield from (used, limit, ratio, paused)
        state = gauge(p + "breaker_state", "0 closed, 1 half-open, 2 open", labels=["breaker"])
        latched = gauge(p + "breaker_latched", "1 when latched", labels=["breaker"])
        failures = gauge(
            p + "breaker_consecutive_failures", "Consecutive failures counted", labels=["breaker"]
        )
        trips = counter(p + "breaker_trips", "Times the breaker opened", labels=["breaker"])
        opened = gauge(
            p + "breaker_opened_timestamp_seconds", "When it last opened", labels=["breaker"]
        )
        names = unique_labels([(k.name, k.location) for k in view.breakers])
        for name, k in zip(names, view.breakers, strict=True):
            state.add_metric([name], _BREAKER_STATES.get(k.state, 2))
            latched.add_metric([name], int(k.latched))
            failures.add_metric([name], k.failures)
            trips.add_metric([name], k.trips)
            if k.opened_at is not None:
                opened.add_metric([name], k.opened_at)
        yield from (state, latched, failures, trips, opened)
        a_used = gauge(p + "address_actions_used", "Actions used of the cap", labels=["address"])
        a_cap = gauge(p + "address_actions_cap", "The address's action cap", labels=["address"])
        runway = gauge(
            p + "address_runway_seconds", "Time left at the recent pace", labels=["address"]
        )
        throttled = gauge(p + "address_throttled", "1 while throttled", labels=["address"])
        names = unique_labels([(a.address, a.location) for a in view.addresses])
        for name, a in zip(names, view.addresses, strict=True):
            a_used.add_metric([name], a.used)
            a_cap.add_metric([name], a.cap)
            if a.runway_seconds is not None:
                runway.add_metric([name], a.runway_seconds)
            throttled.add_metric([name], int(a.throttled))
        yield from (a_used, a_cap, runway, throttled)
        gen = gauge(p + "store_generation", "Commits so far", labels=["store"])
        commit = gauge(
            p + "store_last_commit_timestamp_seconds", "Last commit time", labels=["store"]
        )
        backup = gauge(p + "store_backup_age_seconds", "Age of the .bak", labels=["store"])
        names = unique_labels([(_short(s.path), s.path) for s in view.stores])
        for name, s in zip(names, view.stores, strict=True):
            gen.add_metric([name], s.generation)
            commit.add_metric([name], s.last_commit)
            if s.backup_age_seconds is not None:
                backup.add_metric([name], s.backup_age_seconds)
        yield from (gen, commit, backup)


class EventMetrics:
    """An event listener counting this process's events into a Prometheus ``registry``.

    Cheap enough for a listener on every guarded call: events are dispatched by type, and
    each label set's child metric is looked up once and kept.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from resilient_trading import add_listener
        >>> remove = add_listener(EventMetrics(CollectorRegistry()))
        >>> remove()
    """

    def __init__(self, registry: Any = None) -> None:
        prom = _prometheus()
        registry = prom.REGISTRY if registry is None else registry
        p = "resilient_trading_"

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return prom.Counter(p + name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: list[str], **options: Any) -> Any:
            return prom.Histogram(p + name, doc, labels, registry=registry, **options)

        self.failures = counter("breaker_failures", "Failures counted", ["breaker", "error_kind"])
        self.transitions = counter("breaker_transitions", "State changes", ["breaker", "state"])
        self.latches = counter("breaker_latches", "Times a critical error latched it", ["breaker"])
        self.not_recorded = counter(
            "breaker_outcomes_not_recorded", "Outcomes its state could not record", ["breaker"]
        )
        self.call_duration = histogram(
            "call_duration_seconds",
            "Duration of guarded calls (BreakerEvents(latency=True))",
            ["breaker", "outcome"],
            buckets=CALL_BUCKETS,
        )
        self.retries = counter("retries", "Retried attempts", ["error_kind"])
        self.retry_delay = histogram("retry_delay_seconds", "Backoff before a retry", [])
        self.gave_up = counter("retry_gave_up", "Calls the retry policy gave up", ["error_kind"])
        self.wait = histogram(
            "limiter_wait_seconds", "Time slept by admissions that waited", ["limiter"]
        )
        self.admitted = counter("limiter_admitted_weight", "Weight admitted", ["limiter"])
        self.refusals = counter("limiter_refusals", "Calls refused by the limiter", ["limiter"])
        self.pauses = counter("limiter_pauses", "Pauses of every sharer (a 429)", ["limiter"])
        self.fallbacks = counter(
            "limiter_fallback_changes",
            "Entered or left the outage local share",
            ["limiter", "mode"],
        )
        self.commits = counter("store_commits", "Store commits", [])
        self.store_events = counter(
            "store_events", "Store lock waits, timeouts, corruptions, restores", ["kind"]
        )
        self.lock_wait = histogram("store_lock_wait_seconds", "Time waited for a store's lock", [])
        self.address_events = counter(
            "address_events", "Address budget events", ["address", "kind"]
        )
        self.address_wait = histogram(
            "address_wait_seconds", "Time paced by the address budget", ["address"]
        )
        self.deadman_events = counter("deadman_events", "Dead man's switch events", ["kind"])
        self.feed_events = counter("feed_events", "Feed events", ["kind"])
        self.gap_filled = counter("feed_gap_filled", "Fills and order updates gap-filled", [])
        self.halts = counter("halt_changes", "Halt flag changes seen", ["state"])
        self.alerts = counter("alerts", "Alert events", ["state"])
        self._lock = threading.Lock()
        # per limiter: its admitted-weight counter's child, found once
        self._limiters: dict[str, Any] = {}
        # per (breaker, outcome): its call-duration histogram's child, found once
        self._calls: dict[tuple[str, str], Any] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            BreakerEvent: self._breaker,
            RetryAttemptEvent: self._retry,
            LimiterEvent: self._limiter,
            StoreEvent: self._store,
            AddressEvent: self._address,
            DeadmanEvent: self._deadman,
            FeedEvent: self._feed,
            HaltEvent: self._halt,
            AlertEvent: self._alert,
        }

    def __call__(self, event: object) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:  # a subclass of an event type, or not an event
            for cls, method in self._handlers.items():
                if isinstance(event, cls):
                    handler = method
                    break
            else:
                return
        handler(event)

    def _breaker(self, event: BreakerEvent) -> None:
        if event.kind == "call":  # every timed call: one lookup and one observation
            if event.seconds is None:
                return
            key = (event.breaker, event.outcome or "unknown")
            child = self._calls.get(key)
            if child is None:
                child = self.call_duration.labels(*key)
                with self._lock:
                    self._calls[key] = child
            child.observe(event.seconds)
        elif event.kind == "failure":
            self.failures.labels(event.breaker, event.error_kind or "unknown").inc()
        elif event.kind in ("state_change", "reset") and event.new:
            self.transitions.labels(event.breaker, event.new).inc()
            if event.latched and event.new == "open":
                self.latches.labels(event.breaker).inc()
        elif event.kind == "not_recorded":
            self.not_recorded.labels(event.breaker).inc()

    def _retry(self, event: RetryAttemptEvent) -> None:
        if event.kind == "attempt":
            self.retries.labels(event.error_kind).inc()
            self.retry_delay.observe(event.delay)
        elif event.kind == "gave_up":
            self.gave_up.labels(event.error_kind).inc()

    def _limiter(self, event: LimiterEvent) -> None:
        kind = event.kind
        if kind == "admitted":  # every admission: kept to one lookup and one increment
            child = self._limiters.get(event.limiter)
            if child is None:
                child = self.admitted.labels(_short(event.limiter))
                with self._lock:
                    self._limiters[event.limiter] = child
            child.inc(event.weight)
        elif kind == "waited":
            self.wait.labels(_short(event.limiter)).observe(event.seconds)
        elif kind == "refused":
            self.refusals.labels(_short(event.limiter)).inc()
        elif kind == "paused":
            self.pauses.labels(_short(event.limiter)).inc()
        elif kind == "fallback":
            self.fallbacks.labels(_short(event.limiter), event.mode or "fallback").inc()

    def _store(self, event: StoreEvent) -> None:
        if event.kind == "commit":
            self.commits.inc()
        else:
            self.store_events.labels(event.kind).inc()
            if event.kind in ("conflict_wait", "lock_timeout"):
                self.lock_wait.observe(event.seconds)

    def _address(self, event: AddressEvent) -> None:
        self.address_events.labels(event.address, event.kind).inc()
        if event.kind == "waited":
            self.address_wait.labels(event.address).observe(event.seconds)

    def _deadman(self, event: DeadmanEvent) -> None:
        self.deadman_events.labels(event.kind).inc()

    def _feed(self, event: FeedEvent) -> None:
        self.feed_events.labels(event.kind).inc()
        if event.kind == "gap_filled":
            self.gap_filled.inc(event.count)

    def _halt(self, event: HaltEvent) -> None:
        self.halts.labels(event.kind).inc()

    def _alert(self, event: AlertEvent) -> None:
        self.alerts.labels(event.state).inc()


Sources = str | Sequence[str] | None


def exposition(
    *, state_dir: Sources = None, redis_url: Sources = None, expect_state: bool = False
) -> str:
    """The fleet's metrics now, in the Prometheus text format."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    collector = FleetCollector(state_dir=state_dir, redis_url=redis_url, expect_state=expect_state)
    registry.register(collector)
    text: bytes = prom.generate_latest(registry)
    return text.decode()


def _json_body(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True) + "\n").encode()


def healthz_body(view: FleetView) -> dict[str, Any]:
    """The ``/healthz`` JSON: ``status`` (``ok`` / ``unavailable``, as the bot's), ``reasons``
    (texts), ``failing`` (their kinds) and the halt state."""
    reasons = view.reasons()
    return {
        "status": "unavailable" if reasons else "ok",
        "reasons": [r.message for r in reasons],
        "failing": sorted({r.kind for r in reasons}),
        "halt": view.halt_state,
        "sources": list(view.sources),
    }


def make_app(
    *,
    state_dir: Sources = None,
    redis_url: Sources = None,
    registry: Any = None,
    expect_state: bool = False,
) -> Callable[..., Any]:
    """A WSGI app: ``/metrics`` (and ``/``) the fleet's metrics plus ``registry``'s,
    ``/healthz`` 200 or 503 with a JSON body saying why an operator is needed
    (:func:`healthz_body`). An unexpected failure answers 503 with its type, never a
    traceback."""
    prom = _prometheus()
    fleet = FleetCollector(state_dir=state_dir, redis_url=redis_url, expect_state=expect_state)
    scrape = prom.CollectorRegistry(auto_describe=False)
    scrape.register(fleet)
    metrics_app = prom.make_wsgi_app(scrape)
    extra = None if registry is None else prom.make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        try:
            if path == "/healthz":
                body = healthz_body(fleet._read())
                status = "200 OK" if body["status"] == "ok" else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [_json_body(body)]
            if path not in ("/", "/metrics"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"try /metrics or /healthz\n"]
            started: list[tuple[Any, ...]] = []

            def keep(*args: Any) -> Callable[[bytes], None]:
                started.append(args)
                return lambda data: None

            if extra is not None:  # two bodies in one: plain text, uncompressed
                environ = {
                    k: v
                    for k, v in environ.items()
                    if k not in ("HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING")
                }
            chunks = list(metrics_app(environ, keep))
            if extra is not None:
                chunks.extend(extra(environ, lambda *a: None))
        except Exception as exc:  # the exporter's own failure: logged and answered
            log.warning("fleet exporter: %s failed", path, exc_info=True)
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            reason = f"the exporter failed: {type(exc).__name__}: {safe_text(exc, 300)}"
            return [_json_body({"status": "unavailable", "reasons": [reason]})]
        start_response(*started[0][:2])
        return chunks

    return app


#: At most this many connections are served at once; more are closed at once.
MAX_CONNECTIONS = 16
#: A client that sends or reads nothing for this many seconds is dropped.
CLIENT_TIMEOUT = 10.0


def serve(
    host: str,
    port: int,
    *,
    state_dir: Sources = None,
    redis_url: Sources = None,
    registry: Any = None,
    max_connections: int = MAX_CONNECTIONS,
    client_timeout: float = CLIENT_TIMEOUT,
    expect_state: bool = False,
) -> Any:
    """Serve :func:`make_app` on ``host:port`` (IPv4 or IPv6) in a daemon thread; returns the
    server (``server.shutdown()`` then ``server.server_close()`` stop it;
    ``server.server_port`` is the bound port). At most ``max_connections`` are served at once
    (more are closed at once), and a client idle for ``client_timeout`` seconds is dropped.

    Raises:
        OSError: The address cannot be bound (``errno.EADDRINUSE``: the port is in use).
    """
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    check_int("max_connections", max_connections, minimum=1)
    check_number("client_timeout", client_timeout)
    slots = threading.BoundedSemaphore(max_connections)

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):
                self.shutdown_request(request)  # over the cap: closed, not queued
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            log.debug("fleet exporter: a request from %s failed", client_address, exc_info=True)

    class _Handler(WSGIRequestHandler):
        timeout = client_timeout  # socket timeout of each connection

        def log_message(self, format: str, *args: Any) -> None:
            pass

    app = make_app(
        state_dir=state_dir, redis_url=redis_url, registry=registry, expect_state=expect_state
    )
    server = make_server(host, port, app, server_class=_Server, handler_class=_Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server
