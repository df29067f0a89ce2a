"""The file homes under faults: cancellation, fork + kill -9, short writes, kill -9 mid-write,
a failing directory fsync, unreadable documents, damaged envelopes, descriptor leaks."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import pickle
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import (
    CommitNotDurableError,
    CriticalError,
    LockedJsonStore,
    LockTimeoutError,
    StateCorruptedError,
)
from resilient_trading.backends import FileState, JsonStoreState

pytestmark = pytest.mark.timeout(120)


def _lock_is_free(path: Path, within: float = 5.0) -> bool:
    """Poll (with a deadline) until another open file description can take the flock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
    finally:
        os.close(fd)


# --- 3. cancellation --------------------------------------------------------------------


def test_cancelled_async_transaction_never_leaves_the_lock_held(tmp_path: Path) -> None:
    """Property: a transaction_async cancelled while its worker waits for the lock releases
    the lock as soon as the worker gets it; other processes and later transactions go on."""
    store = LockedJsonStore(tmp_path / "s.json", lock_timeout=5)
    blocker = os.open(tmp_path / "s.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(blocker, fcntl.LOCK_EX)  # another open file description: like another process

    async def bump() -> None:
        async with store.transaction_async() as doc:
            doc["n"] = doc.get("n", 0) + 1

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(bump(), timeout=0.2)
        fcntl.flock(blocker, fcntl.LOCK_UN)  # the worker thread now takes the lock...

    asyncio.run(main())
    os.close(blocker)
    assert _lock_is_free(tmp_path / "s.json.lock")  # ...and lets it go
    with LockedJsonStore(tmp_path / "s.json", lock_timeout=1).transaction() as doc:
        doc["after"] = True
    assert store.read() == {"after": True}  # the cancelled bump committed nothing
    store.close()


def test_nested_async_transaction_is_the_same_clear_error(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")

    async def nested() -> None:
        async with store.transaction_async(), store.transaction_async():
            pass

    async def sync_inside_async() -> None:
        async with store.transaction_async():
            with store.transaction():
                pass

    for case in (nested, sync_inside_async):
        with pytest.raises(RuntimeError, match="nested transaction"):
            asyncio.run(asyncio.wait_for(case(), timeout=5))  # never a deadlock
    with store.transaction() as doc:  # the store is usable afterwards
        doc["ok"] = True

    async def two_tasks() -> None:  # concurrent, not nested: both commit
        async def bump() -> None:
            async with store.transaction_async() as doc:
                doc["n"] = doc.get("n", 0) + 1

        await asyncio.gather(bump(), bump())

    asyncio.run(two_tasks())
    assert store.read() == {"ok": True, "n": 2}


# --- 4. fork + kill -9 -------------------------------------------------------------------

_FORK_STORE = """
import os, sys, time
from resilient_trading import LockedJsonStore
store = LockedJsonStore(sys.argv[1])
with store.transaction() as doc:
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(30)
"""

_FORK_FILE_STATE = """
import os, sys, time
from resilient_trading.backends import FileState
state = FileState(sys.argv[1])
def hold(old, now):
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(30)
    return old, None
state.transact(hold)
"""


@pytest.mark.parametrize(
    ("script", "lock_name"), [(_FORK_STORE, "s.json.lock"), (_FORK_FILE_STATE, "s.json")]
)
def test_forked_child_does_not_keep_a_killed_parents_lock(
    tmp_path: Path, script: str, lock_name: str
) -> None:
    """Property: kill -9 of a lock holder frees the lock even while a child it forked lives."""
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "s.json")], stdout=subprocess.PIPE
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _lock_is_free(tmp_path / lock_name), "the forked child kept the dead parent's lock"
    finally:
        os.kill(child, signal.SIGKILL)


# --- 5. FileState: short writes and kill -9 mid-write ------------------------------------


def test_file_state_short_write_on_a_full_disk_keeps_the_previous_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    state = FileState(path)
    old = {"window": list(range(2000))}  # > 4 KiB
    state.transact(lambda _, now: (old, None))
    real = os.pwrite
    calls: list[int] = []

    def half_then_enospc(fd: int, data: Any, offset: int) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    with pytest.raises(CriticalError, match="previous value is kept"):
        state.transact(lambda _, now: ({"window": list(range(3000, 6000))}, None))
    monkeypatch.undo()
    # the short write was noticed and continued, then the torn record was unmarked
    assert len(calls) == 3 and calls[1] == calls[0] - calls[0] // 2 and calls[2] == 6
    assert state.read() == old
    assert FileState(path).read() == old  # another process sees the same
    assert state.transact(lambda v, now: ({"n": 1}, v)) == old
    assert FileState(path).read() == {"n": 1}


