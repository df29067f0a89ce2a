"""ProcessLock: the one exclusive lock of the file homes (the JSON store and ``FileState``).

It combines a ``threading.Lock`` (threads of this process queue there, never on the kernel)
with an OS ``flock`` on one descriptor per process (processes exclude each other; the kernel
releases the lock when its holder dies, even under ``kill -9``). Rules kept here, once:

- ``lock_timeout`` is ``None`` (wait forever) or a finite number ``>= 0``; ``inf`` is refused
  with a hint to pass ``None``.
- **Fork.** ``flock`` locks belong to the open file description, which a forked child
  shares with its parent: a child that kept the inherited descriptor would keep a killed
  parent's lock alive. ``os.register_at_fork`` closes every inherited lock descriptor in the
  child (and gives it fresh thread locks, since a thread of the parent may have held one at
  the fork); the child opens its own descriptor when it first locks. ``O_CLOEXEC`` covers
  ``exec``.
- **Cancellation.** :meth:`ProcessLock.acquire_async` takes the lock in a worker thread; a
  coroutine cancelled meanwhile never leaves it held: the worker releases it when it gets it.
- **Descriptors are released**: :meth:`close`, or when the lock is garbage collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from resilient_trading._errors import LockTimeoutError
from resilient_trading._flock import flock_exclusive

__all__ = ["ProcessLock", "check_lock_timeout"]

T = TypeVar("T")

_LIVE: weakref.WeakSet[ProcessLock] = weakref.WeakSet()
_NOTE = 160


def check_lock_timeout(value: object) -> float | None:
    """``None`` or a finite number ``>= 0`` (as a float); the one check for every file home."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"lock_timeout must be a number of seconds or None, got {value!r}")
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(
            f"lock_timeout must be a finite number >= 0 (or None to wait forever), got {value!r}"
        )
    return float(value)


class ProcessLock:
    """An exclusive lock on ``path`` shared by this process's threads and other processes.

    Args:
        path: The file whose ``flock`` is the lock; created (0600) when missing, symlinks
            refused. It may be the data file itself (``FileState``) or a separate lock file.
        note: Write who holds the lock (pid, host, since) into the lock file, for the
            timeout message of the processes that wait (only for a separate lock file).
    """

    def __init__(self, path: str, *, note: bool = False) -> None:
        self._path = path
        self._note = note
        self._fd = -1
        self._pid = -1
        self._thread_lock = threading.Lock()
        _LIVE.add(self)

    @property
    def path(self) -> str:
        return self._path

    def fd(self) -> int:
        """This process's descriptor of the lock file (opened on first use, after a fork too)."""
        if self._fd < 0 or self._pid != os.getpid():
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd = os.open(self._path, flags, 0o600)
            self._pid = os.getpid()
        return self._fd

    def acquire(self, timeout: float | None) -> bool:
        """Take the lock within ``timeout`` seconds (``None``: forever); ``False`` if not."""
        started = time.monotonic()
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            fd = self.fd()
            elapsed = time.monotonic() - started
            remaining = None if timeout is None else max(0.0, timeout - elapsed)
            if flock_exclusive(fd, remaining):
                if self._note:
                    self._write_note(fd)
                return True
        except BaseException:
            self._thread_lock.release()
            raise
        self._thread_lock.release()
        return False

    @staticmethod
    def _write_note(fd: int) -> None:
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        # One fixed-size pwrite (no truncate): a reader sees the old note or the new one.
        with contextlib.suppress(OSError):
            os.pwrite(fd, note.encode().ljust(_NOTE, b" "), 0)

    def holder(self) -> str | None:
        """Who holds the lock, from its note (``"pid 42 on host, for 3.1s"``), if known."""
        if not self._note:
            return None
        try:
            with open(self._path, encoding="utf-8") as fh:
                note = json.loads(fh.read() or "null")
        except (OSError, ValueError):
            return None
        if not isinstance(note, dict):  # pragma: no cover - a foreign lock file
            return None
        since = note.get("since")
        age = f", for {max(0.0, time.time() - since):.1f}s" if type(since) is float else ""
        return f"pid {note.get('pid')} on {note.get('host')}{age}"

    def timeout_error(self, timeout: float | None, hint: str) -> LockTimeoutError:
        """The error for a lock not taken within ``timeout``, naming the file and holder."""
        holder = self.holder()
        who = f" (held by {holder})" if holder else ""
        return LockTimeoutError(
            f"could not lock {self._path} within {timeout:g}s{who}; {hint}",
            lock_path=self._path,
            holder=holder,
            timeout=timeout,
        )

    async def acquire_async(
        self,
        timeout: float | None,
        then: Callable[[], T],
        timeout_error: Callable[[], BaseException],
    ) -> T:
        """Take the lock in a worker thread and run ``then()`` under it; return its result
        with the lock held (the caller releases it).

        Raises ``timeout_error()`` when the lock is not taken within ``timeout``; releases the
        lock if ``then()`` raises. Cancelled while the worker waits, the coroutine raises
        ``CancelledError`` at once and the worker releases the lock as soon as it gets it.
        """
        mutex = threading.Lock()
        state = {"abandoned": False, "taken": False}

        def work() -> T:
            if not self.acquire(timeout):
                raise timeout_error()
            try:
                result = then()
            except BaseException:
                self.release()
                raise
            with mutex:
                if state["abandoned"]:  # the coroutine was cancelled while we waited
                    self.release()
                else:
                    state["taken"] = True
            return result

        try:
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except asyncio.CancelledError:
            with mutex:
                state["abandoned"] = True
                taken = state["taken"]
            if taken:  # the worker finished just as we were cancelled: ours to release
                self.release()
            raise

    def release(self) -> None:
        """Release the lock taken by :meth:`acquire` (callable from any thread).

        In a forked child that inherited a held lock, nothing is held: a no-op.
        """
        if self._pid != os.getpid():
            return
        try:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Close the descriptor (it is reopened if the lock is used again). Idempotent.

        Waits for a holder of this process to release first.
        """
        with self._thread_lock:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._pid == os.getpid():
            os.close(fd)

    def _after_fork_in_child(self) -> None:
        # The inherited descriptor shares the parent's open file description (and its
        # flock): close it, so a parent that dies releases its lock even while we live.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):  # already closed by the child's own code
                os.close(fd)
        self._pid = -1
        self._thread_lock = threading.Lock()

    def __del__(self) -> None:
        with contextlib.suppress(OSError):  # pragma: no cover - already closed elsewhere
            self._close_fd()


def _close_inherited_locks() -> None:
    for lock in list(_LIVE):
        lock._after_fork_in_child()


os.register_at_fork(after_in_child=_close_inherited_locks)
