"""The journal under faults: kill -9 of writers, short writes and ENOSPC at the OS boundary,
a failing fdatasync, a held lock, fork, and readers racing rotation."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from resilient_trading import (
    CommitNotDurableError,
    CriticalError,
    Journal,
    LockTimeoutError,
)

pytestmark = pytest.mark.timeout(120)


def _values(path: Path, key: str = "i") -> list[Any]:
    return [entry.record[key] for entry in Journal(path).read()]


# --- kill -9 ----------------------------------------------------------------------------------

_ACKING_WRITER = """
import sys
from resilient_trading import Journal
journal = Journal(sys.argv[1], rotate_bytes=2000, durable=True)
entries = journal.read()
i = entries[-1].record["i"] + 1 if entries else 0
while True:
    journal.append({"i": i, "pad": "x" * (i % 40)})
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_kill_9_of_a_durable_writer_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    """Property: a writer killed with SIGKILL at random moments (six times in a row, each
    restart continuing the history) loses no record append() acknowledged, and no torn line
    is ever read as a record: the history is 0, 1, 2, ... with no gap and no repeat."""
    path = tmp_path / "h.jsonl"
    rng = random.Random(15)
    acked: list[int] = []
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _ACKING_WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        want = rng.randint(3, 25)
        for _ in range(want):
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            acked.append(int(line))
        time.sleep(rng.random() * 0.01)  # let it get somewhere inside its next append
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        acked += [int(line) for line in proc.stdout.read().split()]
        proc.stdout.close()
        values = _values(path)
        assert values == list(range(len(values)))
        assert set(acked) <= set(values)
    assert len(Journal(path).files()) > 1  # it rotated on the way


def test_a_writer_killed_holding_the_lock_does_not_block_the_next(tmp_path: Path) -> None:
    """Property: the lock dies with its holder (flock): after a kill -9 while the lock is
    held, another writer appends at once."""
    path = tmp_path / "h.jsonl"
    Journal(path).append({"i": 0})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1] + '.lock', os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    with pytest.raises(LockTimeoutError, match="locked by another writer") as info:
        Journal(path, lock_timeout=0.2).append({"i": 1})
    assert info.value.lock_path == str(path) + ".lock"
    holder.kill()
    holder.wait(timeout=10)
    holder.stdout.close()
    Journal(path, lock_timeout=5).append({"i": 1})
    assert _values(path) == [0, 1]


# --- the OS boundary ----------------------------------------------------------------------------


