"""Alerts for a person: one notification per state change, flapping summarised, never blocking.

:class:`AlertSink` is an event listener (``add_listener(sink)``) that turns the events an
operator must hear about into webhook notifications:

* a breaker opened (``open``), was latched by a critical error (``latched``) or closed again;
* the fleet was halted or resumed;
* any :class:`~resilient_trading.AlertEvent` (address runway under a day, a stale feed...).

**De-duplication.** Per subject (``breaker:orders``, ``halt``...), only a *change* of state is
news. The first change is sent at once; further changes within ``window`` seconds of it are
counted, not sent, and when the window ends one *summary* says how many there were and the
state now. A breaker opening and closing ten times a minute sends one alert and one summary.

**Never blocking.** :meth:`AlertSink.__call__` decides and enqueues (microseconds); a background
thread delivers, retrying with exponential backoff. The queue is bounded: when a dead webhook
lets it fill, new notifications are dropped and counted (``stats()["dropped"]``), never waited
for. A webhook's URL can hold a token (Telegram's does): it never appears in a log line.

**Formats** (``format=``): ``"json"`` (a generic JSON POST, the fields of :class:`Alert`),
``"slack"`` (``{"text": ...}`` for an incoming webhook), ``"discord"`` (``{"content": ...}``),
``"telegram"`` (``{"chat_id": ..., "text": ...}`` to
``https://api.telegram.org/bot<token>/sendMessage``; give ``chat_id``).

Why this module is long: it is one pipeline from event to webhook (what is news, the flapping
window, the bounded queue, the delivery thread with its retries, four payload formats), and its
parts share one lock, one queue and the pending count that ``flush`` and ``close`` wait on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Literal

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._events import AlertEvent, BreakerEvent, HaltEvent
from resilient_trading._redact import safe_text
from resilient_trading._validate import check_int, check_number

__all__ = ["Alert", "AlertSink", "alert_of"]

log = logging.getLogger("resilient_trading.alerts")

Format = Literal["json", "slack", "discord", "telegram"]
Severity = Literal["info", "warning", "critical"]
_FORMATS = ("json", "slack", "discord", "telegram")


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One notification: ``subject`` is now in ``state``; a ``summary`` counts the ``changes``
    that were held back during the last window."""

    subject: str
    state: str
    message: str
    severity: Severity = "warning"
    at: float = 0.0
    summary: bool = False
    changes: int = 1

    def line(self, source: str) -> str:
        """The one-line text chat formats send."""
        head = f"[{self.severity.upper()}] {source}: {self.subject} {self.state}"
        if self.summary:
            return f"{head} (after {self.changes} more changes): {self.message}"
        return f"{head}: {self.message}"


def alert_of(event: object) -> tuple[str, str, str, Severity] | None:
    """``(subject, state, message, severity)`` for an event an operator must hear about."""
    if isinstance(event, BreakerEvent) and event.kind in ("state_change", "reset"):
        subject = f"breaker:{event.breaker}"
        why = f" by {event.error_kind}: {event.message}" if event.error_kind else ""
        if event.new == "open" and event.latched:
            return subject, "latched", f"latched{why}; an operator must reset it", "critical"
        if event.new == "open":
            return subject, "open", f"opened{why}", "warning"
        if event.new == "closed":
            how = "reset by an operator" if event.kind == "reset" else "closed after a trial"
            return subject, "closed", how, "info"
        return None  # half-open: a trial, not news
    if isinstance(event, HaltEvent):
        if event.kind == "halted":
            return "halt", "halted", f"no new entries: {event.reason}", "critical"
        return "halt", "resumed", "new entries allowed again", "info"
    if isinstance(event, AlertEvent):
        return event.subject, event.state, event.message, event.severity
    return None


@dataclasses.dataclass
class _Subject:
    state: str
    window_start: float
    held: int = 0  # changes not sent during the current window
    last: tuple[str, Severity] = ("", "info")


