"""The bar store: Parquet shards of bars in a local folder or under an S3 prefix.

Layout, one file per (interval, symbol, UTC year), rows sorted by ``ts``, zstd, the bar schema::

    <store>/bars/interval=<1m|5m|1h|1d>/symbol=<SYM>/year=<YYYY>/part-0.parquet

A store is named by its URI alone (a folder path, ``file://`` or ``s3://bucket/prefix``). S3 credentials
and endpoint always come from the environment or the instance role, never from code or arguments; every
client below finds them by itself (pyarrow 26 and boto3 both honour ``AWS_ENDPOINT_URL``). Pickling
a store carries only the URI, so a task can be handed a store and rebuild it on a worker.

Who does what: listing and Parquet footers go through pyarrow's filesystem layer (``FileSystem.from_uri``,
opened lazily); bars are decoded by ``polars.scan_parquet`` (it decodes the many small row groups ~2.5x
faster than ``pyarrow.dataset`` here, with the same ts-statistics pushdown) from a consistent snapshot of
each shard (see ``_snapshots``); S3 object reads, writes and deletes are single boto3 requests: one GET is
one object version, one PUT appears whole, and pyarrow 26's S3 writer would use a multipart upload even for
a 3 MB file, ignore the sha256 metadata that sync compares, and leave "folder/" markers behind on delete.

Example::

    store = BarStore("s3://research-bars/v1")
    store.write_bars("SPY", "1m", bars)
    july = store.read_bars(["SPY", "QQQ"], "1m", start="2025-07-01", end="2025-08-01", columns=["close"])
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trader.data.objectstore import (
    SHA256_METADATA_KEY,
    Location,
    parse_location,
    s3_client,
    s3_error,
    temp_path,
)
from trader.data.schema import (
    BAR_SCHEMA,
    POLARS_SCHEMA,
    REQUIRED_COLUMNS,
    check_interval,
    conform_bars,
)
from trader.errors import DataError, SchemaError, StorageAccessError, StoreError

SHARD_NAME: Final = "part-0.parquet"
BAR_COLUMNS: Final = tuple(BAR_SCHEMA.names)

# Row groups cover a fixed span of time rather than a row count, so a window read touches about as much data
# as it asks for whatever the bar density (regular vs extended hours). Minute bars: one week per group
# (~1,950 regular-hours 1m bars, ~390 5m bars), so a one-month read decodes at most ~5-6 weekly groups,
# little more than the month; fewer, larger groups would drag in neighbouring weeks, smaller ones would
# bloat the footer (per-group statistics for every column). Hourly bars are ~150 per month, so one group a
# month; a year of daily bars is ~252 rows, a single group. ``ts`` statistics (min/max per group) are what
# lets the reader skip groups outside the window.
ROW_GROUP_SPAN: Final = {"1m": "1w", "5m": "1w", "1h": "1mo", "1d": "1y"}
ZSTD_LEVEL: Final = 3

_SYMBOL_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_SHARD_RE: Final = re.compile(r"interval=([^/]+)/symbol=([^/]+)/year=(\d{4})/" + re.escape(SHARD_NAME) + "$")
_LIST_SCHEMA: Final = {
    "symbol": pl.String,
    "interval": pl.String,
    "first_ts": pl.Datetime("ns", "UTC"),
    "last_ts": pl.Datetime("ns", "UTC"),
    "rows": pl.Int64,
    "shards": pl.Int64,
    "bytes": pl.Int64,
}
_FOOTER_THREADS: Final = 16
_FETCH_THREADS: Final = 16

TimeLike = dt.datetime | dt.date | str | pd.Timestamp


@dataclass(frozen=True)
class WriteStats:
    """What one :meth:`BarStore.write_bars` did. Rows are bars; bytes are the sizes of the shards written."""

    symbol: str
    interval: str
    rows_written: int  # new bars written
    rows_replaced: int  # stored bars dropped because they fell inside the new bars' time range
    shards_written: int
    shards_deleted: int  # shards left empty by the replacement, removed
    bytes_written: int


@dataclass(frozen=True)
class _Shard:
    interval: str
    symbol: str
    year: int
    path: str
    size: int


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is a safe partition name (letters, digits, ``.``, ``-``, ``_``).

    Raises StoreError otherwise: path separators, ``=``, spaces and a leading ``.`` are refused because the
    name becomes a folder name.
    """
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise StoreError(
            f"bad symbol name {symbol!r}: use 1-64 letters, digits, '.', '-' or '_' "
            "(no '/', '=' or leading '.')"
        )
    return symbol


