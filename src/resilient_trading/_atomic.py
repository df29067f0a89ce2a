"""One atomic, optionally durable, file replacement: write a temp file, fsync, rename, fsync dir.

A ``kill -9`` or a power loss at any instant leaves the old file or the new one, whole. The
error says what is true afterwards: :class:`CriticalError` "left unchanged" for every failure
before the rename, :class:`CommitNotDurableError` when only the directory ``fsync`` after the
rename failed (the new file is in place, maybe not durable).
"""

from __future__ import annotations

import contextlib
import os

from resilient_trading._errors import CommitNotDurableError, CriticalError

__all__ = ["atomic_replace", "clean_temp_files", "write_all"]

_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_all(fd: int, payload: bytes, offset: int | None = None) -> None:
    """Write every byte of ``payload`` (``os.write`` / ``os.pwrite`` may write fewer).

    A write that makes no progress raises ``OSError(ENOSPC)`` rather than looping forever.
    """
    view = memoryview(payload)
    done = 0
    while done < len(view):
        if offset is None:
            written = os.write(fd, view[done:])
        else:
            written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError(28, "No space left on device (a write made no progress)")
        done += written


def _tmp_name(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def clean_temp_files(path: str) -> None:
    """Remove temp files that crashed writers of ``path`` left (call under the lock)."""
    directory, name = os.path.split(path)
    prefix = f".{name}."
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory or "."):
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_replace(
    path: str,
    payload: bytes,
    *,
    durable: bool,
    backup_path: str | None = None,
    generation: int = 0,
    keep_open: bool = False,
) -> int:
    """Replace ``path`` with ``payload`` atomically; keep the old file as ``backup_path``.

    Args:
        path: The file to replace (created 0600 when missing; symlinks never followed).
        payload: The new content.
        durable: ``fsync`` the new file before the rename and the directory after it.
        backup_path: Hard-link the current file there first (no copy), if given.
        generation: For the error message when the commit happened but is not durable.
        keep_open: Return a read-only descriptor of the new file (the caller closes it);
            otherwise return ``-1``.

    Raises:
        CriticalError: Nothing was replaced (disk full, read-only, permissions...).
        CommitNotDurableError: The new file is in place but the directory ``fsync`` failed.
    """
    tmp = _tmp_name(path)
    kept = -1
    try:
        fd = os.open(tmp, _TMP_FLAGS, 0o600)
        try:
            write_all(fd, payload)
            if durable:
                os.fsync(fd)
            if keep_open:
                kept = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        finally:
            os.close(fd)
        if backup_path is not None:
            # unlink + link (cheaper than a second rename); a crash between the two only
            # loses the backup, which the next commit makes again.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(backup_path)
            with contextlib.suppress(FileNotFoundError):
                os.link(path, backup_path, follow_symlinks=False)
        os.replace(tmp, path)
    except OSError as exc:
        if kept >= 0:
            os.close(kept)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise CriticalError(
            f"cannot write state file {path}: {exc.strerror or exc}; "
            "the file was left unchanged (is the disk full or read-only?)",
            operation="atomic_replace",
        ) from exc
    except BaseException:
        if kept >= 0:
            os.close(kept)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        try:
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            if kept >= 0:
                os.close(kept)
            raise CommitNotDurableError(
                f"state file {path} was committed (generation {generation}) but its directory "
                f"could not be synced: {exc.strerror or exc}; every reader sees the new "
                "document, which may not survive a power loss: check the disk, do not "
                "repeat the transaction",
                path=path,
                generation=generation,
                operation="atomic_replace",
            ) from exc
    return kept
