"""``resilient-trading breaker ...``: see and reset circuit breakers kept in a state file."""

from __future__ import annotations

import argparse
import dataclasses
import json

from resilient_trading._breaker import CircuitBreaker, snapshot_of
from resilient_trading._jsonstore import LockedJsonStore

__all__ = ["register"]


def _status(args: argparse.Namespace) -> int:
    doc = LockedJsonStore(args.path).read()
    breakers = doc.get("breakers", {})
    names = [args.name] if args.name else sorted(breakers)
    out = {}
    for name in names:
        if name not in breakers:
            raise KeyError(f"no breaker {name!r} in {args.path}")
        snap = snapshot_of(name, breakers[name], args.reset_timeout)
        out[name] = {k: str(v) if k == "state" else v for k, v in dataclasses.asdict(snap).items()}
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _reset(args: argparse.Namespace) -> int:
    doc = LockedJsonStore(args.path).read()
    if args.name not in doc.get("breakers", {}):
        raise KeyError(f"no breaker {args.name!r} in {args.path}")
    CircuitBreaker(name=args.name, state_path=args.path).reset()
    print(f"breaker {args.name!r} in {args.path} is closed")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``breaker`` command group."""
    group = sub.add_parser("breaker", help="see or reset circuit breakers in a state file")
    cmds = group.add_subparsers(dest="command", required=True)
    status = cmds.add_parser("status", help="print the breakers' state as JSON")
    status.add_argument("path")
    status.add_argument("--name", help="only this breaker")
    status.add_argument(
        "--reset-timeout",
        type=float,
        default=None,
        help="report when a trial is due, for breakers with this reset_timeout",
    )
    status.set_defaults(handler=_status)
    reset = cmds.add_parser("reset", help="close a breaker and clear its latch")
    reset.add_argument("path")
    reset.add_argument("--name", default="default")
    reset.set_defaults(handler=_reset)
