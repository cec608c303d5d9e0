"""CSV ingest on the real-bar corpus (../shared/data, see PROVENANCE.md) and on small crafted error cases."""

from __future__ import annotations

import csv
import gzip
import math
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from trader.data.ingest import RawBars, expand_sources, read_source
from trader.errors import DataError, IngestError

UTC_NS = pl.Datetime("ns", "UTC")
NY = "America/New_York"
SP500_INTRADAY = {"interval": "1m", "source_tz": NY}
NT_MINUTE = {"interval": "1m"}
ARCHIVE = "zipline_reloaded/QUANDL_ARCHIVE.zip"
ARCHIVE_TICKERS = ("AAPL", "BRK_A", "MSFT", "ZEN")

_YEARLY = {
    "SPY": range(2007, 2014),
    "IEF": range(2007, 2014),
    "VTI": range(2007, 2014),
    "VNQ": range(2007, 2014),
    "DBC": range(2007, 2014),
    "VEU": range(2007, 2014),
    "DIA": range(2009, 2013),
    "gld": range(2006, 2013),
    "gdx": range(2006, 2013),
}
_WIKI = {
    "AAPL": (2011, 2012),
    "AES": (2008, 2009, 2011),
    "AIG": (2008, 2009, 2011),
    "IBM": (2008, 2009, 2011),
    "GORO": range(2006, 2013),
    "ORCL": (2011,),
    "yhoo": (2011, 2012),
}


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(path under shared/data, expected layout, options) for every data file; the zip once per ticker."""
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("mplfinance/SP500_NOV2019_Hist.csv", "generic", {}),
        ("mplfinance/SP500_NOV2019_IDay.csv", "generic", SP500_INTRADAY),
        ("mplfinance/SP500_NOV2019_IDayRVol.csv", "generic", SP500_INTRADAY),
        ("pandas_ta/SPY_D.csv", "generic", {}),
        ("pyalgotrade/testcases/data/WIKI-ORCL-2000-quandl.csv", "quandl", {}),
        ("pyalgotrade/testcases/data/nt-spy-minute-2011.csv.gz", "ninjatrader", NT_MINUTE),
        ("pyalgotrade/testcases/data/nt-spy-minute-2011-03.csv.gz", "ninjatrader", NT_MINUTE),
        ("pyalgotrade/testcases/data/orcl-2010-googlefinance.csv", "google", {}),
        ("pyalgotrade/testcases/data/orcl-2010-googlefinance-malformed.csv", "google", {}),
    ]
    for name in ("AAPL-20040819-20180120", "GOOG-20040819-20180120", "INTC-19950101-20040412"):
        cases.append((f"mplfinance/yahoofinance-{name}.csv", "yahoo", {}))
    for name in ("SPY-20080101-20180101", "SPY-20200901-20210113"):
        cases.append((f"mplfinance/yahoofinance-{name}.csv", "yahoo", {}))
    for name in ("spy-2010", "spy-2011", "goog-2011", "orcl-2000", "orcl-2001"):
        cases.append((f"pyalgotrade/testcases/data/{name}-yahoofinance.csv", "yahoo", {}))
    for symbol, years in _YEARLY.items():
        cases += [(f"pyalgotrade/samples/data/{symbol}-{y}-yahoofinance.csv", "yahoo", {}) for y in years]
    for symbol, years in _WIKI.items():
        cases += [(f"pyalgotrade/samples/data/WIKI-{symbol}-{y}-quandl.csv", "quandl", {}) for y in years]
    for symbol in ("AAPL", "IBM", "KO", "MSFT"):
        cases.append((f"zipline_reloaded/csvdir_daily/{symbol}.csv.gz", "generic", {}))
    cases += [(ARCHIVE, "quandl", {"symbol": ticker}) for ticker in ARCHIVE_TICKERS]
    return cases


CASES = _cases()

# Row counts and date ranges PROVENANCE.md states.
STATED = {
    "mplfinance/yahoofinance-AAPL-20040819-20180120.csv": (3379, date(2004, 8, 19), date(2018, 1, 19)),
    "mplfinance/yahoofinance-GOOG-20040819-20180120.csv": (3379, date(2004, 8, 19), date(2018, 1, 19)),
    "mplfinance/yahoofinance-SPY-20080101-20180101.csv": (2519, date(2007, 12, 31), date(2017, 12, 29)),
    "mplfinance/yahoofinance-INTC-19950101-20040412.csv": (2335, date(1995, 1, 3), date(2004, 4, 8)),
    "mplfinance/yahoofinance-SPY-20200901-20210113.csv": (92, date(2020, 9, 1), date(2021, 1, 12)),
    "mplfinance/SP500_NOV2019_IDay.csv": (1563, date(2019, 11, 5), date(2019, 11, 8)),
    "mplfinance/SP500_NOV2019_IDayRVol.csv": (1563, date(2019, 11, 5), date(2019, 11, 8)),
    "pandas_ta/SPY_D.csv": (5241, date(1999, 11, 1), date(2020, 8, 28)),
    "pyalgotrade/testcases/data/nt-spy-minute-2011.csv.gz": (14180, date(2011, 1, 3), date(2011, 2, 1)),
    "pyalgotrade/testcases/data/nt-spy-minute-2011-03.csv.gz": (17577, date(2011, 3, 1), date(2011, 3, 31)),
    "zipline_reloaded/csvdir_daily/AAPL.csv.gz": (754, date(2012, 1, 3), date(2014, 12, 31)),
    "zipline_reloaded/csvdir_daily/IBM.csv.gz": (754, date(2012, 1, 3), date(2014, 12, 31)),
    "zipline_reloaded/csvdir_daily/KO.csv.gz": (754, date(2012, 1, 3), date(2014, 12, 31)),
    "zipline_reloaded/csvdir_daily/MSFT.csv.gz": (754, date(2012, 1, 3), date(2014, 12, 31)),
    f"{ARCHIVE}:AAPL": (252, date(2014, 1, 2), date(2014, 12, 31)),
    f"{ARCHIVE}:BRK_A": (252, date(2014, 1, 2), date(2014, 12, 31)),
    f"{ARCHIVE}:MSFT": (252, date(2014, 1, 2), date(2014, 12, 31)),
    f"{ARCHIVE}:ZEN": (160, date(2014, 5, 15), date(2014, 12, 31)),
}

# Per-symbol totals of the yearly Yahoo files (PROVENANCE.md): rows, first date, last date.
YEARLY_TOTALS = {
    "SPY": (1762, None),
    "IEF": (1762, None),
    "VTI": (1762, None),
    "VNQ": (1762, None),
    "DBC": (1762, None),
    "gld": (1761, None),
    "gdx": (1664, date(2006, 5, 23)),
    "DIA": (1006, None),
    "VEU": (None, date(2007, 3, 8)),
}


def _text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            data = b"".join(archive.read(name) for name in archive.namelist())
    return data.decode()


def _source_rows(path: Path, symbol: str | None, has_header: bool) -> int:
    """Rows in the file counted without the ingest code: non-blank lines, less the header, for one ticker."""
    lines = [line for line in _text(path).splitlines() if line.strip()]
    if symbol is not None:
        return sum(1 for row in csv.reader(lines[1:]) if row[0] == symbol)
    return len(lines) - (1 if has_header else 0)


def _day(bars: RawBars, value: date) -> dict[str, Any]:
    rows = bars.frame.filter(pl.col("ts").dt.date() == value).to_dicts()
    assert len(rows) == 1, f"expected one bar on {value}, found {len(rows)}"
    return rows[0]


def _gap(bars: RawBars, value: date) -> float:
    """ln(previous close / open) across ``value``: about ln(ratio) at a raw split, about 0 otherwise."""
    ordered = bars.frame.sort("ts")
    index = ordered["ts"].dt.date().to_list().index(value)
    return math.log(ordered["close"][index - 1] / ordered["open"][index])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------- whole corpus


def test_cases_cover_every_data_file(shared_data: Path) -> None:
    on_disk = {p.relative_to(shared_data).as_posix() for p in shared_data.rglob("*") if p.is_file()}
    on_disk.discard("PROVENANCE.md")
    assert on_disk == {path for path, _, _ in CASES}


@pytest.mark.parametrize(
    ("relpath", "layout", "options"),
    [pytest.param(*case, id=":".join(filter(None, (case[0], case[2].get("symbol"))))) for case in CASES],
)
def test_every_file_parses(shared_data: Path, relpath: str, layout: str, options: dict[str, Any]) -> None:
    path = shared_data / relpath
    bars = read_source(path, **options)
    assert bars.fmt == layout
    assert bars.frame.columns == ["ts", "open", "high", "low", "close", "volume"]
    assert all(bars.frame.schema[c] == pl.Float64 for c in ("open", "high", "low", "close", "volume"))
    symbol = options.get("symbol")
    assert bars.frame.height == _source_rows(path, symbol, has_header=layout != "ninjatrader")
    assert bars.frame["ts"].null_count() == 0
    if options.get("interval", "1d") == "1d":
        assert bars.frame.schema["ts"] == UTC_NS
        assert bars.source_tz is None
        assert (bars.frame["ts"].dt.time() == datetime.min.time()).all()
    stated = STATED.get(f"{relpath}:{symbol}" if symbol else relpath)
    if stated is not None:
        assert (bars.frame.height, bars.frame["ts"].min().date(), bars.frame["ts"].max().date()) == stated


@pytest.mark.parametrize("symbol", YEARLY_TOTALS)
def test_yearly_yahoo_files_concatenate_to_the_stated_totals(shared_data: Path, symbol: str) -> None:
    bars = read_source(str(shared_data / f"pyalgotrade/samples/data/{symbol}-*-yahoofinance.csv"))
    rows, first = YEARLY_TOTALS[symbol]
    if rows is not None:
        assert bars.frame.height == rows
    if first is not None:
        assert bars.frame["ts"].min().date() == first
    assert bars.frame["ts"].n_unique() == bars.frame.height
    assert len(bars.files) == len(_YEARLY[symbol])


def test_descending_files_keep_file_order_with_the_right_dates(shared_data: Path) -> None:
    bars = read_source(str(shared_data / "pyalgotrade/samples/data/SPY-*-yahoofinance.csv"))
    ts = bars.frame["ts"].dt.date()
    assert ts[0] == date(2007, 12, 31) and ts[250] == date(2007, 1, 3)  # first file, newest row first
    assert ts[251] == date(2008, 12, 31)  # the 2008 file follows
    assert ts[-1] == date(2013, 1, 2)
    assert [Path(f).name for f in bars.files][:2] == [
        "SPY-2007-yahoofinance.csv",
        "SPY-2008-yahoofinance.csv",
    ]
    assert _day(bars, date(2007, 1, 3))["close"] == 141.37


def test_google_dates_and_descending_order(shared_data: Path) -> None:
    bars = read_source(shared_data / "pyalgotrade/testcases/data/orcl-2010-googlefinance.csv")
    assert bars.frame["ts"][0].date() == date(2010, 12, 31)
    assert bars.frame["ts"][-1].date() == date(2010, 1, 4)
    assert _day(bars, date(2010, 12, 30))["open"] == 31.45


def test_same_vendor_in_two_layouts_agrees(shared_data: Path) -> None:
    """pyalgotrade (descending, Adj Close last) and mplfinance (ascending) Yahoo SPY closes match in 2008."""
    yearly = read_source(shared_data / "pyalgotrade/samples/data/SPY-2008-yahoofinance.csv")
    decade = read_source(shared_data / "mplfinance/yahoofinance-SPY-20080101-20180101.csv")
    joined = yearly.frame.join(decade.frame, on="ts", suffix="_mpl")
    assert joined.height == yearly.frame.height == 253
    assert (joined["close"] - joined["close_mpl"]).abs().max() < 1e-4
    assert _day(yearly, date(2008, 10, 10))["close"] == 88.50


def test_unnamed_index_column_is_ignored(shared_data: Path) -> None:
    bars = read_source(shared_data / "pandas_ta/SPY_D.csv")
    first = bars.frame.row(0, named=True)
    assert (first["open"], first["close"], first["volume"]) == (136.5, 135.5625, 4006500.0)
    assert _day(bars, date(2008, 10, 10))["close"] == 88.82


# ------------------------------------------------------------------------------------------- defects


def test_malformed_google_open_becomes_null_with_a_note(shared_data: Path) -> None:
    bars = read_source(shared_data / "pyalgotrade/testcases/data/orcl-2010-googlefinance-malformed.csv")
    assert bars.frame.height == 252  # the row is kept for validation to judge
    row = _day(bars, date(2010, 12, 30))
    assert row["open"] is None and row["high"] == 31.58 and row["close"] == 31.29
    assert bars.frame["open"].null_count() == 1
    note = next(n for n in bars.notes if "non-numeric" in n)
    assert "1 non-numeric open" in note and "2010-12-30" in note and "'-'" in note


def test_ninjatrader_end_labels_become_bar_starts(shared_data: Path) -> None:
    bars = read_source(shared_data / "pyalgotrade/testcases/data/nt-spy-minute-2011.csv.gz", interval="1m")
    assert bars.fmt == "ninjatrader" and bars.source_tz == "UTC"
    assert bars.frame.schema["ts"] == pl.Datetime("ns")  # naive: the validator localises with source_tz
    assert bars.frame["ts"][0] == datetime(2011, 1, 3, 9, 0)
    assert bars.frame.row(0, named=True)["open"] == 126.35
    assert bars.frame["ts"][-1] == datetime(2011, 2, 1, 0, 59)
    assert any("bar-end labels to bar-start" in n for n in bars.notes)


def test_ninjatrader_label_and_zone_can_be_overridden(shared_data: Path) -> None:
    path = shared_data / "pyalgotrade/testcases/data/nt-spy-minute-2011-03.csv.gz"
    bars = read_source(path, interval="1m", bar_label="start", source_tz=NY)
    assert bars.frame["ts"][0] == datetime(2011, 3, 1, 9, 1)
    assert bars.source_tz == NY
    assert not any("bar-end" in n for n in bars.notes)


def test_sp500_intraday_column_order_and_zone(shared_data: Path) -> None:
    bars = read_source(shared_data / "mplfinance/SP500_NOV2019_IDay.csv", **SP500_INTRADAY)
    first = bars.frame.row(0, named=True)
    # The file's order is Date,Open,Close,High,Low,Volume.
    assert (first["open"], first["high"], first["low"], first["close"]) == (3080.8, 3081.47, 3080.3, 3080.49)
    assert first["ts"] == datetime(2019, 11, 5, 9, 30)
    assert bars.source_tz == NY
    frame = bars.frame
    bodies_inside = (pl.col("high") >= pl.max_horizontal("open", "close")) & (
        pl.col("low") <= pl.min_horizontal("open", "close")
    )
    assert frame.select(bodies_inside.all()).item()
    assert any("month-first" in n for n in bars.notes)
    with_volume = read_source(shared_data / "mplfinance/SP500_NOV2019_IDayRVol.csv", **SP500_INTRADAY)
    assert with_volume.frame.drop("volume").equals(frame.drop("volume"))
    assert with_volume.frame["volume"][0] == 2209795.0 and (frame["volume"] == 0).all()


def test_generic_intraday_without_zone_is_left_unknown(shared_data: Path) -> None:
    bars = read_source(shared_data / "mplfinance/SP500_NOV2019_IDayRVol.csv", interval="1m")
    assert bars.source_tz is None
    assert bars.frame.schema["ts"] == pl.Datetime("ns")
    assert any("pass source_tz" in n for n in bars.notes)


def test_daily_labels_ignore_source_tz(shared_data: Path) -> None:
    bars = read_source(shared_data / "mplfinance/SP500_NOV2019_Hist.csv", source_tz=NY)
    assert bars.source_tz is None
    assert bars.frame["ts"][0] == datetime.fromisoformat("2019-11-01T00:00:00+00:00")
    assert any("source_tz 'America/New_York' ignored" in n for n in bars.notes)


# ------------------------------------------------------------------------------------------- splits


def test_quandl_orcl_splits_adjusted_on_request(shared_data: Path) -> None:
    path = shared_data / "pyalgotrade/testcases/data/WIKI-ORCL-2000-quandl.csv"
    raw = read_source(path)
    adjusted = read_source(path, adjust="split")
    assert raw.adjusted is False and adjusted.adjusted is True
    assert raw.splits.rows() == adjusted.splits.rows()
    assert [(t.date(), r) for t, r in raw.splits.rows()] == [
        (date(2000, 1, 19), 2.0),
        (date(2000, 10, 13), 2.0),
    ]
    for split_day in (date(2000, 1, 19), date(2000, 10, 13)):
        assert abs(_gap(raw, split_day) - math.log(2.0)) < 0.05  # raw keeps the jump
        assert abs(_gap(adjusted, split_day)) < math.log(1.1)  # adjusted has none
    before, after = _day(raw, date(2000, 1, 3)), _day(adjusted, date(2000, 1, 3))
    assert after["close"] == pytest.approx(before["close"] / 4)
    assert after["volume"] == pytest.approx(before["volume"] * 4)
    assert _day(adjusted, date(2000, 12, 29)) == _day(raw, date(2000, 12, 29))
    assert adjusted.frame["ts"].equals(raw.frame["ts"])  # order untouched
    assert any("applied 2 split" in n for n in adjusted.notes)


def test_quandl_aig_reverse_split(shared_data: Path) -> None:
    path = shared_data / "pyalgotrade/samples/data/WIKI-AIG-2009-quandl.csv"
    raw = read_source(path)
    adjusted = read_source(path, adjust="split")
    split_day = date(2009, 7, 1)
    assert raw.splits.rows()[0][1] == 0.05
    assert _gap(raw, split_day) < math.log(1 / 10)  # raw: 1.16 then 19.65
    assert abs(_gap(adjusted, split_day)) < math.log(1.25)  # adjusted: 23.20 then 19.65, a market move
    assert _day(adjusted, date(2009, 6, 30))["close"] == pytest.approx(1.16 * 20)
    assert _day(adjusted, date(2009, 6, 30))["volume"] == pytest.approx(17698000 * 0.05)


@pytest.mark.parametrize(
    ("symbol", "split_day", "ratio"), [("AAPL", date(2014, 6, 9), 7.0), ("KO", date(2012, 8, 13), 2.0)]
)
def test_zipline_double_adjust_trap_is_detected(
    shared_data: Path, symbol: str, split_day: date, ratio: float
) -> None:
    path = shared_data / f"zipline_reloaded/csvdir_daily/{symbol}.csv.gz"
    raw = read_source(path)
    asked = read_source(path, adjust="split")
    assert asked.frame.equals(raw.frame)  # not divided again
    assert asked.adjusted is True and raw.adjusted is True
    assert [(t.date(), r) for t, r in asked.splits.rows()] == [(split_day, ratio)]
    assert any("already include" in n for n in asked.notes)
    assert any("already include" in n for n in raw.notes)
    assert abs(_gap(raw, split_day)) < math.log(1.05)


def test_quandl_archive_aapl_split_applied_when_asked(shared_data: Path) -> None:
    path = shared_data / ARCHIVE
    raw = read_source(path, symbol="AAPL")
    adjusted = read_source(path, symbol="aapl", adjust="split")
    assert raw.adjusted is False and adjusted.adjusted is True
    assert _day(raw, date(2014, 6, 6))["close"] == 645.57
    assert _day(raw, date(2014, 6, 9))["open"] == 92.7
    assert _day(adjusted, date(2014, 6, 6))["close"] == pytest.approx(645.57 / 7)
    assert _day(adjusted, date(2014, 6, 6))["volume"] == pytest.approx(
        _day(raw, date(2014, 6, 6))["volume"] * 7
    )
    assert _day(adjusted, date(2014, 6, 9)) == _day(raw, date(2014, 6, 9))
    assert raw.files == (f"{path}::QUANDL_SAMPLE_TABLE.csv",)


def test_split_adjusted_yahoo_file_is_left_alone(shared_data: Path) -> None:
    path = shared_data / "mplfinance/yahoofinance-AAPL-20040819-20180120.csv"
    raw = read_source(path)
    asked = read_source(path, adjust="split")
    assert asked.adjusted is True and asked.frame.equals(raw.frame)
    assert abs(_gap(raw, date(2014, 6, 9))) < math.log(1.05)  # AAPL's 7:1 is already in the prices


def test_raw_yahoo_split_without_ratios_refuses_split_adjustment(shared_data: Path) -> None:
    path = shared_data / "pyalgotrade/samples/data/VTI-2008-yahoofinance.csv"
    raw = read_source(path)
    assert raw.adjusted is False
    assert any("2008-06-18" in n for n in raw.notes)
    with pytest.raises(IngestError, match=r"VTI-2008.*2008-06-18.*--adjust raw"):
        read_source(path, adjust="split")


def test_partly_adjusted_file_is_refused(tmp_path: Path) -> None:
    rows = [
        "date,open,high,low,close,volume,split",
        "2020-01-02,100,101,99,100,1000,1.0",
        "2020-01-03,50,51,49,50,2000,2.0",  # raw jump: applied nowhere yet
        "2020-01-06,50,51,49,50,2000,1.0",
        "2020-01-07,50,51,49,50,2000,3.0",  # no jump: already applied
        "2020-01-08,50,51,49,50,2000,1.0",
    ]
    path = _write(tmp_path / "partly.csv", "\n".join(rows) + "\n")
    with pytest.raises(IngestError, match=r"partly adjusted.*2020-01-03.*2020-01-07"):
        read_source(path, adjust="split")
    raw = read_source(path)
    assert raw.adjusted is False and any("cannot tell" in n for n in raw.notes)


@pytest.mark.parametrize(
    ("split_rows", "message"),
    [
        (("2020-01-03,50,51,49,50,2000,-2",), "negative split ratio -2 on 2020-01-03"),
        (
            ("2020-01-03,50,51,49,50,2000,2", "2020-01-03,50,51,49,50,2000,3"),
            "different split ratios on 2020-01-03",
        ),
    ],
)
def test_impossible_split_columns_are_refused(
    tmp_path: Path, split_rows: tuple[str, ...], message: str
) -> None:
    text = "\n".join(
        ["date,open,high,low,close,volume,split", "2020-01-02,100,101,99,100,1000,1", *split_rows]
    )
    with pytest.raises(IngestError, match=message):
        read_source(_write(tmp_path / "splits.csv", text))


def test_small_split_ratio_cannot_be_judged(tmp_path: Path) -> None:
    rows = [
        "date,open,high,low,close,volume,split",
        "2020-01-02,100,101,99,100,1000,1",
        "2020-01-03,97,98,96,97,1,1.05",
    ]
    path = _write(tmp_path / "stock_dividend.csv", "\n".join(rows))
    with pytest.raises(IngestError, match="cannot tell whether the split"):
        read_source(path, adjust="split")


# ------------------------------------------------------------------------------------------- sources


def test_gzip_and_zip_are_read_directly(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "zipline_reloaded/csvdir_daily"
    archive = tmp_path / "csvdir.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for symbol in ("AAPL", "KO"):
            out.writestr(f"daily/{symbol}.csv", gzip.decompress((folder / f"{symbol}.csv.gz").read_bytes()))
        out.writestr("README.md", "not data")
    from_gz = read_source(folder / "KO.csv.gz")
    one = read_source(archive, symbol="KO")
    assert one.frame.equals(from_gz.frame)
    assert one.files == (f"{archive}::daily/KO.csv",)
    both = read_source(archive)
    assert both.frame.height == 2 * 754 and len(both.files) == 2
    with pytest.raises(IngestError, match=r"no member named 'MSFT'.*daily/AAPL.csv"):
        read_source(archive, symbol="MSFT")


def test_glob_folder_and_sequence_sources(shared_data: Path) -> None:
    folder = shared_data / "zipline_reloaded/csvdir_daily"
    names = [p.name for p in expand_sources(folder)]
    assert names == ["AAPL.csv.gz", "IBM.csv.gz", "KO.csv.gz", "MSFT.csv.gz"]
    assert expand_sources(str(folder / "*.csv.gz")) == expand_sources(folder)
    listed = [folder / "MSFT.csv.gz", str(folder / "A*.csv.gz"), folder / "MSFT.csv.gz"]
    assert [p.name for p in expand_sources(listed)] == ["MSFT.csv.gz", "AAPL.csv.gz"]
    assert len(expand_sources(shared_data / "mplfinance")) == 8
    with pytest.raises(IngestError, match="has no"):  # folders are not searched recursively
        expand_sources(shared_data)
    bars = read_source(folder)
    assert bars.frame.height == 4 * 754
    assert bars.frame["ts"][754].date() == date(2012, 1, 3)  # IBM starts after AAPL's last row


def test_generic_column_map_date_time_columns_and_offsets(tmp_path: Path) -> None:
    mapped = _write(tmp_path / "mapped.csv", "Day,First,Max,Min,Last,Qty\n2020-01-02,1,2,0.5,1.5,10\n")
    bars = read_source(
        mapped,
        column_map={
            "ts": "Day",
            "open": "First",
            "high": "Max",
            "low": "Min",
            "close": "Last",
            "volume": "Qty",
        },
    )
    assert bars.fmt == "generic"
    assert bars.frame.row(0) == (
        datetime.fromisoformat("2020-01-02T00:00:00+00:00"),
        1.0,
        2.0,
        0.5,
        1.5,
        10.0,
    )
    split_ts = _write(
        tmp_path / "dt.csv",
        "<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>\n20200102,09:30:00,1,2,0.5,1.5,10\n",
    )
    bars = read_source(split_ts, interval="1m", source_tz=NY)
    assert bars.frame["ts"][0] == datetime(2020, 1, 2, 9, 30) and bars.source_tz == NY
    offsets = _write(
        tmp_path / "aware.csv",
        "timestamp,open,high,low,close,volume,vwap,trades\n"
        '2020-01-02T09:30:00-05:00,1,2,0.5,1.5,"1,200",1.2,7\n',
    )
    bars = read_source(offsets, interval="1m", source_tz=NY)
    assert bars.frame["ts"][0] == datetime.fromisoformat("2020-01-02T14:30:00+00:00")
    assert bars.source_tz is None  # already UTC
    assert bars.frame.columns[-2:] == ["vwap", "trades"] and bars.frame.row(0)[-3:] == (1200.0, 1.2, 7)


# ------------------------------------------------------------------------------------------- errors


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        expand_sources(tmp_path / "missing.csv")
    with pytest.raises(IngestError, match="no files match"):
        expand_sources(str(tmp_path / "*.csv"))
    with pytest.raises(IngestError, match=r"has no \.csv"):
        expand_sources(tmp_path)
    with pytest.raises(IngestError, match="no source given"):
        expand_sources([])
    bad_gz = _write(tmp_path / "bad.csv.gz", "not gzip")
    with pytest.raises(IngestError, match=r"bad.csv.gz: cannot read"):
        read_source(bad_gz)
    no_csv = tmp_path / "empty.zip"
    with zipfile.ZipFile(no_csv, "w") as out:
        out.writestr("notes.md", "x")
    with pytest.raises(IngestError, match=r"no \.csv/\.txt member"):
        read_source(no_csv)


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("", {}, "is empty"),
        ("\n\n", {}, "is empty"),
        ("Date,Open,High,Low,Close,Volume\n", {}, "no data rows"),
        ("foo,bar\n1,2\n", {}, "does not look like a known bar layout"),
        ("Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n", {"fmt": "yahoo"}, "no close column"),
        ("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n2020-13-45,1,2,0.5,1,1\n", {}, "line 3"),
        ("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n\n2020-13-45,1,2,0.5,1,1\n", {}, "line 4"),
        ("\n\ndate,open,high,low,close,volume\n2020-13-45,1,2,0.5,1,1\n", {}, "line 4"),
        (
            "date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n,1,2,0.5,1,1\n",
            {},
            "line 3: cannot read an empty",
        ),
        ("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1,9\n", {}, "not a readable generic CSV"),
        ("Date,Timestamp,Open,High,Low,Close,Volume\n", {}, "could all be the timestamp"),
        ("date,close,Close,open,high,low,volume\n", {}, "could all be close"),
        ("date,open,high,low,close,volume\n", {"column_map": {"volume": "Qty"}}, r"column_map\['volume'\]"),
        ("date,open,high,low,close,volume\n", {"column_map": {"price": "x"}}, "unknown key"),
        ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1,1\n", {"fmt": "quandl"}, "no split column"),
        ("20110103 090100;1;2;0.5;1\n", {"interval": "1m"}, "need 6 fields"),
        ("20110103 090100;1;2;0.5;1;5\n", {"interval": "1m", "column_map": {"ts": "a"}}, "needs a header"),
        ("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n", {"fmt": "csv"}, "unknown format"),
        ("date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n", {"adjust": "total"}, "unknown adjust"),
        (
            "date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n",
            {"bar_label": "mid"},
            "unknown bar_label",
        ),
        (
            "date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1,1\n",
            {"source_tz": "Mars/Base"},
            "time zone",
        ),
    ],
)
def test_bad_input_raises_a_clear_ingest_error(
    tmp_path: Path, text: str, options: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path / "input.csv", text)
    with pytest.raises(IngestError, match=message) as caught:
        read_source(path, **options)
    assert "\n" not in str(caught.value)
    if "input.csv" not in str(caught.value):  # option errors name the option, not the file
        assert "unknown" in str(caught.value)


def test_unknown_interval_is_rejected(shared_data: Path) -> None:
    with pytest.raises(DataError, match="unknown bar interval"):
        read_source(shared_data / "pandas_ta/SPY_D.csv", interval="2d")


@pytest.mark.parametrize(
    ("symbol", "message"), [(None, "several tickers"), ("TSLA", "'TSLA' is not in the file")]
)
def test_archive_ticker_must_be_named_and_known(shared_data: Path, symbol: str | None, message: str) -> None:
    with pytest.raises(IngestError, match=message) as caught:
        read_source(shared_data / ARCHIVE, symbol=symbol)
    assert all(ticker in str(caught.value) for ticker in ARCHIVE_TICKERS)


def test_files_of_different_layouts_are_refused(shared_data: Path) -> None:
    data = shared_data / "pyalgotrade/testcases/data"
    with pytest.raises(IngestError, match="different layouts"):
        read_source([data / "orcl-2010-googlefinance.csv", data / "orcl-2000-yahoofinance.csv"])
    bars = read_source(
        [data / "orcl-2000-yahoofinance.csv", data / "orcl-2001-yahoofinance.csv"], fmt="yahoo"
    )
    assert bars.frame.height == 252 + 248


def test_files_with_and_without_utc_offsets_are_refused(tmp_path: Path) -> None:
    header = "timestamp,open,high,low,close,volume\n"
    aware = _write(tmp_path / "a.csv", header + "2020-01-02T09:30:00-05:00,1,2,0.5,1.5,10\n")
    naive = _write(tmp_path / "b.csv", header + "2020-01-02T09:31:00,1,2,0.5,1.5,10\n")
    with pytest.raises(IngestError, match="some files carry UTC offsets"):
        read_source([aware, naive], interval="1m")


def test_bom_crlf_blank_lines_and_thousands(tmp_path: Path) -> None:
    lines = [
        "\ufeffDate,Open,High,Low,Close,Volume",
        "",
        '2020-01-02,1,2,0.5,1.5,"1,000"',
        "2020-01-03,1,2,0.5,n/a,5",
    ]
    text = "\r\n".join(lines) + "\r\n"
    path = tmp_path / "quirks.csv"
    path.write_bytes(text.encode())
    bars = read_source(path)
    assert bars.fmt == "yahoo" and bars.frame.height == 2
    assert bars.frame["volume"].to_list() == [1000.0, 5.0]
    assert bars.frame["close"].to_list() == [1.5, None]
    assert any("1 non-numeric close" in n and "2020-01-03" in n for n in bars.notes)


def test_parsing_is_deterministic(shared_data: Path) -> None:
    path = shared_data / "pyalgotrade/testcases/data/WIKI-ORCL-2000-quandl.csv"
    first, second = read_source(path, adjust="split"), read_source(path, adjust="split")
    assert first.frame.equals(second.frame) and first.notes == second.notes
