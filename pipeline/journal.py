"""The run journal: one SQLite file (WAL) that remembers each import's plan and each batch's state.

Per import: its identity, the input's fingerprint and path, the settings that shape the plan,
the point definitions validation used, and per batch its key, rows and content hash and its
state, ``planned -> sending -> done | failed``, or ``split``/``reconciled`` into child batches.
Each change is committed before the step that depends on it: ``sending`` is durable before
the request leaves. Rows Engage refused are kept with their reasons; accepted rows are derived
(a done batch's rows less its refused ones), so the journal stays small for 50M-row imports.

A journal this version can't vouch for (corrupt, another program's, a newer schema, read-only)
is a ``JournalError`` (exit 2), never a silent fresh start.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pipeline.errors import JournalError

SCHEMA_VERSION = 3
APP = "points-import"
FILENAME = "journal.sqlite"
STALE_AFTER_S = 600.0  # a holder silent this long is taken as dead (its pid may be reused)
log = structlog.get_logger("pipeline.journal")
BEAT_EVERY_S = 30.0  # a holder's heartbeat, while it holds, whatever it is waiting for
TERMINAL = ("done", "failed")
FINISHED = "finished"  # an import's status once it ran to the end

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE imports (
    import_id TEXT PRIMARY KEY,
    input_path TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    settings TEXT NOT NULL,
    definitions TEXT,
    batches INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    summary TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    holder_pid INTEGER,
    holder_host TEXT,
    holder_since TEXT,
    holder_beat REAL,
    input_bytes INTEGER
);
CREATE TABLE batches (
    import_id TEXT NOT NULL REFERENCES imports(import_id),
    seq INTEGER NOT NULL,
    part TEXT NOT NULL,
    key TEXT NOT NULL,
    rows INTEGER NOT NULL,
    content_sha256 TEXT NOT NULL,
    source_rows TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_sent_at REAL,
    updated_at REAL NOT NULL,
    status INTEGER,
    reason TEXT,
    unmatched INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (import_id, seq, part)
);
CREATE TABLE refused (
    import_id TEXT NOT NULL REFERENCES imports(import_id),
    source_row INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    part TEXT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    key TEXT,
    PRIMARY KEY (import_id, source_row)
);
"""
_MIGRATIONS: dict[int, str] = {  # version -> SQL taking the schema from version-1 to version
    # a batch's notAccepted entries that matched no row sent: kept for the runs that resume it
    2: "ALTER TABLE batches ADD COLUMN unmatched INTEGER NOT NULL DEFAULT 0",
    # the bytes of the input imported: a file that grew since is known by them (a prefix)
    3: "ALTER TABLE imports ADD COLUMN input_bytes INTEGER",
}
# what a resumed run looks up a batch at a time; an index changes nothing an older version reads
_INDEXES = "CREATE INDEX IF NOT EXISTS refused_by_batch ON refused (import_id, seq, part)"


@dataclass(frozen=True)
class BatchRecord:
    seq: int
    part: str
    key: str
    rows: int
    state: str
    attempts: int
    first_sent_at: float | None
    status: int | None
    reason: str | None
    source_rows: list[int] | None
    unmatched: int = 0  # notAccepted entries of its answer that matched no row sent
    updated_at: float | None = None  # for a batch in doubt: when it was last sent


@dataclass(frozen=True)
class ImportRecord:
    import_id: str
    input_path: str
    input_sha256: str
    settings: dict[str, Any]
    definitions: list[int] | None
    batches: int
    rows: int
    status: str
    exit_code: int | None
    summary: dict[str, Any] | None
    last_error: str | None
    created_at: str
    updated_at: str
    holder: str | None
    input_bytes: int | None = None  # of the input as imported (None: an older version's)


