"""Run the simulator from the command line::

    python -m resilient_trading.testing --port 0 --seed 1 --speed 60 \\
        --fault-rate 0.05 --auto-fund 10000

The first line on stdout is ``listening on http://127.0.0.1:PORT``; on SIGTERM or SIGINT the
counters are printed as one JSON line. ``POST /info {"type": "simCounters"}`` returns them
at any time (weight 0, never rate-limited, never faulted).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from resilient_trading.testing import FaultConfig, Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hyperliquid-compatible exchange simulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds per second")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="total fault probability per request, spread over every kind",
    )
    parser.add_argument("--stall-seconds", type=float, default=3.0)
    parser.add_argument(
        "--auto-fund",
        type=float,
        default=10_000.0,
        help="USDC given to any new signer (0: refuse unknown wallets)",
    )
    parser.add_argument("--budget", type=int, default=1200, help="IP weight per window")
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument(
        "--address-buffer",
        type=int,
        default=10_000,
        help="initial actions per address, before volume adds one per USDC",
    )
    parser.add_argument(
        "--actions-per-usd",
        type=float,
        default=1.0,
        help="actions the address cap grows by per USDC traded (Hyperliquid: 1)",
    )
    parser.add_argument(
        "--schedule-cancel-volume",
        type=float,
        default=1_000_000.0,
        help="lifetime volume (USDC) needed before scheduleCancel is accepted",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.fault_rate <= 1:
        parser.error("--fault-rate must be between 0 and 1")
    faults = FaultConfig.uniform(args.fault_rate, stall_seconds=args.stall_seconds)
    sim = Simulator(
        seed=args.seed,
        speed=args.speed,
        faults=faults,
        port=args.port,
        auto_fund=args.auto_fund or None,
        budget=args.budget,
        window=args.window,
        address_buffer=args.address_buffer,
        actions_per_usd=args.actions_per_usd,
        schedule_cancel_volume=args.schedule_cancel_volume,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sim.start()
    print(f"listening on {sim.base_url}", flush=True)
    done.wait()
    sim.stop()
    print(json.dumps(sim.snapshot(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
