"""Imports: each import's identity, input, settings and outcome, and which process runs it."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from pipeline.errors import JournalError
from pipeline.journal.schema import iso
from pipeline.journal.store import Store, dump

STALE_AFTER_S = 600.0  # a holder silent this long is taken as dead (its pid may be reused)
BEAT_EVERY_S = 30.0  # a holder's heartbeat, while it holds, whatever it is waiting for
FINISHED = "finished"  # an import's status once it ran to the end
log = structlog.get_logger("pipeline.journal")


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
    tenant: str | None = None  # the Engage base URL it was sent to (None: an older version's)
    claimed_through: int = 0  # its rows up to this one were sorted against the landed rows
    forgotten: bool = False  # its rows left the landed-row index ([journal] remember_days)


class Imports(Store):
    """The ``imports`` table: one row an import, and its holder."""

    def find(self, import_id: str) -> ImportRecord | None:
        rows = self._read("SELECT * FROM imports WHERE import_id = ?", (import_id,))
        return _import(rows[0], self._clock()) if rows else None

    def imports(self) -> list[ImportRecord]:
        rows = self._read("SELECT * FROM imports ORDER BY created_at, import_id")
        now = self._clock()
        return [_import(r, now) for r in rows]

    def register(
        self,
        import_id: str,
        input_path: str,
        input_sha256: str,
        settings: dict[str, Any],
        tenant: str,
        definitions: Sequence[int] | None = None,
        input_bytes: int | None = None,
    ) -> None:
        """Record a new import of ``tenant`` (Engage's base URL); its batches are added as they
        are planned (``plan_batches``), its rows claimed as they are sorted (``claim``)."""
        stamp = iso(self._clock())
        with self._write() as db:
            db.execute(
                "INSERT INTO imports (import_id, input_path, input_sha256, settings, definitions,"
                " batches, rows, status, created_at, updated_at, input_bytes, tenant, ref)"
                " VALUES (?, ?, ?, ?, ?, 0, 0, 'planned', ?, ?, ?, ?,"
                " (SELECT COALESCE(MAX(ref), 0) + 1 FROM imports))",
                (import_id, input_path, input_sha256, dump(settings),
                 None if definitions is None else dump(sorted(definitions)), stamp, stamp,
                 input_bytes, tenant),
            )  # fmt: skip

    def set_definitions(self, import_id: str, definitions: Sequence[int]) -> None:
        """The point definitions validation used: a resumed run must judge rows the same."""
        with self._write() as db:
            db.execute("UPDATE imports SET definitions = ? WHERE import_id = ?",
                       (dump(sorted(definitions)), import_id))  # fmt: skip

    def set_tenant(self, import_id: str, tenant: str) -> None:
        """The tenant of an import an older version started (it has none): its rows count."""
        with self._write() as db:
            db.execute("UPDATE imports SET tenant = COALESCE(tenant, ?) WHERE import_id = ?",
                       (tenant, import_id))  # fmt: skip

    def set_status(self, import_id: str, status: str, error: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE imports SET status = ?, last_error = ?, updated_at = ? WHERE import_id = ?",
                (status, error, iso(self._clock()), import_id),
            )

    def finish(self, import_id: str, summary: dict[str, Any], exit_code: int, status: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE imports SET status = ?, exit_code = ?, summary = ?, last_error = ?,"
                " rows = ?, batches = ?, updated_at = ? WHERE import_id = ?",
                (
                    status,
                    exit_code,
                    dump(summary),
                    summary.get("error"),
                    summary.get("rows_read", 0),
                    summary.get("batches_total", 0),
                    iso(self._clock()),
                    import_id,
                ),
            )

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
                (me, host, iso(now), now, import_id),
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
        (now, iso(now), import_id),
    )


def _import(r: sqlite3.Row, now: float) -> ImportRecord:
    """The record; an import left "running" by a process that is gone (killed, its node
    lost) is "stopped": run again, it resumes."""
    held = bool(r["holder_pid"]) and not _dead(r, now)
    holder = f"pid {r['holder_pid']} on {r['holder_host']} since {r['holder_since']}"
    status = "stopped" if r["status"] == "running" and not held else r["status"]
    return ImportRecord(
        import_id=r["import_id"],
        input_path=r["input_path"],
        input_sha256=r["input_sha256"],
        settings=json.loads(r["settings"]),
        definitions=json.loads(r["definitions"]) if r["definitions"] else None,
        batches=r["batches"],
        rows=r["rows"],
        status=status,
        exit_code=r["exit_code"],
        summary=json.loads(r["summary"]) if r["summary"] else None,
        last_error=r["last_error"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        holder=holder if held else None,
        input_bytes=r["input_bytes"],
        tenant=r["tenant"],
        claimed_through=r["claimed_through"],
        forgotten=bool(r["forgotten"]),
    )
