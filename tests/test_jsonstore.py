"""LockedJsonStore: no lost update, no half-written file, typed errors for every bad case."""

from __future__ import annotations

import asyncio
import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from resilient_trading import (
    CriticalError,
    LockedJsonStore,
    LockTimeoutError,
    StateCorruptedError,
)

pytestmark = pytest.mark.timeout(120)


def _increment(path: str, n: int) -> None:
    store = LockedJsonStore(path, durable=False)
    for _ in range(n):
        with store.transaction() as doc:
            doc["n"] = doc.get("n", 0) + 1


def test_transaction_commits_and_read_sees_it(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    assert store.read() == {}
    with store.transaction() as doc:
        assert doc == {}
        doc["n"] = 1
        doc["nested"] = {"a": [1, 2.5, "x", None, True]}
    assert store.read() == {"n": 1, "nested": {"a": [1, 2.5, "x", None, True]}}
    assert LockedJsonStore(tmp_path / "s.json").read() == store.read()


def test_read_returns_a_copy(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["list"] = [1]
    snap = store.read()
    snap["list"].append(2)
    assert store.read() == {"list": [1]}


def test_exception_in_block_writes_nothing(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["n"] = 1
    before = (tmp_path / "s.json").read_bytes()
    with pytest.raises(RuntimeError), store.transaction() as doc:
        doc["n"] = 2
        raise RuntimeError("changed my mind")
    assert (tmp_path / "s.json").read_bytes() == before
    assert store.read() == {"n": 1}


def test_nested_transaction_is_a_clear_error(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction(), pytest.raises(RuntimeError, match="nested"), store.transaction():
        pass
    with store.transaction() as doc:  # the store is usable afterwards
        doc["ok"] = True


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (float("nan"), "doc.bad"),
        (float("inf"), "doc.bad"),
        ({1, 2}, "set"),
        (object(), "object"),
        ({"deep": [1, {"x": float("-inf")}]}, "doc.bad.deep[1].x"),
        ({1: "non-str key"}, "key 1"),
    ],
)
def test_values_json_cannot_hold_are_refused_and_file_unchanged(
    tmp_path: Path, value: Any, fragment: str
) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["good"] = 1
    before = (tmp_path / "s.json").read_bytes()
    with pytest.raises(ValueError, match="cannot store") as info, store.transaction() as doc:
        doc["bad"] = value
    assert fragment in str(info.value)
    assert (tmp_path / "s.json").read_bytes() == before


def test_output_is_deterministic(tmp_path: Path) -> None:
    a, b = LockedJsonStore(tmp_path / "a.json"), LockedJsonStore(tmp_path / "b.json")
    with a.transaction() as doc:
        doc.update({"z": 1, "a": {"y": 2, "b": 3}})
    with b.transaction() as doc:
        doc.update({"a": {"b": 3, "y": 2}, "z": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_files_are_private(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    for _ in range(2):
        with store.transaction() as doc:
            doc["n"] = 1
    for name in ("s.json", "s.json.lock", "s.json.bak"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"", "empty"),
        (b'{"n": 1', "not valid JSON"),
        (b"[1, 2]", "top level"),
        (
            b'{"__resilient_trading__":1,"generation":3,"schema":null,"sha256":"00","data":{"n":1}}',
            "checksum",
        ),
    ],
)
def test_corrupt_file_is_a_critical_typed_error_naming_the_backup(
    tmp_path: Path, content: bytes, what: str
) -> None:
    path = tmp_path / "s.json"
    store = LockedJsonStore(path)
    for n in (1, 2):
        with store.transaction() as doc:
            doc["n"] = n
    path.write_bytes(content)
    for action in (store.read, lambda: store.update(lambda d: d)):
        with pytest.raises(StateCorruptedError) as info:
            action()
        assert isinstance(info.value, CriticalError)
        assert what in str(info.value)
        assert info.value.backup_path == str(tmp_path / "s.json.bak")
        assert "resilient-trading state restore" in str(info.value)
    assert path.read_bytes() == content  # never silently replaced
    assert store.restore_backup() == 1
    assert store.read() == {"n": 1}


def test_plain_json_from_before_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"legacy": True}))
    store = LockedJsonStore(path)
    assert store.read() == {"legacy": True}
    with store.transaction() as doc:
        doc["n"] = 1
    assert store.read() == {"legacy": True, "n": 1}
    assert json.loads(path.read_text())["generation"] == 1


def test_schema_migration(tmp_path: Path) -> None:
    path = tmp_path / "s.json"

    def v1_from_nothing(data: dict[str, Any], version: int) -> dict[str, Any]:
        raise AssertionError("nothing older than v1 exists")

    with LockedJsonStore(path, schema_version=1, migrate=v1_from_nothing).transaction() as doc:
        doc["qty"] = 3

    def migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
        assert version == 1
        return {"size": data["qty"]}

    v2 = LockedJsonStore(path, schema_version=2, migrate=migrate)
    assert v2.read() == {"size": 3}
    with v2.transaction() as doc:
        doc["size"] += 1
    with pytest.raises(StateCorruptedError, match="newer"):
        LockedJsonStore(path, schema_version=1, migrate=v1_from_nothing).read()


def test_schema_version_without_migrate_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="schema_version=2 needs migrate"):
        LockedJsonStore(tmp_path / "s.json", schema_version=2)
    assert not (tmp_path / "s.json.lock").exists()  # refused before touching the disk


def test_symlink_at_the_state_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.symlink(target, tmp_path / "s.json")
    with pytest.raises(StateCorruptedError, match="symbolic link"):
        LockedJsonStore(tmp_path / "s.json").read()


