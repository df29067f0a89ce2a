"""An append-only JSON Lines history beside the store: finished orders leave the live state.

A :class:`Journal` keeps records a bot no longer acts on (filled or cancelled orders, fills,
decisions) so its live state file stays small and a commit costs the same on day 7 as on day 1.
Appending costs one ``write`` and one ``fdatasync`` whatever the size of the history.

One line per record, self-checking::

    {"crc":"1c291ca3","t":1764086400.25,"rec":{"oid":42,"status":"filled"}}

``crc`` is the CRC-32 of the bytes after ``"crc":"........",`` (up to the closing ``}``), so
a line cut short by ``kill -9``, a power loss or a full disk never reads as a record. What a
crash can leave is a torn *last* line: readers skip it with a logged warning and the next
append cuts it off before writing, so every new record starts on a clean line. Damage
anywhere else (a bad line with good lines after it) is not a crash's doing: readers raise
:class:`~resilient_trading.StateCorruptedError` naming the file and the line.

Writers in several processes (and threads) serialise on an ``flock`` of ``PATH.lock``; a
record is one ``write`` to a descriptor opened ``O_APPEND`` (a short write is continued, and a
failed one is cut off again), so lines never interleave. Rotation (by size, or when the UTC
day changes) renames ``PATH`` to ``PATH.YYYYMMDD-N.jsonl`` under that lock; ``N`` grows by one
with every rotation, so the order of the files never depends on the clock. Readers take the
lock just long enough to open every file, so they see every record exactly once across a
rotation.

Why this module is long: the writer and the readers are two halves of one crash-safety protocol (the
self-checking line, the torn-last-line rule, rotation's names and the ``flock``): the writer cuts
what readers skip, and readers lock to see each record once across a rotation, so either half must
be read against the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import io
import json
import logging
import math
import os
import re
import threading
import weakref
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from resilient_trading._atomic import write_all
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._envelope import find_unstorable
from resilient_trading._errors import (
    CommitNotDurableError,
    CriticalError,
    LockTimeoutError,
    StateCorruptedError,
)
from resilient_trading._flock import flock_exclusive
from resilient_trading._redact import safe_text
from resilient_trading._validate import check_int, check_optional_number

__all__ = ["Journal", "JournalEntry", "encode_line", "parse_line"]

log = logging.getLogger("resilient_trading.journal")

_PREFIX = b'{"crc":"'
_BODY_AT = len(_PREFIX) + 8 + 2  # '{"crc":"' + 8 hex digits + '",'
_TAIL_CHUNK = 65536
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class JournalEntry:
    """One record read back from a :class:`Journal`.

    Attributes:
        time: When it was appended (seconds since the epoch, from the journal's clock).
        record: The record as appended (a fresh ``dict``; changing it changes nothing on disk).
        file: The file it was read from (the live file or a rotated one).
        line: Its line number in that file (1 for the first).
    """

    time: float
    record: dict[str, Any]
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        """``{"time": ..., "record": {...}}``, what ``history show --json`` prints per line."""
        return {"time": self.time, "record": self.record}


def encode_line(record: Mapping[str, Any], at: float) -> bytes:
    """The journal line of ``record`` appended at ``at`` (checked first: nothing half-valid).

    Raises:
        TypeError: ``record`` is not a mapping.
        ValueError: It holds something that could not be read back (NaN, infinity, a
            non-str key, a tuple, a set, nesting over 100 levels).
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"a journal record must be a mapping, got {type(record).__name__}")
    data = dict(record)
    bad = find_unstorable(data, "record")
    if bad:
        raise ValueError(
            safe_text(f"cannot journal {bad}; it could not be read back, so nothing was written")
        )
    if not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError(f"the append time must be a finite number of seconds, got {at!r}")
    rec = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    body = b'"t":' + repr(float(at)).encode() + b',"rec":' + rec + b"}"
    return _PREFIX + b"%08x" % zlib.crc32(body) + b'",' + body + b"\n"


