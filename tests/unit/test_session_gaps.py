"""Gap detection as bars arrive, the re-request policy, and quality recomputed when gaps fill."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from trader.calendar import get_calendar
from trader.config import GapFillerSettings
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.session import Bar, FillRequest, Gap, GapFiller, GapTracker, SessionData

MIN = 60_000_000_000
SEC = 1_000_000_000
CAL = get_calendar()
DAY = "2019-11-26"
OPEN = int(CAL.open_close(DAY)[0].value)


def test_a_missing_run_of_minutes_is_detected_at_once() -> None:
    tracker = GapTracker.for_session(CAL, DAY, "1m")
    assert tracker.expected.size == 390
    for k in range(10):
        assert tracker.on_bar(OPEN + k * MIN) == []
    assert tracker.on_bar(OPEN + 15 * MIN) == [OPEN + k * MIN for k in range(10, 15)]
    assert tracker.missing() == [OPEN + k * MIN for k in range(10, 15)]
    assert tracker.gaps() == [Gap(OPEN + 10 * MIN, OPEN + 15 * MIN, 5)]
    assert tracker.quality() == pytest.approx(11 / 16)
    # A second, separate run; the first is still listed.
    assert tracker.on_bar(OPEN + 18 * MIN) == [OPEN + 16 * MIN, OPEN + 17 * MIN]
    assert [g.bars for g in tracker.gaps()] == [5, 2]


def test_the_first_bar_reveals_missing_opening_minutes_and_advance_finds_trailing_ones() -> None:
    tracker = GapTracker.for_session(CAL, DAY, "1m")
    assert tracker.on_bar(OPEN + 2 * MIN) == [OPEN, OPEN + MIN]
    # 30 s after the end of minute 4 (start OPEN+4m): minutes 3 and 4 never came.
    assert tracker.advance_to(OPEN + 5 * MIN + 30 * SEC) == [OPEN + 3 * MIN, OPEN + 4 * MIN]
    assert tracker.advance_to(OPEN + 5 * MIN + 40 * SEC) == []
    assert tracker.known == 5 and tracker.present == 1


def test_tracker_refuses_off_grid_duplicate_and_out_of_order_bars() -> None:
    tracker = GapTracker.for_session(CAL, DAY, "1m")
    tracker.on_bar(OPEN + 3 * MIN)
    with pytest.raises(DataError, match="not after"):
        tracker.on_bar(OPEN + 3 * MIN)
    with pytest.raises(DataError, match="not an expected bar start"):
        tracker.on_bar(OPEN + 4 * MIN + SEC)
    with pytest.raises(DataError, match="not a known gap"):
        tracker.filled([OPEN + 10 * MIN])
    assert tracker.filled([OPEN + MIN, OPEN + 3 * MIN]) == [OPEN + MIN]  # the present one is ignored
    assert tracker.missing() == [OPEN, OPEN + 2 * MIN]


def _session_with_hole() -> tuple[SessionData, pl.DataFrame, pl.DataFrame]:
    full = synth_bars("SYN001", "1m", DAY, DAY, seed=7)
    # Minutes 12..18 missing: the 10:40 bucket loses its last three minutes, 10:45 loses its first four.
    hole = (pl.int_range(pl.len()) >= 12) & (pl.int_range(pl.len()) < 19)
    data = SessionData("SYN001", ("1m", "5m"), 1_000, CAL)
    data.feed(full.filter(~hole).head(60))
    return data, full, full.filter(hole)


def _bars(frame: pl.DataFrame) -> list[Bar]:
    cols = frame.select(pl.col("ts").dt.epoch("ns"), "open", "high", "low", "close", "volume")
    return [Bar(*row) for row in cols.iter_rows()]


def _oracle_5m(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.sort("ts")
        .group_by_dynamic("ts", every="5m", closed="left", label="left")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
    )


def test_filling_a_gap_restores_quality_to_one_and_revises_the_built_bars() -> None:
    data, full, hole = _session_with_hole()
    expected_1m = 60 + 7  # bars ended by the newest one seen (minute 66)
    q = data.quality("1m")
    assert (q.expected, q.present) == (expected_1m, 60)
    assert q.share == pytest.approx(60 / 67)
    q5 = data.quality("5m")
    assert q5.expected == 13 and q5.present == 13 and q5.complete == 11
    assert data.missing() == hole["ts"].dt.epoch("ns").to_list()

    revised = data.fill(_bars(hole)[::-1])
    assert {b.interval for b in revised} == {"5m"} and all(b.revised for b in revised)
    assert data.missing() == []
    assert data.quality("1m").share == 1.0
    assert data.quality("5m").complete_share == 1.0
    # The revised windows equal the bars built from the complete data.
    head = full.head(67)
    got = data.frame("5m").select("ts", "open", "high", "low", "close", "volume")
    want = _oracle_5m(head).filter(pl.col("ts") < got["ts"].max() + pl.duration(minutes=1))
    assert got.to_dicts() == want.to_dicts()
    assert data.frame("1m")["ts"].to_list() == head["ts"].to_list()
    # VWAP recomputed over every bar of the session so far, in a plain loop.
    pv = vol = 0.0
    for row in head.iter_rows(named=True):
        pv += (row["high"] + row["low"] + row["close"]) / 3 * row["volume"]
        vol += row["volume"]
    assert data.session_vwap == pytest.approx(pv / vol, rel=1e-12)
    assert data.session_volume == vol
    # A duplicate answer to a re-request changes nothing.
    assert data.fill(_bars(hole.head(1))) == []


def _sweep(
    filler: GapFiller, gaps: list[Gap], t0: int, seconds: float, tick: float = 0.5
) -> list[FillRequest]:
    sent: list[FillRequest] = []
    for k in range(int(seconds / tick) + 1):
        sent.extend(filler.plan(gaps, t0 + round(k * tick * SEC)))
    return sent


def test_retry_schedule_honours_max_retries_and_interval() -> None:
    gap = Gap(OPEN + 10 * MIN, OPEN + 15 * MIN, 5)
    t0 = OPEN + 16 * MIN
    filler = GapFiller.from_settings(
        GapFillerSettings(max_retries=3, retry_interval_seconds=5.0), mode="live"
    )
    sent = _sweep(filler, [gap], t0, 30)
    # Attempt k goes out (k - 1) intervals after the gap was first seen, for the whole run at once.
    assert [(r.attempt, r.at) for r in sent] == [(k, t0 + (k - 1) * 5 * SEC) for k in (1, 2, 3)]
    assert all((r.start, r.end, r.bars) == (gap.start, gap.end, 5) for r in sent)
    # Reported one interval after the last request.
    assert filler.given_up(t0 + 15 * SEC - 1) == []
    assert filler.given_up(t0 + 15 * SEC) == [gap]


def test_next_at_tells_the_actor_when_to_come_back() -> None:
    gap = Gap(OPEN, OPEN + MIN, 1)
    filler = GapFiller(max_retries=2, retry_interval_seconds=1.5)
    t0 = OPEN + 2 * MIN
    assert filler.next_at(t0) is None
    assert [r.attempt for r in filler.plan([gap], t0)] == [1]
    assert filler.next_at(t0) == t0 + 1_500_000_000
    assert filler.plan([gap], t0 + 1_000_000_000) == []
    assert [r.attempt for r in filler.plan([gap], t0 + 1_500_000_000)] == [2]
    assert filler.next_at(t0 + 1_500_000_000) == t0 + 3_000_000_000  # the give-up time
    assert filler.next_at(t0 + 3_000_000_000) is None


def test_filled_bars_are_not_requested_again_and_runs_split() -> None:
    filler = GapFiller(max_retries=3, retry_interval_seconds=5.0)
    t0 = OPEN + 20 * MIN
    first = filler.plan([Gap(OPEN, OPEN + 4 * MIN, 4)], t0)
    assert [(r.start, r.bars) for r in first] == [(OPEN, 4)]
    # Minute 1 filled meanwhile; a new gap at minute 10 appeared.
    now = t0 + 5 * SEC
    gaps = [
        Gap(OPEN, OPEN + MIN, 1),
        Gap(OPEN + 2 * MIN, OPEN + 4 * MIN, 2),
        Gap(OPEN + 10 * MIN, OPEN + 11 * MIN, 1),
    ]
    second = filler.plan(gaps, now)
    assert [(r.start, r.bars, r.attempt) for r in second] == [
        (OPEN, 1, 2),
        (OPEN + 2 * MIN, 2, 2),
        (OPEN + 10 * MIN, 1, 1),
    ]


def test_zero_retries_reports_at_once_and_replay_never_asks() -> None:
    gap = Gap(OPEN, OPEN + 3 * MIN, 3)
    t0 = OPEN + 5 * MIN
    none = GapFiller(max_retries=0, retry_interval_seconds=5.0)
    assert none.plan([gap], t0) == []
    assert none.given_up(t0) == [gap]
    replay = GapFiller(max_retries=5, retry_interval_seconds=1.0, mode="replay")
    assert _sweep(replay, [gap], t0, 60) == []
    assert replay.given_up(t0) == [gap]
    assert replay.next_at(t0) is None


def test_filler_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        GapFiller(max_retries=-1)
    with pytest.raises(ConfigError):
        GapFiller(retry_interval_seconds=0)
    with pytest.raises(ConfigError):
        GapFiller(mode="paper")  # type: ignore[arg-type]


def test_session_data_gaps_feed_the_filler() -> None:
    data, _, hole = _session_with_hole()
    filler = GapFiller(max_retries=1, retry_interval_seconds=2.0)
    now = int(data.window("1m").last_ts) + MIN + SEC
    (request,) = filler.plan(data.gaps(), now)
    starts = hole["ts"].dt.epoch("ns").to_numpy()
    assert (request.start, request.end, request.bars) == (starts[0], starts[-1] + MIN, len(starts))
    assert np.array_equal(np.arange(request.start, request.end, MIN), starts)
