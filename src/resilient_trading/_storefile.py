"""The reading side of a LockedJsonStore: parse its file, keep the last version as a snapshot.

A :class:`Snapshot` is the last version a store parsed or wrote: its data marshalled
(``marshal.loads`` is a C-speed deep copy of plain JSON values) and an open descriptor that
pins its inode, so the inode number cannot be reused while the snapshot lives. The file is
only ever replaced by a rename, never rewritten in place, so a ``stat`` that shows the same
device, inode, size and mtime proves the same content: an unchanged read costs a ``stat``
and a ``marshal.loads``. ``marshal`` only ever reads bytes this process wrote, never a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import marshal
import os
import stat
from typing import Any

from resilient_trading._envelope import EnvelopeError, Migration, decode, migrate
from resilient_trading._errors import StateCorruptedError
from resilient_trading._events import StoreEvent, emit, event_text, listening

__all__ = ["FrozenDict", "FrozenList", "Snapshot", "StoreFile"]

Key = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def _key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_only(self: object, *args: object, **kwargs: object) -> None:
    raise TypeError(
        "a store snapshot is read-only: use LockedJsonStore.read() for a copy you can change, "
        "or transaction() to change the document"
    )


class FrozenDict(dict[str, Any]):
    """A read-only ``dict`` (JSON-serialisable, equal to the same plain dict). Copies,
    pickles and ``copy.deepcopy`` give plain, mutable dicts."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: object) -> Any:
        return _thaw(self)


class FrozenList(list[Any]):
    """A read-only ``list``, like :class:`FrozenDict`."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: object) -> Any:
        return _thaw(self)


def _thaw(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thaw(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList([_freeze(v) for v in value])
    return value


@dataclasses.dataclass(slots=True, eq=False)
class Snapshot:
    """The last version a store parsed or wrote. ``fd`` pins its inode; closed with it."""

    key: Key
    blob: bytes
    generation: int
    fd: int
    frozen: FrozenDict | None = None

    def data(self) -> dict[str, Any]:
        """A fresh, mutable deep copy of the document."""
        data: dict[str, Any] = marshal.loads(self.blob)
        return data

    def view(self) -> FrozenDict:
        """The document, read-only, shared by every caller (built once per version)."""
        if self.frozen is None:
            self.frozen = _freeze(marshal.loads(self.blob))
        return self.frozen

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class StoreFile:
    """Parses one store's file (and its backup) and caches the last version as a snapshot.

    Args:
        path: The state file (absolute).
        backup_path: Where its previous version is kept, named in corruption messages.
        schema_version, migration: As in :class:`~resilient_trading.LockedJsonStore`.
    """

    def __init__(
        self,
        path: str,
        backup_path: str,
        schema_version: int | None,
        migration: Migration | None,
    ) -> None:
        self.path = path
        self.backup_path = backup_path
        self._schema_version = schema_version
        self._migration = migration
        self.snapshot: Snapshot | None = None

    def corrupt(self, what: str, path: str) -> StateCorruptedError:
        """The error for a damaged ``path``, naming the backup and how to restore it (and a
        ``corrupted`` event for listeners)."""
        if listening():
            emit(StoreEvent(kind="corrupted", path=path, message=event_text(what)))
        backup = self.backup_path if os.path.exists(self.backup_path) else None
        hint = (
            f"; the previous version is in {backup}: restore it with "
            f"`resilient-trading state restore {self.path}` after checking it"
            if backup
            else "; no backup exists"
        )
        return StateCorruptedError(
            f"state file {path} is damaged: {what}{hint}", path=path, backup_path=backup
        )

    def read(self) -> dict[str, Any]:
        """The document (a copy the caller owns); ``{}`` when there is no file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        snap = self.snapshot
        if snap is not None and snap.key == _key(st):
            return snap.data()
        return self._parse_and_remember()[0]

    def view(self) -> FrozenDict:
        """The document read-only (no copy); an empty one when there is no file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return FrozenDict()
        snap = self.snapshot
        if snap is None or snap.key != _key(st):
            data = self._parse_and_remember()[0]
            snap = self.snapshot
            if snap is None:  # marshal refused it: no cache, a frozen copy of this parse
                frozen: FrozenDict = _freeze(data)
                return frozen
        return snap.view()

    def load(self) -> tuple[dict[str, Any], int]:
        """The document and its generation (under the store's lock)."""
        snap = self.snapshot
        if snap is not None:
            try:
                key: Key | None = _key(os.stat(self.path))
            except FileNotFoundError:
                key = None
            if snap.key == key:
                return snap.data(), snap.generation
        return self._parse_and_remember()

    def parse(self, path: str) -> tuple[dict[str, Any], int]:
        """Parse any file of this store (the backup, a health check) without caching it."""
        try:
            fd = self._open(path)
        except FileNotFoundError:
            return {}, 0
        try:
            return self._decode(fd, path)
        finally:
            os.close(fd)

    def remember(self, fd: int, data: dict[str, Any], generation: int) -> None:
        """Keep what was just written (``fd``: the new file, owned from now on)."""
        try:
            blob = marshal.dumps(data)
        except ValueError:  # a str/int subclass marshal refuses: no cache, still correct
            os.close(fd)
            self.snapshot = None
            return
        self.snapshot = Snapshot(_key(os.fstat(fd)), blob, generation, fd)

    def _open(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.corrupt("it is a symbolic link", path) from exc
            if exc.errno == errno.ENOENT:
                raise
            raise OSError(exc.errno, f"cannot read state file {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            kind = "a directory" if os.path.isdir(path) else "not a regular file"
            raise self.corrupt(f"it is {kind}, not a state file", path)
        return fd

    def _decode(self, fd: int, path: str) -> tuple[dict[str, Any], int]:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        try:
            decoded = decode(b"".join(chunks))
            return migrate(decoded, self._schema_version, self._migration), decoded.generation
        except EnvelopeError as exc:
            raise self.corrupt(exc.what, path) from exc

    def _parse_and_remember(self) -> tuple[dict[str, Any], int]:
        try:
            fd = self._open(self.path)
        except FileNotFoundError:
            return {}, 0
        try:
            data, generation = self._decode(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self.remember(fd, data, generation)
        return data, generation
