"""The journal's schema, its version and its migrations; opening a file and vouching for it.

A file this version can't vouch for (corrupt, another program's, a newer schema, read-only)
is a ``JournalError``, never a silent fresh start.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import JournalError

SCHEMA_VERSION = 4
BASE_VERSION = 3  # what SCHEMA creates; the migrations after it bring a new file up to date
APP = "points-import"

SCHEMA = """
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
MIGRATIONS: dict[int, str] = {  # version -> SQL taking the schema from version-1 to version
    # a batch's notAccepted entries that matched no row sent: kept for the runs that resume it
    2: "ALTER TABLE batches ADD COLUMN unmatched INTEGER NOT NULL DEFAULT 0",
    # the bytes of the input imported: a file that grew since is known by them (a prefix)
    3: "ALTER TABLE imports ADD COLUMN input_bytes INTEGER",
    # the landed-row index: the rows an import claimed (a piece's identities and source rows
    # a record), for every import of the same tenant to consult; a batch's first and last
    # row say which batch holds a row
    4: """
        ALTER TABLE imports ADD COLUMN ref INTEGER;
        UPDATE imports SET ref = rowid;
        ALTER TABLE imports ADD COLUMN tenant TEXT;
        ALTER TABLE imports ADD COLUMN claimed_through INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE imports ADD COLUMN forgotten INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE batches ADD COLUMN first_row INTEGER;
        ALTER TABLE batches ADD COLUMN last_row INTEGER;
        CREATE UNIQUE INDEX imports_by_ref ON imports (ref);
        CREATE TABLE claims (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            import_ref INTEGER NOT NULL,
            first_row INTEGER NOT NULL,
            last_row INTEGER NOT NULL,
            rows BLOB NOT NULL
        );
        CREATE INDEX claims_by_import ON claims (import_ref);
        CREATE TABLE landed_index (
            tenant TEXT NOT NULL,
            run INTEGER NOT NULL,
            part INTEGER NOT NULL,
            through_claim INTEGER NOT NULL,
            ids BLOB NOT NULL,
            PRIMARY KEY (tenant, run, part)
        )
    """,
}
INDEXES = (  # what runs look up; an index changes nothing an older version reads
    "CREATE INDEX IF NOT EXISTS refused_by_batch ON refused (import_id, seq, part)",
    "CREATE INDEX IF NOT EXISTS batches_by_row ON batches (import_id, first_row)",
)


def connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise journal_error(exc, path) from exc
    db.row_factory = sqlite3.Row
    return db


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create a new journal, or check and migrate an existing one."""
    try:
        db.execute("PRAGMA journal_mode = WAL")
        with immediate(db):
            found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {r[0] for r in found}
            if not tables:
                create(db)
            else:
                check(db, tables, path)
            for index in INDEXES:
                db.execute(index)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise journal_error(exc, path) from exc


def create(db: sqlite3.Connection) -> None:
    """The schema and its meta rows, inside the caller's transaction."""
    for statement in filter(str.strip, SCHEMA.split(";")):
        db.execute(statement)
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("app", APP), ("schema_version", str(BASE_VERSION)), ("created_at", iso(time.time()))],
    )
    migrate(db, BASE_VERSION)


def check(db: sqlite3.Connection, tables: set[str], path: Path) -> None:
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
    if any(target not in MIGRATIONS for target in range(version + 1, SCHEMA_VERSION + 1)):
        raise JournalError(f"{path} has journal schema {version}, which can't be migrated")
    migrate(db, version)


def migrate(db: sqlite3.Connection, version: int) -> None:
    """From schema ``version`` to this one, inside the caller's transaction."""
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in filter(str.strip, MIGRATIONS[target].split(";")):
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.commit()


def journal_error(exc: sqlite3.Error, path: Path) -> JournalError:
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


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
