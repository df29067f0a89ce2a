"""``resilient-trading limits status``: how much of a shared budget is spent.

``limits status PATH`` (or ``--state PATH``) reads a file budget without creating anything and
without waiting forever: a budget locked for longer than ``--lock-timeout`` is an error that
says so. ``limits status --redis URL --key K`` reads a Redis budget in one round trip; when
Redis cannot be reached it says that every sharer is running on its local share (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import threading
import time
from typing import Any

from resilient_trading import _limiter_compact as compact
from resilient_trading import _limiter_rules as rules
from resilient_trading._errors import (
    LockTimeoutError,
    NetworkError,
    ResilienceError,
    StateCorruptedError,
)
from resilient_trading._ratelimit import LimiterStatus, status_of
from resilient_trading.backends import FileState

__all__ = ["read_file_status", "register"]


def read_file_status(path: str, lock_timeout: float = 5.0) -> LimiterStatus:
    """The status of a file budget; never creates the file, never waits past ``lock_timeout``."""
    if not os.path.lexists(path):
        raise FileNotFoundError(
            errno.ENOENT,
            f"no rate budget at {path}: check the path (the limiter's state_path); "
            "nothing was created",
        )
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory, not a rate budget file")
    state = FileState(path, lock_timeout=lock_timeout)
    box: list[Any] = []

    def read() -> None:
        try:
            box.append(("ok", state.read(), time.monotonic(), time.time()))
        except BaseException as exc:  # handed to the main thread below
            box.append(("error", exc))

    # a reader that waits on a lock held by a stuck process must not hang the operator
    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(lock_timeout)
    if not box:
        raise LockTimeoutError(
            f"rate budget {path} stayed locked for {lock_timeout:g}s; a process may be stuck "
            "holding it: retry, or raise --lock-timeout",
            lock_path=path,
            timeout=lock_timeout,
        )
    state.close()
    if box[0][0] == "error":
        raise box[0][1]
    _, data, now, wall = box[0]
    try:
        parsed = compact.parse(data)
    except rules.BadState as exc:
        raise StateCorruptedError(
            f"rate budget {path} does not hold a limiter state ({exc}); the next acquire "
            "repairs it conservatively, or delete it (it holds only a rate window)",
            path=path,
        ) from exc
    return status_of(parsed, now, wall, path)


def read_address_status(path: str) -> dict[str, Any] | None:
    """The status of a Hyperliquid ``AddressBudget`` file (used, cap, actions per hour, runway),
    or ``None`` when ``path`` holds something else. Never creates a file."""
    if not os.path.isfile(path):
        return None
    state = FileState(path)
    try:
        raw = state.read()
    except ResilienceError:
        return None  # not readable as a budget record: the rate-budget reader says why
    finally:
        state.close()
    if not (isinstance(raw, dict) and "cap" in raw and "horizon_end" in raw):
        return None
    from resilient_trading.presets.hyperliquid import AddressStatus

    status = AddressStatus.of_record(raw, location=path, now=time.time())
    out = status.to_json()
    out["summary"] = status.summary()
    return out


def read_redis_status(url: str, key: str, timeout: float = 2.0) -> LimiterStatus:
    """The status of a Redis budget, read by the same Lua script the limiters run."""
    from resilient_trading._limiter_redis import RedisBudget

    budget = RedisBudget(url, key, [], base=time.monotonic, on_error="raise", timeout=timeout)
    try:
        state, now = budget.snapshot()
    except NetworkError as exc:
        raise NetworkError(
            f"{exc}. Sharers with on_backend_error='fallback' (the default) are running on "
            f"their local share (mode: fallback) until it is back"
        ) from exc
    finally:
        budget.close()
    return status_of(state, now, time.time(), budget.location)


def _status(args: argparse.Namespace) -> int:
    path = args.state or args.path
    if args.redis:
        status = read_redis_status(args.redis, args.key, args.timeout)
    elif path:
        address = read_address_status(path)
        if address is not None:
            print(json.dumps(address, indent=2, sort_keys=True))
            return 0
        status = read_file_status(path, args.lock_timeout)
    else:
        raise ValueError("give a state file (PATH or --state) or --redis URL --key K")
    out = dataclasses.asdict(status)
    # The outage mode belongs to each sharing process (``limiter.status().mode``, its
    # ``fallback`` events); read from outside, it would always say "shared".
    out.pop("mode", None)
    out["utilisation"] = round(status.utilisation, 4)
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``limits`` command group."""
    group = sub.add_parser("limits", help="see a rate budget shared through a file or Redis")
    cmds = group.add_subparsers(dest="command", required=True)
    status = cmds.add_parser("status", help="weight used and remaining in each window (JSON)")
    status.add_argument("path", nargs="?", help="the limiter's state_path")
    status.add_argument("--state", help="the limiter's state_path (same as PATH)")
    status.add_argument("--redis", metavar="URL", help="the limiter's redis_url")
    status.add_argument("--key", default="default", help="the limiter's key (with --redis)")
    status.add_argument("--lock-timeout", type=float, default=5.0, help="seconds (file)")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds (Redis)")
    status.set_defaults(handler=_status)