class _Deduper:
    """The pure decisions: send now, hold back, or summarise (no I/O, no clock of its own)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.subjects: dict[str, _Subject] = {}

    def offer(self, subject: str, state: str, now: float) -> bool:
        """Record ``subject`` in ``state`` at ``now``; True when this is to be sent now."""
        seen = self.subjects.get(subject)
        if seen is None:
            self.subjects[subject] = _Subject(state=state, window_start=now)
            return True
        if seen.state == state:
            return False  # not a change
        seen.state = state
        if now - seen.window_start < self.window:
            seen.held += 1
            return False
        seen.window_start, seen.held = now, 0
        return True

    def due(self, now: float) -> list[tuple[str, _Subject]]:
        """Subjects whose window ended with changes held back (each starts a new window)."""
        out = []
        for subject, seen in self.subjects.items():
            if seen.held and now - seen.window_start >= self.window:
                out.append((subject, dataclasses.replace(seen)))
                seen.window_start, seen.held = now, 0
        return out


class AlertSink:
    """Send alerts to a webhook, de-duplicated, in the background. Use it as an event listener.

    Args:
        url: The webhook (``http://`` or ``https://``); never logged (it may hold a token).
        format: ``"json"``, ``"slack"``, ``"discord"`` or ``"telegram"`` (see the module doc).
        chat_id: Telegram's chat id (required for ``"telegram"``).
        window: Seconds after an alert during which further changes of the same subject are
            held back and summarised.
        queue_size: Notifications waiting for delivery at most; more are dropped and counted.
        attempts: Delivery attempts per notification (network errors, 429 and 5xx retried).
        base_delay: The first backoff between attempts (doubles, at most ``max_delay``).
        timeout: Seconds for one HTTP request.
        source: Who is speaking (the bot's name), in every message.
        clock: Time for the windows (its monotonic reading when it has one).

    Example:
        >>> from resilient_trading import add_listener
        >>> sink = AlertSink("http://127.0.0.1:9/hook", source="bot-1")
        >>> remove = add_listener(sink)
        >>> remove(); sink.close(timeout=0)
    """

    def __init__(
        self,
        url: str,
        *,
        format: Format = "json",
        chat_id: str | None = None,
        window: float = 60.0,
        queue_size: int = 100,
        attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        timeout: float = 5.0,
        source: str = "resilient-trading",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// webhook URL")
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {format!r}")
        if format == "telegram" and not chat_id:
            raise ValueError("format='telegram' needs chat_id (the chat to send to)")
        self._url = url
        self._where = f"{parts.scheme}://{parts.hostname}"  # for messages: no path, no token
        self._format: Format = format
        self._chat_id = chat_id
        self._window = check_number("window", window, positive=False)
        self._attempts = check_int("attempts", attempts, minimum=1)
        self._base_delay = check_number("base_delay", base_delay, positive=False)
        self._max_delay = check_number("max_delay", max_delay, positive=False)
        self._timeout = check_number("timeout", timeout)
        self._source = safe_text(source, 100)
        self._now: Callable[[], float] = getattr(clock, "monotonic", clock.time)
        self._wall = clock.time
        self._dedup = _Deduper(self._window)
        self._lock = threading.Lock()
        self._queue: queue.Queue[Alert | None] = queue.Queue(
            check_int("queue_size", queue_size, minimum=1)
        )
        self._pending = 0
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._stats = {"sent": 0, "held": 0, "dropped": 0, "failed": 0, "delivered": 0}
        self._thread = threading.Thread(target=self._run, name="alert-sink", daemon=True)
        self._thread.start()

    # --- the caller's side: decide and enqueue, never wait -----------------------------------

    def __call__(self, event: object) -> None:
        """The listener: alert on ``event`` when it is news (see :func:`alert_of`)."""
        found = alert_of(event)
        if found is not None:
            self.notify(*found)

    def notify(
        self, subject: str, state: str, message: str, severity: Severity = "warning"
    ) -> None:
        """Alert that ``subject`` is now in ``state`` (sent when it is a change and not held
        back by the flapping window). Never blocks, never raises on delivery trouble."""
        now = self._now()
        with self._lock:
            send = self._dedup.offer(subject, state, now)
            seen = self._dedup.subjects[subject]
            seen.last = (safe_text(message, 500), severity)
            if not send:
                self._stats["held"] += 1
                return
        self._put(Alert(subject, state, safe_text(message, 500), severity, self._wall()))

    def _put(self, alert: Alert) -> None:
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._stats["dropped"] += 1
                self._idle.notify_all()
            log.warning(
                "alert queue full (webhook %s slow or down): dropped %s %s",
                self._where,
                alert.subject,
                alert.state,
            )
            return
        with self._idle:
            self._stats["sent"] += 1

    def _summaries(self) -> None:
        with self._lock:
            due = self._dedup.due(self._now())
        for subject, seen in due:
            message, severity = seen.last
            self._put(Alert(subject, seen.state, message, severity, self._wall(), True, seen.held))

    # --- delivery ---------------------------------------------------------------------------

    def _body(self, alert: Alert) -> dict[str, Any]:
        if self._format == "slack":
            return {"text": alert.line(self._source)}
        if self._format == "discord":
            return {"content": alert.line(self._source)}
        if self._format == "telegram":
            return {"chat_id": self._chat_id, "text": alert.line(self._source)}
        body = dataclasses.asdict(alert)
        body["source"] = self._source
        body["at"] = datetime.datetime.fromtimestamp(alert.at, datetime.timezone.utc).isoformat()
        return body

    def _post(self, alert: Alert) -> bool:
        """Deliver with retries; True when the webhook took it."""
        data = json.dumps(self._body(alert)).encode()
        delay = self._base_delay
        for attempt in range(1, self._attempts + 1):
            request = urllib.request.Request(
                self._url, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as exc:
                retry = exc.code == 429 or exc.code >= 500
                why = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:  # refused, reset, timeout, bad answer
                retry, why = True, type(exc).__name__
            if not retry or attempt == self._attempts:
                log.error(
                    "alert %s %s not delivered to webhook %s after %d attempt(s): %s",
                    alert.subject,
                    alert.state,
                    self._where,
                    attempt,
                    why,
                )
                return False
            if self._stop.wait(delay):
                return False
            delay = min(self._max_delay, delay * 2)
        return False  # pragma: no cover - the loop always returns

    def _run(self) -> None:
        tick = max(0.05, min(1.0, self._window / 4))
        while not self._stop.is_set():
            self._summaries()
            try:
                alert = self._queue.get(timeout=tick)
            except queue.Empty:
                continue
            if alert is None:  # close() wakes us
                break
            try:
                ok = self._post(alert)
            except Exception:  # a bug here must not kill the thread silently
                log.exception("alert delivery to webhook %s failed", self._where)
                ok = False
            with self._idle:
                self._stats["delivered" if ok else "failed"] += 1
                self._pending -= 1
                self._idle.notify_all()

    # --- control ----------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Queue due summaries, then wait until everything queued was delivered or given up.
        True when nothing is pending."""
        self._summaries()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stats(self) -> dict[str, int]:
        """Counts: ``sent`` (queued), ``held`` (suppressed repeats and flaps), ``dropped``
        (queue full), ``delivered``, ``failed`` (gave up)."""
        with self._idle:
            return dict(self._stats)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop the thread."""
        if timeout > 0:
            self.flush(timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue: the worker sees the stop soon
            self._queue.put_nowait(None)
        self._thread.join(max(timeout, 0.1))

    def __repr__(self) -> str:
        return f"AlertSink({self._where!r}, format={self._format!r})"
