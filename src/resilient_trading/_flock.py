"""One way to take an OS file lock with a timeout, shared by the file homes of shared state."""

from __future__ import annotations

import fcntl
import time

__all__ = ["flock_exclusive"]


def flock_exclusive(fd: int, timeout: float | None) -> bool:
    """Take an exclusive ``flock`` on ``fd``; ``False`` when ``timeout`` seconds pass first.

    ``None`` waits forever. The holder is another process, so the wait uses short real sleeps
    (0.1 ms doubling to 10 ms): simulated time cannot make it let go. The kernel releases the
    lock when its holder dies, even under ``kill -9``.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
    deadline = time.monotonic() + timeout
    delay = 0.0001
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.01)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
