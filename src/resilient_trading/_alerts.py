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
A change that comes after the window ended but before its summary went out is sent as that
summary (the held changes are counted in it, never lost).

**Never lost to a webhook outage.** A state is marked as told only once the webhook took it.
When delivery fails (retries used up) or the full queue drops it, the subject's latest state
is *owed*: the next notification of the same state sends it again at once, and a background
retry sends it ``redeliver`` seconds later anyway. A newer change replaces what is owed (the
person hears the state now). While one alert of a subject is on its way, repeats are not sent.

**Never blocking.** :meth:`AlertSink.__call__` decides and enqueues (microseconds); a background
thread delivers, retrying with exponential backoff. The queue is bounded: when a dead webhook
lets it fill, new notifications are dropped and counted (``stats()["dropped"]``), never waited
for; one warning per burst of drops, with the count. A webhook's URL can hold a token
(Telegram's, Slack's and Discord's do): it never appears in a log line.

**Exit.** A normal interpreter exit (the end of the script, ``sys.exit``) delivers what is
queued for at most ``exit_timeout`` seconds (an ``atexit`` hook): the last, most important alert
of a bot that stops on a fatal error still goes out, and a dead webhook delays the exit by
``exit_timeout`` at most. ``kill -9`` and an unhandled ``SIGTERM`` skip it: call
:meth:`AlertSink.close` from your ``SIGTERM`` handler (or turn ``SIGTERM`` into ``SystemExit``).

**Formats** (``format=``): ``"json"`` (a generic JSON POST, the fields of :class:`Alert`),
``"slack"`` (``{"text": ...}`` for an incoming webhook, with ``&``, ``<`` and ``>`` escaped as
Slack's mrkdwn asks, so ``<!channel>`` in an error message pings nobody and ``<redacted>``
arrives as written), ``"discord"`` (``{"content": ..., "allowed_mentions": {"parse": []}}``:
``@everyone`` in a message pings nobody), ``"telegram"`` (``{"chat_id": ..., "text": ...}`` to
``https://api.telegram.org/bot<token>/sendMessage``, plain text: no ``parse_mode``, so nothing
in it is markup; give ``chat_id``).

Why this module is long: it is one pipeline from event to webhook (what is news, the flapping
window, what is owed after a failed delivery, the bounded queue, the delivery thread with its
retries, the exit flush, four payload formats), and its parts share one lock, one queue and the
pending count that ``flush`` and ``close`` wait on.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import json
import logging
import os
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


def slack_escape(text: str) -> str:
    """``text`` for a Slack message: ``&``, ``<`` and ``>`` escaped (Slack's documented
    mrkdwn escaping), so nothing in it is a link, a mention or ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclasses.dataclass
class _Subject:
    state: str
    window_start: float
    held: int = 0  # changes not sent during the current window
    last: tuple[str, Severity] = ("", "info")
    queued: Alert | None = None  # the latest alert handed to the queue for this subject
    owed: Alert | None = None  # ``queued`` was not delivered: to be sent again
    retry_at: float = 0.0  # when the background retry sends ``owed``
    failure: int = 0  # which failure made it owed (the de-duplicator's count then)


class _Deduper:
    """The pure decisions: send now, hold back, summarise, send again what was not delivered
    (no I/O, no clock of its own: the caller passes the time)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.subjects: dict[str, _Subject] = {}
        self.failures = 0  # failed deliveries so far

    def offer(
        self,
        subject: str,
        state: str,
        now: float,
        message: str = "",
        severity: Severity = "warning",
        at: float = 0.0,
    ) -> Alert | None:
        """Record ``subject`` in ``state`` at ``now``; the alert to send now, if any.

        A repeat of the state is not news, unless its alert was not delivered (then it is
        sent again). A change within ``window`` of the last alert is held back; after it, it
        is sent, as a summary when changes were held back since the last alert."""
        seen = self.subjects.get(subject)
        if seen is None:
            seen = self.subjects[subject] = _Subject(state, now, last=(message, severity))
            return self._queue(seen, Alert(subject, state, message, severity, at))
        seen.last = (message, severity)
        if seen.state == state:
            return None if seen.owed is None else self._queue(seen, seen.owed)
        seen.state, seen.owed = state, None  # news replaces what was owed
        if now - seen.window_start < self.window:
            seen.held += 1
            return None
        held, seen.window_start, seen.held = seen.held, now, 0
        if held:  # changes held since the last alert and not summarised yet: count them
            return self._queue(seen, Alert(subject, state, message, severity, at, True, held + 1))
        return self._queue(seen, Alert(subject, state, message, severity, at))

    def due(
        self,
        now: float,
        at: float = 0.0,
        *,
        summaries: bool = False,
        owed_until: int = -1,
        limit: int | None = None,
    ) -> list[Alert]:
        """Summaries of windows that ended with changes held back (each starts a new window),
        and owed alerts whose retry time came; at most ``limit``. ``summaries``: every held
        change now; ``owed_until``: every alert owed since failure number ``owed_until`` or
        before, now (a flush sends each owed alert once, not again when it fails again)."""
        out: list[Alert] = []
        for subject, seen in self.subjects.items():
            if limit is not None and len(out) >= limit:
                break
            if seen.held and (summaries or now - seen.window_start >= self.window):
                message, severity = seen.last
                alert = Alert(subject, seen.state, message, severity, at, True, seen.held)
                seen.window_start, seen.held = now, 0
                out.append(self._queue(seen, alert))
            elif seen.owed is not None and (seen.failure <= owed_until or now >= seen.retry_at):
                out.append(self._queue(seen, seen.owed))
        return out

    def failed(self, alert: Alert, retry_at: float) -> None:
        """``alert`` was not delivered (retries used up, or dropped by a full queue). Unless
        newer news about its subject followed (a newer alert, or changes held for a summary),
        its state is owed: sent again by the next repeat, or at ``retry_at``."""
        self.failures += 1
        seen = self.subjects.get(alert.subject)
        if seen is None or seen.queued is not alert or seen.held:
            return
        seen.owed, seen.retry_at, seen.failure = alert, retry_at, self.failures

    def owed(self) -> int:
        """Subjects whose latest state waits to be sent again."""
        return sum(seen.owed is not None for seen in self.subjects.values())

    @staticmethod
    def _queue(seen: _Subject, alert: Alert) -> Alert:
        seen.queued, seen.owed = alert, None
        return alert


class AlertSink:
    """Send alerts to a webhook, de-duplicated, in the background. Use it as an event listener.

    Args:
        url: The webhook (``http://`` or ``https://``); never logged (it may hold a token).
        format: ``"json"``, ``"slack"``, ``"discord"`` or ``"telegram"`` (see the module doc).
        chat_id: Telegram's chat id (required for ``"telegram"``).
        window: Seconds after an alert during which further changes of the same subject are
            held back and summarised.
        queue_size: Notifications waiting for delivery at most; more are dropped and counted
            (the subject's latest state is owed and sent again later).
        attempts: Delivery attempts per notification (network errors, 429 and 5xx retried).
        base_delay: The first backoff between attempts (doubles, at most ``max_delay``).
        timeout: Seconds for one HTTP request.
        redeliver: Seconds after a failed delivery before the background retry sends the
            subject's state again (a repeat notification of it sends it at once).
        exit_timeout: Seconds a normal interpreter exit waits for queued alerts (``0``: it
            does not wait). Never more, however dead the webhook.
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
        redeliver: float = 60.0,
        exit_timeout: float = 2.0,
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
        self._redeliver = check_number("redeliver", redeliver, positive=False)
        self._exit_timeout = check_number("exit_timeout", exit_timeout, positive=False)
        self._source = safe_text(source, 100)
        self._now: Callable[[], float] = getattr(clock, "monotonic", clock.time)
        self._wall = clock.time
        self._dedup = _Deduper(self._window)
        self._lock = threading.Lock()  # the de-duplicator
        self._queue: queue.Queue[Alert | None] = queue.Queue(
            check_int("queue_size", queue_size, minimum=1)
        )
        self._pending = 0
        self._idle = threading.Condition()  # the pending count, the stats, the drop burst
        self._stop = threading.Event()
        self._stats = {"sent": 0, "held": 0, "dropped": 0, "failed": 0, "delivered": 0}
        self._dropping = 0  # drops in the current burst (the queue has been full since)
        self._failing = 0  # failed deliveries in a row (the delivery thread's own)
        self._closed = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="alert-sink", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

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
        back by the flapping window, or when its last alert was not delivered). Never
        blocks, never raises on delivery trouble."""
        text = safe_text(message, 500)
        with self._lock:
            alert = self._dedup.offer(subject, state, self._now(), text, severity, self._wall())
        if alert is None:
            with self._idle:
                self._stats["held"] += 1
            return
        self._put(alert)

    def _put(self, alert: Alert) -> None:
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            with self._lock:
                self._dedup.failed(alert, self._now() + self._redeliver)
            with self._idle:
                self._pending -= 1
                self._stats["dropped"] += 1
                self._dropping += 1
                first = self._dropping == 1
                self._idle.notify_all()
            if first:
                log.warning(
                    "alert queue full (webhook %s slow or down): dropped %s %s; further drops "
                    "are counted, not logged, until it has room; the latest state of each "
                    "subject is sent again later",
                    self._where,
                    alert.subject,
                    alert.state,
                )
            return
        with self._idle:
            self._stats["sent"] += 1
            burst, self._dropping = self._dropping, 0
        if burst > 1:
            log.warning(
                "alert queue has room again (webhook %s): %d alerts were dropped while it was "
                "full; the latest state of each subject is sent again",
                self._where,
                burst,
            )

    def _queue_due(self, *, summaries: bool = False, owed_until: int = -1) -> int:
        """Queue what is due, as much as the queue has room for (the rest stays due, not
        dropped); how many."""
        room = self._queue.maxsize - self._queue.qsize()
        if room <= 0:
            return 0
        with self._lock:
            due = self._dedup.due(
                self._now(), self._wall(), summaries=summaries, owed_until=owed_until, limit=room
            )
        for alert in due:
            self._put(alert)
        return len(due)

    # --- delivery ---------------------------------------------------------------------------

    def _body(self, alert: Alert) -> dict[str, Any]:
        line = alert.line(self._source)
        if self._format == "slack":
            return {"text": slack_escape(line)}
        if self._format == "discord":
            return {"content": line, "allowed_mentions": {"parse": []}}
        if self._format == "telegram":
            return {"chat_id": self._chat_id, "text": line}  # no parse_mode: plain text
        body = dataclasses.asdict(alert)
        body["source"] = self._source
        body["at"] = datetime.datetime.fromtimestamp(alert.at, datetime.timezone.utc).isoformat()
        return body

    def _post(self, alert: Alert) -> tuple[bool, str, int]:
        """Deliver with retries: ``(delivered, why not, attempts made)``."""
        data = json.dumps(self._body(alert)).encode()
        delay = self._base_delay
        for attempt in range(1, self._attempts + 1):
            request = urllib.request.Request(
                self._url, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    response.read()
                return True, "", attempt
            except urllib.error.HTTPError as exc:
                retry = exc.code == 429 or exc.code >= 500
                why = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:  # refused, reset, timeout, bad answer
                retry, why = True, type(exc).__name__
            if not retry or attempt == self._attempts or self._stop.wait(delay):
                return False, why, attempt
            delay = min(self._max_delay, delay * 2)
        return False, "no attempt", 0  # pragma: no cover - the loop always returns

    def _deliver(self, alert: Alert) -> bool:
        try:
            ok, why, attempts = self._post(alert)
        except Exception:  # a bug here must not kill the thread silently
            log.exception("alert delivery to webhook %s failed", self._where)
            ok, why, attempts = False, "a bug in the sink", 1
        if ok:
            if self._failing:
                log.warning(
                    "webhook %s takes alerts again, after %d failed deliveries",
                    self._where,
                    self._failing,
                )
            self._failing = 0
            return True
        with self._lock:
            self._dedup.failed(alert, self._now() + self._redeliver)
        self._failing += 1
        level = logging.ERROR if self._failing == 1 else logging.DEBUG
        log.log(
            level,
            "alert %s %s not delivered to webhook %s after %d attempt(s): %s; its state is "
            "sent again when it repeats or in %g s (further failures are counted, and reported "
            "in one line once the webhook takes alerts again)",
            alert.subject,
            alert.state,
            self._where,
            attempts,
            why,
            self._redeliver,
        )
        return False

    def _run(self) -> None:
        tick = max(0.05, min(1.0, self._window / 4, self._redeliver / 4))
        while not self._stop.is_set():
            self._queue_due()
            try:
                alert = self._queue.get(timeout=tick)
            except queue.Empty:
                continue
            if alert is None:  # close() wakes us
                break
            ok = self._deliver(alert)
            with self._idle:
                self._stats["delivered" if ok else "failed"] += 1
                self._pending -= 1
                self._idle.notify_all()

    # --- control ----------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Queue due summaries and every owed alert (those whose delivery failed), then wait
        until everything queued was delivered or given up. True when nothing is pending."""
        return self._flush(timeout)

    def _flush(self, timeout: float, *, summaries: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            owed_until = self._dedup.failures  # each owed alert once: not again if it fails
        while True:
            queued = self._queue_due(summaries=summaries, owed_until=owed_until)
            with self._idle:
                while self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(left)
            if not queued:
                return True

    def stats(self) -> dict[str, int]:
        """Counts: ``sent`` (queued), ``held`` (suppressed repeats and flaps), ``dropped``
        (queue full), ``delivered``, ``failed`` (gave up), and ``owed`` now (subjects whose
        latest state was not delivered and waits to be sent again)."""
        with self._lock:
            owed = self._dedup.owed()
        with self._idle:
            return {**self._stats, "owed": owed}

    def close(self, timeout: float = 5.0) -> None:
        """Send the summaries of changes still held back and what is owed, deliver what is
        queued for up to ``timeout`` seconds, then stop the delivery thread. Returns within
        about ``timeout`` seconds (0.1 s at least), however dead the webhook; what was not
        delivered by then is lost (counted in :meth:`stats`). Idempotent.

        A normal interpreter exit calls it with ``exit_timeout`` when you have not.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        deadline = time.monotonic() + max(timeout, 0.0)
        if timeout > 0:
            self._flush(timeout, summaries=True)
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue: the worker sees the stop soon
            self._queue.put_nowait(None)
        self._thread.join(max(deadline - time.monotonic(), 0.1))

    def _at_exit(self) -> None:
        if os.getpid() != self._pid:  # a forked child: the delivery thread is the parent's
            return
        self.close(self._exit_timeout)

    def __repr__(self) -> str:
        return f"AlertSink({self._where!r}, format={self._format!r})"