def _to_utc_ns(value: TimeLike | None, name: str) -> int | None:
    """Nanoseconds since the epoch of a datetime/date/str (naive means UTC; a date means 00:00 UTC)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise StoreError(
            f"{name}={value!r} is not a date or time; use e.g. '2025-07-01' or a datetime"
        ) from exc
    if ts is pd.NaT:
        raise StoreError(f"{name}={value!r} is not a date or time; use e.g. '2025-07-01' or a datetime")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def _year_start_ns(year: int) -> int:
    return int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def _year_overlaps(year: int, lo: int | None, hi: int | None) -> bool:
    """Whether shard ``year`` ([Jan 1, next Jan 1) UTC) overlaps the window [lo, hi)."""
    return (hi is None or _year_start_ns(year) < hi) and (lo is None or _year_start_ns(year + 1) > lo)


def _resolve_columns(columns: Sequence[str] | None) -> list[str]:
    """Requested bar columns in the order asked, without ``ts``/``symbol`` (always returned) or repeats."""
    if columns is None:
        return [c for c in BAR_COLUMNS if c != "ts"]
    if isinstance(columns, str):
        columns = [columns]
    unknown = [c for c in columns if c not in BAR_COLUMNS and c != "symbol"]
    if unknown:
        raise SchemaError(f"unknown bar column(s) {', '.join(unknown)}; use some of {', '.join(BAR_COLUMNS)}")
    return list(dict.fromkeys(c for c in columns if c not in ("ts", "symbol")))


def _empty_result(columns: list[str]) -> pl.DataFrame:
    schema = {"symbol": pl.String, "ts": POLARS_SCHEMA["ts"], **{c: POLARS_SCHEMA[c] for c in columns}}
    return pl.DataFrame(schema=schema)


def _check_new_bars(bars: pl.DataFrame, where: str) -> None:
    """Refuse bars the store must never hold: nulls in required columns, repeated timestamps."""
    nulls = [c for c in REQUIRED_COLUMNS if bars[c].null_count()]
    if nulls:
        raise DataError(f"{where}: null values in required column(s) {', '.join(nulls)}; repair or drop them")
    duplicated = bars.filter(pl.col("ts").is_duplicated())
    if duplicated.height:
        first = duplicated["ts"].min()
        raise DataError(
            f"{where}: {duplicated.height} bars share a timestamp (first {first}); deduplicate first"
        )


def _row_group_starts(ts: pl.Series, interval: str) -> list[int]:
    """Row offsets where a new row group starts: each group covers one span of ROW_GROUP_SPAN[interval]."""
    keys = ts.dt.truncate(ROW_GROUP_SPAN[interval]).to_physical().to_numpy()
    starts = [0]
    if len(keys) > 1:
        starts += (1 + (keys[1:] != keys[:-1]).nonzero()[0]).tolist()
    return starts


def _encode_shard(frame: pl.DataFrame, interval: str, sink: Any) -> None:
    """Write ``frame`` (bar schema, sorted by ts) to ``sink`` as one Parquet file, a row group per span."""
    table = frame.to_arrow().cast(BAR_SCHEMA)
    starts = [*_row_group_starts(frame["ts"], interval), frame.height]
    writer = pq.ParquetWriter(
        sink,
        BAR_SCHEMA,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        write_statistics=True,
        sorting_columns=[pq.SortingColumn(0)],
        # Timestamps step by a near-constant interval: delta encoding stores them in a few bits each.
        use_dictionary=[c for c in BAR_COLUMNS if c != "ts"],
        column_encoding={"ts": "DELTA_BINARY_PACKED"},
    )
    try:
        for begin, end in itertools.pairwise(starts):
            writer.write_table(table.slice(begin, end - begin), row_group_size=end - begin)
    finally:
        writer.close()


def _ts_literal(ns: int) -> pl.Expr:
    """A UTC nanosecond timestamp literal (a Python datetime would drop the nanoseconds)."""
    return pl.lit(ns, dtype=pl.Int64).cast(pl.Datetime("ns", "UTC"))


def _io_error(exc: BaseException, action: str, where: str) -> StoreError:
    """One line for a pyarrow / polars I/O error; refusals by object storage become StorageAccessError."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    denied = ("ACCESS_DENIED", "AccessDenied", "NO_SUCH_BUCKET", "NoSuchBucket", "NETWORK_CONNECTION")
    if any(tag in text for tag in denied):
        return StorageAccessError(f"{action} {where}: {text}; run preflight on the store URI to diagnose")
    return StoreError(f"{action} {where} failed: {text}")


