"""The journal (append-only history): round trip, rotation, torn tails, a model, processes, CLI."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_trading import Journal, JournalEntry, ManualClock, StateCorruptedError
from resilient_trading._cli import main
from resilient_trading._journal import encode_line, parse_line

pytestmark = pytest.mark.timeout(120)

DAY = 86400.0
T0 = 1_764_028_800.0  # 2025-11-25 00:00:00 UTC

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


def _records(journal: Journal) -> list[dict[str, Any]]:
    return [entry.record for entry in journal.read()]


# --- round trip and refusal ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(records, min_size=1, max_size=5), at=st.floats(0, 4e9))
def test_every_jsonable_record_reads_back_equal(batch: list[dict[str, Any]], at: float) -> None:
    """Property: whatever JSON records (text with any code point, big ints, -0.0, nesting) go
    in, the same records come back, in order, each with its append time."""
    with tempfile.TemporaryDirectory() as tmp:
        with Journal(Path(tmp) / "h.jsonl", clock=ManualClock(at), durable=False) as journal:
            journal.append_many(batch)
            entries = journal.read()
        assert [e.record for e in entries] == batch
        assert all(e.time == at for e in entries)
        assert [e.line for e in entries] == list(range(1, len(batch) + 1))


@given(record=records, at=st.floats(0, 4e9), flip=st.data())
def test_any_changed_byte_of_a_line_is_detected(
    record: dict[str, Any], at: float, flip: st.DataObject
) -> None:
    """Property: changing any one byte of a line (or cutting it anywhere) makes it a damaged
    line, never a different record."""
    line = encode_line(record, at)
    assert parse_line(line) == (at, record)
    index = flip.draw(st.integers(0, len(line) - 1))
    value = flip.draw(st.integers(0, 255).filter(lambda b: b != line[index]))
    changed = line[:index] + bytes([value]) + line[index + 1 :]
    assert parse_line(changed) is None
    assert parse_line(line[:index]) is None


@pytest.mark.parametrize(
    ("record", "what"),
    [
        ({"px": float("nan")}, "not a finite number"),
        ({"px": float("inf")}, "not a finite number"),
        ({1: "a"}, "is not a str"),
        ({"side": ("b", "a")}, "tuple"),
        ({"tags": {"a"}}, "set"),
        ({"o": object()}, "object"),
    ],
)
def test_a_record_that_cannot_be_read_back_is_refused_before_writing(
    tmp_path: Path, record: dict[Any, Any], what: str
) -> None:
    """Property: NaN, infinity, non-str keys, tuples, sets and objects raise ValueError naming
    the field, and nothing reaches the file (not even a partial batch)."""
    journal = Journal(tmp_path / "h.jsonl")
    with pytest.raises(ValueError, match=what):
        journal.append_many([{"fine": 1}, record])
    assert journal.read() == []
    with pytest.raises(TypeError, match="mapping"):
        journal.append([("a", 1)])  # type: ignore[arg-type]


def test_refusal_messages_are_redacted(tmp_path: Path) -> None:
    """Property: a private key inside a refused record never reaches the error message."""
    key = "0x" + "ab" * 32
    with pytest.raises(ValueError) as info:
        Journal(tmp_path / "h.jsonl").append({key: float("nan")})
    assert key not in str(info.value)


def test_files_are_created_0600(tmp_path: Path) -> None:
    """Property: the history and its lock file are readable by their owner only."""
    journal = Journal(tmp_path / "h.jsonl", rotate_bytes=100)
    for i in range(5):
        journal.append({"i": i, "pad": "x" * 40})
    assert len(journal.files()) > 1
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_bad_arguments_are_refused_at_construction(tmp_path: Path) -> None:
    """Property: a bad option raises at once, naming the argument."""
    with pytest.raises(ValueError, match="rotate_bytes"):
        Journal(tmp_path / "h.jsonl", rotate_bytes=0)
    with pytest.raises(TypeError, match="durable"):
        Journal(tmp_path / "h.jsonl", durable=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lock_timeout"):
        Journal(tmp_path / "h.jsonl", lock_timeout=float("nan"))


# --- rotation and reading -------------------------------------------------------------------


def test_rotation_by_size_keeps_every_file_under_the_limit(tmp_path: Path) -> None:
    """Property: with rotate_bytes, no file grows past it and every record is read once, in
    order, across the rotated files (named PATH.YYYYMMDD-N.jsonl)."""
    journal = Journal(tmp_path / "h.jsonl", rotate_bytes=500, clock=ManualClock(T0))
    for i in range(40):
        journal.append({"i": i})
    files = journal.files()
    assert len(files) > 3
    assert all(f.stat().st_size <= 500 for f in files)
    assert files[0].name == "h.jsonl.20251125-1.jsonl"
    assert [r["i"] for r in _records(journal)] == list(range(40))
    assert [e.record["i"] for e in journal.tail(7)] == list(range(33, 40))


@settings(max_examples=40, deadline=None)
@given(
    pads=st.lists(st.integers(0, 120), min_size=0, max_size=30),
    n=st.integers(0, 35),
    chunk=st.integers(1, 200),
    torn=st.sampled_from(["none", "cut", "bad"]),
)
@example(pads=[0] * 5, n=2, chunk=1, torn="bad")
def test_tail_is_the_end_of_read(pads: list[int], n: int, chunk: int, torn: str) -> None:
    """Property: tail(n) (which reads files backwards, in chunks) equals the last n entries of
    read(), files and line numbers included, whatever the chunk size, across rotated files,
    with or without a torn last line."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr("resilient_trading._journal._TAIL_CHUNK", chunk)
        path = Path(tmp) / "h.jsonl"
        journal = Journal(path, rotate_bytes=700, clock=ManualClock(T0), durable=False)
        for i, pad in enumerate(pads):
            journal.append({"i": i, "pad": "x" * pad})
        line = encode_line({"i": -1}, T0)
        with path.open("ab") as f:  # a crash's torn last line: cut short, or whole but bad
            f.write({"none": b"", "cut": line[:-3], "bad": line.replace(b"-1", b"-2")}[torn])
        everything = journal.read()
        assert journal.tail(n) == (everything[-n:] if n else [])