class Journal:
    """The journal file of a state directory. Thread-safe: one connection behind a lock."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._beating: dict[str, threading.Event] = {}
        self._db = _connect(path)
        try:
            _prepare(self._db, path)
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, state_dir: Path, create: bool = True) -> Journal:
        if not create and not (state_dir / FILENAME).is_file():
            raise JournalError(f"no journal in {state_dir}: nothing was run with this --state-dir")
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                f"state directory {state_dir} can't be created: {exc.strerror}"
            ) from None
        return cls(state_dir / FILENAME)

    def close(self) -> None:
        for stop in self._beating.values():
            stop.set()
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction that holds the write lock from its first read on,
        with SQLite's errors made journal errors."""
        with self._lock:
            try:
                with _immediate(self._db) as db:
                    yield db
            except sqlite3.Error as exc:
                raise _journal_error(exc, self.path) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _journal_error(exc, self.path) from exc

    # --- imports ----------------------------------------------------------------------

    def find(self, import_id: str) -> ImportRecord | None:
        rows = self._read("SELECT * FROM imports WHERE import_id = ?", (import_id,))
        return _import(rows[0]) if rows else None

    def imports(self) -> list[ImportRecord]:
        return [
            _import(r) for r in self._read("SELECT * FROM imports ORDER BY created_at, import_id")
        ]

    def register(
        self,
        import_id: str,
        input_path: str,
        input_sha256: str,
        settings: dict[str, Any],
        definitions: Sequence[int] | None = None,
        input_bytes: int | None = None,
    ) -> None:
        """Record a new import; its batches are added as they are planned (``plan_batch``)."""
        stamp = _iso(self._clock())
        with self._write() as db:
            db.execute(
                "INSERT INTO imports (import_id, input_path, input_sha256, settings, definitions,"
                " batches, rows, status, created_at, updated_at, input_bytes)"
                " VALUES (?, ?, ?, ?, ?, 0, 0, 'planned', ?, ?, ?)",
                (import_id, input_path, input_sha256, _dump(settings),
                 None if definitions is None else _dump(sorted(definitions)), stamp, stamp,
                 input_bytes),
            )  # fmt: skip

    def set_definitions(self, import_id: str, definitions: Sequence[int]) -> None:
        """The point definitions validation used: a resumed run must judge rows the same."""
        with self._write() as db:
            db.execute("UPDATE imports SET definitions = ? WHERE import_id = ?",
                       (_dump(sorted(definitions)), import_id))  # fmt: skip

    def plan_batch(self, import_id: str, seq: int, key: str, rows: int, sha256: str) -> None:
        """Add a planned batch; one planned before must have the same key (the same rows)."""
        self.plan_batches(import_id, [(seq, key, rows, sha256)])

    def plan_batches(self, import_id: str, planned: Sequence[tuple[int, str, int, str]]) -> None:
        """``plan_batch`` for several (seq, key, rows, sha256), in one transaction."""
        if not planned:
            return
        with self._write() as db:
            for seq, key, rows, sha256 in planned:
                found = db.execute(
                    "SELECT key FROM batches WHERE import_id = ? AND seq = ? AND part = ''",
                    (import_id, seq),
                ).fetchone()
                if found is not None and found["key"] != key:
                    raise JournalError(
                        f"import {import_id} was planned differently (batch {seq} had other "
                        "rows: another batch size, time zone, column mapping or validation "
                        "setting); finish it with the same file and config. Another "
                        "--import-id would send the rows that landed again"
                    )
                if found is None:
                    db.execute(
                        "INSERT INTO batches (import_id, seq, part, key, rows, content_sha256,"
                        " state, updated_at) VALUES (?, ?, '', ?, ?, ?, 'planned', ?)",
                        (import_id, seq, key, rows, sha256, self._clock()),
                    )
            db.execute("UPDATE imports SET batches = MAX(batches, ?) WHERE import_id = ?",
                       (max(seq for seq, *_ in planned), import_id))  # fmt: skip

    def set_status(self, import_id: str, status: str, error: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE imports SET status = ?, last_error = ?, updated_at = ? WHERE import_id = ?",
                (status, error, _iso(self._clock()), import_id),
            )

    def finish(self, import_id: str, summary: dict[str, Any], exit_code: int, status: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE imports SET status = ?, exit_code = ?, summary = ?, last_error = ?,"
                " rows = ?, batches = ?, updated_at = ? WHERE import_id = ?",
                (
                    status,
                    exit_code,
                    _dump(summary),
                    summary.get("error"),
                    summary.get("rows_read", 0),
                    summary.get("batches_total", 0),
                    _iso(self._clock()),
                    import_id,
                ),
            )

    # --- one run at a time ------------------------------------------------------------

    def acquire(self, import_id: str) -> None:
        """Become the one process running ``import_id``, or say who is."""
        now = self._clock()
        me, host = os.getpid(), socket.gethostname()
        with self._write() as db:
            row = db.execute(
                "SELECT holder_pid, holder_host, holder_since, holder_beat"
                " FROM imports WHERE import_id = ?",
                (import_id,),
            ).fetchone()
            mine = row and (row["holder_pid"], row["holder_host"]) == (me, host)
            if row and row["holder_pid"] and not mine and not _dead(row, now):
                raise JournalError(
                    f"import {import_id} is being run by pid {row['holder_pid']} on "
                    f"{row['holder_host']} since {row['holder_since']}; wait for it to end"
                )
            db.execute(
                "UPDATE imports SET holder_pid = ?, holder_host = ?, holder_since = ?,"
                " holder_beat = ? WHERE import_id = ?",
                (me, host, _iso(now), now, import_id),
            )
        self._beat_while_held(import_id)

    def _beat_while_held(self, import_id: str) -> None:
        """Keep the hold's heartbeat fresh through long retries and reconciliations."""
        if import_id in self._beating:
            return
        stop = self._beating[import_id] = threading.Event()

        def beat() -> None:
            while not stop.wait(BEAT_EVERY_S):
                try:
                    with self._write() as db:
                        _beat(db, import_id, self._clock())
                except sqlite3.ProgrammingError:  # the journal was closed
                    return
                except JournalError as exc:  # busy, say: the next beat tries again
                    log.warning("journal heartbeat failed", error=str(exc))

        threading.Thread(target=beat, name=f"journal-beat-{import_id}", daemon=True).start()

    def release(self, import_id: str) -> None:
        stop = self._beating.pop(import_id, None)
        if stop is not None:
            stop.set()
        with self._write() as db:
            db.execute(
                "UPDATE imports SET holder_pid = NULL, holder_host = NULL,"
                " holder_since = NULL, holder_beat = NULL WHERE import_id = ?"
                " AND holder_pid = ? AND holder_host = ?",
                (import_id, os.getpid(), socket.gethostname()),
            )

    # --- batches ----------------------------------------------------------------------

    def batches(self, import_id: str) -> dict[tuple[int, str], BatchRecord]:
        rows = self._read(
            "SELECT * FROM batches WHERE import_id = ? ORDER BY seq, part", (import_id,)
        )
        return {(r["seq"], r["part"]): _batch(r) for r in rows}

    def sending(self, import_id: str, seq: int, part: str) -> None:
        """Durable before the request leaves: the batch's outcome is now unknown until answered."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE batches SET state = 'sending', attempts = attempts + 1,"
                " first_sent_at = COALESCE(first_sent_at, ?), updated_at = ?"
                " WHERE import_id = ? AND seq = ? AND part = ?",
                (now, now, import_id, seq, part),
            )

    def settle(
        self,
        import_id: str,
        seq: int,
        part: str,
        state: str,
        status: int | None,
        refused: Sequence[tuple[int, str, str]],
        key: str,
        reason: str | None = None,
        unmatched: int = 0,
    ) -> None:
        """A batch's final state and the rows it refused: (sourceRow, stage, reason); and how
        many refusals in its answer matched no row sent."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE batches SET state = ?, status = ?, reason = ?, unmatched = ?,"
                " updated_at = ? WHERE import_id = ? AND seq = ? AND part = ?",
                (state, status, reason, unmatched, now, import_id, seq, part),
            )
            db.executemany(
                "INSERT OR REPLACE INTO refused (import_id, source_row, seq, part, stage, reason,"
                " key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(import_id, row, seq, part, stage, why, key) for row, stage, why in refused],
            )

    def divide(
        self,
        import_id: str,
        seq: int,
        part: str,
        state: str,
        children: Sequence[tuple[str, str, int, str, list[int] | None]],
    ) -> None:
        """A batch replaced by children (part, key, rows, sha256, source rows if not derivable)."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE batches SET state = ?, updated_at = ? WHERE import_id = ?"
                " AND seq = ? AND part = ?",
                (state, now, import_id, seq, part),
            )
            db.executemany(
                "INSERT OR IGNORE INTO batches (import_id, seq, part, key, rows, content_sha256,"
                " source_rows, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'planned', ?)",
                [
                    (import_id, seq, p, k, n, sha, None if rows is None else _dump(rows), now)
                    for p, k, n, sha, rows in children
                ],
            )

    def refused_in(self, import_id: str, seq: int, part: str) -> list[tuple[int, str, str]]:
        """The rows one batch refused: (sourceRow, stage, reason); a batch at a time, so that a
        resumed run does not hold millions of them."""
        rows = self._read(
            "SELECT source_row, stage, reason FROM refused"
            " WHERE import_id = ? AND seq = ? AND part = ? ORDER BY source_row",
            (import_id, seq, part),
        )
        return [(r["source_row"], r["stage"], r["reason"]) for r in rows]

    def refused_count(self, import_id: str) -> int:
        rows = self._read("SELECT COUNT(*) AS n FROM refused WHERE import_id = ?", (import_id,))
        return int(rows[0]["n"])

    def counts(self, import_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT state, COUNT(*) AS n FROM batches WHERE import_id = ? GROUP BY state",
            (import_id,),
        )
        return {r["state"]: r["n"] for r in rows}


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _journal_error(exc, path) from exc
    db.row_factory = sqlite3.Row
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create a new journal, or check and migrate an existing one."""
    try:
        db.execute("PRAGMA journal_mode = WAL")
        with _immediate(db):
            found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {r[0] for r in found}
            if not tables:
                _create(db)
            else:
                _check(db, tables, path)
            db.execute(_INDEXES)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise _journal_error(exc, path) from exc


