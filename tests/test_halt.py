"""The fleet-wide halt flag (issue #15): every process on one state dir or Redis obeys it.

Properties: two real processes polling one flag both see a halt at their first poll that
starts after ``resilient-trading halt`` returned, and a resume likewise; the flag survives
any sequence of halts and resumes as a reference model says (stateful, both homes' logic);
a damaged flag is a typed error naming the file; the stat-cached read is cheap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import Halt, HaltStatus, StateCorruptedError
from resilient_trading._cli import main as cli_main

pytestmark = pytest.mark.timeout(60)

# Each poller polls every POLL seconds and prints, on every change it sees, the new flag and
# the monotonic start of the poll before the one that saw it (CLOCK_MONOTONIC is system-wide).
_POLLER = """
import json, sys, time
from resilient_trading import Halt
where, value = sys.argv[1], sys.argv[2]
halt = Halt(state_dir=value) if where == "dir" else Halt(redis_url=value)
last, prev_start, changes = None, None, 0
while changes < 3:
    start = time.monotonic()
    now = halt.halted() is not None
    if now != last:
        print(json.dumps({"halted": now, "prev_start": prev_start}), flush=True)
        last, changes = now, changes + 1
    prev_start = start
    time.sleep(0.02)
"""


def _line(stream: IO[str], deadline: float) -> dict[str, Any]:
    # readline blocks, but each poller prints within one poll of a change, and pytest-timeout
    # bounds the test if one never does.
    line = stream.readline()
    assert line, "poller exited early"
    assert time.monotonic() < deadline
    result: dict[str, Any] = json.loads(line)
    return result


def _fleet(where: str, value: str, cli: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _POLLER, where, value],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert _line(proc.stdout, time.monotonic() + 30)["halted"] is False
        for command, expected in ((["halt", "--reason", "incident"], True), (["resume"], False)):
            assert cli_main([*command, *cli]) == 0
            written = time.monotonic()
            for proc in procs:
                assert proc.stdout is not None
                seen = _line(proc.stdout, written + 10)
                assert seen["halted"] is expected
                # Within one poll: the last poll that still saw the old flag began before
                # the command returned; every poll after it saw the new flag.
                assert seen["prev_start"] < written
        for proc in procs:
            assert proc.wait(timeout=10) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_processes_on_one_state_dir_obey_halt_and_resume_within_one_poll(
    tmp_path: Path,
) -> None:
    _fleet("dir", str(tmp_path), ["--state-dir", str(tmp_path)])


def test_two_processes_on_one_redis_obey_halt_and_resume_within_one_poll(redis_url: str) -> None:
    _fleet("redis", redis_url, ["--redis", redis_url])


def test_halt_records_reason_redacted_and_who(tmp_path: Path) -> None:
    secret = "0x" + "ab" * 32
    with Halt(state_dir=tmp_path) as halt:
        status = halt.halt(f"key {secret} leaked")
        assert secret not in status.reason
        assert halt.halted() == status
        assert "pid" in status.by
    raw = (tmp_path / "halt.json").read_bytes()
    assert secret.encode() not in raw


def test_damaged_flag_is_a_typed_error_naming_the_file(tmp_path: Path) -> None:
    halt = Halt(state_dir=tmp_path)
    halt._file().transact(lambda old, now: ({"halted": "yes"}, None))
    with pytest.raises(StateCorruptedError, match=r"halt\.json"):
        halt.halted()
    halt.halt("rewrite")  # the operator's commands rewrite a damaged flag
    assert halt.halted() is not None


@pytest.mark.parametrize(
    "kwargs", [{}, {"state_dir": "x", "redis_url": "redis://127.0.0.1"}, {"state_dir": "/nope/no"}]
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Halt(**kwargs)


def test_bad_reason_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reason"):
        Halt(state_dir=tmp_path).halt("  ")


def test_cli_needs_exactly_one_home(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["resume"]) == 1
    assert "--state-dir" in capsys.readouterr().err


def test_stat_cached_read_costs_microseconds(tmp_path: Path) -> None:
    halt = Halt(state_dir=tmp_path)
    halt.halt("x")
    os.utime(tmp_path / "halt.json", ns=(0, 0))  # settled long ago: cacheable
    halt.halted()
    start = time.perf_counter()
    for _ in range(2000):
        assert halt.halted() is not None
    per_call = (time.perf_counter() - start) / 2000
    assert per_call < 200e-6, per_call


@given(
    reason=st.text(min_size=1, max_size=50).filter(str.strip),
    since=st.floats(0, 4e9, allow_nan=False),
    by=st.text(max_size=20),
)
def test_halt_status_round_trips_through_json(reason: str, since: float, by: str) -> None:
    status = HaltStatus(reason=reason, since=since, by=by)
    assert HaltStatus.from_json(json.loads(json.dumps(status.to_json())), "x") == status


@pytest.mark.parametrize(
    "value",
    [[], {"halted": 1}, {"halted": True}, {"halted": True, "reason": "r", "since": "now"}],
)
def test_not_a_halt_flag_is_refused(value: Any) -> None:
    with pytest.raises(StateCorruptedError, match="halt flag at where"):
        HaltStatus.from_json(value, "where")


_DAMAGED = "<damaged>"  # the model's "the file at the path is not a flag"


class HaltMachine(RuleBasedStateMachine):
    """Two handles on one directory against a model: the last write wins, seen by both; a
    flag replaced from outside (a restore, a script writing garbage) is what both read, a
    damaged one is an error for both, and ``halt``/``resume`` write it again."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.handles = [Halt(state_dir=self.dir), Halt(state_dir=self.dir)]
        self.model: str | None = None

    def _replace(self, content: bytes) -> None:
        tmp = os.path.join(self.dir, "halt.json.new")
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, os.path.join(self.dir, "halt.json"))

    @rule(reason=st.sampled_from(["restored", "by script"]), halted=st.booleans())
    def replace_with_a_flag(self, reason: str, halted: bool) -> None:
        flag = {"halted": halted, "reason": reason, "since": 1.0, "by": "ops"}
        self._replace(json.dumps(flag).encode())
        self.model = reason if halted else None

    @rule(garbage=st.sampled_from([b"{not json", b"[]", b'{"halted": "yes"}', b'{"halted": 1}']))
    def replace_with_garbage(self, garbage: bytes) -> None:
        self._replace(garbage)
        self.model = _DAMAGED

    @rule(who=st.integers(0, 1), reason=st.text("abc xyz", min_size=1, max_size=8))
    def halt(self, who: int, reason: str) -> None:
        if not reason.strip():
            return
        self.handles[who].halt(reason)
        self.model = reason.strip()

    @rule(who=st.integers(0, 1))
    def resume(self, who: int) -> None:
        self.handles[who].resume()
        self.model = None

    @invariant()
    def both_see_the_model(self) -> None:
        for handle in self.handles:
            if self.model == _DAMAGED:
                with pytest.raises(StateCorruptedError):
                    handle.halted()
                continue
            status: HaltStatus | None = handle.halted()
            assert (status.reason if status else None) == self.model

    def teardown(self) -> None:
        for handle in self.handles:
            handle.close()


