"""``resilient-trading breaker ...``: see and reset circuit breakers kept in a state file or Redis.

``breaker status PATH`` / ``breaker status --redis URL [--name NAME]`` print the breakers as
JSON; ``breaker reset PATH --name NAME`` / ``breaker reset --redis URL --name NAME`` close one
and clear its latch. A damaged record is reported with the file (or Redis key) and exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

from resilient_trading._breaker import CircuitBreaker, snapshot_of
from resilient_trading._errors import NetworkError, redact
from resilient_trading._jsonstore import LockedJsonStore
from resilient_trading.backends import RedisState

__all__ = ["register"]

_PREFIX = "resilient-trading:breaker:"


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no state file {path}: give the breaker's state_path")
    if not os.path.isfile(path):
        raise IsADirectoryError(f"{path} is not a state file: give the breaker's state_path")


def _file_records(path: str) -> dict[str, Any]:
    _check_file(path)
    breakers = LockedJsonStore(path).read().get("breakers", {})
    if not isinstance(breakers, dict):
        raise ValueError(f"{path}: 'breakers' is not a JSON object; this is not a breaker file")
    return {name: (value, f"{path}#breakers.{name}") for name, value in breakers.items()}


def _redis_names(url: str) -> list[str]:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        with client:
            keys = client.scan_iter(match=f"{_PREFIX}*", count=500)
            return sorted(key.decode()[len(_PREFIX) :] for key in keys)
    except redis.RedisError as exc:
        raise NetworkError(
            f"cannot list breakers in Redis at {_redis_where(url)}: {type(exc).__name__}; "
            "check --redis and that the server is up"
        ) from exc


def _redis_where(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return redact(f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}")


def _redis_records(url: str, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        state = RedisState(url, f"{_PREFIX}{name}")
        try:
            value = state.read()
            if value is not None:
                out[name] = (value, state.location)
        finally:
            state.close()
    return out


def _records(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if (args.path is None) == (args.redis is None):
        raise ValueError("give a state file PATH or --redis URL (one of them)")
    if args.redis is not None:
        names = [args.name] if args.name else _redis_names(args.redis)
        return _redis_records(args.redis, names), _redis_where(args.redis)
    return _file_records(args.path), args.path


def _status(args: argparse.Namespace) -> int:
    records, where = _records(args)
    names = [args.name] if args.name else sorted(records)
    out = {}
    for name in names:
        if name not in records:
            raise KeyError(f"no breaker {name!r} in {where}")
        value, location = records[name]
        snap = snapshot_of(name, value, args.reset_timeout, location, now=time.time())
        out[name] = {k: str(v) if k == "state" else v for k, v in dataclasses.asdict(snap).items()}
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _reset(args: argparse.Namespace) -> int:
    records, where = _records(args)
    if args.name not in records:
        raise KeyError(f"no breaker {args.name!r} in {where}")
    if args.redis is not None:
        CircuitBreaker(name=args.name, redis_url=args.redis).reset()
    else:
        CircuitBreaker(name=args.name, state_path=args.path).reset()
    print(f"breaker {args.name!r} in {where} is closed")
    return 0


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="the breakers' state file (state_path)")
    parser.add_argument(
        "--redis", metavar="URL", help="the breakers' Redis (redis_url) instead of a file"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``breaker`` command group."""
    group = sub.add_parser("breaker", help="see or reset circuit breakers (file or Redis)")
    cmds = group.add_subparsers(dest="command", required=True)
    status = cmds.add_parser("status", help="print the breakers' state as JSON")
    _where(status)
    status.add_argument("--name", help="only this breaker")
    status.add_argument(
        "--reset-timeout",
        type=float,
        default=None,
        help="report when a trial is due, for breakers with this reset_timeout",
    )
    status.set_defaults(handler=_status)
    reset = cmds.add_parser("reset", help="close a breaker and clear its latch")
    _where(reset)
    reset.add_argument("--name", default="default")
    reset.set_defaults(handler=_reset)
