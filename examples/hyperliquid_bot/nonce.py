"""Nonces that stay unique and increasing across every process signing with one key.

The Hyperliquid SDK signs each action with ``get_timestamp_ms()`` as its nonce, so two
processes (a bot and a CLI, two bots) signing in the same millisecond collide and the exchange
answers ``Invalid nonce: duplicate nonce``. :class:`NonceSource` hands out
``max(now_ms, last + 1)`` under a file lock shared by every process on this host, through the
library's shared-state seam, and :func:`install` makes the SDK use it (``hl.use_nonces``).
"""

from __future__ import annotations

import os
from typing import Any

from resilient_trading.backends import FileState
from resilient_trading.presets import hyperliquid as hl

__all__ = ["NonceSource", "install"]


class NonceSource:
    """A strictly increasing millisecond counter shared through a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._state = FileState(path)

    def next(self) -> int:
        def bump(old: Any, now: float) -> tuple[int, int]:
            value = max(int(now * 1000), int(old or 0) + 1)
            return value, value

        return self._state.transact(bump)

    def __call__(self) -> int:
        return self.next()


def install(source: NonceSource) -> None:
    """Make the SDK's ``Exchange`` take its nonces from ``source`` (process-wide)."""
    hl.use_nonces(source)
