"""Fold plans (trader.walkforward): walk-forward and combinatorial purged CV.

Oracles: plain-Python loops written here that step through the sessions one fold (or one session) at a time,
the fold-count formula as written in the module docstring, hand arithmetic on the worked example, and the
path assignment table of AFML figure 12.2 (López de Prado 2018, N = 6, k = 2).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.calendar import get_calendar
from trader.config import WalkForwardSettings
from trader.data.ingest import read_source
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError, SchemaError
from trader.walkforward import (
    MAX_CPCV_SPLITS,
    PATHS_SCHEMA,
    TABLE_SCHEMA,
    Fold,
    FoldPlan,
    cpcv_plan,
    plan_from_settings,
    session_dates,
    walk_forward_fold_count,
    walk_forward_plan,
)

CAL = get_calendar("XNYS")
SESSIONS = CAL.sessions("2000-01-01", "2003-12-31")  # ~1000 real sessions (holidays and all)
FIVE_YEARS = CAL.sessions("2019-01-01", "2023-12-31")

PROPS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------------------------------------
# Plain-Python oracles (session indices, inclusive)
# ---------------------------------------------------------------------------------------------------------


def _wf_oracle(
    n: int, train_len: int, test_len: int, stride: int, purge: int, anchored: bool, truncated: bool
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Step a fold forward by ``stride`` while its full test window fits; then maybe one truncated fold."""
    folds = []
    start = 0  # first training session of the rolling window
    while start + train_len + purge + test_len <= n:
        test_start = start + train_len + purge
        folds.append(
            ((0 if anchored else start, start + train_len - 1), (test_start, test_start + test_len - 1))
        )
        start += stride
    test_start = start + train_len + purge
    covered_to = folds[-1][1][1] if folds else -1
    # A truncated fold is only worth having when it tests sessions no full window tested.
    if truncated and folds and test_start <= n - 1 and covered_to < n - 1:
        folds.append(((0 if anchored else start, start + train_len - 1), (test_start, n - 1)))
    return folds


def _docstring_count(n: int, train_len: int, test_len: int, stride: int, purge: int, truncated: bool) -> int:
    """The formula exactly as the module docstring states it."""
    spare = n - train_len - purge - test_len
    full = spare // stride + 1
    rest = spare % stride
    return full + 1 if truncated and rest > 0 and stride - rest < test_len else full


