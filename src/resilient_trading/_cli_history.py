"""``resilient-trading history show PATH [--tail N] [--json]``: read a bot's journal.

Prints every record of the journal at ``PATH`` (its rotated files included, oldest first), or
the last ``N``: one line each, ``TIME  {record}`` with the time in UTC, or with ``--json`` one
JSON object per line (``{"time": ..., "record": {...}}``) for ``jq``. Read-only: it creates
nothing and takes the writers' lock only while it opens the files. See
:mod:`resilient_trading._journal`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging

from resilient_trading._journal import Journal

__all__ = ["register"]


def _show(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    journal = Journal(args.path)
    if not journal.files():
        raise ValueError(
            f"no journal at {args.path} (neither the file nor rotated files beside it): "
            "check the path the bot writes its history to"
        )
    entries = journal.read() if args.tail is None else journal.tail(args.tail)
    for entry in entries:
        if args.json:
            print(json.dumps(entry.to_json(), separators=(",", ":")))
        else:
            when = datetime.datetime.fromtimestamp(entry.time, datetime.timezone.utc)
            record = json.dumps(entry.record, separators=(",", ":"))
            print(f"{when.isoformat(timespec='milliseconds')}  {record}")
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"--tail takes a count >= 0, got {text}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``history`` command group."""
    history = sub.add_parser("history", help="read a bot's append-only history (journal)")
    commands = history.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print the journal's records, oldest first")
    show.add_argument("path", metavar="PATH", help="the journal's live file (history.jsonl)")
    show.add_argument("--tail", type=_count, metavar="N", help="only the last N records")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(handler=_show)
