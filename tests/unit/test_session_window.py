"""BarWindow: a bounded ring of bars with zero-copy, time-ordered views (trader/session/window.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.data.schema import POLARS_SCHEMA
from trader.errors import ConfigError, DataError
from trader.session.window import BarWindow, to_ns

MIN = 60_000_000_000
T0 = to_ns("2019-11-29T14:30:00Z")


def _bar(i: int) -> tuple[int, float, float, float, float, float]:
    # Distinct values per field so a column mix-up shows.
    return T0 + i * MIN, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1000.0 + i


def _columns(w: BarWindow) -> list[tuple]:
    return list(zip(w.ts.tolist(), w.open, w.high, w.low, w.close, w.volume, strict=True))


def test_append_beyond_capacity_keeps_the_last_n_in_order() -> None:
    w = BarWindow(4)
    bars = [_bar(i) for i in range(11)]
    for b in bars:
        w.append(*b)
    assert len(w) == 4
    assert _columns(w) == bars[-4:]
    assert w.last_ts == bars[-1][0] and w.first_ts == bars[-4][0]
    assert w.row(0) == bars[-4] and w.row(-1) == bars[-1]


def test_views_are_zero_copy_contiguous_and_read_only() -> None:
    w = BarWindow(5)
    for i in range(13):  # wrap the ring more than twice
        w.append(*_bar(i))
        for view, store in ((w.close, w._cols), (w.open, w._cols), (w.volume, w._cols), (w.ts, w._ts)):
            assert np.shares_memory(view, store)
            assert view.flags.c_contiguous
            assert not view.flags.writeable
    with pytest.raises(ValueError):
        w.close[0] = 1.0
    # The buffer is written through, so a view taken earlier sees the ring move on.
    before = w.close
    w.append(*_bar(13))
    assert np.shares_memory(before, w.close)


def test_out_of_order_and_duplicate_ts_are_refused_naming_both() -> None:
    w = BarWindow(3)
    w.append(*_bar(5))
    for i, stamp in ((5, "14:35:00"), (4, "14:34:00")):
        with pytest.raises(DataError) as err:
            w.append(*_bar(i))
        assert f"bar at 2019-11-29T{stamp}" in str(err.value)
        assert "last bar at 2019-11-29T14:35:00" in str(err.value)
    assert len(w) == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        BarWindow(0)


def test_extend_equals_appends_and_refuses_unsorted_frames() -> None:
    bars = [_bar(i) for i in range(9)]
    frame = pl.DataFrame(
        {
            "ts": pl.Series([b[0] for b in bars]).cast(pl.Datetime("ns", "UTC")),
            **{
                name: [b[k + 1] for b in bars]
                for k, name in enumerate(("open", "high", "low", "close", "volume"))
            },
        }
    )
    a, b = BarWindow(4), BarWindow(4)
    a.append(*_bar(-1))
    b.append(*_bar(-1))
    a.extend(frame)
    for bar in bars:
        b.append(*bar)
    assert _columns(a) == _columns(b)
    with pytest.raises(DataError, match="not after"):
        a.extend(frame)  # starts before the newest bar
    c = BarWindow(4)
    with pytest.raises(DataError, match="sort by ts"):
        c.extend(frame.reverse())
    assert len(c) == 0


def test_to_frame_has_the_bar_schema_and_the_values() -> None:
    w = BarWindow(3)
    for i in range(5):
        w.append(*_bar(i))
    frame = w.to_frame()
    assert dict(frame.schema) == POLARS_SCHEMA
    assert frame["ts"].to_physical().to_list() == [_bar(i)[0] for i in (2, 3, 4)]
    assert frame["close"].to_list() == [_bar(i)[4] for i in (2, 3, 4)]


def test_insert_puts_a_late_bar_in_place_and_drops_the_oldest_when_full() -> None:
    w = BarWindow(4)
    for i in (0, 1, 3, 4):
        w.append(*_bar(i))
    assert w.insert(*_bar(2))
    assert w.ts.tolist() == [_bar(i)[0] for i in (1, 2, 3, 4)]
    assert w.close.tolist() == [_bar(i)[4] for i in (1, 2, 3, 4)]
    assert not w.insert(*_bar(-3))  # older than everything kept in a full window
    with pytest.raises(DataError, match="already"):
        w.insert(*_bar(3))


def test_replace_revises_a_kept_bar() -> None:
    w = BarWindow(3)
    for i in range(5):
        w.append(*_bar(i))
    w.replace(_bar(3)[0], 1.0, 2.0, 0.5, 1.5, 7.0)
    assert w.row(1) == (_bar(3)[0], 1.0, 2.0, 0.5, 1.5, 7.0)
    assert w.row(-1) == _bar(4)
    with pytest.raises(DataError, match="no bar"):
        w.replace(_bar(0)[0], 1.0, 2.0, 0.5, 1.5, 7.0)


def test_to_ns_refuses_naive_instants() -> None:
    assert to_ns("2019-11-29T14:30:00+00:00") == T0
    assert to_ns(np.datetime64("2019-11-29T14:30:00")) == T0
    with pytest.raises(DataError, match="time zone"):
        to_ns("2019-11-29 14:30:00")


# A step is ("append", gap in minutes >= 1), ("insert", minutes back) or ("extend", list of gaps).
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5)),
        st.tuples(st.just("insert"), st.integers(1, 12)),
        st.tuples(st.just("extend"), st.lists(st.integers(1, 3), min_size=0, max_size=8)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 9), steps=_steps)
def test_window_equals_a_list_oracle(capacity: int, steps: list[tuple]) -> None:
    w = BarWindow(capacity)
    oracle: list[tuple] = []  # every bar ever accepted, sorted; the window must be its last `capacity`
    clock = 0
    for kind, arg in steps:
        if kind == "append":
            clock += arg
            w.append(*_bar(clock))
            oracle.append(_bar(clock))
        elif kind == "extend":
            idx = []
            for g in arg:
                clock += g
                idx.append(clock)
            rows = [_bar(i) for i in idx]
            frame = pl.DataFrame(
                {
                    "ts": pl.Series([r[0] for r in rows], dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
                    "open": [r[1] for r in rows],
                    "high": [r[2] for r in rows],
                    "low": [r[3] for r in rows],
                    "close": [r[4] for r in rows],
                    "volume": [r[5] for r in rows],
                },
                schema_overrides={c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
            )
            w.extend(frame)
            oracle.extend(rows)
        else:
            late = _bar(clock - arg)
            kept = oracle[-capacity:]
            if any(r[0] == late[0] for r in oracle):
                if any(r[0] == late[0] for r in kept):
                    with pytest.raises(DataError):
                        w.insert(*late)
                continue
            accepted = w.insert(*late)
            # A full window refuses a bar older than everything it keeps.
            expect = not (len(kept) == capacity and late[0] < kept[0][0])
            assert accepted == expect
            if accepted:
                oracle = sorted([*kept, late])
        assert _columns(w) == oracle[-capacity:]
        assert len(w) == min(len(oracle), capacity)
        assert w.last_ts == (oracle[-1][0] if oracle else None)