def test_rotation_by_utc_day_and_since_until(tmp_path: Path) -> None:
    """Property: the first append of a new UTC day starts a new file; a clock stepping back
    does not reorder the files (N, not the day, orders them); since/until select by time."""
    clock = ManualClock(T0 + 10)
    journal = Journal(tmp_path / "h.jsonl", rotate_bytes=None, clock=clock)
    journal.append({"d": 1})
    clock.advance(DAY)
    journal.append({"d": 2})
    clock.step(-3 * DAY)  # an operator sets the wall clock back two days
    journal.append({"d": 3})
    names = [f.name for f in journal.files()]
    assert names == ["h.jsonl.20251125-1.jsonl", "h.jsonl.20251126-2.jsonl", "h.jsonl"]
    assert [r["d"] for r in _records(journal)] == [1, 2, 3]
    assert [e.record["d"] for e in journal.read(since=T0 + DAY)] == [2]
    assert [e.record["d"] for e in journal.read(until=T0 + DAY)] == [1, 3]


def test_a_torn_last_line_is_skipped_and_cut_by_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Property: a crash's torn last line (with or without its newline) is skipped with a
    warning, and the next append starts on a clean line (no record merges with it)."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path, rotate_daily=False)
    journal.append({"i": 1})
    whole = encode_line({"i": 2}, T0)
    # cut short; whole but for its newline; whole but bad; zeros a power loss left
    for torn in (whole[:30], whole[:-1], whole[:20] + b"X" + whole[21:], b"\0" * 4096):
        with path.open("ab") as f:
            f.write(torn)
        with caplog.at_level(logging.WARNING, logger="resilient_trading.journal"):
            assert _records(journal) == [{"i": 1}]
        assert "torn last line" in caplog.text
        caplog.clear()
        Journal(path, rotate_daily=False).append({"i": 3})  # another writer (a restarted bot)
        assert _records(journal) == [{"i": 1}, {"i": 3}]
        journal.append({"i": 1})  # this writer notices the size it did not write
        assert _records(journal)[-1] == {"i": 1}
        path.write_bytes(encode_line({"i": 1}, T0))


