"""The alert sink after the #17 review (items 3, 14, 16 and the de-dup and log-spam nits).

Properties, against real local HTTP servers and real processes:

- a state whose delivery failed (retries used up, or dropped by a full queue) is sent again,
  by the next repeat or by the background retry, once the webhook takes alerts; a subject's
  last delivered state is always its state now, and a state is never delivered twice in a row
  (a stateful test against a webhook that goes down and up);
- no change is lost from the count: what the alerts and summaries report plus what is held
  equals the changes offered, however the summary ticks fall (the de-dup race);
- a normal interpreter exit delivers what is queued, and a dead webhook delays the exit by
  ``exit_timeout`` at most;
- chat formats make mentions and markup inert: Slack text is escaped, Discord allows no
  mentions, Telegram is plain text;
- log lines stay few: one warning per burst of dropped alerts, with the count; a raising
  listener logs one traceback, then one line at the 10th, 100th... failure.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import AlertEvent, ManualClock
from resilient_trading._alerts import Alert, AlertSink, _Deduper, slack_escape
from resilient_trading._events import EventBus, HaltEvent

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


class Hook:
    """A real webhook on 127.0.0.1: records each JSON body it takes (200); answers 503 and
    records nothing while ``up`` is False; waits for ``gate`` (when set) before answering."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.up = True
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.gate is not None:
                    hook.gate.wait(30)
                with hook.lock:
                    status = 200 if hook.up else 503
                    if status == 200:
                        hook.bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def taken(self) -> list[tuple[str, str, bool]]:
        with self.lock:
            return [(b["subject"], b["state"], b["summary"]) for b in self.bodies]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def hook() -> Iterator[Hook]:
    server = Hook()
    try:
        yield server
    finally:
        server.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true (fails at the deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


# --- item 3: a failed delivery is not marked as told ----------------------------------------


def test_a_state_not_delivered_is_sent_again_by_its_next_repeat() -> None:
    with hook() as server:
        server.up = False
        sink = AlertSink(server.url, attempts=2, base_delay=0.01, window=1.0)
        sink.notify("breaker:orders", "latched", "AuthenticationError", "critical")
        assert sink.flush(10)
        assert sink.stats()["failed"] == 1 and sink.stats()["owed"] == 1
        assert server.taken() == []
        server.up = True
        for _ in range(5):  # a watcher keeps seeing the breaker latched
            sink.notify("breaker:orders", "latched", "AuthenticationError", "critical")
        assert sink.flush(10)
        sink.close()
    assert server.taken() == [("breaker:orders", "latched", False)]  # once, not five times
    assert sink.stats()["owed"] == 0


def test_a_state_not_delivered_is_sent_again_by_the_background_retry() -> None:
    clock = ManualClock(1000.0)
    with hook() as server:
        server.up = False
        sink = AlertSink(server.url, attempts=1, window=0.2, redeliver=30.0, clock=clock)
        sink.notify("halt", "halted", "incident", "critical")
        wait_for(lambda: sink.stats()["failed"] == 1)
        server.up = True
        clock.advance(29.0)
        time.sleep(0.2)  # several of the delivery thread's ticks: not yet due, nothing sent
        assert server.taken() == []
        clock.advance(1.0)
        wait_for(lambda: server.taken() == [("halt", "halted", False)])
        clock.advance(100.0)
        time.sleep(0.2)  # delivered: never sent again
        sink.close()
    assert server.taken() == [("halt", "halted", False)]


def test_alerts_dropped_by_a_full_queue_are_sent_once_the_webhook_takes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "resilient_trading.alerts")
    with hook() as server:
        server.gate = threading.Event()  # the webhook hangs: the first alert blocks delivery
        sink = AlertSink(server.url, queue_size=2, base_delay=0.01)
        subjects = [f"feed:{i}" for i in range(12)]
        sink.notify(subjects[0], "stale", "no update")
        wait_for(lambda: sink.stats()["sent"] == 1 and sink._queue.qsize() == 0)
        for subject in subjects[1:]:
            sink.notify(subject, "stale", "no update")
        assert sink.stats()["dropped"] == 9  # two wait in the queue
        server.gate.set()
        assert sink.flush(10)  # what was dropped is owed: flush sends it
        sink.close()
    taken = server.taken()
    assert sorted(taken) == sorted((s, "stale", False) for s in subjects)  # each exactly once
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    full = [m for m in warnings if "queue full" in m]
    room = [m for m in warnings if "room again" in m]
    assert len(full) == 1 and len(room) == 1, warnings  # one burst: two lines, not nine
    assert "9 alerts were dropped" in room[0]


