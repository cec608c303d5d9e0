"""Order journal: round trip, derived state, fill idempotency, append-only, crash safety, clear errors."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import trader.broker.journal as journal_module
from trader.broker.errors import (
    JournalError,
    JournalNotWritableError,
    NotAJournalError,
    UnknownIntentError,
)
from trader.broker.journal import EVENT_KINDS, OrderJournal
from trader.broker.order import Approval, Fill, OrderIntent, OrderStatus

TS = dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)
SECRET = b"k"


def make_intent(intent_id: str = "SPY-1", quantity: int = 100, **overrides: Any) -> OrderIntent:
    fields: dict[str, Any] = {
        "intent_id": intent_id,
        "symbol": "SPY",
        "side": "BUY",
        "quantity": quantity,
        "created_at": TS,
        "source": "test",
    }
    fields.update(overrides)
    return OrderIntent(**fields)


def make_fill(exec_id: str, qty: float, price: float, intent_id: str = "SPY-1", order_id: int = 7) -> Fill:
    return Fill(
        exec_id=exec_id,
        intent_id=intent_id,
        perm_id=9001,
        order_id=order_id,
        symbol="SPY",
        side="BUY",
        qty=qty,
        price=price,
        time=TS,
    )


class Clock:
    """A deterministic clock: one second per event."""

    def __init__(self) -> None:
        self.now = TS

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture()
def journal(tmp_path: Path):
    with OrderJournal(tmp_path / "run" / "orders.sqlite", clock=Clock()) as j:
        yield j


def test_file_is_wal_with_full_sync(journal: OrderJournal):
    conn = sqlite3.connect(journal.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_round_trip_survives_close_and_reopen(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    intent = make_intent()
    approval = Approval.sign(intent, SECRET, issued_at=TS, limits={"max_per_trade": 1e4})
    with OrderJournal(path, clock=Clock()) as j:
        j.record_intent(intent)
        j.record_approval(approval)
        j.record_submission(intent.intent_id, order_id=7, client_id=3)
        j.record_status(intent.intent_id, 7, 9001, OrderStatus.SUBMITTED, 0, 100, None)
        j.record_fill(make_fill("e1", 100, 470.0))
        j.record_commission("e1", 1.0, "USD")
        j.record_error(intent.intent_id, 399, "order held", order_id=7)
        j.record_reconcile(
            intent.intent_id, {"status": "Filled", "filled": 100, "remaining": 0, "avg_price": 470}
        )
        before = (j.events(), j.intents(), j.fills(), j.state(intent.intent_id))
    with OrderJournal(path) as again:
        after = (again.events(), again.intents(), again.fills(), again.state(intent.intent_id))
        assert after == before
        assert [e.kind for e in again.events()] == [
            "intent", "approval", "submission", "status", "fill", "commission", "error", "reconcile",
        ]  # fmt: skip
        stored = Approval.from_dict(again.events(kinds=["approval"])[0].payload)
        stored.verify(again.intents()[0], SECRET, now=TS)  # the signed approval is kept verbatim
        assert again.fills()[0].commission == 1.0


def test_events_carry_seq_time_and_ids(journal: OrderJournal):
    intent = make_intent()
    journal.record_intent(intent)
    journal.record_submission(intent.intent_id, 7, 1)
    journal.record_status(intent.intent_id, 7, 9001, "Submitted", 0, 100, None)
    events = journal.events()
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.ts for e in events] == [TS + dt.timedelta(seconds=s) for s in (2, 3, 4)]  # 1 s went to meta
    assert (events[2].order_id, events[2].perm_id) == (7, 9001)
    assert journal.events(after_seq=2) == events[2:]
    assert journal.events(kinds=["submission"]) == [events[1]]
    with pytest.raises(JournalError, match="unknown event kind"):
        journal.events(kinds=["bogus"])


def test_derived_state_through_a_realistic_sequence(journal: OrderJournal):
    buy = make_intent("SPY-1", quantity=100, order_type="LMT", limit_price=101.0)
    refused = make_intent("QQQ-1", symbol="QQQ", quantity=50)
    waiting = make_intent("IWM-1", symbol="IWM", quantity=10)
    for i in (buy, refused, waiting):
        journal.record_intent(i)

    state = journal.state("SPY-1")
    assert state.approved is None and not state.submitted and state.status is None and state.open

    journal.record_approval(Approval.sign(buy, SECRET, issued_at=TS))
    journal.record_approval(
        Approval.sign(refused, SECRET, approved=False, reason="max_per_trade", issued_at=TS)
    )
    journal.record_approval(Approval.sign(waiting, SECRET, issued_at=TS))
    refused_state = journal.state("QQQ-1")
    assert refused_state.approved is False and refused_state.rejected and refused_state.done
    assert refused_state.rejection_reason == "max_per_trade"

    journal.record_submission("SPY-1", order_id=7, client_id=3)
    assert journal.submitted("SPY-1") and not journal.submitted("IWM-1")
    journal.record_status("SPY-1", 7, 0, "PendingSubmit", 0, 100, None)
    journal.record_status("SPY-1", 7, 9001, "Submitted", 0, 100, None)
    state = journal.state("SPY-1")
    assert (state.status, state.order_id, state.perm_id, state.client_id) == (
        OrderStatus.SUBMITTED,
        7,
        9001,
        3,
    )

    journal.record_fill(make_fill("e1", 40, 100.0))
    journal.record_status("SPY-1", 7, 9001, "PartiallyFilled", 40, 60, 100.0)
    state = journal.state("SPY-1")
    assert (state.status, state.filled, state.remaining, state.avg_price) == (
        OrderStatus.PARTIALLY_FILLED, 40.0, 60.0, 100.0,
    )  # fmt: skip
    assert state.commission is None and state.open

    journal.record_fill(make_fill("e2", 60, 101.0))
    journal.record_commission("e1", 1.0, "USD")
    journal.record_commission("e2", 1.2, "USD")
    journal.record_status("SPY-1", 7, 9001, "Filled", 100, 0, 100.6)
    # A late, out-of-order report must not reopen a filled order.
    journal.record_status("SPY-1", 7, 9001, "Submitted", 40, 60, 100.0)
    state = journal.state("SPY-1")
    vwap = (40 * 100.0 + 60 * 101.0) / 100
    assert state.status is OrderStatus.FILLED and state.done
    assert state.filled == 100.0 and state.remaining == 0.0
    assert state.avg_price == pytest.approx(vwap)
    assert state.reported_filled == 100.0 and state.reported_avg_price == 100.6
    assert state.commission == pytest.approx(2.2)
    assert state.last_seq == journal.events()[-1].seq

    open_ids = [s.intent_id for s in journal.open_intents()]
    assert open_ids == ["IWM-1"]  # approved, never sent: still the actor's to decide
    assert [i.intent_id for i in journal.intents()] == ["SPY-1", "QQQ-1", "IWM-1"]


def test_state_ends_on_cancel_and_error_is_kept(journal: OrderJournal):
    journal.record_intent(make_intent())
    journal.record_submission("SPY-1", 7, 1)
    journal.record_error("SPY-1", 201, "Order rejected - reason: no trading permissions", order_id=7)
    journal.record_status("SPY-1", 7, 0, "Rejected", 0, 100, None)
    state = journal.state("SPY-1")
    assert state.status is OrderStatus.REJECTED and state.rejected and state.done
    assert state.last_error == (201, "Order rejected - reason: no trading permissions")


def test_reconcile_with_a_status_counts_as_a_status(journal: OrderJournal):
    journal.record_intent(make_intent())
    journal.record_submission("SPY-1", 7, 1)
    journal.record_reconcile("SPY-1", {"status": "Cancelled", "filled": 0, "remaining": 100, "note": "gone"})
    assert journal.state("SPY-1").status is OrderStatus.CANCELLED
    with pytest.raises(JournalError, match="unknown order status 'Exploded'"):
        journal.record_reconcile("SPY-1", {"status": "Exploded"})
    with pytest.raises(JournalError, match="unknown order status"):
        journal.record_status("SPY-1", 7, 1, "Done", 0, 0, None)


def test_a_fill_recorded_twice_is_stored_once(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    with OrderJournal(path) as j:
        j.record_intent(make_intent())
        fill = make_fill("0000e1.01", 40, 100.0)
        assert j.record_fill(fill) is True
        assert j.record_fill(fill) is False
        # Same exec_id, different content (a re-sent report): the first one stands.
        assert j.record_fill(make_fill("0000e1.01", 99, 1.0)) is False
        assert j.fills() == [fill]
        assert len(j.events(kinds=["fill"])) == 1
    with OrderJournal(path) as j:
        assert j.record_fill(fill) is False  # after a restart too
        assert j.state("SPY-1").filled == 40.0


def test_commission_latest_report_wins_and_is_matched_by_exec_id(journal: OrderJournal):
    journal.record_intent(make_intent())
    journal.record_fill(make_fill("e1", 10, 100.0))
    journal.record_commission("e1", 1.0, "USD")
    journal.record_commission("e1", 1.0, "USD")  # a duplicate report after reconnect
    journal.record_commission("e1", 1.5, "USD")  # a corrected one
    assert journal.fills("SPY-1")[0].commission == 1.5
    assert journal.state("SPY-1").commission == 1.5
    event = journal.events(kinds=["commission"])[-1]
    assert (event.intent_id, event.order_id) == ("SPY-1", 7)


def test_same_intent_twice_is_a_no_op_but_a_conflicting_one_is_refused(journal: OrderJournal):
    seq = journal.record_intent(make_intent())
    assert journal.record_intent(make_intent()) == seq
    assert len(journal.events()) == 1
    with pytest.raises(JournalError, match="already recorded with different fields"):
        journal.record_intent(make_intent(quantity=5))


def test_records_for_an_unknown_intent(journal: OrderJournal):
    other = make_intent("X-1")
    with pytest.raises(UnknownIntentError, match="X-1"):
        journal.record_approval(Approval.sign(other, SECRET, issued_at=TS))
    with pytest.raises(UnknownIntentError):
        journal.record_submission("X-1", 1, 1)
    with pytest.raises(UnknownIntentError):
        journal.state("X-1")
    # Facts from the broker are never refused, even about an order the journal does not know.
    journal.record_status("X-1", 5, 6, "Filled", 1, 0, 10.0)
    assert journal.record_fill(make_fill("e9", 1, 10.0, intent_id="X-1"))
    assert journal.events() and journal.intents() == []


def test_code_has_no_update_or_delete_statements():
    source = Path(journal_module.__file__).read_text()
    for pattern in (
        r"\bUPDATE\s+\w+\s+SET\b",
        r"\bDELETE\s+FROM\b",
        r"\bREPLACE\s+INTO\b",
        r"\bOR\s+REPLACE\b",
    ):
        assert not re.search(pattern, source, re.IGNORECASE), pattern
    assert not re.search(r"\bDROP\s+TABLE\b", source, re.IGNORECASE)


def test_the_file_refuses_update_and_delete(journal: OrderJournal):
    journal.record_intent(make_intent())
    journal.record_fill(make_fill("e1", 1, 1.0))
    before = journal.events()
    conn = sqlite3.connect(journal.path)
    for sql in (
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "UPDATE fills SET intent_id = 'x'",
        "DELETE FROM fills",
        "DELETE FROM meta",
        "UPDATE meta SET value = '99' WHERE key = 'version'",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
    assert journal.events() == before


def test_a_concurrent_reader_sees_only_whole_transactions(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    OrderJournal(path).close()  # the schema exists before the reader opens it
    n = 150
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(n), "0"], stdout=subprocess.DEVNULL
    )
    reads = 0
    last = 0
    with OrderJournal(path, readonly=True) as reader:
        while True:
            finished = writer.poll() is not None
            with reader.snapshot():
                events = reader.events()
                fills = reader.fills()
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(events) >= last
            last = len(events)
            # Each record_fill commits two rows (the fill event and its fills row) in one transaction:
            # a reader never sees one without the other.
            assert len(fills) == sum(e.kind == "fill" for e in events)
            reads += 1
            if finished:
                break
        assert writer.returncode == 0
        assert len(reader.events()) == 2 * n
        assert len(reader.intents()) == n
    assert reads > 1


WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from trader.broker.journal import OrderJournal
    from trader.broker.order import Fill, OrderIntent
    path, n, report = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    ts = dt.datetime(2024, 1, 2, 21, tzinfo=dt.UTC)
    j = OrderJournal(path)
    i = 0
    while n == 0 or i < n:
        intent = OrderIntent(intent_id=f"SPY-{i}", symbol="SPY", side="BUY", quantity=1, created_at=ts,
                             source="writer")
        j.record_intent(intent)
        j.record_fill(Fill(exec_id=f"e{i}", intent_id=intent.intent_id, perm_id=i, order_id=i, symbol="SPY",
                           side="BUY", qty=1, price=100.0 + i, time=ts))
        i += 1
        if report:
            print(i, flush=True)
    j.close()
    """
)


