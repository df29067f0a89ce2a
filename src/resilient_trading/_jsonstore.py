"""LockedJsonStore: a JSON state file shared by a bot and its CLI that never loses an update.

The read and the write of a transaction happen under one exclusive lock (a
:class:`~resilient_trading._proclock.ProcessLock` on ``<path>.lock``: an OS ``flock``
released by the kernel when the holder dies), so two writers can never interleave. A commit
is one :func:`~resilient_trading._atomic.atomic_replace` (temp file, fsync, ``<path>.bak``
hard link, rename, directory fsync): a ``kill -9`` or a power loss at any instant leaves the
old or the new document, whole. Readers never lock: the rename makes every file they open
complete. The on-disk envelope (generation, schema, checksum) is the pure codec in
:mod:`resilient_trading._envelope`.

Events (:class:`~resilient_trading.StoreEvent`) are published once the lock is released, never
under it: a slow listener delays only its own process, never another one waiting for the lock.
A ``commit`` is published after the commit is durable (or not at all).

Reading (and the snapshot that makes an unchanged read cost a ``stat`` and a C-speed copy)
lives in :mod:`resilient_trading._storefile`.

What it does not do: lock across machines, or on NFS and other network file systems, where
``flock`` is not reliable. For state shared by several machines use the Redis homes.

Why this module is long: it is one class whose transaction must be read as a whole: the sync and
async transactions with their lock, nesting, fork and cancellation rules, the events on lock waits,
and ``restore_backup`` under the same lock; about a quarter is docstrings, and the codec, the atomic
write and reading live elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from resilient_trading._atomic import atomic_replace, clean_temp_files
from resilient_trading._envelope import Migration, encode, find_unstorable
from resilient_trading._errors import LockTimeoutError, StateCorruptedError
from resilient_trading._events import Event, StoreEvent, emit, holding, listening, publish
from resilient_trading._proclock import ProcessLock, check_lock_timeout
from resilient_trading._storefile import StoreFile

__all__ = ["LockedJsonStore"]


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
            Required with ``schema_version``.

    Nesting transactions on the same store (``transaction()`` in one thread, or
    ``transaction_async()`` in one task) raises ``RuntimeError``. The store holds open
    descriptors: ``close()`` it, or use it as a context manager, when done.

    Example:
        >>> import os, tempfile
        >>> with LockedJsonStore(os.path.join(tempfile.mkdtemp(), "state.json")) as store:
        ...     with store.transaction() as doc:
        ...         doc["n"] = doc.get("n", 0) + 1
        ...     store.read()
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
        self._lock_timeout = check_lock_timeout(lock_timeout)
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be a bool, got {durable!r}")
        if schema_version is not None and type(schema_version) is not int:
            raise TypeError(f"schema_version must be an int or None, got {schema_version!r}")
        if migrate is not None and not callable(migrate):
            raise TypeError("migrate must be callable")
        if schema_version is not None and migrate is None:
            raise ValueError(
                f"schema_version={schema_version} needs migrate=fn(data, old_version) -> data, "
                "to upgrade documents written by older code"
            )
        self._path = Path(os.path.abspath(os.fspath(path)))
        if self._path.name in ("", ".", ".."):
            raise ValueError(f"path must name a file, got {os.fspath(path)!r}")
        self._durable = durable
        self._backup = backup
        self._schema_version = schema_version
        self._migrate = migrate
        self._path_str = str(self._path)
        self._lock = ProcessLock(self._path_str + ".lock", note=True)
        self._local = threading.local()
        self._cleaned = False
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._async_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._file = StoreFile(self._path_str, self._path_str + ".bak", schema_version, migrate)

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
            TypeError, ValueError: The document holds something that could not be read back
                (NaN, a set, a non-str key, nesting over 100 levels): nothing is written.
            CriticalError: The disk refused the write (the file was left unchanged).
            CommitNotDurableError: Committed, but the directory fsync failed.
            RuntimeError: A transaction on this store is already open in this thread/task.
        """
        self._refuse_nested()
        self._local.active = True
        pid = os.getpid()
        held: list[Event] = []  # events published once the lock is released
        try:
            with holding(held):
                self._acquire()
            try:
                with holding(held):
                    data, generation = self._load()
                yield data
                if os.getpid() != pid:
                    raise RuntimeError(
                        f"a forked child cannot commit its parent's transaction on {self._path}"
                        " (it does not hold the lock): nothing was written"
                    )
                with holding(held):
                    self._commit(data, generation + 1)
            finally:
                self._lock.release()
        finally:
            self._local.active = False
            publish(held)

    @contextlib.asynccontextmanager
    async def transaction_async(self) -> AsyncIterator[dict[str, Any]]:
        """:meth:`transaction` for asyncio: locking, reading and the commit run in a worker
        thread, so the event loop never blocks on the lock or on fsync. Coroutines of one
        loop queue on an ``asyncio.Lock`` first, so they never starve the thread pool.

        Cancelled while the worker waits for the lock, the lock is released as soon as the
        worker gets it. Cancelled during the commit, the commit still completes (or fails)
        in its thread and the lock is released.

        Its events (a ``conflict_wait``, the ``commit``) are published once the lock is
        released, the ``commit`` in the worker thread (a listener never runs on the loop).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        self._refuse_nested()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Lock()
        if task is not None:
            self._async_tasks.add(task)
        held: list[Event] = []  # events published once the lock is released
        try:
            async with gate:
                try:
                    data, generation = await self._lock.acquire_async(
                        self._lock_timeout, *self._async_load_hooks(held)
                    )
                except BaseException:
                    publish(held)  # the lock is not held: not taken, or released on failure
                    raise
                try:
                    yield data
                except BaseException:
                    self._lock.release()
                    publish(held)
                    raise
                await asyncio.to_thread(self._commit_and_release, data, generation + 1, held)
        finally:
            if task is not None:
                self._async_tasks.discard(task)

    def update(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        """Run ``fn(doc)`` inside a transaction and return what it returns."""
        with self.transaction() as doc:
            return fn(doc)

    def read(self) -> dict[str, Any]:
        """A consistent snapshot of the document (a copy; ``{}`` when there is no file yet).

        Never takes the lock. An unchanged file (same inode, size and mtime as the version
        this store last saw) costs a ``stat`` and a C-speed copy.
        """
        return self._file.read()

    def snapshot(self) -> Mapping[str, Any]:
        """The document, read-only and shared (no copy): for hot paths that only look.

        Costs a ``stat`` when the file has not changed. Nested dicts and lists are read-only
        too (``TypeError`` on change); ``dict(...)``, ``copy.deepcopy`` and pickling give
        plain, mutable copies. Use :meth:`read` for a copy you may change.
        """
        return self._file.view()

    async def read_async(self) -> dict[str, Any]:
        """:meth:`read` in a worker thread."""
        return await asyncio.to_thread(self.read)

    def restore_backup(self, *, force: bool = False) -> int:
        """Replace the state file with ``<path>.bak`` (an operator's decision, under the lock).

        The version replaced is kept as ``<path>.replaced-<UTC time>`` (a hard link).

        Args:
            force: Restore even when the current file is healthy (its newest version would
                otherwise be discarded by mistake).

        Returns the generation restored. Raises :class:`StateCorruptedError` when the backup
        is missing or damaged too, and ``ValueError`` for a healthy file without ``force``.
        Its events are published once the lock is released.
        """
        held: list[Event] = []
        try:
            with holding(held):
                return self._restore_backup(force)
        finally:
            publish(held)  # after _restore_backup released the lock

    def _restore_backup(self, force: bool) -> int:
        self._acquire()
        try:
            backup = self.backup_path
            if not backup.exists():
                raise StateCorruptedError(f"no backup {backup} to restore", path=self._path_str)
            data, generation = self._file.parse(str(backup))
            if not force and self._path.exists() and (current := self._healthy()) is not None:
                raise ValueError(
                    f"state file {self._path} is healthy (generation {current}): restoring "
                    f"its backup (generation {generation}) would discard the newest version; "
                    "pass force=True (CLI: --force) if that is what you want"
                )
            if self._path.exists() or self._path.is_symlink():
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                aside = f"{self._path_str}.replaced-{stamp}-{os.urandom(2).hex()}"
                os.link(self._path_str, aside, follow_symlinks=False)
            self._file.snapshot = None
            payload = encode(data, generation, self._schema_version)
            atomic_replace(self._path_str, payload, durable=self._durable, generation=generation)
            if listening():
                emit(StoreEvent(kind="restored", path=self._path_str, generation=generation))
            return generation
        finally:
            self._lock.release()

    def _healthy(self) -> int | None:
        """The generation of the state file, or ``None`` when it is damaged."""
        try:
            return self._file.parse(self._path_str)[1]
        except StateCorruptedError:
            return None

    def close(self) -> None:
        """Release the store's descriptors (reopened if the store is used again). Idempotent."""
        if getattr(self._local, "active", False):
            raise RuntimeError(f"close() inside a transaction on {self._path}")
        self._file.snapshot = None
        self._lock.close()

    def __enter__(self) -> LockedJsonStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LockedJsonStore({self._path_str!r}, durable={self._durable})"

    # --- locking --------------------------------------------------------------------------

    def _refuse_nested(self) -> None:
        nested = getattr(self._local, "active", False)
        if not nested and self._async_tasks:
            with contextlib.suppress(RuntimeError):  # no running loop in this thread
                nested = asyncio.current_task() in self._async_tasks
        if nested:
            raise RuntimeError(
                f"nested transaction on {self._path}: finish the outer transaction first"
            )

    def _acquire(self) -> None:
        if not listening():
            if not self._lock.acquire(self._lock_timeout):
                raise self._timeout_error()
            return
        if self._lock.acquire(0):  # free: no conflict to report
            return
        started = time.monotonic()
        taken = self._lock.acquire(self._lock_timeout)
        self._waited(started, taken)
        if not taken:
            raise self._timeout_error()

    def _waited(self, started: float, taken: bool) -> None:
        """Publish a ``conflict_wait`` (or ``lock_timeout``) event for a wait since ``started``."""
        emit(
            StoreEvent(
                kind="conflict_wait" if taken else "lock_timeout",
                path=self._path_str,
                seconds=time.monotonic() - started,
            )
        )

    def _timeout_error(self) -> LockTimeoutError:
        hint = "another process is inside a transaction: try again"
        return self._lock.timeout_error(self._lock_timeout, hint)

    def _async_load_hooks(
        self, held: list[Event]
    ) -> tuple[Callable[[], tuple[dict[str, Any], int]], Callable[[], LockTimeoutError]]:
        """``then`` and ``timeout_error`` for ``acquire_async``. With a listener, the lock is
        probed first (one non-blocking try, released at once: the worker thread takes it
        for real); held by another, the wait until the worker has it is a ``conflict_wait``
        event, and a timeout a ``lock_timeout`` event. The events ``then`` emits under the
        lock go to ``held``, for the caller to publish once the lock is released."""
        started = None if not listening() or self._probe() else time.monotonic()

        def then() -> tuple[dict[str, Any], int]:
            with holding(held):
                if started is not None:
                    self._waited(started, True)
                return self._load()

        def timeout_error() -> LockTimeoutError:
            if started is not None:
                self._waited(started, False)
            return self._timeout_error()

        return then, timeout_error

    def _probe(self) -> bool:
        """Whether the lock is free now (a non-blocking try, released at once)."""
        if not self._lock.acquire(0):
            return False
        self._lock.release()
        return True

    def _commit_and_release(self, data: dict[str, Any], generation: int, held: list[Event]) -> None:
        try:
            with holding(held):
                self._commit(data, generation)
        finally:
            self._lock.release()
            publish(held)

    # --- reading and writing ----------------------------------------------------------------

    def _load(self) -> tuple[dict[str, Any], int]:
        if not self._cleaned:  # under the lock no other writer lives: a crashed one's files
            clean_temp_files(self._path_str)
            self._cleaned = True
        return self._file.load()

    def _commit(self, data: Any, generation: int) -> None:
        if not isinstance(data, dict):
            raise TypeError(f"the document must stay a dict, got {type(data).__name__}")
        bad = find_unstorable(data)
        if bad:
            raise ValueError(
                f"cannot store {bad}; it could not be read back, so nothing was written "
                f"to {self._path}"
            )
        payload = encode(data, generation, self._schema_version)
        self._file.snapshot = None
        # CommitNotDurableError leaves no snapshot: the next read parses what is on disk.
        fd = atomic_replace(
            self._path_str,
            payload,
            durable=self._durable,
            backup_path=str(self.backup_path) if self._backup else None,
            generation=generation,
            keep_open=True,
        )
        self._file.remember(fd, data, generation)
        if listening():
            emit(StoreEvent(kind="commit", path=self._path_str, generation=generation))
