"""Batches: each batch's key, rows and state, and the rows Engage refused."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.errors import JournalError
from pipeline.journal.store import Store, dump

TERMINAL = ("done", "failed")


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


class Planned(NamedTuple):
    """A batch as planned: its rows are those of the input from ``first_row`` to ``last_row``
    that the plan kept (which say what batch holds a row claimed in the landed-row index)."""

    seq: int
    key: str
    rows: int
    sha256: str
    first_row: int | None = None
    last_row: int | None = None


class Batches(Store):
    """The ``batches`` and ``refused`` tables."""

    def plan_batches(
        self, import_id: str, planned: Sequence[Planned | tuple[int, str, int, str]]
    ) -> None:
        """Add the planned batches of a piece, in one transaction; one planned before must have
        the same key (the same rows)."""
        if not planned:
            return
        batches = [Planned(*p) for p in planned]
        with self._write() as db:
            for b in batches:
                found = db.execute(
                    "SELECT key FROM batches WHERE import_id = ? AND seq = ? AND part = ''",
                    (import_id, b.seq),
                ).fetchone()
                if found is not None and found["key"] != b.key:
                    raise JournalError(
                        f"import {import_id} was planned differently (batch {b.seq} had other "
                        "rows: another batch size, time zone, column mapping or validation "
                        "setting); finish it with the same file and config"
                    )
                if found is None:
                    db.execute(
                        "INSERT INTO batches (import_id, seq, part, key, rows, content_sha256,"
                        " state, updated_at, first_row, last_row)"
                        " VALUES (?, ?, '', ?, ?, ?, 'planned', ?, ?, ?)",
                        (import_id, b.seq, b.key, b.rows, b.sha256, self._clock(), b.first_row,
                         b.last_row),
                    )  # fmt: skip
            db.execute("UPDATE imports SET batches = MAX(batches, ?) WHERE import_id = ?",
                       (max(b.seq for b in batches), import_id))  # fmt: skip

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
                    (import_id, seq, p, k, n, sha, None if rows is None else dump(rows), now)
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
        rows = self._read(
            "SELECT COUNT(*) AS n FROM refused WHERE import_id = ? AND seq > 0", (import_id,)
        )
        return int(rows[0]["n"])

    def counts(self, import_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT state, COUNT(*) AS n FROM batches WHERE import_id = ? GROUP BY state",
            (import_id,),
        )
        return {r["state"]: r["n"] for r in rows}


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
