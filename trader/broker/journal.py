"""The order journal: an append-only SQLite file of everything that happened to every order.

One file per run or session directory. Rows are only ever inserted: the code has no UPDATE or DELETE, and
triggers in the file refuse them, so the journal is an audit trail that a restarted execution actor can
trust. What an order looks like now (:class:`IntentState`) is derived from its events on every read, never
stored and edited.

Durability: WAL mode with ``synchronous=FULL`` and one transaction per record, so a committed event is on
disk and a process killed mid-write leaves no half row. One writer process with any number of readers
(``OrderJournal(path, readonly=True)``) is safe; readers see whole transactions only.

Event kinds: intent, approval, rejection, submission, status, fill, commission, error, reconcile. Fills are
stored once per ``exec_id`` (a UNIQUE index), so a fill reported again after a reconnect is ignored.

Example::

    from trader.broker.journal import OrderJournal
    with OrderJournal("runs/paper-1/orders.sqlite") as journal:
        journal.record_intent(intent)
        journal.record_approval(approval)
        journal.record_submission(intent.intent_id, order_id=7, client_id=1)
        journal.record_status(intent.intent_id, 7, 123456, "Filled", filled=10, remaining=0, avg_price=470.4)
        print(journal.state(intent.intent_id).status)      # OrderStatus.FILLED
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from trader.broker.errors import (
    JournalError,
    JournalNotWritableError,
    NotAJournalError,
    UnknownIntentError,
)
from trader.broker.order import Approval, Fill, OrderIntent, OrderStatus, canonical_json

__all__ = [
    "EVENT_KINDS",
    "JOURNAL_FORMAT",
    "SCHEMA_VERSION",
    "IntentState",
    "JournalEvent",
    "OrderJournal",
]

JOURNAL_FORMAT = "trader.order_journal"
SCHEMA_VERSION = 1
EVENT_KINDS = (
    "intent",
    "approval",
    "rejection",
    "submission",
    "status",
    "fill",
    "commission",
    "error",
    "reconcile",
)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 10_000  # a reader's checkpoint or a slow disk; long enough never to fail a record

_KIND_CHECK = ", ".join(f"'{k}'" for k in EVENT_KINDS)
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        intent_id TEXT,
        kind TEXT NOT NULL CHECK (kind IN ({_KIND_CHECK})),
        order_id INTEGER,
        perm_id INTEGER,
        payload TEXT NOT NULL CHECK (json_valid(payload))
    )""",
    "CREATE INDEX events_by_intent ON events (intent_id, seq)",
    "CREATE INDEX events_by_kind ON events (kind, seq)",
    """CREATE TABLE fills (
        exec_id TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES events (seq),
        intent_id TEXT
    )""",
    "CREATE UNIQUE INDEX fills_exec_id ON fills (exec_id)",
    "CREATE INDEX fills_by_intent ON fills (intent_id)",
    # The file itself refuses edits, so even a hand-run sqlite3 shell cannot rewrite history by accident.
    *(
        f"CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'order journal is append-only: {op} on {table} refused'); END"
        for table in ("meta", "events", "fills")
        for op in ("UPDATE", "DELETE")
    ),
)