class BarStore:
    """Bars in hive-partitioned Parquet shards under one URI (a local folder or ``s3://bucket/prefix``).

    ``uri`` is the normal form: an absolute path for local stores (relative paths are resolved at
    construction), ``s3://bucket/prefix`` otherwise. Constructing a store touches no storage.
    """

    uri: str

    def __init__(self, uri: str) -> None:
        self._location: Location = parse_location(uri)
        self.uri = self._location.uri
        self._fs: pafs.FileSystem | None = None
        self._s3: Any = None

    # -- identity and pickling ---------------------------------------------------------------------------
    def __reduce__(self) -> tuple[type[BarStore], tuple[str]]:
        # Only the URI crosses processes; the filesystem and its credentials are rebuilt where it lands.
        return (BarStore, (self.uri,))

    def __repr__(self) -> str:
        return f"BarStore({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BarStore) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(("BarStore", self.uri))

    # -- storage handles ---------------------------------------------------------------------------------
    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem of this store, created on first use."""
        if self._fs is None:
            if self._location.is_s3:
                try:
                    self._fs, _ = pafs.FileSystem.from_uri(self.uri)
                except (OSError, pa.ArrowException) as exc:
                    raise _io_error(exc, "open store", self.uri) from exc
            else:
                self._fs = pafs.LocalFileSystem()
        return self._fs

    def _s3_client(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client()
        return self._s3

    def _interval_dir(self, interval: str) -> str:
        return self._location.join("bars", f"interval={interval}")

    def _symbol_dir(self, symbol: str, interval: str) -> str:
        return self._location.join("bars", f"interval={interval}", f"symbol={symbol}")

    def _shard_path(self, symbol: str, interval: str, year: int) -> str:
        return self._location.join(
            "bars", f"interval={interval}", f"symbol={symbol}", f"year={year}", SHARD_NAME
        )

    def _key(self, path: str) -> str:
        return path[len(self._location.bucket) + 1 :]

    # -- listing -----------------------------------------------------------------------------------------
    def _list_shards(self, base: str) -> list[_Shard]:
        """Every shard under folder ``base``, sorted by interval, symbol, year (temp files never match)."""
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        try:
            infos = self.filesystem.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise _io_error(exc, "list", f"{base} in store {self.uri}") from exc
        shards = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            match = _SHARD_RE.search(info.path)
            if match:
                interval, symbol, year = match.groups()
                shards.append(_Shard(interval, symbol, int(year), info.path, int(info.size or 0)))
        return sorted(shards, key=lambda s: (s.interval, s.symbol, s.year))

    def _footer(self, shard: _Shard) -> tuple[int, int | None, int | None]:
        """Rows, first and last ts (ns) of a shard from its Parquet footer; ts is read only without stats."""
        try:
            with self.filesystem.open_input_file(shard.path) as fh:
                meta = pq.read_metadata(fh)
                rows = meta.num_rows
                if rows == 0:
                    return 0, None, None
                col = meta.schema.to_arrow_schema().get_field_index("ts")
                first = meta.row_group(0).column(col).statistics
                last = meta.row_group(meta.num_row_groups - 1).column(col).statistics
                if first is not None and last is not None and first.has_min_max and last.has_min_max:
                    return rows, int(first.min_raw), int(last.max_raw)
                ts = pq.read_table(fh, columns=["ts"])["ts"].cast(pa.int64())
                return rows, int(pc.min(ts).as_py()), int(pc.max(ts).as_py())
        except (OSError, pa.ArrowException) as exc:
            raise _io_error(exc, "read footer of", f"{shard.path} in store {self.uri}") from exc

    def list_bars(self) -> pl.DataFrame:
        """One row per (symbol, interval): first_ts, last_ts, rows (bars), shards, bytes (on storage).

        Figures come from Parquet footers and the listing, not from reading the bars.
        """
        shards = self._list_shards(self._location.join("bars"))
        if not shards:
            return pl.DataFrame(schema=_LIST_SCHEMA)
        with ThreadPoolExecutor(max_workers=min(_FOOTER_THREADS, len(shards))) as pool:
            footers = list(pool.map(self._footer, shards))
        rows = [
            {
                "symbol": s.symbol,
                "interval": s.interval,
                "first_ts": first,
                "last_ts": last,
                "rows": n,
                "bytes": s.size,
            }
            for s, (n, first, last) in zip(shards, footers, strict=True)
        ]
        per_shard = {"symbol": pl.String, "interval": pl.String, "first_ts": pl.Int64, "last_ts": pl.Int64}
        frame = pl.DataFrame(rows, schema={**per_shard, "rows": pl.Int64, "bytes": pl.Int64})
        return (
            frame.group_by("symbol", "interval")
            .agg(
                pl.col("first_ts").min(),
                pl.col("last_ts").max(),
                pl.col("rows").sum(),
                pl.len().cast(pl.Int64).alias("shards"),
                pl.col("bytes").sum(),
            )
            .with_columns(pl.col("first_ts", "last_ts").cast(pl.Datetime("ns", "UTC")))
            .select(list(_LIST_SCHEMA))
            .sort("symbol", "interval")
        )

    def symbols(self, interval: str) -> list[str]:
        """Sorted symbols that have at least one shard of ``interval``."""
        check_interval(interval)
        return sorted({s.symbol for s in self._list_shards(self._interval_dir(interval))})

    # -- reading -----------------------------------------------------------------------------------------
    def read_bars(
        self,
        symbols: Sequence[str] | None,
        interval: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Bars of ``symbols`` (None: every stored symbol) at ``interval`` with ``start <= ts < end`` (UTC).

        Returns ``symbol`` (String) first, then ``ts``, then ``columns`` (default: every bar column) in the
        order asked, sorted by symbol then ts. Only the shards of the asked symbols and years are opened, row
        groups outside the window are skipped by their ts statistics, and only the asked columns are decoded
        (locally only those pages are read; on S3 each touched year shard is fetched whole in one GET, a few
        MB, so that a concurrent rewrite cannot mix versions). Times may be datetimes (naive means UTC), dates
        (00:00 UTC) or ISO strings. Raises StoreError for a symbol with no bars at ``interval``; an empty
        window gives an empty frame with the same columns.

        Example::

            store.read_bars(["SPY"], "1d", start="2024-01-01", end="2025-01-01", columns=["close"])
        """
        check_interval(interval)
        wanted = _resolve_columns(columns)
        lo, hi = _to_utc_ns(start, "start"), _to_utc_ns(end, "end")
        shards = self._shards_to_read(symbols, interval)
        shards = [s for s in shards if _year_overlaps(s.year, lo, hi)]
        if not shards or (lo is not None and hi is not None and lo >= hi):
            return _empty_result(wanted)
        lower = None if lo is None else pl.col("ts") >= _ts_literal(lo)
        upper = None if hi is None else pl.col("ts") < _ts_literal(hi)
        with contextlib.ExitStack() as stack:
            snapshots = self._snapshots([s.path for s in shards], stack)
            scans = []
            for symbol, group in itertools.groupby(
                zip(shards, snapshots, strict=True), key=lambda p: p[0].symbol
            ):
                sources = [snapshot for _, snapshot in group if snapshot is not None]
                if not sources:
                    continue
                # The listing already pruned partitions (these symbols, these years); the symbol is added as
                # a literal rather than inferred from hive paths, which "key=value" folders above the store
                # root could confuse.
                scan = pl.scan_parquet(sources)
                for bound in (lower, upper):
                    if bound is not None:
                        scan = scan.filter(bound)  # pushed down: row groups are skipped by ts statistics
                scans.append(scan.select(pl.lit(symbol, dtype=pl.String).alias("symbol"), "ts", *wanted))
            if not scans:
                return _empty_result(wanted)
            try:
                frame = pl.concat(scans).collect()
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise _io_error(exc, f"read {interval} bars from", self.uri) from exc
        return _sorted_by_symbol_ts(frame)

    def _shards_to_read(self, symbols: Sequence[str] | None, interval: str) -> list[_Shard]:
        if symbols is None:
            return self._list_shards(self._interval_dir(interval))
        if isinstance(symbols, str):
            symbols = [symbols]
        shards: list[_Shard] = []
        for symbol in sorted(set(symbols)):
            found = self._list_shards(self._symbol_dir(check_symbol(symbol), interval))
            if not found:
                raise StoreError(
                    f"no {interval} bars for symbol {symbol!r} in store {self.uri}; "
                    f"BarStore.symbols({interval!r}) lists the stored ones"
                )
            shards.extend(found)
        return shards

    # -- writing -----------------------------------------------------------------------------------------
    def write_bars(self, symbol: str, interval: str, bars: pl.DataFrame) -> WriteStats:
        """Store ``bars`` of ``symbol``, replacing stored bars with ``bars.ts.min() <= ts <= bars.ts.max()``.

        Re-ingesting an overlapping range therefore replaces rows and never duplicates them; stored bars
        outside the range are kept. ``bars`` is cast to the bar schema (conform_bars); nulls in required
        columns or repeated timestamps raise DataError before anything is written. Each touched year shard
        is rewritten whole and appears atomically (temp file and rename locally, one PUT on S3): a reader sees
        the old shard or the new one, and a failure leaves the old shard and no temp file. A range spanning
        several years rewrites one shard at a time; rerunning the same write after a failure is safe.
        """
        check_symbol(symbol)
        check_interval(interval)
        where = f"bars of {symbol} {interval}"
        if "symbol" in bars.columns and bars.filter(pl.col("symbol") != symbol).height:
            others = bars.filter(pl.col("symbol") != symbol)["symbol"].unique().head(3).to_list()
            raise DataError(f"{where}: the frame also holds bars of {others}; write one symbol at a time")
        new = conform_bars(bars, where=where)
        if new.is_empty():
            return WriteStats(symbol, interval, 0, 0, 0, 0, 0)
        _check_new_bars(new, where)
        new = new.sort("ts")
        lo, hi = new["ts"].min(), new["ts"].max()
        assert isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime)
        years = new["ts"].dt.year()
        replaced = written = deleted = nbytes = 0
        for year in range(lo.year, hi.year + 1):
            path = self._shard_path(symbol, interval, year)
            old = self._read_shard(path)
            kept = old.filter((pl.col("ts") < lo) | (pl.col("ts") > hi)) if old is not None else None
            replaced += (old.height - kept.height) if old is not None and kept is not None else 0
            part = new.filter(years == year)
            merged = pl.concat([kept, part]) if kept is not None else part
            if merged.is_empty():
                if old is not None:
                    self._delete_shard(path)
                    deleted += 1
                continue
            if kept is not None and kept.height and part.height:
                merged = merged.sort("ts")
            nbytes += self._put_shard(path, merged, interval)
            written += 1
        return WriteStats(symbol, interval, new.height, replaced, written, deleted, nbytes)

    def _read_shard(self, path: str) -> pl.DataFrame | None:
        """The whole shard at ``path`` in the bar schema, or None if there is none."""
        with contextlib.ExitStack() as stack:
            (snapshot,) = self._snapshots([path], stack)
            if snapshot is None:
                return None
            try:
                frame = pl.read_parquet(snapshot)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise _io_error(exc, "read shard", f"{path} in store {self.uri}") from exc
        return conform_bars(frame, where=path)

    def _snapshots(self, paths: list[str], stack: contextlib.ExitStack) -> list[BinaryIO | bytes | None]:
        """A consistent view of each shard (None if it is gone), even while a writer replaces it.

        A reader that takes a shard's footer from one version and its pages from the next would decode
        garbage, and rename/PUT replace a shard at any moment. Locally an open handle pins the version it
        opened (rename never changes that inode) and polars reads only the pages it needs through it; on S3
        each shard comes whole in one GET, which is one version by construction.
        """
        if not self._location.is_s3:
            handles: list[BinaryIO | bytes | None] = []
            for path in paths:
                try:
                    handles.append(stack.enter_context(open(path, "rb")))  # noqa: SIM115 (closed by the stack)
                except FileNotFoundError:
                    handles.append(None)  # removed since it was listed: no bars there now
                except OSError as exc:
                    raise StoreError(f"read shard {path} failed: {exc}") from exc
            return handles
        if len(paths) == 1:
            return [self._get_object(paths[0])]
        with ThreadPoolExecutor(max_workers=min(_FETCH_THREADS, len(paths))) as pool:
            return list(pool.map(self._get_object, paths))

    def _get_object(self, path: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(path)
        try:
            response = self._s3_client().get_object(Bucket=self._location.bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise s3_error(exc, "read shard", f"s3://{self._location.bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise s3_error(exc, "read shard", f"s3://{self._location.bucket}/{key}") from exc

    def _put_shard(self, path: str, frame: pl.DataFrame, interval: str) -> int:
        """Write one shard atomically; returns its size in bytes."""
        if self._location.is_s3:
            return self._put_shard_s3(path, frame, interval)
        return self._put_shard_local(path, frame, interval)

    def _put_shard_local(self, path: str, frame: pl.DataFrame, interval: str) -> int:
        tmp = temp_path(path)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with pa.OSFile(tmp, "wb") as sink:
                _encode_shard(frame, interval, sink)
            # Flush to disk before the rename so a crash cannot leave an empty file under the final name.
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return os.path.getsize(path)
        except OSError as exc:
            raise StoreError(f"write shard {path} failed: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def _put_shard_s3(self, path: str, frame: pl.DataFrame, interval: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        # Encode fully in memory, then one PUT of the final key: S3 shows nothing until the PUT completes,
        # and a failure while encoding never reaches S3. The sha256 in metadata lets sync skip equal shards.
        sink = pa.BufferOutputStream()
        _encode_shard(frame, interval, sink)
        body = sink.getvalue().to_pybytes()
        key = self._key(path)
        try:
            self._s3_client().put_object(
                Bucket=self._location.bucket,
                Key=key,
                Body=body,
                ContentType="application/vnd.apache.parquet",
                Metadata={SHA256_METADATA_KEY: hashlib.sha256(body).hexdigest()},
            )
        except (BotoCoreError, ClientError) as exc:
            raise s3_error(exc, "write shard", f"s3://{self._location.bucket}/{key}") from exc
        return len(body)

    # -- deleting ----------------------------------------------------------------------------------------
    def _delete_shard(self, path: str) -> None:
        self._delete_paths([path])
        if not self._location.is_s3:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))

    def _delete_paths(self, paths: list[str]) -> None:
        if not paths:
            return
        if not self._location.is_s3:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            return
        from botocore.exceptions import BotoCoreError, ClientError

        # boto3 rather than pyarrow: pyarrow leaves "folder/" marker objects behind when a folder empties.
        client = self._s3_client()
        for begin in range(0, len(paths), 1000):
            batch = [{"Key": self._key(p)} for p in paths[begin : begin + 1000]]
            try:
                result = client.delete_objects(Bucket=self._location.bucket, Delete={"Objects": batch})
            except (BotoCoreError, ClientError) as exc:
                raise s3_error(exc, "delete shards in", self.uri) from exc
            if result.get("Errors"):
                first = result["Errors"][0]
                raise StorageAccessError(
                    f"delete s3://{self._location.bucket}/{first.get('Key')} failed: {first.get('Code')}; "
                    "grant s3:DeleteObject under the store prefix"
                )

    def delete_bars(self, symbol: str, interval: str) -> int:
        """Delete every stored bar of ``symbol`` at ``interval``; returns how many bars were deleted."""
        check_symbol(symbol)
        check_interval(interval)
        shards = self._list_shards(self._symbol_dir(symbol, interval))
        if not shards:
            return 0
        rows = sum(self._footer(s)[0] for s in shards)
        self._delete_paths([s.path for s in shards])
        if not self._location.is_s3:
            shutil.rmtree(self._symbol_dir(symbol, interval), ignore_errors=True)
        return rows


def _sorted_by_symbol_ts(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` sorted by (symbol, ts); shards are listed in that order, so usually no sort is needed."""
    if frame.height > 1:
        symbol, ts = frame["symbol"], frame["ts"]
        same_symbol = symbol.head(-1) == symbol.tail(-1)
        in_order = (symbol.head(-1) < symbol.tail(-1)) | (same_symbol & (ts.head(-1) < ts.tail(-1)))
        if not in_order.all():
            frame = frame.sort("symbol", "ts")
    return frame
