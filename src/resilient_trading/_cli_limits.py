"""``resilient-trading limits status --state PATH``: how much of a shared budget is spent."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from resilient_trading._ratelimit import status_from_state
from resilient_trading.backends import FileState

__all__ = ["register"]


def _status(args: argparse.Namespace) -> int:
    state = FileState(args.state, lock_timeout=5.0)
    try:
        status = status_from_state(state.read(), time.time(), None, args.state)
    finally:
        state.close()
    out = dataclasses.asdict(status)
    out["utilisation"] = round(status.utilisation, 4)
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``limits`` command group."""
    group = sub.add_parser("limits", help="see a rate budget shared through a state file")
    cmds = group.add_subparsers(dest="command", required=True)
    status = cmds.add_parser("status", help="weight used and remaining in each window (JSON)")
    status.add_argument("--state", required=True, help="the limiter's state_path")
    status.set_defaults(handler=_status)
