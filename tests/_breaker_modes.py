"""The ``mode`` helpers of the breaker tests: each behaviour runs through ``call`` (sync) and
``call_async`` (async), so the two entry points cannot drift apart unseen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from resilient_trading import CircuitBreaker

__all__ = ["MODES", "guard"]

MODES = ["sync", "async"]


def guard(breaker: CircuitBreaker, mode: str, fn: Callable[[], Any]) -> Any:
    """``breaker.call(fn)``, or in async mode ``call_async`` of a coroutine doing ``fn()``."""
    if mode == "sync":
        return breaker.call(fn)

    async def coro() -> Any:
        return fn()

    return asyncio.run(breaker.call_async(coro))
