"""Bar validation: real defects in the corpus are caught by the right check, clean files pass untouched, and
every check, mode and profile behaves as documented on small hand-built frames."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader.calendar import get_calendar
from trader.data.sanity import (
    CHECKS,
    SanityReport,
    check_feature_lookahead,
    regular_hours_mask,
    validate_bars,
)
from trader.errors import ConfigError, SanityError, SchemaError

UTC = dt.UTC
CAL = get_calendar("XNYS")
PYALGO = "pyalgotrade/samples/data"
PYALGO_TC = "pyalgotrade/testcases/data"


# ----------------------------------------------------------------------------------------------------------
# Tiny local CSV readers (the real ingester lives elsewhere; these only do what the tests need)
# ----------------------------------------------------------------------------------------------------------
def read_daily(*paths: Path, sort: bool = True, date_format: str = "%Y-%m-%d") -> pl.DataFrame:
    """Yahoo / Quandl WIKI / pandas_ta / Google daily CSVs: ts = session date at 00:00 UTC, prices as text."""
    frames = []
    for path in paths:
        raw = pl.read_csv(path, infer_schema=False)
        by_name = {c.strip().lower(): c for c in raw.columns}
        date = pl.col(by_name["date"]).str.to_date(date_format)
        frames.append(
            raw.select(
                date.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"),
                *(pl.col(by_name[c]).alias(c) for c in ("open", "high", "low", "close", "volume")),
            )
        )
    frame = pl.concat(frames)
    return frame.sort("ts") if sort else frame


def read_nt_minutes(path: Path) -> pl.DataFrame:
    """NinjaTrader 1-minute export: ``YYYYMMDD HHMMSS;o;h;l;c;v`` in UTC, labelled at the bar end."""
    raw = pl.read_csv(
        path, has_header=False, separator=";", new_columns=["end", "open", "high", "low", "close", "volume"]
    )
    end = pl.col("end").str.to_datetime("%Y%m%d %H%M%S", time_zone="UTC", time_unit="ns")
    return raw.select(
        (end - pl.duration(minutes=1, time_unit="ns")).alias("ts"),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    ).sort("ts")


def enforce_error(frame: pl.DataFrame, **kwargs) -> SanityReport:
    """Run enforce and return the report carried by the SanityError it must raise."""
    kwargs.setdefault("symbol", "TEST")
    kwargs.setdefault("interval", "1d")
    with pytest.raises(SanityError) as caught:
        validate_bars(frame, **kwargs)
    assert isinstance(caught.value.report, SanityReport)
    return caught.value.report


def only(report: SanityReport, check: str, severity: str | None = None):
    found = [f for f in report.findings if f.check == check and (severity is None or f.severity == severity)]
    assert len(found) == 1, report.format()
    return found[0]


# ----------------------------------------------------------------------------------------------------------
# Synthetic frames
# ----------------------------------------------------------------------------------------------------------
def daily_bars(start: str = "2019-01-02", end: str = "2019-06-28", seed: int = 7) -> pl.DataFrame:
    """A clean random-walk daily series on XNYS sessions (0.8 % daily volatility)."""
    days = CAL.sessions(start, end)
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, len(days))))
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0.0, 0.002, len(days)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0.0, 0.005, len(days)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.0, 0.005, len(days)))
    return pl.DataFrame(
        {
            "ts": pl.Series(days).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(1_000, 5_000, len(days)).astype(float),
        }
    )


def minute_bars(days: list[dt.date], seed: int = 3) -> pl.DataFrame:
    """Clean 1-minute bars covering every regular minute of ``days``."""
    stamps = np.concatenate([CAL.session_minutes(d) for d in days])
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0005, len(stamps))))
    open_ = np.concatenate(([50.0], close[:-1]))
    return pl.DataFrame(
        {
            "ts": pl.Series(stamps).dt.replace_time_zone("UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0001,
            "low": np.minimum(open_, close) * 0.9999,
            "close": close,
            "volume": np.full(len(stamps), 100.0),
        }
    )


def set_value(frame: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    """Copy of ``frame`` with columns of one row replaced (dtype kept when possible)."""
    exprs = []
    for name, value in values.items():
        mask = pl.int_range(pl.len()) == row
        exprs.append(pl.when(mask).then(pl.lit(value)).otherwise(pl.col(name)).alias(name))
    return frame.with_columns(exprs)


def scale_from(frame: pl.DataFrame, row: int, factor: float) -> pl.DataFrame:
    """Prices from ``row`` on multiplied by ``factor`` (an unadjusted split is factor 1/N)."""
    after = pl.int_range(pl.len()) >= row
    return frame.with_columns(
        pl.when(after).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")
    )


# ==========================================================================================================
# Real defects in the corpus
# ==========================================================================================================
def test_spy_2015_low_above_open_rows_are_ohlc_errors(shared_data):
    frame = read_daily(shared_data / "mplfinance/yahoofinance-SPY-20080101-20180101.csv")
    report = enforce_error(frame, symbol="SPY")
    finding = only(report, "ohlc")
    assert [f.check for f in report.errors()] == ["ohlc"]
    assert finding.count == 2
    assert finding.first_ts == ("2015-03-05", "2015-03-30")
    assert (
        finding.line("SPY", "1d") == "SPY 1d ohlc error: 2 rows (low > open) first at 2015-03-05, 2015-03-30"
    )


def test_spy_2015_repair_drops_the_two_rows_and_leaves_one_session_gaps(shared_data):
    frame = read_daily(shared_data / "mplfinance/yahoofinance-SPY-20080101-20180101.csv")
    out, report = validate_bars(frame, symbol="SPY", interval="1d", mode="repair")
    assert report.ok and out.height == frame.height - 2
    assert only(report, "ohlc").repaired == 2
    kept = set(out["ts"].dt.date().to_list())
    assert dt.date(2015, 3, 5) not in kept and dt.date(2015, 3, 30) not in kept
    gap = only(report, "gaps")
    assert gap.severity == "warning" and gap.count == 2
    validate_bars(out, symbol="SPY", interval="1d")  # the repaired frame passes enforce


def test_malformed_orcl_open_is_a_missing_value(shared_data):
    frame = read_daily(
        shared_data / PYALGO_TC / "orcl-2010-googlefinance-malformed.csv", date_format="%d-%b-%y"
    )
    report = enforce_error(frame, symbol="ORCL")
    finding = only(report, "missing", "error")
    assert finding.count == 1
    assert finding.first_ts == ("2010-12-30",)
    assert "'-'" in finding.message and "open" in finding.message
    assert [f.check for f in report.errors()] == ["missing"]


def test_malformed_orcl_within_max_na_fraction_is_a_warning_and_keeps_the_row(shared_data):
    frame = read_daily(
        shared_data / PYALGO_TC / "orcl-2010-googlefinance-malformed.csv", date_format="%d-%b-%y"
    )
    out, report = validate_bars(frame, symbol="ORCL", interval="1d", max_na_fraction=0.01)
    assert only(report, "missing").severity == "warning"
    assert out.height == frame.height
    assert out.filter(pl.col("ts").dt.date() == dt.date(2010, 12, 30))["open"].is_null().all()


def test_clean_orcl_google_file_passes(shared_data):
    frame = read_daily(shared_data / PYALGO_TC / "orcl-2010-googlefinance.csv", date_format="%d-%b-%y")
    out, report = validate_bars(frame, symbol="ORCL", interval="1d")
    assert report.findings == [] and out["open"].dtype == pl.Float64


@pytest.mark.parametrize(
    ("files", "label", "dates"),
    [
        ([f"{PYALGO}/VTI-2008-yahoofinance.csv"], "2:1 split", ("2008-06-18",)),
        ([f"{PYALGO_TC}/orcl-2000-yahoofinance.csv"], "2:1 split", ("2000-01-19", "2000-10-13")),
        ([f"{PYALGO_TC}/WIKI-ORCL-2000-quandl.csv"], "2:1 split", ("2000-01-19", "2000-10-13")),
        ([f"{PYALGO}/WIKI-AIG-2009-quandl.csv"], "1:20 reverse split", ("2009-07-01",)),
    ],
)
def test_unadjusted_splits_are_outlier_errors_in_strict(shared_data, files, label, dates):
    frame = read_daily(*(shared_data / f for f in files))
    report = enforce_error(frame)
    finding = only(report, "outliers", "error")
    assert finding.first_ts == dates
    assert finding.message.count(f"possible unadjusted {label}") == len(dates)
    assert [f.check for f in report.errors()] == ["outliers"]


def test_unadjusted_split_is_a_warning_in_relaxed(shared_data):
    frame = read_daily(shared_data / PYALGO / "VTI-2008-yahoofinance.csv")
    out, report = validate_bars(frame, symbol="VTI", interval="1d", profile="relaxed")
    finding = only(report, "outliers", "warning")
    assert "2:1 split on 2008-06-18" in finding.message
    assert out.height == frame.height


def test_the_2010_hole_in_wiki_aes_is_a_gap_error_in_strict(shared_data):
    files = [shared_data / PYALGO / f"WIKI-AES-{year}-quandl.csv" for year in (2008, 2009, 2011)]
    frame = read_daily(*files)
    report = enforce_error(frame, symbol="AES")
    gap = only(report, "gaps", "error")
    assert gap.count == CAL.session_count("2010-01-01", "2010-12-31") == 252
    assert gap.first_ts == ("2010-01-04",)
    assert "2010-01-04..2010-12-31" in gap.message
    # The year-long return across the hole is not scored as a jump.
    assert [f.check for f in report.findings] == ["gaps"]
    _, relaxed = validate_bars(frame, symbol="AES", interval="1d", profile="relaxed")
    assert only(relaxed, "gaps").severity == "warning"


def test_real_closures_are_not_gaps(shared_data):
    frame = read_daily(shared_data / "pandas_ta/SPY_D.csv")
    days = set(frame["ts"].dt.date().to_list())
    closures = [dt.date(2001, 9, d) for d in (11, 12, 13, 14)] + [dt.date(2007, 1, 2)]
    closures += [dt.date(2012, 10, 29), dt.date(2012, 10, 30)]
    assert not days & set(closures)
    assert {dt.date(2001, 9, 10), dt.date(2001, 9, 17), dt.date(2012, 10, 26), dt.date(2012, 10, 31)} <= days
    _, report = validate_bars(frame, symbol="SPY", interval="1d")
    assert report.findings == []


@pytest.mark.parametrize(
    "files",
    [
        ["mplfinance/yahoofinance-AAPL-20040819-20180120.csv"],
        ["mplfinance/yahoofinance-GOOG-20040819-20180120.csv"],
        ["mplfinance/yahoofinance-INTC-19950101-20040412.csv"],
        ["pandas_ta/SPY_D.csv"],
        [f"{PYALGO}/SPY-{year}-yahoofinance.csv" for year in range(2007, 2014)],
    ],
    ids=["AAPL", "GOOG", "INTC", "SPY_D", "SPY-2007..2013"],
)
def test_clean_files_pass_without_any_finding(shared_data, files):
    frame = read_daily(*(shared_data / f for f in files))
    out, report = validate_bars(frame, symbol="CLEAN", interval="1d")
    assert report.findings == [], report.format()
    assert report.ok and out.height == frame.height
    assert out.schema["ts"] == pl.Datetime("ns", "UTC") and out["ts"].is_sorted()


def test_descending_source_files_are_a_layout_warning_and_come_out_sorted(shared_data):
    files = [shared_data / PYALGO / f"SPY-{year}-yahoofinance.csv" for year in range(2007, 2014)]
    # Each file runs newest first; the files themselves follow in year order.
    for chosen in (files[1:2], files):
        frame = read_daily(*chosen, sort=False)
        out, report = validate_bars(frame, symbol="SPY", interval="1d")
        finding = only(report, "timestamps", "warning")
        assert finding.count == frame.height - len(chosen)  # every step back in time, within each file
        assert [f.check for f in report.findings] == ["timestamps"]
        assert out.equals(validate_bars(frame.sort("ts"), symbol="SPY", interval="1d")[0])


def test_interleaved_rows_are_unsorted_errors_that_repair_sorts(shared_data):
    frame = read_daily(shared_data / PYALGO / "SPY-2008-yahoofinance.csv")
    order = np.random.default_rng(5).permutation(frame.height)
    shuffled = frame[order.tolist()]
    finding = only(enforce_error(shuffled, symbol="SPY"), "timestamps", "error")
    assert "interleaved" in finding.message
    out, repaired = validate_bars(shuffled, symbol="SPY", interval="1d", mode="repair")
    assert only(repaired, "timestamps").repaired == finding.count
    assert out["ts"].is_sorted() and out.height == frame.height
    _, relaxed = validate_bars(shuffled, symbol="SPY", interval="1d", profile="relaxed")
    assert only(relaxed, "timestamps").severity == "warning"


# ----------------------------------------------------------------------------------------------------------
# Real intraday bars (NinjaTrader SPY, January 2011, UTC, with pre- and post-market)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nt_january(shared_data) -> pl.DataFrame:
    return read_nt_minutes(shared_data / PYALGO_TC / "nt-spy-minute-2011.csv.gz")


def _regular_by_hand(frame: pl.DataFrame) -> pl.Series:
    """January 2011 is EST: regular hours are 14:30-21:00 UTC on weekdays (no holiday rows in the file)."""
    minute = pl.col("ts").dt.hour().cast(pl.Int32) * 60 + pl.col("ts").dt.minute().cast(pl.Int32)
    weekday = pl.col("ts").dt.weekday() <= 5
    return frame.select(weekday & (minute >= 14 * 60 + 30) & (minute < 21 * 60)).to_series()


def test_extended_hours_rows_are_session_errors_with_regular_hours(nt_january):
    expected_out = int((~_regular_by_hand(nt_january)).sum())
    assert expected_out > 6000
    report = enforce_error(nt_january, symbol="SPY", interval="1m")
    finding = only(report, "sessions", "error")
    assert finding.count == expected_out
    assert finding.first_ts[0] == "2011-01-03T09:00:00Z"


def test_regular_hours_mask_keeps_exactly_the_regular_session(nt_january):
    mask = regular_hours_mask(nt_january["ts"], CAL, "1m")
    assert mask.to_list() == _regular_by_hand(nt_january).to_list()
    regular = nt_january.filter(mask)
    assert regular.height == CAL.session_count("2011-01-03", "2011-01-31") * 390
    out, report = validate_bars(regular, symbol="SPY", interval="1m")
    assert report.findings == [] and out.height == regular.height


def test_extended_hours_rows_pass_with_hours_extended_and_missing_minutes_are_counted(nt_january):
    _, report = validate_bars(nt_january, symbol="SPY", interval="1m", hours="extended")
    assert [f.check for f in report.findings] == ["gaps"]
    # Count by hand: every minute from 09:00 to 01:00 UTC (04:00-20:00 EST) of each session, between the
    # first and last bar, that has no row.
    present = set(nt_january["ts"].to_list())
    first, last = min(present), max(present)
    expected = 0
    for day in CAL.sessions("2011-01-03", "2011-01-31"):
        start = dt.datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        for k in range(16 * 60):
            minute = start + dt.timedelta(minutes=k)
            expected += first <= minute <= last and minute not in present
    gap = only(report, "gaps", "warning")
    assert gap.count == expected > 4000


def test_missing_regular_minutes_are_counted_as_gaps(nt_january):
    regular = nt_january.filter(regular_hours_mask(nt_january["ts"], CAL, "1m"))
    holes = [dt.datetime(2011, 1, 5, 15, m, tzinfo=UTC) for m in (0, 1, 2)]
    holes.append(dt.datetime(2011, 1, 20, 20, 59, tzinfo=UTC))
    holed = regular.filter(~pl.col("ts").is_in(holes))
    out, report = validate_bars(holed, symbol="SPY", interval="1m")
    assert out.height == regular.height - 4
    gap = only(report, "gaps", "warning")
    assert gap.count == 4
    assert gap.first_ts == (
        "2011-01-05T15:00:00Z",
        "2011-01-05T15:01:00Z",
        "2011-01-05T15:02:00Z",
        "2011-01-20T20:59:00Z",
    )


# ==========================================================================================================
# Synthetic defects, one per check
# ==========================================================================================================
def test_missing_required_column_is_a_schema_error_in_every_mode():
    frame = daily_bars().drop("volume")
    report = enforce_error(frame)
    finding = only(report, "schema", "error")
    assert "volume" in finding.message
    for mode in ("warn", "repair"):
        with pytest.raises(SanityError, match="volume"):
            validate_bars(frame, symbol="X", interval="1d", mode=mode)
    with pytest.raises(SchemaError, match="volume"):
        validate_bars(frame, symbol="X", interval="1d", mode="off")


def test_uncastable_column_types_are_schema_errors():
    frame = daily_bars().with_columns(pl.col("open") > 0)
    assert "open" in only(enforce_error(frame), "schema").message
    frame = daily_bars().with_columns(pl.int_range(pl.len()).alias("ts"))
    assert "ts" in only(enforce_error(frame), "schema").message
    with pytest.raises(SchemaError, match="polars DataFrame"):
        validate_bars({"ts": []}, symbol="X", interval="1d")  # type: ignore[arg-type]


def test_empty_frame_is_an_error_in_strict_and_a_warning_in_relaxed():
    empty = daily_bars().head(0)
    assert only(enforce_error(empty), "schema").message == "no bars"
    out, report = validate_bars(empty, symbol="X", interval="1d", profile="relaxed")
    assert out.height == 0 and only(report, "schema").severity == "warning"


def test_string_numbers_are_parsed_and_garbage_is_missing():
    frame = daily_bars().with_columns(
        pl.col(c).cast(pl.String) for c in ("open", "high", "low", "close", "volume")
    )
    frame = set_value(frame, 10, close="n/a")
    frame = set_value(frame, 20, volume=" ")
    report = enforce_error(frame)
    finding = only(report, "missing", "error")
    assert finding.count == 2
    assert "'n/a'" in finding.message
    assert finding.first_ts == tuple(str(d) for d in daily_bars()["ts"].dt.date().gather([10, 20]).to_list())


@pytest.mark.parametrize(("limit", "severity"), [(0.0, "error"), (0.019, "error"), (0.02, "warning")])
def test_max_na_fraction_decides_the_missing_severity(limit, severity):
    frame = daily_bars().head(100)
    frame = set_value(frame, 3, open=None)
    frame = set_value(frame, 7, low=float("nan"))  # 2 of 100 rows: a share of 0.02
    if severity == "error":
        finding = only(enforce_error(frame, max_na_fraction=limit), "missing")
    else:
        _, report = validate_bars(frame, symbol="X", interval="1d", max_na_fraction=limit)
        finding = only(report, "missing")
    assert finding.severity == severity and finding.count == 2


def test_non_positive_prices_are_errors_but_zero_volume_is_fine():
    frame = set_value(daily_bars(), 5, low=0.0)
    frame = set_value(frame, 9, close=-1.0, low=-2.0)
    frame = set_value(frame, 12, volume=0.0)
    report = enforce_error(frame)
    finding = only(report, "non_positive")
    assert finding.count == 2 and "low <= 0" in finding.message and "close <= 0" in finding.message
    assert not [f for f in report.findings if f.check == "volume"]


@pytest.mark.parametrize(
    ("change", "relation"),
    [
        ({"high": 90.0}, "high < open"),
        ({"low": 500.0, "high": 600.0}, "low > open"),
    ],
)
def test_ohlc_inconsistency_is_an_error(change, relation):
    frame = set_value(daily_bars(), 30, **change)
    finding = only(enforce_error(frame), "ohlc")
    assert finding.count == 1 and relation in finding.message


def test_swapped_high_and_low_break_every_relation():
    frame = daily_bars()
    row = frame.row(40, named=True)
    frame = set_value(frame, 40, high=row["low"], low=row["high"])
    finding = only(enforce_error(frame), "ohlc")
    assert finding.count == 1 and "low > high" in finding.message


def test_relaxed_ohlc_tolerates_one_basis_point():
    frame = daily_bars()
    row = frame.row(50, named=True)
    frame = set_value(frame, 50, low=row["open"] * (1 + 0.5e-4), high=max(row["high"], row["open"] * 1.01))
    frame = set_value(frame, 50, close=max(row["close"], row["open"] * 1.001))
    assert only(enforce_error(frame), "ohlc").count == 1
    _, report = validate_bars(frame, symbol="X", interval="1d", profile="relaxed")
    assert report.findings == []


def test_negative_volume_is_an_error():
    frame = set_value(daily_bars(), 17, volume=-100.0)
    finding = only(enforce_error(frame), "volume")
    assert finding.count == 1 and finding.first_ts == (str(daily_bars()["ts"].dt.date()[17]),)


def test_exact_duplicate_rows_are_errors_that_repair_drops():
    frame = daily_bars()
    doubled = pl.concat([frame, frame.slice(10, 3)]).sort("ts")
    finding = only(enforce_error(doubled), "timestamps", "error")
    assert finding.count == 3 and "duplicat" in finding.message
    out, report = validate_bars(doubled, symbol="X", interval="1d", mode="repair")
    assert out.select(frame.columns).equals(frame) and only(report, "timestamps", "error").repaired == 3


def test_same_timestamp_with_different_values_is_not_repairable():
    frame = daily_bars()
    clash = frame.slice(10, 1).with_columns(pl.col("volume") + 1)
    conflicting = pl.concat([frame, clash]).sort("ts")
    assert only(enforce_error(conflicting), "timestamps").count == 1
    with pytest.raises(SanityError, match="different bars") as caught:
        validate_bars(conflicting, symbol="X", interval="1d", mode="repair")
    assert "not safely repairable" in str(caught.value)


def test_intraday_bars_off_the_minute_grid_are_errors():
    frame = minute_bars([dt.date(2019, 11, 27)])
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.col("ts") + pl.duration(seconds=30, time_unit="ns"))
        .otherwise(pl.col("ts"))
    )
    finding = only(enforce_error(frame, interval="1m"), "timestamps")
    assert finding.count == 1 and finding.first_ts == ("2019-11-27T14:35:30Z",)


def test_daily_bars_stamped_with_a_time_are_labelled_by_session_date():
    frame = daily_bars().with_columns(
        (
            pl.col("ts").dt.replace_time_zone(None) + pl.duration(hours=16, time_unit="ns")
        ).dt.replace_time_zone("America/New_York")
    )
    out, report = validate_bars(frame, symbol="X", interval="1d")
    assert out["ts"].equals(daily_bars()["ts"])
    assert only(report, "timestamps").severity == "warning"


def test_naive_intraday_timestamps_need_a_source_time_zone():
    frame = minute_bars([dt.date(2019, 11, 27)]).with_columns(
        pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)
    )
    for mode in ("enforce", "warn", "repair"):
        with pytest.raises(SanityError, match="--source-tz") as caught:
            validate_bars(frame, symbol="X", interval="1m", mode=mode)
        assert only(caught.value.report, "timezone").severity == "error"
    out, report = validate_bars(frame, symbol="X", interval="1m", source_tz="America/New_York")
    assert out["ts"][0] == dt.datetime(2019, 11, 27, 14, 30, tzinfo=UTC)
    assert only(report, "timezone").severity == "warning"
    _, repaired = validate_bars(frame, symbol="X", interval="1m", source_tz="America/New_York", mode="repair")
    assert only(repaired, "timezone").repaired == frame.height


def test_iso_strings_with_offsets_are_converted_and_mixed_ones_need_a_zone():
    clean = minute_bars([dt.date(2011, 1, 3)]).head(3)
    offsets = ["2011-01-03T09:30:00-05:00", "2011-01-03 14:31:00Z", "2011-01-03T15:32:00+01:00"]
    out, report = validate_bars(clean.with_columns(ts=pl.Series(offsets)), symbol="X", interval="1m")
    assert out["ts"].to_list() == clean["ts"].to_list() and report.findings == []
    mixed = clean.with_columns(ts=pl.Series([offsets[0], "2011-01-03 09:31:00", offsets[2]]))
    finding = only(enforce_error(mixed, interval="1m"), "timezone")
    assert "mixed" in finding.message and "--source-tz" in finding.message
    out, _ = validate_bars(mixed, symbol="X", interval="1m", source_tz="America/New_York")
    assert out["ts"].to_list() == clean["ts"].to_list()


def test_local_times_that_do_not_exist_are_timezone_errors():
    naive = pl.Series([dt.datetime(2019, 3, 8, 9, 30), dt.datetime(2019, 3, 10, 2, 30)])
    frame = minute_bars([dt.date(2019, 3, 8)]).head(2).with_columns(ts=naive)
    report = enforce_error(frame, interval="1m", source_tz="America/New_York")
    assert "DST" in only(report, "timezone", "error").message


def test_daily_bars_on_non_sessions_are_session_errors_that_repair_drops():
    frame = daily_bars()
    extra = frame.slice(0, 2).with_columns(
        ts=pl.Series([dt.datetime(2019, 1, 5), dt.datetime(2019, 7, 4)], dtype=pl.Datetime("ns", "UTC"))
    )
    bad = pl.concat([frame, extra]).sort("ts")
    finding = only(enforce_error(bad), "sessions", "error")
    assert finding.count == 2 and finding.first_ts == ("2019-01-05", "2019-07-04")
    out, report = validate_bars(bad, symbol="X", interval="1d", mode="repair")
    assert out.select(frame.columns).equals(frame) and only(report, "sessions").repaired == 2
    _, relaxed = validate_bars(bad, symbol="X", interval="1d", profile="relaxed")
    assert only(relaxed, "sessions").severity == "warning"


def test_intraday_bar_after_an_early_close_is_outside_the_session():
    frame = minute_bars([dt.date(2019, 11, 29)])  # closes 18:00 UTC
    late = frame.tail(1).with_columns(pl.col("ts") + pl.duration(minutes=1, time_unit="ns"))
    assert late["ts"][0] == dt.datetime(2019, 11, 29, 18, 0, tzinfo=UTC)
    finding = only(enforce_error(pl.concat([frame, late]), interval="1m"), "sessions")
    assert finding.first_ts == ("2019-11-29T18:00:00Z",)


@pytest.mark.parametrize(("dropped", "severity"), [(3, "warning"), (5, "warning"), (6, "error")])
def test_missing_sessions_are_gaps_and_long_runs_are_errors_in_strict(dropped, severity):
    frame = daily_bars()
    holed = pl.concat([frame.head(40), frame.slice(40 + dropped)])
    if severity == "error":
        gap = only(enforce_error(holed), "gaps")
    else:
        _, report = validate_bars(holed, symbol="X", interval="1d")
        gap = only(report, "gaps")
    assert gap.severity == severity and gap.count == dropped
    assert gap.first_ts == (str(frame["ts"].dt.date()[40]),)
    _, relaxed = validate_bars(holed, symbol="X", interval="1d", profile="relaxed")
    assert only(relaxed, "gaps").severity == "warning"


def test_intraday_session_without_bars_is_a_missing_session():
    days = CAL.sessions("2019-11-18", "2019-11-22")
    frame = minute_bars([d for d in days if d != dt.date(2019, 11, 20)])
    _, report = validate_bars(frame, symbol="X", interval="1m")
    gap = only(report, "gaps")
    assert gap.count == 1 and gap.first_ts == ("2019-11-20",)


@pytest.mark.parametrize(
    ("factor", "label"),
    [
        (1 / 3, "3:1 split"),
        (2 / 3, "3:2 split"),
        (1 / 7, "7:1 split"),
        (10.0, "1:10 reverse split"),
        (2.0, "1:2 reverse split"),
    ],
)
def test_unadjusted_split_ratios_are_detected(factor, label):
    frame = scale_from(daily_bars(), 60, factor)
    finding = only(enforce_error(frame), "outliers", "error")
    day = str(daily_bars()["ts"].dt.date()[60])
    assert f"possible unadjusted {label} on {day}" in finding.message
    assert finding.first_ts == (day,)


def test_a_bad_print_that_reverts_is_a_spike_warning():
    frame = daily_bars()
    row = frame.row(70, named=True)
    frame = set_value(frame, 70, **{c: row[c] * 10 for c in ("open", "high", "low", "close")})
    out, report = validate_bars(frame, symbol="X", interval="1d")
    finding = only(report, "outliers", "warning")
    assert finding.count == 1 and "spike" in finding.message
    assert finding.first_ts == (str(row["ts"].date()),)
    assert out.height == frame.height


def test_a_level_shift_that_is_no_split_ratio_is_a_warning():
    frame = scale_from(daily_bars(), 60, 0.3)  # ln(1/0.3) = 1.20: between the 3:1 and 4:1 ratios
    _, report = validate_bars(frame, symbol="X", interval="1d")
    finding = only(report, "outliers", "warning")
    assert "level shift" in finding.message and "split" not in finding.message


def test_ordinary_moves_are_not_outliers():
    frame = daily_bars(start="2015-01-02", end="2019-12-31", seed=11)
    _, report = validate_bars(frame, symbol="X", interval="1d")
    assert report.findings == []


def test_bars_not_closed_by_as_of_are_lookahead_errors():
    frame = daily_bars()
    last = frame["ts"].dt.date()[-1]  # 2019-06-28, closes 20:00 UTC
    before_close = dt.datetime(last.year, last.month, last.day, 19, 59, tzinfo=UTC)
    finding = only(enforce_error(frame, as_of=before_close), "lookahead")
    assert finding.count == 1 and finding.first_ts == (str(last),)
    after_close = dt.datetime(last.year, last.month, last.day, 20, 0, tzinfo=UTC)
    _, report = validate_bars(frame, symbol="X", interval="1d", as_of=after_close)
    assert report.findings == []
    minutes = minute_bars([dt.date(2019, 11, 27)])
    as_of = dt.datetime(2019, 11, 27, 15, 0, tzinfo=UTC)  # the 14:59 bar closes at 15:00
    assert only(enforce_error(minutes, interval="1m", as_of=as_of), "lookahead").count == 390 - 30
    with pytest.raises(ConfigError, match="as_of"):
        validate_bars(frame, symbol="X", interval="1d", as_of=dt.datetime(2019, 6, 28))


# ==========================================================================================================
# Modes, profiles, the report
# ==========================================================================================================
def _broken() -> pl.DataFrame:
    """Daily bars with one defect for each repairable row check, a duplicate row and a shuffle."""
    frame = daily_bars()
    frame = set_value(frame, 10, open=None)
    frame = set_value(frame, 20, close=-5.0)
    frame = set_value(frame, 30, high=1.0)
    frame = set_value(frame, 40, volume=-1.0)
    return pl.concat([frame.slice(50), frame.slice(0, 50), frame.slice(60, 1)])


def test_enforce_raises_one_line_naming_symbol_checks_counts_and_dates():
    with pytest.raises(SanityError) as caught:
        validate_bars(_broken(), symbol="ACME", interval="1d")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("ACME 1d")
    for check in ("missing", "non_positive", "ohlc", "volume", "timestamps"):
        assert f"{check}: " in message
    assert str(daily_bars()["ts"].dt.date()[10]) in message


def test_warn_keeps_every_row_and_reports_in_check_order():
    broken = _broken()
    out, report = validate_bars(broken, symbol="ACME", interval="1d", mode="warn")
    assert out.height == broken.height and out["ts"].is_sorted()
    assert not report.ok
    order = [CHECKS.index(f.check) for f in report.findings]
    assert order == sorted(order)
    assert {f.check for f in report.errors()} == {"missing", "non_positive", "ohlc", "volume", "timestamps"}


def test_repair_drops_invalid_rows_reports_counts_and_passes_enforce_afterwards():
    out, report = validate_bars(_broken(), symbol="ACME", interval="1d", mode="repair")
    assert report.ok and out.height == daily_bars().height - 4
    repaired = [(f.check, f.repaired) for f in report.findings if f.repaired]
    # One descent where the shuffled halves meet, and one exact duplicate row.
    expected = [
        ("missing", 1),
        ("non_positive", 1),
        ("ohlc", 1),
        ("volume", 1),
        ("timestamps", 1),
        ("timestamps", 1),
    ]
    assert repaired == expected
    again, second = validate_bars(out, symbol="ACME", interval="1d")
    assert again.equals(out) and second.errors() == []


def test_off_only_conforms():
    out, report = validate_bars(_broken(), symbol="ACME", interval="1d", mode="off")
    assert report.findings == [] and report.ok
    assert out.columns == ["ts", "open", "high", "low", "close", "volume", "vwap", "trades"]
    assert out.height == _broken().height and out["ts"].is_sorted()


def test_report_to_dict_is_json_and_format_lists_every_finding():
    _, report = validate_bars(_broken(), symbol="ACME", interval="1d", mode="warn")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["symbol"] == "ACME"
    assert [f["check"] for f in data["findings"]] == [f.check for f in report.findings]
    lines = report.format().splitlines()
    assert lines[0].startswith("ACME 1d: FAILED")
    assert len(lines) == 1 + len(report.findings)
    assert all(line.startswith("ACME 1d ") for line in lines[1:])


def test_same_input_gives_the_same_report():
    first = validate_bars(_broken(), symbol="ACME", interval="1d", mode="warn")[1].to_dict()
    second = validate_bars(_broken(), symbol="ACME", interval="1d", mode="warn")[1].to_dict()
    assert first == second


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "fix"},
        {"profile": "lenient"},
        {"hours": "overnight"},
        {"max_na_fraction": 1.5},
        {"source_tz": "Mars/Olympus"},
    ],
)
def test_bad_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        validate_bars(daily_bars(), symbol="X", interval="1d", **kwargs)


def test_unknown_interval_is_a_schema_error():
    with pytest.raises(SchemaError, match="interval"):
        validate_bars(daily_bars(), symbol="X", interval="2d")


def test_regular_hours_mask_for_daily_bars_marks_sessions():
    ts = pl.Series(
        [dt.datetime(2025, 7, 3), dt.datetime(2025, 7, 4), dt.datetime(2025, 7, 5)]
    ).dt.replace_time_zone("UTC")
    assert regular_hours_mask(ts, CAL, "1d").to_list() == [True, False, False]
    with pytest.raises(SchemaError):
        regular_hours_mask(ts.dt.replace_time_zone(None), CAL, "1d")


def test_five_clean_years_of_minutes_raise_no_false_alarm():
    # Speed of this path is measured in bench/data.py, not asserted here.
    days = CAL.sessions("2015-01-01", "2019-12-31")
    frame = minute_bars(days)
    assert frame.height > 480_000
    out, report = validate_bars(frame, symbol="X", interval="1m")
    assert report.findings == [] and out.height == frame.height


# ==========================================================================================================
# Feature lookahead
# ==========================================================================================================
def test_check_feature_lookahead_flags_centred_windows_only():
    frame = daily_bars()

    def features(bars: pl.DataFrame) -> pl.DataFrame:
        return bars.with_columns(
            trailing=pl.col("close").rolling_mean(10),
            centred=pl.col("close").rolling_mean(10, center=True),
            next_close=pl.col("close").shift(-1),
            ewm=pl.col("close").ewm_mean(span=20),
            range_pct=(pl.col("high") - pl.col("low")) / pl.col("close"),
        )

    assert check_feature_lookahead(features, frame) == ["centred", "next_close"]


def test_check_feature_lookahead_rejects_misaligned_output():
    with pytest.raises(Exception, match="one row per bar"):
        check_feature_lookahead(lambda bars: bars.head(5), daily_bars())