TestHaltMachine = HaltMachine.TestCase


@given(
    before=st.text(max_size=40),
    key=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    after=st.text(max_size=40),
)
def test_a_stored_reason_is_redacted_when_read_back_whoever_wrote_it(
    before: str, key: str, after: str
) -> None:
    """A flag stored raw (by a script, by ``redis-cli``) never brings a private key back."""
    raw = {"halted": True, "reason": f"{before} 0x{key} {after}", "since": 1.0, "by": f"k={key}"}
    status = HaltStatus.from_json(raw, "halt.json")
    assert status is not None
    assert key not in status.reason and key not in status.by


def test_peek_reads_the_flag_without_an_event(tmp_path: Path) -> None:
    from resilient_trading import add_listener

    seen: list[object] = []
    remove = add_listener(seen.append)
    try:
        with Halt(state_dir=tmp_path) as halt:
            halt.halt("incident")
            assert halt.peek() is not None and halt.peek() is not None
            assert seen == []  # a viewer (status, the exporter) is not a bot obeying it
            halt.halted()
            assert len(seen) == 1
    finally:
        remove()


# --- issue #15, D3/D4/nit 3: an unreadable or replaced flag ----------------------------------


def _make_unreadable(kind: str, state_dir: Path) -> None:
    flag = state_dir / "halt.json"
    if flag.exists():
        flag.unlink()
    if kind == "directory":
        flag.mkdir()
    elif kind == "symlink":
        target = state_dir / "elsewhere.json"
        target.write_text(json.dumps({"halted": False}))
        flag.symlink_to(target)
    elif kind == "dangling symlink":
        flag.symlink_to(state_dir / "not-mounted" / "halt.json")
    elif kind == "symlink loop":
        flag.symlink_to(flag)
    elif kind == "fifo":
        os.mkfifo(flag)
    elif kind == "permission denied":
        flag.write_text(json.dumps({"halted": False}))
        flag.chmod(0)
    else:
        raise AssertionError(kind)


