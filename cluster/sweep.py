"""Hyperparameter sweeps: Optuna ask-and-tell on the driver, each trial a walk-forward run fanned out on Ray.

``run_sweep`` asks Optuna for a trial (its parameters become a settings variant, ``trader.sweep.space``),
evaluates it as (fold group x symbol batch) Ray tasks exactly like ``trader backtest``'s walk-forward
(``trader.sweep.evaluate``), reports the running out-of-sample score after each fold group so poor trials are
pruned early, and tells Optuna the trial's objective(s). Several trials run at once (``sweep.concurrency``).

Reproducibility: trials are asked in number order and told in number order, and trial ``n`` is asked only
once trial ``n - concurrency`` has been told, so the sampler always sees the same finished trials (TPE ignores
running ones). Pruning decisions use the trials finished when the trial was asked (a frozen view), never
whatever happens to have finished meanwhile. So a seeded sweep gives the same trials every time.

Storage: a journal file ``RUN_DIR/study.journal`` (Optuna's JournalStorage, safe for one driver; for an
s3:// run directory a local working copy is uploaded after every trial), or ``sweep.storage_url`` (an RDB
such as PostgreSQL) for a study shared by several drivers. Resume: rerunning with the same run directory
(``--resume``) or study continues the study; trials left running by a killed driver are marked failed
(``interrupted``) and re-enqueued with the same parameters, so they run again and no trial counts twice; the
sweep stops when ``n_trials`` trials are complete, pruned or failed for a reason of their own. A task lost
with its worker is retried by Ray (``walkforward.max_retries``).

Bars are read once per (fold group, symbol batch) into Ray's object store and shared by every trial's tasks.
Per trial the driver keeps only its folds' sums while it runs; each finished trial's OOS return series goes to
``RUN_DIR/trials/tNNNNN.parquet`` (for PBO), so driver memory does not grow with the number of trials.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cluster.fanout import batch_symbols, fold_window, resolve_span
from trader.errors import ConfigError
from trader.rundir import RunDir, json_safe

__all__ = ["TRIAL_METRICS", "SweepRequest", "run_sweep"]

log = logging.getLogger(__name__)

#: Metrics kept per trial in Optuna's user attributes (and trials.parquet).
TRIAL_METRICS = (
    "score", "sharpe", "sortino", "cagr", "total_return", "max_drawdown", "volatility", "n_trades",
    "win_rate", "avg_trade", "n_bars",
)  # fmt: skip


@dataclass(frozen=True)
class SweepRequest:
    """What to sweep: symbols (all in the store when empty), span (None = the stored span), the bar store,
    interval and the run directory. ``n_trials``/``timeout_s``/``study_name`` override the settings."""

    symbols: tuple[str, ...]
    start: dt.date | None
    end: dt.date | None
    store: str | None
    interval: str | None
    run_dir: str
    n_trials: int | None = None
    timeout_s: float | None = None
    study_name: str | None = None


def _load_task(
    store_uri: str, symbols: list[str], interval: str, window: tuple[dt.datetime, dt.datetime]
) -> Any:
    """One symbol batch's bars over one fold group's span, for the object store (shared by all trials)."""
    from trader.data.store import BarStore

    return BarStore(store_uri).read_bars(symbols, interval, window[0], window[1])


def _trial_task(
    bars: Any, symbols: list[str], folds: list[Any], settings: Any, interval: str, tz: str, sleeves: int
) -> dict[str, Any]:
    """One trial's folds for one symbol batch: per-fold partial sums (never bars), task seconds and pid."""
    from trader.sweep.evaluate import evaluate_pieces

    started = time.perf_counter()
    parts = evaluate_pieces(bars, symbols, folds, settings, interval=interval, tz=tz, sleeves=sleeves)
    return {"parts": parts, "seconds": time.perf_counter() - started, "pid": os.getpid()}


@dataclass
class _Running:
    """A trial in flight: its Optuna trial, the folds' partials gathered so far, and its pending tasks."""

    trial: Any
    params: dict[str, Any]
    settings: Any
    frozen: list[Any]  # trials finished when this one was asked: the pruner's view
    refs: dict[Any, tuple[int, int]] = field(default_factory=dict)  # task ref -> (group, batch)
    parts: dict[int, dict[int, Any]] = field(default_factory=dict)  # fold -> batch -> partial
    merged: dict[int, Any] = field(default_factory=dict)  # fold -> merged partial (every batch in)
    reported: int = 0  # folds reported so far (a prefix in fold order)
    started: float = field(default_factory=time.perf_counter)
    task_seconds: float = 0.0
    pids: set[int] = field(default_factory=set)
    outcome: tuple[str, Any] | None = None  # ("complete", values) | ("pruned", None) | ("fail", reason)
    metrics: dict[str, Any] = field(default_factory=dict)


