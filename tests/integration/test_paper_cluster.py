"""The live actor cluster on a real local Ray cluster, replaying stored bars through the simulated gateway and
the real ib_insync client: a multi-day session over Thanksgiving week (a holiday, an early close) in parity
with the backtest, real SPY minute bars in parity, a symbol actor and the execution actor killed mid-session,
the drawdown kill switch and the daily loss limit across symbols, and the operations commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray")

from cluster.actors.coordinator import SessionCoordinator  # noqa: E402
from trader.backtest import run as backtest  # noqa: E402
from trader.config import load_settings  # noqa: E402
from trader.data.store import BarStore  # noqa: E402
from trader.data.synth import synth_bars  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["SYN000", "SYN001", "SYN002"]
# Parity needs the broker's costs to be the backtest's: the simulated gateway fills market orders at the
# price it is given (no slippage) and charges commission_per_share with min_commission.
PARITY = ["engine.fractional_shares=false", "costs.slippage_bps=0", "session.historical=2",
          "session.speed_multiplier=0", "session.symbols_per_actor=2"]  # fmt: skip
TRADE_COLUMNS = ["ts", "symbol", "side", "qty", "price", "commission"]


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("paper-store"))
    bars = BarStore(path)
    for k, symbol in enumerate(SYMBOLS):
        bars.write_bars(symbol, "1m", synth_bars(symbol, "1m", "2019-11-20", "2019-11-29", seed=20 + k))
    return path


def _settings(*extra: str) -> Any:
    namespace = f"paper-test-{uuid.uuid4().hex[:8]}"  # every test its own actors
    files = [ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml"]
    return load_settings(files, [*PARITY, f"ray.namespace={namespace}", *extra], env={})


def _coordinator(settings: Any, run_dir: str, store: str, start: str, end: str, symbols: list[str]) -> Any:
    return (
        ray.remote(SessionCoordinator)
        .options(name="coordinator", namespace=settings.ray.namespace, num_cpus=0, max_concurrency=16)
        .remote(settings, run_dir, symbols=symbols, store=store, interval="1m", start=start, end=end)
    )


def _reference(settings: Any, store: str, symbols: list[str], first: dt.date, last: dt.date) -> pl.DataFrame:
    """The backtest over exactly the bars the cluster saw (history + replay), deciding from the replay on."""
    from trader.calendar import get_calendar

    cal = get_calendar(settings.data.exchange)
    warm = first
    for _ in range(settings.session.historical):
        warm = cal.previous_trading_date(warm)
    days = list(cal.sessions(warm, last))
    bars = BarStore(store).read_bars(
        symbols, "1m", dt.datetime.combine(warm - dt.timedelta(days=1), dt.time(), dt.UTC),
        dt.datetime.combine(last + dt.timedelta(days=2), dt.time(), dt.UTC),
    )  # fmt: skip
    local = pl.col("ts").dt.convert_time_zone(cal.tz).dt.date()
    bars = bars.filter(local.is_in(days))  # the sessions' bars, as the coordinator replays them
    n_history = bars.filter(pl.col("symbol") == symbols[0], local < first).height
    from trader.config import with_overrides

    reference = with_overrides(settings, {"engine.min_history_bars": n_history})
    return backtest(bars, None, {}, reference, interval="1m").trades.sort("ts", "symbol")


def test_a_replayed_week_runs_end_to_end_in_parity_with_the_backtest(
    cluster: None, store: str, tmp_path: Path
) -> None:
    settings = _settings()
    run_dir = str(tmp_path / "week")
    # 2019-11-26..29: Thanksgiving (28th) is closed, the 29th closes at 13:00 ET.
    summary = ray.get(
        _coordinator(settings, run_dir, store, "2019-11-26", "2019-11-29", SYMBOLS).run.remote()
    )
    assert summary["state"] == "finished"
    assert summary["sessions"] == ["2019-11-26", "2019-11-27", "2019-11-29"]
    assert summary["bars"] == 390 + 390 + 210
    assert summary["prefetched_sessions"] == 2  # each later session was read while the one before played
    assert summary["decisions"] == 3 * (390 + 390 + 210)
    assert all(s["quality"] == 1.0 for s in summary["per_symbol"].values())
    assert summary["fills"] > 10 and summary["rejected_by_rule"] == {}
    live = pl.read_parquet(Path(run_dir) / "trades.parquet").sort("ts", "symbol")
    reference = _reference(settings, store, SYMBOLS, dt.date(2019, 11, 26), dt.date(2019, 11, 29))
    # The same trades: time, symbol, side, shares, price and commission, one for one.
    assert_frame_equal(live.select(TRADE_COLUMNS), reference.select(TRADE_COLUMNS))
    # The event log has a line per decision, intent and session transition, all JSON.
    events = [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"decision", "intent", "session"} <= kinds
    assert sum(e["kind"] == "decision" for e in events) == summary["decisions"]
    assert [e["date"] for e in events if e.get("transition") == "closed"] == summary["sessions"]
    # The life cycle followed the calendar: Thanksgiving skipped, the early close at 13:00 New York time.
    moves = [(e["from"], e["to"], e["date"], e["at"][11:16]) for e in events if e["kind"] == "lifecycle"]
    assert moves == [
        ("INITIALISING", "READY", "2019-11-26", "14:29"),
        ("READY", "ACTIVE", "2019-11-26", "14:30"),
        ("ACTIVE", "CLOSING", "2019-11-26", "21:00"),
        ("CLOSING", "WAITING", "2019-11-27", "21:00"),  # waiting names the next session
        ("WAITING", "ACTIVE", "2019-11-27", "14:30"),
        ("ACTIVE", "CLOSING", "2019-11-27", "21:00"),
        ("CLOSING", "WAITING", "2019-11-29", "21:00"),
        ("WAITING", "ACTIVE", "2019-11-29", "14:30"),
        ("ACTIVE", "CLOSING", "2019-11-29", "18:00"),
        ("CLOSING", "STOPPED", "2019-11-29", "18:00"),
    ]
    for name in ("orders.sqlite", "summary.json", "trades.parquet", "checkpoints/risk.json"):
        assert (Path(run_dir) / name).exists(), name


def test_real_spy_minutes_in_parity_with_the_backtest(
    cluster: None, shared_data: Path, tmp_path: Path
) -> None:
    from trader.data.ingest import read_source

    path = shared_data / "pyalgotrade" / "testcases" / "data" / "nt-spy-minute-2011-03.csv.gz"
    raw = read_source(path, fmt="ninjatrader", interval="1m").frame
    spy = raw.with_columns(pl.col("ts").dt.replace_time_zone("UTC")).sort("ts")
    spy = spy.filter(pl.col("ts").dt.date().is_between(dt.date(2011, 3, 1), dt.date(2011, 3, 9)))
    store = str(tmp_path / "store")
    BarStore(store).write_bars("SPY", "1m", spy.drop([c for c in spy.columns if c == "symbol"]))
    settings = _settings()
    run_dir = str(tmp_path / "spy")
    summary = ray.get(
        _coordinator(settings, run_dir, store, "2011-03-03", "2011-03-09", ["SPY"]).run.remote()
    )
    assert summary["state"] == "finished" and len(summary["sessions"]) == 5
    live = pl.read_parquet(Path(run_dir) / "trades.parquet").sort("ts", "symbol")
    reference = _reference(settings, store, ["SPY"], dt.date(2011, 3, 3), dt.date(2011, 3, 9))
    assert reference.height > 0
    assert_frame_equal(live.select(TRADE_COLUMNS), reference.select(TRADE_COLUMNS))


def _wait_ts(coordinator: Any, when: dt.datetime) -> None:
    import time

    deadline = time.monotonic() + 120
    while (ray.get(coordinator.status.remote()).get("last_ts") or 0) < when.timestamp() * 1e9:
        assert time.monotonic() < deadline, "the session did not reach the time"
        time.sleep(0.05)  # polling the coordinator for the event "bar at `when` processed"


def _pid_of(actor_name: str, namespace: str) -> int:
    return int(ray.get(ray.get_actor(actor_name, namespace=namespace).status.remote())["pid"])


def _wait_bars(coordinator: Any, n: int) -> None:
    import time

    deadline = time.monotonic() + 120
    while ray.get(coordinator.status.remote())["bars"] < n:
        assert time.monotonic() < deadline, "the replay did not reach the bar"
        time.sleep(0.05)  # polling the coordinator for the event "n bars replayed"


def test_killed_actors_and_a_dropped_gateway_lose_and_duplicate_no_order(
    cluster: None, store: str, tmp_path: Path
) -> None:
    settings = _settings()
    run_dir = str(tmp_path / "kills")
    coordinator = _coordinator(settings, run_dir, store, "2019-11-25", "2019-11-26", SYMBOLS)
    running = coordinator.run.remote()
    _wait_bars(coordinator, 150)
    ns = settings.ray.namespace
    os.kill(
        _pid_of("symbols-000", ns), signal.SIGKILL
    )  # restored from its checkpoint, caught up from the store
    _wait_bars(coordinator, 300)
    ray.get(coordinator.fault.remote("drop"))  # the gateway cuts the connection: reconnect and reconcile
    _wait_bars(coordinator, 420)
    os.kill(int(ray.get(ray.get_actor("execution", namespace=ns).status.remote())["pid"]), signal.SIGKILL)
    summary = ray.get(running)
    assert summary["state"] == "finished" and summary["bars"] == 780
    live = pl.read_parquet(Path(run_dir) / "trades.parquet").sort("ts", "symbol")
    reference = _reference(settings, store, SYMBOLS, dt.date(2019, 11, 25), dt.date(2019, 11, 26))
    # Nothing duplicated, nothing lost: the same trades as an uninterrupted run.
    assert_frame_equal(live.select(TRADE_COLUMNS), reference.select(TRADE_COLUMNS))
    status = ray.get(ray.get_actor("symbols-000", namespace=ns).status.remote())
    assert status["restored"] == SYMBOLS[:2]
    # The execution side reconnected (the drop) and restarted (the kill), reconciling with the gateway each
    # time: the journal holds the initial reconciliation, one after the reconnect, one after the restart.
    from trader.broker.journal import OrderJournal

    with OrderJournal(Path(run_dir) / "orders.sqlite", readonly=True) as journal:
        reasons = [e.payload["reason"] for e in journal.events(kinds=["reconcile"]) if e.intent_id is None]
    assert reasons.count("connect") >= 2 and "reconnect" in reasons


def test_drawdown_kill_switch_flattens_every_symbol_and_alerts(
    cluster: None, store: str, tmp_path: Path
) -> None:
    import http.server
    import queue
    import threading

    received: queue.Queue[dict[str, Any]] = queue.Queue()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    settings = _settings(
        "risk.max_drawdown=0.0005", "risk.daily_loss_limit=0.0003", f"session.webhook_url={url}"
    )
    run_dir = str(tmp_path / "kill")
    try:
        summary = ray.get(
            _coordinator(settings, run_dir, store, "2019-11-25", "2019-11-26", SYMBOLS).run.remote()
        )
        alert = received.get(timeout=30)
    finally:
        server.shutdown()
    assert alert["alert"] in ("kill_switch", "daily_loss_halt") and alert["session"].startswith("paper-")
    assert summary["killed"] is True
    assert all(q == 0.0 for q in summary["positions"].values())
    events = [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]
    rules = {e["rule"] for e in events if e["kind"] == "risk_event"}
    # Both account rules fired (the first day's loss halts every symbol for the session, the drawdown kills
    # them all for good), each with its alert; the trades below show every symbol flattened each time.
    assert {"daily_loss_limit", "max_drawdown"} <= rules
    assert {e["alert"] for e in events if e["kind"] == "alert"} >= {"daily_loss_halt", "kill_switch"}
    live = pl.read_parquet(Path(run_dir) / "trades.parquet").sort("ts", "symbol")
    reference = _reference(settings, store, SYMBOLS, dt.date(2019, 11, 25), dt.date(2019, 11, 26))
    assert_frame_equal(live.select(TRADE_COLUMNS), reference.select(TRADE_COLUMNS))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


def test_status_kill_switch_and_stop_from_another_process(store: str, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "ops")
    namespace = f"paper-ops-{uuid.uuid4().hex[:6]}"
    config = ["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/demo.yaml")]
    # A bar a second: the session is still running whatever the operations commands cost on a busy machine.
    sets = [x for o in [*PARITY, f"ray.namespace={namespace}", "session.speed_multiplier=60"]
            for x in ("--set", o)]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        _cli("paper", *config, *sets, "--replay", "2019-11-25:2019-11-27", "--symbols", "SYN000,SYN001",
             "--store", store, "--interval", "1m", "--out", run_dir),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def op(*args: str) -> subprocess.CompletedProcess[str]:
        command = _cli("paper", *config, *args, "--run", run_dir)
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    try:
        import time

        deadline = time.monotonic() + 180
        while True:  # polling the operations command for the event "session running"
            status = op("status")
            if status.returncode == 0 and json.loads(status.stdout)["bars"] > 5:
                break
            assert driver.poll() is None, driver.stdout.read() if driver.stdout else "driver exited"
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.5)
        state = json.loads(status.stdout)
        assert state["state"] == "active" and state["risk"]["killed"] is False
        assert state["execution"]["healthy"] is True and state["execution"]["account"].startswith("DU")
        killed = op("kill-switch")
        assert killed.returncode == 0 and json.loads(killed.stdout)["killed"] is True, killed.stderr
        stopped = op("stop")
        assert stopped.returncode == 0, stopped.stderr
        out, _ = driver.communicate(timeout=180)
        assert driver.returncode == 0, out[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    assert summary["state"] == "stopped" and summary["killed"] is True
    assert (Path(run_dir) / "checkpoints" / "risk.json").is_file()


def test_live_mode_trades_bars_from_the_gateway_and_back_fills_a_gap(
    cluster: None, store: str, tmp_path: Path
) -> None:
    from trader.ibsim import GatewayConfig, run_gateway

    # A simulated gateway replays 2019-11-26 from the store at 120x (2 bars a second); the cluster takes its
    # bars live from the real-time stream, as it would from IB Gateway. The replay runs from the gateway's
    # start, so the cluster joins it under way (later on a loaded machine): the gap and the stop are placed
    # relative to the first bar the cluster sees.
    config = GatewayConfig(
        symbols=tuple(SYMBOLS[:2]), store=store, interval="1m", speed=120.0, start="2019-11-26T14:30:00",
        account="DU7654321", initial_cash=1_000_000.0,
    )  # fmt: skip
    with run_gateway(config) as gw:
        settings = _settings(f"ibkr.port={gw.port}", "ibkr.client_id=31")
        run_dir = str(tmp_path / "live")
        coordinator = (
            ray.remote(SessionCoordinator)
            .options(name="coordinator", namespace=settings.ray.namespace, num_cpus=0, max_concurrency=16)
            .remote(
                settings,
                run_dir,
                symbols=SYMBOLS[:2],
                store=store,
                interval="1m",
                start="2019-11-26",
                end="2019-11-26",
                live=True,
            )
        )
        running = coordinator.run.remote()
        _wait_bars(coordinator, 1)
        first = dt.datetime.fromtimestamp(ray.get(coordinator.status.remote())["last_ts"] / 1e9, dt.UTC)
        gap = first + dt.timedelta(minutes=8)  # 4 s of replay ahead: a gap in the live stream
        gw.skip_realtime_bar("SYN001", gap)
        _wait_ts(coordinator, gap + dt.timedelta(minutes=20))  # past the gap: stop 20 bars after it
        ray.get(coordinator.stop.remote())
        summary = ray.get(running)
        positions = gw.positions()
    assert summary["state"] == "stopped" and summary["bars"] >= 20
    assert summary["decisions"] >= 2 * summary["bars"] - 1  # SYN001's skipped bar is not decided on
    events = [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]
    market = [e for e in events if e["kind"] == "market_data" and e.get("symbol") == "SYN001"]
    notes = [e["note"] for e in market]
    assert "gap" in notes and "backfill" in notes and notes.index("gap") < notes.index("backfill")
    # The gap was seen at once and back-filled from the gateway's history; quality went back to 1.
    # The broker's positions are what the risk actor holds: no order lost or doubled.
    held = {s: q for s, q in summary["positions"].items() if q}
    assert held == {s: q for s, q in positions.items() if q}


def test_auto_sharding_gives_about_two_actors_per_cpu() -> None:
    from cluster.actors.coordinator import auto_symbols_per_actor

    for n, cpus in [(500, 2), (500, 16), (3, 8), (1, 1), (501, 2)]:
        per = auto_symbols_per_actor(n, cpus)
        actors = -(-n // per)
        assert per >= 1 and actors <= 2 * cpus  # never more than two actors a CPU
        assert actors >= min(n, 2 * cpus) - 1  # and no fewer than the symbols allow, give or take rounding


def test_bandit_symbol_actor_killed_resumes_with_an_identical_posterior(
    cluster: None, store: str, tmp_path: Path
) -> None:
    from trader.bandit import PosteriorSet, bandit_select

    settings = _settings("bandit.enabled=true")
    run_dir = str(tmp_path / "bandit")
    coordinator = _coordinator(settings, run_dir, store, "2019-11-26", "2019-11-26", SYMBOLS)
    running = coordinator.run.remote()
    _wait_bars(coordinator, 120)
    ns = settings.ray.namespace
    os.kill(
        _pid_of("symbols-000", ns), signal.SIGKILL
    )  # restored from its checkpoint, caught up from the store
    summary = ray.get(running)
    assert summary["state"] == "finished" and summary["bars"] == 390
    status = ray.get(ray.get_actor("symbols-000", namespace=ns).status.remote())
    assert status["restored"] == SYMBOLS[:2]
    for symbol in SYMBOLS:
        saved = json.loads((Path(run_dir) / "checkpoints" / "symbols" / f"{symbol}.json").read_text())
        # The posterior an uninterrupted bandit reaches over the same bars, from the prior.
        first = dt.datetime.fromtimestamp(saved["first_ts"] / 1e9, dt.UTC)
        last = dt.datetime.fromtimestamp(saved["last_ts"] / 1e9, dt.UTC) + dt.timedelta(microseconds=1)
        bars = BarStore(store).read_bars([symbol], "1m", first, last)
        start = int(settings.engine.min_history_bars)
        whole = bandit_select(bars, settings.composer.strategies, settings, start_index=start, interval="1m")
        restored = PosteriorSet.from_dict(saved["posteriors"])
        assert restored.equals(whole.posteriors), symbol
        assert saved["arm"] == whole.decisions["arm"][-1]
