"""A Hyperliquid-compatible exchange simulator with fault injection, for the official SDK.

>>> from examples.hl_sim import Simulator
>>> with Simulator(seed=1) as sim:          # doctest: +SKIP
...     info = Info(sim.base_url, skip_ws=True)
"""

from examples.hl_sim._engine import COINS, CoinSpec
from examples.hl_sim._server import FAULT_KINDS, FaultConfig, Simulator

__all__ = ["COINS", "FAULT_KINDS", "CoinSpec", "FaultConfig", "Simulator"]
