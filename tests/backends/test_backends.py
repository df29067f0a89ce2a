"""Every SharedState home keeps the same promise: transitions are atomic and exclusive."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_trading import LockTimeoutError, StateCorruptedError
from resilient_trading._clock import ManualClock
from resilient_trading.backends import (
    FileState,
    MemoryState,
    RedisState,
    SharedState,
    open_state,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", "file", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedState]:
    made: SharedState
    if request.param == "memory":
        made = MemoryState()
    elif request.param == "file":
        made = FileState(tmp_path / "state.json")
    else:
        made = RedisState(request.getfixturevalue("redis_url"), "rt:test")
    yield made
    made.close()


def _incr(old: Any, now: float) -> tuple[Any, int]:
    new = (old or 0) + 1
    return new, new


def test_is_a_shared_state(state: SharedState) -> None:
    assert isinstance(state, SharedState)
    assert state.read() is None
    assert isinstance(state.location, str)


def test_transition_sees_previous_value(state: SharedState) -> None:
    assert state.transact(_incr) == 1
    assert state.transact(_incr) == 2
    assert state.read() == 2


def test_failed_transition_stores_nothing(state: SharedState) -> None:
    state.transact(lambda old, now: ({"a": 1}, None))

    def boom(old: Any, now: float) -> tuple[Any, None]:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        state.transact(boom)
    assert state.read() == {"a": 1}


def test_unchanged_identity_skips_write(state: SharedState) -> None:
    state.transact(lambda old, now: ({"a": 1}, None))
    assert state.transact(lambda old, now: (old, "same")) == "same"
    assert state.read() == {"a": 1}


def test_serialising_homes_refuse_nan_keeping_old_value(tmp_path: Path, redis_url: str) -> None:
    # MemoryState keeps Python objects and serialises nothing, so only file and Redis refuse.
    for made in (FileState(tmp_path / "n.json"), RedisState(redis_url, "rt:nan")):
        made.transact(lambda old, now: (1, None))
        with pytest.raises(ValueError, match="JSON"):
            made.transact(lambda old, now: (float("nan"), None))
        assert made.read() == 1


def test_threads_never_lose_an_update(state: SharedState) -> None:
    def work() -> None:
        for _ in range(100):
            state.transact(_incr)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.read() == 400


def test_now_is_passed_inside_the_transition(tmp_path: Path) -> None:
    clock = ManualClock(start=123.0)
    for made in (MemoryState(clock=clock), FileState(tmp_path / "c.json", clock=clock)):
        assert made.transact(lambda old, now: (old, now)) == 123.0
        assert made.time() == 123.0


@given(
    values=st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_file_round_trips_any_json_sequence_of_writes(values: list[Any]) -> None:
    # Shrinking writes are padded in place: what is read back is always the last value.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        made = FileState(os.path.join(tmp, "s.json"))
        for value in values:

            def put(old: Any, now: float, v: Any = value) -> tuple[Any, None]:
                return v, None

            made.transact(put)
            assert made.read() == value
        made.close()
        assert FileState(os.path.join(tmp, "s.json")).read() == values[-1]


_WORKER = """
import sys
from resilient_trading.backends import open_state
path, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = open_state(state_path=path or None, redis_url=url or None, key="rt:procs")
for _ in range(n):
    state.transact(lambda old, now: ((old or 0) + 1, None))
"""


@pytest.mark.parametrize("home", ["file", "redis"])
def test_processes_never_lose_an_update(
    home: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = str(tmp_path / "procs.json") if home == "file" else ""
    url = request.getfixturevalue("redis_url") if home == "redis" else ""
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, path, url, "200"]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    state = open_state(state_path=path or None, redis_url=url or None, key="rt:procs")
    assert state.read() == 800


def test_file_state_is_private_and_refuses_symlinks(tmp_path: Path) -> None:
    FileState(tmp_path / "s.json").transact(lambda old, now: (1, None))
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "target").write_text("")
    os.symlink(tmp_path / "target", tmp_path / "link.json")
    with pytest.raises(OSError, match=r"link\.json"):
        FileState(tmp_path / "link.json")


def test_corrupt_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"half": ')
    with pytest.raises(StateCorruptedError) as info:
        FileState(path).transact(_incr)
    assert info.value.path == str(path)
    assert path.read_text() == '{"half": '


def test_lock_timeout_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(LockTimeoutError) as info:
            FileState(path, lock_timeout=0.05).transact(_incr)
        assert info.value.lock_path == str(path)
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no file was deleted to get it back.
    assert FileState(path, lock_timeout=5).transact(_incr) == 1


def test_fork_reopens_so_parent_and_child_exclude_each_other(tmp_path: Path) -> None:
    state = FileState(tmp_path / "s.json")
    state.transact(_incr)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            for _ in range(50):
                state.transact(_incr)
            os._exit(0)
        except BaseException:
            os._exit(2)
    for _ in range(50):
        state.transact(_incr)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert state.read() == 101
    fd = os.open(tmp_path / "s.json", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it now
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"lock_timeout": -1}, ValueError),
        ({"lock_timeout": float("nan")}, ValueError),
        ({"lock_timeout": float("inf")}, ValueError),
        ({"lock_timeout": "1"}, TypeError),
    ],
)
def test_file_state_checks_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="lock_timeout"):
        FileState(tmp_path / "s.json", **kwargs)
    with pytest.raises(TypeError, match="path"):
        FileState(42)  # type: ignore[arg-type]


def test_redis_state_checks_arguments(redis_url: str) -> None:
    with pytest.raises(ValueError, match="redis"):
        RedisState("http://localhost", "k")
    with pytest.raises(ValueError, match="key"):
        RedisState(redis_url, "")
    with pytest.raises(ValueError, match="ttl"):
        RedisState(redis_url, "k", ttl=0)


def test_redis_credentials_never_in_location() -> None:
    state = RedisState("redis://user:hunter2@127.0.0.1:1/0", "k", socket_timeout=0.2)
    assert "hunter2" not in state.location
    assert "hunter2" not in repr(state)


def test_redis_down_is_a_network_error() -> None:
    from resilient_trading import NetworkError
    from tests._http import closed_port

    state = RedisState(f"redis://127.0.0.1:{closed_port()}/0", "k", socket_timeout=0.5)
    with pytest.raises(NetworkError, match="Redis"):
        state.transact(_incr)


def test_redis_ttl_expires_key(redis_url: str) -> None:
    import redis

    RedisState(redis_url, "rt:ttl", ttl=30).transact(_incr)
    assert 0 < redis.Redis.from_url(redis_url).pttl("rt:ttl") <= 30_000


def test_open_state_picks_the_home(tmp_path: Path, redis_url: str) -> None:
    assert isinstance(open_state(state_path=None, redis_url=None, key="k"), MemoryState)
    assert isinstance(open_state(state_path=tmp_path / "x", redis_url=None, key="k"), FileState)
    assert isinstance(open_state(state_path=None, redis_url=redis_url, key="k"), RedisState)
    with pytest.raises(ValueError, match="not both"):
        open_state(state_path=tmp_path / "x", redis_url=redis_url, key="k")