class SinkAgainstAFlakyWebhook(RuleBasedStateMachine):
    """Notifications while the webhook goes down and comes back. Once it is up and the sink
    settled, each subject's last delivered state is its state now; a state is never delivered
    twice in a row (only a summary may repeat the state of the alert before it)."""

    def __init__(self) -> None:
        super().__init__()
        self.server = Hook()
        self.clock = ManualClock(1000.0)
        self.sink = AlertSink(
            self.server.url, attempts=1, window=10.0, redeliver=1000.0, clock=self.clock
        )
        self.now: dict[str, str] = {}

    @rule(subject=st.sampled_from(["breaker:a", "halt"]), state=st.sampled_from(["x", "y", "z"]))
    def notify(self, subject: str, state: str) -> None:
        self.now[subject] = state
        self.sink.notify(subject, state, f"{subject} is {state}")

    @rule(up=st.booleans())
    def webhook(self, up: bool) -> None:
        assert self.sink.flush(10)  # what is on its way meets the webhook as it was
        self.server.up = up

    @rule(seconds=st.sampled_from([1.0, 5.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def settle(self) -> None:
        assert self.sink.flush(10)
        self.server.up = True
        self.clock.advance(10.0)  # every window ends: held changes are summarised
        assert self.sink.flush(10)  # and what is owed is sent again
        last = {}
        for subject, state, _ in self.server.taken():
            last[subject] = state
        assert last == self.now

    @invariant()
    def never_twice_in_a_row(self) -> None:
        previous: dict[str, str] = {}
        for subject, state, summary in self.server.taken():
            assert summary or previous.get(subject) != state, self.server.taken()
            previous[subject] = state

    def teardown(self) -> None:
        self.sink.close(timeout=0)
        self.server.close()


TestSinkAgainstAFlakyWebhook = SinkAgainstAFlakyWebhook.TestCase
TestSinkAgainstAFlakyWebhook.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the de-dup race: no change is lost from the count ---------------------------------------


@settings(max_examples=300)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["offer", "tick"]),
            st.sampled_from(["open", "closed", "latched"]),
            st.floats(0, 40),
        ),
        max_size=40,
    )
)
def test_every_change_is_reported_or_held(steps: list[tuple[str, str, float]]) -> None:
    dedup = _Deduper(window=30)
    now, changes, reported, state = 0.0, 0, 0, None
    alerts: list[Alert] = []
    for what, new, gap in steps:
        now += gap
        if what == "tick":
            alerts += dedup.due(now)
            continue
        if new != state:
            changes += 1
        state = new
        alert = dedup.offer("breaker:x", new, now)
        if alert is not None:
            alerts.append(alert)
    for alert in alerts:
        reported += alert.changes
    held = dedup.subjects["breaker:x"].held if "breaker:x" in dedup.subjects else 0
    assert reported + held == changes
    if alerts:  # the last thing said is the state then
        assert held or alerts[-1].state == state


def test_a_change_after_the_window_but_before_the_tick_brings_the_held_count() -> None:
    dedup = _Deduper(window=60.0)
    assert dedup.offer("breaker:x", "open", 0.0) is not None
    assert dedup.offer("breaker:x", "closed", 10.0) is None  # held
    alert = dedup.offer("breaker:x", "open", 61.0)  # the summary tick has not run yet
    assert alert is not None
    assert (alert.state, alert.summary, alert.changes) == ("open", True, 2)
    assert dedup.due(61.5) == []


# --- item 16: a normal exit flushes, for a bounded time --------------------------------------

EXIT_SCRIPT = """
import atexit, socket, sys, time
t = time.monotonic()
atexit.register(lambda: print("exit took %.3f" % (time.monotonic() - t), flush=True))
from resilient_trading import AlertEvent, AlertSink, add_listener, emit
url, how = sys.argv[1], sys.argv[2]
if url == "dead":  # accepts (into the backlog) and never answers
    dead = socket.socket(); dead.bind(("127.0.0.1", 0)); dead.listen(8)
    url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
sink = AlertSink(url, timeout=30, **({"exit_timeout": float(sys.argv[3])} if sys.argv[3] else {}))
add_listener(sink)
t = time.monotonic()
emit(AlertEvent(subject="breaker:orders", state="latched", message="key revoked",
                severity="critical"))
if how == "exit":
    sys.exit(2)
if how == "raise":
    raise RuntimeError("a fatal error")
"""


def _run_exit(url: str, how: str, exit_timeout: float | None) -> tuple[int, float]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            EXIT_SCRIPT,
            url,
            how,
            "" if exit_timeout is None else str(exit_timeout),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    took = [line for line in proc.stdout.splitlines() if line.startswith("exit took")]
    assert took, proc.stdout + proc.stderr
    return proc.returncode, float(took[0].split()[-1])


@pytest.mark.parametrize("how", ["exit", "raise", "end"])
def test_a_normal_exit_delivers_the_last_alert(how: str) -> None:
    with hook() as server:
        code, _ = _run_exit(server.url, how, None)  # the default exit_timeout
        taken = server.taken()
    assert code == {"exit": 2, "raise": 1, "end": 0}[how]
    assert taken == [("breaker:orders", "latched", False)]


