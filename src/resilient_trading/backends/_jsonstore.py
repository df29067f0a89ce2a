"""Shared state kept in a :class:`~resilient_trading.LockedJsonStore`: durable, survives restarts.

One store file can hold several values (``{"breakers": {name: value}}``), one per
:class:`JsonStoreState`. A transition that changes nothing is decided on the store's lock-free
snapshot (a ``stat`` and a cached parse); only a transition that changes the value takes the
lock, runs again on the fresh value and commits. That keeps a breaker's check on every call
cheap while its changes stay exclusive and durable.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._jsonstore import LockedJsonStore
from resilient_trading.backends._base import JsonValue, Transition

__all__ = ["JsonStoreState"]

T = TypeVar("T")


class JsonStoreState:
    """A :class:`~resilient_trading.backends.SharedState` at ``doc[section][name]`` of a store file.

    Args:
        path: The store file (created 0600).
        section: The top-level key grouping values of one kind (``"breakers"``).
        name: This value's key inside the section.
        lock_timeout: Seconds to wait for the store's lock (``None``: forever), passed to the
            :class:`LockedJsonStore`; a bad value raises at once.
        clock: Time source for transitions.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        section: str,
        name: str,
        lock_timeout: float | None = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = LockedJsonStore(path, lock_timeout=lock_timeout)
        self._section = section
        self._name = name
        self._clock = clock

    @property
    def location(self) -> str:
        return f"{self._store.path}#{self._section}.{self._name}"

    @property
    def store(self) -> LockedJsonStore:
        return self._store

    def _value(self, doc: dict[str, Any]) -> JsonValue:
        section = doc.get(self._section)
        return section.get(self._name) if isinstance(section, dict) else None

    def transact(self, fn: Transition[T]) -> T:
        snapshot = self._value(self._store.read())
        new, result = fn(snapshot, self._clock.time())
        if new is snapshot:
            return result
        with self._store.transaction() as doc:
            old = self._value(doc)
            new, result = fn(old, self._clock.time())
            if new is not old:
                section = doc.setdefault(self._section, {})
                section[self._name] = new
        return result

    def read(self) -> JsonValue:
        return self._value(self._store.read())

    def time(self) -> float:
        return self._clock.time()

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"JsonStoreState({self.location!r})"