def _indices(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def _ranges_to_indices(ranges, sessions) -> list[int]:
    """Inclusive date ranges -> sorted session indices, by scanning every session."""
    return [i for i, d in enumerate(sessions) if any(a <= d <= b for a, b in ranges)]


def _assert_no_leak(plan: FoldPlan, sessions, purge: int, embargo: int) -> None:
    """No training session of a fold inside [test start - purge, test end + embargo] of any test segment."""
    position = {d: i for i, d in enumerate(sessions)}
    for fold in plan.folds:
        train = set(_indices(fold.train_mask(sessions)))
        for start, end in fold.test:
            lo, hi = position[start] - purge, position[end] + embargo
            assert not [i for i in train if lo <= i <= hi], (fold.fold, start, end)


def _cpcv_train_oracle(n: int, n_groups: int, test_groups, purge: int, embargo: int) -> list[int]:
    """Training session indices of one CPCV split, session by session (AFML 12.4 group sizes)."""
    size = n // n_groups
    group = [min(i // size, n_groups - 1) for i in range(n)]
    firsts = {g: group.index(g) for g in test_groups}
    lasts = {g: n - 1 - group[::-1].index(g) for g in test_groups}
    keep = []
    for i in range(n):
        if group[i] in test_groups:
            continue
        if any(firsts[g] - purge <= i < firsts[g] for g in test_groups):
            continue  # purged: just before a test group
        if any(lasts[g] < i <= lasts[g] + embargo for g in test_groups):
            continue  # embargoed: just after a test group
        keep.append(i)
    return keep


# ---------------------------------------------------------------------------------------------------------
# Walk-forward
# ---------------------------------------------------------------------------------------------------------


@PROPS
@given(
    n=st.integers(0, 400),
    train_len=st.integers(1, 150),
    test_len=st.integers(1, 80),
    stride=st.integers(1, 80),
    purge=st.integers(0, 12),
    embargo=st.integers(0, 12),
    anchored=st.booleans(),
    truncated=st.booleans(),
)
def test_walk_forward_matches_loop_and_formula(
    n, train_len, test_len, stride, purge, embargo, anchored, truncated
) -> None:
    sessions = SESSIONS[:n]
    kwargs = dict(
        train_len=train_len,
        test_len=test_len,
        stride=stride,
        purge=purge,
        embargo=embargo,
        anchored=anchored,
        allow_truncated_final_fold=truncated,
    )
    if n < train_len + purge + test_len:
        with pytest.raises(ConfigError) as err:
            walk_forward_plan(sessions, **kwargs)
        message = str(err.value)
        assert f"has {n}" in message and f"= {train_len + purge + test_len} sessions" in message
        assert "\n" not in message
        return
    plan = walk_forward_plan(sessions, **kwargs)
    expected = _wf_oracle(n, train_len, test_len, stride, purge, anchored, truncated)
    assert plan.kind == "walk_forward" and plan.paths == ()
    assert plan.n_folds == len(expected) == _docstring_count(n, train_len, test_len, stride, purge, truncated)
    assert plan.n_folds == walk_forward_fold_count(
        n,
        train_len=train_len,
        test_len=test_len,
        stride=stride,
        purge=purge,
        allow_truncated_final_fold=truncated,
    )
    for i, (fold, (train, test)) in enumerate(zip(plan.folds, expected, strict=True)):
        assert fold.fold == i
        assert fold.train == ((sessions[train[0]], sessions[train[1]]),)
        assert fold.test == ((sessions[test[0]], sessions[test[1]]),)
        assert _indices(fold.train_mask(sessions)) == list(range(train[0], train[1] + 1))
        assert _indices(fold.test_mask(sessions)) == list(range(test[0], test[1] + 1))
        assert fold.first_session == sessions[train[0]] and fold.last_session == sessions[test[1]]
    _assert_no_leak(plan, sessions, purge, embargo)
    assert FoldPlan.from_table(plan.table) == plan


def test_walk_forward_small_grid_exhaustively() -> None:
    """Every small combination, so the boundaries of the truncated fold (0 or 1 spare session) are all hit."""
    for n, train_len, test_len, stride, purge in itertools.product(
        range(41), range(1, 6), range(1, 6), range(1, 8), range(3)
    ):
        if n < train_len + purge + test_len:
            continue
        expected = _wf_oracle(n, train_len, test_len, stride, purge, False, True)
        assert len(expected) == _docstring_count(n, train_len, test_len, stride, purge, True)
        plan = walk_forward_plan(
            SESSIONS[:n],
            train_len=train_len,
            test_len=test_len,
            stride=stride,
            purge=purge,
            allow_truncated_final_fold=True,
        )
        got = [(f.train[0], f.test[0]) for f in plan.folds]
        assert got == [
            ((SESSIONS[a], SESSIONS[b]), (SESSIONS[c], SESSIONS[d])) for (a, b), (c, d) in expected
        ], (n, train_len, test_len, stride, purge)


@pytest.mark.parametrize(
    ("n", "folds", "last_test_len"),
    [
        (31, 3, 5),  # R = 31 - 15 = 16 = 2 * 8: no spare session, no truncated fold
        (34, 3, 5),  # R = 19, r = 3, S - r = 5 = T: the next test window would start at session 34 = n
        (35, 4, 1),  # R = 20, r = 4, S - r = 4 < T: a 1-session truncated test window (session 34)
        (38, 4, 4),  # R = 23, r = 7: truncated window of T - (S - r) = 4 sessions
    ],
)
def test_truncated_final_fold_boundaries(n, folds, last_test_len) -> None:
    # train 10, purge 0, test 5, stride 8 (gaps of 3 sessions between test windows)
    plan = walk_forward_plan(
        SESSIONS[:n], train_len=10, test_len=5, stride=8, allow_truncated_final_fold=True
    )
    assert plan.n_folds == folds
    assert len(plan.folds[-1].test_sessions(SESSIONS[:n])) == last_test_len


def test_worked_example_five_years() -> None:
    # 2019..2023 has 1258 XNYS sessions. R = 1258 - 252 - 5 - 63 = 938 = 14 * 63 + 56, so 15 full folds,
    # and with truncation a 16th whose test window holds 63 - (63 - 56) = 56 sessions.
    assert len(FIVE_YEARS) == 1258
    args = dict(train_len=252, test_len=63, stride=63, purge=5, embargo=5)
    plan = walk_forward_plan(FIVE_YEARS, **args)
    assert plan.n_folds == 15
    first = plan.folds[0]
    assert first.train == ((FIVE_YEARS[0], FIVE_YEARS[251]),)
    assert first.test == ((FIVE_YEARS[257], FIVE_YEARS[319]),)  # sessions 252..256 are purged
    # stride == test_len: test windows tile, each starting the session after the previous one ends
    for a, b in itertools.pairwise(plan.folds):
        assert FIVE_YEARS.index(b.test[0][0]) == FIVE_YEARS.index(a.test[0][1]) + 1
    assert plan.folds[-1].test[0][1] == FIVE_YEARS[257 + 15 * 63 - 1]

    longer = walk_forward_plan(FIVE_YEARS, **args, allow_truncated_final_fold=True)
    assert longer.n_folds == 16 and longer.folds[:15] == plan.folds
    assert len(longer.folds[-1].test_sessions(FIVE_YEARS)) == 56
    assert longer.folds[-1].test[0][1] == FIVE_YEARS[-1]


def test_anchored_training_grows_from_the_first_session() -> None:
    rolling = walk_forward_plan(FIVE_YEARS, train_len=252, test_len=63, stride=63, purge=5)
    anchored = walk_forward_plan(FIVE_YEARS, train_len=252, test_len=63, stride=63, purge=5, anchored=True)
    assert anchored.n_folds == rolling.n_folds
    for a, r in zip(anchored.folds, rolling.folds, strict=True):
        assert a.test == r.test
        assert a.train[0][0] == FIVE_YEARS[0] and a.train[0][1] == r.train[0][1]
    sizes = [len(f.train_sessions(FIVE_YEARS)) for f in anchored.folds]
    assert sizes == [252 + 63 * i for i in range(anchored.n_folds)]


def test_stride_defaults_to_test_len_and_embargo_does_not_change_walk_forward() -> None:
    base = walk_forward_plan(SESSIONS, train_len=100, test_len=20, stride=20, purge=3)
    assert walk_forward_plan(SESSIONS, train_len=100, test_len=20, purge=3) == base
    assert walk_forward_plan(SESSIONS, train_len=100, test_len=20, purge=3, embargo=50) == base


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(train_len=0, test_len=5), "train_len=0"),
        (dict(train_len=10, test_len=-1), "test_len=-1"),
        (dict(train_len=10, test_len=5, stride=0), "stride=0"),
        (dict(train_len=10, test_len=5, purge=-2), "purge=-2"),
        (dict(train_len=10, test_len=5, embargo=-1), "embargo=-1"),
        (dict(train_len=10.5, test_len=5), "train_len=10.5"),
        (dict(train_len=True, test_len=5), "train_len=True"),
        (dict(train_len=900, test_len=100, purge=10), "1010 sessions but the data range has 1004"),
    ],
)
def test_walk_forward_rejects_impossible_plans(kwargs, needle) -> None:
    assert len(SESSIONS) == 1004
    with pytest.raises(ConfigError, match=needle):
        walk_forward_plan(SESSIONS, **kwargs)


