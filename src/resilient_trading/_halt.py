"""The operator's fleet-wide halt: one shared flag that every bot reads once per loop.

``resilient-trading halt --state-dir DIR --reason TEXT`` (or ``--redis URL``) raises the flag;
``resilient-trading resume`` lowers it. Every bot built with the same state directory or Redis
asks :meth:`Halt.halted` once per loop and, while it returns a :class:`HaltStatus`, makes no
new entries (cancels and reduce-only closes still go out: a halt must never strand a
position). The flag lives on the shared-state seam (:func:`resilient_trading.backends.open_state`):

* a file ``DIR/halt.json`` (:class:`~resilient_trading.backends.FileState`, a crash-safe record
  pair) for every process on this host; :meth:`Halt.halted` costs one ``stat`` while the file is
  unchanged (the parsed flag is cached by inode, size and change time);
* the Redis key ``resilient-trading:halt`` for processes on many machines (one ``GET`` per call).

**An unreadable flag is an error, never "not halted".** A damaged ``halt.json`` (not JSON,
not a flag, replaced by a script with garbage), or one that cannot be read at all (a
directory, a FIFO, a symlink, even a dangling one: the library never follows links, and a
link may point at storage that is not mounted; permission denied, an I/O error) raises
:class:`StateCorruptedError` from :meth:`Halt.halted` and :meth:`Halt.peek`: a bot treats it
as halted (no new entries) until the operator writes the flag again with
``resilient-trading halt`` or ``resume``. Only a missing file means "not halted".

The stored value (JSON)::

    {"halted": true, "reason": "exchange incident", "since": 1764090000.0, "by": "ops@host"}
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import math
import os
import socket
import stat
import time
from typing import Any, TypeVar

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import StateCorruptedError
from resilient_trading._events import HaltEvent, emit
from resilient_trading._redact import safe_text
from resilient_trading.backends import FileState, SharedState, open_state
from resilient_trading.backends._base import Transition

__all__ = ["HALT_FILE", "HALT_KEY", "Halt", "HaltStatus"]

#: The file under ``state_dir`` that holds the flag.
HALT_FILE = "halt.json"
#: The Redis key that holds the flag.
HALT_KEY = "resilient-trading:halt"
T = TypeVar("T")
_REASON_LIMIT = 500
_REVALIDATE = 1.0  # seconds a stat-cached flag is trusted without reading it
_SETTLE_NS = 100_000_000  # a file modified this recently is read again on every call
#: What to do with a damaged flag. Never "delete it": a missing flag resumes the whole fleet.
_ADVICE = (
    "bots treat it as halted; write the flag again with `resilient-trading halt --reason ...` "
    "(stay halted) or `resilient-trading resume` (trade again)"
)

# `halt` cannot write over a link or a directory: it must go first (and "missing" resumes).
_NOT_A_FILE = " (remove it, then at once write the flag again: a missing flag means not halted)"


def _bad(location: str, what: str) -> StateCorruptedError:
    return StateCorruptedError(f"halt flag at {location} {what}; {_ADVICE}", path=location)


def _unreadable(location: str, exc: OSError) -> StateCorruptedError:
    reason = exc.strerror or type(exc).__name__
    return _bad(location, f"cannot be read ({reason})")


@dataclasses.dataclass(frozen=True)
class HaltStatus:
    """A raised halt: why, since when (seconds since the epoch) and by whom."""

    reason: str
    since: float
    by: str

    def to_json(self) -> dict[str, Any]:
        return {"halted": True, "reason": self.reason, "since": self.since, "by": self.by}

    @classmethod
    def from_json(cls, value: Any, location: str) -> HaltStatus | None:
        """Parse a stored flag: ``None`` when not halted (or never written).

        ``reason`` and ``by`` come back redacted (:func:`~resilient_trading._redact.safe_text`)
        and cut to their stored limits, whoever wrote them.

        Raises:
            StateCorruptedError: The value is not a halt flag (the message names ``location``).
        """
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("halted"), bool):
            raise _bad(location, "is not a halt flag (no boolean 'halted')")
        if not value["halted"]:
            return None
        reason, since, by = value.get("reason"), value.get("since"), value.get("by", "")
        if not isinstance(reason, str) or not isinstance(by, str):
            raise _bad(location, "has a non-string 'reason' or 'by'")
        if (
            isinstance(since, bool)
            or not isinstance(since, int | float)
            or not math.isfinite(since)
        ):
            raise _bad(location, f"has since={since!r}, not a time in seconds")
        # Another writer (an older version, a script, redis-cli) may have stored a secret:
        # what is read back is redacted before anyone shows, logs or alerts it.
        return cls(
            reason=safe_text(reason, _REASON_LIMIT), since=float(since), by=safe_text(by, 120)
        )


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): say so rather than fail
        user = "unknown"
    return safe_text(f"{user}@{socket.gethostname()} pid {os.getpid()}", 120)


class Halt:
    """The shared halt flag of a fleet of bots.

    Args:
        state_dir: The bots' shared state directory (must exist); the flag is ``halt.json`` in it.
        redis_url: Or a Redis URL: the flag is the key ``resilient-trading:halt``.
        clock: Wall clock for ``since`` (file home; Redis uses the server's clock).

    Give exactly one of ``state_dir`` and ``redis_url`` (``ValueError`` otherwise).

    Example:
        >>> import tempfile
        >>> halt = Halt(state_dir=tempfile.mkdtemp())
        >>> halt.halted() is None
        True
        >>> halt.halt("exchange incident").reason
        'exchange incident'
        >>> halt.halted().reason
        'exchange incident'
        >>> halt.resume()
        >>> halt.halted() is None
        True
    """

    def __init__(
        self,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if (state_dir is None) == (redis_url is None):
            raise ValueError("give state_dir or redis_url (exactly one of them)")
        self._path: str | None = None
        if state_dir is not None:
            if not os.path.isdir(state_dir):
                raise ValueError(
                    f"state_dir {os.fspath(state_dir)!r} is not a directory: give the bots' "
                    "existing state directory (the library never creates directories)"
                )
            self._path = os.path.join(os.fspath(state_dir), HALT_FILE)
        self._clock = clock
        self._state: SharedState | None = None
        if self._path is None:
            self._state = open_state(state_path=None, redis_url=redis_url, key=HALT_KEY)
        else:
            # A flag unreadable now (a directory, a symlink...) fails the calls, not this one:
            # a bot starts, and treats the flag as halted until it is written again.
            with contextlib.suppress(OSError):
                self._file()
        # (inode, size, mtime, ctime), when it was read (monotonic), the flag it held.
        self._cache: tuple[tuple[int, int, int, int], float, HaltStatus | None] | None = None
        self._seen: HaltStatus | None = None

    def _file(self) -> SharedState:
        """The flag's state, opened on first use (``OSError`` when the path cannot be opened)."""
        if self._state is None:
            assert self._path is not None
            self._state = FileState(self._path, clock=self._clock, advice=_ADVICE)
        return self._state

    @property
    def location(self) -> str:
        """Where the flag lives (a path, or ``redis://host/db#key`` without credentials)."""
        if self._path is not None:
            return self._path
        return self._file().location

    def halted(self) -> HaltStatus | None:
        """The raised halt, or ``None`` when bots may make new entries.

        Raises:
            StateCorruptedError: The flag is damaged or cannot be read (a directory, a symlink,
                permission denied, an I/O error): treat it as halted; the message says how
                to write it again.
            NetworkError: Redis is unreachable; a bot should treat that as halted (no new
                entries) until it can read the flag again.
        """
        status = self._read()
        if status != self._seen:
            # Each change this handle sees is one event (alerts, metrics), in the process
            # that obeys it.
            self._seen = status
            emit(
                HaltEvent(kind="halted", location=self.location, reason=status.reason)
                if status is not None
                else HaltEvent(kind="resumed", location=self.location)
            )
        return status

    def peek(self) -> HaltStatus | None:
        """The flag as :meth:`halted` reads it, without emitting a :class:`HaltEvent`: for
        viewers (``status``, the exporter) that do not obey the flag.

        Raises:
            StateCorruptedError: The flag is damaged or cannot be read.
            NetworkError: Redis is unreachable.
        """
        return self._read()

    def _read(self) -> HaltStatus | None:
        if self._path is None:
            return HaltStatus.from_json(self._file().read(), self.location)
        try:
            st = os.lstat(self._path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        if stat.S_ISLNK(st.st_mode):
            # Even a dangling link is not "no flag": the library never follows links, so
            # `halt` could not write through it, and its target may be storage not mounted.
            raise _bad(self._path, f"is a symbolic link (never followed){_NOT_A_FILE}")
        if not stat.S_ISREG(st.st_mode):
            raise _bad(self._path, f"is not a regular file{_NOT_A_FILE}")
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        mono = time.monotonic()
        cache = self._cache
        # Revalidated at least every second: a write inside one timestamp tick, or read
        # while it was landing, can leave the stat unchanged for a moment.
        if cache is not None and cache[0] == key and mono - cache[1] < _REVALIDATE:
            return cache[2]
        try:
            value = self._file().read()
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        status = HaltStatus.from_json(value, self._path)
        # A file changed moments ago may still be being written: read it again next time.
        settled = time.time_ns() - st.st_mtime_ns > _SETTLE_NS
        self._cache = (key, mono, status) if settled else None
        return status

    def halt(self, reason: str) -> HaltStatus:
        """Raise the flag (again: a new reason replaces the old one). Returns what was stored."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("reason must be a non-empty str saying why the fleet is halted")
        text = safe_text(reason.strip(), _REASON_LIMIT)
        by = _operator()

        def step(old: Any, now: float) -> tuple[Any, HaltStatus]:
            status = HaltStatus(reason=text, since=now, by=by)
            return status.to_json(), status

        status: HaltStatus = self._transact(step)
        return status

    def resume(self) -> None:
        """Lower the flag: bots make new entries again from their next loop."""
        by = _operator()

        def step(old: Any, now: float) -> tuple[Any, None]:
            if isinstance(old, dict) and old.get("halted") is False:
                return old, None
            return {"halted": False, "resumed_at": now, "by": by}, None

        self._transact(step)

    def _transact(self, step: Transition[T]) -> T:
        """Run ``step``; over a file too damaged to parse, write its value anyway: the
        operator's ``halt`` and ``resume`` are the way out of a damaged flag."""
        state = self._file()
        try:
            return state.transact(step)
        except StateCorruptedError:
            if not isinstance(state, FileState):
                raise
        new, result = step(None, self._clock.time())
        state.overwrite(new)
        return result

    def close(self) -> None:
        """Release the file descriptor or Redis connection. Idempotent."""
        if self._state is not None:
            self._state.close()

    def __enter__(self) -> Halt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Halt({self.location!r})"