class _Storage:
    """The study's storage: an RDB URL, or a journal file (a local working copy for s3:// run dirs)."""

    def __init__(self, settings: Any, run: RunDir) -> None:
        import optuna

        self.run = run
        self.local: Path | None = None
        self._tmp: str | None = None
        url = settings.sweep.storage_url
        if url is not None:
            self.storage: Any = optuna.storages.RDBStorage(url.get_secret_value())
            self.where = "the RDB at sweep.storage_url"
            return
        if not run.is_s3:
            self.local = Path(run.path("study.journal"))
            self.local.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.mkdtemp(prefix="trader-sweep-")
            self.local = Path(self._tmp) / "study.journal"
            if run.exists("study.journal"):
                self.local.write_bytes(run.read_bytes("study.journal"))
        from optuna.storages.journal import JournalFileBackend

        self.storage = optuna.storages.JournalStorage(JournalFileBackend(str(self.local)))
        self.where = f"{run.uri}/study.journal"

    def sync(self) -> None:
        """Upload the working copy of an s3:// run's journal (a no-op for local files and RDBs)."""
        if self._tmp is not None and self.local is not None and self.local.exists():
            self.run.write_bytes("study.journal", self.local.read_bytes())

    def close(self) -> None:
        self.sync()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _counted(trial: Any) -> bool:
    """Does a finished trial count towards n_trials? (Trials interrupted by a dead driver are re-run.)"""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get("interrupted", False)


def _recover_interrupted(study: Any) -> int:
    """Mark trials a killed driver left running as failed (interrupted) and enqueue their parameters again."""
    from optuna.trial import TrialState

    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
        n += 1
    return n


