"""Reading a walk-forward run directory (local path or ``s3://`` URI) into validated frames.

The layout is the contract the walk-forward driver writes (see :mod:`trader.report`). Three files are
required: ``summary.json``, ``equity.parquet`` and ``fold_plan.parquet``; a missing or malformed one raises
:class:`~trader.errors.DataError` naming the file. The others (``oos_returns``, ``trades``, ``params``,
``risk_events``, ``selection``) are optional: an absent file reads as empty (no rows, no counts) and is
listed in :attr:`RunData.missing`, so the page can say "not written" rather than "none happened".

Memory stays bounded on large runs (5 years of minute bars for 100 symbols is ~49 million rows in
``oos_returns``, ``selection`` and perhaps ``trades``): those tables are never loaded whole. Their schemas are
checked from the Parquet footer, their row counts come from it too, and ``selection`` is streamed in record
batches of :data:`BATCH_ROWS` rows and reduced to decision counts per (fold, regime, arm). Only ``equity``
(one row per bar), ``fold_plan``, ``params`` and ``risk_events`` are read as frames.

CPCV runs also write ``paths_equity.parquet`` (ts, path, equity; one row per backtest path and bar). It is
read one path at a time (a row-group filter) and each path is down-sampled on read to
:data:`PATH_PLOT_POINTS` points in all (min/max per bucket), so memory is that of one path whatever their
number. Walk-forward runs have no such file, and its absence is not listed as missing.

Columns are checked by kind and cast to the contract's dtypes (any integer width to Int64, any float to
Float64, ``Categorical`` to String, timestamps to ``Datetime("ns", "UTC")``). A timestamp column without a
time zone is refused: the contract says UTC, and guessing would shift intraday bars silently.

Example::

    from trader.report.rundir import load_run

    run = load_run("runs/wf-2024")          # or "s3://bucket/runs/wf-2024"
    print(run.summary["run_id"], run.equity.height, run.row_counts, run.missing)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trader.data.objectstore import parse_location
from trader.errors import DataError, StoreError

__all__ = [
    "BATCH_ROWS",
    "OPTIONAL_FILES",
    "PATHS_EQUITY",
    "PATH_PLOT_POINTS",
    "REQUIRED_FILES",
    "TABLE_SCHEMAS",
    "RunData",
    "finite_or_none",
    "load_run",
    "open_run_dir",
]

UTC_NS: Final = pl.Datetime("ns", "UTC")
#: Rows per record batch when streaming a large table (selection): bounds the reader's memory.
BATCH_ROWS: Final = 1 << 20
#: The CPCV path equity curves a run may hold (written only by CPCV runs).
PATHS_EQUITY: Final = "paths_equity.parquet"
#: Points kept for plotting across all CPCV path curves (each path gets an equal share, at least 500).
PATH_PLOT_POINTS: Final = 20_000

# Optional tables read as whole frames (small: per fold and symbol, or sparse events); the others are
# large (a row per bar and symbol) and only validated from the footer, counted, or streamed.
_FRAME_TABLES: Final = ("params.parquet", "risk_events.parquet")
# Column name -> kind, per table of the contract. Kinds: "ts" (UTC timestamp), "int", "float", "str", "date".
TABLE_SCHEMAS: Final[Mapping[str, Mapping[str, str]]] = {
    "fold_plan.parquet": {"fold": "int", "role": "str", "segment": "int", "start": "date", "end": "date"},
    "equity.parquet": {"ts": "ts", "equity": "float", "benchmark": "float"},
    "oos_returns.parquet": {"ts": "ts", "symbol": "str", "fold": "int", "return": "float"},
    "trades.parquet": {
        "ts": "ts",
        "symbol": "str",
        "fold": "int",
        "side": "str",
        "qty": "float",
        "price": "float",
        "commission": "float",
        "reason": "str",
    },
    "params.parquet": {
        "fold": "int",
        "symbol": "str",
        "strategy": "str",
        "params": "str",
        "train_score": "float",
        "n_candidates": "int",
    },
    "risk_events.parquet": {"ts": "ts", "symbol": "str", "fold": "int", "rule": "str", "detail": "float"},
    "selection.parquet": {"ts": "ts", "symbol": "str", "fold": "int", "regime": "str", "arm": "str"},
    PATHS_EQUITY: {"ts": "ts", "path": "int", "equity": "float"},
}
REQUIRED_FILES: Final = ("summary.json", "equity.parquet", "fold_plan.parquet")
OPTIONAL_FILES: Final = (
    "oos_returns.parquet",
    "trades.parquet",
    "params.parquet",
    "risk_events.parquet",
    "selection.parquet",
)

_DTYPES: Final[Mapping[str, pl.DataType]] = {
    "ts": UTC_NS,
    "int": pl.Int64(),
    "float": pl.Float64(),
    "str": pl.String(),
    "date": pl.Date(),
}
# Columns that must never be null: the keys the report groups and joins on.
_NOT_NULL: Final[Mapping[str, tuple[str, ...]]] = {
    "fold_plan.parquet": ("fold", "role", "start", "end"),
    "equity.parquet": ("ts",),
}
# summary.json keys the report cannot do without, and the JSON type each top-level key must have.
_SUMMARY_REQUIRED: Final = ("run_id", "oos", "per_fold")
_SUMMARY_TYPES: Final[Mapping[str, type | tuple[type, ...]]] = {
    "run_id": (str, int),
    "mode": str,
    "oos": dict,
    "benchmark": dict,
    "per_fold": list,
    "per_symbol": dict,
    "dsr": dict,
    "failed_folds": list,
    "paths": dict,
    "settings": dict,
    "versions": dict,
}


@dataclass(frozen=True)
class RunData:
    """Everything the report reads from one run directory, validated.

    ``summary`` is the parsed ``summary.json`` (a dict; non-finite numbers are ``None``). ``equity``,
    ``fold_plan``, ``params`` and ``risk_events`` are frames with the contract's columns and dtypes, sorted
    by time (or fold). ``selection_counts`` holds the number of out-of-sample decisions (bars) ``n`` per
    ``fold``, ``regime`` and ``arm`` (nulls kept as null). ``row_counts`` gives the rows of every Parquet
    file present (from its footer); ``missing`` names the optional files that were absent (their frames are
    empty). ``path_equity`` holds the CPCV path equity curves (ts, path, equity; sorted by path, then ts),
    down-sampled for plotting (``row_counts["paths_equity.parquet"]`` has the rows on file); empty for
    walk-forward runs.
    """

    uri: str
    summary: dict[str, Any]
    fold_plan: pl.DataFrame
    equity: pl.DataFrame
    params: pl.DataFrame
    risk_events: pl.DataFrame
    selection_counts: pl.DataFrame
    row_counts: Mapping[str, int] = field(default_factory=dict)
    missing: tuple[str, ...] = field(default_factory=tuple)
    path_equity: pl.DataFrame = field(default_factory=lambda: _empty(PATHS_EQUITY))


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else ``None``.

    >>> finite_or_none(1), finite_or_none(float("nan")), finite_or_none(None), finite_or_none("x")
    (1.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def open_run_dir(run_dir: str, *, delayed_open: bool = False) -> tuple[pafs.FileSystem, str, str]:
    """``(filesystem, base path in that filesystem, normal URI)`` of a run directory.

    Local paths (relative, ``~``, ``file://``) become absolute and must be an existing folder;
    ``s3://bucket/prefix`` opens through ``pyarrow.fs.FileSystem.from_uri`` with endpoint and credentials
    from the environment. ``delayed_open`` (S3 only) makes an output stream send a small file (under 5 MiB)
    as one PutObject at close instead of a multipart upload. Raises :class:`~trader.errors.DataError` for a
    location that cannot be parsed, found or opened.
    """
    try:
        loc = parse_location(run_dir)
    except StoreError as exc:
        raise DataError(f"run directory: {exc}") from exc
    if not loc.is_s3:
        if not os.path.isdir(loc.path):
            raise DataError(f"run directory {loc.path} does not exist (or is not a folder); check RUN_DIR")
        return pafs.LocalFileSystem(), loc.path, loc.uri
    try:
        fs, path = pafs.FileSystem.from_uri(loc.uri + ("?allow_delayed_open=true" if delayed_open else ""))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"run directory {loc.uri}: cannot open S3 ({exc})") from exc
    return fs, path.rstrip("/"), loc.uri


def _exists(fs: pafs.FileSystem, path: str, where: str) -> bool:
    try:
        return fs.get_file_info(path).type == pafs.FileType.File
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: cannot stat ({exc})") from exc


def _cast_column(frame: pl.DataFrame, name: str, kind: str, where: str) -> pl.Series:
    col = frame[name]
    dtype = col.dtype
    bad = DataError(f"{where}: column {name!r} has type {dtype}, expected {_DTYPES[kind]}")
    if kind == "ts":
        if not isinstance(dtype, pl.Datetime):
            raise bad
        if dtype.time_zone is None:
            raise DataError(f"{where}: column {name!r} has no time zone; the contract says UTC timestamps")
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("ns")
    if kind == "int":
        if not dtype.is_integer():
            raise bad
        return col.cast(pl.Int64)
    if kind == "float":
        if not dtype.is_numeric():
            raise bad
        return col.cast(pl.Float64)
    if kind == "str":
        if dtype == pl.Null:
            return col.cast(pl.String)
        if not isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
            raise bad
        return col.cast(pl.String)
    # kind == "date": a Date, or a Datetime whose date part is the day (written by tools without a Date type)
    if isinstance(dtype, pl.Datetime):
        return col.dt.date()
    if dtype != pl.Date:
        raise bad
    return col


def _conform(frame: pl.DataFrame, name: str, where: str) -> pl.DataFrame:
    """``frame`` with the contract's columns cast to their dtypes (extra columns kept)."""
    schema = TABLE_SCHEMAS[name]
    absent = [c for c in schema if c not in frame.columns]
    if absent:
        raise DataError(f"{where}: missing column(s) {', '.join(absent)}; expected {', '.join(schema)}")
    frame = frame.with_columns([_cast_column(frame, c, kind, where).alias(c) for c, kind in schema.items()])
    for col in _NOT_NULL.get(name, ()):
        nulls = frame[col].null_count()
        if nulls:
            raise DataError(f"{where}: column {col!r} has {nulls} null value(s)")
    return frame


def _empty(name: str) -> pl.DataFrame:
    return pl.DataFrame(schema={c: _DTYPES[k] for c, k in TABLE_SCHEMAS[name].items()})


def _where(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}"


def _missing_required(where: str) -> DataError:
    return DataError(f"{where}: required file is missing; re-run the walk-forward or check RUN_DIR")


def _parquet_file(fs: pafs.FileSystem, path: str, where: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({exc})") from exc


def _check_footer(pf: pq.ParquetFile, name: str, where: str) -> None:
    """Validate the columns of a Parquet file from its footer alone (no data read)."""
    empty = pl.from_arrow(pf.schema_arrow.empty_table())
    assert isinstance(empty, pl.DataFrame)
    _conform(empty, name, where)


def _read_table(fs: pafs.FileSystem, base: str, uri: str, name: str) -> pl.DataFrame:
    where = _where(uri, name)
    pf = _parquet_file(fs, f"{base}/{name}", where)
    _check_footer(pf, name, where)
    try:
        table = pf.read()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({exc})") from exc
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return _conform(frame, name, where)


def _selection_counts(pf: pq.ParquetFile, where: str) -> pl.DataFrame:
    """Decisions per (fold, regime, arm), streamed in record batches so memory does not grow with rows.

    A row counts as one decision, or as ``bars`` decisions when the file has that (integer) column: the
    driver may write selection run-length encoded, one row per run of consecutive bars with the same regime
    and arm. Each batch is reduced by Arrow's own group-by (on the dictionary-encoded strings as stored; 4x
    faster than converting every batch to polars first); only the small per-batch counts become polars
    frames.
    """
    columns = ["fold", "regime", "arm"]
    kinds = TABLE_SCHEMAS["selection.parquet"]
    names = pf.schema_arrow.names
    weighted = "bars" in names
    if weighted and not pa.types.is_integer(pf.schema_arrow.field("bars").type):
        raise DataError(
            f"{where}: column 'bars' has type {pf.schema_arrow.field('bars').type}, expected integer"
        )
    parts = [pl.DataFrame(schema={"fold": pl.Int64, "regime": pl.String, "arm": pl.String, "n": pl.Int64})]
    try:
        for batch in pf.iter_batches(
            batch_size=BATCH_ROWS, columns=[*columns, "bars"] if weighted else columns
        ):
            table = pa.Table.from_batches([batch])
            for name in columns:
                if pa.types.is_null(table.column(name).type):  # an all-null column as written by polars
                    i = table.schema.get_field_index(name)
                    table = table.set_column(i, name, table.column(name).cast(pa.string()))
            if weighted:  # a run without a length counts once
                i = table.schema.get_field_index("bars")
                table = table.set_column(i, "bars", pc.fill_null(table.column("bars").cast(pa.int64()), 1))
                aggregation = [("bars", "sum")]
            else:
                aggregation = [([], "count_all")]
            grouped = pl.from_arrow(table.group_by(columns).aggregate(aggregation))
            assert isinstance(grouped, pl.DataFrame)
            parts.append(
                grouped.select(
                    *[_cast_column(grouped, c, kinds[c], where).alias(c) for c in columns],
                    pl.col("bars_sum" if weighted else "count_all").cast(pl.Int64).alias("n"),
                )
            )
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({exc})") from exc
    counts = pl.concat(parts)
    return counts.group_by(columns).agg(pl.col("n").sum()).sort(columns, nulls_last=False)


def _check_fold_plan(plan: pl.DataFrame, where: str) -> pl.DataFrame:
    roles = set(plan["role"].unique().to_list())
    if not roles <= {"train", "test"}:
        bad = sorted(roles - {"train", "test"})
        raise DataError(f"{where}: column 'role' holds {bad}; only 'train' and 'test' are allowed")
    if (plan["end"] < plan["start"]).any():
        raise DataError(f"{where}: a segment ends before it starts")
    return plan.sort(["fold", "role", "segment", "start"], descending=[False, True, False, False])


def _read_summary(fs: pafs.FileSystem, base: str, uri: str) -> dict[str, Any]:
    path = f"{base}/summary.json"
    where = f"{uri.rstrip('/')}/summary.json"
    if not _exists(fs, path, where):
        raise DataError(f"{where}: required file is missing; re-run the walk-forward or check RUN_DIR")
    try:
        with fs.open_input_stream(path) as fh:
            raw = fh.read()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: cannot read ({exc})") from exc
    try:
        summary = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(summary).__name__}")
    absent = [k for k in _SUMMARY_REQUIRED if k not in summary]
    if absent:
        raise DataError(f"{where}: missing key(s) {', '.join(absent)}")
    for key, kind in _SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is not None and not isinstance(value, kind):
            raise DataError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    for i, entry in enumerate(summary["per_fold"]):
        if not isinstance(entry, dict) or "fold" not in entry:
            raise DataError(f"{where}: per_fold[{i}] must be an object with a 'fold' key")
    for i, entry in enumerate(summary.get("failed_folds") or []):
        if not isinstance(entry, dict) or "fold" not in entry:
            raise DataError(f"{where}: failed_folds[{i}] must be an object with a 'fold' key")
    for sym, metrics in (summary.get("per_symbol") or {}).items():
        if not isinstance(metrics, dict):
            raise DataError(f"{where}: per_symbol[{sym!r}] must be an object of metrics")
    per_path = (summary.get("paths") or {}).get("per_path") or []
    if not isinstance(per_path, list) or not all(isinstance(e, dict) and "path" in e for e in per_path):
        raise DataError(f"{where}: paths.per_path must be a list of objects with a 'path' key")
    return summary


def _path_equity(fs: pafs.FileSystem, base: str, uri: str) -> tuple[pl.DataFrame, int]:
    """CPCV path curves down-sampled for plotting (see the module docstring), and the rows on file."""
    from trader.report.figures import decimate_indices  # figures imports this module

    where = _where(uri, PATHS_EQUITY)
    pf = _parquet_file(fs, f"{base}/{PATHS_EQUITY}", where)
    _check_footer(pf, PATHS_EQUITY, where)
    n_rows = pf.metadata.num_rows
    columns = list(TABLE_SCHEMAS[PATHS_EQUITY])
    try:
        ids = pc.unique(pf.read(columns=["path"]).column("path")).to_pylist()
        paths = sorted(int(p) for p in ids if p is not None)
        budget = max(500, PATH_PLOT_POINTS // max(1, len(paths)))
        parts = [_empty(PATHS_EQUITY)]
        for p in paths:  # one path in memory at a time; the filter skips other paths' row groups
            table = pq.read_table(
                f"{base}/{PATHS_EQUITY}", filesystem=fs, columns=columns, filters=[("path", "=", p)]
            )
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            frame = _conform(frame, PATHS_EQUITY, where).sort("ts")
            keep = decimate_indices([frame["equity"].fill_null(float("nan")).to_numpy()], max_points=budget)
            parts.append(frame[keep].select(columns))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({exc})") from exc
    return pl.concat(parts), n_rows


def load_run(run_dir: str) -> RunData:
    """Read and validate a run directory (local path or ``s3://bucket/prefix``).

    Raises :class:`~trader.errors.DataError` naming the file when a required file is missing or malformed,
    or when an optional file that is present is malformed.

    Example::

        run = load_run("runs/wf-2024")
        run.equity.select("ts", "equity", "benchmark").tail(3)
    """
    fs, base, uri = open_run_dir(run_dir)
    summary = _read_summary(fs, base, uri)
    frames: dict[str, pl.DataFrame] = {}
    for name in ("equity.parquet", "fold_plan.parquet"):
        if not _exists(fs, f"{base}/{name}", _where(uri, name)):
            raise _missing_required(_where(uri, name))
        frames[name] = _read_table(fs, base, uri, name)
    plan = _check_fold_plan(frames["fold_plan.parquet"], _where(uri, "fold_plan.parquet"))
    row_counts = {name: frame.height for name, frame in frames.items()}
    missing: list[str] = []
    selection = pl.DataFrame(schema={"fold": pl.Int64, "regime": pl.String, "arm": pl.String, "n": pl.Int64})
    for name in OPTIONAL_FILES:
        where = _where(uri, name)
        if not _exists(fs, f"{base}/{name}", where):
            missing.append(name)
            frames[name] = _empty(name)
            continue
        if name in _FRAME_TABLES:
            frame = _read_table(fs, base, uri, name)
            frames[name] = frame.sort("ts" if "ts" in frame.columns else "fold", maintain_order=True)
            row_counts[name] = frame.height
            continue
        pf = _parquet_file(fs, f"{base}/{name}", where)
        _check_footer(pf, name, where)
        row_counts[name] = pf.metadata.num_rows
        if name == "selection.parquet":
            selection = _selection_counts(pf, where)
    path_equity = _empty(PATHS_EQUITY)
    if _exists(fs, f"{base}/{PATHS_EQUITY}", _where(uri, PATHS_EQUITY)):
        path_equity, row_counts[PATHS_EQUITY] = _path_equity(fs, base, uri)
    return RunData(
        uri=uri,
        summary=summary,
        fold_plan=plan,
        equity=frames["equity.parquet"].sort("ts"),
        params=frames["params.parquet"],
        risk_events=frames["risk_events.parquet"],
        selection_counts=selection,
        row_counts=row_counts,
        missing=tuple(missing),
        path_equity=path_equity,
    )
