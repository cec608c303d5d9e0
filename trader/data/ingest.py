"""CSV ingest: vendor bar files parsed into one canonical raw frame, ready for validation.

Layouts (``fmt``)
-----------------
``yahoo``
    ``Date,Open,High,Low,Close[,Adj Close],Volume`` in any column order and any row order, ISO dates.
``quandl``
    Quandl WIKI (``Date,...,Ex-Dividend,Split Ratio,Adj. Open,...``) or the zipline ``QUANDL_ARCHIVE`` table
    (``ticker,date,...,split_ratio,...``) where ``symbol`` picks the ticker.
``google``
    ``Date,Open,High,Low,Close,Volume``, ``d-Mon-yy`` dates (two-digit years 70..99 are 19xx, 00..69 20xx).
``ninjatrader``
    No header, ``YYYYMMDD HHMMSS;open;high;low;close;volume`` (``YYYYMMDD;...`` for daily exports).
    Timestamps default to ``source_tz="UTC"`` and ``bar_label="end"``; both can be overridden.
``generic``
    Any CSV with a header. Columns are matched case-insensitively, ignoring punctuation (``<DATE>``,
    ``Adj. Close`` and ``split_ratio`` all work): ts from timestamp/datetime/date/time (``date`` and ``time``
    together are joined), open, high, low, close, volume, and optionally vwap, trades, split, ticker/symbol.
    ``column_map`` (our name -> the file's column) overrides the matching, e.g. ``{"ts": "Day"}``; it applies
    to every layout with a header. Unmatched columns (an unnamed index, dividends, Adj Close) are ignored.
``auto``
    Sniffs the first lines of every file and picks one of the above; files that sniff differently, or a header
    with two candidate columns for one field, are an error.

``.gz`` files and ``.zip`` archives are read directly (every CSV member of an archive, or only the member
whose name is ``symbol``). Several files are concatenated in the order given (globs and folders sorted).

What comes out
--------------
One row per source row, in file order: rows are never sorted, deduplicated or dropped here (blank lines
excepted), because validation reports order and duplicates. Daily bars (``interval="1d"``) get
``ts = session date 00:00 UTC`` whatever ``source_tz`` says. Intraday timestamps written with a UTC offset are
converted to UTC; naive ones stay naive and ``RawBars.source_tz`` names their zone, or is None when unknown
(the validator then refuses them: no zone is ever assumed for generic intraday files). Bar-end labels are
moved to bar-start by subtracting one interval. A price or volume token that is not a number becomes null and
is reported in ``notes``.

Split adjustment rule
---------------------
Split events (ratio = new shares per old share; 0.05 is a 1:20 reverse split) come from the file's split
column (WIKI ``Split Ratio``, archive ``split_ratio``, zipline ``split``; ratios 1 and 0 mean no event).
Whether the prices already include a split is decided from the prices, never assumed from the layout: for
each event take ``x = last close before the ex-date / first open on or after it``. A raw split shows ``x``
near the ratio, an adjusted file shows ``x`` near 1. An event votes *raw* when
``|ln x - ln ratio| < |ln x| / 3`` and *adjusted* when ``|ln x| < |ln x - ln ratio| / 3``. Events within 20%
of 1 (``|ln ratio| < ln 1.2``, small enough for a normal overnight move to hide) and events without a bar on
both sides do not vote; events at or before the first bar change nothing and are not judged. All voting
events must agree: disagreement means a partly adjusted file, an error under ``adjust="split"``.

Files without a split column are checked for split-sized discontinuities instead. With an ``Adj Close``
column: a day-to-day step of more than 30% in ``Adj Close / Close`` (dividends move it by a few percent, a
split by its ratio). Without one: an overnight gap ``previous close / open`` of at least 45% that is within
5% of a common split ratio (3:2, 2, 3, 4, 5, 7, 8, 10 and their reverses), or any gap of 5x or more. Any such
jump means the prices look raw; none means they are treated as split-adjusted (as is a series that never
split, whose raw and adjusted prices are the same).

``adjust="raw"`` returns prices as in the file and sets ``adjusted`` by the rule above. ``adjust="split"``
divides prices before each unapplied event by its ratio and multiplies volume by it; an already adjusted file
is returned unchanged (never adjusted twice). It raises IngestError when prices look raw but there are no
split ratios to apply, or when no event can be judged.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from trader.data.schema import check_interval, interval_ns
from trader.errors import IngestError

if TYPE_CHECKING:
    from trader.calendar import TradingCalendar
    from trader.data.sanity import SanityReport
    from trader.data.store import BarStore, WriteStats

FORMATS: Final = ("auto", "yahoo", "quandl", "google", "ninjatrader", "generic")
DATA_SUFFIXES: Final = (".csv", ".txt", ".csv.gz", ".txt.gz", ".zip")
COLUMN_MAP_KEYS: Final = ("ts", "open", "high", "low", "close", "volume", "vwap", "trades", "split", "symbol")

_PRICE_FIELDS: Final = ("open", "high", "low", "close")
_REQUIRED_FIELDS: Final = ("ts", "open", "high", "low", "close", "volume")
_FLOAT_FIELDS: Final = ("open", "high", "low", "close", "volume", "vwap", "split", "adj_close")

# Normalised header names (lower case, punctuation -> single space) accepted for each field.
_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "vwap": ("vwap",),
    "trades": ("trades", "trade count", "transactions"),
    "split": ("split", "splits", "split ratio", "stock splits"),
    "symbol": ("ticker", "symbol"),
    "adj_close": ("adj close", "adjusted close", "adj close price"),
}
_TS_ALIASES: Final = ("timestamp", "datetime", "date time", "ts", "date", "time")
_YAHOO_HEADER: Final = frozenset({"date", "open", "high", "low", "close", "adj close", "volume"})
_QUANDL_MARKERS: Final = frozenset({"split ratio", "ex dividend"})

_DATE_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "yahoo": ("%Y-%m-%d",),
    "quandl": ("%Y-%m-%d",),
    "google": ("%d-%b-%y", "%d-%b-%Y"),
    "ninjatrader": ("%Y%m%d",),
    "generic": (
        "%Y-%m-%d",
        "%Y%m%d",
        "%m/%d/%Y",
        "%d/%m/%Y",
        "%Y/%m/%d",
        "%d-%b-%Y",
        "%d-%b-%y",
        "%d.%m.%Y",
        "%m/%d/%y",
    ),
}
_ISO_DATETIME_FORMATS: Final = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
)
_DATETIME_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "yahoo": _ISO_DATETIME_FORMATS,
    "quandl": _ISO_DATETIME_FORMATS,
    "google": _ISO_DATETIME_FORMATS,
    "ninjatrader": ("%Y%m%d %H%M%S",),
    "generic": (
        *_ISO_DATETIME_FORMATS,
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y %H:%M:%S",
        "%d/%m/%Y %H:%M",
        "%d/%m/%Y %H:%M:%S",
        "%Y%m%d %H%M%S",
        "%Y%m%d %H:%M:%S",
        "%Y%m%d %H:%M",
        "%Y.%m.%d %H:%M:%S",
        "%Y.%m.%d %H:%M",
        "%d.%m.%Y %H:%M:%S%.f",
    ),
}
_YEAR_RANGE: Final = (1800, 2200)  # a parse outside this is a misread format (e.g. "05" read as year 5)
_SNIFF_BYTES: Final = 64 * 1024

# Split detection thresholds (see the module docstring).
_MIN_VISIBLE_SPLIT: Final = math.log(1.2)
_VOTE_MARGIN: Final = 3.0
_ADJ_STEP: Final = math.log(1.3)
_GAP_MIN: Final = math.log(1.45)
_GAP_TOLERANCE: Final = math.log(1.05)
_GAP_ANY: Final = math.log(5.0)  # an overnight move this large is a split (often an odd reverse ratio)
_COMMON_SPLITS: Final = (
    1.5,
    2.0,
    3.0,
    4.0,
    5.0,
    7.0,
    8.0,
    10.0,
    1 / 2,
    1 / 3,
    1 / 4,
    1 / 5,
    1 / 8,
    1 / 10,
    1 / 20,
)


@dataclass(frozen=True)
class RawBars:
    """Bars as parsed from one or more source files, before validation.

    ``frame`` has columns ts, open, high, low, close, volume (+ vwap, trades when the file has them), float64
    prices and volume (shares), one row per source row in file order. ``ts`` is ``Datetime("ns", "UTC")`` when
    the zone is resolved (daily session labels, or offsets written in the file) and a naive
    ``Datetime("ns")`` in ``source_tz`` otherwise. ``splits`` lists the split events the file states
    (ts, ratio = new shares per old share), sorted by ts; ``adjusted`` is True when the prices in ``frame``
    are split-adjusted; ``notes`` says what was done, one sentence each.
    """

    frame: pl.DataFrame
    source_tz: str | None
    fmt: str
    files: tuple[str, ...]
    adjusted: bool
    splits: pl.DataFrame
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Blob:
    """The bytes of one CSV: a file, a decompressed .gz, or one member of a zip (``archive.zip::member``)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class _Parsed:
    """One blob parsed: canonical columns (+ split, adj_close when present) and what was noticed."""

    frame: pl.DataFrame
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Options:
    fmt: str
    interval: str
    column_map: Mapping[str, str]
    symbol: str | None

    @property
    def daily(self) -> bool:
        return self.interval == "1d"