def run_sweep(
    request: SweepRequest, settings: Any, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or continue) a sweep and write ``trials.parquet``, ``best.yaml``, ``summary.json`` and
    ``sweep.html`` to ``request.run_dir``; returns the summary. See the module docstring."""
    import optuna
    import ray
    from optuna.trial import TrialState
    from tqdm import tqdm

    from cluster.runtime import connect, task_settings
    from trader.calendar import get_calendar
    from trader.data.store import BarStore
    from trader.sweep.evaluate import path_sharpes
    from trader.sweep.space import (
        directions,
        make_pruner,
        make_sampler,
        objective_values,
        prune_decision,
        search_space,
        suggest,
        trial_settings,
    )
    from trader.tuning import candidate_grid, warmup_bars
    from trader.walkforward import plan_from_settings

    t0 = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    sw, wf = settings.sweep, settings.walkforward
    n_trials = int(request.n_trials or sw.n_trials)
    timeout_s = request.timeout_s if request.timeout_s is not None else sw.timeout_s
    study_name = request.study_name or sw.study_name
    interval = request.interval or settings.data.interval
    store = BarStore(request.store or settings.data.store)
    run = RunDir(request.run_dir)
    calendar = get_calendar(settings.data.exchange)
    symbols_in = request.symbols or tuple(store.symbols(interval))
    symbols, first, last, sessions = resolve_span(
        store, symbols_in, interval, request.start, request.end, calendar, what="sweep"
    )
    plan = plan_from_settings(sessions, wf)
    space = search_space(settings)
    # The warm-up covers every value the space can take: the base configuration's and each bound's.
    warm = warmup_bars(candidate_grid(settings, size=wf.grid_size), settings)
    for p in space:
        for bound in (p.low, p.high):
            if bound is not None and p.kind == "int":
                try:
                    variant = trial_settings(settings, {p.key: int(bound)})
                except ConfigError:
                    continue
                warm = max(warm, warmup_bars(candidate_grid(variant, size=1), variant))
    bars_per_session = 1.0 if interval == "1d" else 390.0
    warm_sessions = wf.warmup_sessions
    if warm_sessions is None:
        warm_sessions = math.ceil(warm / bars_per_session) + 1

    if run.exists("summary.json") and not resume and sw.storage_url is None:
        raise ConfigError(
            f"sweep: {run.uri} already holds a finished sweep; use --resume to add trials or a new --out"
        )
    if run.exists("study.journal") and not resume:
        raise ConfigError(f"sweep: {run.uri} already holds a study; rerun with --resume to continue it")
    manifest = {
        "study_name": study_name,
        "symbols": symbols,
        "interval": interval,
        "store": store.uri,
        "start": str(first),
        "end": str(last),
        "plan": json.loads(plan.table.write_json()),
        "n_folds": plan.n_folds,
        "space": [p.key for p in space],
        "objectives": list(sw.objectives),
    }
    if resume and run.exists("sweep_manifest.json"):
        old = run.read_json("sweep_manifest.json")
        diff = [
            k
            for k in ("study_name", "symbols", "interval", "start", "end", "space", "objectives")
            if old.get(k) != manifest[k]
        ]
        if diff:
            raise ConfigError(
                f"--resume {run.uri}: the sweep was started with different {', '.join(diff)}; resume with "
                "the same config and arguments, or start a new run"
            )
    run.write_json("sweep_manifest.json", manifest)

    storage = _Storage(settings, run)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage.storage,
            sampler=make_sampler(settings, space),
            pruner=make_pruner(settings),
            directions=directions(settings),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. an existing study with other directions
        raise ConfigError(f"sweep: study {study_name!r} in {storage.where}: {exc}") from None
    pruner = make_pruner(settings)
    interrupted = _recover_interrupted(study)
    done = sum(_counted(t) for t in study.get_trials(deepcopy=False))
    to_run = max(0, n_trials - done)

    with connect(settings) as ctx:
        cpus = max(ctx.num_cpus, 1)
        per_batch = wf.symbols_per_task or max(1, math.ceil(len(symbols) / max(1, cpus)))
        batches = batch_symbols(symbols, per_batch)
        # Fold groups are the pruning grain: about four per trial unless configured.
        per_group = wf.folds_per_task or max(1, math.ceil(plan.n_folds / 4))
        groups = [list(plan.folds[g : g + per_group]) for g in range(0, plan.n_folds, per_group)]
        group_ends = list(itertools.accumulate(len(group) for group in groups))  # reporting steps, in folds
        session_arr = np.asarray(sessions, dtype="datetime64[D]")
        load = ray.remote(num_cpus=1, max_retries=wf.max_retries)(_load_task)
        bars_refs = [
            [
                load.remote(store.uri, batch, interval, fold_window(group, session_arr, warm_sessions))
                for batch in batches
            ]
            for group in groups
        ]
        task = ray.remote(num_cpus=1, max_retries=wf.max_retries, retry_exceptions=False)(_trial_task)
        fold_ids = [int(f.fold) for f in plan.folds]
        running: dict[int, _Running] = {}
        finished: dict[int, _Running] = {}  # numbers done but waiting for earlier trials to be told
        order: list[int] = []  # trial numbers asked, in order
        told = 0
        asked = 0
        best: float | None = None
        counts = {"complete": 0, "pruned": 0, "failed": 0}
        deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
        task_seconds = 0.0
        bar = tqdm(
            total=n_trials, initial=done, unit="trial", desc=f"sweep {study_name}", disable=not progress,
            file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
        )  # fmt: skip

        def ask() -> None:
            nonlocal asked
            trial = study.ask()
            frozen = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            try:
                params = (
                    {k: trial.params[k] for k in trial.params}
                    if trial.user_attrs.get("rerun_of") is not None and trial.params
                    else suggest(trial, space)
                )
                variant = trial_settings(settings, params)
            except ConfigError as exc:
                state = _Running(trial, dict(trial.params), None, frozen)
                state.outcome = ("fail", f"invalid settings: {exc}")
                finished[trial.number] = state
                order.append(trial.number)
                asked += 1
                return
            state = _Running(trial, params, variant, frozen)
            shared = ray.put(task_settings(variant))
            for g, group in enumerate(groups):
                for b, batch in enumerate(batches):
                    ref = task.remote(
                        bars_refs[g][b], batch, group, shared, interval, calendar.tz, len(symbols)
                    )
                    state.refs[ref] = (g, b)
            running[trial.number] = state
            order.append(trial.number)
            asked += 1

        def finish(number: int, outcome: tuple[str, Any]) -> None:
            state = running.pop(number)
            # Its tasks still in flight run on and their results are dropped. Not ray.cancel: in Ray 2.60 a
            # cancel racing a task's completion can abort the driver ("Tried to complete task that was not
            # pending"), seen in this suite.
            state.refs.clear()
            state.outcome = outcome
            finished[number] = state

        def on_result(state: _Running, g: int, b: int, result: dict[str, Any]) -> None:
            nonlocal task_seconds
            from trader.sweep.evaluate import merge_partials, score_folds

            task_seconds += result["seconds"]
            state.task_seconds += result["seconds"]
            state.pids.add(result["pid"])
            for part in result["parts"]:
                got = state.parts.setdefault(part.fold, {})
                got[b] = part
                if len(got) == len(batches):  # merged in batch order: the same sums whatever came first
                    state.merged[part.fold] = merge_partials([got[i] for i in sorted(got)])
                    del state.parts[part.fold]
            # Report the running OOS score at each fold-group boundary, in order, once every fold before it
            # is in: the steps (and so the pruner's decisions) do not depend on which task finished first.
            if len(study.directions) == 1:
                for step in group_ends:
                    if step <= state.reported or step >= len(fold_ids):
                        continue
                    if not all(f in state.merged for f in fold_ids[:step]):
                        break
                    value = score_folds(
                        [state.merged[f] for f in fold_ids[:step]], state.settings, interval=interval
                    )["score"]
                    state.reported = step
                    if math.isfinite(value):
                        state.trial.report(float(value), step)
                        if prune_decision(pruner, state.frozen, state.trial, step, float(value)):
                            finish(state.trial.number, ("pruned", None))
                            return
            if not state.refs:
                metrics = score_folds(
                    [state.merged[f] for f in fold_ids if f in state.merged],
                    state.settings,
                    interval=interval,
                )
                state.metrics = metrics
                values = objective_values(metrics, state.settings)
                if not all(math.isfinite(v) for v in values):
                    finish(
                        state.trial.number, ("fail", f"objective not defined (metrics {json_safe(metrics)})")
                    )
                else:
                    finish(state.trial.number, ("complete", values))

        def tell_in_order() -> None:
            nonlocal told, best
            while told < len(order) and order[told] in finished:
                number = order[told]
                state = finished.pop(number)
                kind, payload = state.outcome  # type: ignore[misc]
                trial = state.trial
                trial.set_user_attr("seconds", round(time.perf_counter() - state.started, 3))
                trial.set_user_attr("task_seconds", round(state.task_seconds, 3))
                trial.set_user_attr("workers", sorted(state.pids))
                if state.metrics:
                    trial.set_user_attr(
                        "metrics", json_safe({k: state.metrics.get(k) for k in TRIAL_METRICS})
                    )
                failures = [f for part in state.merged.values() for f in part.failures]
                if failures:
                    trial.set_user_attr("failures", json_safe(failures[:50]))
                if kind == "complete":
                    _save_returns(
                        run, number, [state.merged[f] for f in fold_ids if f in state.merged], trial
                    )
                    if plan.kind == "cpcv":  # the distribution over backtest paths, not one history
                        trial.set_user_attr(
                            "path_sharpe",
                            path_sharpes(state.merged, plan.paths_table, interval=interval, tz=calendar.tz),
                        )
                    study.tell(trial, payload)
                    counts["complete"] += 1
                    if len(payload) == 1:
                        better = best is None or (
                            payload[0] > best if study.direction.name == "MAXIMIZE" else payload[0] < best
                        )
                        best = payload[0] if better else best
                elif kind == "pruned":
                    study.tell(trial, state=TrialState.PRUNED)
                    counts["pruned"] += 1
                else:
                    trial.set_user_attr("fail_reason", str(payload)[:500])
                    study.tell(trial, state=TrialState.FAIL)
                    counts["failed"] += 1
                storage.sync()
                told += 1
                bar.update(1)
                bar.set_postfix(
                    best=None if best is None else round(best, 4),
                    pruned=counts["pruned"],
                    failed=counts["failed"],
                    refresh=False,
                )

        with bar:
            while True:
                out_of_time = deadline is not None and time.monotonic() >= deadline
                while (
                    not out_of_time
                    and asked < to_run
                    and len(order) - told < sw.concurrency
                    and not _exhausted(study)
                ):
                    ask()
                tell_in_order()
                if not running:
                    if (asked >= to_run or out_of_time or _exhausted(study)) and not finished:
                        break
                    continue
                refs = [ref for state in running.values() for ref in state.refs]
                ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                for ref in ready:
                    owner = next((s for s in running.values() if ref in s.refs), None)
                    if owner is None:
                        continue
                    g, b = owner.refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as exc:
                        finish(owner.trial.number, ("fail", _task_error(exc)))
                        continue
                    on_result(owner, g, b, result)
        wall = time.perf_counter() - t0

    summary = _finish(
        run, study, settings, interval, counts, interrupted, wall, task_seconds, cpus, started_at
    )
    storage.close()
    return summary


def _exhausted(study: Any) -> bool:
    """A grid sweep that has asked for every point of its grid."""
    check = getattr(study.sampler, "is_exhausted", None)
    return bool(check(study)) if check is not None else False


def _task_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}"
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _save_returns(run: RunDir, number: int, folds: list[Any], trial: Any) -> None:
    """A completed trial's stitched OOS returns (ts, return) for PBO; its per-period Sharpe in user attrs."""
    from trader.sweep.evaluate import stitch_partials

    ts, port, _ = stitch_partials(folds)
    frame = pl.DataFrame({"ts": pl.Series(ts).cast(pl.Datetime("ns", "UTC")), "return": port})
    run.write_parquet(f"trials/t{number:05d}.parquet", frame)
    sd = float(np.std(port, ddof=1)) if port.size > 1 else math.nan
    trial.set_user_attr("sharpe_per_period", float(np.mean(port) / sd) if sd > 0 else None)


