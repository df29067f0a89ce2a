"""``resilient-trading metrics``: a Prometheus exporter for the fleet's shared state.

``metrics --listen 127.0.0.1:9464 --state-dir DIR [--redis URL]`` serves ``/metrics`` (read
from the shared state at each scrape; no bot needs to run) and ``/healthz`` until interrupted.
``metrics --once --state-dir DIR`` prints the metrics once and exits. Needs the ``metrics``
extra (``pip install 'resilient-trading[metrics]'``).
"""

from __future__ import annotations

import argparse
import sys
import threading

__all__ = ["parse_listen", "register"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (all interfaces) as ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT or :PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # ":PORT": every interface


def _metrics(args: argparse.Namespace) -> int:
    from resilient_trading import _metrics

    if args.state_dir is None and args.redis is None:
        raise ValueError("give --state-dir DIR and/or --redis URL")
    if args.once:
        sys.stdout.write(_metrics.exposition(state_dir=args.state_dir, redis_url=args.redis))
        return 0
    host, port = args.listen
    server = _metrics.serve(host, port, state_dir=args.state_dir, redis_url=args.redis)
    print(
        f"serving http://{host}:{server.server_port}/metrics and /healthz (Ctrl-C stops)",
        flush=True,
    )
    try:
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
        help="where to serve /metrics and /healthz (default 127.0.0.1:9464)",
    )
    metrics.add_argument("--state-dir", metavar="DIR", help="the bots' shared state directory")
    metrics.add_argument("--redis", metavar="URL", help="the bots' Redis")
    metrics.add_argument("--once", action="store_true", help="print the metrics once and exit")
    metrics.set_defaults(handler=_metrics)
