"""Ingest of the whole real-data corpus into a store: parse -> validate -> write, as `trader data ingest`
does. Clean files go in under enforce/strict; each file with a known real-world defect is refused by the right
check (PROVENANCE.md) and goes in once the defect is handled the documented way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from trader.data.ingest import DATA_SUFFIXES, ingest_into_store, read_source
from trader.data.store import BarStore
from trader.errors import IngestError, SanityError


@dataclass(frozen=True)
class Case:
    symbol: str
    files: tuple[str, ...]  # globs relative to ../shared/data
    interval: str = "1d"
    read: dict = field(default_factory=dict)
    refused_by: str | None = None  # the check that refuses it under enforce/strict
    accepted_with: dict = field(default_factory=dict)  # what makes it go in (mode, profile, hours, adjust)
    rows: int | None = None  # rows stored in the end


SAMPLES = "pyalgotrade/samples/data"
TESTCASES = "pyalgotrade/testcases/data"
CASES = [
    Case("AAPL", ("mplfinance/yahoofinance-AAPL-*.csv",), rows=3379),
    Case("GOOG", ("mplfinance/yahoofinance-GOOG-*.csv",), rows=3379),
    Case("INTC", ("mplfinance/yahoofinance-INTC-*.csv",), rows=2335),
    Case("SPY20", ("mplfinance/yahoofinance-SPY-2020*.csv",), rows=92),
    # Two real Yahoo rows with low above open (2015-03-05, 2015-03-30): repair drops them.
    Case(
        "SPY",
        ("mplfinance/yahoofinance-SPY-2008*.csv",),
        refused_by="ohlc",
        accepted_with={"mode": "repair"},
        rows=2519 - 2,
    ),
    Case("SP500D", ("mplfinance/SP500_NOV2019_Hist.csv",), rows=20),
    # 09:30..16:00 ET: the 16:00 bar of each day is outside the regular session.
    Case(
        "SP500",
        ("mplfinance/SP500_NOV2019_IDayRVol.csv",),
        "1m",
        {"source_tz": "America/New_York"},
        refused_by="sessions",
        accepted_with={"mode": "repair"},
        rows=1563 - 3,
    ),
    Case(
        "SP500Z",
        ("mplfinance/SP500_NOV2019_IDay.csv",),
        "1m",
        {"source_tz": "America/New_York"},
        refused_by="sessions",
        accepted_with={"mode": "repair"},
        rows=1563 - 3,
    ),
    Case("SPYD", ("pandas_ta/SPY_D.csv",), rows=5241),
    *[
        Case(sym, (f"{SAMPLES}/{sym}-20*-yahoofinance.csv",), rows=1762)
        for sym in ("SPY", "IEF", "VNQ", "DBC")
    ],
    Case("VEU", (f"{SAMPLES}/VEU-*-yahoofinance.csv",)),
    Case("DIA", (f"{SAMPLES}/DIA-*-yahoofinance.csv",), rows=1006),
    Case("GLD", (f"{SAMPLES}/gld-*-yahoofinance.csv",), rows=1761),
    Case("GDX", (f"{SAMPLES}/gdx-*-yahoofinance.csv",), rows=1664),
    # Raw 2:1 split on 2008-06-18 and no split column: strict refuses; relaxed keeps it with a warning.
    Case(
        "VTI",
        (f"{SAMPLES}/VTI-*-yahoofinance.csv",),
        refused_by="outliers",
        accepted_with={"profile": "relaxed"},
        rows=1762,
    ),
    Case("WAAPL", (f"{SAMPLES}/WIKI-AAPL-*-quandl.csv",)),
    # 2010 absent: a 252-session hole.
    Case(
        "AES", (f"{SAMPLES}/WIKI-AES-*-quandl.csv",), refused_by="gaps", accepted_with={"profile": "relaxed"}
    ),
    Case(
        "IBM", (f"{SAMPLES}/WIKI-IBM-*-quandl.csv",), refused_by="gaps", accepted_with={"profile": "relaxed"}
    ),
    # The hole and the 1:20 reverse split; split-adjusting from the Split Ratio column removes the jump.
    Case(
        "AIG",
        (f"{SAMPLES}/WIKI-AIG-*-quandl.csv",),
        read={"adjust": "split"},
        refused_by="gaps",
        accepted_with={"profile": "relaxed"},
    ),
    Case("GORO", (f"{SAMPLES}/WIKI-GORO-*-quandl.csv",)),
    Case("WORCL", (f"{SAMPLES}/WIKI-ORCL-*-quandl.csv",)),
    Case("YHOO", (f"{SAMPLES}/WIKI-yhoo-*-quandl.csv",)),
    Case("WORCL0", (f"{TESTCASES}/WIKI-ORCL-2000-quandl.csv",), read={"adjust": "split"}, rows=252),
    Case(
        "ORCL0",
        (f"{TESTCASES}/orcl-2000-yahoofinance.csv",),
        refused_by="outliers",
        accepted_with={"profile": "relaxed"},
        rows=252,
    ),
    Case("ORCL1", (f"{TESTCASES}/orcl-2001-yahoofinance.csv",)),
    Case("GOOG11", (f"{TESTCASES}/goog-2011-yahoofinance.csv",)),
    Case("SPY10", (f"{TESTCASES}/spy-201*-yahoofinance.csv",)),
    Case("ORCLG", (f"{TESTCASES}/orcl-2010-googlefinance.csv",), rows=252),
    # '-' for the open on 2010-12-30: repair drops the row.
    Case(
        "ORCLM",
        (f"{TESTCASES}/orcl-2010-googlefinance-malformed.csv",),
        refused_by="missing",
        accepted_with={"mode": "repair"},
        rows=251,
    ),
    # NinjaTrader minutes include pre- and post-market: regular hours refuse them, extended hours keep them.
    Case(
        "NT1",
        (f"{TESTCASES}/nt-spy-minute-2011.csv.gz",),
        "1m",
        {"fmt": "ninjatrader"},
        refused_by="sessions",
        accepted_with={"hours": "extended"},
        rows=14180,
    ),
    Case(
        "NT3",
        (f"{TESTCASES}/nt-spy-minute-2011-03.csv.gz",),
        "1m",
        {"fmt": "ninjatrader"},
        refused_by="sessions",
        accepted_with={"mode": "repair"},
        rows=23 * 390,
    ),
    # Already split-adjusted despite the split column (the double-adjust trap): stored as is.
    *[
        Case(f"Z{sym}", (f"zipline_reloaded/csvdir_daily/{sym}.csv.gz",), read={"adjust": "split"}, rows=754)
        for sym in ("AAPL", "IBM", "KO", "MSFT")
    ],
    # Raw 7:1 on 2014-06-09: refused raw, accepted split-adjusted.
    Case(
        "QAAPL",
        ("zipline_reloaded/QUANDL_ARCHIVE.zip",),
        read={"symbol": "AAPL"},
        refused_by="outliers",
        accepted_with={"adjust": "split"},
        rows=252,
    ),
    *[
        Case(f"Q{sym}", ("zipline_reloaded/QUANDL_ARCHIVE.zip",), read={"symbol": sym}, rows=rows)
        for sym, rows in (("BRK_A", 252), ("MSFT", 252), ("ZEN", 160))
    ],
]


def _files(shared: Path, case: Case) -> list[Path]:
    found = sorted(p for pattern in case.files for p in shared.glob(pattern))
    assert found, f"{case.symbol}: nothing matches {case.files}"
    return found


def test_every_corpus_file_is_covered(shared_data: Path) -> None:
    on_disk = {
        p.relative_to(shared_data)
        for p in shared_data.rglob("*")
        if p.is_file() and p.name.endswith(DATA_SUFFIXES)
    }
    covered = {p.relative_to(shared_data) for case in CASES for p in _files(shared_data, case)}
    assert on_disk - covered == set()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.symbol)
def test_ingest_real_file(case: Case, shared_data: Path, tmp_path: Path) -> None:
    store = BarStore(str(tmp_path / "store"))
    read = dict(case.read)
    accepted = dict(case.accepted_with)
    adjust = accepted.pop("adjust", read.pop("adjust", "raw"))
    raw = read_source(_files(shared_data, case), interval=case.interval, adjust=adjust, **read)
    if case.refused_by:
        strict_raw = raw
        if case.accepted_with.get("adjust"):
            strict_raw = read_source(_files(shared_data, case), interval=case.interval, **read)
        with pytest.raises(SanityError) as refused:
            ingest_into_store(store, case.symbol, case.interval, strict_raw)
        failed = {f.check for f in refused.value.report.errors()}
        assert case.refused_by in failed, refused.value
        assert store.list_bars().is_empty(), "a refused symbol must leave nothing written"
    result = ingest_into_store(store, case.symbol, case.interval, raw, **accepted)
    stored = store.read_bars([case.symbol], case.interval)
    assert stored.height == result.stats.rows_written
    if case.rows is not None:
        assert stored.height == case.rows
    assert stored["ts"].is_sorted() and stored["ts"].n_unique() == stored.height
    assert (stored["low"] <= stored[["open", "close"]].min_horizontal()).all()


def test_unadjustable_raw_split_is_refused_at_read(shared_data: Path) -> None:
    with pytest.raises(IngestError, match="2008-06-18"):
        read_source(sorted(shared_data.glob(f"{SAMPLES}/VTI-*")), adjust="split")


def test_ingest_to_s3_store(shared_data: Path, s3_bucket: str) -> None:
    store = BarStore(f"s3://{s3_bucket}/corpus")
    raw = read_source(shared_data / "pandas_ta" / "SPY_D.csv")
    ingest_into_store(store, "SPY", "1d", raw)
    again = ingest_into_store(store, "SPY", "1d", raw)
    assert again.stats.rows_replaced == 5241
    bars = store.read_bars(["SPY"], "1d", start="2001-09-01", end="2001-10-01")
    days = bars["ts"].dt.day().to_list()
    assert 11 not in days and 14 not in days and 17 in days  # closed 09-11..09-14, reopened 09-17
    assert isinstance(bars, pl.DataFrame)
