"""``resilient-trading status``: the whole fleet on one screen, from the shared state.

``status --state-dir DIR [--redis URL] [--json] [--watch [SECONDS]]`` shows every rate budget
(windows, pause, mode), every breaker (state, latch and its reason, since when), every address
budget (used, runway), every store (generation, last commit, backup age) and the halt flag,
read without changing anything (no bot needs to run).

Exit codes, so it can be a health check: 0 all well; 3 something needs an operator (the fleet
is halted, a breaker is latched, an address runway is under a day, or state cannot be read:
listed under "needs an operator"); 1 an error; 2 bad usage. ``--json`` prints the same as one
JSON object (``needs_operator`` is the list of reasons). ``--watch`` redraws every SECONDS
(default 2) until interrupted and exits with the last code; with ``--alert-webhook URL`` it
also posts each change (halt, a breaker opened / latched / closed, an address runway under a
day, a budget paused or on its fallback, unreadable state) through an
:class:`~resilient_trading.AlertSink`: one alert per change, flapping summarised, healthy
subjects seen at start not reported. It needs no bot running: one watcher covers the fleet.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from resilient_trading._alerts import AlertSink, Severity
from resilient_trading._fleet_view import RUNWAY_ALERT_SECONDS, FleetView, read_fleet

__all__ = ["NEEDS_OPERATOR", "fleet_alerts", "register", "render"]

#: The exit code when something needs an operator.
NEEDS_OPERATOR = 3


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
    if view.halt is None:
        lines.append("HALT       none: bots may make new entries")
    else:
        h = view.halt
        lines.append(
            f"HALT       HALTED since {_clock(h.since)} ({_ago(now - h.since)} ago) by {h.by}: "
            f"{h.reason}"
        )
    lines.append("")
    lines.append(f"BUDGETS ({len(view.budgets)})")
    for b in view.budgets:
        windows = (
            ", ".join(f"{w.used}/{w.budget} per {w.period_seconds:g}s" for w in b.windows)
            or "no windows yet"
        )
        pause = "no" if b.paused_until is None else f"until {_clock(b.paused_until)}"
        lines.append(
            f"  {b.location}: {windows} ({b.utilisation:.0%}), paused: {pause}, mode: {b.mode}"
        )
    lines.append(f"BREAKERS ({len(view.breakers)})")
    for k in view.breakers:
        state = k.state + (" LATCHED" if k.latched else "")
        since = (
            ""
            if k.opened_at is None or k.state == "closed"
            else (f" since {_clock(k.opened_at)} ({_ago(now - k.opened_at)} ago)")
        )
        why = f": {k.reason}" if k.reason and k.state != "closed" else ""
        lines.append(f"  {k.name:<16} {state}{since}, failures {k.failures}, trips {k.trips}{why}")
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
            f"  {s.path}: generation {s.generation}, last commit {_ago(now - s.last_commit)} "
            f"ago, backup {backup}, {s.size_bytes} B"
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
_HEALTHY = frozenset({"closed", "resumed", "ok"})


def fleet_alerts(view: FleetView) -> list[tuple[str, str, str, Severity]]:
    """``(subject, state, message, severity)`` for everything an operator watches."""
    out: list[tuple[str, str, str, Severity]] = []
    if view.halt is not None:
        out.append(("halt", "halted", f"no new entries: {view.halt.reason}", "critical"))
    else:
        out.append(("halt", "resumed", "new entries allowed", "info"))
    for k in view.breakers:
        if k.latched:
            out.append((f"breaker:{k.name}", "latched", f"latched: {k.reason}", "critical"))
        elif k.state != "closed":  # half-open is a trial of an open breaker: still open
            out.append((f"breaker:{k.name}", "open", f"open: {k.reason}", "warning"))
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
        state = (
            "paused" if b.paused_until is not None else ("fallback" if b.mode != "shared" else "ok")
        )
        out.append(
            (
                f"budget:{b.location}",
                state,
                f"mode {b.mode}",
                "warning" if state != "ok" else "info",
            )
        )
    problems = "; ".join(view.problems)
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


def _once(args: argparse.Namespace, alerter: _Alerter | None = None) -> int:
    view = read_fleet(args.state_dir, args.redis)
    if alerter is not None:
        alerter(view)
    if args.json:
        print(json.dumps(view.to_json(), indent=2, sort_keys=True))
    else:
        print(render(view))
    return NEEDS_OPERATOR if view.needs_operator() else 0


def _status(args: argparse.Namespace) -> int:
    if args.alert_webhook is not None and args.watch is None:
        raise ValueError("--alert-webhook needs --watch (alerts are sent as the state changes)")
    if args.watch is None:
        return _once(args)
    sink = None
    if args.alert_webhook is not None:
        sink = AlertSink(
            args.alert_webhook,
            format=args.alert_format,
            chat_id=args.alert_chat_id,
            window=args.alert_window,
            source=args.alert_source,
        )
    alerter = None if sink is None else _Alerter(sink)
    code, shown = 0, 0
    try:
        while args.iterations is None or shown < args.iterations:
            if sys.stdout.isatty():
                print("\x1b[2J\x1b[H", end="")  # clear the screen
            code = _once(args, alerter)
            shown += 1
            sys.stdout.flush()
            if args.iterations is None or shown < args.iterations:
                time.sleep(args.watch)
    except KeyboardInterrupt:
        pass
    finally:
        if sink is not None:
            sink.close(timeout=5.0)
    return code


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status`` command."""
    status = sub.add_parser(
        "status",
        help="budgets, breakers, stores and the halt flag in one screen (exit 3: needs you)",
    )
    status.add_argument("--state-dir", metavar="DIR", help="the bots' shared state directory")
    status.add_argument("--redis", metavar="URL", help="the bots' Redis")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_positive,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until interrupted",
    )
    status.add_argument(
        "--alert-webhook",
        metavar="URL",
        help="with --watch: post each change (halt, breaker, runway, budget) to this webhook",
    )
    status.add_argument(
        "--alert-format", choices=["json", "slack", "discord", "telegram"], default="json"
    )
    status.add_argument("--alert-chat-id", metavar="ID", help="Telegram's chat id")
    status.add_argument(
        "--alert-window", type=float, default=300.0, metavar="SECONDS", help="flapping window"
    )
    status.add_argument("--alert-source", default="fleet", help="who speaks in the alerts")
    status.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)
    status.set_defaults(handler=_status)
