"""Fanning a walk-forward backtest out over Ray: one task per (fold, batch of symbols), results per task.

The driver never touches bars. It plans the folds from the calendar, writes ``manifest.json`` and
``fold_plan.parquet``, and submits tasks that each get the store URI, their symbols and their time window;
a task reads its own shards, runs :func:`trader.foldrun.run_fold`, and writes its tables to
``RUN_DIR/folds/<task>/`` with ``outcome.json`` last (the completion marker). ``resume=True`` skips tasks
whose marker exists, after checking that the manifest (symbols, plan, candidates, settings) is the same.
A task whose worker dies is retried by Ray (``walkforward.max_retries``); a task that fails for a data
reason, or for any other error after its retries, is recorded as failed with the reason and shows in the
summary. At the end the driver gathers the per-task tables and writes the run's outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from trader.errors import ConfigError, DataError, StoreError
from trader.rundir import RunDir

__all__ = [
    "WalkForwardRequest",
    "batch_symbols",
    "fold_window",
    "plan_tasks",
    "resolve_span",
    "run_walkforward",
]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
TABLES = ("returns", "trades", "risk_events", "selection", "params")


@dataclass(frozen=True)
class WalkForwardRequest:
    """What to run: symbols and the inclusive date range, strategy (None = composer) and its parameters, the
    store URI and bar interval (None = from settings), the run folder, and the selection mode without a
    strategy (``composer``: tune the composer grid; ``bandit``: Thompson sampling over its strategies)."""

    symbols: tuple[str, ...]
    start: dt.date | None
    end: dt.date | None
    strategy: str | None
    params: dict[str, Any]
    store: str | None
    interval: str | None
    run_dir: str
    selection: str = "composer"


def _bars_per_session(interval: str) -> float:
    from trader.data.schema import interval_ns

    if interval == "1d":
        return 1.0
    return 390.0 * 60e9 / interval_ns(interval)


def batch_symbols(symbols: Sequence[str], per_task: int) -> list[list[str]]:
    """Contiguous batches of ``per_task`` symbols (the last may be shorter), in the given order."""
    return [list(symbols[i : i + per_task]) for i in range(0, len(symbols), per_task)]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: Bars (summed over a task's symbols) above which a task's symbol batch is split further: a task keeps every
#: fold's out-of-sample rows of its symbols until it writes them, about 60 bytes per bar across its tables.
MAX_TASK_BARS = 5_000_000


def plan_tasks(n_symbols: int, n_folds: int, cpus: int, bars_per_symbol: float = 0.0) -> tuple[int, int]:
    """``(symbols_per_task, folds_per_task)`` when the settings leave them to us.

    A task runs a group of consecutive folds for a batch of symbols, one symbol at a time (memory stays that
    of one symbol's span). All folds share one task by default, so each symbol's signals over the span are
    computed once instead of once per fold (overlapping train windows and warm-ups). Symbols are split into at
    least two batches per CPU so no core idles at the tail, and into batches of at most
    :data:`MAX_TASK_BARS` bars (``bars_per_symbol``: bars each symbol spans) so a worker's memory stays
    bounded on minute bars; with fewer symbols than that, folds are split into groups instead.
    """
    want = max(1, 2 * cpus)
    per_task = max(1, math.ceil(n_symbols / want))
    if bars_per_symbol > 0:
        per_task = max(1, min(per_task, int(MAX_TASK_BARS // bars_per_symbol)))
    batches = math.ceil(n_symbols / per_task)
    groups = min(n_folds, max(1, math.ceil(want / batches)))
    return per_task, math.ceil(n_folds / groups)


#: The bar columns a fold reads (the strategies, the simulator and the data fingerprint use no others).
OHLCV = ("open", "high", "low", "close", "volume")


def _fold_task(
    store_uri: str,
    run_uri: str,
    keys: list[str],
    interval: str,
    tz: str,
    symbols: list[str],
    folds: list[Any],
    window: tuple[dt.datetime, dt.datetime],
    candidates: list[Any],
    settings: Any,
    selection: str,
    sleeves: int,
) -> list[dict[str, Any]]:
    """A group of folds for a batch of symbols: read each symbol's bars for the span, tune and test every
    fold, write ``folds/<key>/`` per fold (``outcome.json`` last); return small statuses."""
    from trader.backtest import data_fingerprint
    from trader.data.store import BarStore
    from trader.foldrun import FoldBatch

    started = time.perf_counter()
    run = RunDir(run_uri)
    store = BarStore(store_uri)
    batch = FoldBatch(
        folds, candidates, settings, interval=interval, tz=tz, selection=selection, sleeves=sleeves
    )
    prints: list[str] = []
    for symbol in symbols:
        try:
            bars = store.read_bars([symbol], interval, window[0], window[1], columns=OHLCV)
            batch.add(bars, [symbol])
        except (DataError, StoreError) as exc:  # a data reason: report it for this symbol, go on
            batch.fail(symbol, str(exc))
            continue
        prints.append(data_fingerprint(bars) if bars.height else f"{symbol}:empty")
    fingerprint = hashlib.sha256("\n".join(prints).encode()).hexdigest()
    outcomes = batch.outcomes(symbols)
    statuses = []
    for key, fold, outcome in zip(keys, folds, outcomes, strict=True):
        for name in TABLES:
            run.write_parquet(f"folds/{key}/{name}.parquet", getattr(outcome, name))
        status = {
            "key": key,
            "fold": int(fold.fold),
            "symbols": symbols,
            "failures": outcome.failures,
            "data_fingerprint": fingerprint,
            "seconds": round((time.perf_counter() - started) / len(folds), 4),
            # Peak resident memory of the worker process so far (Linux reports KiB), for the benchmarks.
            "worker_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_pid": os.getpid(),
        }
        run.write_json(f"folds/{key}/outcome.json", status)  # last: marks this fold of the batch done
        statuses.append(status)
    return statuses


def resolve_span(
    store: Any,
    requested: Sequence[str],
    interval: str,
    start: dt.date | None,
    end: dt.date | None,
    calendar: Any,
    *,
    what: str,
) -> tuple[list[str], dt.date, dt.date, Any]:
    """(sorted symbols, first date, last date, sessions) of a run over ``requested`` symbols; the dates
    default to the stored bars' span. Raises ConfigError for no symbols or symbols missing from the store."""
    known = set(store.symbols(interval))
    symbols = sorted(set(requested))
    missing = [s for s in symbols if s not in known]
    if not symbols:
        raise ConfigError(f"{what}: no symbols given")
    if missing:
        raise ConfigError(
            f"{what}: no {interval} bars in store {store.uri} for {', '.join(missing)}; "
            f"ingest them or check --symbols (`trader data ls --store {store.uri}`)"
        )
    listing = store.list_bars().filter(pl.col("interval") == interval, pl.col("symbol").is_in(symbols))
    first = start or listing["first_ts"].min().date()
    last = end or listing["last_ts"].max().date()
    return symbols, first, last, calendar.sessions(first, last)


def fold_window(
    group: Sequence[Any], session_arr: np.ndarray, warm_sessions: int
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) UTC of the bars a group of folds reads: ``warm_sessions`` sessions before its first
    session through its last session."""
    first = min(f.first_session for f in group)
    i0 = int(np.searchsorted(session_arr, np.datetime64(first, "D")))
    warm_start = session_arr[max(0, i0 - warm_sessions)].astype(dt.date)
    return (
        dt.datetime.combine(warm_start, dt.time(), dt.UTC),
        dt.datetime.combine(max(f.last_session for f in group) + dt.timedelta(days=1), dt.time(), dt.UTC),
    )


def run_walkforward(
    request: WalkForwardRequest, settings: Any, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) a walk-forward backtest on Ray and write every output to ``request.run_dir``.

    Returns the summary written to ``summary.json``. Raises ConfigError for an unusable request (unknown
    symbols, a plan that does not fit the dates, an existing run folder without ``resume``, a resumed run
    whose manifest differs).
    """
    import ray
    from tqdm import tqdm

    from cluster.runtime import connect, task_settings
    from trader.calendar import get_calendar
    from trader.data.store import BarStore
    from trader.tuning import candidate_grid, warmup_bars
    from trader.walkforward import plan_from_settings

    started_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    wf = settings.walkforward
    interval = request.interval or settings.data.interval
    store = BarStore(request.store or settings.data.store)
    run = RunDir(request.run_dir)
    calendar = get_calendar(settings.data.exchange)

    symbols, first, last, sessions = resolve_span(
        store, request.symbols, interval, request.start, request.end, calendar, what="walk-forward"
    )
    plan = plan_from_settings(sessions, wf)
    candidates = candidate_grid(
        settings,
        request.strategy,
        request.params,
        size=wf.grid_size,
        points_per_param=wf.grid_points_per_param,
    )
    bars_per_session = _bars_per_session(interval)
    warm_sessions = wf.warmup_sessions
    if warm_sessions is None:
        warm_sessions = math.ceil(warmup_bars(candidates, settings) / bars_per_session) + 1

    manifest = {
        "version": MANIFEST_VERSION,
        "symbols": symbols,
        "interval": interval,
        "store": store.uri,
        "start": str(first),
        "end": str(last),
        "strategy": request.strategy,
        "params": request.params,
        "selection": request.selection,
        "plan": _digest(plan.table.to_dicts()),
        "candidates": _digest([(c.strategy, c.params) for c in candidates]),
        "settings": _digest(json.loads(settings.model_dump_json())),
        "warmup_sessions": warm_sessions,
    }
    if run.exists("manifest.json"):
        if not resume:
            raise ConfigError(
                f"run folder {run.uri} already holds a run; pass --resume to finish it, or choose a new --out"
            )
        old = run.read_json("manifest.json")
        diff = sorted(k for k in manifest if old.get(k) != json.loads(json.dumps(manifest[k])))
        if diff:
            raise ConfigError(
                f"--resume {run.uri}: the run was started with different {', '.join(diff)}; "
                "resume with the same config and arguments, or start a new run"
            )
        for key in ("batches", "folds_per_task", "run_id"):
            manifest[key] = old[key]
    elif resume:
        raise ConfigError(f"--resume {run.uri}: no run there to resume (manifest.json missing)")

    with connect(settings) as ctx:
        if "batches" not in manifest:
            auto_symbols, auto_folds = plan_tasks(
                len(symbols), plan.n_folds, max(ctx.num_cpus, 1), len(sessions) * bars_per_session
            )
            manifest["batches"] = batch_symbols(symbols, wf.symbols_per_task or auto_symbols)
            manifest["folds_per_task"] = wf.folds_per_task or auto_folds
            manifest["run_id"] = f"wf-{started_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
            run.write_json("manifest.json", manifest)
            run.write_parquet("fold_plan.parquet", plan.table)
        batches: list[list[str]] = manifest["batches"]
        per_group = int(manifest["folds_per_task"])
        session_arr = np.asarray(sessions, dtype="datetime64[D]")
        done = _done_keys(run) if resume else set()
        tasks = []
        n_keys = 0
        for g in range(0, plan.n_folds, per_group):
            group = list(plan.folds[g : g + per_group])
            window = fold_window(group, session_arr, warm_sessions)
            for b, batch in enumerate(batches):
                keys = [f"f{f.fold:04d}-b{b:03d}" for f in group]
                n_keys += len(keys)
                todo = [(k, f) for k, f in zip(keys, group, strict=True) if k not in done]
                if todo:
                    tasks.append(([k for k, _ in todo], [f for _, f in todo], batch, window))
        resumed = n_keys - sum(len(t[0]) for t in tasks)
        t_tasks = time.perf_counter()
        remote = ray.remote(num_cpus=1, max_retries=wf.max_retries, retry_exceptions=False)(_fold_task)
        shared_candidates = ray.put(candidates)
        shared_settings = ray.put(task_settings(settings))
        refs = {
            remote.remote(
                store.uri, run.uri, keys, interval, calendar.tz, batch, group, window, shared_candidates,
                shared_settings, request.selection, len(symbols),
            ): (keys, group, batch)
            for keys, group, batch, window in tasks
        }  # fmt: skip
        errors: list[dict[str, Any]] = []
        bar = tqdm(
            total=n_keys, initial=resumed, unit="fold" if len(batches) == 1 else "fold-batch",
            desc=f"walk-forward {plan.n_folds} folds x {len(batches)} batches", disable=not progress,
            file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
        )  # fmt: skip
        with bar:
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    keys, group, batch = refs[ref]
                    try:
                        ray.get(ref)
                    except Exception as exc:  # the task's error after its retries: keep the reason, go on
                        reason = _task_error(exc)
                        log.warning("task %s failed: %s", ",".join(keys), reason)
                        errors.extend(
                            {"fold": int(f.fold), "symbol": s, "reason": reason} for f in group for s in batch
                        )
                    bar.update(len(keys))
        cluster = {"address": ctx.address, "num_cpus": ctx.num_cpus, "local": ctx.local}
    # Where the wall time went (seconds): connecting and planning, the tasks, then the driver's outputs.
    phases = {"setup_s": t_tasks - t0, "tasks_s": time.perf_counter() - t_tasks}
    summary = _finish(
        run, manifest, plan, settings, interval, candidates, errors, started_at, t0, resumed, cluster, phases
    )
    return summary


def _task_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}"
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _done_keys(run: RunDir) -> set[str]:
    return {p.split("/")[1] for p in run.list("folds") if p.endswith("/outcome.json")}