# --------------------------------------------------------------------------------------------------- sources


def expand_sources(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Turn files, globs and folders into the list of files to read, in reading order.

    A folder contributes its .csv/.txt/.csv.gz/.txt.gz/.zip files, a glob its matching files, each sorted by
    name; several sources keep the order given, and a file named twice is read once. Example::

        expand_sources("../shared/data/pyalgotrade/samples/data/SPY-*-yahoofinance.csv")

    Raises IngestError when a source does not exist or matches no file.
    """
    items: Sequence[str | Path] = [source] if isinstance(source, str | Path) else source
    if not items:
        raise IngestError("no source given; pass a CSV file, a glob such as 'data/*.csv', or a folder")
    out: list[Path] = []
    for item in items:
        for path in _expand_one(item):
            if path not in out:
                out.append(path)
    return out


def _expand_one(item: str | Path) -> list[Path]:
    text = str(Path(item).expanduser()) if isinstance(item, Path) else str(item)
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(str(Path(text).expanduser()), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise IngestError(f"no files match {text!r}; check the pattern and the working directory")
        return files
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES))
        if not files:
            raise IngestError(
                f"folder {path} has no {'/'.join(DATA_SUFFIXES)} files; point at the data files"
            )
        return files
    if path.is_file():
        return [path]
    raise IngestError(f"{path}: no such file or folder; check the path")


def _load_blobs(path: Path, symbol: str | None) -> list[_Blob]:
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            return _zip_blobs(path, symbol)
        data = path.read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise IngestError(
            f"{path}: cannot read it ({exc}); check the file is complete and not corrupt"
        ) from exc
    return [_Blob(str(path), data)]


def _zip_blobs(path: Path, symbol: str | None) -> list[_Blob]:
    with zipfile.ZipFile(path) as archive:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and not info.filename.startswith("__MACOSX/")
            and info.filename.lower().endswith((".csv", ".txt"))
        ]
        if not members:
            raise IngestError(f"{path}: the archive has no .csv/.txt member; check the file")
        if symbol is not None and len(members) > 1:
            # Several members: pick the one named after the symbol (csvdir-style archives).
            wanted = _norm_symbol(symbol)
            members = [m for m in members if _norm_symbol(Path(m.filename).name.split(".")[0]) == wanted]
            if not members:
                names = ", ".join(info.filename for info in archive.infolist() if not info.is_dir())
                raise IngestError(f"{path}: no member named {symbol!r} in the archive; it holds {names}")
        return [_Blob(f"{path}::{m.filename}", archive.read(m)) for m in members]


# --------------------------------------------------------------------------------------------------- sniffing


def _head_rows(blob: _Blob, count: int) -> list[list[str]]:
    """The first ``count`` non-blank lines of a blob, split on commas (NinjaTrader lines come back whole)."""
    text = blob.data[:_SNIFF_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [line for line in text.splitlines() if line.strip()][:count]
    return [next(csv.reader([line])) for line in lines]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def _sniff(blob: _Blob, column_map: Mapping[str, str]) -> str:
    """Pick the layout of one blob from its first two lines; raise IngestError when nothing fits."""
    rows = _head_rows(blob, 2)
    if not rows:
        raise IngestError(f"{blob.name}: the file is empty; expected a CSV with bars")
    first_line = ",".join(rows[0])
    if re.match(r"^\d{8}(?: \d{6})?;", first_line):
        return "ninjatrader"
    header = [_normalise(h) for h in rows[0]]
    names = set(header)
    if names >= _QUANDL_MARKERS:
        return "quandl"
    if (
        not column_map
        and names <= _YAHOO_HEADER
        and {"date", "open", "high", "low", "close", "volume"} <= names
    ):
        token = rows[1][header.index("date")].strip() if len(rows) > 1 and len(rows[1]) == len(header) else ""
        if re.fullmatch(r"\d{1,2}-[A-Za-z]{3}-\d{2}(?:\d{2})?", token):
            return "google"
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", token):
            return "yahoo"
    roles = _match_roles(blob.name, rows[0], column_map, required=())
    if all(field in roles for field in ("ts", *_PRICE_FIELDS)):
        return "generic"
    raise IngestError(
        f"{blob.name}: does not look like a known bar layout (first line {first_line[:80]!r}); "
        f"pass fmt= one of {', '.join(FORMATS[1:])} and, for generic files, column_map"
    )


# --------------------------------------------------------------------------------------------------- columns


def _match_roles(
    where: str, header: Sequence[str], column_map: Mapping[str, str], *, required: Sequence[str]
) -> dict[str, list[int]]:
    """Map our field names to header positions (ts may be two: date and time). Raise on ambiguity/missing."""
    norm = [_normalise(h) for h in header]
    roles: dict[str, list[int]] = {}
    for field, column in column_map.items():
        roles[field] = [_find_mapped(where, header, norm, field, column)]
    taken = {i for positions in roles.values() for i in positions}
    if "ts" not in roles:
        ts = _match_ts(where, header, norm, taken)
        if ts:
            roles["ts"] = ts
    for field, aliases in _ALIASES.items():
        if field in roles:
            continue
        hits = [i for i, n in enumerate(norm) if n in aliases and i not in taken]
        if len(hits) > 1:
            raise IngestError(
                f"{where}: columns {', '.join(repr(header[i]) for i in hits)} could all be {field}; "
                f"pick one with column_map={{{field!r}: ...}}"
            )
        if hits:
            roles[field] = hits
    missing = [f for f in required if f not in roles]
    if missing:
        raise IngestError(
            f"{where}: no {', '.join(missing)} column (found {', '.join(repr(h) for h in header)}); "
            "name it with column_map, e.g. column_map={'close': 'Last'}"
        )
    return roles


def _find_mapped(where: str, header: Sequence[str], norm: Sequence[str], field: str, column: str) -> int:
    if column in header:
        return list(header).index(column)
    hits = [i for i, n in enumerate(norm) if n == _normalise(column)]
    if len(hits) != 1:
        raise IngestError(
            f"{where}: column_map[{field!r}] = {column!r} is not a column of the file "
            f"(found {', '.join(repr(h) for h in header)})"
        )
    return hits[0]


def _match_ts(where: str, header: Sequence[str], norm: Sequence[str], taken: set[int]) -> list[int]:
    hits = [i for i, n in enumerate(norm) if n in _TS_ALIASES and i not in taken]
    if len(hits) <= 1:
        return hits
    if sorted(norm[i] for i in hits) == ["date", "time"]:
        return sorted(hits, key=lambda i: norm[i] != "date")  # date first, then time
    raise IngestError(
        f"{where}: columns {', '.join(repr(header[i]) for i in hits)} could all be the timestamp; "
        "pick one with column_map={'ts': ...}"
    )


# --------------------------------------------------------------------------------------------------- parsing


def _read_table(blob: _Blob, layout: str) -> tuple[pl.DataFrame, list[str], int]:
    """All fields as strings, a ``__line`` column (1-based file line), the header, and the first data line."""
    data = blob.data.removeprefix(b"\xef\xbb\xbf")
    if not data.strip():
        raise IngestError(f"{blob.name}: the file is empty; expected a CSV with bars")
    lead = data[: len(data) - len(data.lstrip(b"\r\n"))].count(b"\n")  # polars skips leading blank lines
    has_header = layout != "ninjatrader"
    try:
        frame = pl.read_csv(
            io.BytesIO(data),
            has_header=has_header,
            separator=";" if layout == "ninjatrader" else ",",
            infer_schema=False,
            encoding="utf8-lossy",
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(f"{blob.name}: not a readable {layout} CSV ({detail}); check the layout") from exc
    first_line = lead + (2 if has_header else 1)
    header = _head_rows(blob, 1)[0] if has_header else [f"column_{i + 1}" for i in range(frame.width)]
    if len(header) != frame.width:  # a quoted header the simple splitter misread: trust polars
        header = frame.columns
    frame = frame.with_row_index("__line", offset=first_line)
    return frame, header, first_line


def _parse_blob(blob: _Blob, layout: str, opts: _Options) -> _Parsed:
    frame, header, first_line = _read_table(blob, layout)
    columns = frame.columns[1:]  # after __line
    blank = pl.all_horizontal(pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in columns)
    frame = frame.filter(~blank)
    if frame.is_empty():
        raise IngestError(f"{blob.name}: no data rows after line {first_line - 1}; expected bars")
    notes: list[str] = []
    if layout == "ninjatrader":
        if opts.column_map:
            raise IngestError(f"{blob.name}: column_map needs a header, and ninjatrader files have none")
        if frame.width - 1 != 6:
            raise IngestError(
                f"{blob.name}: ninjatrader lines need 6 fields 'YYYYMMDD HHMMSS;open;high;low;close;volume', "
                f"line {first_line} has {frame.width - 1}"
            )
        roles = {name: [i] for i, name in enumerate(_REQUIRED_FIELDS)}
    else:
        roles = _match_roles(blob.name, header, opts.column_map, required=_layout_required(layout))
    source = {field: [columns[i] for i in positions] for field, positions in roles.items()}
    frame = _select_symbol(blob.name, frame, source.get("symbol", [None])[0], opts.symbol, layout)
    ts, ts_note = _parse_ts(blob.name, frame, source["ts"], layout, opts.daily)
    if ts_note:
        notes.append(ts_note)
    values, value_notes = _parse_numbers(blob.name, frame, source, ts, opts.daily)
    notes.extend(value_notes)
    return _Parsed(values.insert_column(0, ts), tuple(notes))


def _layout_required(layout: str) -> tuple[str, ...]:
    return (*_REQUIRED_FIELDS, "split") if layout == "quandl" else _REQUIRED_FIELDS


def _norm_symbol(symbol: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", symbol.strip().upper())


def _select_symbol(
    where: str, frame: pl.DataFrame, column: str | None, symbol: str | None, layout: str
) -> pl.DataFrame:
    """Keep the rows of ``symbol`` when the file has a ticker column (BRK.A, BRK-A and BRK_A are the same)."""
    if column is None:
        return frame
    tickers = frame.get_column(column).str.strip_chars()
    found = tickers.unique(maintain_order=True).drop_nulls().to_list()
    if symbol is None:
        if len(found) == 1:
            return frame
        raise IngestError(
            f"{where}: the {layout} table holds several tickers ({', '.join(sorted(found))}); "
            "pick one with symbol="
        )
    keep = tickers.str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "_") == _norm_symbol(symbol)
    if not keep.any():
        raise IngestError(
            f"{where}: ticker {symbol!r} is not in the file; it holds {', '.join(sorted(found))}"
        )
    return frame.filter(keep)


def _parse_ts(
    where: str, frame: pl.DataFrame, columns: list[str], layout: str, daily: bool
) -> tuple[pl.Series, str | None]:
    """Timestamps: session dates (UTC midnight) for daily bars, naive or UTC datetimes for intraday bars."""
    text = frame.select(
        pl.concat_str([pl.col(c).str.strip_chars() for c in columns], separator=" ")
    ).to_series()
    if daily:
        # Only the date part matters for a session label; ISO "T" separators are split like spaces.
        text = text.str.replace(r"^(\d{4}-\d{2}-\d{2})T", "${1} ").str.extract(r"^(\S+)", 1)
        candidates = _DATE_FORMATS[layout]
    else:
        candidates = _DATETIME_FORMATS[layout]
    fmt, parsed = _choose_format(where, frame, text, candidates, daily)
    if daily:
        parsed = parsed.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    note = None
    if "%m/%d" in fmt:
        twin = fmt.replace("%m/%d", "%d/%m")
        if _parse_with(text, twin, daily).null_count() == text.null_count():
            note = f"{where}: dates such as {text[0]!r} read month-first ({fmt}); day-first would also parse"
    return parsed.rename("ts"), note


def _parse_with(text: pl.Series, fmt: str, daily: bool) -> pl.Series:
    try:
        if daily:
            return text.str.to_date(fmt, strict=False)
        return text.str.to_datetime(fmt, strict=False, time_unit="ns")
    except pl.exceptions.PolarsError:
        return pl.Series(text.name, [None] * len(text), dtype=pl.Date if daily else pl.Datetime("ns"))


def _sane(parsed: pl.Series) -> pl.Series:
    year = parsed.dt.year()
    return parsed.is_not_null() & (year >= _YEAR_RANGE[0]) & (year <= _YEAR_RANGE[1])


def _choose_format(
    where: str, frame: pl.DataFrame, text: pl.Series, candidates: Sequence[str], daily: bool
) -> tuple[str, pl.Series]:
    """The first format that reads every timestamp; a sample screens candidates so big files stay fast."""
    sample = text.head(200)
    for fmt in candidates:
        if not _sane(_parse_with(sample, fmt, daily)).all():
            continue
        parsed = _parse_with(text, fmt, daily)
        if _sane(parsed).all():
            return fmt, parsed
    # Nothing reads every row: point at the first row the most successful format cannot read.
    scored = [(int(ok.sum()), fmt, ok) for fmt in candidates for ok in [_sane(_parse_with(text, fmt, daily))]]
    count, fmt, ok = max(scored, key=lambda item: item[0])
    bad_index = int(ok.not_().arg_max() or 0)
    token = text[bad_index]
    shown = "an empty value" if token is None or not token.strip() else repr(token)
    tried = fmt if count else ", ".join(candidates)
    kind = "date" if daily else "date and time"
    raise IngestError(
        f"{where}: line {frame['__line'][bad_index]}: cannot read {shown} as a {kind} (expected {tried}); "
        "fix the row or pass the right fmt/interval"
    )


def _parse_numbers(
    where: str, frame: pl.DataFrame, source: Mapping[str, list[str]], ts: pl.Series, daily: bool
) -> tuple[pl.DataFrame, list[str]]:
    """Prices, volume and extras as numbers; tokens that are not numbers become null and are reported."""
    fields = [f for f in (*_FLOAT_FIELDS, "trades") if f in source]
    values = frame.select(
        pl.col(source[f][0]).cast(pl.Float64, strict=False).fill_nan(None).alias(f) for f in fields
    )
    columns: list[pl.Series] = []
    notes: list[str] = []
    for field in fields:
        value, bad = _repair_tokens(frame.get_column(source[field][0]), values.get_column(field))
        if field == "trades":  # a count: a fractional number of trades is not a number we can use
            fractional = (value.is_not_null() & (value != value.round(0))).arg_true()
            bad = pl.concat([bad, fractional]).sort()
            value = value.scatter(fractional, None).cast(pl.Int64)
        if len(bad):
            notes.append(_bad_token_note(where, field, frame.get_column(source[field][0]), bad, ts, daily))
        columns.append(value.alias(field))
    return pl.DataFrame(columns), notes


def _repair_tokens(raw: pl.Series, value: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Second look at the few tokens a plain cast rejected: padding and thousands separators ("1,234,500")
    are fixed, empty fields stay null (missing), the rest is non-numeric. Returns the values and the row
    indices of non-numeric tokens. Working only on the rejects keeps large files fast."""
    rejected = (value.is_null() & raw.is_not_null()).arg_true()
    if rejected.is_empty():
        return value, rejected
    tokens = raw.gather(rejected).str.strip_chars()
    grouped = tokens.str.contains(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")
    cleaned = pl.select(
        pl.when(grouped).then(tokens.str.replace_all(",", "", literal=True)).otherwise(tokens)
    ).to_series()
    repaired = cleaned.cast(pl.Float64, strict=False).fill_nan(None)
    value = value.scatter(rejected, repaired)
    bad = rejected.filter(repaired.is_null() & (tokens != ""))
    return value, bad


def _bad_token_note(
    where: str, field: str, raw: pl.Series, bad: pl.Series, ts: pl.Series, daily: bool
) -> str:
    shown = ", ".join(f"{_fmt_ts(ts[i], daily)} ({raw[i]!r})" for i in bad.head(3).to_list())
    more = " ..." if len(bad) > 3 else ""
    return f"{where}: {len(bad)} non-numeric {field} token(s) set to null: {shown}{more}"


def _fmt_ts(value: object, daily: bool) -> str:
    if value is None:
        return "?"
    return value.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------- assembly


def read_source(
    source: str | Path | Sequence[str | Path],
    *,
    fmt: str = "auto",
    interval: str = "1d",
    source_tz: str | None = None,
    adjust: Literal["raw", "split"] = "raw",
    bar_label: Literal["start", "end"] | None = None,
    column_map: Mapping[str, str] | None = None,
    symbol: str | None = None,
) -> RawBars:
    """Parse bar files into one raw frame, in file order, optionally split-adjusted.

    ``source`` is a file, a glob, a folder, or a sequence of them (see ``expand_sources``). ``interval`` is a
    bar interval ("1m", "5m", "1h", "1d"); daily bars are labelled with the session date at 00:00 UTC.
    ``source_tz`` is the IANA zone of naive intraday timestamps (default "UTC" for ninjatrader, else unknown).
    ``bar_label`` says whether intraday timestamps mark the bar start or end (default "end" for ninjatrader,
    else "start"); end labels are moved back by one interval. ``adjust`` is "raw" (prices as in the file) or
    "split" (split-adjusted; see the module docstring for how already adjusted files are recognised).
    ``column_map`` maps our field names to the file's columns; ``symbol`` picks a ticker from a multi-ticker
    table or zip. Example::

        bars = read_source("data/WIKI-ORCL-2000-quandl.csv", adjust="split")
        bars.frame.head()

    Raises IngestError naming the file (and line) for anything that cannot be parsed as asked.
    """
    opts = _check_options(fmt, interval, source_tz, adjust, bar_label, column_map, symbol)
    paths = expand_sources(source)
    blobs = [blob for path in paths for blob in _load_blobs(path, symbol)]
    layout = _resolve_layout(blobs, opts)
    parsed = [_parse_blob(blob, layout, opts) for blob in blobs]
    frame = _concat([p.frame for p in parsed], [b.name for b in blobs])
    notes = [note for p in parsed for note in p.notes]
    if len(blobs) > 1:
        notes.append(f"concatenated {len(blobs)} files in the order given ({frame.height} rows)")
    frame, zone, ts_notes = _settle_time(frame, layout, opts, source_tz, bar_label)
    notes.extend(ts_notes)
    where = blobs[0].name if len(blobs) == 1 else f"{blobs[0].name} (+{len(blobs) - 1} more)"
    frame, splits, adjusted, split_notes = _apply_splits(where, frame, adjust, opts.daily)
    notes.extend(split_notes)
    keep = [c for c in (*_REQUIRED_FIELDS, "vwap", "trades") if c in frame.columns]
    return RawBars(
        frame=frame.select(keep),
        source_tz=zone,
        fmt=layout,
        files=tuple(b.name for b in blobs),
        adjusted=adjusted,
        splits=splits,
        notes=tuple(notes),
    )


def _check_options(
    fmt: str,
    interval: str,
    source_tz: str | None,
    adjust: str,
    bar_label: str | None,
    column_map: Mapping[str, str] | None,
    symbol: str | None,
) -> _Options:
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    check_interval(interval)
    if adjust not in ("raw", "split"):
        raise IngestError(f"unknown adjust {adjust!r}; use 'raw' or 'split'")
    if bar_label not in (None, "start", "end"):
        raise IngestError(f"unknown bar_label {bar_label!r}; use 'start' or 'end'")
    if source_tz is not None:
        try:
            ZoneInfo(source_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise IngestError(
                f"unknown time zone {source_tz!r}; use an IANA name such as 'America/New_York'"
            ) from exc
    mapping = dict(column_map or {})
    unknown = sorted(set(mapping) - set(COLUMN_MAP_KEYS))
    if unknown:
        raise IngestError(
            f"column_map has unknown key(s) {', '.join(unknown)}; use {', '.join(COLUMN_MAP_KEYS)}"
        )
    return _Options(fmt=fmt, interval=interval, column_map=mapping, symbol=symbol)


def _resolve_layout(blobs: Sequence[_Blob], opts: _Options) -> str:
    if opts.fmt != "auto":
        return opts.fmt
    sniffed = {blob.name: _sniff(blob, opts.column_map) for blob in blobs}
    layouts = set(sniffed.values())
    if len(layouts) > 1:
        listing = ", ".join(f"{name} looks {layout}" for name, layout in sniffed.items())
        raise IngestError(f"files sniff as different layouts ({listing}); read them separately or pass fmt=")
    return layouts.pop()


def _concat(frames: Sequence[pl.DataFrame], names: Sequence[str]) -> pl.DataFrame:
    dtypes = {str(f.schema["ts"]) for f in frames}
    if len(dtypes) > 1:
        raise IngestError(
            f"{', '.join(names)}: some files carry UTC offsets in their timestamps and some do not; "
            "read them separately"
        )
    return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]


def _settle_time(
    frame: pl.DataFrame, layout: str, opts: _Options, source_tz: str | None, bar_label: str | None
) -> tuple[pl.DataFrame, str | None, list[str]]:
    """Apply the bar-label and zone rules; return the frame, RawBars.source_tz and notes."""
    notes: list[str] = []
    if opts.daily:
        if source_tz is not None:
            notes.append(f"source_tz {source_tz!r} ignored: daily bars are labelled with the session date")
        return frame, None, notes
    label = bar_label or ("end" if layout == "ninjatrader" else "start")
    if label == "end":
        frame = frame.with_columns(pl.col("ts") - pl.duration(nanoseconds=interval_ns(opts.interval)))
        notes.append(f"converted bar-end labels to bar-start (minus {opts.interval})")
    if frame.schema["ts"].time_zone is not None:  # type: ignore[union-attr]
        if source_tz is not None:
            notes.append(f"source_tz {source_tz!r} ignored: the timestamps carry UTC offsets")
        return frame, None, notes
    zone = source_tz or ("UTC" if layout == "ninjatrader" else None)
    if zone is None:
        notes.append("intraday timestamps have no time zone and none was given (pass source_tz)")
    return frame, zone, notes


# --------------------------------------------------------------------------------------------------- splits


def _split_events(where: str, frame: pl.DataFrame, daily: bool) -> pl.DataFrame:
    """Events from the split column: ts, ratio; ratio 1 (or 0, as yfinance writes) is no event."""
    if "split" not in frame.columns:
        return pl.DataFrame(schema={"ts": frame.schema["ts"], "ratio": pl.Float64})
    events = frame.select("ts", pl.col("split").alias("ratio")).filter(
        pl.col("ratio").is_not_null() & (pl.col("ratio") != 1.0) & (pl.col("ratio") != 0.0)
    )
    negative = events.filter(pl.col("ratio") < 0)
    if not negative.is_empty():
        day = _fmt_ts(negative["ts"][0], daily)
        raise IngestError(f"{where}: negative split ratio {negative['ratio'][0]:g} on {day}; fix the file")
    events = events.unique(maintain_order=True).sort("ts", maintain_order=True)
    clashes = events.filter(pl.col("ts").is_duplicated())
    if not clashes.is_empty():
        day = _fmt_ts(clashes["ts"][0], daily)
        raise IngestError(f"{where}: different split ratios on {day}; keep the right one in the file")
    return events


def _apply_splits(
    where: str, frame: pl.DataFrame, adjust: str, daily: bool
) -> tuple[pl.DataFrame, pl.DataFrame, bool, list[str]]:
    events = _split_events(where, frame, daily)
    if "split" not in frame.columns:
        adjusted, notes = _judge_without_splits(where, frame, adjust, daily)
        return frame, events, adjusted, notes
    first_ts = frame["ts"].min()
    effective = events.filter(pl.col("ts") > first_ts)  # an event at the first bar changes no bar in the file
    if effective.is_empty():
        note = "no split events in the file's split column; prices need no split adjustment"
        return frame, events, True, [note]
    verdict, detail = _judge_events(frame, effective, daily)
    listing = ", ".join(f"{_fmt_ts(t, daily)} {r:g}" for t, r in effective.iter_rows())
    if verdict == "adjusted":
        note = f"prices already include the split(s) {listing} (no jump in the data); not applied again"
        return frame, events, True, [note]
    if verdict == "raw" and adjust == "split":
        note = (
            f"applied {effective.height} split(s) ({listing}); earlier prices divided and volume multiplied"
        )
        return _scale(frame, effective), events, True, [note]
    if verdict == "raw":
        return frame, events, False, [f"{effective.height} split(s) in the file are not applied: {listing}"]
    if adjust == "split":
        raise IngestError(
            f"{where}: cannot tell whether the split(s) {listing} are already in the prices ({detail}); "
            "use --adjust raw and adjust explicitly"
        )
    return frame, events, False, [f"cannot tell whether split(s) {listing} are in the prices ({detail})"]


def _judge_events(frame: pl.DataFrame, events: pl.DataFrame, daily: bool) -> tuple[str, str]:
    """'raw', 'adjusted', or 'unknown' (no event votes, or votes disagree), with a short explanation."""
    view = frame.select("ts", "open", "close").sort("ts", maintain_order=True)
    votes: dict[str, list[str]] = {"raw": [], "adjusted": []}
    for ts, ratio in events.iter_rows():
        vote = _vote(view, ts, ratio)
        if vote is not None:
            votes[vote].append(_fmt_ts(ts, daily))
    if votes["raw"] and votes["adjusted"]:
        return "unknown", (
            f"partly adjusted: jumps at {', '.join(votes['raw'])} but none at {', '.join(votes['adjusted'])}"
        )
    if votes["raw"]:
        return "raw", ""
    if votes["adjusted"]:
        return "adjusted", ""
    return "unknown", "no split is large enough, or has bars on both sides, to show in the prices"


def _vote(view: pl.DataFrame, ts: object, ratio: float) -> str | None:
    if abs(math.log(ratio)) < _MIN_VISIBLE_SPLIT:
        return None
    before = view.filter((pl.col("ts") < ts) & pl.col("close").is_not_null())["close"]
    after = view.filter((pl.col("ts") >= ts) & pl.col("open").is_not_null())["open"]
    if before.is_empty() or after.is_empty() or before[-1] <= 0 or after[0] <= 0:
        return None
    gap = math.log(before[-1] / after[0])
    raw_distance, adjusted_distance = abs(gap - math.log(ratio)), abs(gap)
    if raw_distance * _VOTE_MARGIN < adjusted_distance:
        return "raw"
    if adjusted_distance * _VOTE_MARGIN < raw_distance:
        return "adjusted"
    return None


def _scale(frame: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Divide prices before each event by its ratio and multiply volume by it (several events multiply)."""
    factor = pl.lit(1.0)
    for ts, ratio in events.iter_rows():
        factor = factor * pl.when(pl.col("ts") < ts).then(pl.lit(ratio)).otherwise(pl.lit(1.0))
    prices = [c for c in (*_PRICE_FIELDS, "vwap") if c in frame.columns]
    return frame.with_columns(
        *[(pl.col(c) / factor).alias(c) for c in prices], (pl.col("volume") * factor).alias("volume")
    )


def _judge_without_splits(
    where: str, frame: pl.DataFrame, adjust: str, daily: bool
) -> tuple[bool, list[str]]:
    jumps = _split_like_jumps(frame)
    if not jumps:
        return True, ["no split column and no split-sized jump in the prices; treated as split-adjusted"]
    listing = ", ".join(f"{_fmt_ts(t, daily)} (about {r:.2f}:1)" for t, r in jumps[:3])
    if adjust == "split":
        raise IngestError(
            f"{where}: prices look unadjusted (split-sized jump on {listing}) and the file has no split "
            "ratios to adjust with; use --adjust raw, or a source with a split column"
        )
    return False, [
        f"prices look unadjusted: split-sized jump(s) on {listing}; no split column to adjust with"
    ]


def _split_like_jumps(frame: pl.DataFrame) -> list[tuple[object, float]]:
    """(ts, implied ratio) of discontinuities that look like unapplied splits, in time order."""
    view = frame.sort("ts", maintain_order=True)
    if "adj_close" in view.columns:
        view = view.filter(
            (pl.col("close") > 0) & (pl.col("adj_close") > 0) & pl.col("close").is_not_null()
        ).with_columns(step=(pl.col("adj_close") / pl.col("close")).log().diff())
        hits = view.filter(pl.col("step").abs() >= _ADJ_STEP)
        return [(t, math.exp(s)) for t, s in hits.select("ts", "step").iter_rows()]
    view = view.filter((pl.col("close") > 0) & (pl.col("open") > 0)).with_columns(
        gap=(pl.col("close").shift(1) / pl.col("open")).log()
    )
    candidates = view.filter(pl.col("gap").abs() >= _GAP_MIN).select("ts", "gap").iter_rows()
    jumps = []
    for ts, gap in candidates:
        near_common = min(abs(gap - math.log(r)) for r in _COMMON_SPLITS) <= _GAP_TOLERANCE
        if near_common or abs(gap) >= _GAP_ANY:
            jumps.append((ts, math.exp(gap)))
    return jumps


# --------------------------------------------------------------------------------------------------
# Ingest into a store: parse -> validate -> write. Nothing is written unless validation accepts the bars.
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IngestResult:
    """What one :func:`ingest_into_store` did: the parsed source, the validation report and the write."""

    raw: RawBars
    report: SanityReport
    stats: WriteStats | None  # None when validation accepted no rows (nothing to write)


def ingest_into_store(
    store: BarStore,
    symbol: str,
    interval: str,
    raw: RawBars,
    *,
    mode: str = "enforce",
    profile: str = "strict",
    calendar: TradingCalendar | None = None,
    max_na_fraction: float = 0.0,
    hours: Literal["regular", "extended"] = "regular",
) -> IngestResult:
    """Validate ``raw`` bars of ``symbol`` and write them to ``store``, replacing the range they cover.

    Validation (see :mod:`trader.data.sanity`) runs first on the whole series; in ``enforce`` mode, or in
    ``repair`` mode with unfixable errors, it raises SanityError and nothing is written for the symbol.
    ``max_na_fraction`` is a fraction of rows (0..1).

    >>> raw = read_source("SPY.csv", fmt="yahoo")  # doctest: +SKIP
    >>> ingest_into_store(BarStore("./data"), "SPY", "1d", raw).stats.rows_written  # doctest: +SKIP
    """
    from trader.data.sanity import validate_bars

    bars, report = validate_bars(
        raw.frame,
        symbol=symbol,
        interval=interval,
        mode=mode,
        profile=profile,
        calendar=calendar,
        source_tz=raw.source_tz,
        max_na_fraction=max_na_fraction,
        hours=hours,
    )
    stats = store.write_bars(symbol, interval, bars) if bars.height else None
    return IngestResult(raw=raw, report=report, stats=stats)
