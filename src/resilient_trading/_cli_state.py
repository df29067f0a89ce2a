"""``resilient-trading state ...``: inspect and fix a state file, or a JSON value in Redis.

Every home is reachable: ``state show PATH`` reads a :class:`LockedJsonStore` file (or a
``FileState`` file, recognised by its records);
``state show --redis URL --key K`` reads the JSON value at a Redis key (through
:class:`~resilient_trading.backends.RedisState`, the same home the breaker and the limiter
use). Errors are one line naming the file or key, exit code 1, no traceback.
"""

from __future__ import annotations

import argparse
import json
import marshal
from typing import Any

from resilient_trading._envelope import EnvelopeError, decode, find_unstorable
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


def _home(args: argparse.Namespace, names: tuple[str, ...]) -> tuple[str, list[str]]:
    """Split the positionals into the file path (``""`` with ``--redis``) and the rest."""
    rest = list(args.args)
    if args.redis is not None or args.key is not None:
        if args.redis is None or args.key is None:
            raise ValueError("--redis URL and --key K go together")
        path = ""
    else:
        if not rest:
            raise ValueError("give a state file PATH, or --redis URL --key K")
        path = rest.pop(0)
    if len(rest) != len(names):
        want = " ".join(names) or "nothing more"
        raise ValueError(f"expected {want} after the state's location, got {rest!r}")
    return path, rest


def _redis(args: argparse.Namespace) -> Any:
    from resilient_trading.backends import RedisState

    return RedisState(args.redis, args.key)


def _where(args: argparse.Namespace, path: str) -> str:
    return path or _redis(args).location


def _is_file_state(path: str) -> bool:
    """A ``FileState`` file (a limiter's or breaker's small state) rather than a store."""
    try:
        with open(path, "rb") as fh:
            return b"\x00RTS1 " in fh.read(1 << 16)
    except OSError:
        return False


def _read(args: argparse.Namespace, path: str) -> Any:
    if not path:
        return _redis(args).read()
    if _is_file_state(path):
        from resilient_trading.backends import FileState

        state = FileState(path)
        try:
            return state.read()
        finally:
            state.close()
    with LockedJsonStore(path) as store:
        return store.read()


def _print(value: Any) -> None:
    try:
        print(json.dumps(value, indent=2, sort_keys=True))
    except RecursionError as exc:
        raise ValueError("the value is nested too deeply to print") from exc


def _show(args: argparse.Namespace) -> int:
    path, _ = _home(args, ())
    _print(_read(args, path))
    return 0


def _get(args: argparse.Namespace) -> int:
    path, (key,) = _home(args, ("KEY",))
    value = _walk(_read(args, path), key)
    if value is _MISSING:
        raise ValueError(f"no key {key!r} in {_where(args, path)}")
    _print(value)
    return 0


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ValueError("JSON_VALUE is nested too deeply") from exc
    except ValueError as exc:
        raise ValueError(
            f"JSON_VALUE is not valid JSON: {exc} (a string needs JSON quotes: '\"text\"')"
        ) from exc


def _put(doc: Any, parts: list[str], value: Any, key: str) -> None:
    node = doc
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{part!r} in {key!r} is not an object")
        node = child
    node[parts[-1]] = value
    bad = find_unstorable(doc)
    if bad:
        raise ValueError(f"cannot store {bad}")


def _set(args: argparse.Namespace) -> int:
    path, (key, text) = _home(args, ("KEY", "JSON_VALUE"))
    value = _parse_value(text)
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"KEY must be a dotted path like 'a.b', got {key!r}")

    def change(old: Any, now: float) -> tuple[Any, None]:
        doc = {} if old is None else marshal.loads(marshal.dumps(old))
        if not isinstance(doc, dict):
            raise ValueError(f"the value at {_where(args, path)} is not a JSON object")
        _put(doc, parts, value, key)
        return doc, None

    if not path:
        _redis(args).transact(change)
    elif _is_file_state(path):
        from resilient_trading.backends import FileState

        state = FileState(path, lock_timeout=args.lock_timeout)
        try:
            state.transact(change)
        finally:
            state.close()
    else:
        schema = _schema_of(path)
        with (
            LockedJsonStore(
                path,
                lock_timeout=args.lock_timeout,
                schema_version=schema,
                migrate=_unchanged if schema is not None else None,
            ) as store,
            store.transaction() as doc,
        ):
            _put(doc, parts, value, key)
    print(f"set {key} in {_where(args, path)}")
    return 0


def _schema_of(path: str) -> int | None:
    """The schema version a store file carries, so that ``set`` writes it back unchanged (the
    CLI knows nothing of the bot's schema; stamping ``null`` would make the bot migrate again)."""
    try:
        with open(path, "rb") as file:
            return decode(file.read()).schema
    except (OSError, EnvelopeError):
        return None  # missing or damaged: the store itself says so, naming the file


def _unchanged(data: dict[str, Any], version: int) -> dict[str, Any]:
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in state files")


def _restore(args: argparse.Namespace) -> int:
    with LockedJsonStore(args.path) as store:
        generation = store.restore_backup(force=args.force)
    print(
        f"restored {args.path} from its backup (generation {generation}); "
        f"the version replaced is kept beside it as {args.path}.replaced-<time>"
    )
    return 0


def _guard(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = handler(args)
        except RecursionError as exc:  # the CLI's contract: one line, exit 1, no traceback
            raise ValueError("the state is nested too deeply to handle") from exc
        return result

    return run


def _location(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="PATH " + " ".join(names),
        help="the state file, then "
        + (" ".join(names) or "nothing")
        + " (with --redis, omit PATH)",
    )
    parser.add_argument("--redis", metavar="URL", help="read a JSON value in Redis instead")
    parser.add_argument("--key", metavar="K", help="the Redis key (with --redis)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``state`` command group."""
    state = sub.add_parser(
        "state", help="inspect or change a LockedJsonStore state file or a JSON value in Redis"
    )
    cmds = state.add_subparsers(dest="command", required=True)
    show = cmds.add_parser("show", help="print the whole document as pretty JSON")
    _location(show)
    show.set_defaults(handler=_guard(_show))
    get = cmds.add_parser("get", help="print one value (KEY is a dotted path: a.b.0)")
    _location(get, "KEY")
    get.set_defaults(handler=_guard(_get))
    set_ = cmds.add_parser(
        "set",
        help="set one value, in a transaction, while the bot runs (JSON_VALUE is JSON: "
        "'true', '3', '\"text\"')",
    )
    _location(set_, "KEY", "JSON_VALUE")
    set_.add_argument("--lock-timeout", type=float, default=10.0)
    set_.set_defaults(handler=_guard(_set))
    restore = cmds.add_parser(
        "restore", help="replace a damaged file with its backup (keeps what it replaces)"
    )
    restore.add_argument("path")
    restore.add_argument(
        "--force", action="store_true", help="restore even though the file is healthy"
    )
    restore.set_defaults(handler=_guard(_restore))
