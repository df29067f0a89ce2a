"""The one place where the bot meets the exchange, wrapped once with the library.

Every call goes through the official SDK (``Info``, ``Exchange``), a shared
:class:`~resilient_trading.RateLimiter` with Hyperliquid's weights, a persisted
:class:`~resilient_trading.CircuitBreaker` and a :class:`~resilient_trading.RetryPolicy`.
Orders carry a client order id; after an ambiguous failure the retry asks the exchange for
that cloid before sending again, so no order is ever placed twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eth_account import Account

from examples.hyperliquid_bot.config import BotConfig
from examples.hyperliquid_bot.nonce import NonceSource, install
from resilient_trading import (
    CircuitBreaker,
    ExchangeUnavailableError,
    RateLimitedClient,
    RateLimiter,
    RetryPolicy,
)
from resilient_trading._classify import classify_message
from resilient_trading._retry import RetryEvent
from resilient_trading.presets import hyperliquid as hl

__all__ = ["Gateway"]

_DONE = {
    "filled": "filled",
    "triggered": "filled",
    "open": "open",
    "canceled": "canceled",
    "marginCanceled": "canceled",
    "rejected": "rejected",
}


class Gateway:
    """The exchange as the bot sees it: a few plain methods, every one of them resilient."""

    def __init__(
        self,
        *,
        address: str,
        info: RateLimitedClient[Any],
        exchange: RateLimitedClient[Any],
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        meta: dict[str, Any],
    ) -> None:
        self.address = address
        self.info = info
        self.exchange = exchange
        self.limiter = limiter
        self.breaker = breaker
        self.retry = retry
        self.assets = {a["name"]: a for a in meta["universe"]}
        self.retries = 0
        self.last_price: float | None = None
        self.last_candle_ms: int | None = None

    @classmethod
    def connect(cls, config: BotConfig, key: str, base_url: str, state_dir: Path) -> Gateway:
        """Build the resilient SDK clients; the key is used for the wallet and forgotten."""
        ex_cfg = config.exchange
        limiter = RateLimiter(
            hl.REST_LIMIT.scaled(ex_cfg.budget_share),
            state_path=state_dir / "budget.json",
            key="hyperliquid",
        )
        breaker = CircuitBreaker(
            fail_max=ex_cfg.breaker_fail_max,
            reset_timeout=ex_cfg.breaker_reset_timeout,
            name="exchange",
            state_path=state_dir / "breaker.json",
        )
        holder: list[Gateway] = []

        def on_retry(event: RetryEvent) -> None:
            if holder:
                holder[0].retries += 1

        retry = RetryPolicy(
            attempts=ex_cfg.retry_attempts,
            base_delay=ex_cfg.retry_base_delay,
            max_delay=ex_cfg.retry_max_delay,
            on_retry=on_retry,
        )
        install(NonceSource(state_dir / "nonce.json"))
        wallet = Account.from_key(key)
        timeout = ex_cfg.request_timeout
        raw_info = breaker.call(retry.call, hl.make_info, base_url, limiter, timeout=timeout)
        info = hl.wrap_info(
            raw_info, limiter, breaker=breaker, retry=retry, default_pause=ex_cfg.pause_after_429
        )
        meta = info.meta()
        spot_meta = info.spot_meta()
        raw_exchange = hl.make_exchange(
            wallet, base_url, limiter, meta=meta, spot_meta=spot_meta, timeout=timeout
        )
        # Orders and cancels are interpreted here (a no-match IOC is an outcome, not an error),
        # so this client has weights and the 429 pause but no response check of its own.
        exchange = RateLimitedClient(
            raw_exchange,
            limiter=limiter,
            weights=hl.EXCHANGE_WEIGHTS,
            default_pause=ex_cfg.pause_after_429,
        )
        gateway = cls(
            address=wallet.address,
            info=info,
            exchange=exchange,
            limiter=limiter,
            breaker=breaker,
            retry=retry,
            meta=meta,
        )
        holder.append(gateway)
        gateway.guarded(
            lambda: hl.check_response(
                "update_leverage",
                exchange.update_leverage(config.risk.leverage, config.coin),
            )
        )
        return gateway

    # --- plumbing -----------------------------------------------------------------------------

    def guarded(self, fn: Any) -> Any:
        """Run ``fn`` with retry inside the breaker."""
        return self.breaker.call(self.retry.call, fn)

    # --- reads --------------------------------------------------------------------------------

    def user_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.info.user_state(self.address)
        return state

    def open_orders(self) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = self.info.frontend_open_orders(self.address)
        return orders

    def mid(self, coin: str) -> float:
        self.last_price = float(self.info.all_mids()[coin])
        return self.last_price

    def asset(self, coin: str) -> dict[str, Any]:
        return dict(self.assets[coin])

    def candles(self, coin: str, interval: str, lookback: int, interval_ms: int) -> list[Any]:
        # The exchange's clock, not ours, says which candle is the newest (the simulator may
        # compress time): after the first answer, ask relative to the newest candle seen.
        newest = self.last_candle_ms or int(time.time() * 1000)
        start = newest - lookback * interval_ms
        candles: list[Any] = self.info.candles_snapshot(coin, interval, start, newest + 10**9)
        if candles:
            self.last_price = float(candles[-1]["c"])
            self.last_candle_ms = int(candles[-1]["t"])
        return candles[-lookback:]

    def order_status(self, cloid: str) -> dict[str, Any]:
        """What the exchange knows of ``cloid``: ``never_placed`` when it knows nothing."""
        from hyperliquid.utils.types import Cloid

        answer = self.info.query_order_by_cloid(self.address, Cloid(cloid))
        if answer.get("status") != "order":
            return {"status": "never_placed", "oid": None}
        order = answer["order"]
        return {"status": _DONE.get(order["status"], order["status"]), "oid": order["order"]["oid"]}

    # --- writes -------------------------------------------------------------------------------

    def place(
        self,
        coin: str,
        is_buy: bool,
        size: float,
        px: float,
        order_type: dict[str, Any],
        reduce_only: bool,
        cloid: str,
    ) -> dict[str, Any]:
        """Send one order, at most once: ``{"status": filled|open|unfilled|..., "oid": ...}``."""
        from hyperliquid.utils.types import Cloid

        def attempt() -> dict[str, Any]:
            answer = self.exchange.order(
                coin, is_buy, size, px, order_type, reduce_only, Cloid(cloid)
            )
            return _interpret(answer)

        def check() -> dict[str, Any] | None:
            found = self.order_status(cloid)
            return None if found["status"] == "never_placed" else found

        result: dict[str, Any] = self.breaker.call(self.retry.call_checked, attempt, check)
        return result

    def cancel(self, coin: str, cloid: str) -> None:
        """Cancel by cloid; an order already gone counts as cancelled."""
        from hyperliquid.utils.types import Cloid

        def attempt() -> None:
            answer = self.exchange.cancel_by_cloid(coin, Cloid(cloid))
            for status in _statuses(answer, "cancel_by_cloid"):
                if isinstance(status, dict) and "error" in status:
                    if "never placed, already canceled, or filled" in status["error"]:
                        return
                    raise classify_message(status["error"], operation="cancel_by_cloid")

        self.guarded(attempt)

    # --- observation --------------------------------------------------------------------------

    def latched(self) -> bool:
        return self.breaker.latched

    def status(self) -> dict[str, Any]:
        budget = self.limiter.status()
        return {
            "price": self.last_price,
            "retries": self.retries,
            "breaker": str(self.breaker.state) + (" LATCHED" if self.breaker.latched else ""),
            "budget_used": budget.utilisation,
        }


def _statuses(answer: Any, operation: str) -> list[Any]:
    """The per-item statuses of an ``/exchange`` answer, or the error it carries.

    A body the SDK could not parse comes back as ``{"error": "Could not parse JSON: ..."}``;
    any other shape we do not know is a struggling exchange too, never a reason to latch.
    """
    if isinstance(answer, dict):
        if isinstance(answer.get("error"), str):
            raise classify_message(answer["error"], operation=operation)
        if answer.get("status") == "err":
            raise classify_message(str(answer.get("response")), operation=operation)
        try:
            statuses = answer["response"]["data"]["statuses"]
        except (KeyError, TypeError):
            statuses = None
        if isinstance(statuses, list) and statuses:
            return statuses
    raise ExchangeUnavailableError(
        f"unexpected answer to {operation}: {str(answer)[:200]}", operation=operation
    )


def _interpret(answer: Any) -> dict[str, Any]:
    status = _statuses(answer, "order")[0]
    if not isinstance(status, dict):
        raise ExchangeUnavailableError(f"unexpected order status {status!r}", operation="order")
    if "filled" in status:
        return {"status": "filled", "oid": status["filled"]["oid"]}
    if "resting" in status:
        return {"status": "open", "oid": status["resting"]["oid"]}
    message = str(status.get("error", status))
    if "could not immediately match" in message:
        return {"status": "unfilled", "oid": None}
    raise classify_message(message, operation="order")