def test_damage_in_the_middle_raises_naming_file_and_line(tmp_path: Path) -> None:
    """Property: a bad line with records after it is not a crash: StateCorruptedError names the
    file and the line (never a skipped record, never a wrong one)."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path)
    journal.append_many([{"i": i} for i in range(3)])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"i":1', b'"i":7')
    path.write_bytes(b"".join(lines))
    with pytest.raises(StateCorruptedError, match="line 2") as info:
        journal.read()
    assert info.value.path == str(path)


def test_a_read_is_a_snapshot_of_when_it_began(tmp_path: Path) -> None:
    """Property: a line being written while a reader iterates (seen half, then whole) is
    neither an error nor a record to that reader: it reads up to the size it saw under the
    lock, where no writer is mid-line."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path)
    journal.append_many([{"i": 0}, {"i": 1}])
    reading = journal.iter_records()
    assert next(reading).record == {"i": 0}
    line = encode_line({"i": 2}, T0)
    with path.open("ab", buffering=0) as f:
        f.write(line[:25])
        assert next(reading).record == {"i": 1}
        f.write(line[25:])
    assert list(reading) == []
    assert _records(journal) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_no_journal_reads_as_empty_and_creates_nothing(tmp_path: Path) -> None:
    """Property: reading a journal that was never written returns nothing and writes nothing."""
    journal = Journal(tmp_path / "h.jsonl")
    assert journal.read() == [] and journal.tail(3) == [] and journal.files() == []
    assert list(tmp_path.iterdir()) == []


# --- against a model ------------------------------------------------------------------------


class JournalModel(RuleBasedStateMachine):
    """Property: after any sequence of appends, batches, day changes, reopenings and crashes
    that truncate the live file at any byte, the journal reads back exactly the model: every
    acknowledged record not cut by the crash, in order, none twice, none torn."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.path = Path(self.dir) / "h.jsonl"
        self.clock = ManualClock(T0)
        self.journal = self._open()
        self.model: list[int] = []
        self.live: list[tuple[int, int]] = []  # (value, end offset) of the live file's lines
        self.counter = 0

    def _open(self) -> Journal:
        return Journal(self.path, rotate_bytes=400, clock=self.clock, durable=False)

    def _sync_live(self) -> None:
        # which model values sit in the live file (the rest are rotated, beyond a crash's reach)
        if not self.path.exists():
            self.live = []
            return
        data = self.path.read_bytes()
        ends = [i + 1 for i, b in enumerate(data) if b == 0x0A]
        values = [json.loads(line)["rec"]["n"] for line in data.splitlines()]
        self.live = list(zip(values, ends, strict=True))

    @rule(size=st.integers(1, 4))
    def append(self, size: int) -> None:
        batch = list(range(self.counter, self.counter + size))
        self.counter += size
        if size == 1:
            self.journal.append({"n": batch[0]})
        else:
            self.journal.append_many([{"n": n} for n in batch])
        self.model += batch
        self._sync_live()

    @rule()
    def next_day(self) -> None:
        self.clock.advance(DAY)

    @rule()
    def reopen(self) -> None:
        self.journal.close()
        self.journal = self._open()

    @precondition(lambda self: self.path.exists() and self.path.stat().st_size > 0)
    @rule(data=st.data())
    def crash_truncate(self, data: st.DataObject) -> None:
        size = self.path.stat().st_size
        cut = data.draw(st.integers(0, size - 1))
        with self.path.open("r+b") as f:
            f.truncate(cut)
        kept = [value for value, end in self.live if end <= cut]
        lost = {value for value, end in self.live if end > cut}
        self.model = [n for n in self.model if n not in lost]
        self.live = [(v, e) for v, e in self.live if v in kept]
        self.journal.close()
        self.journal = self._open()

    @invariant()
    def reads_the_model(self) -> None:
        assert [r["n"] for r in _records(self.journal)] == self.model
        assert [e.record["n"] for e in self.journal.tail(3)] == self.model[-3:]

    def teardown(self) -> None:
        self.journal.close()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


JournalModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_journal_model = JournalModel.TestCase


# --- processes -------------------------------------------------------------------------------

_WRITER = """
import sys
from resilient_trading import Journal
journal = Journal(sys.argv[1], rotate_bytes=4000, durable=False)
for i in range(int(sys.argv[3])):
    journal.append({"w": sys.argv[2], "i": i, "pad": "p" * (i % 50)})
