"""The landed-row index: the identity of every row an import claimed, per Engage tenant.

A row is claimed, before it is sent, by the import that will send it (``claim``: the look-up
and the claim are one transaction, so two imports at once never both claim a row). What
became of it is not written again per row: it is its batch's state (planned, sending, done)
less the rows Engage refused, which the journal keeps anyway. So a holder of a row is, for
another import, one of:

- ``landed``: its batch was answered and did not refuse the row;
- ``refused``: Engage refused it (the row may be sent again, by any import);
- ``in_doubt``: a request holding it was sent, its outcome unknown;
- ``unsent``: claimed by an unfinished import that has not sent it yet.

A finished import's rows are forgotten ``remember_days`` after it finished (``forget``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.journal.schema import iso
from pipeline.journal.store import Store

Holder = tuple[int, str, int, str]  # identity, import id, its source row, state
Held = tuple[int, str]  # source row, reason

# Of each row claimed with one of the identities asked for: who holds it and in what state.
# A row is in the batch of its import whose first and last rows bracket it (part ""); a row
# claimed but in no batch yet is unsent; a batch with a part sent and unanswered is in doubt.
_HOLDERS = """
WITH held AS (
    SELECT l.identity, i.import_id, l.source_row, i.status,
        EXISTS (SELECT 1 FROM refused f WHERE f.import_id = i.import_id
                AND f.source_row = l.source_row AND f.seq > 0) AS refused,
        (SELECT b.seq FROM batches b WHERE b.import_id = i.import_id AND b.part = ''
         AND b.first_row <= l.source_row ORDER BY b.first_row DESC LIMIT 1) AS seq
    FROM json_each(?) AS wanted
    JOIN landed AS l ON l.identity = wanted.value
    JOIN imports AS i ON i.ref = l.import_ref
    WHERE i.tenant = ?
)
SELECT identity, import_id, source_row, CASE
    WHEN refused THEN 'refused'
    WHEN status = 'finished' THEN 'landed'
    WHEN seq IS NULL OR source_row > (SELECT b.last_row FROM batches b
        WHERE b.import_id = held.import_id AND b.seq = held.seq AND b.part = '') THEN 'unsent'
    ELSE (SELECT CASE MAX(CASE b.state WHEN 'sending' THEN 2 WHEN 'planned' THEN 1 ELSE 0 END)
              WHEN 2 THEN 'in_doubt' WHEN 1 THEN 'unsent' ELSE 'landed' END
          FROM batches b WHERE b.import_id = held.import_id AND b.seq = held.seq)
    END AS state
FROM held
"""


@dataclass(frozen=True)
class Found:
    """What the index holds for a piece's rows: their holders, and which of the piece's rows
    the import set aside (held back) when it first sorted them."""

    holders: list[Holder]
    held_before: list[Held]


@dataclass(frozen=True)
class Claimed:
    """What an import takes of a piece: the rows it claims, and those it holds back."""

    rows: list[tuple[int, int]] = field(default_factory=list)  # identity, source row
    held: list[Held] = field(default_factory=list)


class Landed(Store):
    """The ``landed`` table, with the imports and batches that say what became of a row."""

    def claim(
        self,
        import_id: str,
        identities: Sequence[int],
        rows: tuple[int, int],
        decide: Callable[[Found], Claimed],
        write: bool = True,
    ) -> None:
        """Look up ``identities`` (of the import's rows ``rows``: first and last), let
        ``decide`` sort them, and record what it claims and holds back, in one transaction
        (``write``; else only look). Rows up to the import's ``claimed_through`` were sorted
        before: ``decide`` is told how, through the import's own holders and held rows."""
        with self._write() if write else self._reading() as db:
            tenant, ref = db.execute(
                "SELECT tenant, ref FROM imports WHERE import_id = ?", (import_id,)
            ).fetchone()
            holders = [tuple(r) for r in db.execute(_HOLDERS, (json.dumps(identities), tenant))]
            held = db.execute(
                "SELECT source_row, reason FROM refused WHERE import_id = ? AND seq = 0"
                " AND source_row BETWEEN ? AND ? ORDER BY source_row",
                (import_id, *rows),
            ).fetchall()
            claimed = decide(Found(holders, [(r[0], r[1]) for r in held]))
            if not write:
                return
            db.executemany(
                "INSERT OR IGNORE INTO landed (identity, import_ref, source_row) VALUES (?, ?, ?)",
                [(identity, ref, row) for identity, row in claimed.rows],
            )
            db.executemany(
                "INSERT OR REPLACE INTO refused (import_id, source_row, seq, part, stage,"
                " reason) VALUES (?, ?, 0, '', 'validation', ?)",
                [(import_id, row, reason) for row, reason in claimed.held],
            )
            db.execute(
                "UPDATE imports SET claimed_through = MAX(claimed_through, ?) WHERE import_id = ?",
                (rows[1], import_id),
            )

    def held_count(self, import_id: str) -> int:
        """Rows the import held back (another import held them) when it sorted them."""
        found = self._read(
            "SELECT COUNT(*) AS n FROM refused WHERE import_id = ? AND seq = 0", (import_id,)
        )
        return int(found[0]["n"])

    def forget(self, days: float) -> list[str]:
        """Forget the rows of the imports that finished more than ``days`` ago (they are no
        longer known when they come back); the imports forgotten."""
        cutoff = iso(self._clock() - days * 86400)
        with self._write() as db:
            old = db.execute(
                "SELECT import_id, ref FROM imports WHERE status = 'finished' AND forgotten = 0"
                " AND updated_at < ?",
                (cutoff,),
            ).fetchall()
            if not old:
                return []
            refs = json.dumps([r["ref"] for r in old])
            db.execute(
                "DELETE FROM landed WHERE import_ref IN (SELECT value FROM json_each(?))", (refs,)
            )
            db.execute(
                "UPDATE imports SET forgotten = 1 WHERE ref IN (SELECT value FROM json_each(?))",
                (refs,),
            )
        return [r["import_id"] for r in old]
