"""``resilient-trading status`` (issue #17) on state written by another, finished process.

Properties: with a latched breaker (and a runway under a day, and a halt) it exits 3 and shows
each reason; ``--json`` carries the budget, breaker, address and store values the writer left
(validated field by field); with nothing wrong it exits 0; damaged state is reported, named,
and needs an operator; secrets never appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from resilient_trading import Halt
from resilient_trading._cli import main as cli_main
from resilient_trading._fleet_view import read_fleet
from tests._fleet_writer import ADDRESS, SECRET

pytestmark = pytest.mark.timeout(60)


def write_fleet(where: str, value: str) -> None:
    """Run the writer as its own process (the state must outlive it)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    subprocess.run(
        [sys.executable, "-m", "tests._fleet_writer", where, value],
        check=True,
        env=env,
        cwd=root,
        timeout=60,
    )


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fleet")
    write_fleet("dir", str(d))
    return d


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code = cli_main(argv)
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, out


def _check_fleet(doc: dict[str, Any], *, store: bool) -> None:
    (budget,) = doc["budgets"]
    (window,) = budget["windows"]
    assert (window["budget"], window["period"]) == (1200, 60.0)
    assert window["used"] == 300 and window["remaining"] == 900  # within the writer's minute
    assert budget["paused_until"] is None
    breakers = {b["name"]: b for b in doc["breakers"]}
    assert set(breakers) == {"orders", "info"}
    orders = breakers["orders"]
    assert (orders["state"], orders["latched"], orders["trips"]) == ("open", True, 1)
    assert orders["reason"].startswith("AuthenticationError: bad key <redacted>")
    assert isinstance(orders["opened_at"], float)
    assert (breakers["info"]["state"], breakers["info"]["latched"]) == ("closed", False)
    (address,) = doc["addresses"]
    assert address["address"] == ADDRESS and address["used"] == 600
    assert address["cap"] == 10_000 and 0 < address["runway_seconds"] < 86_400
    if store:
        stores = {Path(s["path"]).name: s for s in doc["stores"]}
        assert stores["state.json"]["generation"] == 2
        assert stores["state.json"]["backup_age_seconds"] is not None
    reasons = doc["needs_operator"]
    assert {r["kind"] for r in reasons} == {"breaker_latched", "runway_low"}
    assert any("breaker orders latched" in r["message"] for r in reasons)
    assert any("runway" in r["message"] and "under a day" in r["message"] for r in reasons)
    assert doc["problems"] == []
    assert SECRET not in json.dumps(doc)


def test_json_carries_the_state_another_process_wrote_and_exits_3(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = _json(capsys, ["status", "--state-dir", str(fleet_dir), "--json"])
    assert code == 3
    assert doc["schema"] == 1
    assert doc["halt"] == {"state": "not_halted", "flags": []}
    _check_fleet(doc, store=True)


def test_redis_fleet_is_read_the_same_way(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fleet("redis", redis_url)
    code, doc = _json(capsys, ["status", "--redis", redis_url, "--json"])
    assert code == 3
    _check_fleet(doc, store=False)
    assert "@" not in doc["sources"][0] or "***" in doc["sources"][0]


def test_screen_shows_the_latch_reason_and_the_halt(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(fleet_dir, d)
    Halt(state_dir=d).halt("exchange incident")
    assert cli_main(["status", "--state-dir", str(d)]) == 3
    screen = capsys.readouterr().out
    assert "open LATCHED" in screen and "AuthenticationError: bad key <redacted>" in screen
    assert "HALTED" in screen and "exchange incident" in screen
    assert "NEEDS AN OPERATOR" in screen and SECRET not in screen


def test_all_well_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from resilient_trading import CircuitBreaker, RateLimit, RateLimiter

    RateLimiter(RateLimit(100, 1), state_path=tmp_path / "budget.json").acquire(1)
    CircuitBreaker(name="x", state_path=tmp_path / "breaker.json")
    code, doc = _json(capsys, ["status", "--state-dir", str(tmp_path), "--json"])
    assert code == 0 and doc["needs_operator"] == []
    assert cli_main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "all well" in capsys.readouterr().out


def test_files_that_are_not_state_are_left_alone(tmp_path: Path) -> None:
    from resilient_trading import CircuitBreaker

    CircuitBreaker(name="x", state_path=tmp_path / "breaker.json")
    (tmp_path / "bot.log").write_text("not json at all\n")
    (tmp_path / "history.jsonl").write_text('{"oid": 1}\n')
    (tmp_path / "state.json.bak").write_text("garbage")
    view = read_fleet(str(tmp_path))
    assert view.problems == () and view.needs_operator() == []


def test_damaged_state_is_named_and_needs_an_operator(tmp_path: Path) -> None:
    (tmp_path / "breaker.json").write_text('{"breakers": {"x": {"state": "weird"}}}')
    (tmp_path / "state.json").write_text('{"__resilient_trading__": 1, "generation": 1}')
    view = read_fleet(str(tmp_path))
    assert len(view.problems) == 2
    assert any("breaker.json#breakers.x" in p for p in view.problems)
    assert any("state.json" in p for p in view.problems)
    assert len(view.needs_operator()) == 2


def test_watch_redraws_and_returns_the_last_code(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["status", "--state-dir", str(fleet_dir), "--watch", "0.01", "--iterations", "2"]
    assert cli_main(argv) == 3
    assert capsys.readouterr().out.count("resilient-trading status") == 2


def test_usage_errors_exit_2_and_a_missing_dir_needs_an_operator(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESILIENT_TRADING_REDIS_URL", raising=False)
    assert cli_main(["status"]) == 2
    assert "--state-dir" in capsys.readouterr().err
    assert cli_main(["status", "--state-dir", str(tmp_path / "missing")]) == 3
    assert "missing does not exist" in capsys.readouterr().out


def test_watch_with_a_webhook_alerts_once_per_problem_not_for_healthy_subjects(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_alerts import webhook

    with webhook() as (url, bodies):
        argv = ["status", "--state-dir", str(fleet_dir), "--watch", "0.01", "--iterations", "3"]
        assert cli_main([*argv, "--alert-webhook", url]) == 3
    capsys.readouterr()
    sent = sorted((b["subject"], b["state"]) for b in bodies)
    # Three looks at the same fleet: each problem once; the closed breaker, the budget, the
    # halt flag (not raised) and the readable state are a baseline, not news.
    assert sent == [(f"address:{ADDRESS}", "runway_low"), ("breaker:orders", "latched")]
    assert all(SECRET not in json.dumps(b) for b in bodies)


def test_alert_webhook_needs_watch(fleet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["status", "--state-dir", str(fleet_dir), "--alert-webhook", "http://x/"]) == 2
    assert "--watch" in capsys.readouterr().err