def _create(db: sqlite3.Connection) -> None:
    """The schema and its meta rows, inside the caller's transaction."""
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("app", APP), ("schema_version", str(SCHEMA_VERSION)), ("created_at", _iso(time.time()))],
    )


def _check(db: sqlite3.Connection, tables: set[str], path: Path) -> None:
    foreign = JournalError(
        f"{path} is not a points-import journal (another program's SQLite file); "
        "point --state-dir elsewhere"
    )
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:
        raise foreign from None
    if meta.get("app") != APP:
        raise foreign
    try:
        version = int(meta["schema_version"])
    except (KeyError, ValueError):
        raise JournalError(f"{path} has no readable schema version: it is damaged") from None
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"{path} was written by a newer points-import (journal schema {version}, this one "
            f"knows {SCHEMA_VERSION}); upgrade points-import"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        if target not in _MIGRATIONS:
            raise JournalError(f"{path} has journal schema {version}, which can't be migrated")
        for statement in filter(str.strip, _MIGRATIONS[target].split(";")):
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.commit()


def _journal_error(exc: sqlite3.Error, path: Path) -> JournalError:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return JournalError(
            f"journal {path} is read-only; make it writable or use another --state-dir"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return JournalError(
            f"journal {path} is corrupt ({text}); move it aside to start over "
            "(what it recorded is then forgotten)"
        )
    if "locked" in text or "busy" in text:
        return JournalError(f"journal {path} is locked by another process ({text})")
    return JournalError(f"journal {path} can't be used: {text}")


def _dead(row: sqlite3.Row, now: float) -> bool:
    """A holder is dead if its heartbeat stopped (on this host a live pid may be another
    process's now), or, on this host, if its pid is gone."""
    if now - (row["holder_beat"] or 0) > STALE_AFTER_S:
        return True
    if row["holder_host"] != socket.gethostname():
        return False
    try:
        os.kill(row["holder_pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _beat(db: sqlite3.Connection, import_id: str, now: float) -> None:
    db.execute(
        "UPDATE imports SET holder_beat = ?, updated_at = ? WHERE import_id = ?",
        (now, _iso(now), import_id),
    )


def _import(r: sqlite3.Row) -> ImportRecord:
    holder = (
        f"pid {r['holder_pid']} on {r['holder_host']} since {r['holder_since']}"
        if r["holder_pid"]
        else None
    )
    return ImportRecord(
        import_id=r["import_id"],
        input_path=r["input_path"],
        input_sha256=r["input_sha256"],
        settings=json.loads(r["settings"]),
        definitions=json.loads(r["definitions"]) if r["definitions"] else None,
        batches=r["batches"],
        rows=r["rows"],
        status=r["status"],
        exit_code=r["exit_code"],
        summary=json.loads(r["summary"]) if r["summary"] else None,
        last_error=r["last_error"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        holder=holder,
        input_bytes=r["input_bytes"],
    )


def _batch(r: sqlite3.Row) -> BatchRecord:
    return BatchRecord(
        seq=r["seq"],
        part=r["part"],
        key=r["key"],
        rows=r["rows"],
        state=r["state"],
        attempts=r["attempts"],
        first_sent_at=r["first_sent_at"],
        status=r["status"],
        reason=r["reason"],
        source_rows=json.loads(r["source_rows"]) if r["source_rows"] else None,
        unmatched=r["unmatched"],
        updated_at=r["updated_at"],
    )


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