def _journal_writes(monkeypatch: pytest.MonkeyPatch, fake: Any) -> None:
    real = os.write

    def write(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("h.jsonl"):  # the journal only
            result: int = fake(real, fd, bytes(data))
            return result
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_short_write_is_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Property: a write that takes only part of the line is continued: the record is whole."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path)
    journal.append({"i": 0})
    _journal_writes(monkeypatch, lambda real, fd, data: real(fd, data[:7]))
    journal.append({"i": 1, "pad": "y" * 100})
    monkeypatch.undo()
    assert _values(path) == [0, 1]


def test_enospc_after_a_short_write_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property: a full disk in the middle of a line raises CriticalError saying nothing was
    written, the half line is cut off again, and the next append (disk freed) is clean."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path)
    journal.append({"i": 0})
    before = path.read_bytes()
    calls: list[int] = []

    def half_then_full(real: Any, fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            written: int = real(fd, data[: len(data) // 2])
            return written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _journal_writes(monkeypatch, half_then_full)
    with pytest.raises(CriticalError, match="nothing was written") as info:
        journal.append_many([{"i": 1}, {"i": 2}])
    monkeypatch.undo()
    assert isinstance(info.value.__cause__, OSError)
    assert path.read_bytes() == before
    journal.append({"i": 3})
    assert _values(path) == [0, 3]


def test_a_torn_line_that_cannot_be_cut_is_skipped_then_cut_by_the_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property: when even the cut fails (ftruncate refused), the torn half line stays on
    disk, readers skip it (never a record, never an error), and the next append cuts it."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path)
    journal.append({"i": 0})

    def half_then_full(real: Any, fd: int, data: bytes) -> int:
        if len(data) > 20:
            written: int = real(fd, data[:20])
            return written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    _journal_writes(monkeypatch, half_then_full)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(CriticalError):
        journal.append({"i": 1})
    monkeypatch.undo()
    assert not path.read_bytes().endswith(b"\n")
    assert _values(path) == [0]
    journal.append({"i": 2})
    assert _values(path) == [0, 2]


def test_enospc_when_creating_the_file_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property: a disk that refuses to create the file raises CriticalError naming the journal."""
    real = os.open

    def full(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if str(path).endswith("h.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(CriticalError, match=r"h\.jsonl.*nothing was written"):
        Journal(tmp_path / "h.jsonl").append({"i": 0})


def test_a_failing_fdatasync_says_the_record_is_in_but_maybe_not_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property: fdatasync failing raises CommitNotDurableError (do not append again); the
    record is there for readers, and durable=False never syncs."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path)
    journal.append({"i": 0})

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(CommitNotDurableError, match="do not append it again"):
        journal.append({"i": 1})
    Journal(path, durable=False).append({"i": 2})
    monkeypatch.undo()
    assert _values(path) == [0, 1, 2]


# --- asyncio: both modes, cancellation ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_append_checks_and_writes_the_same_in_both_modes(tmp_path: Path, mode: str) -> None:
    """Property: append/append_many and their async twins refuse the same records before
    writing and write the same lines (one decision path, run twice)."""
    journal = Journal(tmp_path / "h.jsonl")

    def run(records: list[dict[str, Any]]) -> None:
        if mode == "sync":
            if len(records) == 1:
                journal.append(records[0])
            else:
                journal.append_many(records)
        elif len(records) == 1:
            asyncio.run(journal.append_async(records[0]))
        else:
            asyncio.run(journal.append_many_async(records))

    run([{"i": 0}])
    run([{"i": 1}, {"i": 2}])
    with pytest.raises(ValueError, match="not a finite number"):
        run([{"i": 3}, {"i": float("nan")}])
    assert _values(tmp_path / "h.jsonl") == [0, 1, 2]


def test_a_cancelled_append_async_never_leaves_the_lock_held(tmp_path: Path) -> None:
    """Property: an append_async cancelled while its worker waits for the lock stops the task
    at once; the worker finishes (or gives up) and releases the lock: later appends go on, and
    the cancelled record is in the history at most once."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path, lock_timeout=10)
    journal.append({"i": 0})
    blocker = os.open(str(path) + ".lock", os.O_RDWR)
    fcntl.flock(blocker, fcntl.LOCK_EX)  # another open file description: like another process

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(journal.append_async({"i": 1}), timeout=0.2)
        fcntl.flock(blocker, fcntl.LOCK_UN)  # the worker now takes the lock and appends

    asyncio.run(main())  # waits for the worker thread at shutdown
    os.close(blocker)
    Journal(path, lock_timeout=5).append({"i": 2})
    assert _values(path) == [0, 1, 2]


# --- fork and readers racing rotation ----------------------------------------------------------


def test_a_forked_child_appends_with_its_own_descriptors(tmp_path: Path) -> None:
    """Property: a journal used before fork works in the parent and the child alike (the child
    opens its own lock and file); their records never interleave."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path, rotate_bytes=600, durable=False)
    journal.append({"w": "p", "i": -1})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            for i in range(100):
                journal.append({"w": "c", "i": i})
        except BaseException:
            code = 1
        os._exit(code)
    for i in range(100):
        journal.append({"w": "p", "i": i})
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    entries = Journal(path).read()
    assert [e.record["i"] for e in entries if e.record["w"] == "c"] == list(range(100))
    assert [e.record["i"] for e in entries if e.record["w"] == "p"] == list(range(-1, 100))


def test_a_fork_while_another_thread_appends_neither_deadlocks_nor_unlocks(
    tmp_path: Path,
) -> None:
    """Property: forked while a thread of the parent is inside append (its mutex and the flock
    held), the child appends as soon as the parent's append ends (no copied mutex deadlocks
    it), and it never releases the parent's lock."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path, durable=False, lock_timeout=20)
    journal.append({"w": "p", "i": 0})
    journal._mutex.acquire()  # as another thread inside append() would hold them
    journal._lock()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            journal.append({"w": "c", "i": 0})
            os._exit(0)
        except BaseException:
            os._exit(1)
    try:
        probe = Journal(path, lock_timeout=0.3)
        with pytest.raises(LockTimeoutError):  # the child did not free the parent's lock
            probe.append({"w": "x", "i": 0})
    finally:
        fcntl.flock(journal._lock_fd, fcntl.LOCK_UN)
        journal._mutex.release()
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child deadlocked on the copied mutex")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [(e.record["w"], e.record["i"]) for e in Journal(path).read()] == [("p", 0), ("c", 0)]


_ROTATING_WRITER = """
import sys
from resilient_trading import Journal
journal = Journal(sys.argv[1], rotate_bytes=1500, durable=False)
for i in range(400):
    journal.append({"w": sys.argv[2], "i": i})
"""


def test_readers_racing_rotation_see_every_record_exactly_once(tmp_path: Path) -> None:
    """Property: while two processes append and rotate every few records, every read (and
    every tail) sees each writer's records as 0..k with no gap and no repeat."""
    path = tmp_path / "h.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", _ROTATING_WRITER, str(path), str(w)])
        for w in range(2)
    ]
    reader = Journal(path)
    reads = 0
    deadline = time.monotonic() + 60
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        entries = reader.read()
        for name in ("0", "1"):
            seen = [e.record["i"] for e in entries if e.record["w"] == name]
            assert seen == list(range(len(seen)))
        tail = reader.tail(5)
        assert len({(e.record["w"], e.record["i"]) for e in tail}) == len(tail)
        reads += 1
    for proc in writers:
        assert proc.wait(timeout=30) == 0
    assert reads > 0
    assert len(reader.read()) == 800
