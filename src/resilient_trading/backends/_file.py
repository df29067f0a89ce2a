"""Shared state in a small file on this host, guarded by an OS file lock.

Built for hot paths (a rate limiter's every acquire): one open descriptor, a ``flock`` on the
data file itself (a stable inode: the library never replaces the file; the kernel releases the
lock when a holder dies, even under ``kill -9``), and no ``fsync``.

**A file replaced from outside** (renamed over, deleted, recreated by an editor or a script)
is followed: each transaction checks, under the lock, that its descriptor is still the file at
the path (device and inode) and otherwise reopens the path and locks again, so every reader
and writer of this host sees the new file; a new file that does not parse is
:class:`StateCorruptedError`, never read as empty. :meth:`FileState.read` opens the path on
every call. Something other than a regular file at the path (a directory, a FIFO, a
symlink: symlinks are never followed) is refused.

**Crash safety: two checksummed records.** Each value is written as a record (a text header
with a sequence number, length and CRC-32, then the JSON) at a place that does not overlap
the current record; a reader takes the valid record with the highest sequence. A writer
killed mid-write, or a short write on a full disk, leaves a torn *new* record and the
previous one whole: the next call sees the previous value, as if the failed call never
happened, which is exactly what its caller was told (the call raised or never returned).
The file is compacted as it goes (records ping-pong between the start and just after the
other record) and never holds more than two records and a torn tail.

Why no ``fsync``: the values here are a rate window, a breaker cache or a nonce floor, small
and rebuilt by the next calls; an ``fsync`` per acquire would cost milliseconds on the hot
path. After a power loss the file may hold an older record or none that is valid (then
:class:`StateCorruptedError`: delete the file). For state that must survive power loss use
:class:`~resilient_trading.LockedJsonStore` (``JsonStoreState``).

Plain JSON files written before this format are read and converted on the next write.
Not for NFS or other network file systems, nor across machines: use Redis for those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import stat
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from resilient_trading._atomic import write_all
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import CriticalError, StateCorruptedError
from resilient_trading._proclock import ProcessLock, check_lock_timeout
from resilient_trading.backends._base import JsonValue, Transition

__all__ = ["FileState"]

T = TypeVar("T")

_MAX_BYTES = 4 * 1024 * 1024
# JSON text never holds a NUL byte, so a record's start cannot appear inside a payload.
_MARK = b"\x00RTS1 "
_HEADER = re.compile(rb"\x00RTS1 ([0-9a-f]{16}) ([0-9a-f]{8}) ([0-9a-f]{8})\n")
_HEADER_LEN = len(_MARK) + 16 + 1 + 8 + 1 + 8 + 1
_UNMARK = b"\x00" + b"-" * (len(_MARK) - 1)
# How often a transaction reopens a file replaced under it before it gives up.
_REOPENS = 5
_ADVICE = "it holds only a rate window, a breaker cache or a nonce floor: delete it to start afresh"


@dataclasses.dataclass(frozen=True, slots=True)
class _Current:
    """The newest valid value in the file and where its bytes sit."""

    value: JsonValue
    seq: int
    offset: int
    size: int
    junk_only: bool = False  # no value was ever acknowledged: only torn records, if any


def _crc(fields: bytes, payload: bytes) -> int:
    # The checksum covers the header's sequence number and length too (``fields``): a record
    # torn into a mix of a new header and an older record's bytes never passes for a value.
    return zlib.crc32(payload, zlib.crc32(fields))


def _record(value_text: bytes, seq: int) -> bytes:
    fields = b"%016x %08x" % (seq, len(value_text))
    return b"%s%s %08x\n%s" % (_MARK, fields, _crc(fields, value_text), value_text)


class FileState:
    """A :class:`~resilient_trading.backends.SharedState` in a file shared by unrelated processes.

    Args:
        path: The state file; created with mode 0600 when missing. Symlinks are not followed.
        lock_timeout: Seconds to wait for the lock before :class:`LockTimeoutError`
            (``None`` waits forever).
        clock: Time source for transitions (every process on a host shares the wall clock).
        advice: What the message of a :class:`StateCorruptedError` about this file tells the
            operator to do (default: delete it, fit for a rate window, a breaker cache or a
            nonce floor). An owner whose file must not be deleted (the fleet's halt flag:
            deleting it resumes every bot) says what to do instead.

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
        advice: str = _ADVICE,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self._lock_timeout = check_lock_timeout(lock_timeout)
        self._path = os.fspath(path)
        self._clock = clock
        if not isinstance(advice, str) or not advice.strip():
            raise ValueError("advice must be a non-empty str saying what to do with a bad file")
        self._advice = advice.strip()
        self._lock = ProcessLock(self._path)
        # transact_cached: the current record and the file's bytes this object saw last
        self._seen: tuple[_Current, bytes] | None = None
        # the lock's descriptor, the pid that opened it, and its file's inode and device
        self._held: tuple[int, int, int, int] | None = None
        try:
            self._lock.fd()  # create it now: a bad path fails here, not on the hot path
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot open shared state file {self._path}: {exc.strerror}"
            ) from exc

    @property
    def location(self) -> str:
        return self._path

    def time(self) -> float:
        return self._clock.time()

    # --- reading --------------------------------------------------------------------------

    def _corrupt(self, what: str) -> StateCorruptedError:
        return StateCorruptedError(
            f"shared state {self._path} {what}; {self._advice}", path=self._path
        )

    def _parse(self, raw: bytes) -> _Current:
        """The newest valid record of ``raw`` (a whole file), or its legacy plain JSON.

        JSON text never holds a NUL byte: everything from the first NUL on is records (or a
        torn one), everything before it is a value from before this format (or nothing).
        """
        nul = raw.find(b"\x00")
        found: list[tuple[int, int, int, int]] = []  # seq, offset, length, crc
        if nul >= 0:
            for match in _HEADER.finditer(raw, nul):
                seq, length, crc = int(match[1], 16), int(match[2], 16), int(match[3], 16)
                found.append((seq, match.start(), length, crc))
        starts = [offset for _, offset, _, _ in found]
        torn_only = True
        for seq, offset, length, crc in sorted(found, reverse=True):
            start = offset + _HEADER_LEN
            payload = raw[start : start + length]
            fields = raw[offset + len(_MARK) : offset + _HEADER_LEN - 10]
            if _crc(fields, payload) != crc:
                # Cut short by a crash or a full disk (the file ends, or a later record
                # starts, inside it), or damaged from outside (neither).
                end = start + length
                cut = len(payload) < length or any(offset < o < end for o in starts)
                torn_only = torn_only and cut
                continue
            try:
                value = json.loads(payload)
            except (ValueError, RecursionError) as exc:  # pragma: no cover - crc passed
                raise self._corrupt("holds a record that does not parse") from exc
            return _Current(value, seq, offset, _HEADER_LEN + length)
        # No complete record. A legacy value occupies the whole file (the next record goes
        # after it); torn records only are junk: the next write starts the file afresh.
        text = (raw if nul < 0 else raw[:nul]).strip()
        if not text:
            if torn_only:  # empty, or only records cut short: nothing was acknowledged
                return _Current(None, 0, 0, len(raw), junk_only=True)
            raise self._corrupt("holds no complete record (damaged)")
        try:
            return _Current(json.loads(text), 0, 0, len(raw))
        except (ValueError, RecursionError) as exc:
            raise self._corrupt(f"does not parse as JSON ({type(exc).__name__})") from exc

    def _read_raw(self, fd: int) -> bytes:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise self._corrupt("is not a regular file")
        size = st.st_size
        if size > _MAX_BYTES:
            raise self._corrupt(f"is {size} bytes, more than this backend stores")
        return os.pread(fd, size, 0) if size else b""

    def read(self) -> JsonValue:
        """The newest value, without the lock (records are never overwritten while current)."""
        try:
            # O_NONBLOCK: a FIFO put at the path must not hang the reader (it is refused).
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(self._path, flags)
        except FileNotFoundError:
            return None
        try:
            raw = self._read_raw(fd)
        finally:
            os.close(fd)
        try:
            return self._parse(raw).value
        except StateCorruptedError:
            # Two writes overlapped our read: look again under the lock before blaming the file.
            return self.transact(lambda old, now: (old, old))

    # --- writing --------------------------------------------------------------------------

    def _write(
        self,
        fd: int,
        current: _Current,
        value: Any,
        file_size: int,
        *,
        text: bytes | None = None,
        before: bytes | None = None,
    ) -> tuple[_Current, bytes] | None:
        """Write ``value`` (or its JSON ``text``) as the next record. Given the file's bytes
        ``before``, returns the new current record and the file's bytes after the write."""
        if text is None:
            try:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
            except RecursionError as exc:
                raise ValueError(
                    f"cannot store a value nested this deeply in {self._path}"
                ) from exc
        record = _record(text, current.seq + 1)
        # Never overlap the current record: before it if there is room, else right after it.
        offset = 0 if current.offset >= len(record) else current.offset + current.size
        if current.junk_only and file_size:
            with contextlib.suppress(OSError):  # nothing acknowledged lives here
                os.ftruncate(fd, 0)
                offset = file_size = 0
                before = b"" if before is not None else None
        try:
            write_all(fd, record, offset)
        except OSError as exc:
            # Unmark what may have landed (a few bytes in place: no new disk block), so a
            # torn record can never be read, even if all its bytes happened to reach the disk.
            with contextlib.suppress(OSError):
                os.pwrite(fd, _UNMARK, offset)
            raise CriticalError(
                f"cannot write shared state {self._path}: {exc.strerror or exc}; "
                "the previous value is kept (is the disk full?)",
                operation="FileState.transact",
            ) from exc
        end = max(offset + len(record), current.offset + current.size)
        size = max(file_size, offset + len(record))
        if file_size > end:
            with contextlib.suppress(OSError):  # only stale records and torn tails lie beyond
                os.ftruncate(fd, end)
                size = end
        if before is None:
            return None
        after = (before[:offset] + record + before[offset + len(record) :])[:size]
        return _Current(value, current.seq + 1, offset, len(record)), after

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the path (not renamed over, nor deleted)."""
        try:
            at_path = os.stat(self._path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = self._held
        if held is None or held[:2] != (fd, os.getpid()):
            st = os.fstat(fd)  # once per descriptor: a new one after a reopen or a fork
            held = self._held = (fd, os.getpid(), st.st_ino, st.st_dev)
        return held[2:] == (at_path.st_ino, at_path.st_dev)

    def _acquire(self, timeout: float | None = None) -> int:
        """Take the lock on the file now at the path; its descriptor (release it after).

        ``timeout`` (seconds) shortens this call's wait for the lock below ``lock_timeout``
        (a caller with a deadline of its own: a rate limiter's ``acquire(timeout=...)``).
        A descriptor whose file was replaced from outside is dropped and the path reopened
        (then locked again): a lock on, or a read of, the old inode would miss the new file.
        """
        wait = self._lock_timeout
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        for _ in range(_REOPENS):
            if not self._lock.acquire(wait):
                raise self._lock.timeout_error(
                    wait, "another process is using this shared state: try again"
                )
            try:
                fd = self._lock.fd()
                if self._is_current(fd):
                    return fd
            except BaseException:
                self._lock.release()
                raise
            self._lock.release()
            self._lock.close()  # reopened by path at the next acquire
            self._seen = self._held = None
        raise self._corrupt(
            f"was replaced {_REOPENS} times while this process tried to lock it: stop whatever "
            "keeps replacing it (only the library should write it)"
        )

    def transact(self, fn: Transition[T]) -> T:
        fd = self._acquire()
        pid = os.getpid()
        try:
            raw = self._read_raw(fd)
            current = self._parse(raw)
            new, result = fn(current.value, self._clock.time())
            if os.getpid() != pid:
                raise RuntimeError(
                    f"a forked child cannot finish its parent's transition on {self._path} "
                    "(it does not hold the lock): nothing was written"
                )
            if new is not current.value:
                self._write(fd, current, new, len(raw))
            return result
        finally:
            self._lock.release()

    def overwrite(self, value: JsonValue) -> None:
        """Store ``value`` whatever the file holds now, a damaged file included: the recovery
        of an owner whose answer to a bad file is a new value, not a deletion (the halt flag).

        The new record goes where no complete record lies, so a crash or a full disk midway
        leaves the file damaged as before (still an error), never empty.

        Raises:
            StateCorruptedError: The path is not a regular file (nothing to write over).
        """
        fd = self._acquire()
        try:
            raw = self._read_raw(fd)
            try:
                current = self._parse(raw)
            except StateCorruptedError:
                # Nothing valid to keep: write as if a zero-length record ended the file,
                # numbered above every record header in it (damaged ones never win).
                top = max((int(m[1], 16) for m in _HEADER.finditer(raw)), default=0)
                current = _Current(None, top, len(raw), 0)
            self._seen = None
            self._write(fd, current, value, len(raw))
        finally:
            self._lock.release()

    def transact_cached(
        self,
        fn: Transition[T],
        *,
        dumps: Callable[[Any], bytes],
        lock_timeout: float | None = None,
    ) -> T:
        """:meth:`transact` for a hot path whose own writes dominate (a rate limiter's acquire).

        Same file format, same lock, same crash safety, two shortcuts: when the file still
        holds, byte for byte, what this object last read or wrote (nobody wrote since), it is
        not parsed again and ``fn`` gets the very value object stored (so the caller may keep
        its own parsed copy of it); and ``dumps`` turns the new value into its JSON text, the
        caller vouching that the text is valid JSON (a base64 string needs no escaping).
        ``lock_timeout`` shortens this call's wait for the lock (see :meth:`_acquire`).
        """
        fd = self._acquire(lock_timeout)
        pid = os.getpid()
        try:
            raw = self._read_raw(fd)
            seen = self._seen
            if seen is not None and seen[1] == raw:
                current = seen[0]
            else:
                self._seen = None
                current = self._parse(raw)
            new, result = fn(current.value, self._clock.time())
            if os.getpid() != pid:
                raise RuntimeError(
                    f"a forked child cannot finish its parent's transition on {self._path} "
                    "(it does not hold the lock): nothing was written"
                )
            if new is current.value:
                self._seen = (current, raw)
                return result
            self._seen = None  # if the write fails, the file is parsed again next time
            self._seen = self._write(fd, current, new, len(raw), text=dumps(new), before=raw)
            return result
        finally:
            self._lock.release()

    def close(self) -> None:
        self._lock.close()
        self._held = None

    def __repr__(self) -> str:
        return f"FileState({self._path!r})"
