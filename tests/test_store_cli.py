"""``resilient-trading state``: clear one-line errors, a restore that keeps what it replaces,
and every home reachable (a file or a Redis key)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import LockedJsonStore
from resilient_trading._cli import main
from resilient_trading.backends import RedisState

pytestmark = pytest.mark.timeout(60)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["state", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _two_versions(path: Path) -> None:
    with LockedJsonStore(path) as store:
        for n in (1, 2):
            with store.transaction() as doc:
                doc["n"] = n


@pytest.mark.parametrize("command", [["show"], ["get", "a"], ["set", "a", "1"]])
def test_a_directory_given_as_the_path_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, _, err = _run(capsys, command[0], str(tmp_path), *command[1:])
    assert code == 1
    assert str(tmp_path) in err and "directory" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_missing_key_and_missing_arguments_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.json"
    _two_versions(path)
    code, _, err = _run(capsys, "get", str(path), "nope.deeper")
    assert code == 1 and "no key 'nope.deeper'" in err and str(path) in err
    code, _, err = _run(capsys, "get", str(path))
    assert code == 1 and "expected KEY" in err
    code, _, err = _run(capsys, "set", str(path), "a", "not json")
    assert code == 1 and "JSON quotes" in err
    code, _, err = _run(capsys, "show")
    assert code == 1 and "PATH" in err


def test_deep_nesting_is_one_clear_line_never_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    deep_value = "[" * 50_000 + "]" * 50_000
    for argv in (["show", str(path)], ["set", str(tmp_path / "ok.json"), "a", deep_value]):
        out = subprocess.run(
            [sys.executable, "-m", "resilient_trading._cli", "state", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stderr[-500:]
        assert "Traceback" not in out.stderr
        assert "nested too deeply" in out.stderr


def test_restore_refuses_a_healthy_file_without_force_and_keeps_what_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.json"
    _two_versions(path)
    newest = path.read_bytes()
    code, _, err = _run(capsys, "restore", str(path))
    assert code == 1 and "healthy" in err and "--force" in err
    assert path.read_bytes() == newest  # nothing replaced
    code, out, _ = _run(capsys, "restore", str(path), "--force")
    assert code == 0 and "generation 1" in out
    assert LockedJsonStore(path).read() == {"n": 1}
    kept = list(tmp_path.glob("s.json.replaced-*"))
    assert [p.read_bytes() for p in kept] == [newest]  # the newest version is kept


def test_restore_of_a_damaged_file_needs_no_force_and_keeps_the_damaged_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.json"
    _two_versions(path)
    path.write_bytes(b'{"half": ')
    code, _, _ = _run(capsys, "restore", str(path))
    assert code == 0
    assert LockedJsonStore(path).read() == {"n": 1}
    assert [p.read_bytes() for p in tmp_path.glob("s.json.replaced-*")] == [b'{"half": ']


def test_redis_home_show_get_set(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = "rt:test:cli-state"
    RedisState(redis_url, key).transact(lambda old, now: ({"state": "open", "n": 1}, None))
    code, out, _ = _run(capsys, "show", "--redis", redis_url, "--key", key)
    assert code == 0 and json.loads(out) == {"state": "open", "n": 1}
    code, out, _ = _run(capsys, "get", "--redis", redis_url, "--key", key, "state")
    assert code == 0 and json.loads(out) == "open"
    code, out, _ = _run(capsys, "set", "--redis", redis_url, "--key", key, "op.paused", "true")
    assert code == 0 and key in out
    assert RedisState(redis_url, key).read() == {"state": "open", "n": 1, "op": {"paused": True}}
    code, _, err = _run(capsys, "show", "--redis", redis_url)
    assert code == 1 and "--key" in err


def test_a_file_state_file_is_reachable_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resilient_trading.backends import FileState

    path = tmp_path / "budget.state"
    FileState(path).transact(lambda old, now: ({"v": 2, "paused_until": 0.0}, None))
    code, out, _ = _run(capsys, "show", str(path))
    assert code == 0 and json.loads(out) == {"v": 2, "paused_until": 0.0}
    code, _, _ = _run(capsys, "set", str(path), "paused_until", "5.5")
    assert code == 0
    assert FileState(path).read() == {"v": 2, "paused_until": 5.5}


_dotted = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)


@given(key=_dotted, value=_json)
@settings(max_examples=25, deadline=None)
def test_set_then_get_round_trips_any_json_value(key: str, value: object) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "s.json")
        assert main(["state", "set", path, key, json.dumps(value)]) == 0
        node = LockedJsonStore(path).read()
        for part in key.split("."):
            node = node[part]
        assert node == value


def test_set_keeps_the_files_schema_version(tmp_path: Path) -> None:
    """The CLI does not know the bot's schema: ``state set`` must write the file's own schema
    version back, never ``null`` (the bot would then run its migration on current data)."""
    path = tmp_path / "state.json"

    def migrate(data: dict[str, Any], old: int) -> dict[str, Any]:
        return {**data, "migrated_from": old}

    with (
        LockedJsonStore(path, schema_version=3, migrate=migrate) as store,
        store.transaction() as doc,
    ):
        doc["paused"] = False
    assert main(["state", "set", str(path), "paused", "true"]) == 0
    assert json.loads(path.read_text())["schema"] == 3
    with LockedJsonStore(path, schema_version=3, migrate=migrate) as store:
        assert store.read() == {"paused": True}
