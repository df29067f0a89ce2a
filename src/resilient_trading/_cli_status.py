"""``resilient-trading status``: the whole fleet on one screen, from the shared state.

``status --state-dir DIR [--state-dir DIR2 ...] [--redis URL ...] [--json] [--watch [SECONDS]]``
shows every rate budget (windows, pause), every breaker (state, latch and its reason, since
when), every address budget (used, runway), every store (generation, last commit, backup
age), every bot heartbeat (age) and the halt flag, read without changing anything (no bot
needs to run). ``--state-dir`` and ``--redis`` may each be given several times: every one is
read. Without either, ``$RESILIENT_TRADING_REDIS_URL`` is the Redis to read (so a password
stays out of ``ps``).

Exit codes, so it can be a health check: 0 all well; 3 something needs an operator (the fleet
is halted or its flag unreadable, a breaker is latched, an address runway is under a day, a
bot's heartbeat is stale, state cannot be read, or a source holds no shared state at all:
listed under "needs an operator"); 1 an error; 2 bad usage. ``--json`` prints the same as one
JSON object of the documented schema :data:`STATUS_SCHEMA` (``"schema": 1``); with
``--watch``, one compact object per line. ``--watch`` redraws every SECONDS (default 2) until
interrupted (Ctrl-C or SIGTERM) and exits with the last code; with ``--alert-webhook URL``
(or ``$RESILIENT_TRADING_ALERT_WEBHOOK``) it also posts each change (halt, a breaker opened /
latched / closed, an address runway under a day, a budget paused, a stale bot, unreadable
state) through an :class:`~resilient_trading.AlertSink`: one alert per change, flapping
summarised, healthy subjects seen at start not reported; pending alerts are delivered before
it exits. It needs no bot running: one watcher covers the fleet.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from resilient_trading._alerts import AlertSink, Severity
from resilient_trading._fleet_schema import STATUS_SCHEMA
from resilient_trading._fleet_view import RUNWAY_ALERT_SECONDS, FleetView, read_fleet

__all__ = [
    "ENV_ALERT_WEBHOOK",
    "ENV_REDIS_URL",
    "NEEDS_OPERATOR",
    "STATUS_SCHEMA",
    "USAGE",
    "fleet_alerts",
    "fleet_sources",
    "quiet_broken_pipe",
    "register",
    "render",
    "sigterm_interrupts",
]

#: The exit code when something needs an operator.
NEEDS_OPERATOR = 3
#: The exit code of bad usage.
USAGE = 2
#: Read in place of ``--redis`` when neither ``--state-dir`` nor ``--redis`` is given.
ENV_REDIS_URL = "RESILIENT_TRADING_REDIS_URL"
#: Read in place of ``--alert-webhook`` (with ``--watch``) when it is not given.
ENV_ALERT_WEBHOOK = "RESILIENT_TRADING_ALERT_WEBHOOK"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def render(view: FleetView) -> str:
    """The status screen as text."""
    now = view.read_at
    lines = [f"resilient-trading status  {', '.join(view.sources)}  at {_clock(now)}", ""]
    if view.halts:
        for h in view.halts:
            lines.append(
                f"HALT       HALTED since {_clock(h.since)} ({_ago(now - h.since)} ago) by "
                f"{h.by}: {h.reason}  [{h.location}]"
            )
    elif view.halt_state == "unknown":
        lines.append("HALT       UNKNOWN: the flag cannot be read (bots treat that as halted)")
    else:
        lines.append("HALT       none: bots may make new entries")
    lines.append("")
    lines.append(f"BUDGETS ({len(view.budgets)})")
    for b in view.budgets:
        windows = (
            ", ".join(f"{w.used}/{w.budget} per {w.period:g}s" for w in b.windows)
            or "no windows yet"
        )
        pause = "no" if b.paused_until is None else f"until {_clock(b.paused_until)}"
        lines.append(f"  {b.location}: {windows} ({b.utilisation:.0%}), paused: {pause}")
    lines.append(f"BREAKERS ({len(view.breakers)})")
    for k in view.breakers:
        state = k.state + (" LATCHED" if k.latched else "")
        since = (
            ""
            if k.opened_at is None or k.state == "closed"
            else (f" since {_clock(k.opened_at)} ({_ago(now - k.opened_at)} ago)")
        )
        # A latch comes from one critical error, not from counted failures: no count then.
        count = "" if k.latched else f", failures {k.failures}"
        why = ""
        if k.state != "closed":
            why = f": {k.reason}" if k.reason else ": no reason stored"
        lines.append(f"  {k.name:<16} {state}{since}{count}, trips {k.trips}{why}")
    lines.append(f"ADDRESSES ({len(view.addresses)})")
    for a in view.addresses:
        runway = "unbounded" if a.runway_seconds is None else _ago(a.runway_seconds)
        throttled = ", THROTTLED" if a.throttled else ""
        lines.append(
            f"  {a.address}: used {a.used}/{a.cap}, {a.per_hour:.0f}/h, runway {runway}{throttled}"
        )
    lines.append(f"STORES ({len(view.stores)})")
    for s in view.stores:
        backup = "none" if s.backup_age_seconds is None else f"{_ago(s.backup_age_seconds)} old"
        lines.append(
            f"  {s.path}: generation {s.generation}, modified {_ago(now - s.last_commit)} "
            f"ago, backup {backup}, {s.size_bytes} B"
        )
    if view.bots:
        lines.append(f"BOTS ({len(view.bots)}, from their heartbeats)")
        for bot in view.bots:
            state = "stopped" if bot.stopped else ("STALE" if bot.stale(now) else "alive")
            lines.append(
                f"  {bot.address} pid {bot.pid}: {state}, last beat {_ago(bot.age(now))} ago "
                f"(deadline {bot.deadline_seconds:g}s)"
            )
    reasons = view.needs_operator()
    lines.append("")
    if reasons:
        lines.append("NEEDS AN OPERATOR")
        lines.extend(f"  - {reason}" for reason in reasons)
    else:
        lines.append("all well")
    return "\n".join(lines)


#: States that are not news the first time a subject is seen.
_HEALTHY = frozenset({"closed", "resumed", "ok", "alive"})


def fleet_alerts(view: FleetView) -> list[tuple[str, str, str, Severity]]:
    """``(subject, state, message, severity)`` for everything an operator watches."""
    out: list[tuple[str, str, str, Severity]] = []
    halt_state = view.halt_state
    if halt_state == "halted":
        why = "; ".join(h.reason for h in view.halts) or (view.halt.reason if view.halt else "")
        out.append(("halt", "halted", f"no new entries: {why}", "critical"))
    elif halt_state == "unknown":
        out.append(("halt", "unknown", "the halt flag cannot be read", "critical"))
    else:
        out.append(("halt", "resumed", "new entries allowed", "info"))
    for k in view.breakers:
        why = k.reason or "no reason stored"
        if k.latched:
            out.append((f"breaker:{k.name}", "latched", f"latched: {why}", "critical"))
        elif k.state != "closed":  # half-open is a trial of an open breaker: still open
            out.append((f"breaker:{k.name}", "open", f"open: {why}", "warning"))
        else:
            out.append((f"breaker:{k.name}", "closed", "closed", "info"))
    for a in view.addresses:
        low = a.runway_seconds is not None and a.runway_seconds < RUNWAY_ALERT_SECONDS
        runway = "unbounded" if a.runway_seconds is None else _ago(a.runway_seconds)
        text = f"runway {runway} at {a.per_hour:.0f} actions/h, used {a.used}/{a.cap}"
        out.append(
            (
                f"address:{a.address}",
                "runway_low" if low else "ok",
                text,
                "warning" if low else "info",
            )
        )
    for b in view.budgets:
        paused = b.paused_until is not None
        out.append(
            (
                f"budget:{b.location}",
                "paused" if paused else "ok",
                f"paused until {_clock(b.paused_until)}" if b.paused_until else "not paused",
                "warning" if paused else "info",
            )
        )
    for bot in view.bots:
        stale = bot.stale(view.read_at)
        out.append(
            (
                f"bot:{bot.address}",
                "stale" if stale else "alive",
                f"last beat {_ago(bot.age(view.read_at))} ago",
                "critical" if stale else "info",
            )
        )
    problems = "; ".join(p.message for p in view.issues if p.kind != "halt_unreadable")
    out.append(
        (
            "state",
            "unreadable" if problems else "ok",
            problems or "readable",
            "critical" if problems else "info",
        )
    )
    return out


class _Alerter:
    """Feeds an :class:`AlertSink` from each view; healthy subjects seen for the first time
    are a baseline, not news."""

    def __init__(self, sink: AlertSink) -> None:
        self.sink = sink
        self.known: set[str] = set()

    def __call__(self, view: FleetView) -> None:
        for subject, state, message, severity in fleet_alerts(view):
            if subject not in self.known and state in _HEALTHY:
                continue
            self.known.add(subject)
            self.sink.notify(subject, state, message, severity)


def _usage(message: str) -> int:
    print(f"resilient-trading status: error: {message}", file=sys.stderr)
    return USAGE


def fleet_sources(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    dirs: list[str] = list(args.state_dir or [])
    urls: list[str] = list(args.redis or [])
    if not dirs and not urls and os.environ.get(ENV_REDIS_URL):
        urls = [os.environ[ENV_REDIS_URL]]
    return dirs, urls


def _look(args: argparse.Namespace, alerter: _Alerter | None = None) -> tuple[FleetView, int]:
    """Read the fleet (and alert on what changed): the view and its exit code."""
    dirs, urls = fleet_sources(args)
    view = read_fleet(dirs, urls, expect_state=True)  # an empty source is no all-clear
    if alerter is not None:
        alerter(view)
    return view, NEEDS_OPERATOR if view.needs_operator() else 0


def _show(args: argparse.Namespace, view: FleetView) -> None:
    if args.json:
        if args.watch is None:
            text = json.dumps(view.to_json(), indent=2, sort_keys=True)
        else:  # one object per line: `status --json --watch | jq -c ...` reads it line by line
            text = json.dumps(view.to_json(), sort_keys=True, separators=(",", ":"))
        print(text)
    else:
        if args.watch is not None and sys.stdout.isatty():
            print("\x1b[2J\x1b[H", end="")  # clear the screen
        print(render(view))
    sys.stdout.flush()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``systemctl stop``, ``docker stop``) stops like Ctrl-C: pending alerts are
    delivered before the process exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def quiet_broken_pipe() -> None:
    """The reader went away (``status | head``): stop writing, without a traceback."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush goes nowhere
        os.close(devnull)


