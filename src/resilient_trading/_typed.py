"""TypedStore: a LockedJsonStore holding a dataclass or a Pydantic model instead of a bare dict."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from resilient_trading._errors import StateCorruptedError
from resilient_trading._jsonstore import LockedJsonStore
from resilient_trading._redact import safe_text

__all__ = ["TypedStore"]

T = TypeVar("T")


class TypedStore(Generic[T]):
    """A :class:`LockedJsonStore` whose document is an instance of ``model``.

    ``model`` is a dataclass (fields of JSON types; nested dataclasses are rebuilt from
    their annotations only when you pass ``decode``) or a Pydantic v2 model (validated on
    every read, so a document that no longer fits the model raises
    :class:`StateCorruptedError`). Pydantic is not imported by this module.

    Args:
        store: The underlying store (its locking, durability and backups apply).
        model: The class of the document; ``model()`` must work for a new, empty store.
        decode: ``dict -> T``, when the default (``model(**data)`` or ``model_validate``)
            is not enough.
        encode: ``T -> dict``, when the default (``dataclasses.asdict`` or
            ``model_dump(mode="json")``) is not enough.

    Example:
        >>> import dataclasses, os, tempfile
        >>> @dataclasses.dataclass
        ... class State:
        ...     n: int = 0
        >>> store = TypedStore(LockedJsonStore(os.path.join(tempfile.mkdtemp(), "s.json")), State)
        >>> with store.transaction() as state:
        ...     state.n += 1
        >>> store.read()
        State(n=1)
    """

    def __init__(
        self,
        store: LockedJsonStore,
        model: type[T],
        *,
        decode: Callable[[dict[str, Any]], T] | None = None,
        encode: Callable[[T], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(store, LockedJsonStore):
            raise TypeError(f"store must be a LockedJsonStore, got {type(store).__name__}")
        pydantic = hasattr(model, "model_validate") and hasattr(model, "model_dump")
        if not (pydantic or dataclasses.is_dataclass(model)) and (decode is None or encode is None):
            raise TypeError(
                f"{model!r} is neither a dataclass nor a Pydantic model: pass decode and encode"
            )
        self._store = store
        self._model = model
        self._decode = decode or self._default_decode(model, pydantic)
        self._encode = encode or self._default_encode(pydantic)

    @staticmethod
    def _default_decode(model: type[T], pydantic: bool) -> Callable[[dict[str, Any]], T]:
        if pydantic:
            return model.model_validate  # type: ignore[attr-defined,no-any-return]
        return lambda data: model(**data)

    @staticmethod
    def _default_encode(pydantic: bool) -> Callable[[Any], dict[str, Any]]:
        if pydantic:
            return lambda obj: obj.model_dump(mode="json")
        return dataclasses.asdict

    @property
    def store(self) -> LockedJsonStore:
        return self._store

    def _load(self, data: dict[str, Any]) -> T:
        if not data:
            return self._model()
        try:
            return self._decode(data)
        except Exception as exc:  # a validation error of any library: the file no longer fits
            # Redact before cutting: a cut secret is no longer recognised as one.
            raise StateCorruptedError(
                f"state file {self._store.path} does not fit {self._model.__name__}: "
                f"{type(exc).__name__}: {safe_text(exc, 300)}",
                path=str(self._store.path),
            ) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[T]:
        """Like :meth:`LockedJsonStore.transaction`, with the document as a ``model``."""
        with self._store.transaction() as doc:
            obj = self._load(doc)
            yield obj
            encoded = self._encode(obj)
            if not isinstance(encoded, dict):
                raise TypeError(f"encode() must return a dict, got {type(encoded).__name__}")
            doc.clear()
            doc.update(encoded)

    def read(self) -> T:
        """A snapshot of the document as a ``model`` (never blocks)."""
        return self._load(self._store.read())

    def __repr__(self) -> str:
        return f"TypedStore({self._store!r}, {self._model.__name__})"