def test_symlink_planted_at_a_temp_name_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr(os, "urandom", lambda n: b"\x00" * n)
    planted = tmp_path / f".s.json.{os.getpid()}.00000000.tmp"
    os.symlink(victim, planted)
    store = LockedJsonStore(tmp_path / "s.json")
    store._cleaned = True  # the planted link survives the start-up clean-up
    with pytest.raises(CriticalError), store.transaction() as doc:
        doc["n"] = 1
    assert victim.read_text() == "precious"
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_full_or_read_only_is_typed_and_leaves_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # Root ignores permissions here, so the failing syscalls are simulated.
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["n"] = 1
    before = (tmp_path / "s.json").read_bytes()
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(CriticalError, match="left unchanged"), store.transaction() as doc:
        doc["n"] = 2
    monkeypatch.undo()
    assert (tmp_path / "s.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"lock_timeout": -1}, ValueError),
        ({"lock_timeout": float("nan")}, ValueError),
        ({"lock_timeout": float("inf")}, ValueError),
        ({"lock_timeout": "5"}, TypeError),
        ({"durable": "yes"}, TypeError),
        ({"schema_version": "1"}, TypeError),
        ({"migrate": 5}, TypeError),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        LockedJsonStore(tmp_path / "s.json", **kwargs)
    with pytest.raises(TypeError, match="path"):
        LockedJsonStore(3.5)  # type: ignore[arg-type]


_HOLDER = """
import sys, time
from resilient_trading import LockedJsonStore
store = LockedJsonStore(sys.argv[1])
with store.transaction() as doc:
    print("holding", flush=True)
    time.sleep(60)
"""


def test_lock_timeout_names_lock_and_live_holder_then_dead_holder_is_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.json"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"holding"
        store = LockedJsonStore(path, lock_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as info, store.transaction():
            pass
        assert time.monotonic() - started < 5
        assert info.value.lock_path == str(path) + ".lock"
        assert info.value.holder is not None and f"pid {holder.pid}" in info.value.holder
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the dead holder's lock; no file was deleted to get it.
    with LockedJsonStore(path, lock_timeout=5).transaction() as doc:
        doc["after"] = True
    assert LockedJsonStore(path).read() == {"after": True}


def test_threads_never_lose_an_update(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json", durable=False)
    threads = [
        threading.Thread(target=_increment, args=(str(tmp_path / "s.json"), 100)) for _ in range(3)
    ]
    threads.append(
        threading.Thread(
            target=lambda: [
                store.update(lambda d: d.__setitem__("n", d.get("n", 0) + 1)) for _ in range(100)
            ]
        )
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.read()["n"] == 400


def test_multiprocessing_workers_never_lose_an_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_increment, args=(path, 150)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
        assert p.exitcode == 0
    assert LockedJsonStore(path).read()["n"] == 600


_SEPARATE = """
import sys
from resilient_trading import LockedJsonStore
store = LockedJsonStore(sys.argv[1], durable=sys.argv[3] == "1")
for _ in range(int(sys.argv[2])):
    with store.transaction() as doc:
        doc["n"] = doc.get("n", 0) + 1
"""


def test_unrelated_processes_and_the_cli_never_lose_an_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    procs = [
        subprocess.Popen([sys.executable, "-c", _SEPARATE, path, "200", str(i % 2)])
        for i in range(3)
    ]
    # Meanwhile an operator sets other keys through the CLI: none of the increments is lost.
    for i in range(5):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "resilient_trading._cli",
                "state",
                "set",
                path,
                f"op.k{i}",
                str(i),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    assert [p.wait(timeout=90) for p in procs] == [0, 0, 0]
    doc = LockedJsonStore(path).read()
    assert doc["n"] == 600
    assert doc["op"] == {f"k{i}": i for i in range(5)}


_KILLED_WRITER = """
import sys
from resilient_trading import LockedJsonStore
store = LockedJsonStore(sys.argv[1])
while True:
    with store.transaction() as doc:
        doc["n"] = doc.get("n", 0) + 1
        doc["pad"] = "x" * (doc["n"] % 977)
        n = doc["n"]
    print(n, flush=True)
"""


def test_sigkill_at_random_moments_never_loses_an_acknowledged_commit(tmp_path: Path) -> None:
    import random

    path = tmp_path / "s.json"
    rng = random.Random(7)
    acknowledged = 0
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # started and committed once
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read().split()
        proc.wait()
        if out:
            acknowledged = max(acknowledged, int(out[-1]))
        doc = LockedJsonStore(path).read()  # always parses, checksum included
        assert doc["n"] >= acknowledged
        assert doc["pad"] == "x" * (doc["n"] % 977)
        acknowledged = doc["n"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with LockedJsonStore(path).transaction():
        pass
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    del leftovers


def test_read_of_an_unchanged_file_uses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LockedJsonStore(tmp_path / "s.json")
    with store.transaction() as doc:
        doc["n"] = 1
    store.read()
    calls: list[int] = []
    real = json.loads

    def counting_loads(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    assert store.read() == {"n": 1}
    assert calls == []
    with LockedJsonStore(tmp_path / "s.json").transaction() as doc:
        doc["n"] = 2
    assert store.read() == {"n": 2}  # another writer's commit is seen


def test_async_transaction_does_not_block_the_loop(tmp_path: Path) -> None:
    store = LockedJsonStore(tmp_path / "s.json")

    async def main() -> int:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.create_task(heartbeat())

        async def bump() -> None:
            async with store.transaction_async() as doc:
                doc["n"] = doc.get("n", 0) + 1

        await asyncio.gather(*(bump() for _ in range(20)))
        beat.cancel()
        assert (await store.read_async())["n"] == 20
        return ticks

    assert asyncio.run(main()) > 0