def _returns_matrix(run: RunDir, numbers: list[int]) -> tuple[np.ndarray | None, list[int]]:
    """(bars x trials) OOS returns of the completed trials, aligned on time (a missing bar is 0)."""
    frames, kept = [], []
    for n in numbers:
        path = f"trials/t{n:05d}.parquet"
        if run.exists(path):
            frames.append(run.read_parquet(path).rename({"return": f"t{n}"}))
            kept.append(n)
    if not frames:
        return None, []
    wide = frames[0]
    for f in frames[1:]:
        wide = wide.join(f, on="ts", how="full", coalesce=True)
    wide = wide.sort("ts").fill_null(0.0)
    return wide.drop("ts").to_numpy(), kept


def _finish(
    run: RunDir,
    study: Any,
    settings: Any,
    interval: str,
    counts: dict[str, int],
    interrupted: int,
    wall: float,
    task_seconds: float,
    cpus: int,
    started_at: dt.datetime,
) -> dict[str, Any]:
    from optuna.trial import TrialState

    from trader.backtest import versions
    from trader.sweep.report import (
        best_overlay,
        overlay_yaml,
        render_sweep_report,
        sweep_summary,
        trials_table,
    )

    complete = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    matrix, kept = _returns_matrix(run, complete)
    summary = sweep_summary(study, settings, matrix, kept, interval)
    run.write_parquet("trials.parquet", trials_table(study, returns_dir=RunDir(run.path("trials"))))
    best = summary.get("best")
    if best and best.get("params") is not None:
        text = overlay_yaml(
            best_overlay(settings, best["params"]),
            comment=f"best trial {best['number']} of sweep {study.study_name}: {best.get('values')}",
        )
        run.write_bytes("best.yaml", text.encode())
    if best and best.get("number") is not None:
        sharpes = study.trials[best["number"]].user_attrs.get("path_sharpe")
        if sharpes is not None:  # CPCV: the best trial's OOS Sharpe over the backtest paths
            from trader.oos import distribution

            values = np.array([np.nan if v is None else v for v in sharpes], dtype=float)
            finite = values[np.isfinite(values)]
            summary["paths"] = {
                "trial": best["number"], "sharpe": sharpes, "distribution": distribution(values),
                "frac_sharpe_le_0": float(np.mean(finite <= 0)) if finite.size else None,
            }  # fmt: skip
    summary.update(
        study_name=study.study_name,
        this_run={**counts, "interrupted_rerun": interrupted},
        wall_seconds=round(wall, 3),
        task_seconds=round(task_seconds, 3),
        cpus=cpus,
        # Time the cluster's CPUs were not running trial tasks (scheduling, driver, start-up, data loading).
        scheduling_overhead=round(max(0.0, 1.0 - task_seconds / (wall * cpus)), 4) if wall > 0 else None,
        started_at=started_at.isoformat(),
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
        versions=versions(),
        settings=json.loads(settings.model_dump_json()),
    )
    run.write_json("summary.json", json_safe(summary))
    try:
        summary["report"] = render_sweep_report(study, summary, run)
    except Exception as exc:  # the numbers are written; a plotting problem must not lose them
        log.warning("sweep report not written: %s", exc)
        summary["report"] = None
    return summary
