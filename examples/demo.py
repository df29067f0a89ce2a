"""A short demonstration of resilient-trading, run by ``make demo``.

It provokes real faults on 127.0.0.1 and shows how the library classifies each one.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import requests

from resilient_trading import TransientError, classify


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="unused by this demo")
    parser.parse_args(argv)
    results = {}
    try:
        requests.get(f"http://127.0.0.1:{_closed_port()}/info", timeout=1)
    except requests.RequestException as exc:
        err = classify(exc, operation="GET /info")
        verdict = "retry" if isinstance(err, TransientError) else "stop"
        print(f"connection refused -> {type(err).__name__}: {verdict}")
        results["refused"] = type(err).__name__
    try:
        json.loads("{not json")
    except ValueError as exc:
        err = classify(exc)
        print(f"unknown error      -> {type(err).__name__}: stop (fail safe)")
        results["unknown"] = type(err).__name__
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