_FILE_WRITER = """
import sys
from resilient_trading.backends import FileState
state = FileState(sys.argv[1])
def bump(old, now):
    n = (old or {"n": 0})["n"] + 1
    return {"n": n, "pad": "x" * (20000 + 7919 * n % 300000)}, n
while True:
    print(state.transact(bump), flush=True)
"""


def test_file_state_kill_9_mid_write_never_tears_the_state(tmp_path: Path) -> None:
    """Property: after kill -9 at random moments of writes of 20-320 KiB, the file always
    reads, holds at least the last acknowledged value, and later writes keep working."""
    path = tmp_path / "s.json"
    rng = random.Random(11)
    acknowledged = 0
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", _FILE_WRITER, str(path)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read().split()
        proc.wait()
        if out:
            acknowledged = max(acknowledged, int(out[-1]))
        value = FileState(path).read()
        assert value["n"] >= acknowledged
        assert value["pad"] == "x" * (20000 + 7919 * value["n"] % 300000)
        acknowledged = value["n"]
    assert path.stat().st_size < 3 * 330_000  # compacted: two records and a torn tail at most


@given(
    values=st.lists(
        st.dictionaries(st.text(max_size=3), st.text(max_size=200), max_size=30),
        min_size=1,
        max_size=8,
    ),
    cut=st.integers(min_value=0, max_value=10_000),
)
@settings(max_examples=60, deadline=None)
def test_file_state_any_torn_write_reads_as_the_previous_value(
    values: list[dict[str, str]], cut: int
) -> None:
    """Property: whatever prefix of the next record reached the file, a reader sees the last
    complete value (the record is written where it cannot overlap the current one)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.json")
        state = FileState(path)
        for value in values:

            def put(old: Any, now: float, v: dict[str, str] = value) -> tuple[Any, None]:
                return v, None

            state.transact(put)
        real = os.pwrite

        def torn(fd: int, data: Any, offset: int) -> int:
            real(fd, bytes(data[: min(cut, len(data) - 1)]), offset)
            raise OSError(errno.EIO, "simulated crash")

        os.pwrite = torn
        try:
            with pytest.raises(CriticalError):
                state.transact(lambda _, now: ({"next": "y" * 500}, None))
        finally:
            os.pwrite = real
        assert FileState(path).read() == values[-1]
        state.close()


def test_file_state_reads_plain_json_written_before_and_converts_it(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"tokens": 3}' + " " * 40)  # the old format: JSON padded with spaces
    state = FileState(path)
    assert state.read() == {"tokens": 3}
    assert state.transact(lambda old, now: ({"tokens": old["tokens"] + 1}, old)) == {"tokens": 3}
    assert FileState(path).read() == {"tokens": 4}


def test_file_state_damaged_beyond_repair_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    state = FileState(path)
    state.transact(lambda _, now: ({"a": 1}, None))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # a flipped bit in the only record
    path.write_bytes(bytes(raw))
    with pytest.raises(StateCorruptedError, match="delete it"):
        FileState(path).transact(lambda old, now: (old, None))


# --- 6. directory fsync fails after the rename -------------------------------------------


def test_failed_directory_fsync_after_rename_says_committed_not_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["n"] = 1
    real = os.fsync

    def failing_dir_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fsync", failing_dir_fsync)
    with pytest.raises(CommitNotDurableError) as info, store.transaction() as doc:
        doc["n"] = 2
    monkeypatch.undo()
    message = str(info.value)
    assert "left unchanged" not in message
    assert "committed (generation 2)" in message and str(store.path) in message
    assert isinstance(info.value, CriticalError)
    assert info.value.generation == 2 and info.value.path == str(store.path)
    again = pickle.loads(pickle.dumps(info.value))  # crosses a ProcessPoolExecutor intact
    assert (type(again), again.generation, str(again)) == (type(info.value), 2, message)
    assert store.read() == {"n": 2}  # what the error says is what the disk holds
    assert LockedJsonStore(store.path).read() == {"n": 2}


# --- 7. refuse what cannot be read back --------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: _nested(500), "nested more than"),
        (lambda: _nested(100), "nested more than"),  # 101 with the document itself
        (lambda: {"px": float("nan")}, "not a finite number"),
        (lambda: {"px": float("inf")}, "not a finite number"),
        (lambda: {("a", 1): 1}, "is not a str"),
        (lambda: (1, 2), "tuple cannot be stored"),
    ],
)
def test_documents_that_cannot_be_read_back_are_refused_before_writing(
    tmp_path: Path, make: Callable[[], Any], fragment: str
) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["good"] = 1
    before = (tmp_path / "s.json").read_bytes()
    with pytest.raises(ValueError, match=fragment), store.transaction() as doc:
        doc["bad"] = make()
    assert (tmp_path / "s.json").read_bytes() == before
    assert store.read() == {"good": 1}
    with store.transaction() as doc:  # reads and transactions still work
        doc["good"] = 2


def test_documents_up_to_the_depth_limit_round_trip(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["deep"] = _nested(99)
    assert LockedJsonStore(tmp_path / "s.json").read() == {"deep": _nested(99)}


def test_cycle_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="cycle"), store.transaction() as doc:
        doc["loop"] = loop


def test_a_deeply_nested_file_written_by_someone_else_is_state_corrupted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StateCorruptedError, match="nested too deeply"):
        LockedJsonStore(path).read()


# --- 8. a damaged envelope is never legacy data ------------------------------------------


def _envelope_bytes(tmp: str, data: dict[str, Any]) -> bytes:
    path = os.path.join(tmp, "s.json")
    with LockedJsonStore(path, backup=False) as store, store.transaction() as doc:
        doc.update(data)
    return Path(path).read_bytes()


def test_every_single_bit_flip_of_the_envelope_head_is_detected(tmp_path: Path) -> None:
    """Property: flipping any one bit of the envelope's first 120 bytes gives either the
    same data back or StateCorruptedError, never the envelope read as legacy JSON."""
    data = {"position": {"coin": "ETH", "size": 1.5}}
    raw = _envelope_bytes(str(tmp_path), data)
    path = tmp_path / "flip.json"
    for index in range(120):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[index] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            try:
                got = LockedJsonStore(path, backup=False).read()
            except StateCorruptedError:
                continue
            assert got == data, (index, bit, bytes(damaged[:60]))


@given(
    data=st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6), max_size=5),
    index=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
@settings(max_examples=150, deadline=None)
def test_any_bit_flip_anywhere_is_detected_or_harmless(
    data: dict[str, Any], index: int, bit: int
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw = bytearray(_envelope_bytes(tmp, data))
        raw[index % len(raw)] ^= 1 << bit
        path = Path(tmp) / "flip.json"
        path.write_bytes(bytes(raw))
        with contextlib.suppress(StateCorruptedError):
            assert LockedJsonStore(path, backup=False).read() == data


# --- 10. descriptors ---------------------------------------------------------------------

_MANY_STORES = """
import os, resource, sys
from resilient_trading import LockedJsonStore
from resilient_trading.backends import FileState, JsonStoreState
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
d = sys.argv[1]
for i in range(300):
    store = LockedJsonStore(os.path.join(d, f"s{i % 7}.json"), durable=False)
    with store.transaction() as doc:
        doc["n"] = doc.get("n", 0) + 1
    store.read()
    FileState(os.path.join(d, f"f{i % 5}.state")).transact(lambda old, now: ((old or 0) + 1, 0))
    js = JsonStoreState(os.path.join(d, "b.json"), section="b", name=str(i % 3))
    js.transact(lambda old, now: ((old or 0) + 1, 0))
