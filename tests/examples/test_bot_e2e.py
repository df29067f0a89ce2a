"""The example bot end to end, against the simulator under faults, with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eth_account
import pytest

from examples.hyperliquid_bot.config import load_config
from examples.hyperliquid_bot.exchange import Gateway
from examples.hyperliquid_bot.state import open_state
from examples.hyperliquid_bot.venue import OrderRequest
from resilient_trading.testing import FaultConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"
REQUIRED = {
    "iterations",
    "orders_placed",
    "faults_injected",
    "retries",
    "breaker_trips",
    "http_429",
    "duplicate_orders",
    "state_ok",
    "address_used",
    "address_runway_s",
    "rest_weight_per_min",
    "ws_reconnects",
    "ws_stale_periods",
    "ws_gap_fills",
}


@pytest.fixture
def gateways() -> Iterator[Callable[[Gateway], Gateway]]:
    """Gateways to close (their WebSocket feed) when the test ends."""
    opened: list[Gateway] = []

    def keep(gw: Gateway) -> Gateway:
        opened.append(gw)
        return gw

    yield keep
    for gw in opened:
        gw.close()


def last_json(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(180)
def test_demo_under_faults_ends_with_the_invariants(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "examples/demo.py",
            "--duration",
            "25",
            "--seed",
            "1",
            "--fault-rate",
            "0.08",
            "--dir",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = last_json(out.stdout)
    assert set(result) >= REQUIRED
    assert result["state_ok"] is True
    assert result["duplicate_orders"] == 0
    assert result["http_429"] == 0
    assert result["iterations"] > 5
    assert result["cli_runs"] >= 2
    # The WebSocket faults (a drop, a freeze, an outage with a fill made while cut off).
    assert result["ws_faults"] == ["drop", "freeze", "outage"]
    assert result["ws_reconnects"] >= 1 and result["ws_stale_periods"] >= 1
    assert result["ws_gap_fills"] >= 1  # the fill made during the outage reached the bot
    assert result["address_used"] >= 1  # updateLeverage at least, counted on address.json
    assert result["rest_weight_per_min"] < 1200
    assert "[bot] price=" in out.stdout  # status lines a person can follow


@pytest.mark.timeout(240)
def test_soak_kill_and_restart_keeps_every_invariant(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "examples/soak.py",
            "--seconds",
            "35",
            "--seed",
            "5",
            "--fault-rate",
            "0.12",
            "--dir",
            str(tmp_path / "soak"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    result = last_json(out.stdout)
    assert result["invariants_ok"] is True
    assert result["restarts_survived"] >= 2
    assert result["duplicate_orders"] == 0
    assert result["state_always_parsed"] is True


@pytest.mark.timeout(60)
def test_a_lost_response_never_places_the_order_twice(
    tmp_path: Path, gateways: Callable[[Gateway], Gateway]
) -> None:
    wallet = eth_account.Account.create()
    faults = FaultConfig()
    config = load_config(CONFIG)
    with Simulator(seed=2, speed=60, faults=faults, accounts={wallet.address: 10_000.0}) as sim:
        gw = gateways(Gateway.connect(config, wallet.key.hex(), sim.base_url, tmp_path))
        mid = gw.mid("BTC")
        faults.force("lost_response")
        stop = OrderRequest("0x" + "ab" * 16, "BTC", "sl", False, 0.01, float(round(mid * 0.5)))
        assert gw.reduce(stop).status == "open"  # found by its cloid, not sent again
        counters = sim.snapshot()
        assert counters["faults"]["lost_response"] == 1
        assert counters["orders_placed"] == 1
        assert counters["duplicate_cloids"] == 0
        assert gw.retries <= 1  # the lost answer is settled by a lookup, not a resend


@pytest.mark.timeout(90)
def test_private_key_never_appears_in_output_logs_or_files(tmp_path: Path) -> None:
    wallet = eth_account.Account.create()
    key = wallet.key.hex()
    bare = key.removeprefix("0x")
    with Simulator(seed=4, speed=60, faults=FaultConfig.uniform(0.1), auto_fund=10_000.0) as sim:
        env = {**os.environ, "HYPERLIQUID_PRIVATE_KEY": key}
        out = subprocess.run(
            [
                sys.executable,
                "examples/hyperliquid_bot/bot.py",
                "--config",
                str(CONFIG),
                "--base-url",
                sim.base_url,
                "--duration",
                "10",
                "--state-dir",
                str(tmp_path),
                "--log-file",
                str(tmp_path / "bot.log"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=80,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    assert bare not in out.stdout + out.stderr
    for path in tmp_path.iterdir():
        assert bare not in path.read_text(errors="replace"), path
    assert open_state(tmp_path / "state.json").read().counters.iterations > 0


def test_bot_refuses_to_start_without_a_key_or_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYPERLIQUID_PRIVATE_KEY"}
    out = subprocess.run(
        [sys.executable, "examples/hyperliquid_bot/bot.py", "--config", str(CONFIG)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "HYPERLIQUID_PRIVATE_KEY" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.timeout(60)
def test_malformed_answers_are_transient_and_never_latch(
    tmp_path: Path, gateways: Callable[[Gateway], Gateway]
) -> None:
    wallet = eth_account.Account.create()
    faults = FaultConfig()
    config = load_config(CONFIG)
    with Simulator(seed=2, speed=60, faults=faults, accounts={wallet.address: 10_000.0}) as sim:
        gw = gateways(Gateway.connect(config, wallet.key.hex(), sim.base_url, tmp_path))
        mid = gw.mid("BTC")
        cloid = "0x" + "cd" * 16
        faults.force("malformed")  # the order lands, its answer is garbage
        stop = OrderRequest(cloid, "BTC", "sl", False, 0.01, float(round(mid * 0.5)))
        assert gw.reduce(stop).status == "open"
        faults.force("malformed")
        gw.cancel("BTC", cloid)
        assert gw.order_status(cloid).status == "canceled"
        assert not gw.latched()
        assert sim.snapshot()["duplicate_cloids"] == 0
