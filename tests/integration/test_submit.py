"""`trader submit`: real jobs on a real `ray start --head` cluster, through the real CLI in a subprocess.

The cluster is started once per module in its own short temp dir with free ports, so it never collides
with another test's cluster, and is stopped by process id (its process group and every process that
names or runs in its temp dir). Not `ray stop`: that stops every Ray process on the machine, other
tests' clusters included. The first part needs no cluster: what a job is sent, and the one-line errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.submit import (
    WORKING_DIR_EXCLUDES,
    ClusterError,
    JobFailedError,
    JobHandle,
    JobOutcome,
    JobStoppedError,
    follow_job,
    forwarded_env,
    job_entrypoint,
    job_runtime_env,
    resolve_address,
)
from trader.config import RaySettings

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without settings, cluster addresses or AWS variables, plus ``extra``."""
    drop = ("TRADER_", "IBKR_", "AWS_", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def trader(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m jobs.cli ARGS`` in a fresh process, as the console script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- without a cluster ------------------------------------------------------------------------------------


def test_address_comes_from_settings_then_ray_address() -> None:
    env = {"RAY_ADDRESS": "http://env:8265"}
    assert resolve_address("http://settings:8265/", env) == "http://settings:8265"
    assert resolve_address(None, env) == "http://env:8265"
    with pytest.raises(ClusterError, match="no Ray cluster address"):
        resolve_address(None, {})
    with pytest.raises(ClusterError, match="embedded"):
        resolve_address("local", {})


def test_entrypoint_runs_the_job_module_with_args_intact() -> None:
    args = ["--symbols", "SPY,QQQ", "--param", "name=two words", "--out", "runs/it's"]
    entry = job_entrypoint("backtest", args)
    assert shlex.split(entry) == ["python", "-m", "jobs.backtest", *args]
    with pytest.raises(ClusterError):
        job_entrypoint("backtest; rm -rf /", [])


def test_runtime_env_forwards_settings_env_but_no_credentials_or_address() -> None:
    env = {
        "TRADER_DATA__STORE": "s3://bucket/bars",
        "TRADER_ENGINE__RNG_SEED": "7",
        "LOG_LEVEL": "DEBUG",  # an ENV_ALIASES name
        "TRADER_RAY__ADDRESS": "http://laptop:8265",
        "TRADER_SWEEP__STORAGE_URL": "postgresql://u:pw@db/optuna",  # a SecretStr setting
        "TRADER_SESSION__WEBHOOK_URL": "https://hooks.example/secret",
        "TRADER_X_TOKEN": "t",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
        "HOME": "/home/me",
    }
    assert forwarded_env(env) == {
        "LOG_LEVEL": "DEBUG",
        "TRADER_DATA__STORE": "s3://bucket/bars",
        "TRADER_ENGINE__RNG_SEED": "7",
    }
    ray = RaySettings(
        auth_mode="token",
        runtime_env={"env_vars": {"TRADER_ENGINE__RNG_SEED": "9", "EXTRA": "1"}, "excludes": ["/notes"]},
    )
    runtime_env = job_runtime_env(ray, "/src/trader", env)
    assert runtime_env["working_dir"] == "/src/trader"
    assert runtime_env["env_vars"] == {
        "LOG_LEVEL": "DEBUG",
        "TRADER_DATA__STORE": "s3://bucket/bars",
        "TRADER_ENGINE__RNG_SEED": "9",  # settings' runtime_env wins over the caller's environment
        "EXTRA": "1",
        "RAY_AUTH_MODE": "token",
    }
    assert runtime_env["excludes"] == [*WORKING_DIR_EXCLUDES, "/notes"]


def test_excludes_drop_environments_stores_and_caches_but_keep_the_code(tmp_path: Path) -> None:
    """Ray's own matcher (gitignore semantics, relative to working_dir) over a small checkout."""
    from ray._private.runtime_env.packaging import _get_excludes

    kept = ["trader/data/store.py", "jobs/backtest.py", "configs/base.yaml", "bench/engine.py"]
    dropped = [
        ".venv/lib/x.py",
        "data/bars/part-0.parquet",
        "runs/r1/summary.json",
        ".git/HEAD",
        ".numba_cache/k/f.nbi",
        "bench/.venv-vbt/lib/y.py",
        "trader/__pycache__/a.pyc",
        "trader.egg-info/PKG-INFO",
    ]
    for rel in kept + dropped:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    excluded = _get_excludes(tmp_path, list(WORKING_DIR_EXCLUDES))

    def uploaded(rel: str) -> bool:
        parts = Path(rel).parts  # a file goes if no folder on its way is excluded
        return not any(excluded(tmp_path.joinpath(*parts[: i + 1])) for i in range(len(parts)))

    assert [rel for rel in kept if not uploaded(rel)] == []
    assert [rel for rel in dropped if uploaded(rel)] == []


def test_no_address_is_one_line_exit_2() -> None:
    result = trader("submit", "backtest", "--symbols", "SPY", env=_clean_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "no Ray cluster address" in line and "RAY_ADDRESS" in line


def test_unreachable_dashboard_is_one_line_exit_2() -> None:
    address = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    result = trader(
        "submit", "--set", f"ray.address={address}", "backtest", "--symbols", "SPY", env=_clean_env()
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "cannot reach the Ray dashboard" in line and address in line


class _FakeJobs:
    """Ray's JobSubmissionClient surface that follow_job uses, scripted (a real cluster is below)."""

    def __init__(
        self, logs: list[str], final: str, *, interrupt_at: int | None = None, stoppable: bool = True
    ):
        self.logs, self.final, self.interrupt_at, self.stoppable = logs, final, interrupt_at, stoppable
        self.status = "RUNNING" if logs else "PENDING"
        self.stop_requests = 0
        self.message = ""

    async def tail_job_logs(self, submission_id: str) -> Any:
        for i, chunk in enumerate(self.logs):
            if i == self.interrupt_at:
                raise KeyboardInterrupt  # what Ctrl-C raises in the CLI's main thread
            yield chunk
        if self.interrupt_at is not None:
            raise KeyboardInterrupt
        self.status = self.final

    def get_job_status(self, submission_id: str) -> str:
        return self.status

    def stop_job(self, submission_id: str) -> bool:
        self.stop_requests += 1
        if self.stoppable:
            self.status = "STOPPED"
        return True

    def get_job_info(self, submission_id: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(message=self.message, driver_exit_code=None)


def _follow(fake: _FakeJobs) -> tuple[JobOutcome, list[str]]:
    written: list[str] = []
    handle = JobHandle(client=fake, submission_id="job-1", address="http://x:8265")  # type: ignore[arg-type]
    outcome = follow_job(handle, written.append, poll_s=0.01, stop_timeout_s=1, pending_stop_timeout_s=0.05)
    return outcome, written


def test_follow_streams_logs_and_maps_status_to_exit_code() -> None:
    outcome, written = _follow(_FakeJobs(["a\n", "b\n"], "SUCCEEDED"))
    assert written == ["a\n", "b\n"]
    assert (outcome.status, outcome.exit_code, outcome.interrupted) == ("SUCCEEDED", 0, False)
    outcome.raise_for_status()

    fake = _FakeJobs(["boom\n"], "FAILED")
    fake.message = "Job entrypoint command failed with exit code 2, last available logs:\nline\nline"
    outcome, _ = _follow(fake)
    assert outcome.exit_code == 1 and fake.stop_requests == 0
    with pytest.raises(JobFailedError) as failed:
        outcome.raise_for_status()
    assert failed.value.exit_code == 1
    assert (
        str(failed.value)
        == "job job-1 FAILED: Job entrypoint command failed with exit code 2, last available logs:"
    )


def test_ctrl_c_while_running_stops_the_job() -> None:
    fake = _FakeJobs(["a\n", "b\n", "c\n"], "SUCCEEDED", interrupt_at=1)
    outcome, written = _follow(fake)
    assert written == ["a\n"]
    assert fake.stop_requests == 1
    assert (outcome.status, outcome.exit_code, outcome.interrupted) == ("STOPPED", 130, True)
    with pytest.raises(JobStoppedError, match="job job-1 was stopped after Ctrl-C") as stopped:
        outcome.raise_for_status()
    assert stopped.value.exit_code == 130


def test_ctrl_c_while_pending_asks_ray_to_stop_and_says_so() -> None:
    # A PENDING job's supervisor may not exist yet, so Ray cannot stop it at once.
    fake = _FakeJobs([], "SUCCEEDED", interrupt_at=0, stoppable=False)
    started = time.monotonic()
    outcome, _ = _follow(fake)
    assert time.monotonic() - started < 0.9  # waited the short pending timeout, not stop_timeout_s
    assert fake.stop_requests == 1
    assert (outcome.status, outcome.interrupted) == ("PENDING", True)
    with pytest.raises(JobStoppedError, match="still PENDING after Ctrl-C") as stopped:
        outcome.raise_for_status()
    assert stopped.value.exit_code == 130


# -- a real cluster ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT
    temp_dir: Path
    pgid: int


def _psutil() -> Any:
    """Ray's bundled psutil: importing ray puts ray/thirdparty_files on sys.path (not our dependency)."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


def _own_cluster_processes(head_pgid: int, temp_dir: Path) -> list[object]:
    """Processes of the cluster we started: its process group, or naming / running in its temp dir."""
    psutil = _psutil()

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.pid == os.getpid():
            continue
        try:
            in_group = os.getpgid(proc.pid) == head_pgid
            cmdline = " ".join(proc.info["cmdline"] or ())
            cwd = proc.info["cwd"] or ""
        except (ProcessLookupError, psutil.Error):
            continue
        if in_group or str(temp_dir) in cmdline or cwd.startswith(str(temp_dir)):
            found.append(proc)
    return found


def _stop_cluster(head: RayHead) -> None:
    """`ray stop` for this cluster only: SIGTERM its processes by id, SIGKILL what is left after 5 s."""
    psutil = _psutil()

    procs = _own_cluster_processes(head.pgid, head.temp_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    _, alive = psutil.wait_procs(procs, timeout=5)  # type: ignore[arg-type]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


def _wait_for_dashboard(url: str, timeout_s: float = 90.0) -> None:
    """Poll the job API until it answers 200 (the dashboard is up and its job module is ready)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)  # polling interval of a condition, not a fixed wait
    raise AssertionError(f"Ray dashboard at {url} did not come up in {timeout_s} s: {last}")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    # Short, unique temp dir: Ray's unix socket paths must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="trs-", dir="/tmp"))
    dashboard_port = _free_port()
    env = _clean_env(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the job's `python` is this venv's
        NUMBA_CACHE_DIR=str(temp_dir / "numba"),  # job code lives in a temp copy: keep its cache there
    )
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--port=0",
        f"--dashboard-port={dashboard_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-agent-listen-port={_free_port()}",  # the default 52365 is shared by every cluster
        f"--ray-client-server-port={_free_port()}",
        "--num-cpus=1",
        "--include-dashboard=true",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    # Its own session: every process it leaves running is in the process group we stop.
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=temp_dir,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    head = RayHead(dashboard=f"http://127.0.0.1:{dashboard_port}", temp_dir=temp_dir, pgid=proc.pid)
    try:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        _wait_for_dashboard(head.dashboard)
        yield head
    finally:
        _stop_cluster(head)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trader.data.store import BarStore
    from trader.data.synth import synth_bars

    root = tmp_path_factory.mktemp("store")
    BarStore(str(root)).write_bars(
        "SYN000", "1d", synth_bars("SYN000", "1d", "2021-01-01", "2022-12-31", seed=5)
    )
    return root


def _submitted_id(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("submitted ")]
    assert len(lines) == 1, stderr
    return lines[0].split()[1]


def _job_client(head: RayHead) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard)


@pytest.mark.integration
@pytest.mark.slow
def test_backtest_job_streams_logs_writes_the_run_and_exits_0(
    ray_head: RayHead, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    env = _clean_env(
        RAY_ADDRESS=ray_head.dashboard,
        TRADER_DATA__STORE=str(store),  # reaches the job through the forwarded settings env, not --store
        AWS_ACCESS_KEY_ID="AKIACANARYCANARY0000",
        AWS_SECRET_ACCESS_KEY="canary",
    )
    args = ["--no-walkforward", "--symbols", "SYN000", "--strategy", "sma_cross"]
    args += ["--param", "fast=5", "--param", "slow=20", "--out", str(out)]
    result = trader("submit", "backtest", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    # The job's own output came back through the log stream.
    assert "SYN000 1d 2021-01-04..2022-12-30: total return" in result.stdout
    assert f"wrote {out}" in result.stdout
    job_id = _submitted_id(result.stderr)
    assert f"job {job_id} SUCCEEDED" in result.stderr

    for name in (
        "equity.parquet",
        "positions.parquet",
        "trades.parquet",
        "risk_events.parquet",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trades"] > 0

    # What the cluster was sent: the settings env and the auth mode, never the AWS variables.
    info = _job_client(ray_head).get_job_info(job_id)
    assert str(info.status) == "SUCCEEDED"
    env_vars = info.runtime_env["env_vars"]
    assert env_vars["TRADER_DATA__STORE"] == str(store)
    assert env_vars["RAY_AUTH_MODE"] == "disabled"
    assert not [name for name in env_vars if name.startswith("AWS_")]
    assert info.entrypoint == job_entrypoint("backtest", args)


@pytest.mark.integration
@pytest.mark.slow
def test_walkforward_job_runs_its_folds_on_the_cluster(
    ray_head: RayHead, store: Path, tmp_path: Path
) -> None:
    # The job's driver must join the cluster it was submitted to (RAY_ADDRESS set by Ray for the job), not
    # start an embedded one, and keep the job's uploaded working_dir for its fold tasks.
    out = tmp_path / "wf"
    env = _clean_env(RAY_ADDRESS=ray_head.dashboard)
    sets = ["walkforward.train_len=126", "walkforward.test_len=63", "walkforward.stride=63",
            "walkforward.purge=2", "walkforward.grid_size=3"]  # fmt: skip
    args = ["--symbols", "SYN000", "--strategy", "sma_cross", "--store", str(store), "--out", str(out)]
    args += [x for item in sets for x in ("--set", item)] + ["--no-progress"]
    result = trader("submit", "backtest", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # 2021-2022: 503 sessions -> floor((503 - 126 - 2 - 63) / 63) + 1 = 5 folds.
    assert "walk-forward 5 folds, 1 symbols" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_folds"] == 5 and summary["failed_folds"] == []
    assert (out / "report.html").is_file()
    # The driver joined the submitted-to cluster (1 CPU, started by this test), not an embedded one.
    assert summary["ray"]["local"] is False and summary["ray"]["num_cpus"] == 1
    assert len(list((out / "folds").glob("*/outcome.json"))) == 5


@pytest.mark.integration
@pytest.mark.slow
def test_sweep_job_runs_its_trials_on_the_cluster(ray_head: RayHead, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    env = _clean_env(RAY_ADDRESS=ray_head.dashboard)
    sets = ["walkforward.train_len=126", "walkforward.test_len=63", "walkforward.stride=63",
            "walkforward.purge=2", "walkforward.grid_size=1", "sweep.concurrency=1",
            "sweep.space={composer.lookback: {low: 10, high: 50, step: 20}}"]  # fmt: skip
    args = ["--config", "configs/base.yaml", "--config", "configs/demo.yaml"]
    args += ["--symbols", "SYN000", "--store", str(store), "--out", str(out), "--trials", "2"]
    args += [x for item in sets for x in ("--set", item)] + ["--no-progress"]
    result = trader("submit", "sweep", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 complete, 0 pruned, 0 failed" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["complete"] == 2 and summary["cpus"] == 1  # the submitted-to cluster's CPU
    for name in ("trials.parquet", "best.yaml", "sweep.html", "study.journal"):
        assert (out / name).is_file(), name


@pytest.mark.integration
@pytest.mark.slow
def test_failing_job_streams_its_error_and_exits_1(ray_head: RayHead, store: Path, tmp_path: Path) -> None:
    args = ["--no-walkforward", "--symbols", "NOPE", "--strategy", "sma_cross", "--store", str(store)]
    result = trader(
        "submit",
        "--set",
        f"ray.address={ray_head.dashboard}",
        "backtest",
        *args,
        "--out",
        str(tmp_path / "r"),
        env=_clean_env(),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no 1d bars for symbol 'NOPE'" in result.stdout  # the job's own one-line error, streamed
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    job_id = _submitted_id(result.stderr)
    assert f"job {job_id} FAILED" in line
    assert not (tmp_path / "r").exists()
    assert str(_job_client(ray_head).get_job_status(job_id)) == "FAILED"


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_a_running_job_and_exits_130(ray_head: RayHead, tmp_path: Path) -> None:
    # A job that runs for minutes (5,000 symbols of minute bars), interrupted once it is RUNNING.
    job = ["data", "synth", "--symbols", "5000", "--interval", "1m", "--start", "2024-01-02"]
    job += ["--end", "2024-01-31", "--seed", "1", "--store", str(tmp_path / "store")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "submit", *job],
        cwd=REPO,
        env=_clean_env(RAY_ADDRESS=ray_head.dashboard),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen: list[str] = []
    try:
        while not any(line.startswith("submitted ") for line in seen):
            seen.append(lines.get(timeout=120))  # queue.Empty fails the test if it never comes
        job_id = _submitted_id("".join(seen))
        client = _job_client(ray_head)
        deadline = time.monotonic() + 120
        while (status := str(client.get_job_status(job_id))) == "PENDING" and time.monotonic() < deadline:
            time.sleep(0.1)  # polling interval of a condition
        assert status == "RUNNING"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    stderr = "".join(seen)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert str(client.get_job_status(job_id)) == "STOPPED"
    (line,) = _error_lines(stderr)
    assert f"job {job_id} was stopped after Ctrl-C" in line
