"""A FileState follows its path: a file replaced from outside is the file read and written.

Issue #15 (D4): a long-lived FileState kept reading and writing through its lock descriptor,
the *old* inode, after another process renamed a new file over the path (or deleted it): it
read a garbage replacement as empty (``None``) and its writes went to a file nobody sees.

Properties: against a reference model, any sequence of transactions (plain and cached, the
limiter's hot path), lock-free reads, and outside replacements by rename (a value, garbage,
a record written by another FileState), deletions leaves a long-lived handle agreeing with a
fresh one and with the model; a garbage replacement is ``StateCorruptedError``, never
``None``; a replacement made by another real process is seen at once; something other than
a regular file at the path is refused, and a FIFO never hangs a reader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import StateCorruptedError
from resilient_trading.backends import FileState

pytestmark = pytest.mark.timeout(60)

_GARBAGE = object()  # the model's "the file at the path does not parse"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _replace(path: Path, content: bytes) -> None:
    """What a script or an editor does: write a new file, rename it over the path."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(content)
    os.replace(tmp, path)


class ReplacedFileMachine(RuleBasedStateMachine):
    """One long-lived FileState against a model, while the file is replaced under it."""

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self.dir = Path(tempfile.mkdtemp(prefix="rt-replaced-"))
        self.path = self.dir / "state.json"
        self.state = FileState(self.path)

    def _step(self, cached: bool) -> None:
        def add(old: Any, now: float) -> tuple[Any, Any]:
            return (old or 0) + 1, old

        if self.model is _GARBAGE:
            with pytest.raises(StateCorruptedError):
                if cached:
                    self.state.transact_cached(add, dumps=_dumps)
                else:
                    self.state.transact(add)
            return
        seen = self.state.transact_cached(add, dumps=_dumps) if cached else self.state.transact(add)
        assert seen == self.model
        self.model = (self.model or 0) + 1

    @rule()
    def transact(self) -> None:
        self._step(cached=False)

    @rule()
    def transact_cached(self) -> None:
        self._step(cached=True)

    @rule()
    def read(self) -> None:
        if self.model is _GARBAGE:
            with pytest.raises(StateCorruptedError):
                self.state.read()
        else:
            assert self.state.read() == self.model

    @rule(value=st.integers(0, 10**6))
    def replace_with_plain_json(self, value: int) -> None:
        _replace(self.path, _dumps(value))
        self.model = value

    @rule(value=st.integers(0, 10**6))
    def replace_with_a_record(self, value: int) -> None:
        # a file written by another FileState elsewhere, then moved over the path
        other = self.dir / "other.json"
        writer = FileState(other)
        writer.transact(lambda old, now: (value, None))
        writer.close()
        os.replace(other, self.path)
        self.model = value

    @rule(garbage=st.sampled_from([b"{not json", b'{"halted": tru', b"[1, 2"]))
    def replace_with_garbage(self, garbage: bytes) -> None:
        _replace(self.path, garbage)
        self.model = _GARBAGE

    @rule()
    def delete(self) -> None:
        if self.path.exists():
            self.path.unlink()
            self.model = None

    @invariant()
    def a_fresh_handle_agrees(self) -> None:
        if not self.path.exists():
            return
        fresh = FileState(self.path)
        try:
            if self.model is _GARBAGE:
                with pytest.raises(StateCorruptedError):
                    fresh.read()
            else:
                assert fresh.read() == self.model
        finally:
            fresh.close()

    def teardown(self) -> None:
        self.state.close()
        shutil.rmtree(self.dir)


ReplacedFileMachine.TestCase.settings = settings(max_examples=40, deadline=None)
test_a_long_lived_handle_follows_a_replaced_file = ReplacedFileMachine.TestCase


_REPLACER = """
import json, os, sys
path, content = sys.argv[1], sys.argv[2].encode()
with open(path + ".new", "wb") as f:
    f.write(content)
os.replace(path + ".new", path)
"""