def test_walk_forward_never_returns_an_empty_plan() -> None:
    with pytest.raises(ConfigError, match="has 0"):
        walk_forward_plan([], train_len=1, test_len=1)
    exact = walk_forward_plan(SESSIONS[:7], train_len=4, test_len=2, purge=1)
    assert exact.n_folds == 1


@pytest.mark.parametrize(
    "sessions",
    [
        [dt.date(2024, 1, 3), dt.date(2024, 1, 2), dt.date(2024, 1, 4)],
        [dt.date(2024, 1, 2), dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
    ],
)
def test_sessions_must_be_strictly_increasing(sessions) -> None:
    with pytest.raises(DataError, match="strictly increasing"):
        walk_forward_plan(sessions, train_len=1, test_len=1)
    with pytest.raises(DataError, match="strictly increasing"):
        cpcv_plan(sessions, n_groups=3, k_test_groups=1)


def test_identical_inputs_give_identical_plans() -> None:
    kwargs = dict(train_len=252, test_len=63, stride=21, purge=5, embargo=5, allow_truncated_final_fold=True)
    a, b = walk_forward_plan(FIVE_YEARS, **kwargs), walk_forward_plan(list(FIVE_YEARS), **kwargs)
    assert a == b and a.table.equals(b.table)
    c = cpcv_plan(FIVE_YEARS, n_groups=8, k_test_groups=3, purge=5, embargo=10)
    d = cpcv_plan(
        np.array(FIVE_YEARS, dtype="datetime64[D]"), n_groups=8, k_test_groups=3, purge=5, embargo=10
    )
    assert c == d and c.table.equals(d.table) and c.paths_table.equals(d.paths_table)


# ---------------------------------------------------------------------------------------------------------
# Combinatorial purged cross-validation
# ---------------------------------------------------------------------------------------------------------

# AFML figure 12.2: for N = 6, k = 2 the row of group G lists the splits S1..S15 that test it, each cell
# holding the path it is assigned to. Splits are numbered in lexicographic order: S1 = (G1, G2),
# S2 = (G1, G3), ..., S5 = (G1, G6), S6 = (G2, G3), ..., S15 = (G5, G6).
AFML_FIG_12_2 = """
G1 | 1 2 3 4 5 . . . . . . . . . .
G2 | 1 . . . . 2 3 4 5 . . . . . .
G3 | . 1 . . . 2 . . . 3 4 5 . . .
G4 | . . 1 . . . 2 . . 3 . . 4 5 .
G5 | . . . 1 . . . 2 . . 3 . 4 . 5
G6 | . . . . 1 . . . 2 . . 3 . 4 5
"""


def test_cpcv_paths_follow_afml_figure_12_2() -> None:
    plan = cpcv_plan(FIVE_YEARS, n_groups=6, k_test_groups=2, purge=5, embargo=5)
    assert plan.n_folds == 15 and len(plan.paths) == 5
    for g, line in enumerate(AFML_FIG_12_2.strip().splitlines()):
        cells = line.split("|")[1].split()
        for split, cell in enumerate(cells):
            tested = g in {plan.groups.index(seg) for seg in plan.folds[split].test}
            assert tested == (cell != "."), (g, split)
            if cell != ".":
                path = int(cell) - 1
                fold, segment = plan.paths[path][g]
                assert fold == split and plan.folds[fold].test[segment] == plan.groups[g]


@PROPS
@given(
    n=st.integers(2, 300),
    n_groups=st.integers(2, 9),
    k_test_groups=st.integers(1, 8),
    purge=st.integers(0, 10),
    embargo=st.integers(0, 10),
)
def test_cpcv_matches_session_loop(n, n_groups, k_test_groups, purge, embargo) -> None:
    sessions = SESSIONS[:n]
    kwargs = dict(n_groups=n_groups, k_test_groups=k_test_groups, purge=purge, embargo=embargo)
    if k_test_groups >= n_groups:
        with pytest.raises(ConfigError, match=f"k_test_groups={k_test_groups}"):
            cpcv_plan(sessions, **kwargs)
        return
    if n_groups > n:
        with pytest.raises(ConfigError, match=f"n_groups={n_groups}"):
            cpcv_plan(sessions, **kwargs)
        return
    splits = list(itertools.combinations(range(n_groups), k_test_groups))
    expected_train = [_cpcv_train_oracle(n, n_groups, s, purge, embargo) for s in splits]
    if not all(expected_train):
        with pytest.raises(ConfigError, match="no training sessions"):
            cpcv_plan(sessions, **kwargs)
        return
    plan = cpcv_plan(sessions, **kwargs)
    assert plan.kind == "cpcv"
    assert plan.n_folds == math.comb(n_groups, k_test_groups)
    assert len(plan.paths) == math.comb(n_groups - 1, k_test_groups - 1)

    # Groups: contiguous, in order, n // N sessions each except the last, which takes the remainder.
    size = n // n_groups
    group_idx = [_ranges_to_indices([g], sessions) for g in plan.groups]
    assert [len(g) for g in group_idx] == [size] * (n_groups - 1) + [n - size * (n_groups - 1)]
    assert list(itertools.chain.from_iterable(group_idx)) == list(range(n))

    for fold, split, train in zip(plan.folds, splits, expected_train, strict=True):
        assert fold.test == tuple(plan.groups[g] for g in split)
        assert _indices(fold.train_mask(sessions)) == train
        assert _indices(fold.test_mask(sessions)) == sorted(i for g in split for i in group_idx[g])
        # training segments are maximal runs: no two touch
        runs = [_ranges_to_indices([r], sessions) for r in fold.train]
        assert all(a[-1] + 1 < b[0] for a, b in itertools.pairwise(runs))
    _assert_no_leak(plan, sessions, purge, embargo)

    # Every path covers every group once, in time order; every (fold, test segment) is used by one path.
    used = []
    for path in plan.paths:
        assert [plan.folds[f].test[s] for f, s in path] == list(plan.groups)
        used.extend(path)
    assert sorted(used) == sorted((f.fold, s) for f in plan.folds for s in range(len(f.test)))

    back = FoldPlan.from_table(plan.table)
    assert back == plan and back.paths == plan.paths


def test_cpcv_purge_and_embargo_on_both_sides() -> None:
    sessions = SESSIONS[:60]  # 6 groups of 10
    plan = cpcv_plan(sessions, n_groups=6, k_test_groups=1, purge=2, embargo=3)
    fold = plan.folds[2]  # tests group 2 = sessions 20..29
    assert fold.test == ((sessions[20], sessions[29]),)
    # purged 18, 19 before the test; embargoed 30, 31, 32 after it
    assert fold.train == ((sessions[0], sessions[17]), (sessions[33], sessions[59]))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(n_groups=1, k_test_groups=1), "n_groups=1"),
        (dict(n_groups=5, k_test_groups=5), "k_test_groups=5 must be less than n_groups=5"),
        (dict(n_groups=5, k_test_groups=0), "k_test_groups=0"),
        (dict(n_groups=5, k_test_groups=2, purge=-1), "purge=-1"),
        (dict(n_groups=5, k_test_groups=2, embargo=-1), "embargo=-1"),
        (dict(n_groups=30, k_test_groups=15), f"more than {MAX_CPCV_SPLITS}"),
        (dict(n_groups=20, k_test_groups=1), "n_groups=20 exceeds the 12 sessions"),
        # N = 2, k = 1: the split testing group 0 trains on group 1 (6 sessions) minus a 6-session embargo
        (dict(n_groups=2, k_test_groups=1, embargo=6), "no training sessions"),
    ],
)
def test_cpcv_rejects_impossible_plans(kwargs, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        cpcv_plan(SESSIONS[:12], **kwargs)


# ---------------------------------------------------------------------------------------------------------
# The plan as a table
# ---------------------------------------------------------------------------------------------------------


def _plans() -> list[FoldPlan]:
    return [
        walk_forward_plan(FIVE_YEARS, train_len=252, test_len=63, stride=63, purge=5),
        walk_forward_plan(
            FIVE_YEARS, train_len=252, test_len=63, stride=50, anchored=True, allow_truncated_final_fold=True
        ),
        walk_forward_plan(SESSIONS[:3], train_len=1, test_len=1, stride=1),
        cpcv_plan(FIVE_YEARS, n_groups=6, k_test_groups=2, purge=5, embargo=5),
        cpcv_plan(FIVE_YEARS, n_groups=5, k_test_groups=1),
        cpcv_plan(FIVE_YEARS, n_groups=7, k_test_groups=6, purge=3, embargo=3),
    ]


@pytest.mark.parametrize("index", range(6))
def test_table_round_trips_through_parquet(index, tmp_path: Path) -> None:
    plan = _plans()[index]
    table = plan.table
    assert dict(table.schema) == TABLE_SCHEMA
    assert table.height == sum(len(f.train) + len(f.test) for f in plan.folds)
    path = tmp_path / "fold_plan.parquet"
    table.write_parquet(path)
    back = FoldPlan.from_table(pl.read_parquet(path))
    assert back == plan and back.kind == plan.kind and back.paths == plan.paths
    # row order does not matter
    assert FoldPlan.from_table(table.sample(fraction=1.0, shuffle=True, seed=7)) == plan


def test_table_rows_spell_out_the_folds() -> None:
    plan = walk_forward_plan(SESSIONS[:40], train_len=20, test_len=5, stride=5, purge=2)
    rows = plan.table.rows()
    assert rows[:2] == [
        (0, "train", 0, SESSIONS[0], SESSIONS[19]),
        (0, "test", 0, SESSIONS[22], SESSIONS[26]),
    ]
    assert len(rows) == 2 * plan.n_folds


def test_paths_table() -> None:
    plan = cpcv_plan(FIVE_YEARS, n_groups=6, k_test_groups=2)
    paths = plan.paths_table
    assert dict(paths.schema) == PATHS_SCHEMA and paths.height == 5 * 6
    for (path,), part in paths.group_by("path", maintain_order=True):
        assert part["group"].to_list() == list(range(6))
        assert list(zip(part["start"], part["end"], strict=True)) == list(plan.groups)
        assert [(f, s) for f, s in zip(part["fold"], part["segment"], strict=True)] == list(plan.paths[path])
    assert walk_forward_plan(FIVE_YEARS, train_len=252, test_len=63).paths_table.height == 0


def _good() -> pl.DataFrame:
    return walk_forward_plan(SESSIONS[:40], train_len=20, test_len=5, stride=5, purge=2).table


def _swap_folds(table: pl.DataFrame, a: int, b: int) -> pl.DataFrame:
    fold = pl.col("fold")
    swapped = pl.when(fold == a).then(pl.lit(b)).when(fold == b).then(pl.lit(a)).otherwise(fold)
    return table.with_columns(swapped.cast(pl.Int64).alias("fold"))


def _set(table: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    values = table[column].to_list()
    values[row] = value
    return table.with_columns(pl.Series(column, values, dtype=table.schema[column]))


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda t: t.drop("segment"), "missing \\['segment'\\]"),
        (lambda t: t.with_columns(pl.lit(1).alias("extra")), "unexpected \\['extra'\\]"),
        (lambda t: t.with_columns(pl.col("fold").cast(pl.Int32)), "'fold' is Int32"),
        (lambda t: t.with_columns(pl.col("start").cast(pl.Datetime("ns"))), "'start' is Datetime"),
        (lambda t: t.clear(), "no rows"),
        (lambda t: _set(t, 0, "end", None), "missing values in column 'end'"),
        (lambda t: _set(t, 0, "role", "validate"), "'validate'"),
        (lambda t: _set(t, 1, "end", SESSIONS[20]), "start .* is after end"),
        (lambda t: t.filter(pl.col("fold") != 1), "without gaps"),
        (
            lambda t: t.filter((pl.col("fold") != 0) | (pl.col("role") != "test")),
            "fold 0 has no test segment",
        ),
        (lambda t: _set(t, 0, "segment", 1), "numbered 0..0"),
        (lambda t: _set(t, 0, "end", SESSIONS[23]), "overlaps test"),
        (
            lambda t: pl.concat([t, t.filter((pl.col("fold") == 0) & (pl.col("role") == "train"))]),
            "numbered 0..1, found \\[0, 0\\]",
        ),
        # a later fold testing before an earlier one is not walk-forward
        (lambda t: _swap_folds(t, 0, 1), "walk-forward fold 1 tests from .* not after fold 0"),
    ],
)
def test_bad_tables_are_refused_clearly(mutate, needle) -> None:
    with pytest.raises(DataError, match=needle) as err:
        FoldPlan.from_table(mutate(_good()))
    assert "\n" not in str(err.value)


