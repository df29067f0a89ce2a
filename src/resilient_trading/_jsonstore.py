"""LockedJsonStore: a JSON state file shared by a bot and its CLI that never loses an update.

The read and the write of a transaction happen under one exclusive lock (an OS ``flock`` on
``<path>.lock``, released by the kernel when the holder dies), so two writers can never
interleave. (The ``filelock`` package takes the same ``flock``; its per-acquire bookkeeping
costs more than the whole commit here, so the store holds one descriptor per process.)
A commit writes a temporary file in the same directory, fsyncs it, keeps the previous version
as ``<path>.bak`` (a hard link, no copy), renames the new file over the old one and fsyncs the
directory: a ``kill -9`` or a power loss at any instant leaves the old or the new document,
whole. Readers never lock: the rename makes every file they open complete.

On disk the document sits in a small envelope::

    {"__resilient_trading__": 1, "generation": 42, "schema": null, "sha256": "...", "data": {...}}

The generation and checksum let the store tell a damaged file from a good one. A plain JSON
object without the envelope (a file from before you adopted the library) is read as the data
of generation 0 and wrapped on the next commit.

What it does not do: lock across machines, or on NFS and other network file systems, where
``flock`` is not reliable. For state shared by several machines use the Redis homes of the
rate limiter and the circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from resilient_trading._errors import CriticalError, LockTimeoutError, StateCorruptedError
from resilient_trading._flock import flock_exclusive

__all__ = ["LockedJsonStore"]

_MAGIC = "__resilient_trading__"
_HEAD = 96
_NOTE = 160
Migration = Callable[[dict[str, Any], int], dict[str, Any]]


def _copy(value: Any) -> Any:
    """A deep copy for JSON values (much faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _find_bad(value: Any, path: str) -> str | None:
    """Describe the first value JSON cannot hold, with its key path, or None."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: {value!r} is not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} is not a str"
            found = _find_bad(item, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_bad(item, f"{path}[{index}]")
            if found:
                return found
        return None
    return f"{path}: {type(value).__name__} cannot be stored as JSON"


def _checksum(data_text: str) -> str:
    return hashlib.sha256(data_text.encode()).hexdigest()


class LockedJsonStore:
    """A JSON object in a file, changed only through exclusive, atomic, durable transactions.

    Args:
        path: The state file. Created (mode 0600) on the first commit.
        lock_timeout: Seconds to wait for the lock before :class:`LockTimeoutError`; ``None``
            waits forever, ``0`` tries once.
        durable: Fsync the file and its directory on every commit, so a power loss cannot lose
            an acknowledged commit. ``False`` keeps atomicity (old or new file, whole) and is
            several times faster.
        backup: Keep the previous version as ``<path>.bak`` for ``restore_backup()``.
        schema_version: The version of the document your code expects (``None``: unversioned).
        migrate: ``migrate(data, from_version) -> data`` upgrades a document written with an
            older ``schema_version``; called on read and committed by the next transaction.

    Nesting ``transaction()`` on the same store in the same thread raises ``RuntimeError``:
    the outer transaction's document would otherwise be silently overwritten.

    Example:
        >>> import os, tempfile
        >>> store = LockedJsonStore(os.path.join(tempfile.mkdtemp(), "state.json"))
        >>> with store.transaction() as doc:
        ...     doc["n"] = doc.get("n", 0) + 1
        >>> store.read()
        {'n': 1}
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float | None = 10.0,
        durable: bool = True,
        backup: bool = True,
        schema_version: int | None = None,
        migrate: Migration | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if lock_timeout is not None:
            if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float):
                raise TypeError(f"lock_timeout must be a number or None, got {lock_timeout!r}")
            if not math.isfinite(lock_timeout) or lock_timeout < 0:
                raise ValueError(f"lock_timeout must be a finite number >= 0, got {lock_timeout!r}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be a bool, got {durable!r}")
        if schema_version is not None and (
            isinstance(schema_version, bool) or not isinstance(schema_version, int)
        ):
            raise TypeError(f"schema_version must be an int or None, got {schema_version!r}")
        if migrate is not None and not callable(migrate):
            raise TypeError("migrate must be callable")
        self._path = Path(os.path.abspath(os.fspath(path)))
        if self._path.name in ("", ".", ".."):
            raise ValueError(f"path must name a file, got {os.fspath(path)!r}")
        self._lock_timeout = lock_timeout
        self._durable = durable
        self._backup = backup
        self._schema_version = schema_version
        self._migrate = migrate
        self._thread_lock = threading.Lock()
        self._local = threading.local()
        self._path_str = str(self._path)
        self._bak_str = self._path_str + ".bak"
        self._lock_path = self._path_str + ".lock"
        self._lock_fd = -1
        self._lock_pid = -1
        self._cleaned = False
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._cache: tuple[tuple[int, int, int], dict[str, Any], bytes, int] | None = None

    # --- public ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The state file."""
        return self._path

    @property
    def backup_path(self) -> Path:
        """Where the previous version is kept."""
        return self._path.with_name(self._path.name + ".bak")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Read the document under an exclusive lock, let the block change it, commit it.

        The commit happens when the block exits normally; an exception writes nothing.

        Raises:
            LockTimeoutError: The lock was not acquired within ``lock_timeout``.
            StateCorruptedError: The file on disk is damaged (nothing is written).
            TypeError, ValueError: The document holds something JSON cannot (nothing is written).
            RuntimeError: A transaction on this store is already open in this thread.
        """
        if getattr(self._local, "active", False):
            raise RuntimeError(
                f"nested transaction on {self._path}: finish the outer transaction first"
            )
        self._local.active = True
        try:
            self._acquire()
            try:
                data, generation = self._load_locked()
                yield data
                self._commit(data, generation + 1)
            finally:
                self._release()
        finally:
            self._local.active = False

    @contextlib.asynccontextmanager
    async def transaction_async(self) -> AsyncIterator[dict[str, Any]]:
        """:meth:`transaction` for asyncio: locking, reading and the commit run in a worker
        thread, so the event loop never blocks on the lock or on fsync. Coroutines of one
        loop queue on an ``asyncio.Lock`` first, so they never starve the thread pool."""
        loop = asyncio.get_running_loop()
        gate = self._async_locks.get(loop)
        if gate is None:
            gate = self._async_locks[loop] = asyncio.Lock()
        async with gate:
            data, generation = await asyncio.to_thread(self._acquire_and_load)
            try:
                yield data
            except BaseException:
                await asyncio.to_thread(self._release)
                raise
            await asyncio.to_thread(self._commit_and_release, data, generation + 1)

    def _acquire_and_load(self) -> tuple[dict[str, Any], int]:
        self._acquire()
        try:
            return self._load_locked()
        except BaseException:
            self._release()
            raise

    def _commit_and_release(self, data: dict[str, Any], generation: int) -> None:
        try:
            self._commit(data, generation)
        finally:
            self._release()

    def update(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        """Run ``fn(doc)`` inside a transaction and return what it returns."""
        with self.transaction() as doc:
            return fn(doc)

    def read(self) -> dict[str, Any]:
        """A consistent snapshot of the document (a copy; ``{}`` when there is no file yet).

        Never takes the lock. When the file has not changed since the last read (same inode,
        size and mtime), the cached parse is copied instead of parsing again.
        """
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cache = self._cache
        if cache is not None and cache[0] == key and self._head() == cache[2]:
            fresh: dict[str, Any] = _copy(cache[1])
            return fresh
        data, _ = self._parse_file()
        parsed: dict[str, Any] = _copy(data)
        return parsed

    def _head(self) -> bytes:
        # The envelope starts with the generation: an inode number reused within one mtime
        # tick cannot pass for the cached version.
        try:
            fd = os.open(self._path_str, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return b""
        try:
            return os.pread(fd, _HEAD, 0)
        finally:
            os.close(fd)

    async def read_async(self) -> dict[str, Any]:
        """:meth:`read` in a worker thread."""
        return await asyncio.to_thread(self.read)

    def restore_backup(self) -> int:
        """Replace the state file with ``<path>.bak`` (an operator's decision, under the lock).

        Returns the generation restored. Raises :class:`StateCorruptedError` when the backup
        is missing or damaged too.
        """
        self._acquire()
        try:
            if not self.backup_path.exists():
                raise StateCorruptedError(
                    f"no backup {self.backup_path} to restore", path=str(self._path)
                )
            data, generation = self._parse(self.backup_path, fail_path=self.backup_path)
            self._write_checked(self._envelope(data, generation), link_backup=False)
            self._cache = None
            return generation
        finally:
            self._release()

    def __repr__(self) -> str:
        return f"LockedJsonStore({str(self._path)!r}, durable={self._durable})"

    # --- locking --------------------------------------------------------------------------

    def _mark_holder(self, fd: int) -> None:
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        # One fixed-size pwrite (no truncate): a reader sees the old note or the new one.
        with contextlib.suppress(OSError):
            os.pwrite(fd, note.encode().ljust(_NOTE, b" "), 0)

    def _lock_file(self) -> int:
        # One descriptor per process: flock locks belong to the open file description, so a
        # forked child must open its own to exclude its parent.
        if self._lock_fd < 0 or self._lock_pid != os.getpid():
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            self._lock_fd = os.open(self._lock_path, flags, 0o600)
            self._lock_pid = os.getpid()
        return self._lock_fd

    def _holder(self) -> str | None:
        try:
            with open(self._lock_path, encoding="utf-8") as fh:
                note = json.loads(fh.read() or "null")
        except (OSError, ValueError):
            return None
        if not isinstance(note, dict):  # pragma: no cover - a foreign lock file
            return None
        since = note.get("since")
        age = f", for {time.time() - since:.1f}s" if isinstance(since, int | float) else ""
        return f"pid {note.get('pid')} on {note.get('host')}{age}"

    def _acquire(self) -> None:
        timeout = None if self._lock_timeout is None else float(self._lock_timeout)
        started = time.monotonic()
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise self._timeout_error()
        try:
            remaining = (
                None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            )
            if not flock_exclusive(self._lock_file(), remaining):
                raise self._timeout_error()
            self._mark_holder(self._lock_fd)
        except BaseException:
            self._thread_lock.release()
            raise

    def _release(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _timeout_error(self) -> LockTimeoutError:
        holder = self._holder()
        who = f" (held by {holder})" if holder else ""
        return LockTimeoutError(
            f"could not lock {self._lock_path} within {self._lock_timeout:g}s{who}; "
            "another process is inside a transaction: try again",
            lock_path=self._lock_path,
            holder=holder,
            timeout=self._lock_timeout,
        )

    # --- reading --------------------------------------------------------------------------

    def _corrupt(self, what: str, path: Path) -> StateCorruptedError:
        backup = self.backup_path if self.backup_path.exists() else None
        hint = (
            f"; the previous version is in {backup}: restore it with "
            f"`resilient-trading state restore {self._path}` after checking it"
            if backup
            else "; no backup exists"
        )
        return StateCorruptedError(
            f"state file {path} is damaged: {what}{hint}",
            path=str(path),
            backup_path=None if backup is None else str(backup),
        )

    def _parse(self, path: Path, *, fail_path: Path) -> tuple[dict[str, Any], int]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}, 0
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._corrupt("it is a symbolic link", fail_path) from exc
            raise
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            what = "it is empty" if not raw.strip() else f"it is not valid JSON ({exc})"
            raise self._corrupt(what, fail_path) from exc
        if not isinstance(doc, dict):
            raise self._corrupt(
                f"its top level is a {type(doc).__name__}, not an object", fail_path
            )
        if doc.get(_MAGIC) != 1:
            return doc, 0  # a plain JSON object written before the store managed the file
        data, generation, digest = doc.get("data"), doc.get("generation"), doc.get("sha256")
        if not isinstance(data, dict) or not isinstance(generation, int):
            raise self._corrupt("its envelope is incomplete", fail_path)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        if digest != _checksum(text):
            raise self._corrupt("its checksum does not match its data", fail_path)
        schema = doc.get("schema")
        if self._schema_version is not None:
            found = 0 if schema is None else int(schema)
            if found > self._schema_version:
                raise self._corrupt(
                    f"it has schema {found}, newer than this code's {self._schema_version}",
                    fail_path,
                )
            if found < self._schema_version and self._migrate is not None:
                data = self._migrate(data, found)
                if not isinstance(data, dict):
                    raise TypeError("migrate() must return a dict")
        return data, generation

    def _parse_file(self) -> tuple[dict[str, Any], int]:
        try:
            st_before = os.stat(self._path)
        except FileNotFoundError:
            return {}, 0
        head = self._head()
        data, generation = self._parse(self._path, fail_path=self._path)
        key = (st_before.st_ino, st_before.st_size, st_before.st_mtime_ns)
        try:
            st_after = os.stat(self._path)
            if (st_after.st_ino, st_after.st_size, st_after.st_mtime_ns) == key:
                self._cache = (key, data, head, generation)
        except FileNotFoundError:
            pass
        return data, generation

    def _load_locked(self) -> tuple[dict[str, Any], int]:
        if not self._cleaned:
            self._clean_temp_files()
            self._cleaned = True
        cache = self._cache
        if cache is not None:
            try:
                st = os.stat(self._path_str)
            except FileNotFoundError:
                st = None
            if (
                st is not None
                and cache[0] == (st.st_ino, st.st_size, st.st_mtime_ns)
                and self._head() == cache[2]
            ):
                return _copy(cache[1]), cache[3]
        data, generation = self._parse_file()
        return _copy(data), generation

    def _clean_temp_files(self) -> None:
        # Under the lock no other writer is live: any temp file left is a crashed writer's.
        prefix = f".{self._path.name}."
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self._path.parent):
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    # --- writing --------------------------------------------------------------------------

    def _envelope(self, data: dict[str, Any], generation: int) -> bytes:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return (
            f'{{"{_MAGIC}":1,"generation":{generation},'
            f'"schema":{json.dumps(self._schema_version)},'
            f'"sha256":"{_checksum(text)}","data":{text}}}\n'
        ).encode()

    def _commit(self, data: Any, generation: int) -> None:
        if not isinstance(data, dict):
            raise TypeError(f"the document must stay a dict, got {type(data).__name__}")
        bad = _find_bad(data, "doc")
        if bad:
            raise ValueError(f"cannot store {bad}; nothing was written to {self._path}")
        payload = self._envelope(data, generation)
        self._cache = None
        self._write_checked(payload, link_backup=self._backup)
        with contextlib.suppress(OSError):
            st = os.stat(self._path_str)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            self._cache = (key, _copy(data), payload[:_HEAD], generation)

    def _write_checked(self, payload: bytes, *, link_backup: bool) -> None:
        try:
            self._write(payload, link_backup=link_backup)
        except OSError as exc:
            raise CriticalError(
                f"cannot write state file {self._path}: {exc.strerror or exc}; "
                "the file was left unchanged (is the disk full or read-only?)",
                operation="LockedJsonStore.commit",
            ) from exc

    def _write(self, payload: bytes, *, link_backup: bool) -> None:
        directory = self._path.parent
        tmp = directory / f".{self._path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                view = memoryview(payload)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if link_backup:
                # unlink + link (cheaper than a second rename); a crash between the two only
                # loses the backup, which the next commit makes again.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._bak_str)
                with contextlib.suppress(FileNotFoundError):
                    os.link(self._path_str, self._bak_str, follow_symlinks=False)
            os.replace(tmp, self._path_str)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self._durable:
            dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
