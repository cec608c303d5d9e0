"""Walk-forward runs on a real local Ray cluster: outputs, S3, determinism, a killed worker, a killed driver.

Every run starts its own embedded cluster (``ray.init(address="local")`` through cluster.runtime), exactly as
``trader backtest`` does, and shuts it down at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cluster.fanout import WalkForwardRequest, run_walkforward
from trader.config import load_settings
from trader.data.store import BarStore
from trader.data.synth import synth_bars
from trader.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("SYN000", "SYN001", "SYN002", "SYN003")
OVERRIDES = [
    "walkforward.train_len=126",
    "walkforward.test_len=63",
    "walkforward.stride=63",
    "walkforward.purge=2",
    "walkforward.grid_size=4",
    "walkforward.symbols_per_task=2",
    "ray.num_cpus=2",
]
# 2019-01-02 .. 2021-12-31 holds 757 XNYS sessions: floor((757 - 126 - 2 - 63) / 63) + 1 = 9 folds.
N_FOLDS = 9
N_TASKS = N_FOLDS * 2


def _settings(*extra: str):
    files = [ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml"]
    return load_settings(files, [*OVERRIDES, *extra], env={})


def _fill(store: BarStore) -> None:
    for symbol in SYMBOLS:
        store.write_bars(symbol, "1d", synth_bars(symbol, "1d", "2019-01-01", "2021-12-31", seed=7))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("wf-store")
    _fill(BarStore(str(path)))
    return str(path)


def _request(store: str, run_dir: str, symbols: tuple[str, ...] = SYMBOLS) -> WalkForwardRequest:
    return WalkForwardRequest(symbols, None, None, None, {}, store, "1d", run_dir)


def _outcomes(run_dir: str) -> int:
    return sum(1 for p in RunDir(run_dir).list("folds") if p.endswith("outcome.json"))


def test_walkforward_on_local_ray_writes_every_output(store_dir: str, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    summary = run_walkforward(_request(store_dir, run_dir), _settings(), progress=False)
    run = RunDir(run_dir)
    for name in (
        "fold_plan.parquet", "oos_returns.parquet", "equity.parquet", "trades.parquet", "params.parquet",
        "risk_events.parquet", "selection.parquet", "summary.json", "report.html", "manifest.json",
    ):  # fmt: skip
        assert run.exists(name), name
    assert summary["n_folds"] == N_FOLDS and summary["n_fold_batches"] == N_TASKS
    assert summary["failed_folds"] == []
    assert [f["status"] for f in summary["per_fold"]] == ["ok"] * N_FOLDS
    plan = run.read_parquet("fold_plan.parquet")
    params = run.read_parquet("params.parquet")
    assert params.height == N_FOLDS * len(SYMBOLS)
    assert (params["n_candidates"] == 4).all()
    returns = run.read_parquet("oos_returns.parquet")
    # Every OOS return lies inside its fold's test window: the test window is the only thing traded.
    tests = plan.filter(pl.col("role") == "test").select("fold", "start", "end")
    joined = returns.with_columns(day=pl.col("ts").dt.date()).join(tests, on="fold")
    assert joined.height == returns.height
    assert joined.filter((pl.col("day") < pl.col("start")) | (pl.col("day") > pl.col("end"))).is_empty()
    equity = run.read_parquet("equity.parquet")
    assert equity.columns == ["ts", "equity", "benchmark"]
    assert equity.height == returns["ts"].n_unique()
    assert summary["oos"]["n_periods"] == equity.height
    assert summary["dsr"]["n_trials"] == 4 and summary["dsr"]["deflated_sharpe"] is not None
    assert set(summary["per_symbol"]) == set(SYMBOLS)


def test_same_inputs_same_outputs_and_missing_symbols_refused(store_dir: str, tmp_path: Path) -> None:
    first = str(tmp_path / "a")
    second = str(tmp_path / "b")
    run_walkforward(_request(store_dir, first), _settings("walkforward.symbols_per_task=1"), progress=False)
    run_walkforward(_request(store_dir, second), _settings("walkforward.symbols_per_task=3"), progress=False)
    # Batching differs (one vs three symbols per task, other workers): the results do not.
    for name in ("oos_returns.parquet", "params.parquet", "trades.parquet", "equity.parquet"):
        assert_frame_equal(RunDir(first).read_parquet(name), RunDir(second).read_parquet(name))
    from trader.errors import ConfigError

    with pytest.raises(ConfigError, match="NOPE"):
        run_walkforward(_request(store_dir, str(tmp_path / "c"), ("SYN000", "NOPE")), _settings())
    with pytest.raises(ConfigError, match="already holds a run"):
        run_walkforward(_request(store_dir, first), _settings(), progress=False)


def test_walkforward_reads_and_writes_s3(s3_bucket: str, tmp_path: Path) -> None:
    store_uri = f"s3://{s3_bucket}/bars"
    _fill(BarStore(store_uri))
    run_uri = f"s3://{s3_bucket}/runs/wf1"
    summary = run_walkforward(_request(store_uri, run_uri), _settings(), progress=False)
    assert summary["failed_folds"] == []
    run = RunDir(run_uri)
    assert run.read_parquet("params.parquet").height == N_FOLDS * len(SYMBOLS)
    assert run.read_json("summary.json")["run_id"] == summary["run_id"]
    assert run.exists("report.html")
    assert not any(Path(tmp_path).iterdir()), "an S3 run must not write locally"


def test_a_killed_worker_is_retried_and_every_fold_completes(
    store_dir: str, tmp_path: Path, task_pids: Callable[[str], list[int]]
) -> None:
    run_dir = str(tmp_path / "run")
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        # Wait for the run to be under way (two tasks done), then kill a worker while it runs a fold task.
        while not stop.is_set() and not killed:
            if _outcomes(run_dir) >= 2:
                for pid in task_pids("_fold_task"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            stop.wait(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        summary = run_walkforward(
            _request(store_dir, run_dir), _settings("walkforward.symbols_per_task=1"), progress=False
        )
    finally:
        stop.set()
        thread.join()
    assert killed, "no fold task was caught running; the test did not exercise a worker death"
    assert summary["failed_folds"] == []
    assert _outcomes(run_dir) == N_FOLDS * len(SYMBOLS)
    assert RunDir(run_dir).read_parquet("params.parquet").height == N_FOLDS * len(SYMBOLS)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "backtest", *args]


def test_resume_after_the_driver_is_killed(store_dir: str, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    config = ["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/demo.yaml")]
    sets = [x for o in [*OVERRIDES, "walkforward.symbols_per_task=1"] for x in ("--set", o)]
    args = [*config, *sets, "--symbols", ",".join(SYMBOLS), "--store", store_dir, "--interval", "1d"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        _cli(*args, "--out", run_dir), cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        while _outcomes(run_dir) < 3:
            assert driver.poll() is None, driver.stdout.read().decode() if driver.stdout else "driver exited"
            time.sleep(0.05)  # polling the run folder for the event "three tasks done"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    done_before = _outcomes(run_dir)
    assert done_before < N_FOLDS * len(SYMBOLS), "the driver finished before it was killed"
    assert not RunDir(run_dir).exists("summary.json")

    resumed = subprocess.run(
        _cli(*args, "--out", run_dir, "--resume"),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = RunDir(run_dir).read_json("summary.json")
    assert summary["resumed_fold_batches"] >= done_before >= 3
    assert summary["failed_folds"] == []
    # The resumed run equals one that was never interrupted.
    clean = str(tmp_path / "clean")
    run_walkforward(_request(store_dir, clean), _settings("walkforward.symbols_per_task=1"), progress=False)
    for name in ("oos_returns.parquet", "params.parquet", "trades.parquet"):
        assert_frame_equal(RunDir(run_dir).read_parquet(name), RunDir(clean).read_parquet(name))


def test_cpcv_run_writes_one_result_per_backtest_path(store_dir: str, tmp_path: Path) -> None:
    import datetime as dt
    import math

    # 2020-2021 (505 sessions) in N = 4 groups, k = 2: C(4, 2) = 6 splits and C(3, 1) = 3 backtest paths.
    n_groups, k = 4, 2
    run_dir = str(tmp_path / "cv")
    request = WalkForwardRequest(
        SYMBOLS[:2], dt.date(2020, 1, 1), dt.date(2021, 12, 31), None, {}, store_dir, "1d", run_dir
    )
    settings = _settings(
        "walkforward.scheme=cpcv",
        f"walkforward.n_groups={n_groups}",
        f"walkforward.k_test_groups={k}",
        "walkforward.embargo=2",
        "walkforward.grid_size=2",
    )
    summary = run_walkforward(request, settings, progress=False)
    assert summary["mode"] == "cpcv" and summary["n_folds"] == math.comb(n_groups, k)
    paths = summary["paths"]
    n_paths = math.comb(n_groups - 1, k - 1)
    assert paths["n_paths"] == n_paths and len(paths["per_path"]) == n_paths
    assert all(p["missing_groups"] == [] for p in paths["per_path"])
    run = RunDir(run_dir)
    assert run.exists("paths_equity.parquet") and run.exists("report.html")
    curves = run.read_parquet("paths_equity.parquet")
    assert curves.columns == ["ts", "path", "equity"]
    assert sorted(curves["path"].unique().to_list()) == list(range(n_paths))
    # Every path is a full out-of-sample history: the bars of the stitched series, once each.
    equity = run.read_parquet("equity.parquet")
    for (_,), curve in curves.partition_by("path", as_dict=True).items():
        assert curve["ts"].to_list() == equity["ts"].to_list()
    assert run.read_json("summary.json")["paths"]["median_path"] == paths["median_path"]
    assert 'id="fig-cpcv_paths"' in (Path(run_dir) / "report.html").read_text(encoding="utf-8")