def test_schema_problems_are_schema_errors_and_non_frames_are_refused() -> None:
    with pytest.raises(SchemaError):
        FoldPlan.from_table(_good().drop("role"))
    with pytest.raises(SchemaError, match="polars DataFrame"):
        FoldPlan.from_table(_good().to_dicts())  # type: ignore[arg-type]


def test_incomplete_cpcv_table_is_refused() -> None:
    table = cpcv_plan(FIVE_YEARS, n_groups=6, k_test_groups=2).table
    with pytest.raises(DataError, match="not a CPCV plan"):
        FoldPlan.from_table(table.filter(pl.col("fold") < 14))  # one split missing
    with pytest.raises(DataError, match="in order"):
        FoldPlan.from_table(
            _swap_folds(table, 3, 4)
        )  # splits out of lexicographic order would scramble the paths


# ---------------------------------------------------------------------------------------------------------
# Slicing bars with a fold
# ---------------------------------------------------------------------------------------------------------


def test_masks_slice_minute_bars_by_session() -> None:
    sessions = CAL.sessions("2024-01-02", "2024-02-29")  # 41 sessions
    bars = synth_bars("SYN000", "1m", sessions[0], sessions[-1], seed=3)
    dates = session_dates(bars["ts"], "1m")
    plan = walk_forward_plan(sessions, train_len=20, test_len=5, stride=5, purge=2)
    per_session = {d: int(c) for d, c in dates.value_counts().iter_rows()}
    for fold in plan.folds:
        test_rows = bars.filter(pl.Series(fold.test_mask(dates)))
        train_rows = bars.filter(pl.Series(fold.train_mask(dates)))
        test_days = fold.test_sessions(sessions)
        assert test_rows.height == sum(per_session[d] for d in test_days)
        assert set(session_dates(test_rows["ts"], "1m").to_list()) == set(test_days)
        assert set(session_dates(train_rows["ts"], "1m").to_list()) == set(fold.train_sessions(sessions))
        # every training bar closes before the purge gap that precedes the first test bar
        gap_start = sessions[sessions.index(test_days[0]) - 2]
        assert train_rows["ts"].max() < bars.filter(pl.Series(dates == gap_start))["ts"].min()


