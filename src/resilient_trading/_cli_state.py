"""``resilient-trading state ...``: inspect and fix a LockedJsonStore file while the bot runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from resilient_trading._jsonstore import LockedJsonStore

__all__ = ["register"]

_MISSING = object()


def _walk(doc: Any, key: str) -> Any:
    node = doc
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(LockedJsonStore(args.path).read(), indent=2, sort_keys=True))
    return 0


def _get(args: argparse.Namespace) -> int:
    value = _walk(LockedJsonStore(args.path).read(), args.key)
    if value is _MISSING:
        raise KeyError(f"no key {args.key!r} in {args.path}")
    print(json.dumps(value, indent=2, sort_keys=True))
    return 0


def _set(args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.value, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ValueError(f"JSON_VALUE is not valid JSON: {exc}") from exc
    parts = args.key.split(".")
    if not all(parts):
        raise ValueError(f"KEY must be a dotted path like 'a.b', got {args.key!r}")
    store = LockedJsonStore(args.path, lock_timeout=args.lock_timeout)
    with store.transaction() as doc:
        node = doc
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{part!r} in {args.key!r} is not an object")
            node = child
        node[parts[-1]] = value
    print(f"set {args.key} in {args.path}")
    return 0


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in state files")


def _restore(args: argparse.Namespace) -> int:
    generation = LockedJsonStore(args.path).restore_backup()
    print(f"restored {args.path} from its backup (generation {generation})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``state`` command group."""
    state = sub.add_parser("state", help="inspect or change a LockedJsonStore state file")
    cmds = state.add_subparsers(dest="command", required=True)
    show = cmds.add_parser("show", help="print the whole document as pretty JSON")
    show.add_argument("path")
    show.set_defaults(handler=_show)
    get = cmds.add_parser("get", help="print one value (KEY is a dotted path: a.b.0)")
    get.add_argument("path")
    get.add_argument("key")
    get.set_defaults(handler=_get)
    set_ = cmds.add_parser("set", help="set one value, in a transaction, while the bot runs")
    set_.add_argument("path")
    set_.add_argument("key")
    set_.add_argument("value", metavar="JSON_VALUE")
    set_.add_argument("--lock-timeout", type=float, default=10.0)
    set_.set_defaults(handler=_set)
    restore = cmds.add_parser("restore", help="replace a damaged file with its backup")
    restore.add_argument("path")
    restore.set_defaults(handler=_restore)
