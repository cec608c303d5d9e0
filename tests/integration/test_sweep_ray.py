"""Sweeps on a real local Ray cluster: a seeded sweep repeats itself, pruning stops bad trials early, a killed
driver resumes to exactly the requested number of trials, a killed worker does not fail the sweep, a Pareto
front for two objectives, best.yaml reproduces the best trial in a backtest, and bars read from S3."""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import pytest

from cluster.fanout import WalkForwardRequest, run_walkforward
from cluster.sweep import SweepRequest, run_sweep
from trader.config import load_settings
from trader.data.store import BarStore
from trader.data.synth import synth_bars
from trader.rundir import RunDir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("SYN000", "SYN001", "SYN002")
START, END = dt.date(2020, 1, 1), dt.date(2021, 12, 31)
OVERRIDES = [
    "walkforward.train_len=126",
    "walkforward.test_len=63",
    "walkforward.stride=63",
    "walkforward.purge=2",
    "walkforward.grid_size=1",
    "ray.num_cpus=2",
    "sweep.concurrency=2",
    "sweep.pruner=none",
    "sweep.space={composer.lookback: {low: 10, high: 60, step: 10}, "
    "composer.temperature: {low: 0.5, high: 2.0}}",
]


def _settings(*extra: str) -> Any:
    files = [ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml"]
    return load_settings(files, [*OVERRIDES, *extra], env={})


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sweep-store")
    store = BarStore(str(path))
    for symbol in SYMBOLS:
        store.write_bars(symbol, "1d", synth_bars(symbol, "1d", "2019-06-01", "2021-12-31", seed=11))
    return str(path)


def _request(store: str, run_dir: str, n: int, **kw: Any) -> SweepRequest:
    return SweepRequest(SYMBOLS, START, END, store, "1d", run_dir, n_trials=n, **kw)


def _trials(run_dir: str) -> pl.DataFrame:
    return RunDir(run_dir).read_parquet("trials.parquet").sort("number")


def _study(run_dir: str, name: str = "trader-sweep") -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(Path(run_dir) / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_a_seeded_sweep_gives_identical_trials_and_every_output(store_dir: str, tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        run_dir = str(tmp_path / f"run{k}")
        summary = run_sweep(_request(store_dir, run_dir, 6), _settings(), progress=False)
        runs.append((run_dir, summary))
    (first, s1), (second, s2) = runs
    t1, t2 = _trials(first), _trials(second)
    assert t1.height == 6 and (t1["state"] == "COMPLETE").all()
    keep = [c for c in t1.columns if c.startswith(("number", "state", "params_", "value"))]
    assert t1.select(keep).equals(t2.select(keep))
    assert s1["best"]["number"] == s2["best"]["number"]
    run = RunDir(first)
    for name in ("trials.parquet", "best.yaml", "summary.json", "sweep.html", "study.journal"):
        assert run.exists(name), name
    assert s1["counts"]["complete"] == 6
    assert s1["dsr"]["n_trials"] == 6 and 0.0 <= s1["pbo"]["pbo"] <= 1.0
    assert 0.0 <= s1["scheduling_overhead"] <= 1.0
    # Every completed trial's OOS returns are kept for PBO: one file per trial.
    assert len([p for p in run.list("trials") if p.endswith(".parquet")]) == 6


def test_best_yaml_reproduces_the_best_trial_in_a_backtest(store_dir: str, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "sweep")
    summary = run_sweep(_request(store_dir, run_dir, 4), _settings(), progress=False)
    best = summary["best"]
    files = [ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml", Path(run_dir) / "best.yaml"]
    settings = load_settings(files, [o for o in OVERRIDES if not o.startswith("sweep.")], env={})
    for key, value in best["params"].items():
        section, name = key.split(".")
        assert getattr(getattr(settings, section), name) == pytest.approx(value)
    wf = run_walkforward(
        WalkForwardRequest(SYMBOLS, START, END, None, {}, store_dir, "1d", str(tmp_path / "bt")),
        settings,
        progress=False,
    )
    from trader.composer import composite_score

    score = composite_score(wf["oos"], settings.composer.score_weights)
    assert score == pytest.approx(best["values"]["score"], rel=1e-9, abs=1e-12)


PRUNE = (
    "sweep.pruner=median",
    "sweep.pruner_startup_trials=3",
    "sweep.pruner_warmup_folds=0",
    "sweep.concurrency=1",
    "walkforward.folds_per_task=1",
    "walkforward.symbols_per_task=1",
    "sweep.space={costs.commission_bps: {low: 0.0, high: 300.0}}",
)


def test_pruning_stops_bad_trials_early(store_dir: str, tmp_path: Path) -> None:
    # Commission from 0 to 300 bps of notional per fill: the expensive trials lose badly from the first
    # fold on, so the median pruner (after 3 finished trials, from the first fold) stops them early.
    settings = _settings(*PRUNE)
    run_dir = str(tmp_path / "prune")
    summary = run_sweep(_request(store_dir, run_dir, 12), settings, progress=False)
    trials = _trials(run_dir)
    pruned = trials.filter(pl.col("state") == "PRUNED")
    assert summary["counts"]["pruned"] == pruned.height >= 1
    n_folds = RunDir(run_dir).read_json("sweep_manifest.json")["n_folds"]
    # A pruned trial stopped before its last fold, and it was an expensive one.
    for row in pruned.iter_rows(named=True):
        assert len(row["fold_scores"]) < n_folds
    cheap = trials.filter(pl.col("state") == "COMPLETE")["params_costs.commission_bps"].median()
    assert pruned["params_costs.commission_bps"].median() > cheap
    # With two trials at once and fold groups finishing in any order, the same seed prunes the same trials.
    again_dir = str(tmp_path / "again")
    parallel = _settings(*[o for o in PRUNE if "concurrency" not in o], "sweep.concurrency=2")
    first = run_sweep(_request(store_dir, again_dir, 8), parallel, progress=False)
    second = run_sweep(_request(store_dir, str(tmp_path / "again2"), 8), parallel, progress=False)
    keep = ["number", "state", "params_costs.commission_bps", "fold_scores", "value"]
    assert _trials(again_dir).select(keep).equals(_trials(str(tmp_path / "again2")).select(keep))
    assert first["counts"] == second["counts"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "sweep", *args]


def test_resume_after_the_driver_is_killed_runs_exactly_the_requested_trials(
    store_dir: str, tmp_path: Path
) -> None:
    run_dir = str(tmp_path / "run")
    config = ["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/demo.yaml")]
    sets = [x for o in OVERRIDES for x in ("--set", o)]
    span = ["--start", str(START), "--end", str(END)]
    where = ["--symbols", ",".join(SYMBOLS), "--store", store_dir, "--interval", "1d"]
    args = [*config, *sets, *where, *span, "--trials", "8", "--out", run_dir, "--no-progress"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        _cli(*args), cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    journal = Path(run_dir) / "study.journal"

    def finished() -> int:
        if not journal.exists():
            return 0
        states = [t.state for t in _study(run_dir).get_trials(deepcopy=False)]
        return sum(s.is_finished() for s in states)

    try:
        while finished() < 3:
            assert driver.poll() is None, driver.stdout.read().decode() if driver.stdout else "driver exited"
            time.sleep(0.1)  # polling the journal for the event "three trials told"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = _study(run_dir).get_trials(deepcopy=False)
    assert sum(t.state.is_finished() for t in before) < 8, "the driver finished before it was killed"
    resumed = subprocess.run(
        _cli(*args, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = _study(run_dir)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert len(counted) == 8
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    # Every trial left running was re-run with its parameters, once.
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") is not None]
    assert sorted(t.user_attrs["rerun_of"] for t in reruns) == sorted(t.number for t in interrupted)
    for t in reruns:
        assert t.params == next(i.params for i in interrupted if i.number == t.user_attrs["rerun_of"])
    assert RunDir(run_dir).read_json("summary.json")["counts"]["complete"] == 8


def test_a_killed_worker_does_not_fail_the_sweep(
    store_dir: str, tmp_path: Path, task_pids: Callable[[str], list[int]]
) -> None:
    run_dir = str(tmp_path / "run")
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for pid in task_pids("_trial_task"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            stop.wait(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        summary = run_sweep(
            _request(store_dir, run_dir, 4), _settings("walkforward.max_retries=3"), progress=False
        )
    finally:
        stop.set()
        thread.join()
    assert killed, "no trial task was caught running; the test did not exercise a worker death"
    assert summary["counts"]["complete"] == 4 and summary["counts"]["failed"] == 0


def test_two_objectives_give_a_pareto_front(store_dir: str, tmp_path: Path) -> None:
    settings = _settings("sweep.objectives=[sharpe, max_drawdown]")
    run_dir = str(tmp_path / "mo")
    summary = run_sweep(_request(store_dir, run_dir, 6), settings, progress=False)
    study = _study(run_dir)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = {t.number for t in study.best_trials}
    assert (
        front
        and set(
            summary["pareto_front"]["numbers"]
            if isinstance(summary["pareto_front"], dict)
            else [p["number"] for p in summary["pareto_front"]]
        )
        == front
    )
    # No trial on the front is dominated by another completed trial.
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    for t in done:
        if t.number in front:
            assert not any(
                o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                for o in done
            )


def test_a_sweep_reads_bars_from_s3_and_writes_its_run_there(s3_bucket: str, tmp_path: Path) -> None:
    store = BarStore(f"s3://{s3_bucket}/bars")
    for symbol in SYMBOLS[:2]:
        store.write_bars(symbol, "1d", synth_bars(symbol, "1d", "2019-06-01", "2021-12-31", seed=11))
    run_dir = f"s3://{s3_bucket}/sweeps/one"
    request = SweepRequest(SYMBOLS[:2], START, END, store.uri, "1d", run_dir, n_trials=3)
    summary = run_sweep(request, _settings(), progress=False)
    run = RunDir(run_dir)
    assert summary["counts"]["complete"] == 3
    for name in ("trials.parquet", "summary.json", "best.yaml", "study.journal", "sweep.html"):
        assert run.exists(name), name
    assert math.isfinite(summary["best"]["values"]["score"])


def test_an_rdb_study_with_cmaes_is_shared_and_continued(store_dir: str, tmp_path: Path) -> None:
    # An RDB URL (SQLite here; PostgreSQL in production) instead of the journal file: a second driver
    # continues the same study by name, from another run folder.
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    settings = _settings("sweep.sampler=cmaes", f"sweep.storage_url={url}", "sweep.study_name=shared")
    first = run_sweep(_request(store_dir, str(tmp_path / "a"), 3), settings, progress=False)
    assert first["counts"]["complete"] == 3
    assert not (tmp_path / "a" / "study.journal").exists()
    second = run_sweep(_request(store_dir, str(tmp_path / "b"), 5), settings, resume=True, progress=False)
    study = optuna.load_study(study_name="shared", storage=url)
    assert second["counts"]["complete"] == 5 == len(study.trials)
    assert sorted(t.number for t in study.trials) == list(range(5))


def test_cpcv_trials_report_their_sharpe_over_backtest_paths(store_dir: str, tmp_path: Path) -> None:
    # N = 4 groups, k = 2: 6 splits, C(3, 1) = 3 backtest paths per trial.
    settings = _settings(
        "walkforward.scheme=cpcv",
        "walkforward.n_groups=4",
        "walkforward.k_test_groups=2",
        "walkforward.embargo=2",
    )
    summary = run_sweep(_request(store_dir, str(tmp_path / "cv"), 3), settings, progress=False)
    study = _study(str(tmp_path / "cv"))
    for trial in study.trials:
        assert len(trial.user_attrs["path_sharpe"]) == 3
    paths = summary["paths"]
    assert paths["trial"] == summary["best"]["number"] and paths["distribution"]["n"] == 3
    best = study.trials[paths["trial"]].user_attrs["path_sharpe"]
    assert paths["distribution"]["min"] == pytest.approx(min(best))