def test_a_killed_writer_leaves_only_whole_events(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "0", "1"], stdout=subprocess.PIPE, text=True
    )
    acknowledged = 0
    try:
        assert writer.stdout is not None
        for line in writer.stdout:  # wait for 40 committed iterations, then kill it mid-stream
            acknowledged = int(line)
            if acknowledged >= 40:
                break
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with OrderJournal(path) as j:
        events = j.events()
        fills = j.fills()
        assert len(fills) >= acknowledged  # every acknowledged record survived
        assert len(j.intents()) >= acknowledged
        assert {e.kind for e in events} <= set(EVENT_KINDS)
        assert len(fills) == sum(e.kind == "fill" for e in events)
        for k, fill in enumerate(fills):
            assert fill.exec_id == f"e{k}" and fill.price == 100.0 + k
        # The writer can carry on after a crash: the journal is writable and consistent.
        j.record_intent(make_intent("AFTER-1"))
        assert j.state("AFTER-1").intent.intent_id == "AFTER-1"


def test_a_text_file_is_not_a_journal_and_is_left_untouched(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("ts,open,high\n")
    with pytest.raises(NotAJournalError, match="not an order journal"):
        OrderJournal(path)
    assert path.read_text() == "ts,open,high\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_another_sqlite_database_is_not_a_journal(tmp_path: Path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE bars (ts TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NotAJournalError, match="bars"):
        OrderJournal(path)
    assert path.read_bytes() == before


def test_a_meta_table_of_another_format_is_not_a_journal(tmp_path: Path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('format', 'someone.else')")
    conn.commit()
    conn.close()
    with pytest.raises(NotAJournalError, match=r"someone\.else"):
        OrderJournal(path)


def test_a_newer_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("format", "trader.order_journal"), ("version", "99")]
    )
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="v99 is newer"):
        OrderJournal(path)


