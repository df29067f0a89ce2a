"""``resilient-trading watchdog``: cancel a dead bot's open orders (the local dead man's switch).

Run it beside a bot whose :class:`~resilient_trading.presets.hyperliquid.DeadMansSwitch` is in
watchdog mode (an address below the exchange's $1M ``scheduleCancel`` volume)::

    HYPERLIQUID_PRIVATE_KEY=0x... resilient-trading watchdog --state STATE_DIR --url URL

It reads ``STATE_DIR/heartbeat.json`` every ``--poll`` seconds; when the heartbeat is older
than the deadline the bot wrote into it, it cancels the open orders of the bot's address that
could open or grow a position, once per death; reduce-only orders (the position's stop-loss and
take-profit) stay, so a dead bot's position keeps its stop (``--cancel-reduce-only`` cancels
those too, as the exchange's ``scheduleCancel`` does). It stands down when the bot stops
cleanly. The key is read from the environment variable named by ``--key-env`` (never from
the command line, where ``ps`` shows it); it must sign for the heartbeat's address (the
account, or an agent of it with ``--account-address``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``watchdog`` command."""
    parser = sub.add_parser(
        "watchdog", help="cancel a dead bot's open orders when its heartbeat goes stale"
    )
    _arguments(parser)
    parser.set_defaults(handler=_run)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", required=True, help="the bot's DeadMansSwitch state_dir")
    parser.add_argument(
        "--url",
        default=None,
        help="the exchange's API URL (default: Hyperliquid testnet)",
    )
    parser.add_argument(
        "--key-env",
        default="HYPERLIQUID_PRIVATE_KEY",
        help="the environment variable holding the signing key",
    )
    parser.add_argument(
        "--account-address", default=None, help="the account, when the key is an agent's"
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between checks")
    parser.add_argument(
        "--cancel-reduce-only",
        action="store_true",
        help="cancel reduce-only orders too (default: a dead bot's stops and take-profits stay)",
    )


def _run(args: argparse.Namespace) -> int:
    import eth_account
    from hyperliquid.exchange import Exchange
    from hyperliquid.info import Info
    from hyperliquid.utils import constants

    from resilient_trading.presets.hyperliquid._deadman import cancel_open_orders, run_watchdog

    if not args.poll > 0:
        raise ValueError(f"--poll must be > 0, got {args.poll!r}")
    key = os.environ.get(args.key_env)
    if not key:
        raise ValueError(
            f"no signing key: set the environment variable {args.key_env} "
            "(or name another with --key-env)"
        )
    url = args.url or constants.TESTNET_API_URL
    wallet = eth_account.Account.from_key(key)
    exchange = Exchange(wallet, url, account_address=args.account_address)
    info = Info(url, skip_ws=True)
    mine = (args.account_address or wallet.address).lower()

    def cancel(address: str) -> int:
        if address.lower() != mine:
            raise ValueError(
                f"the heartbeat is for {address}, but this key signs for {mine}: "
                "start the watchdog with the bot's key (or --account-address)"
            )
        return cancel_open_orders(
            exchange, info, mine, keep_reduce_only=not args.cancel_reduce_only
        )

    print(f"watching {args.state} for {mine}", flush=True)
    run_watchdog(args.state, cancel=cancel, poll=args.poll)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resilient_trading._cli_watchdog``: ``resilient-trading watchdog`` alone."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="resilient-trading watchdog")
    _arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