def parse_line(line: bytes) -> tuple[float, dict[str, Any]] | None:
    """``(time, record)`` of one whole line (with its ``\\n``), or ``None`` if it is damaged."""
    if len(line) < _BODY_AT + 2 or not line.startswith(_PREFIX) or not line.endswith(b"\n"):
        return None
    if line[_BODY_AT - 2 : _BODY_AT] != b'",':
        return None
    try:
        crc = int(line[len(_PREFIX) : _BODY_AT - 2], 16)
    except ValueError:
        return None
    if zlib.crc32(line[_BODY_AT:-1]) != crc:
        return None
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    at, rec = doc.get("t"), doc.get("rec")
    if not isinstance(at, float) or not isinstance(rec, dict):
        return None
    return at, rec


def _utc_day(at: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y%m%d")
    except (OverflowError, OSError, ValueError):
        return "00000000"


class Journal:
    """An append-only, crash-safe, rotated JSON Lines history of records.

    Args:
        path: The live file (``history.jsonl``); rotated files sit beside it as
            ``history.jsonl.YYYYMMDD-N.jsonl``. Files are created 0600.
        rotate_bytes: Rotate before an append that would make the live file larger than
            this (``None``: never by size). A single record larger than it still goes in.
        rotate_daily: Rotate before the first append of a new UTC day.
        durable: ``fdatasync`` every append before returning (and the directory after a
            file is created or rotated): an acknowledged record survives a power loss.
        lock_timeout: Seconds to wait for another writer (``None``: forever).
        clock: Where the append time comes from (tests pass a ``ManualClock``).

    Example:
        >>> import tempfile, os
        >>> journal = Journal(os.path.join(tempfile.mkdtemp(), "history.jsonl"))
        >>> journal.append({"oid": 42, "status": "filled"})
        >>> [entry.record for entry in journal.tail(1)]
        [{'oid': 42, 'status': 'filled'}]
        >>> journal.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rotate_bytes: int | None = 64 * 1024 * 1024,
        rotate_daily: bool = True,
        durable: bool = True,
        lock_timeout: float | None = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self._path = os.fspath(path)
        if not os.path.basename(self._path):
            raise ValueError(f"path must name a file, got {self._path!r}")
        self._rotate_bytes = (
            None if rotate_bytes is None else check_int("rotate_bytes", rotate_bytes, minimum=1)
        )
        for name, flag in (("rotate_daily", rotate_daily), ("durable", durable)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self._rotate_daily = rotate_daily
        self._durable = durable
        self._lock_timeout = check_optional_number("lock_timeout", lock_timeout, positive=False)
        self._clock = clock
        self._lock_path = self._path + ".lock"
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._lock_fd = -1
        self._fd = -1
        self._ino: tuple[int, int] | None = None
        self._known_size = -1  # the size after our last append (-1: check the tail)
        self._first_day: str | None = None  # UTC day of the live file's first record
        _JOURNALS.add(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: a fresh mutex (another thread may have held it at the fork) and
        the inherited descriptors closed (never unlocked: the parent may hold the flock)."""
        self._mutex = threading.Lock()
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pid = os.getpid()
        self._fd = self._lock_fd = -1
        self._ino, self._known_size, self._first_day = None, -1, None

    @property
    def path(self) -> Path:
        """The live file."""
        return Path(self._path)

    def __repr__(self) -> str:
        return f"Journal({self._path!r})"

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the descriptors (the journal reopens them on the next append)."""
        with self._mutex:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0 and os.getpid() == self._pid:
                os.close(fd)
        self._fd = self._lock_fd = -1
        self._ino = None
        self._known_size = -1
        self._first_day = None

    # --- appending ---------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record; when this returns (durable), it survives ``kill -9`` and power loss.

        Raises:
            TypeError, ValueError: The record could not be read back; nothing was written.
            LockTimeoutError: Another writer held the lock for ``lock_timeout`` seconds.
            CriticalError: The disk refused the write (full, read-only); nothing was written.
            CommitNotDurableError: Written, but ``fdatasync`` failed: readers see the record,
                a power loss may lose it. Do not append it again.
        """
        self.append_many((record,))

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append several records with one ``write`` and one ``fdatasync``.

        Every record is checked before anything is written. A crash during the write may keep
        a prefix of the batch (whole records only); none of it is acknowledged until this returns.
        """
        at = self._clock.time()
        self._append_payload(b"".join(encode_line(record, at) for record in records), at)

    async def append_async(self, record: Mapping[str, Any]) -> None:
        """:meth:`append` for asyncio: the record is checked at once, the locked write and
        ``fdatasync`` run in a worker thread, so the event loop never blocks.

        Cancelled, the task stops waiting but the worker finishes the append it began (and
        releases the lock): like an order already sent, it may be in the history.
        """
        await self.append_many_async((record,))

    async def append_many_async(self, records: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`append_many` for asyncio (see :meth:`append_async`)."""
        at = self._clock.time()
        payload = b"".join(encode_line(record, at) for record in records)
        await asyncio.to_thread(self._append_payload, payload, at)

    def _append_payload(self, payload: bytes, at: float) -> None:
        if not payload:
            return
        with self._mutex:
            self._lock()
            try:
                self._write(payload, at)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _lock(self) -> None:
        if self._lock_fd < 0:
            try:
                self._lock_fd = os.open(self._lock_path, _LOCK_FLAGS, 0o600)
            except OSError as exc:
                raise self._refused(exc, "open its lock file") from exc
        if not flock_exclusive(self._lock_fd, self._lock_timeout):
            raise LockTimeoutError(
                f"journal {self._path} is locked by another writer for over "
                f"{self._lock_timeout} s: try again (a writer stuck in a full disk?)",
                lock_path=self._lock_path,
                timeout=self._lock_timeout,
                operation="Journal.append",
            )

    def _refused(self, exc: OSError, what: str) -> CriticalError:
        return CriticalError(
            f"cannot {what} for journal {self._path}: {exc.strerror or exc}; nothing was "
            "written (is the disk full or read-only?)",
            operation="Journal.append",
        )

    def _write(self, payload: bytes, at: float) -> None:
        try:
            self._open_live()
            size = os.fstat(self._fd).st_size
            if size != self._known_size:
                size = self._cut_torn_tail(size)
            if size > 0 and self._must_rotate(size, len(payload), at):
                self._rotate()
                self._open_live()
                size = 0
        except OSError as exc:
            raise self._refused(exc, "prepare an append") from exc
        try:
            written = os.write(self._fd, payload)
            if written < len(payload):  # short: under the lock nobody else appends
                write_all(self._fd, payload[max(written, 0) :])
        except OSError as exc:
            self._known_size = -1
            with contextlib.suppress(OSError):  # else the next append cuts the torn tail
                os.ftruncate(self._fd, size)
                self._known_size = size
            raise self._refused(exc, "append") from exc
        if size == 0:
            self._first_day = _utc_day(at)
        self._known_size = size + len(payload)
        if self._durable:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise CommitNotDurableError(
                    f"journal {self._path}: the record was appended but fdatasync failed "
                    f"({exc.strerror or exc}); readers see it, a power loss may lose it: "
                    "check the disk, do not append it again",
                    path=self._path,
                    generation=0,
                    operation="Journal.append",
                ) from exc

    def _open_live(self) -> None:
        """Make ``self._fd`` the live file (another writer may have rotated it away)."""
        try:
            st = os.stat(self._path, follow_symlinks=False)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd >= 0 and current == self._ino:
            return
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._fd = os.open(self._path, _OPEN_FLAGS, 0o600)
        st = os.fstat(self._fd)
        self._ino = (st.st_dev, st.st_ino)
        self._known_size = -1
        self._first_day = None
        if current is None and self._durable:
            _fsync_dir(os.path.dirname(self._path))

    def _cut_torn_tail(self, size: int) -> int:
        """Cut a torn last line (no ``\\n``, or failing its check) off the live file."""
        good = _last_good_end(self._path, size)
        if good != size:
            log.warning(
                "journal %s: cut a torn last line (%d bytes at offset %d) left by a crash",
                self._path,
                size - good,
                good,
            )
            os.ftruncate(self._fd, good)
        self._known_size = good
        return good

    def _must_rotate(self, size: int, adding: int, at: float) -> bool:
        if self._rotate_bytes is not None and size + adding > self._rotate_bytes:
            return True
        if self._rotate_daily:
            if self._first_day is None:
                self._first_day = _first_day(self._path)
            return self._first_day is not None and self._first_day != _utc_day(at)
        return False

    def _rotate(self) -> None:
        day = self._first_day or _first_day(self._path) or _utc_day(self._clock.time())
        number = max((n for n, _ in _rotated(self._path)), default=0) + 1
        target = f"{self._path}.{day}-{number}.jsonl"
        while os.path.lexists(target):  # never replace a file (someone copied one back?)
            number += 1
            target = f"{self._path}.{day}-{number}.jsonl"
        os.rename(self._path, target)
        if self._durable:
            _fsync_dir(os.path.dirname(self._path))
        log.info("journal %s: rotated to %s", self._path, target)

    # --- reading -----------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The journal's files, oldest first (rotated ones, then the live one if it exists)."""
        names = [p for _, p in _rotated(self._path)]
        if os.path.lexists(self._path):
            names.append(self._path)
        return [Path(name) for name in names]

    def iter_records(
        self, *, since: float | None = None, until: float | None = None
    ) -> Iterator[JournalEntry]:
        """Every record, oldest first, across rotated files (``since <= time < until``).

        The files are opened together under the writers' lock, so a rotation while this
        iterates loses or repeats nothing; records appended meanwhile may or may not appear.

        Raises:
            StateCorruptedError: A line other than the last of its file is damaged.
            LockTimeoutError: A writer held the lock for ``lock_timeout`` seconds.
        """
        check_optional_number("since", since, positive=False)
        check_optional_number("until", until, positive=False)
        handles = self._open_all()
        try:
            for path, handle, size in handles:
                for entry in _read_file(path, handle, size):
                    if since is not None and entry.time < since:
                        continue
                    if until is not None and entry.time >= until:
                        continue
                    yield entry
        finally:
            for _, handle, _ in handles:
                handle.close()

    def read(self, *, since: float | None = None, until: float | None = None) -> list[JournalEntry]:
        """:meth:`iter_records` as a list."""
        return list(self.iter_records(since=since, until=until))

    def tail(self, n: int) -> list[JournalEntry]:
        """The last ``n`` records, oldest first: reads only the end of the newest files
        (a damaged line further back is not seen; :meth:`read` checks every line)."""
        check_int("n", n)
        if n == 0:
            return []
        handles = self._open_all()
        try:
            found: deque[JournalEntry] = deque()
            for path, handle, size in reversed(handles):
                entries = deque(_tail_file(path, handle, size, n - len(found)))
                found.extendleft(reversed(entries))
                if len(found) >= n:
                    break
            return list(found)
        finally:
            for _, handle, _ in handles:
                handle.close()

    def _open_all(self) -> list[tuple[str, BinaryIO, int]]:
        lock_fd = -1
        for _ in range(2):  # writers create the lock file before any data file
            with contextlib.suppress(FileNotFoundError):
                lock_fd = os.open(self._lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if lock_fd >= 0 or not self.files():  # no lock and no file: never written
                break
        handles: list[tuple[str, BinaryIO, int]] = []
        try:
            if lock_fd >= 0 and not flock_exclusive(lock_fd, self._lock_timeout):
                raise LockTimeoutError(
                    f"journal {self._path} is locked by a writer for over "
                    f"{self._lock_timeout} s: try reading again",
                    lock_path=self._lock_path,
                    timeout=self._lock_timeout,
                    operation="Journal.read",
                )
            for path in self.files():
                with contextlib.suppress(FileNotFoundError):
                    handle = os.fdopen(os.open(path, _READ_FLAGS), "rb")
                    # the size under the lock: no writer is mid-line, so reading up to it
                    # never meets a half-written line that a later read would see whole
                    handles.append((str(path), handle, os.fstat(handle.fileno()).st_size))
        except BaseException:
            for _, opened, _ in handles:
                opened.close()
            raise
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)
        return handles


_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


def _forked() -> None:
    for journal in list(_JOURNALS):
        journal._after_fork_in_child()


os.register_at_fork(after_in_child=_forked)

_ROTATED = re.compile(r"\.(\d{8})-(\d+)\.jsonl\Z")


def _rotated(path: str) -> list[tuple[int, str]]:
    """``(N, file)`` of every rotated file of ``path``, by ``N``."""
    directory, name = os.path.split(path)
    found: list[tuple[int, str]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory or "."):
            if entry.name.startswith(name + "."):
                match = _ROTATED.fullmatch(entry.name[len(name) :])
                if match:
                    found.append((int(match.group(2)), os.path.join(directory, entry.name)))
    return sorted(found)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_day(path: str) -> str | None:
    """The UTC day of the first good record of ``path`` (``None``: empty or unreadable)."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
        parsed = parse_line(handle.readline())
        if parsed is not None:
            return _utc_day(parsed[0])
    return None


def _line_start(fd: int, end: int) -> int:
    """The offset just after the last ``\\n`` before ``end`` (0 when there is none)."""
    while end > 0:
        lo = max(0, end - _TAIL_CHUNK)
        at = os.pread(fd, end - lo, lo).rfind(b"\n")
        if at >= 0:
            return lo + at + 1
        end = lo
    return 0


def _last_good_end(path: str, size: int) -> int:
    """Where ``path`` ends once a torn last line (no ``\\n``, or failing its check) is cut."""
    if size == 0:
        return 0
    fd = os.open(path, _READ_FLAGS)
    try:
        if os.pread(fd, 1, size - 1) != b"\n":
            return _line_start(fd, size)
        start = _line_start(fd, size - 1)
        return size if parse_line(os.pread(fd, size - start, start)) is not None else start
    finally:
        os.close(fd)


def _tail_file(path: str, handle: BinaryIO, size: int, want: int) -> list[JournalEntry]:
    """The last ``want`` records of one file, reading it backwards from ``size``."""
    fd = handle.fileno()
    chunks: list[bytes] = []
    newlines, lo = 0, size
    while lo > 0 and newlines <= want + 1:  # one more: the last line may be torn
        start = max(0, lo - _TAIL_CHUNK)
        chunk = os.pread(fd, lo - start, start)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
        lo = start
    data = b"".join(reversed(chunks))
    if lo > 0:  # begin at a line start: drop the piece of the line cut by ``lo``
        cut = data.index(b"\n") + 1
        data, lo = data[cut:], lo + cut
    before = 0  # line numbers: count the newlines before ``lo`` (in C, without parsing)
    for start in range(0, lo, 1 << 20):
        before += os.pread(fd, min(1 << 20, lo - start), start).count(b"\n")
    entries = deque(_read_file(path, io.BytesIO(data), len(data), before), maxlen=want)
    return list(entries)


def _read_file(path: str, handle: BinaryIO, size: int, first: int = 0) -> Iterator[JournalEntry]:
    """The records of one file; a damaged last line is skipped, any other damage raises."""
    number = first
    pending: tuple[int, bytes] | None = None  # a damaged line, fatal if anything follows
    while size > 0:
        line = handle.readline(size)
        if not line:
            break
        size -= len(line)
        number += 1
        if pending is not None:
            raise _damaged(path, pending[0])
        parsed = parse_line(line)
        if parsed is None:
            pending = (number, line)
            continue
        yield JournalEntry(time=parsed[0], record=parsed[1], file=path, line=number)
    if pending is not None:
        log.warning(
            "journal %s: skipped a torn last line (line %d, %d bytes), left by a crash "
            "before it was acknowledged",
            path,
            pending[0],
            len(pending[1]),
        )


def _damaged(path: str, line: int) -> StateCorruptedError:
    return StateCorruptedError(
        f"journal {path} is damaged at line {line}, with records after it (not a crash's "
        "torn last line): keep a copy, then cut or fix that line by hand; every other line "
        "checks itself",
        path=path,
        operation="Journal.read",
    )
