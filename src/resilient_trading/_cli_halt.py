"""``resilient-trading halt`` / ``resume``: raise or lower the fleet-wide halt flag.

``halt --state-dir DIR --reason TEXT`` (or ``--redis URL``) stops new entries on every bot that
reads the flag (within one of its loops); ``resume --state-dir DIR`` lets them trade again.
Both print one line saying what they did; see :mod:`resilient_trading._halt`.
"""

from __future__ import annotations

import argparse
import datetime
import os

from resilient_trading._halt import Halt

__all__ = ["ENV_REDIS_URL", "open_halt", "register", "where_arguments"]


#: Read in place of ``--redis`` when neither ``--state-dir`` nor ``--redis`` is given.
ENV_REDIS_URL = "RESILIENT_TRADING_REDIS_URL"


def where_arguments(parser: argparse.ArgumentParser) -> None:
    """``--state-dir DIR`` / ``--redis URL``: where the fleet's shared state lives."""
    parser.add_argument("--state-dir", metavar="DIR", help="the bots' shared state directory")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=f"the bots' Redis (instead of a directory; default ${ENV_REDIS_URL})",
    )


def open_halt(args: argparse.Namespace) -> Halt:
    redis = args.redis
    if args.state_dir is None and redis is None:
        redis = os.environ.get(ENV_REDIS_URL) or None  # keeps a password out of `ps`
    if (args.state_dir is None) == (redis is None):
        raise ValueError(
            f"give --state-dir DIR or --redis URL (one of them; or set ${ENV_REDIS_URL})"
        )
    return Halt(state_dir=args.state_dir, redis_url=redis)


def _halt(args: argparse.Namespace) -> int:
    with open_halt(args) as halt:
        status = halt.halt(args.reason)
        since = datetime.datetime.fromtimestamp(status.since, datetime.timezone.utc)
        print(
            f"halted: no new entries on any bot using {halt.location} "
            f"(since {since.isoformat(timespec='seconds')}, reason: {status.reason}); "
            "undo with `resilient-trading resume`"
        )
    return 0


def _resume(args: argparse.Namespace) -> int:
    with open_halt(args) as halt:
        halt.resume()
        print(f"resumed: bots using {halt.location} make new entries again")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``halt`` and ``resume`` commands."""
    halt = sub.add_parser("halt", help="stop new entries on every bot of the fleet")
    where_arguments(halt)
    halt.add_argument("--reason", required=True, help="why (shown by `status` and in alerts)")
    halt.set_defaults(handler=_halt)
    resume = sub.add_parser("resume", help="lower the halt flag: bots trade again")
    where_arguments(resume)
    resume.set_defaults(handler=_resume)
