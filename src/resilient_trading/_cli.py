"""The operator's command line: ``resilient-trading <group> ...``.

Each command group lives in its own ``_cli_<group>.py`` module exposing
``register(subparsers)``; this module only assembles them. Exit codes: 0 success,
1 a typed library error (message on stderr, no traceback), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from resilient_trading._errors import ResilienceError

_Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _groups() -> list[_Register]:
    from resilient_trading import (
        _cli_breaker,
        _cli_halt,
        _cli_history,
        _cli_limits,
        _cli_metrics,
        _cli_state,
        _cli_status,
        _cli_watchdog,
    )

    groups: list[_Register] = [
        _cli_state.register,
        _cli_breaker.register,
        _cli_limits.register,
        _cli_watchdog.register,
        _cli_status.register,
        _cli_halt.register,
        _cli_metrics.register,
        _cli_history.register,
    ]
    return groups


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (used by ``main`` and by the docs)."""
    parser = argparse.ArgumentParser(
        prog="resilient-trading",
        description=(
            "Inspect and steer a fleet of bots: state, breakers, budgets, halt, status, "
            "metrics and history."
        ),
    )
    sub = parser.add_subparsers(
        dest="group",
        required=True,
        metavar="{state,breaker,limits,watchdog,status,halt,resume,metrics,history}",
    )
    for register in _groups():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resilient-trading`` command. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ResilienceError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
