"""One fresh, funded account on a shared simulator, wrapped the default way.

Shared by the wrapper's fault matrix (``test_exchange_faults.py``) and its adversarial review
(``test_review_orders.py``): the real SDK talks HTTP to the bundled simulator, and a fault can
be armed for the next wrapped call only (never the setup's).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import eth_account

from resilient_trading import CircuitBreaker, RateLimit, RateLimiter, RetryPolicy
from resilient_trading.presets import hyperliquid as hl
from resilient_trading.testing import FaultConfig, Simulator

TIMEOUT = 0.25  # the SDK's request timeout; a stall (3 * TIMEOUT) lasts longer


@dataclass
class Rig:
    """One account, its raw SDK client, and the sync and async wrappers around it."""

    sim: Simulator
    faults: FaultConfig
    address: str
    raw: Any
    limiter: RateLimiter
    breaker: CircuitBreaker
    sync: hl.SafeExchange
    aio: hl.AsyncSafeExchange
    armed: tuple[str, str] | None = None

    def arm(self, fault: str, action: str) -> None:
        """Inject ``fault`` into the ``action`` of the next wrapped call (not the setup's)."""
        self.armed = (fault, action)

    def call(self, mode: str, path: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``path`` on the sync or the async wrapper (``mode``)."""
        if self.armed is not None:
            fault, action = self.armed
            self.faults.force(fault, only=action)
            self.armed = None
        if mode == "async":
            return asyncio.run(getattr(self.aio, path)(*args, **kwargs))
        return getattr(self.sync, path)(*args, **kwargs)

    def orders(self) -> list[Any]:
        """Every order of this account the simulator knows, in any status."""
        with self.sim.engine.lock:
            return [o for o in self.sim.engine.orders.values() if o.user == self.address]

    def open_orders(self) -> list[Any]:
        return [o for o in self.orders() if o.status == "open"]

    def szi(self, coin: str = "BTC") -> float:
        """The account's signed position size in ``coin``."""
        with self.sim.engine.lock:
            pos = self.sim.engine.accounts[self.address].positions.get(coin)
            return pos.szi if pos else 0.0

    def mid(self, coin: str = "BTC") -> float:
        with self.sim.engine.lock:
            return self.sim.engine.mid(coin)

    def px(self, frac: float, coin: str = "BTC") -> int:
        """A whole-dollar price at ``frac`` of the mid (below it for ``frac`` < 1)."""
        return int(self.mid(coin) * frac)

    def counter(self, name: str) -> int:
        value: int = self.sim.snapshot()[name]
        return value


def make_rig(
    sim: Simulator,
    faults: FaultConfig,
    retry: RetryPolicy | None,
    *,
    info: Any = None,
) -> Rig:
    """A new wallet with a funded account (``update_leverage`` creates it), wrapped with a
    one-failure breaker and ``retry`` (``None``: the wrapper's default, no retry policy)."""
    wallet = eth_account.Account.create()
    limiter = RateLimiter(RateLimit(100_000, 60.0))
    raw = hl.make_exchange(wallet, sim.base_url, limiter, timeout=TIMEOUT)
    raw.update_leverage(20, "BTC")
    breaker = CircuitBreaker(fail_max=1, reset_timeout=60.0)
    return Rig(
        sim,
        faults,
        wallet.address.lower(),
        raw,
        limiter,
        breaker,
        hl.wrap_exchange(raw, limiter, breaker=breaker, retry=retry, info=info),
        hl.wrap_exchange_async(raw, limiter, breaker=breaker, retry=retry, info=info),
    )


def fast_retry(attempts: int = 5) -> RetryPolicy:
    """A retry policy with millisecond waits, for tests."""
    return RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05)
