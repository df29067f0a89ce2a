"""The alert sink (issue #17) against real local HTTP servers.

Properties: a flapping breaker sends exactly one alert and one summary per window; any
sequence of states sends exactly what a reference model says; a dead or stalled webhook
never blocks the caller (emit time measured); the chat formats send their documented body;
a webhook's token never reaches a log line; 5xx is retried.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import CircuitBreaker, ManualClock, NetworkError
from resilient_trading._alerts import AlertSink, _Deduper
from resilient_trading._events import AlertEvent, BreakerEvents, EventBus
from tests._http import closed_port, stall_server

pytestmark = pytest.mark.timeout(60)


@contextmanager
def webhook(statuses: list[int] | None = None) -> Iterator[tuple[str, list[Any]]]:
    """A real HTTP server recording each JSON body; answers ``statuses`` in turn, then 200."""
    bodies: list[Any] = []
    answers = list(statuses or [])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                status = answers.pop(0) if answers else 200
                if status == 200:
                    bodies.append({"path": self.path, **body})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


def _raise(exc: Exception) -> None:
    raise exc


def test_a_flapping_breaker_sends_one_alert_and_one_summary_per_window() -> None:
    clock = ManualClock(1000.0)
    bus = EventBus()
    with webhook() as (url, bodies):
        sink = AlertSink(url, window=60, clock=clock, source="bot-1")
        bus.add_listener(sink)
        breaker = CircuitBreaker(
            fail_max=1, reset_timeout=1, clock=clock, listeners=[BreakerEvents(bus)]
        )
        for _ in range(10):  # ten open/close cycles within a minute
            with pytest.raises(NetworkError):
                breaker.call(_raise, NetworkError("down"))
            clock.advance(2)
            breaker.call(lambda: None)  # the trial succeeds: closed
            clock.advance(2)
        assert sink.flush(10)
        assert [(b["subject"], b["state"], b["summary"]) for b in bodies] == [
            ("breaker:default", "open", False)
        ]
        clock.advance(60)
        assert sink.flush(10)
        sink.close()
    assert len(bodies) == 2
    summary = bodies[1]
    assert (summary["state"], summary["summary"], summary["changes"]) == ("closed", True, 19)
    assert summary["source"] == "bot-1"


def _model(changes: list[tuple[str, float]], window: float) -> tuple[list[str], int]:
    """Reference: a change is sent when no alert went out for the subject in the last
    ``window``; the held ones are counted for the summary."""
    sent: list[str] = []
    last_state, last_sent, held = None, None, 0
    for state, now in changes:
        if state == last_state:
            continue
        last_state = state
        if last_sent is None or now - last_sent >= window:
            sent.append(state)
            last_sent, held = now, 0
        else:
            held += 1
    return sent, held


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["open", "closed", "latched"]), st.floats(0, 30)), max_size=30
    )
)
def test_deduper_sends_exactly_what_the_model_sends(steps: list[tuple[str, float]]) -> None:
    dedup = _Deduper(window=60)
    now, changes, sent = 0.0, [], []
    for state, gap in steps:
        now += gap
        changes.append((state, now))
        if dedup.offer("breaker:x", state, now):
            sent.append(state)
    expected, held = _model(changes, 60)
    assert sent == expected
    assert dedup.subjects.get("breaker:x", None) is None or dedup.subjects["breaker:x"].held == held


@settings(max_examples=10)
@given(format=st.sampled_from(["slack", "discord", "telegram", "json"]))
def test_chat_formats_send_their_documented_body(format: Any) -> None:
    with webhook() as (url, bodies):
        sink = AlertSink(url, format=format, chat_id="42", source="bot-1")
        sink(AlertEvent(subject="address:0xab", state="runway_low", message="runway 20h"))
        assert sink.flush(10)
        sink.close()
    (body,) = bodies
    text = "[WARNING] bot-1: address:0xab runway_low: runway 20h"
    expected = {
        "slack": {"text": text},
        "discord": {"content": text, "allowed_mentions": {"parse": []}},
        "telegram": {"chat_id": "42", "text": text},
    }.get(format)
    if expected is None:
        assert body["subject"] == "address:0xab" and body["message"] == "runway 20h"
    else:
        assert {k: v for k, v in body.items() if k != "path"} == expected


def test_server_errors_are_retried_with_backoff() -> None:
    with webhook([500, 503]) as (url, bodies):
        sink = AlertSink(url, base_delay=0.01)
        sink.notify("halt", "halted", "incident", "critical")
        assert sink.flush(10)
        sink.close()
    assert len(bodies) == 1
    assert sink.stats()["delivered"] == 1


@pytest.mark.parametrize("kind", ["refused", "stalled"])
def test_a_dead_webhook_never_blocks_the_caller(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = "bot123456:SECRETTOKEN"
    with stall_server() as stalled:
        base = f"http://127.0.0.1:{closed_port()}" if kind == "refused" else stalled
        sink = AlertSink(f"{base}/{token}/sendMessage", timeout=1, base_delay=0.05, queue_size=5)
        caplog.set_level(logging.WARNING, "resilient_trading.alerts")
        times = []
        for i in range(300):
            start = time.perf_counter()
            sink.notify(f"feed:{i}", "stale", "no message for 30 s")
            times.append(time.perf_counter() - start)
        stats = sink.stats()
        sink.close(timeout=0)
    times.sort()
    # Microseconds in practice; the slowest call (a busy machine's scheduling) still far below
    # the 1 s request timeout a blocking delivery would cost.
    assert times[len(times) // 2] < 0.005 and times[-1] < 0.5, (times[150], times[-1])
    assert stats["dropped"] > 0 and stats["sent"] + stats["dropped"] == 300
    assert "SECRETTOKEN" not in caplog.text


def test_repeats_of_one_state_are_not_news() -> None:
    with webhook() as (url, bodies):
        sink = AlertSink(url)
        for _ in range(5):
            sink.notify("halt", "halted", "incident", "critical")
        assert sink.flush(10)
        sink.close()
    assert len(bodies) == 1 and sink.stats()["held"] == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://x"},
        {"url": "http://127.0.0.1/", "format": "sms"},
        {"url": "http://127.0.0.1/", "format": "telegram"},
        {"url": "http://127.0.0.1/", "window": -1},
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AlertSink(**kwargs)
