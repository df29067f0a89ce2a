"""The bot's parameters: valid ones load, each invalid one is refused with its field named."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.hyperliquid_bot.config import BotConfig, ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "examples" / "hyperliquid_bot" / "bot.py"
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"


def test_shipped_config_is_valid_and_has_min_rr_ratio() -> None:
    config = load_config(CONFIG)
    assert config.trend.min_rr_ratio > 0
    assert "min_rr_ratio" in CONFIG.read_text()


# (field path, a bad value) pairs: each must be refused naming that field.
BAD_VALUES: list[tuple[tuple[str, ...], Any]] = [
    (("trend", "min_rr_ratio"), -5),
    (("trend", "min_rr_ratio"), 0),
    (("trend", "min_rr_ratio"), math.nan),
    (("mean_reversion", "min_rr_ratio"), -1.0),
    (("risk", "risk_per_trade"), 0),
    (("risk", "risk_per_trade"), 0.5),
    (("risk", "risk_per_trade"), -0.01),
    (("risk", "leverage"), 0),
    (("risk", "leverage"), 500),
    (("risk", "max_position_usd"), -100),
    (("coin",), "DOGEFOO"),
    (("interval",), "7m"),
    (("trend", "stop_atr"), 0),
    (("trend", "target_atr"), -2),
    (("mean_reversion", "stop_atr"), math.inf),
    (("trend", "min_confidence"), 1.5),
    (("lookback",), 5),
    (("exchange", "budget_share"), 2.0),
    (("exchange", "breaker_fail_max"), 0),
]


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value"), BAD_VALUES)
def test_each_bad_value_is_refused_naming_the_field(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(_with(path, value))
    assert any(line.startswith(".".join(path)) for line in info.value.lines), info.value.lines


@given(
    picks=st.lists(st.sampled_from(BAD_VALUES), min_size=1, max_size=4, unique_by=lambda p: p[0])
)
def test_any_set_of_bad_values_is_refused_each_named(
    picks: list[tuple[tuple[str, ...], Any]],
) -> None:
    data: dict[str, Any] = {}
    for path, value in picks:
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    for path, _ in picks:
        assert any(line.startswith(".".join(path)) for line in info.value.lines)


@given(key=st.from_regex(r"[a-z_]{3,12}", fullmatch=True))
def test_unknown_keys_are_refused(key: str) -> None:
    if key in BotConfig.model_fields:
        return
    with pytest.raises(ConfigError) as info:
        validate_config({key: 1})
    assert f"{key}: unknown key" in info.value.lines


def test_leverage_above_the_coins_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="maximum"):
        validate_config({"coin": "SOL", "risk": {"leverage": 30}})


def test_fast_ema_must_be_below_slow() -> None:
    with pytest.raises(ConfigError, match="fast_ema"):
        validate_config({"trend": {"fast_ema": 30, "slow_ema": 20}})


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, str(BOT), "--config", str(CONFIG), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "coin = 'BTC'\nsurprise = 1\n[trend]\nmin_rr_ratio = -5\n[risk]\nrisk_per_trade = 0.9\n"
    )
    out = subprocess.run(
        [sys.executable, str(BOT), "--config", str(bad), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    for field in ("trend.min_rr_ratio", "risk.risk_per_trade", "surprise"):
        assert field in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("coin = \n")
    out = subprocess.run(
        [sys.executable, str(BOT), "--config", str(broken), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