"""


def test_processes_appending_at_once_lose_and_interleave_nothing(tmp_path: Path) -> None:
    """Property: four processes appending (and rotating) at once: every record is read exactly
    once, whole, each writer's in its own order."""
    path = tmp_path / "h.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w), "150"])
        for w in range(4)
    ]
    for proc in writers:
        assert proc.wait(timeout=60) == 0
    entries = Journal(path).read()
    assert len(entries) == 600
    assert len(Journal(path).files()) > 3
    for w in range(4):
        assert [e.record["i"] for e in entries if e.record["w"] == str(w)] == list(range(150))


def test_a_durable_append_writes_the_same_bytes_on_a_big_file(tmp_path: Path) -> None:
    """Property: the cost of one append does not grow with the history: the bytes one append
    writes (strace-free: the size delta) and the syscalls it makes stay the same on a 10,000-
    record file as on an empty one (nothing is rewritten or re-read)."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path, rotate_bytes=None, clock=ManualClock(T0))
    record = {"oid": 1, "status": "filled", "px": 101.5}
    before = path.stat().st_size if path.exists() else 0
    journal.append(record)
    first = path.stat().st_size - before
    with path.open("ab") as f:
        f.write(encode_line(record, T0) * 10_000)
    journal.append(record)  # notices the size it did not write: checks only the last line
    before = path.stat().st_size
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "pread", counting_pread)
        journal.append(record)
    assert path.stat().st_size - before == first
    assert reads == []  # this writer wrote the tail itself: nothing read back


# --- CLI --------------------------------------------------------------------------------------


def test_history_show_prints_records_tail_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Property: `history show` prints every record (rotated files included), --tail the last
    N, --json one parseable object per line; a missing journal is a one-line error, exit 1."""
    path = tmp_path / "h.jsonl"
    journal = Journal(path, rotate_bytes=200, clock=ManualClock(T0))
    for i in range(10):
        journal.append({"oid": i})
    assert main(["history", "show", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0] == '2025-11-25T00:00:00.000+00:00  {"oid":0}'
    assert main(["history", "show", str(path), "--tail", "2", "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == [{"time": T0, "record": {"oid": 8}}, {"time": T0, "record": {"oid": 9}}]
    assert main(["history", "show", str(tmp_path / "nope.jsonl")]) == 1
    assert "no journal at" in capsys.readouterr().err
    assert not (tmp_path / "nope.jsonl.lock").exists()


def test_entry_to_json_is_what_the_cli_prints() -> None:
    """Property: JournalEntry.to_json holds the time and the record only."""
    entry = JournalEntry(time=1.5, record={"a": 1}, file="f", line=3)
    assert entry.to_json() == {"time": 1.5, "record": {"a": 1}}