@pytest.mark.parametrize("cached", [False, True])
def test_a_file_replaced_by_another_process_is_read_and_written_by_a_running_handle(
    tmp_path: Path, cached: bool
) -> None:
    path = tmp_path / "state.json"
    state = FileState(path)
    state.transact(lambda old, now: (1, None))

    def add(old: Any, now: float) -> tuple[Any, Any]:
        return old + 1, old

    def step() -> Any:
        return state.transact_cached(add, dumps=_dumps) if cached else state.transact(add)

    assert step() == 1  # primes transact_cached's cache with this inode's bytes
    subprocess.run([sys.executable, "-c", _REPLACER, str(path), "41"], check=True)
    assert step() == 41  # the new file, not the old inode
    assert FileState(path).read() == 42  # and the write landed in the file at the path
    subprocess.run([sys.executable, "-c", _REPLACER, str(path), "{not json"], check=True)
    with pytest.raises(StateCorruptedError, match=r"state\.json"):
        state.read()
    with pytest.raises(StateCorruptedError, match=r"state\.json"):
        step()
    state.close()


def test_a_deleted_file_is_recreated_at_the_path_not_written_to_the_unlinked_inode(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    state = FileState(path)
    state.transact(lambda old, now: (7, None))
    path.unlink()
    state.transact(lambda old, now: ((old or 0) + 100, None))
    assert FileState(path).read() == 100


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_path_that_is_not_a_regular_file_is_refused_and_never_hangs_a_reader(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "state.json"
    state = FileState(path)
    path.unlink()
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(StateCorruptedError, match="not a regular file"):
        state.read()  # a FIFO opened for reading blocks until a writer comes: not here
    state.close()


def test_the_owner_gives_the_advice_of_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "flag.json"
    path.write_bytes(b"{not json")
    with pytest.raises(StateCorruptedError) as caught:
        FileState(path, advice="write it again with the owner's command").read()
    assert "owner's command" in str(caught.value) and "delete" not in str(caught.value)
    with pytest.raises(StateCorruptedError, match="delete it to start afresh"):
        FileState(path).read()  # the default: a rate window, a breaker cache, a nonce floor
    with pytest.raises(ValueError, match="advice"):
        FileState(path, advice=" ")


def test_a_running_limiter_sees_a_budget_file_replaced_under_it(tmp_path: Path) -> None:
    """The limiter's hot path (``transact_cached``, caching by the file's bytes): a budget
    file replaced by rename (a restore, a script) is the one it admits against."""
    from resilient_trading import ManualClock, RateLimit, RateLimiter

    clock = ManualClock()
    path, full = tmp_path / "budget.json", tmp_path / "full.json"
    running = RateLimiter(RateLimit(5, 60.0), state_path=path, clock=clock)
    assert running.try_acquire(1)  # its cache now holds this file's bytes
    other = RateLimiter(RateLimit(5, 60.0), state_path=full, clock=clock)
    assert other.try_acquire(5)  # a window with the whole budget spent
    other.close()
    os.replace(full, path)
    assert not running.try_acquire(1)  # the old inode had 4 left: it must not admit
    running.close()


@settings(max_examples=60, deadline=None)
@given(
    junk=st.binary(max_size=300) | st.sampled_from([b"{not json", b"\x00RTS1 ffffffffffffffff"]),
    value=st.integers(-(10**9), 10**9),
)
def test_overwrite_stores_a_value_over_whatever_the_file_holds(junk: bytes, value: int) -> None:
    """The halt flag's way out of a damaged file: ``overwrite`` then ``read`` is the value,
    whatever bytes were there, and the next transactions go on from it."""
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "flag.json"
        path.write_bytes(junk)
        state = FileState(path)
        state.overwrite(value)
        assert state.read() == value
        assert FileState(path).read() == value
        state.transact(lambda old, now: (old + 1, None))
        assert FileState(path).read() == value + 1
        state.close()
