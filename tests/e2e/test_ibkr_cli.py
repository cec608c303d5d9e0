"""`trader ibkr check` and `trader ibkr order` as a user runs them: a real subprocess against the simulated
gateway (trader.ibsim) running in this test process, real Ray (an embedded local cluster the command starts),
a real SQLite journal. Outputs are checked against what the gateway itself recorded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trader.broker.journal import OrderJournal
from trader.ibsim import GatewayConfig, run_gateway

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "DU7654321"
PRICE = 400.0


def trader(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobs.cli ARGS`` in a fresh process, without the caller's TRADER_/IBKR_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADER_", "IBKR_", "RAY_ADDRESS"))}
    env["RAY_AUTH_MODE"] = "disabled"
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object the command printed (its last stdout line)."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON on stdout:\n{result.stdout}\n{result.stderr}"
    return json.loads(lines[-1])


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``error:`` line on stderr, after checking the exit status and that no traceback leaked."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def journal_state(path: Path, intent_id: str) -> Any:
    book = OrderJournal(path, readonly=True)
    try:
        return book.state(intent_id)
    finally:
        book.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def gateway() -> Iterator[Any]:
    with run_gateway(GatewayConfig(symbols=("SPY",), account=ACCOUNT)) as gw:
        gw.set_price("SPY", PRICE, volume=1e9)
        yield gw


def order_args(gw: Any, journal: Path, *extra: str) -> list[str]:
    return [
        "ibkr", "order", "--symbol", "SPY", "--side", "BUY", "--qty", "10", "--port", str(gw.port),
        "--journal", str(journal), "--set", "ray.num_cpus=1", *extra,
    ]  # fmt: skip


# -- check ------------------------------------------------------------------------------------------------


def test_check_prints_version_account_and_cash(gateway: Any) -> None:
    result = trader("ibkr", "check", "--port", str(gateway.port), "--client-id", "5")
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    config = GatewayConfig()
    assert out["server_version"] == config.server_version == 176
    assert out["accounts"] == [ACCOUNT] and out["account"] == ACCOUNT
    assert out["client_id"] == 5 and out["port"] == gateway.port
    assert out["positions"] == [] and out["open_orders"] == []
    # A fresh simulated account is all cash.
    assert out["cash"]["NetLiquidation"] == pytest.approx(config.initial_cash)
    assert out["cash"]["TotalCashValue"] == pytest.approx(gateway.cash())
    assert set(out["cash"]) == {"TotalCashValue", "NetLiquidation", "AvailableFunds", "BuyingPower"}


def test_check_refuses_a_live_account() -> None:
    with run_gateway(GatewayConfig(symbols=("SPY",), account="U1234567")) as gw:
        result = trader("ibkr", "check", "--port", str(gw.port))
    line = error_line(result, 2)
    assert "U1234567" in line and "paper" in line
    assert result.stdout.strip() == ""  # nothing about a live account is printed


def test_check_refuses_a_live_port_before_connecting() -> None:
    line = error_line(trader("ibkr", "check", "--port", "4001"), 2)
    assert "4001" in line and "live" in line and "paper_only" in line


def test_check_names_host_and_port_when_no_gateway_listens() -> None:
    port = free_port()
    line = error_line(trader("ibkr", "check", "--port", str(port)), 2)
    assert f"127.0.0.1:{port}" in line


# -- order ------------------------------------------------------------------------------------------------


def test_market_order_fills_once_and_check_shows_the_position(gateway: Any, tmp_path: Path) -> None:
    journal = tmp_path / "orders.sqlite"
    result = trader(*order_args(gateway, journal))
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    assert out["status"] == "Filled" and out["filled"] == 10
    config = GatewayConfig()
    # 10 shares at 0.005 per share is under the minimum ticket: the minimum is charged.
    assert out["commission"] == pytest.approx(max(10 * config.commission_per_share, config.min_commission))
    intent_id = out["intent_id"]
    assert gateway.orders_received() == {intent_id: 1}
    assert gateway.positions() == {"SPY": 10}
    [execution] = gateway.executions()
    assert out["avg_price"] == pytest.approx(execution.price)
    assert out["perm_id"] == gateway.orders()[0].perm_id

    state = journal_state(journal, intent_id)
    assert state.approved and state.submitted and state.filled == 10
    assert state.commission == pytest.approx(out["commission"])

    check = trader("ibkr", "check", "--port", str(gateway.port))
    assert check.returncode == 0, check.stderr
    seen = last_json(check)
    assert [(p["symbol"], p["qty"]) for p in seen["positions"]] == [("SPY", 10.0)]
    cash_after = config.initial_cash - 10 * execution.price - out["commission"]
    assert seen["cash"]["TotalCashValue"] == pytest.approx(cash_after)


def test_order_over_max_per_trade_is_rejected_without_reaching_the_gateway(
    gateway: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "orders.sqlite"
    result = trader(*order_args(gateway, journal, "--set", "risk.max_per_trade=100"))
    line = error_line(result, 1)
    out = last_json(result)
    assert out["status"] == "rejected" and out["rule"] == "max_per_trade", out
    assert "max_per_trade" in line
    # 10 shares at the gateway's price: the notional the rule refused.
    assert f"{10 * PRICE:g}" in out["reason"]
    assert gateway.orders_received() == {}
    assert "Ray" not in result.stderr  # rejected before any cluster was started
    state = journal_state(journal, out["intent_id"])
    assert state.approved is False and not state.submitted


def test_limit_order_far_from_the_market_is_reported_working(gateway: Any, tmp_path: Path) -> None:
    journal = tmp_path / "orders.sqlite"
    limit = PRICE / 2
    args = order_args(gateway, journal, "--type", "LMT", "--limit", str(limit), "--timeout", "1")
    result = trader(*args)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    assert out["status"] == "working" and out["filled"] == 0, out
    assert out["order_status"] in ("Submitted", "PendingSubmit")
    [open_order] = gateway.open_orders()
    assert open_order.order_ref == out["intent_id"] and open_order.lmt_price == pytest.approx(limit)

    check = last_json(trader("ibkr", "check", "--port", str(gateway.port)))
    [listed] = check["open_orders"]
    assert listed["intent_id"] == out["intent_id"]
    assert (listed["symbol"], listed["side"], listed["qty"], listed["type"]) == ("SPY", "BUY", 10.0, "LMT")
    assert listed["filled"] == 0 and listed["status"] == "Submitted"


def test_order_needs_the_prices_its_type_names(gateway: Any, tmp_path: Path) -> None:
    result = trader(*order_args(gateway, tmp_path / "orders.sqlite", "--type", "LMT"))
    line = error_line(result, 2)
    assert "limit_price" in line
    assert gateway.orders_received() == {}


def test_order_the_gateway_rejects_exits_1_with_its_reason(tmp_path: Path) -> None:
    # Risk approves (4,000 of notional), the gateway refuses: more shares than its order-size cap.
    with run_gateway(GatewayConfig(symbols=("SPY",), account=ACCOUNT, max_order_qty=5)) as gw:
        gw.set_price("SPY", PRICE, volume=1e9)
        result = trader(*order_args(gw, tmp_path / "orders.sqlite"))
        received = gw.orders_received()
        positions = gw.positions()
    line = error_line(result, 1)
    out = last_json(result)
    assert out["status"] == "Rejected" and out["filled"] == 0
    assert out["last_error"][0] == 201 and "201" in line
    assert received == {out["intent_id"]: 1} and positions == {}