def test_session_dates_of_daily_bars_are_their_utc_dates() -> None:
    bars = synth_bars("SYN000", "1d", "2024-01-02", "2024-01-31", seed=1)
    assert session_dates(bars["ts"], "1d").to_list() == CAL.sessions("2024-01-02", "2024-01-31")
    # the same instants read as intraday bars of New York would fall on the previous evening
    assert session_dates(bars["ts"], "1m").to_list()[0] == dt.date(2024, 1, 1)
    with pytest.raises(DataError, match="Datetime"):
        session_dates(pl.Series([1, 2]), "1d")


def test_masks_accept_lists_numpy_and_polars_in_any_order() -> None:
    plan = walk_forward_plan(SESSIONS[:30], train_len=10, test_len=5, stride=5, purge=1)
    fold = plan.folds[1]
    expected = [fold.train[0][0] <= d <= fold.train[0][1] for d in SESSIONS[:30]]
    shuffled = list(reversed(SESSIONS[:30]))
    for form in (
        list(SESSIONS[:30]),
        np.array(SESSIONS[:30], dtype="datetime64[D]"),
        np.array(SESSIONS[:30], dtype="datetime64[D]").astype("datetime64[ns]"),
        pl.Series(SESSIONS[:30]),
    ):
        mask = fold.train_mask(form)
        assert mask.dtype == np.bool_ and mask.tolist() == expected
    assert fold.train_mask(shuffled).tolist() == expected[::-1]
    assert fold.test_sessions(SESSIONS[:30]) == list(SESSIONS[16:21])
    with pytest.raises(DataError, match="expected dates"):
        fold.train_mask(np.arange(5))


