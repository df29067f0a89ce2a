"""The fleet view, ``status`` and the exporter under the defects of the #17 review (H30).

Each test names the property it checks, on real files, real processes, a real redis-server
and real sockets:

* an unreadable halt flag (damaged, or its Redis down) is *unknown*, counted as halted, and
  needs an operator; a vanished state directory keeps the exporter serving (200 /metrics,
  503 /healthz with the reason) and the watcher alerting;
* stored text (a halt reason, a breaker reason) written raw by another writer is redacted
  when read back, in ``status``, its JSON and the :class:`HaltEvent`;
* two items sharing a name never give two samples with the same labels;
* every ``--state-dir`` / ``--redis`` given is read; an empty source is a problem
  (``no_state``); a torn record is a problem; a JSON file that is not ours is left out;
* ``status --json`` follows its documented schema (``"schema": 1``, kinds beside texts);
* the CLI: ``--watch`` refuses inf / NaN / <= 0, ``--watch --json`` prints one object per
  line, SIGTERM delivers pending alerts, a closed pipe exits quietly, ``--listen [::1]:P``,
  a port in use says so, the server caps connections and drops idle clients, and secrets
  can come from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import CircuitBreaker, Halt, add_listener
from resilient_trading._cli import main as cli_main
from resilient_trading._cli_metrics import parse_listen
from resilient_trading._cli_status import STATUS_SCHEMA
from resilient_trading._events import HaltEvent
from resilient_trading._fleet_view import read_fleet
from resilient_trading.backends import FileState
from tests._fleet_writer import SECRET
from tests._redis_server import free_port
from tests.test_alerts import webhook
from tests.test_status_cli import write_fleet

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]
RAW_KEY = "0x" + "ab" * 32  # what a careless writer stores: must never be shown


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fleet")
    write_fleet("dir", str(d))
    return d


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESILIENT_TRADING_REDIS_URL", raising=False)
    monkeypatch.delenv("RESILIENT_TRADING_ALERT_WEBHOOK", raising=False)


def _status_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli_main(["status", *argv, "--json"])
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, doc


def _kinds(doc: dict[str, Any]) -> set[str]:
    return {r["kind"] for r in doc["needs_operator"]}


def _breaker_dir(d: Path) -> Path:
    """A directory holding one healthy breaker: a source with shared state in it."""
    d.mkdir(parents=True, exist_ok=True)
    CircuitBreaker(name="ok", state_path=d / "breaker.json")
    return d


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def _cli_proc(*argv: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "resilient_trading", *argv],
        text=True,
        env=_env(),
        cwd=ROOT,
        **kwargs,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- 1. an unreadable halt flag is unknown, counted as halted ----------------------------------


def test_a_damaged_halt_flag_is_unknown_and_counted_as_halted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("prometheus_client")
    from resilient_trading._metrics import exposition

    d = _breaker_dir(tmp_path / "fleet")
    (d / "halt.json").write_text('{"halted": "maybe"}')
    code, doc = _status_json(capsys, "--state-dir", str(d))
    assert code == 3
    assert doc["halt"] == {"state": "unknown", "flags": []}
    assert "halt_unknown" in _kinds(doc)
    assert cli_main(["status", "--state-dir", str(d)]) == 3
    assert "HALT       UNKNOWN" in capsys.readouterr().out
    text = exposition(state_dir=str(d))
    assert "resilient_trading_halted 1.0" in text
    assert "resilient_trading_halt_unknown 1.0" in text


def test_redis_down_makes_the_halt_unknown_not_none(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    code, doc = _status_json(capsys, "--redis", url)
    assert code == 3
    assert doc["halt"]["state"] == "unknown"
    assert [p["kind"] for p in doc["problems"]] == ["source_unavailable"]


# --- 2. a vanished state directory: the exporter keeps serving, the watcher alerts -------------


def test_exporter_survives_its_state_dir_vanishing(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    d = _breaker_dir(tmp_path / "fleet")
    proc = _cli_proc(
        "metrics", "--listen", "127.0.0.1:0", "--state-dir", str(d), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().split()[1].rsplit("/", 1)[0]
        assert _get(base + "/healthz")[0] == 200
        for f in d.iterdir():
            f.unlink()
        d.rmdir()  # unmounted, renamed, deleted
        status, text = _get(base + "/metrics")
        assert status == 200  # the metrics stay up, the read error counted
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["resilient_trading_state_read_errors"] >= 1
        assert values["resilient_trading_needs_operator"] == 1
        status, body = _get(base + "/healthz")
        assert status == 503
        health = json.loads(body)
        assert health["status"] == "unavailable" and "source_unavailable" in health["failing"]
        assert any("does not exist" in r for r in health["reasons"])
    finally:
        _stop(proc)


def test_watcher_on_a_missing_dir_alerts_instead_of_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with webhook() as (url, bodies):
        argv = ["status", "--state-dir", str(tmp_path / "gone"), "--watch", "0.01"]
        assert cli_main([*argv, "--iterations", "2", "--alert-webhook", url]) == 3
    capsys.readouterr()
    sent = {(b["subject"], b["state"]) for b in bodies}
    assert ("state", "unreadable") in sent and ("halt", "unknown") in sent


# --- 6. stored text is redacted when read back ------------------------------------------------


def test_a_raw_secret_in_a_stored_halt_reason_never_comes_back(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    raw = {"halted": True, "reason": f"rotating key {RAW_KEY}", "since": 1795630000, "by": "ops"}
    d = _breaker_dir(tmp_path / "fleet")
    state = FileState(d / "halt.json")  # another writer, bypassing Halt.halt's redaction
    state.transact(lambda old, now: (raw, None))
    state.close()
    client = redis.Redis.from_url(redis_url)
    client.set("resilient-trading:halt", json.dumps(raw))
    client.close()
    code, doc = _status_json(capsys, "--state-dir", str(d), "--redis", redis_url)
    assert code == 3 and len(doc["halt"]["flags"]) == 2  # both shown, not the first only
    assert RAW_KEY not in json.dumps(doc)
    assert all("<redacted>" in f["reason"] for f in doc["halt"]["flags"])
    cli_main(["status", "--state-dir", str(d), "--redis", redis_url])
    assert RAW_KEY not in capsys.readouterr().out
    seen: list[object] = []
    remove = add_listener(seen.append)
    try:
        for halt in (Halt(state_dir=d), Halt(redis_url=redis_url)):
            with halt:
                assert RAW_KEY not in (halt.halted() or pytest.fail("not halted")).reason
    finally:
        remove()
    events = [e for e in seen if isinstance(e, HaltEvent)]
    assert len(events) == 2
    assert all(e.reason and RAW_KEY not in e.reason for e in events)


def test_a_raw_secret_in_a_stored_breaker_reason_never_comes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = {
        "failures": 0,
        "latched": True,
        "opened_at": 1795630000.0,
        "reason": f"AuthenticationError: key {RAW_KEY}",
        "state": "open",
        "trial_started": None,
        "trips": 1,
    }
    (tmp_path / "breakers.json").write_text(json.dumps({"breakers": {"orders": record}}))
    code, doc = _status_json(capsys, "--state-dir", str(tmp_path))
    assert code == 3
    (breaker,) = doc["breakers"]
    assert RAW_KEY not in json.dumps(doc) and "<redacted>" in breaker["reason"]


# --- 5. no two samples with the same labels ----------------------------------------------------


def test_two_breakers_named_alike_are_two_series(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from resilient_trading import AuthenticationError
    from resilient_trading._metrics import exposition

    CircuitBreaker(name="orders", state_path=tmp_path / "bot1-breakers.json")
    bad = CircuitBreaker(name="orders", state_path=tmp_path / "bot2-breakers.json")
    with contextlib.suppress(AuthenticationError):
        bad.call(lambda: (_ for _ in ()).throw(AuthenticationError("x")))
    other = _breaker_dir(tmp_path / "other")  # a second directory: its budget.json alike
    text = exposition(state_dir=[str(tmp_path), str(other)])
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in seen, key
            seen.add(key)
    latched = {
        dict(labels)["breaker"]: 1
        for name, labels in seen
        if name == "resilient_trading_breaker_latched"
    }
    assert set(latched) == {"orders@bot1-breakers.json", "orders@bot2-breakers.json", "ok"}


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from(["orders", "info", "budget.json"]),
            st.sampled_from(["/a/x.json", "/a/y.json", "/b/x.json", "redis://h/0#k"]),
        ),
        max_size=8,
    )
)
def test_label_values_are_unique_and_keep_unshared_names(items: list[tuple[str, str]]) -> None:
    pytest.importorskip("prometheus_client")
    from resilient_trading._metrics import unique_labels

    labels = unique_labels(items)
    assert len(labels) == len(items) == len(set(labels))
    names = [n for n, _ in items]
    for (name, _), label in zip(items, labels, strict=True):
        assert label == name if names.count(name) == 1 else label.startswith(name + "@")


# --- 8, 9. every source is read; an empty one is a problem ------------------------------------


def test_every_state_dir_given_is_read(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _breaker_dir(tmp_path / "other")
    code, doc = _status_json(capsys, "--state-dir", str(fleet_dir), "--state-dir", str(other))
    assert code == 3  # the latched breaker of the first directory is not hidden
    assert doc["sources"] == [str(fleet_dir), str(other)]
    assert {b["name"] for b in doc["breakers"]} == {"orders", "info", "ok"}


def test_every_redis_given_is_read_beside_a_dir(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fleet("redis", redis_url)
    d = _breaker_dir(tmp_path / "fleet")
    code, doc = _status_json(capsys, "--state-dir", str(d), "--redis", redis_url)
    assert code == 3 and len(doc["sources"]) == 2
    assert {b["name"] for b in doc["breakers"]} == {"orders", "info", "ok"}


def test_an_empty_dir_or_redis_is_no_state_and_needs_an_operator(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = _status_json(capsys, "--state-dir", str(tmp_path))
    assert code == 3 and _kinds(doc) == {"no_state"}
    code, doc = _status_json(capsys, "--redis", redis_url)  # emptied before each test
    assert code == 3 and _kinds(doc) == {"no_state"}
    assert "no shared state found" in doc["needs_operator"][0]["message"]


# --- 10, 11. torn records are problems; JSON that is not ours is left out ----------------------


def test_a_torn_or_garbage_record_file_is_a_named_problem(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _breaker_dir(tmp_path / "fleet")
    (d / "ip-budget.json").write_bytes((fleet_dir / "budget.json").read_bytes()[:40])
    (d / "other.json").write_bytes(b"\x00RTS1 junk\x00")
    code, doc = _status_json(capsys, "--state-dir", str(d))
    assert code == 3
    where = sorted(Path(p["where"]).name for p in doc["problems"])
    assert where == ["ip-budget.json", "other.json"]
    assert {p["kind"] for p in doc["problems"]} == {"unreadable"}


def test_json_files_that_are_not_ours_are_neither_problems_nor_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _breaker_dir(tmp_path / "fleet")
    (d / "watchlist.json").write_text('[{"coin": "BTC"}]')
    (d / "config.json").write_text('{"coins": ["BTC"], "version": 3}')
    (d / "notes.json").write_text("not json {")
    (d / "big.json").write_bytes(b" " * (9 * 1024 * 1024))
    code, doc = _status_json(capsys, "--state-dir", str(d))
    assert code == 0, doc["needs_operator"]
    assert [Path(s["path"]).name for s in doc["stores"]] == ["breaker.json"]


# --- 13. no always-0 fallback gauge, no always-"shared" mode ----------------------------------


def test_the_fleet_view_claims_no_fallback_mode_it_cannot_see(fleet_dir: Path) -> None:
    pytest.importorskip("prometheus_client")
    from resilient_trading._metrics import exposition

    assert "budget_fallback" not in exposition(state_dir=str(fleet_dir))
    (budget,) = read_fleet(str(fleet_dir)).to_json()["budgets"]
    assert "mode" not in budget


# --- 15. the documented schema ----------------------------------------------------------------


def _validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """The JSON Schema subset STATUS_SCHEMA uses; objects must hold exactly their properties."""
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if "const" in schema:
        assert value == schema["const"], path
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r}"
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, types[t]) for t in allowed) and not (
            isinstance(value, bool) and "boolean" not in allowed
        )
        assert ok, f"{path}: {value!r} is not {allowed}"
    if isinstance(value, dict) and "properties" in schema:
        assert set(value) == set(schema["properties"]), f"{path}: {sorted(value)}"
        assert set(schema["required"]) <= set(value)
        for key, sub in schema["properties"].items():
            _validate(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{i}]")


def test_status_json_follows_the_documented_schema(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(fleet_dir, d)
    Halt(state_dir=d).halt("exchange incident")
    (d / "damaged.json").write_text('{"__resilient_trading__": 1, "generation": 1}')
    _write_heartbeat(d, beat_at=time.time() - 600, deadline=60)
    code, doc = _status_json(capsys, "--state-dir", str(d), "--state-dir", str(tmp_path / "x"))
    assert code == 3
    _validate(doc, STATUS_SCHEMA)
    assert _kinds(doc) == {
        "halted",
        "breaker_latched",
        "runway_low",
        "bot_stale",
        "unreadable",
        "source_unavailable",
    }
    assert all(p["kind"] and p["message"] for p in doc["problems"])
    page = (ROOT / "docs" / "howto" / "operations-fleet.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", page, re.S)
    assert any(json.loads(b) == STATUS_SCHEMA for b in blocks if '"$schema"' in b)


def test_the_schema_validator_catches_a_wrong_document() -> None:
    doc = read_fleet(str(ROOT / "docs")).to_json()
    _validate(doc, STATUS_SCHEMA)
    for broken in ({**doc, "schema": 2}, {**doc, "extra": 1}, {**doc, "halt": None}):
        with pytest.raises(AssertionError):
            _validate(broken, STATUS_SCHEMA)


# --- 18. bots' heartbeats -----------------------------------------------------------------------


def _write_heartbeat(d: Path, *, beat_at: float, deadline: float, stopped: bool = False) -> None:
    from resilient_trading.presets.hyperliquid._deadman import Heartbeat

    beat = Heartbeat("0x" + "ef" * 20, 4242, beat_at, deadline, "watchdog", stopped)
    (d / "heartbeat.json").write_text(json.dumps(beat.to_json()))


@pytest.mark.parametrize(
    ("age", "stopped", "stale"), [(5.0, False, False), (600.0, False, True), (600.0, True, False)]
)
def test_a_bot_whose_heartbeat_is_past_its_deadline_needs_an_operator(
    tmp_path: Path, age: float, stopped: bool, stale: bool
) -> None:
    d = _breaker_dir(tmp_path / "fleet")
    _write_heartbeat(d, beat_at=time.time() - age, deadline=60, stopped=stopped)
    view = read_fleet(str(d))
    (bot,) = view.to_json()["bots"]
    assert bot["stale"] is stale and bot["pid"] == 4242
    assert ("bot_stale" in {r.kind for r in view.reasons()}) is stale


# --- messages ---------------------------------------------------------------------------------


def test_a_latched_breaker_line_has_no_misleading_count_and_the_exact_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record: dict[str, Any] = {"failures": 0, "latched": True, "opened_at": 1795630000.0}
    record.update({"reason": None, "state": "open", "trial_started": None, "trips": 1})
    path = tmp_path / "breakers.json"
    path.write_text(json.dumps({"breakers": {"orders": record}}))
    assert cli_main(["status", "--state-dir", str(tmp_path)]) == 3
    screen = capsys.readouterr().out
    line = next(x for x in screen.splitlines() if x.strip().startswith("orders"))
    assert "failures" not in line and "None" not in screen
    assert "no reason stored" in line
    assert f"`resilient-trading breaker reset {path} --name orders`" in screen


# --- CLI nits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["inf", "nan", "-1", "0", "1e9", "soon"])
def test_watch_refuses_what_is_not_a_sane_interval(
    bad: str, fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["status", "--state-dir", str(fleet_dir), "--watch", bad, "--iterations", "1"])
    assert exc.value.code == 2
    assert "--watch" in capsys.readouterr().err


def test_watch_json_prints_one_compact_object_per_line(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["status", "--state-dir", str(fleet_dir), "--json", "--watch", "0.01"]
    assert cli_main([*argv, "--iterations", "3"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["schema"] == 1 for line in lines)


def test_sigterm_delivers_the_pending_alerts_before_exiting(fleet_dir: Path) -> None:
    # The first delivery fails (500): the alert is retried after a backoff, so it is still
    # pending when SIGTERM arrives; a watcher killed by it would lose it.
    with webhook([500]) as (url, bodies):
        argv = ["status", "--state-dir", str(fleet_dir), "--watch", "30"]
        proc = _cli_proc(*argv, "--alert-webhook", url, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("resilient-trading status")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 3
        finally:
            _stop(proc)
        sent = {(b["subject"], b["state"]) for b in bodies}
    assert ("breaker:orders", "latched") in sent and len(sent) == 2


def test_a_closed_pipe_ends_the_watch_quietly(fleet_dir: Path) -> None:
    argv = ["status", "--state-dir", str(fleet_dir), "--watch", "0.05"]
    proc = _cli_proc(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # `status --watch | head -1`
        assert proc.wait(timeout=20) == 0
        assert proc.stderr.read() == ""
    finally:
        _stop(proc)


def test_listen_accepts_ipv6_and_refuses_ambiguity() -> None:
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("::1:9464", "[::1:9464", "host:99999", "9464"):
        with pytest.raises(Exception, match="--listen"):
            parse_listen(bad)


def test_the_exporter_serves_on_ipv6_loopback(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from resilient_trading._metrics import serve

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = serve("::1", 0, state_dir=str(_breaker_dir(tmp_path)))
    try:
        assert _get(f"http://[::1]:{server.server_port}/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_in_use_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("prometheus_client")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["metrics", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path)]
        assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--listen" in err


@contextlib.contextmanager
def _idle(port: int, n: int) -> Iterator[list[socket.socket]]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_the_exporter_caps_connections_and_drops_idle_clients(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from resilient_trading._metrics import serve

    d = _breaker_dir(tmp_path)
    server = serve("127.0.0.1", 0, state_dir=str(d), max_connections=2, client_timeout=0.5)
    port = server.server_port
    try:
        with _idle(port, 2) as socks:  # two clients that send nothing hold both slots
            started = time.monotonic()
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
            for s in socks:  # dropped by the server after its client timeout
                assert s.recv(1) == b""
            assert time.monotonic() - started < 4.5
        deadline = time.monotonic() + 5
        while _get_or_none(f"http://127.0.0.1:{port}/healthz") != 200:
            assert time.monotonic() < deadline, "the slots were never given back"
    finally:
        server.shutdown()
        server.server_close()


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)[0]
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def test_secrets_can_come_from_the_environment(
    redis_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_fleet("redis", redis_url)
    monkeypatch.setenv("RESILIENT_TRADING_REDIS_URL", redis_url)
    code, doc = _status_json(capsys)
    assert code == 3 and doc["sources"] == [redis_url]
    with webhook() as (url, bodies):
        monkeypatch.setenv("RESILIENT_TRADING_ALERT_WEBHOOK", url)
        argv = ["status", "--state-dir", str(fleet_dir), "--watch", "0.01", "--iterations", "1"]
        assert cli_main(argv) == 3
    capsys.readouterr()
    assert ("breaker:orders", "latched") in {(b["subject"], b["state"]) for b in bodies}
    assert cli_main(["halt", "--reason", "from the env"]) == 0  # the halt CLI too
    assert "resilient-trading:halt" in capsys.readouterr().out
    assert SECRET not in json.dumps(bodies)


def test_an_unavailable_source_is_logged_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    d = tmp_path / "state"
    with caplog.at_level(logging.INFO, logger="resilient_trading.fleet"):
        for _ in range(3):  # three scrapes of a missing directory: one warning
            read_fleet(str(d))
        _breaker_dir(d)
        read_fleet(str(d))
        read_fleet(str(d))
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == ["WARNING", "INFO"], records
    assert f"cannot read {d}" in records[0][1] and "can be read again" in records[1][1]
