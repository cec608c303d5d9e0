"""The `trader` command as a user runs it: a real subprocess, real files, exit codes and messages."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from trader.data.store import BarStore

REPO = Path(__file__).resolve().parents[2]


def trader(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobs.cli ARGS`` in a fresh process, as the console script does."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADER_", "IBKR_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def shard_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


# -- settings ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["low", "balanced", "strict"])
def test_config_show_merges_profile_and_masks_secrets(profile: str) -> None:
    secret = "postgresql://trader:hunter2-very-secret@db.internal/optuna"
    result = trader(
        "config",
        "show",
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/sweep.yaml",
        "--profile",
        profile,
        "--set",
        "engine.rng_seed=42",
        env={"TRADER_SWEEP__STORAGE_URL": secret},
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "rng_seed: 42" in result.stdout
    assert "storage_url: '**********'" in result.stdout or "storage_url: '*" in result.stdout


def test_bad_settings_give_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(trader("config", "show", "--config", str(missing)), str(missing))

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("risk:\n  max_drawdown: [0.1\n")
    assert_one_line_error(trader("config", "show", "--config", str(bad_yaml)), str(bad_yaml))

    typo = tmp_path / "typo.yaml"
    typo.write_text("risk:\n  max_drawdwn: 0.2\n")
    assert_one_line_error(trader("config", "show", "--config", str(typo)), "risk.max_drawdwn", "max_drawdown")

    assert_one_line_error(
        trader("config", "show", "--set", "risk.max_drawdown=1.5"), "risk.max_drawdown", "1.5"
    )
    assert_one_line_error(trader("config", "show", "--set", "ibkr.port=7496"), "ibkr", "paper_only")


# -- synthetic data ---------------------------------------------------------------------------------------
def test_synth_is_deterministic_to_the_byte_and_listed(tmp_path: Path) -> None:
    args = ["data", "synth", "--symbols", "3", "--start", "2019-11-01", "--end", "2019-12-31", "--seed", "11"]
    for name in ("a", "b"):
        result = trader(*args, "--interval", "1d", "--interval", "1m", "--store", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    first, second = shard_digests(tmp_path / "a"), shard_digests(tmp_path / "b")
    assert len(first) == 6 and first == second

    listing = trader("data", "ls", "--store", str(tmp_path / "a"))
    assert listing.returncode == 0, listing.stderr
    # 41 sessions from 2019-11-01 to 2019-12-31; 2019-11-29 and 2019-12-24 close early (210 minutes each).
    assert "SYN002     1d" in listing.stdout and "41" in listing.stdout
    minutes = BarStore(str(tmp_path / "a")).read_bars(["SYN000"], "1m")
    assert minutes.height == 39 * 390 + 2 * 210

    other_seed = trader(*args[:-1], "12", "--interval", "1d", "--store", str(tmp_path / "c"))
    assert other_seed.returncode == 0
    assert shard_digests(tmp_path / "c") != {k: v for k, v in first.items() if "interval=1d" in k}


# -- ingest -----------------------------------------------------------------------------------------------
def test_ingest_enforce_refuses_bad_bars_and_writes_nothing(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "store"
    spy = shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    result = trader("data", "ingest", "--store", str(store), "--symbol", "SPY", "--source", str(spy))
    line = assert_one_line_error(result, "SPY", "ohlc")
    assert "2015-03-05" in line
    assert not list(store.rglob("*.parquet"))

    repaired = trader(
        "data", "ingest", "--store", str(store), "--symbol", "SPY", "--source", str(spy), "--sanity", "repair"
    )
    assert repaired.returncode == 0, repaired.stderr
    assert "ohlc" in repaired.stderr
    bars = BarStore(str(store)).read_bars(["SPY"], "1d")
    assert bars.height == 2519 - 2
    assert bars.filter(pl.col("ts").dt.date().cast(pl.String).is_in(["2015-03-05", "2015-03-30"])).is_empty()


def test_reingest_replaces_rather_than_duplicates(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "store"
    src = shared_data / "pyalgotrade" / "samples" / "data"
    first = trader(
        "data",
        "ingest",
        "--store",
        str(store),
        "--symbol",
        "SPY",
        "--source",
        str(src / "SPY-20*-yahoofinance.csv"),
    )
    assert first.returncode == 0, first.stderr
    before = BarStore(str(store)).read_bars(["SPY"], "1d")
    again = trader(
        "data",
        "ingest",
        "--store",
        str(store),
        "--symbol",
        "SPY",
        "--source",
        str(src / "SPY-2010-yahoofinance.csv"),
    )
    assert again.returncode == 0, again.stderr
    assert "replaced" in again.stdout
    after = BarStore(str(store)).read_bars(["SPY"], "1d")
    assert after.height == before.height == 1762
    assert after.equals(before)


def test_ingest_minute_bars_from_ninjatrader(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "store"
    src = shared_data / "pyalgotrade" / "testcases" / "data" / "nt-spy-minute-2011.csv.gz"
    result = trader(
        "data",
        "ingest",
        "--store",
        str(store),
        "--symbol",
        "SPY",
        "--interval",
        "1m",
        "--format",
        "ninjatrader",
        "--source",
        str(src),
        "--sanity",
        "repair",
    )
    assert result.returncode == 0, result.stderr
    bars = BarStore(str(store)).read_bars(["SPY"], "1m")
    assert bars.height > 0
    # Regular hours only: 14:30..20:59 UTC in January (EST).
    minutes = bars["ts"].dt.hour().cast(pl.Int32) * 60 + bars["ts"].dt.minute().cast(pl.Int32)
    assert minutes.min() >= 14 * 60 + 30 and minutes.max() <= 20 * 60 + 59


def test_ingest_unknown_source_is_one_line(tmp_path: Path) -> None:
    result = trader(
        "data", "ingest", "--store", str(tmp_path), "--symbol", "X", "--source", str(tmp_path / "*.csv")
    )
    assert_one_line_error(result, "*.csv")


# -- S3 ---------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_synth_to_s3_ls_and_sync_back(tmp_path: Path, s3_bucket: str, s3_env: str) -> None:
    env = {
        "AWS_ENDPOINT_URL": s3_env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    uri = f"s3://{s3_bucket}/stores/demo"
    made = trader(
        "data",
        "synth",
        "--symbols",
        "2",
        "--start",
        "2020-01-01",
        "--end",
        "2020-03-31",
        "--store",
        uri,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    listing = trader("data", "ls", "--store", uri, env=env)
    assert listing.returncode == 0 and "SYN001" in listing.stdout, listing.stderr

    local = tmp_path / "copy"
    down = trader("data", "sync", uri, str(local), env=env)
    assert down.returncode == 0, down.stderr
    again = trader("data", "sync", uri, str(local), env=env)
    assert "0 file(s) copied" in again.stdout
    assert BarStore(str(local)).read_bars(None, "1d").equals(BarStore(uri).read_bars(None, "1d"))

    missing = trader("data", "synth", "--symbols", "1", "--store", "s3://no-such-bucket-here/x", env=env)
    assert_one_line_error(missing, "no-such-bucket-here")


# -- backtest ---------------------------------------------------------------------------------------------
def test_backtest_from_the_store_writes_the_run_folder(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "store"
    spy = shared_data / "pandas_ta" / "SPY_D.csv"
    assert (
        trader("data", "ingest", "--store", str(store), "--symbol", "SPY", "--source", str(spy)).returncode
        == 0
    )
    out = tmp_path / "run"
    result = trader(
        "backtest",
        "--config",
        "configs/base.yaml",
        "--store",
        str(store),
        "--symbols",
        "SPY",
        "--start",
        "2005-01-01",
        "--end",
        "2014-12-31",
        "--strategy",
        "sma_cross",
        "--param",
        "fast=20",
        "--param",
        "slow=100",
        "--no-walkforward",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "Sharpe" in result.stdout and str(out) in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["params"]["fast"] == 20 and summary["period"]["start"].startswith("2005-01-03")
    assert summary["period"]["end"].startswith("2014-12-31")
    trades = pl.read_parquet(out / "trades.parquet")
    assert trades.height == summary["trades"] > 0

    bad = trader("backtest", "--store", str(store), "--symbols", "QQQ", "--no-walkforward", "--out", str(out))
    assert_one_line_error(bad, "QQQ")
    assert (out / "summary.json").exists()  # the earlier run is untouched by a failed one