def test_fold_first_and_last_session_span_train_and_test() -> None:
    plan = cpcv_plan(SESSIONS[:60], n_groups=6, k_test_groups=2)
    assert plan.folds[0].first_session == SESSIONS[0]  # tests groups 0, 1
    assert plan.folds[0].last_session == SESSIONS[59]
    lone = Fold(0, train=((dt.date(2024, 1, 2), dt.date(2024, 1, 5)),), test=((dt.date(2024, 1, 9),) * 2,))
    assert lone.first_session == dt.date(2024, 1, 2) and lone.last_session == dt.date(2024, 1, 9)


# ---------------------------------------------------------------------------------------------------------
# From settings, and real bars
# ---------------------------------------------------------------------------------------------------------


def test_plan_from_settings_dispatches() -> None:
    wf = WalkForwardSettings(train_len=252, test_len=63, stride=21, purge=3, embargo=2, anchored=True)
    assert plan_from_settings(FIVE_YEARS, wf) == walk_forward_plan(
        FIVE_YEARS, train_len=252, test_len=63, stride=21, purge=3, embargo=2, anchored=True
    )
    assert plan_from_settings(FIVE_YEARS, wf, scheme="cpcv", n_groups=6, k_test_groups=2) == cpcv_plan(
        FIVE_YEARS, n_groups=6, k_test_groups=2, purge=3, embargo=2
    )
    # the scheme and the group counts may also come from the settings object itself
    fields = {k: getattr(wf, k) for k in ("train_len", "test_len", "stride", "anchored", "purge", "embargo")}
    fields["allow_truncated_final_fold"] = False
    cpcv = types.SimpleNamespace(**fields, scheme="cpcv", n_groups=5, k_test_groups=1)
    assert plan_from_settings(FIVE_YEARS, cpcv) == cpcv_plan(
        FIVE_YEARS, n_groups=5, k_test_groups=1, purge=3, embargo=2
    )
    assert plan_from_settings(FIVE_YEARS, cpcv, scheme="walk_forward") == plan_from_settings(FIVE_YEARS, wf)
    bare = types.SimpleNamespace(**fields)  # no scheme field: walk-forward; no group counts for cpcv
    assert plan_from_settings(FIVE_YEARS, bare) == plan_from_settings(FIVE_YEARS, wf)
    with pytest.raises(ConfigError, match="needs n_groups and k_test_groups"):
        plan_from_settings(FIVE_YEARS, bare, scheme="cpcv")
    with pytest.raises(ConfigError, match=r"walkforward\.scheme='kfold'"):
        plan_from_settings(FIVE_YEARS, wf, scheme="kfold")
    with pytest.raises(ConfigError, match=r"^walkforward: .*635 sessions but the data range has 600"):
        plan_from_settings(FIVE_YEARS[:600], WalkForwardSettings())  # 504 + 5 + 126 = 635


