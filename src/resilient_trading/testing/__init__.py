"""Test tools: a Hyperliquid-compatible exchange simulator with fault injection, and a clock.

The simulator serves ``/info`` and ``/exchange`` on 127.0.0.1 for the unmodified
``hyperliquid-python-sdk``: prices, orders, fills, margin, Hyperliquid's IP weight budget, its
per-address action budget (``userRateLimit``), ``scheduleCancel``, ``expiresAfter``, its
nonce and signature rules (docs/howto/simulator.md lists which rules and texts), and faults
injected at the HTTP layer (real resets, real stalls, 5xx, malformed bodies, answers lost
after the order was applied). It ships with the package,
so your own tests can start it; run it from a shell with ``python -m resilient_trading.testing``.

Example:
    >>> import eth_account
    >>> from hyperliquid.info import Info
    >>> from resilient_trading.testing import FaultConfig, Simulator
    >>> with Simulator(seed=1, auto_fund=10_000) as sim:
    ...     info = Info(sim.base_url, skip_ws=True)
    ...     sorted(info.all_mids())
    ['BTC', 'ETH', 'SOL']
"""

from resilient_trading._clock import ManualClock
from resilient_trading.testing._engine import COINS, CoinSpec
from resilient_trading.testing._server import (
    EXTRA_FAULT_KINDS,
    FAULT_KINDS,
    FaultConfig,
    Simulator,
)

__all__ = [
    "COINS",
    "EXTRA_FAULT_KINDS",
    "FAULT_KINDS",
    "CoinSpec",
    "FaultConfig",
    "ManualClock",
    "Simulator",
]
