"""Moved: the simulator ships with the package as :mod:`resilient_trading.testing`.

This shim keeps ``from examples.hl_sim import Simulator`` and ``python -m examples.hl_sim``
working for checkouts; new code imports ``resilient_trading.testing``.
"""

from resilient_trading.testing import COINS, FAULT_KINDS, CoinSpec, FaultConfig, Simulator

__all__ = ["COINS", "FAULT_KINDS", "CoinSpec", "FaultConfig", "Simulator"]
