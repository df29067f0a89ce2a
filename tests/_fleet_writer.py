"""A bot-like process that leaves shared state behind (for the status and metrics tests, H12).

``python -m tests._fleet_writer dir PATH`` or ``... redis URL``: spends 300 of a 1200/min
budget, latches the breaker ``orders`` (a critical error), keeps ``info`` closed, commits a
store twice (file home only) and spends 600 address actions in minutes (a runway under a
day). Then exits: the state outlives it.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import timedelta
from pathlib import Path

from resilient_trading import (
    AuthenticationError,
    CircuitBreaker,
    LockedJsonStore,
    RateLimit,
    RateLimiter,
)
from resilient_trading.presets.hyperliquid import AddressBudget

SECRET = "0x" + "ab" * 32
ADDRESS = "0x" + "cd" * 20


def _latch() -> None:
    raise AuthenticationError(f"bad key {SECRET}")


def main(where: str, value: str) -> None:
    state_dir = Path(value) if where == "dir" else None
    url = None if where == "dir" else value

    def path(name: str) -> str | None:
        return None if state_dir is None else str(state_dir / name)

    limiter = RateLimiter(RateLimit(1200, 60), state_path=path("budget.json"), redis_url=url)
    limiter.acquire(300)
    orders = CircuitBreaker(name="orders", state_path=path("breaker.json"), redis_url=url)
    with contextlib.suppress(AuthenticationError):
        orders.call(_latch)
    CircuitBreaker(name="info", state_path=path("breaker.json"), redis_url=url)
    budget = AddressBudget(
        ADDRESS,
        lasts=timedelta(hours=2),
        burst=1000,
        state_path=path("address.json"),
        redis_url=url,
    )
    budget.acquire(600)
    if state_dir is not None:
        with LockedJsonStore(state_dir / "state.json") as store:
            for n in (1, 2):
                with store.transaction() as doc:
                    doc["n"] = n


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