def _schemas() -> dict[str, dict[str, Any]]:
    from trader import foldrun

    return {
        "returns": foldrun._RETURN_SCHEMA,
        "trades": foldrun._TRADE_SCHEMA,
        "risk_events": foldrun._EVENT_SCHEMA,
        "selection": foldrun._SELECTION_SCHEMA,
        "params": foldrun._PARAMS_SCHEMA,
    }


def _scan(run: RunDir, keys: list[str], name: str) -> pl.LazyFrame:
    """Every finished task's ``name`` table as one lazy scan, in key order (fold, then symbol batch)."""
    if not keys:
        return pl.LazyFrame(schema=_schemas()[name])
    return run.scan_parquet([f"folds/{key}/{name}.parquet" for key in keys])


def _outcomes(run: RunDir, keys: list[str]) -> tuple[list[dict[str, Any]], str]:
    """Failures recorded by the finished tasks, and a digest of the bars every task read."""
    failures: list[dict[str, Any]] = []
    prints: list[str] = []
    for key in keys:
        outcome = run.read_json(f"folds/{key}/outcome.json")
        failures.extend(outcome["failures"])
        prints.append(f"{key}:{outcome.get('data_fingerprint')}")
    return failures, hashlib.sha256("\n".join(prints).encode()).hexdigest()


