"""``resilient-trading metrics``: a Prometheus exporter for the fleet's shared state.

``metrics --listen 127.0.0.1:9464 --state-dir DIR [--state-dir DIR2 ...] [--redis URL ...]``
serves ``/metrics`` (read from the shared state at each scrape; no bot needs to run) and
``/healthz`` (JSON, 200 or 503 with the reasons) until interrupted (Ctrl-C or SIGTERM).
``--listen`` takes ``HOST:PORT``, ``:PORT`` (every interface) or ``[::1]:PORT`` (IPv6).
Without ``--state-dir`` and ``--redis``, ``$RESILIENT_TRADING_REDIS_URL`` is the Redis read.
``metrics --once --state-dir DIR`` prints the metrics once and exits. Needs the ``metrics``
extra (``pip install 'resilient-trading[metrics]'``).
"""

from __future__ import annotations

import argparse
import errno
import sys
import threading

from resilient_trading._cli_status import (
    ENV_REDIS_URL,
    USAGE,
    fleet_sources,
    quiet_broken_pipe,
    sigterm_interrupts,
)

__all__ = ["parse_listen", "register"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPV6]:PORT`` as ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    bad = argparse.ArgumentTypeError(
        f"--listen wants HOST:PORT, :PORT or [IPV6]:PORT (port 0-65535), got {text!r}"
    )
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise bad
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise bad
        return host[1:-1], int(port)
    if ":" in host:  # an IPv6 address must be bracketed: ::1:9464 is ambiguous
        raise bad
    return host or "0.0.0.0", int(port)  # ":PORT": every interface


def _metrics(args: argparse.Namespace) -> int:
    from resilient_trading import _metrics

    dirs, urls = fleet_sources(args)
    if not dirs and not urls:
        print(
            "resilient-trading metrics: error: give --state-dir DIR and/or --redis URL "
            f"(or set ${ENV_REDIS_URL})",
            file=sys.stderr,
        )
        return USAGE
    if args.once:
        try:
            text = _metrics.exposition(state_dir=dirs, redis_url=urls, expect_state=True)
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            quiet_broken_pipe()
        return 0
    host, port = args.listen
    try:
        server = _metrics.serve(host, port, state_dir=dirs, redis_url=urls, expect_state=True)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                exc.errno,
                f"port {port} on {host} is already in use (another exporter, or the bot's "
                "--metrics-port?): pick a free one with --listen HOST:PORT",
            ) from exc
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving http://{shown}:{server.server_port}/metrics and /healthz (Ctrl-C stops)",
        flush=True,
    )
    try:
        with sigterm_interrupts():
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``metrics`` command."""
    metrics = sub.add_parser("metrics", help="serve the fleet's shared state to Prometheus")
    metrics.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 9464),
        metavar="HOST:PORT",
        help="where to serve /metrics and /healthz (default 127.0.0.1:9464; [::1]:PORT: IPv6)",
    )
    metrics.add_argument(
        "--state-dir",
        metavar="DIR",
        action="append",
        help="the bots' shared state directory (repeat for several)",
    )
    metrics.add_argument(
        "--redis",
        metavar="URL",
        action="append",
        help=f"the bots' Redis (repeat for several; default ${ENV_REDIS_URL})",
    )
    metrics.add_argument("--once", action="store_true", help="print the metrics once and exit")
    metrics.set_defaults(handler=_metrics)