with LockedJsonStore(os.path.join(d, "ctx.json")) as store:
    with store.transaction() as doc:
        doc["ok"] = True
print(len(os.listdir("/proc/self/fd")))
"""


def test_dropped_stores_release_their_descriptors(tmp_path: Path) -> None:
    """Property: 300 stores, file states and store states created and dropped fit in a
    64-descriptor limit (closed when dropped or at the end of a with block)."""
    out = subprocess.run(
        [sys.executable, "-c", _MANY_STORES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) < 20


def test_close_releases_and_the_store_reopens_on_use(tmp_path: Path) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["n"] = 1
    assert fds() > before
    store.close()
    store.close()  # idempotent
    assert fds() == before
    assert store.read() == {"n": 1}
    with store, store.transaction() as doc:
        doc["n"] = 2
    assert fds() == before
    with store.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
        store.close()


# --- lock timeouts: one rule for every file home -----------------------------------------


@pytest.mark.parametrize("make", [LockedJsonStore, FileState])
def test_lock_timeout_rules_are_the_same_for_every_file_home(
    tmp_path: Path, make: Callable[..., Any]
) -> None:
    for bad, error in ((float("inf"), ValueError), (-1, ValueError), ("1", TypeError)):
        with pytest.raises(error, match="lock_timeout"):
            make(tmp_path / "s.json", lock_timeout=bad)
    with pytest.raises(ValueError, match="lock_timeout"):
        JsonStoreState(tmp_path / "s.json", section="a", name="b", lock_timeout=float("inf"))


def test_json_store_state_passes_its_lock_timeout(tmp_path: Path) -> None:
    state = JsonStoreState(tmp_path / "s.json", section="a", name="b", lock_timeout=0.1)
    blocker = os.open(tmp_path / "s.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(blocker, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            state.transact(lambda old, now: (1, None))
        assert time.monotonic() - started < 3
    finally:
        os.close(blocker)
    assert state.transact(lambda old, now: (1, old)) is None
    assert state.read() == 1
    state.close()


def test_typed_store_message_is_redacted_before_it_is_cut(tmp_path: Path) -> None:
    import dataclasses

    from resilient_trading import TypedStore

    @dataclasses.dataclass
    class State:
        n: int = 0

    key = "ab" * 32  # 64 hex digits, a private key's shape

    def decode(data: dict[str, Any]) -> State:
        # A validation message quoting a secret just where a 300-character cut falls.
        raise ValueError(f"bad value {'y' * 270} {key}")

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"n": 1}))
    store = TypedStore(LockedJsonStore(path), State, decode=decode, encode=dataclasses.asdict)
    with pytest.raises(StateCorruptedError) as info:
        store.read()
    assert key[:16] not in str(info.value)
    assert "<redacted>" in str(info.value) or "<redac" in str(info.value)


# --- the read-only snapshot (hot paths) --------------------------------------------------


def test_snapshot_is_read_only_shared_and_fresh(tmp_path: Path) -> None:
    import copy
    import pickle

    store = LockedJsonStore(tmp_path / "s.json")
    assert store.snapshot() == {}
    with store.transaction() as doc:
        doc["pos"] = {"ETH": {"size": 1.5, "orders": [1, 2]}}
    view = cast(Any, store.snapshot())
    assert view == {"pos": {"ETH": {"size": 1.5, "orders": [1, 2]}}}
    assert id(store.snapshot()) == id(view)  # no copy while the file is unchanged
    assert json.loads(json.dumps(view)) == view
    changes: list[Callable[[], object]] = [
        lambda: view.__setitem__("x", 1),
        lambda: view["pos"]["ETH"].update(size=2),
        lambda: view["pos"]["ETH"]["orders"].append(3),
        lambda: view["pos"].pop("ETH"),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    for plain in (copy.deepcopy(view), pickle.loads(pickle.dumps(view))):
        plain["pos"]["ETH"]["orders"].append(3)  # plain, mutable copies
        assert type(plain) is dict
    assert store.snapshot() == {"pos": {"ETH": {"size": 1.5, "orders": [1, 2]}}}
    with LockedJsonStore(tmp_path / "s.json").transaction() as doc:
        doc["pos"] = {}
    assert store.snapshot() == {"pos": {}}  # another writer's commit is seen


def test_a_forked_child_never_commits_its_parents_transaction(tmp_path: Path) -> None:
    """A child forked inside a transaction runs the rest of the block too; it holds no lock,
    so it must not write: the parent commits, once, and the child gets a clear error."""
    store = LockedJsonStore(tmp_path / "s.json")
    state = FileState(tmp_path / "f.state")
    read_end, write_end = os.pipe()
    forked = {"pid": -1}

    def fork_in_transition(old: Any, now: float) -> tuple[Any, None]:
        forked["pid"] = os.fork()
        return (666 if forked["pid"] == 0 else 1), None

    def fork_in_block(doc: dict[str, Any]) -> None:
        forked["pid"] = os.fork()
        doc["n"] = 666 if forked["pid"] == 0 else 1

    runs: list[Callable[[], object]] = [
        lambda: store.update(fork_in_block),
        lambda: state.transact(fork_in_transition),
    ]
    for run in runs:
        forked["pid"] = -1
        try:
            run()
        except BaseException as exc:
            if forked["pid"] == 0:  # pragma: no cover - child
                refused = isinstance(exc, RuntimeError) and "forked child" in str(exc)
                os.write(write_end, b"R" if refused else b"?")
                os._exit(0)
            raise
        if forked["pid"] == 0:  # pragma: no cover - child: it committed without the lock
            os.write(write_end, b"C")
            os._exit(0)
        os.waitpid(forked["pid"], 0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        assert fh.read() == b"RR"
    assert store.read() == {"n": 1}
    assert state.read() == 1


# --- FileState against a model: writes, torn writes, short writes, reopenings -----------

_small_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


class FileStateMachine(RuleBasedStateMachine):
    """Property: whatever sequence of writes, torn writes (a crash after any prefix) and short
    writes (a full disk) happens, every reader sees the last acknowledged value, and the file
    stays compact."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="rt-filestate-")
        self.path = os.path.join(self.dir, "s.state")
        self.state = FileState(self.path)
        self.model: Any = None
        self.largest = 0

    def teardown(self) -> None:
        self.state.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _put(self, value: Any) -> None:
        # A fresh dict each time: returning the stored object itself would mean "unchanged".
        self.state.transact(lambda old, now: ({"v": value}, None))

    def _failing(self, value: Any, pwrite: Callable[..., int]) -> None:
        real = os.pwrite
        os.pwrite = pwrite
        try:
            with pytest.raises(CriticalError, match="previous value is kept"):
                self._put(value)
        finally:
            os.pwrite = real
        self.largest = max(self.largest, len(json.dumps(value)))

    @rule(value=_small_values)
    def write(self, value: Any) -> None:
        self._put(value)
        self.model = {"v": value}
        self.largest = max(self.largest, len(json.dumps(value)))

    @rule(value=_small_values, cut=st.integers(min_value=0, max_value=2000))
    def crash_mid_write(self, value: Any, cut: int) -> None:
        """kill -9 after any prefix of the write: nobody was told anything, so a reader
        may see the old value or (if every byte landed) the new one, never anything else."""
        real = os.pwrite

        def torn(fd: int, data: Any, offset: int) -> int:
            real(fd, bytes(data[:cut]), offset)
            raise OSError(errno.EIO, "simulated crash")  # the process is gone: no clean-up

        os.pwrite = torn
        try:
            with contextlib.suppress(CriticalError):
                self._put(value)
        finally:
            os.pwrite = real
        self.largest = max(self.largest, len(json.dumps(value)))
        self.state = FileState(self.path)  # the crashed process's state is gone
        seen = self.state.read()
        assert seen in (self.model, {"v": value})
        self.model = seen

    @rule(value=_small_values)
    def disk_full_mid_write(self, value: Any) -> None:
        """A short write, then ENOSPC: the caller is told the previous value is kept, and it
        is, exactly."""
        real = os.pwrite
        calls = [0]

        def short(fd: int, data: Any, offset: int) -> int:
            calls[0] += 1
            if calls[0] == 1 and len(data) > 1:
                return real(fd, bytes(data[: len(data) // 2]), offset)
            if calls[0] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data, offset)  # rewriting bytes in place needs no new block

        self._failing(value, short)

    @rule()
    def reopen(self) -> None:
        self.state.close()
        self.state = FileState(self.path)

    @invariant()
    def readers_see_the_last_acknowledged_value(self) -> None:
        assert self.state.read() == self.model
        other = FileState(self.path)
        assert other.read() == self.model
        other.close()

    @invariant()
    def file_stays_compact(self) -> None:
        # at most two records and a torn tail; 41-byte headers, JSON without spaces
        assert os.path.getsize(self.path) <= 3 * (self.largest + 64 + 8)


TestFileStateMachine = FileStateMachine.TestCase
TestFileStateMachine.settings = settings(max_examples=30, stateful_step_count=15, deadline=None)