def test_a_directory_is_not_a_journal(tmp_path: Path):
    with pytest.raises(NotAJournalError, match="directory"):
        OrderJournal(tmp_path)


def test_an_unwritable_location_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(JournalNotWritableError, match="writable run directory"):
        OrderJournal(blocker / "orders.sqlite")  # its folder would have to live inside a file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_read_only_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    OrderJournal(path).close()
    path.chmod(0o444)
    with pytest.raises(JournalNotWritableError, match="read-only"):
        OrderJournal(path)


def test_readonly_journal_reads_but_refuses_writes(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    with OrderJournal(path) as j:
        j.record_intent(make_intent())
    with OrderJournal(path, readonly=True) as reader:
        assert [i.intent_id for i in reader.intents()] == ["SPY-1"]
        with pytest.raises(JournalNotWritableError, match="read-only"):
            reader.record_intent(make_intent("SPY-2"))
    with pytest.raises(JournalError, match="no order journal"):
        OrderJournal(tmp_path / "missing.sqlite", readonly=True)


def test_an_empty_file_becomes_a_journal(tmp_path: Path):
    path = tmp_path / "orders.sqlite"
    path.touch()
    with OrderJournal(path) as j:
        j.record_intent(make_intent())
    with OrderJournal(path) as j:
        assert len(j.intents()) == 1


def test_errors_are_trader_errors():
    from trader.errors import TraderError

    assert issubclass(NotAJournalError, TraderError) and issubclass(JournalNotWritableError, TraderError)
