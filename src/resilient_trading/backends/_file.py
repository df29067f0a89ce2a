"""Shared state in a small file on this host, guarded by an OS file lock.

Built for hot paths (a rate limiter's every acquire): the file descriptor stays open, the lock
is ``flock`` (released by the kernel when a holder dies, even under ``kill -9``), and the value
is written in place with one ``pwrite`` padded with spaces to the old length, so a writer
killed at any instant leaves either the old or the new bytes, never a mix of lengths. It is
not durable across power loss (no fsync): use it for state that may be lost on a reboot,
such as a rate window. For state that must survive power loss use
:class:`~resilient_trading.LockedJsonStore`.

Not for NFS or other network file systems, nor across machines: use Redis for those.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
from typing import TypeVar

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import LockTimeoutError, StateCorruptedError
from resilient_trading._flock import flock_exclusive
from resilient_trading.backends._base import JsonValue, Transition

__all__ = ["FileState"]

T = TypeVar("T")

_MAX_BYTES = 4 * 1024 * 1024


class FileState:
    """A :class:`~resilient_trading.backends.SharedState` in a file shared by unrelated processes.

    Args:
        path: The state file; created with mode 0600 when missing. Symlinks are not followed.
        lock_timeout: Seconds to wait for the lock before :class:`LockTimeoutError`
            (``None`` waits forever).
        clock: Time source for transitions (every process on a host shares the wall clock).

    Example:
        >>> import tempfile, os
        >>> state = FileState(os.path.join(tempfile.mkdtemp(), "budget.json"))
        >>> state.transact(lambda old, now: ((old or 0) + 1, "ok"))
        'ok'
        >>> state.read()
        1
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float | None = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._fd = -1
        self._thread_lock = threading.Lock()
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if lock_timeout is not None:
            if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float):
                raise TypeError(f"lock_timeout must be a number or None, got {lock_timeout!r}")
            if math.isnan(lock_timeout) or lock_timeout < 0:
                raise ValueError(f"lock_timeout must be >= 0 or None, got {lock_timeout!r}")
        self._path = os.fspath(path)
        self._lock_timeout = lock_timeout
        self._clock = clock
        self._pid = os.getpid()
        self._fd = self._open()

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self._path, flags, 0o600)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot open shared state file {self._path}: {exc.strerror}"
            ) from exc

    def _ensure_fd(self) -> int:
        # After fork the child must not share the parent's open file description: flock
        # locks belong to the description, so parent and child would not exclude each other.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._fd = self._open()
        if self._fd < 0:
            self._fd = self._open()
        return self._fd

    @property
    def location(self) -> str:
        return self._path

    def time(self) -> float:
        return self._clock.time()

    def _lock(self, fd: int) -> None:
        if not flock_exclusive(fd, self._lock_timeout):
            raise LockTimeoutError(
                f"shared state {self._path} stayed locked for {self._lock_timeout:g}s",
                lock_path=self._path,
                timeout=self._lock_timeout,
            )

    def _load(self, fd: int) -> tuple[JsonValue, int]:
        size = os.fstat(fd).st_size
        if size > _MAX_BYTES:
            raise StateCorruptedError(
                f"shared state {self._path} is {size} bytes, more than this backend stores",
                path=self._path,
            )
        raw = os.pread(fd, size, 0) if size else b""
        text = raw.strip()
        if not text:
            return None, size
        try:
            return json.loads(text), size
        except ValueError as exc:
            raise StateCorruptedError(
                f"shared state {self._path} does not parse as JSON ({exc}); "
                "it holds only a rate window or breaker cache: delete it to start afresh",
                path=self._path,
            ) from exc

    def transact(self, fn: Transition[T]) -> T:
        with self._thread_lock:
            fd = self._ensure_fd()
            self._lock(fd)
            try:
                old, size = self._load(fd)
                new, result = fn(old, self._clock.time())
                if new is not old:
                    data = json.dumps(new, separators=(",", ":"), allow_nan=False).encode()
                    if len(data) < size:
                        data += b" " * (size - len(data))
                    os.pwrite(fd, data, 0)
                return result
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def read(self) -> JsonValue:
        with self._thread_lock:
            fd = self._ensure_fd()
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                return self._load(fd)[0]
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._thread_lock:
            if self._fd >= 0 and os.getpid() == self._pid:
                os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()

    def __repr__(self) -> str:
        return f"FileState({self._path!r})"