@dataclass(frozen=True)
class JournalEvent:
    """One journal row. ``seq`` orders events (1, 2, ...); ``ts`` is when it was recorded (UTC)."""

    seq: int
    ts: dt.datetime
    intent_id: str | None
    kind: str
    order_id: int | None
    perm_id: int | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class IntentState:
    """What one intent's events add up to. Derived on read; never stored.

    ``approved`` is None until risk answered. ``submitted`` says an order was ever sent (a submission
    event). ``status`` is the last status reported (a terminal status is not undone by a late non-terminal
    one). ``filled`` (shares) and ``avg_price`` are from the recorded fills (each exec_id once);
    ``reported_filled`` and ``reported_avg_price`` are from the last status, which may run ahead of the
    fills. ``commission`` sums the commission reports (None before the first).
    """

    intent: OrderIntent
    approved: bool | None
    rejection_reason: str | None
    submitted: bool
    order_id: int | None
    perm_id: int | None
    client_id: int | None
    status: OrderStatus | None
    filled: float
    avg_price: float | None
    reported_filled: float | None
    reported_avg_price: float | None
    remaining: float
    commission: float | None
    last_error: tuple[int, str] | None
    last_seq: int
    updated_at: dt.datetime

    @property
    def intent_id(self) -> str:
        return self.intent.intent_id

    @property
    def rejected(self) -> bool:
        return self.approved is False or self.status is OrderStatus.REJECTED

    @property
    def done(self) -> bool:
        """Nothing more will happen: rejected, a terminal status, or every share filled."""
        terminal = self.status is not None and self.status.is_terminal
        return self.approved is False or terminal or self.filled >= self.intent.quantity

    @property
    def open(self) -> bool:
        return not self.done


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _status(value: object) -> OrderStatus:
    try:
        return OrderStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in OrderStatus)
        raise JournalError(f"unknown order status {value!r}; use one of {allowed}") from None


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class OrderJournal:
    """Append-only order journal in one SQLite file; see the module docstring.

    ``OrderJournal(path)`` creates the file (and its folder) or opens an existing journal for writing;
    ``readonly=True`` opens an existing one for reading only. ``clock`` returns the UTC time stamped on each
    event (default: the system clock). Raises JournalNotWritableError when the file or folder cannot be
    written, NotAJournalError for a file that is not an order journal.

    >>> journal = OrderJournal("/tmp/orders.sqlite")        # doctest: +SKIP
    >>> [s.intent_id for s in journal.open_intents()]        # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._clock = clock or _now
        self._lock = threading.RLock()
        self._read_depth = 0  # nesting of snapshot() blocks
        self._check_existing_file()
        self._conn = self._connect()
        try:
            self._prepare()
        except BaseException:
            self._conn.close()
            raise

    # -- opening -------------------------------------------------------------------------------------------

    def _check_existing_file(self) -> None:
        """Refuse a file that is not an order journal before touching it (WAL mode would rewrite it)."""
        path = self.path
        if path.is_dir():
            raise NotAJournalError(f"{path} is a directory; give a file path for the order journal")
        if not path.exists():
            if self.readonly:
                raise JournalError(f"{path}: no order journal there to read; check the run directory")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalNotWritableError(
                    f"{path}: cannot create the journal's folder ({exc.strerror or exc}); "
                    "choose a writable run directory"
                ) from None
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise JournalNotWritableError(
                    f"{path}: folder {path.parent} is not writable; choose a writable run directory"
                )
            return
        try:
            with path.open("rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise JournalNotWritableError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        if head and head != _SQLITE_MAGIC:
            raise NotAJournalError(f"{path} is not an order journal (not an SQLite file); give another path")
        if head:
            tables = self._read_only_probe()
            if tables and "meta" not in tables:
                raise NotAJournalError(
                    f"{path} is an SQLite file but not an order journal (tables: {', '.join(sorted(tables))})"
                )
        if not self.readonly and not os.access(path, os.W_OK):
            raise JournalNotWritableError(f"{path}: the journal file is read-only; fix its permissions")

    def _read_only_probe(self) -> set[str]:
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise NotAJournalError(
                f"{self.path} is not an order journal ({exc}); give another path"
            ) from None
        return {r[0] for r in rows if not r[0].startswith("sqlite_")}

    def _connect(self) -> sqlite3.Connection:
        target = f"{self.path.resolve().as_uri()}?mode={'ro' if self.readonly else 'rwc'}"
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each record is exactly one transaction.
            conn = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not self.readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise JournalError(f"{self.path}: SQLite refused WAL mode (got {mode}); use a local disk")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.OperationalError as exc:
            raise self._operational(exc) from None
        except sqlite3.DatabaseError as exc:
            raise NotAJournalError(
                f"{self.path} is not an order journal ({exc}); give another path"
            ) from None
        return conn

    def _operational(self, exc: sqlite3.OperationalError) -> JournalError:
        text = str(exc)
        if "readonly" in text or "unable to open" in text or "disk I/O" in text or "permission" in text:
            return JournalNotWritableError(f"{self.path}: cannot write the order journal ({text})")
        return JournalError(f"{self.path}: order journal error ({text})")

    def _prepare(self) -> None:
        """Create the schema in a new file, or check the format and version row of an existing one."""
        with self._lock:
            try:
                if self.readonly:
                    self._check_meta()
                    return
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    tables = {
                        r[0]
                        for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                        if not r[0].startswith("sqlite_")
                    }
                    if not tables:
                        for statement in _SCHEMA:
                            self._conn.execute(statement)
                        self._conn.executemany(
                            "INSERT INTO meta (key, value) VALUES (?, ?)",
                            [
                                ("format", JOURNAL_FORMAT),
                                ("version", str(SCHEMA_VERSION)),
                                ("created_at", self._clock().astimezone(dt.UTC).isoformat()),
                            ],
                        )
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._check_meta()
                # Commission lookups by exec id; journals made before this index get it when opened.
                self._conn.execute(
                    "CREATE INDEX IF NOT EXISTS events_commission_exec ON events "
                    "(json_extract(payload, '$.exec_id')) WHERE kind = 'commission'"
                )
            except sqlite3.OperationalError as exc:
                raise self._operational(exc) from None
            except sqlite3.DatabaseError as exc:
                raise NotAJournalError(f"{self.path} is not an order journal ({exc})") from None

    def _check_meta(self) -> None:
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            raise NotAJournalError(f"{self.path} is not an order journal (no meta table)") from None
        if meta.get("format") != JOURNAL_FORMAT:
            raise NotAJournalError(
                f"{self.path} is not an order journal (format row {meta.get('format')!r}, "
                f"expected {JOURNAL_FORMAT!r})"
            )
        try:
            version = int(meta.get("version", ""))
        except ValueError:
            raise NotAJournalError(f"{self.path}: bad journal version row {meta.get('version')!r}") from None
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path}: journal schema v{version} is newer than this trader reads "
                f"(v{SCHEMA_VERSION}); upgrade trader"
            )

    # -- lifecycle -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file. Every recorded event is already committed; closing loses nothing."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> OrderJournal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OrderJournal({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    # -- writing -------------------------------------------------------------------------------------------

    def _insert(
        self,
        kind: str,
        intent_id: str | None,
        payload: Mapping[str, Any],
        order_id: int | None = None,
        perm_id: int | None = None,
    ) -> int:
        """Insert one event inside the caller's transaction; returns its seq."""
        ts = self._clock().astimezone(dt.UTC).isoformat(timespec="microseconds")
        cur = self._conn.execute(
            "INSERT INTO events (ts, intent_id, kind, order_id, perm_id, payload) VALUES (?, ?, ?, ?, ?, ?)",
            (ts, intent_id, kind, _opt_int(order_id), _opt_int(perm_id), canonical_json(dict(payload))),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def _write(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as one IMMEDIATE transaction: all of its rows are committed, or none."""
        if self.readonly:
            raise JournalNotWritableError(
                f"{self.path}: opened read-only; open it without readonly to record"
            )
        with self._lock:
            if self._read_depth:
                raise JournalError("cannot record inside journal.snapshot(); record after the block")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn()
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise self._operational(exc) from None
            return result

    def _require_intent(self, intent_id: str) -> None:
        row = self._conn.execute(
            "SELECT 1 FROM events WHERE intent_id = ? AND kind = 'intent' LIMIT 1", (intent_id,)
        ).fetchone()
        if row is None:
            raise UnknownIntentError(
                f"intent {intent_id!r} is not in the journal {self.path}; record it first"
            )

    def record_intent(self, intent: OrderIntent) -> int:
        """Record a new intent; returns its event seq. The same intent again is a no-op (same seq).

        Raises JournalError when another intent with this intent_id but different fields is recorded:
        intent ids must be unique, or two decisions would share one broker order.
        """
        if not isinstance(intent, OrderIntent):
            raise JournalError(f"record_intent takes an OrderIntent, got {type(intent).__name__}")
        payload = intent.to_dict()

        def write() -> int:
            row = self._conn.execute(
                "SELECT seq, payload FROM events WHERE intent_id = ? AND kind = 'intent' "
                "ORDER BY seq LIMIT 1",
                (intent.intent_id,),
            ).fetchone()
            if row is not None:
                if json.loads(row[1]) == json.loads(canonical_json(payload)):
                    return int(row[0])
                raise JournalError(
                    f"intent_id {intent.intent_id!r} is already recorded with different fields; "
                    "derive a distinct intent_id for each order"
                )
            return self._insert("intent", intent.intent_id, payload)

        return int(self._write(write))

    def record_approval(self, approval: Approval) -> int:
        """Record risk's answer (kind ``approval``, or ``rejection`` when ``approved`` is false).

        The journal stores the signed approval as given; checking it is the execution side's job.
        """
        if not isinstance(approval, Approval):
            raise JournalError(f"record_approval takes an Approval, got {type(approval).__name__}")

        def write() -> int:
            self._require_intent(approval.intent_id)
            kind = "approval" if approval.approved else "rejection"
            return self._insert(kind, approval.intent_id, approval.to_dict())

        return int(self._write(write))

    def record_rejection(self, intent_id: str, reason: str, by: str) -> int:
        """Record a refusal that is not a signed risk answer (e.g. execution found the approval invalid)."""

        def write() -> int:
            self._require_intent(intent_id)
            return self._insert("rejection", intent_id, {"approved": False, "reason": reason, "approver": by})

        return int(self._write(write))

    def record_submission(self, intent_id: str, order_id: int, client_id: int) -> int:
        """Record that an order for ``intent_id`` was sent (order id and API client id at the gateway)."""

        def write() -> int:
            self._require_intent(intent_id)
            payload = {"order_id": int(order_id), "client_id": int(client_id)}
            return self._insert("submission", intent_id, payload, order_id=order_id)

        return int(self._write(write))

    def record_status(
        self,
        intent_id: str | None,
        order_id: int | None,
        perm_id: int | None,
        status: OrderStatus | str,
        filled: float,
        remaining: float,
        avg_price: float | None,
    ) -> int:
        """Record a status report (filled/remaining in shares, avg_price of the filled shares).

        Broker facts are never refused: a status for an intent the journal does not know is stored too.
        """
        state = _status(status)
        payload = {
            "status": state.value,
            "filled": float(filled),
            "remaining": float(remaining),
            "avg_price": _opt_float(avg_price),
        }
        return int(self._write(lambda: self._insert("status", intent_id, payload, order_id, perm_id)))

    def record_fill(self, fill: Fill) -> bool:
        """Record an execution once per exec_id; returns False (and stores nothing) for one already stored."""
        if not isinstance(fill, Fill):
            raise JournalError(f"record_fill takes a Fill, got {type(fill).__name__}")

        def write() -> bool:
            seen = self._conn.execute("SELECT 1 FROM fills WHERE exec_id = ?", (fill.exec_id,)).fetchone()
            if seen is not None:
                return False
            seq = self._insert("fill", fill.intent_id, fill.to_dict(), fill.order_id, fill.perm_id)
            self._conn.execute(
                "INSERT INTO fills (exec_id, seq, intent_id) VALUES (?, ?, ?)",
                (fill.exec_id, seq, fill.intent_id),
            )
            return True

        return bool(self._write(write))

    def record_commission(self, exec_id: str, commission: float, currency: str) -> int:
        """Record the commission of one execution (account currency units); the latest report wins."""

        def write() -> int:
            row = self._conn.execute(
                "SELECT events.intent_id, events.order_id, events.perm_id FROM fills "
                "JOIN events ON events.seq = fills.seq WHERE fills.exec_id = ?",
                (exec_id,),
            ).fetchone()
            intent_id, order_id, perm_id = row if row is not None else (None, None, None)
            payload = {"exec_id": str(exec_id), "commission": float(commission), "currency": str(currency)}
            return self._insert("commission", intent_id, payload, order_id, perm_id)

        return int(self._write(write))

    def record_error(
        self, intent_id: str | None, code: int, message: str, order_id: int | None = None
    ) -> int:
        """Record a broker error (IBKR code and message) about an order, or a general one (intent_id None)."""
        payload = {"code": int(code), "message": str(message)}
        return int(self._write(lambda: self._insert("error", intent_id, payload, order_id)))

    def record_reconcile(
        self,
        intent_id: str | None,
        payload: Mapping[str, Any],
        order_id: int | None = None,
        perm_id: int | None = None,
    ) -> int:
        """Record what a reconciliation with the broker found. A ``status`` key (with ``filled``,
        ``remaining``, ``avg_price``) in ``payload`` counts as a status report in the derived state."""
        if "status" in payload:
            _status(payload["status"])  # refuse a status the derived state could not read back
        body = dict(payload)
        return int(self._write(lambda: self._insert("reconcile", intent_id, body, order_id, perm_id)))

    # -- reading -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[OrderJournal]:
        """Reads inside the block all see the journal at one point in time (one read transaction).

        A writer keeps committing meanwhile; the block just does not see it until it ends. Blocks nest.

        >>> with journal.snapshot():                       # doctest: +SKIP
        ...     events, fills = journal.events(), journal.fills()
        """
        with self._lock:
            if self._read_depth == 0:
                self._conn.execute("BEGIN")
            self._read_depth += 1
            try:
                yield self
            finally:
                self._read_depth -= 1
                if self._read_depth == 0:
                    self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.OperationalError as exc:
                raise self._operational(exc) from None

    @staticmethod
    def _event(row: tuple[Any, ...]) -> JournalEvent:
        seq, ts, intent_id, kind, order_id, perm_id, payload = row
        return JournalEvent(
            seq=int(seq),
            ts=dt.datetime.fromisoformat(ts),
            intent_id=intent_id,
            kind=kind,
            order_id=order_id,
            perm_id=perm_id,
            payload=json.loads(payload),
        )

    def events(
        self, intent_id: str | None = None, *, kinds: Iterable[str] | None = None, after_seq: int = 0
    ) -> list[JournalEvent]:
        """Events in seq order, optionally of one intent, of some kinds, or after a seq (for tailing)."""
        sql = "SELECT seq, ts, intent_id, kind, order_id, perm_id, payload FROM events WHERE seq > ?"
        args: list[Any] = [int(after_seq)]
        if intent_id is not None:
            sql += " AND intent_id = ?"
            args.append(intent_id)
        if kinds is not None:
            wanted = list(kinds)
            unknown = sorted(set(wanted) - set(EVENT_KINDS))
            if unknown:
                raise JournalError(f"unknown event kind(s) {unknown}; kinds are {', '.join(EVENT_KINDS)}")
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
            args += wanted
        return [self._event(r) for r in self._rows(sql + " ORDER BY seq", args)]

    def last_seq(self) -> int:
        """The seq of the newest event (0 for an empty journal)."""
        return int(self._rows("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    def has_intent(self, intent_id: str) -> bool:
        """Is this intent recorded?"""
        sql = "SELECT 1 FROM events WHERE intent_id = ? AND kind = 'intent' LIMIT 1"
        return bool(self._rows(sql, (intent_id,)))

    def intents(self) -> list[OrderIntent]:
        """Every recorded intent, in the order recorded."""
        rows = self._rows("SELECT payload FROM events WHERE kind = 'intent' ORDER BY seq")
        return [OrderIntent.from_dict(json.loads(r[0])) for r in rows]

    def submitted(self, intent_id: str) -> bool:
        """Was an order for this intent ever sent? (A submission event exists.)"""
        rows = self._rows(
            "SELECT 1 FROM events WHERE intent_id = ? AND kind = 'submission' LIMIT 1", (intent_id,)
        )
        return bool(rows)

    def _commissions(self, exec_ids: Iterable[str] | None) -> dict[str, float]:
        sql = "SELECT payload FROM events WHERE kind = 'commission'"
        args: list[Any] = []
        if exec_ids is not None:
            ids = list(exec_ids)
            if not ids:
                return {}
            sql += f" AND json_extract(payload, '$.exec_id') IN ({', '.join('?' * len(ids))})"
            args = ids
        latest: dict[str, float] = {}
        for (payload,) in self._rows(sql + " ORDER BY seq", args):
            body = json.loads(payload)
            latest[body["exec_id"]] = float(body["commission"])
        return latest

    def fills(self, intent_id: str | None = None) -> list[Fill]:
        """Recorded fills (one per exec_id) in the order recorded, each with its latest commission."""
        sql = "SELECT events.payload FROM fills JOIN events ON events.seq = fills.seq"
        args: list[Any] = []
        if intent_id is not None:
            sql += " WHERE fills.intent_id = ?"
            args.append(intent_id)
        with self.snapshot():
            found = [Fill.from_dict(json.loads(r[0])) for r in self._rows(sql + " ORDER BY fills.seq", args)]
            commissions = self._commissions([f.exec_id for f in found] if intent_id is not None else None)
        return [f.with_commission(commissions[f.exec_id]) if f.exec_id in commissions else f for f in found]

    def state(self, intent_id: str) -> IntentState:
        """The derived state of one intent; UnknownIntentError when it was never recorded."""
        with self.snapshot():
            events = self.events(intent_id)
            if not any(e.kind == "intent" for e in events):
                raise UnknownIntentError(f"intent {intent_id!r} is not in the journal {self.path}")
            return self._derive(events, self.fills(intent_id))

    def states(self) -> list[IntentState]:
        """The derived state of every intent, in the order recorded."""
        with self.snapshot():
            return [self.state(i.intent_id) for i in self.intents()]

    def open_intents(self) -> list[IntentState]:
        """Intents not done yet: not rejected, no terminal status, not fully filled (recorded order)."""
        return [s for s in self.states() if s.open]

    @staticmethod
    def _derive(events: list[JournalEvent], fills: list[Fill]) -> IntentState:
        intent: OrderIntent | None = None
        approved: bool | None = None
        reason: str | None = None
        submitted = False
        order_id = perm_id = client_id = None
        status: OrderStatus | None = None
        reported_filled = reported_avg = None
        last_error: tuple[int, str] | None = None
        for event in events:
            body = event.payload
            if event.order_id is not None:
                order_id = event.order_id
            if event.perm_id:
                perm_id = event.perm_id
            if event.kind == "intent" and intent is None:
                intent = OrderIntent.from_dict(body)
            elif event.kind == "approval":
                approved, reason = True, None
            elif event.kind == "rejection":
                approved, reason = False, str(body.get("reason", ""))
            elif event.kind == "submission":
                submitted = True
                client_id = body.get("client_id")
            elif event.kind in ("status", "reconcile") and "status" in body:
                new = OrderStatus(body["status"])
                # A late non-terminal report (out-of-order delivery) never reopens a finished order.
                if status is None or not status.is_terminal or new.is_terminal:
                    status = new
                    reported_filled = _opt_float(body.get("filled"))
                    reported_avg = _opt_float(body.get("avg_price"))
            elif event.kind == "error":
                last_error = (int(body["code"]), str(body["message"]))
        if intent is None:  # guarded by state(); kept for type checkers
            raise UnknownIntentError("no intent event")
        filled = sum(f.qty for f in fills)
        avg_price = sum(f.qty * f.price for f in fills) / filled if filled > 0 else None
        known = [f.commission for f in fills if f.commission is not None]
        return IntentState(
            intent=intent,
            approved=approved,
            rejection_reason=reason,
            submitted=submitted,
            order_id=order_id,
            perm_id=perm_id,
            client_id=client_id,
            status=status,
            filled=filled,
            avg_price=avg_price,
            reported_filled=reported_filled,
            reported_avg_price=reported_avg,
            remaining=max(intent.quantity - filled, 0.0),
            commission=sum(known) if known else None,
            last_error=last_error,
            last_seq=events[-1].seq,
            updated_at=events[-1].ts,
        )