def _finish(
    run: RunDir,
    manifest: dict[str, Any],
    plan: Any,
    settings: Any,
    interval: str,
    candidates: list[Any],
    errors: list[dict[str, Any]],
    started_at: dt.datetime,
    t0: float,
    resumed_fold_batches: int,
    cluster: dict[str, Any],
    phases: dict[str, float],
) -> dict[str, Any]:
    from trader.backtest import versions
    from trader.calendar import get_calendar
    from trader.oos import cpcv_paths, fold_means, oos_summary, stitch_equity

    # The driver never holds the run's tables: outputs stream from the task files (in fold, then symbol batch
    # order, the same whatever the batching), and metrics read per-bar aggregates and one symbol at a time.
    keys = sorted(_done_keys(run))
    failures, fingerprint = _outcomes(run, keys)
    failures = failures + errors
    returns = _scan(run, keys, "returns")
    trades = _scan(run, keys, "trades")
    initial_cash = float(settings.engine.initial_cash)
    means = fold_means(returns)  # one pass over the run's returns for the equity curve and the summary
    equity = stitch_equity(None, initial_cash, means=means).select("ts", "equity", "benchmark")
    run.sink_parquet("oos_returns.parquet", returns.select("ts", "symbol", "fold", "return"))
    run.write_parquet("equity.parquet", equity)
    run.sink_parquet("trades.parquet", trades)
    params = _scan(run, keys, "params").collect()
    run.write_parquet("params.parquet", params)
    run.sink_parquet("risk_events.parquet", _scan(run, keys, "risk_events"))
    run.sink_parquet("selection.parquet", _scan(run, keys, "selection"))
    by_symbol: dict[str, tuple[pl.LazyFrame, pl.LazyFrame]] = {}
    for b, batch in enumerate(manifest["batches"]):
        mine = [k for k in keys if k.endswith(f"-b{b:03d}")]
        sources = (_scan(run, mine, "returns"), _scan(run, mine, "trades"))
        by_symbol.update(dict.fromkeys(batch, sources))
    # Each fold's trades from its own files (keys are f<fold>-b<batch>), not a filter over every file.
    by_fold = {
        int(f.fold): _scan(run, [k for k in keys if k.startswith(f"f{f.fold:04d}-")], "trades")
        for f in plan.folds
    }
    # CPCV: every backtest path's OOS series (None for walk-forward); its equity curves feed the report.
    paths = cpcv_paths(
        returns,
        plan.paths_table,
        interval=interval,
        initial_cash=initial_cash,
        tz=get_calendar(settings.data.exchange).tz,
    )
    if paths is not None:
        run.write_parquet("paths_equity.parquet", paths.equity)
    metrics = oos_summary(
        returns=returns,
        trades=trades,
        params=params,
        plan_table=plan.table,
        failures=failures,
        interval=interval,
        initial_cash=initial_cash,
        n_trials=len(candidates),
        by_symbol=by_symbol,
        paths=paths,
        means=means,
        trades_by_fold=by_fold,
    )
    finished_at = dt.datetime.now(dt.UTC)
    wall = time.perf_counter() - t0
    phases = {**phases, "outputs_s": wall - sum(phases.values())}
    summary = {
        "run_id": manifest["run_id"],
        "mode": plan.kind,
        "interval": interval,
        "symbols": manifest["symbols"],
        "start": manifest["start"],
        "end": manifest["end"],
        "strategy": manifest["strategy"] or "composer",
        "n_folds": plan.n_folds,
        "n_fold_batches": len(plan.folds) * len(manifest["batches"]),
        "n_tasks": math.ceil(len(plan.folds) / manifest["folds_per_task"]) * len(manifest["batches"]),
        "resumed_fold_batches": resumed_fold_batches,
        "ray": cluster,
        **metrics,
        "settings": json.loads(settings.model_dump_json()),
        "data_fingerprint": fingerprint,
        "versions": versions(),
        "wall_s": round(wall, 3),
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
    }
    run.write_json("summary.json", summary)
    try:
        from trader.report import build_report

        summary["report"] = build_report(run.uri)
    except ImportError:  # pragma: no cover - the report package ships with trader
        summary["report"] = None
    return summary
