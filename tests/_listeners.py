"""Listeners for tests of the events: collect every event, or collect and raise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from resilient_trading import add_listener


@contextlib.contextmanager
def collected() -> Iterator[list[Any]]:
    """Every event published on the process-wide bus while the block runs."""
    seen: list[Any] = []
    remove = add_listener(seen.append)
    try:
        yield seen
    finally:
        remove()


@contextlib.contextmanager
def raising_listener() -> Iterator[list[Any]]:
    """A listener that records, then raises, on every event."""
    seen: list[Any] = []

    def boom(event: Any) -> None:
        seen.append(event)
        raise RuntimeError("a broken listener")

    remove = add_listener(boom)
    try:
        yield seen
    finally:
        remove()