def test_a_dead_webhook_delays_the_exit_by_exit_timeout_at_most() -> None:
    code, took = _run_exit("dead", "exit", 0.5)
    assert code == 2
    assert 0.4 < took < 0.5 + 0.5, took  # waited for the alert, then gave up
    code, took = _run_exit("dead", "exit", 0.0)
    assert took < 0.5, took  # exit_timeout=0: the exit does not wait


FORK_SCRIPT = """
import os, socket, sys, time
from resilient_trading import AlertSink
dead = socket.socket(); dead.bind(("127.0.0.1", 0)); dead.listen(8)
sink = AlertSink(f"http://127.0.0.1:{dead.getsockname()[1]}/x", timeout=30, exit_timeout=5)
sink.notify("halt", "halted", "incident", "critical")
pid = os.fork()
if pid == 0:  # the child exits normally: the parent's sink is not its to flush
    sys.exit(0)
start = time.monotonic()
os.waitpid(pid, 0)
print("child exit took %.3f" % (time.monotonic() - start), flush=True)
sink.close(timeout=0)
"""


def test_a_forked_child_does_not_wait_for_its_parents_sink_at_exit() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    took = [line for line in proc.stdout.splitlines() if line.startswith("child exit took")]
    assert proc.returncode == 0 and took, proc.stdout + proc.stderr
    assert float(took[0].split()[-1]) < 2.0  # not the parent's exit_timeout of 5 s


def test_close_is_idempotent_and_bounded_with_a_dead_webhook() -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    try:
        sink = AlertSink(f"http://127.0.0.1:{dead.getsockname()[1]}/x", timeout=30)
        sink.notify("halt", "halted", "incident", "critical")
        start = time.monotonic()
        sink.close(timeout=0.3)
        sink.close(timeout=5)
        assert time.monotonic() - start < 1.0
    finally:
        dead.close()


# --- item 14: mentions and markup arrive inert ------------------------------------------------

HOSTILE = "@everyone <!channel> <@U024BE7LH> key <redacted> & *bold* <https://x.example|click>"


@pytest.mark.parametrize("format", ["slack", "discord", "telegram", "json"])
def test_mentions_and_markup_arrive_inert(format: Any) -> None:
    with hook() as server:
        sink = AlertSink(server.url, format=format, chat_id="42", source="bot-1")
        sink(AlertEvent(subject="breaker:orders", state="open", message=HOSTILE))
        assert sink.flush(10)
        sink.close()
        (body,) = server.bodies
    line = f"[WARNING] bot-1: breaker:orders open: {HOSTILE}"
    if format == "slack":
        assert body == {"text": slack_escape(line)}
        assert "<" not in body["text"] and ">" not in body["text"]
        assert "&lt;!channel&gt;" in body["text"] and "&lt;redacted&gt;" in body["text"]
        assert "&amp; *bold*" in body["text"]
    elif format == "discord":
        assert body == {"content": line, "allowed_mentions": {"parse": []}}
    elif format == "telegram":
        assert body == {"chat_id": "42", "text": line}  # no parse_mode: nothing is markup
    else:
        assert body["message"] == HOSTILE


def _slack_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@given(message=st.text(max_size=200))
def test_slack_text_has_no_markup_and_says_what_was_written(message: str) -> None:
    sink = AlertSink("http://127.0.0.1:9/x", format="slack", source="bot-1", exit_timeout=0)
    try:
        text = sink._body(Alert("halt", "halted", message, "critical"))["text"]
    finally:
        sink.close(timeout=0)
    assert "<" not in text and ">" not in text
    assert _slack_unescape(text) == f"[CRITICAL] bot-1: halt halted: {message}"


def test_a_webhook_url_in_an_alert_message_is_redacted() -> None:
    secret = "XyZ" * 8
    with hook() as server:
        sink = AlertSink(server.url)
        sink.notify("feed:x", "stale", f"POST https://hooks.slack.com/services/T1/B2/{secret}")
        sink.notify("feed:y", "stale", f"https://api.telegram.org/bot1234:{secret}/sendMessage")
        assert sink.flush(10)
        sink.close()
        text = json.dumps(server.bodies)
    assert secret not in text and text.count("<redacted>") == 2


# --- log spam: a raising listener -------------------------------------------------------------


def test_a_raising_listener_logs_one_traceback_then_a_line_per_power_of_ten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()

    def boom(event: object) -> None:
        raise RuntimeError("a listener bug")

    def other(event: object) -> None:
        raise KeyError("another bug")

    bus.add_listener(boom)
    bus.add_listener(other)
    caplog.set_level(logging.WARNING, "resilient_trading.events")
    event = HaltEvent(kind="halted", location="x")
    for _ in range(150):
        bus.emit(event)
    records = caplog.records
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == 2  # one per listener
    lines = [r.getMessage() for r in records if not r.exc_info]
    assert len(lines) == 4, lines  # the 10th and the 100th failure of each
    assert any("RuntimeError 100 times" in line for line in lines)