_UNREADABLE = ["directory", "symlink", "dangling symlink", "symlink loop", "fifo"]
if os.geteuid() != 0:  # root reads a mode-000 file
    _UNREADABLE.append("permission denied")


@pytest.mark.parametrize("kind", _UNREADABLE)
@pytest.mark.parametrize("when", ["while running", "before start"])
def test_every_unreadable_flag_is_a_typed_error_never_not_halted(
    tmp_path: Path, kind: str, when: str
) -> None:
    """A bot treats a ResilienceError from its halt flag as halted: an unreadable flag must
    never escape as a raw OSError (the bot dies) nor read as "not halted" (it trades on)."""
    running = Halt(state_dir=tmp_path) if when == "while running" else None
    _make_unreadable(kind, tmp_path)
    halt = running or Halt(state_dir=tmp_path)  # a bot starts whatever the flag holds
    for read in (halt.halted, halt.peek):
        with pytest.raises(StateCorruptedError, match=r"halt\.json") as caught:
            read()
        message = str(caught.value)
        assert "resilient-trading halt" in message and "delete" not in message
    assert halt.location == str(tmp_path / "halt.json")
    halt.close()


def test_a_flag_gone_from_a_vanished_directory_is_a_typed_error(tmp_path: Path) -> None:
    """Any other OSError (here ENOTDIR: the state directory replaced by a file) is typed too."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    halt = Halt(state_dir=state_dir)
    (state_dir / "halt.json").unlink()
    state_dir.rmdir()
    state_dir.write_text("not a directory")
    with pytest.raises(StateCorruptedError, match="cannot be read"):
        halt.halted()


def _replace(path: Path, content: bytes) -> None:
    tmp = path.with_name("halt.json.new")
    tmp.write_bytes(content)
    os.replace(tmp, path)


@pytest.mark.parametrize("garbage", [b"{not json", b'{"halted": tru', b"[]"])
def test_a_running_handle_reads_a_flag_replaced_by_garbage_as_damaged_never_as_resumed(
    tmp_path: Path, garbage: bytes
) -> None:
    halt = Halt(state_dir=tmp_path)
    halt.halt("incident")
    assert halt.halted() is not None
    _replace(tmp_path / "halt.json", garbage)
    for read in (halt.halted, halt.peek):
        with pytest.raises(StateCorruptedError) as caught:
            read()
        assert "delete" not in str(caught.value)
    halt.halt("incident, again")  # the advice works: the flag is written again
    assert Halt(state_dir=tmp_path).halted() is not None
    assert halt.halted() is not None


def test_a_running_handle_writes_the_replaced_flag_not_the_old_file(tmp_path: Path) -> None:
    """The operator's long-lived handle (a dashboard, a script) resumes the flag the bots read."""
    operator = Halt(state_dir=tmp_path)
    operator.halt("incident")
    flag = {"halted": True, "reason": "restored from backup", "since": 1.0, "by": "ops"}
    _replace(tmp_path / "halt.json", json.dumps(flag).encode())
    assert operator.peek() == HaltStatus(reason="restored from backup", since=1.0, by="ops")
    operator.resume()
    assert Halt(state_dir=tmp_path).halted() is None
