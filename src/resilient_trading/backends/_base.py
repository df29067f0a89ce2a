"""The one seam between shared-state primitives and where their state lives.

A :class:`SharedState` holds one small JSON-compatible value (``None`` until first written).
:meth:`SharedState.transact` runs a pure function on it under mutual exclusion with every
other holder of the same location, with the clock read *inside* the exclusion, and stores
what the function returns. The rate limiter and the circuit breaker are written against
this protocol only; each home (process memory, a file on this host, Redis) implements it
once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["JsonValue", "SharedState", "Transition"]

T = TypeVar("T")

#: What a backend stores: anything ``json.dumps`` accepts (dicts, lists, str, numbers, bools).
JsonValue = Any

#: ``fn(state, now) -> (new_state, result)``. ``state`` is ``None`` when nothing is stored.
#: ``fn`` must not mutate ``state``; returning the very same object means "unchanged" and
#: skips the write. ``now`` is the backend's clock (Redis: the server's ``TIME``), read while
#: the exclusion is held. ``fn`` must be quick and must not block: it runs under a lock.
Transition = Callable[[JsonValue, float], tuple[JsonValue, T]]


@runtime_checkable
class SharedState(Protocol):
    """A small JSON value shared by every holder of the same location."""

    @property
    def location(self) -> str:
        """Where the state lives, for messages (``memory``, a path, ``redis://host/key``)."""
        ...

    def transact(self, fn: Transition[T]) -> T:
        """Run ``fn`` atomically against the stored value and store its new value.

        If ``fn`` raises, nothing is stored and the exception propagates.
        """
        ...

    def read(self) -> JsonValue:
        """The stored value (``None`` when empty), without taking the write exclusion."""
        ...

    def time(self) -> float:
        """The clock this backend's transitions see (seconds since the epoch)."""
        ...

    def close(self) -> None:
        """Release file descriptors or connections. Idempotent."""
        ...