def _status(args: argparse.Namespace) -> int:
    dirs, urls = fleet_sources(args)
    if not dirs and not urls:
        return _usage(f"give --state-dir DIR and/or --redis URL (or set ${ENV_REDIS_URL})")
    webhook = args.alert_webhook
    if webhook is not None and args.watch is None:
        return _usage("--alert-webhook needs --watch (alerts are sent as the state changes)")
    if webhook is None and args.watch is not None:
        webhook = os.environ.get(ENV_ALERT_WEBHOOK) or None
    try:
        if args.watch is None:
            view, code = _look(args)
            _show(args, view)
            return code
        return _watch(args, webhook)
    except BrokenPipeError:
        quiet_broken_pipe()
        return 0


def _watch(args: argparse.Namespace, webhook: str | None) -> int:
    sink = None
    if webhook is not None:
        sink = AlertSink(
            webhook,
            format=args.alert_format,
            chat_id=args.alert_chat_id,
            window=args.alert_window,
            source=args.alert_source,
        )
    alerter = None if sink is None else _Alerter(sink)
    code, shown = 0, 0
    try:
        with sigterm_interrupts():
            while args.iterations is None or shown < args.iterations:
                view, code = _look(args, alerter)
                _show(args, view)
                shown += 1
                if args.iterations is None or shown < args.iterations:
                    time.sleep(args.watch)
    except KeyboardInterrupt:
        pass
    finally:
        if sink is not None:
            sink.close(timeout=5.0)
    return code


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and at most 86400 (a day), got {text!r}"
        )
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status`` command."""
    status = sub.add_parser(
        "status",
        help="budgets, breakers, stores and the halt flag in one screen (exit 3: needs you)",
    )
    status.add_argument(
        "--state-dir",
        metavar="DIR",
        action="append",
        help="the bots' shared state directory (repeat for several)",
    )
    status.add_argument(
        "--redis",
        metavar="URL",
        action="append",
        help=f"the bots' Redis (repeat for several; default ${ENV_REDIS_URL})",
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_seconds,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until interrupted",
    )
    status.add_argument(
        "--alert-webhook",
        metavar="URL",
        help=(
            "with --watch: post each change (halt, breaker, runway, budget) to this webhook "
            f"(default ${ENV_ALERT_WEBHOOK}: keeps a token out of ps)"
        ),
    )
    status.add_argument(
        "--alert-format", choices=["json", "slack", "discord", "telegram"], default="json"
    )
    status.add_argument("--alert-chat-id", metavar="ID", help="Telegram's chat id")
    status.add_argument(
        "--alert-window", type=_seconds, default=300.0, metavar="SECONDS", help="flapping window"
    )
    status.add_argument("--alert-source", default="fleet", help="who speaks in the alerts")
    status.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)
    status.set_defaults(handler=_status)