def test_plan_over_real_daily_bars(shared_data: Path) -> None:
    frame = read_source(
        shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv", fmt="yahoo", interval="1d"
    ).frame.sort("ts")
    dates = session_dates(frame["ts"], "1d")
    sessions = dates.unique().sort().to_list()
    assert set(sessions) <= set(CAL.sessions(sessions[0], sessions[-1]))
    plan = walk_forward_plan(sessions, train_len=252, test_len=63, stride=63, purge=5)
    assert plan.n_folds == _docstring_count(len(sessions), 252, 63, 63, 5, False)
    covered = np.zeros(frame.height, dtype=np.int64)
    for fold in plan.folds:
        test, train = fold.test_mask(dates), fold.train_mask(dates)
        assert train.sum() == 252 and test.sum() == 63
        # 5 purged bars between the last training bar and the first test bar
        assert np.flatnonzero(test)[0] - np.flatnonzero(train)[-1] == 6
        covered += test
    # out-of-sample bars stitch: every bar from the first test bar to the last is tested exactly once
    first, last = np.flatnonzero(covered)[[0, -1]]
    assert (covered[first : last + 1] == 1).all() and first == 252 + 5


def test_plan_from_real_cpcv_settings() -> None:
    if "scheme" not in WalkForwardSettings.model_fields:
        pytest.skip("WalkForwardSettings has no scheme field yet")
    wf = WalkForwardSettings(scheme="cpcv", n_groups=5, k_test_groups=1, purge=3, embargo=2)
    assert plan_from_settings(FIVE_YEARS, wf) == cpcv_plan(
        FIVE_YEARS, n_groups=5, k_test_groups=1, purge=3, embargo=2
    )
    with pytest.raises(ConfigError, match=r"^walkforward: k_test_groups=5 must be less than n_groups=5"):
        plan_from_settings(FIVE_YEARS, WalkForwardSettings(scheme="cpcv", n_groups=5, k_test_groups=5))
