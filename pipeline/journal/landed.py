"""The landed-row index: the identity of every row an import claimed, per Engage tenant.

A row is claimed, before it is sent, by the import that will send it (``claim``: the look-up
and the claim are one transaction, so two imports at once never both claim a row). A piece's
claims are one record (its rows' identities and source rows, as an Arrow blob): recording a
million rows costs a few writes, not a million. A run reads the tenant's claims once into
memory (12 bytes a row), then only those added since, and looks a piece up through a bit
filter and binary search (``Index``).

What became of a claimed row is not written again per row: it is its batch's state (planned,
sending, done) less the rows Engage refused, which the journal keeps anyway. So a holder of
a row is, for another import, one of:

- ``landed``: its batch was answered and did not refuse the row;
- ``refused``: Engage refused it (the row may be sent again, by any import);
- ``in_doubt``: a request holding it was sent, its outcome unknown;
- ``unsent``: claimed by an unfinished import that has not sent it yet.

A finished import's claims are forgotten ``remember_days`` after it finished (``forget``).
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import polars as pl

from pipeline.journal.schema import iso
from pipeline.journal.store import Store

ID, ROW, CLAIM = "identity", "source_row", "claim"
INDEX = {ID: pl.Int64, CLAIM: pl.Int32}
COMPACT_AT = 2_000_000  # claimed rows not in a stored run: stored as a run of their own
CHUNK = 1 << 20  # rows a record of a stored run holds
MAX_RUNS = 8  # stored runs before they are merged into one
FILTER_BITS = 28  # a bit per 2^36 identities (32 MiB): at 10M rows, 1 new row in 27 is searched
HOLDERS = {ID: pl.Int64, "import_id": pl.String, ROW: pl.Int64, "state": pl.String}
CLAIMED = {ID: pl.Int64, ROW: pl.Int64}


@dataclass(frozen=True)
class Found:
    """What the index holds for a piece's rows: their holders (HOLDERS), and which of the
    piece's rows the import held back when it first sorted them (source row, reason)."""

    holders: pl.DataFrame
    held_before: list[tuple[int, str]]


@dataclass(frozen=True)
class Claimed:
    """What an import takes of a piece: the rows it claims (CLAIMED), those it holds back."""

    rows: pl.DataFrame
    held: list[tuple[int, str]]


class Landed(Store):
    """The ``claims`` table, with the imports and batches that say what became of a row."""

    _held_index: Index | None = None

    def claim(
        self,
        import_id: str,
        identities: pl.Series,
        rows: tuple[int, int],
        decide: Callable[[Found], Claimed],
        write: bool = True,
    ) -> None:
        """Look up ``identities`` (Int64, of the import's rows ``rows``: first and last), let
        ``decide`` sort them, and record what it claims and holds back, in one transaction
        (``write``; else only look)."""
        with self._index_kept_if_committed(), self._write() if write else self._reading() as db:
            ref, tenant = db.execute(
                "SELECT ref, tenant FROM imports WHERE import_id = ?", (import_id,)
            ).fetchone()
            index = self._index(db, tenant, ref, rows[0])
            holders = self._holders(db, index, identities)
            held = db.execute(
                "SELECT source_row, reason FROM refused WHERE import_id = ? AND seq = 0"
                " AND source_row BETWEEN ? AND ? ORDER BY source_row",
                (import_id, *rows),
            ).fetchall()
            claimed = decide(Found(holders, [(r[0], r[1]) for r in held]))
            if write:
                self._record(db, import_id, ref, rows, claimed)
                if index.unmerged >= COMPACT_AT:
                    index.compact(db)

    @contextmanager
    def _index_kept_if_committed(self) -> Iterator[None]:
        """Rolled back, what the index in memory took in may not be so: it is read again."""
        try:
            yield
        except BaseException:
            self._held_index = None
            raise

    def _record(
        self, db: sqlite3.Connection, import_id: str, ref: int, rows: tuple[int, int],
        claimed: Claimed,
    ) -> None:  # fmt: skip
        if claimed.rows.height:
            blob = _blob(claimed.rows.select(ID, ROW))
            added = db.execute(
                "INSERT INTO claims (import_ref, first_row, last_row, rows) VALUES (?, ?, ?, ?)",
                (ref, *rows, blob),
            )
            assert self._held_index is not None and added.lastrowid is not None
            self._held_index.own(added.lastrowid, blob, claimed.rows.height, rows[1])
        db.executemany(
            "INSERT OR REPLACE INTO refused (import_id, source_row, seq, part, stage, reason)"
            " VALUES (?, ?, 0, '', 'validation', ?)",
            [(import_id, row, reason) for row, reason in claimed.held],
        )
        db.execute(
            "UPDATE imports SET claimed_through = MAX(claimed_through, ?) WHERE import_id = ?",
            (rows[1], import_id),
        )

    def _holders(self, db: sqlite3.Connection, index: Index, identities: pl.Series) -> pl.DataFrame:
        """Of each claimed row with one of ``identities``: its import, row and state."""
        hits = index.claims_of(identities)
        if not hits:
            return pl.DataFrame(schema=HOLDERS)
        found = db.execute(
            "SELECT c.rows, i.import_id, i.status FROM claims c JOIN imports i"
            " ON i.ref = c.import_ref WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps(hits),),
        ).fetchall()
        wanted = pl.col(ID).is_in(identities.implode())
        parts = [_state(db, i, status, _rows(blob).filter(wanted)) for blob, i, status in found]
        return pl.concat(parts) if parts else pl.DataFrame(schema=HOLDERS)

    def _index(self, db: sqlite3.Connection, tenant: str | None, ref: int, first: int) -> Index:
        """The tenant's claims in memory, for import ``ref``'s rows from ``first`` on: read
        whole once a run, then what was added since (by this run or another process)."""
        if self._held_index is None or self._held_index.tenant != tenant:
            self._held_index = Index.read(db, tenant)
        self._held_index.refresh(db, ref, first)
        return self._held_index

    def held_count(self, import_id: str) -> int:
        """Rows the import held back (another import held them) when it sorted them."""
        found = self._read(
            "SELECT COUNT(*) AS n FROM refused WHERE import_id = ? AND seq = 0", (import_id,)
        )
        return int(found[0]["n"])

    def forget(self, days: float) -> list[str]:
        """Forget the claims of the imports that finished more than ``days`` ago (their rows
        are no longer known when they come back); the imports forgotten."""
        cutoff = iso(self._clock() - days * 86400)
        with self._write() as db:
            old = db.execute(
                "SELECT import_id, ref FROM imports WHERE status = 'finished' AND forgotten = 0"
                " AND updated_at < ?",
                (cutoff,),
            ).fetchall()
            refs = json.dumps([r["ref"] for r in old])
            db.execute(
                "DELETE FROM claims WHERE import_ref IN (SELECT value FROM json_each(?))", (refs,)
            )
            db.execute(
                "UPDATE imports SET forgotten = 1 WHERE ref IN (SELECT value FROM json_each(?))",
                (refs,),
            )
        return [r["import_id"] for r in old]


class Index:
    """A tenant's claimed identities, each with its claim: sorted runs stored in the journal
    (a few large records each: quick to read), and the claims recorded since (read from their
    own records). When those grow large, a claiming run stores them as a run of their own;
    past MAX_RUNS runs, all are merged into one (forgotten claims dropped). A piece is looked
    up by binary search in each run, and only for the identities a bit filter in front of
    them may hold."""

    def __init__(self, tenant: str | None, runs: dict[int, pl.DataFrame], through: int) -> None:
        self.tenant, self.runs, self.through = tenant, runs, through
        self.recent = pl.DataFrame(schema=INDEX)
        self.read_through = through
        self.mine: dict[int, bytes] = {}  # claims ``ref`` recorded here: not looked up, kept
        self.mine_rows = 0
        self.ref, self.through_row = 0, 0  # the import looking up, the last row it claimed
        self.fresh = True  # nothing read since the runs: every claim after them is wanted
        self.bits: pl.Series | None = None  # a bit per slot of identities held; made when needed

    def own(self, claim: int, blob: bytes, rows: int, through_row: int) -> None:
        """A claim the import looking up recorded: its own later pieces need not find it (the
        plan's duplicate check sees to them), so it is only kept for the next run stored,
        or for another import's look-up."""
        self.mine[claim] = blob
        self.mine_rows += rows
        self.through_row = through_row

    @property
    def unmerged(self) -> int:
        """Rows not in a stored run."""
        return self.recent.height + self.mine_rows

    @classmethod
    def read(cls, db: sqlite3.Connection, tenant: str | None) -> Index:
        found = db.execute(
            "SELECT run, through_claim, ids FROM landed_index WHERE tenant = ? ORDER BY run, part",
            (tenant,),
        ).fetchall()
        parts: dict[int, list[pl.DataFrame]] = {}
        for run, _, blob in found:
            parts.setdefault(run, []).append(_rows(blob))
        runs = {
            n: _concat(p).rechunk().with_columns(pl.col(ID).set_sorted()) for n, p in parts.items()
        }
        return cls(tenant, runs, max((r[1] for r in found), default=0))

    def refresh(self, db: sqlite3.Connection, ref: int, first: int) -> None:
        """Add the claims recorded since it was last read, for import ``ref`` to look up its
        rows from ``first`` on."""
        if ref != self.ref or first <= self.through_row:  # another import, or a run again
            self._add(_claims(list(self.mine.items())))
            self.mine.clear()
            self.mine_rows, self.ref, self.through_row = 0, ref, 0
        mine = -1 if self.fresh else ref  # its own claims since: in ``mine`` (one holder a time)
        new = db.execute(
            "SELECT c.id, c.rows FROM claims c JOIN imports i ON i.ref = c.import_ref"
            " WHERE c.id > ? AND i.tenant = ? AND c.import_ref != ? ORDER BY c.id",
            (self.read_through, self.tenant, mine),
        ).fetchall()
        self.fresh = False
        self._add(_claims([(n, blob) for n, blob in new if n not in self.mine]))
        # past the claims read and its own (any other process's later claim comes after both)
        self.read_through = max([self.read_through, *(n for n, _ in new), *self.mine])

    def _add(self, parts: list[pl.DataFrame]) -> None:
        if parts:
            self.recent = _concat([self.recent, *parts]).sort(ID)
            if self.bits is not None:
                for part in parts:
                    self.bits.scatter(_slots(part[ID]), True)

    def claims_of(self, identities: pl.Series) -> list[int]:
        """The claims holding any of ``identities``."""
        parts = [part for part in (*self.runs.values(), self.recent) if part.height]
        if not parts:
            return []
        if self.bits is None:
            self.bits = pl.repeat(False, 1 << FILTER_BITS, eager=True)
            for part in parts:
                self.bits.scatter(_slots(part[ID]), True)
        probes = identities.unique().sort()
        probes = probes.filter(self.bits.gather(_slots(probes)))
        return sorted({c for part in parts for c in _matches(part, probes)})

    def compact(self, db: sqlite3.Connection) -> None:
        """Store the claims since the stored runs as a run of their own; past MAX_RUNS, merge
        every run into one, without forgotten claims. In the caller's write transaction."""
        new = _concat([self.recent, *_claims(list(self.mine.items()))]).sort(ID)
        self.recent, self.through = pl.DataFrame(schema=INDEX), self.read_through
        self.mine.clear()
        self.mine_rows = 0
        stored = db.execute(  # another process may have stored runs since this one read them
            "SELECT COALESCE(MAX(run), -1) + 1, COUNT(DISTINCT run) FROM landed_index"
            " WHERE tenant = ?",
            (self.tenant,),
        ).fetchone()
        number = stored[0]
        if max(len(self.runs), stored[1]) >= MAX_RUNS:
            live = db.execute(
                "SELECT c.id FROM claims c JOIN imports i ON i.ref = c.import_ref"
                " WHERE i.tenant = ?",
                (self.tenant,),
            ).fetchall()
            kept = pl.col(CLAIM).is_in(pl.Series([r[0] for r in live], dtype=pl.Int32).implode())
            new = pl.concat([*self.runs.values(), new]).filter(kept).sort(ID)
            db.execute("DELETE FROM landed_index WHERE tenant = ?", (self.tenant,))
            self.runs.clear()
        self.runs[number] = new
        db.executemany(
            "INSERT INTO landed_index (tenant, run, part, through_claim, ids)"
            " VALUES (?, ?, ?, ?, ?)",
            [(self.tenant, number, n, self.through, _blob(new.slice(start, CHUNK)))
             for n, start in enumerate(range(0, new.height, CHUNK))],
        )  # fmt: skip


def _matches(part: pl.DataFrame, probes: pl.Series) -> list[int]:
    """The claims of ``part`` (sorted by identity) holding any of ``probes`` (sorted)."""
    if part.is_empty() or probes.is_empty():
        return []
    ids = part[ID]
    left = ids.search_sorted(probes, side="left")
    found = ids.gather(left.clip(0, ids.len() - 1)) == probes
    matched = probes.filter(found)
    if matched.is_empty():
        return []
    ends = ids.search_sorted(matched, side="right")
    positions = pl.int_ranges(left.filter(found), ends, eager=True).explode()
    return part[CLAIM].gather(positions).unique().to_list()


def _state(db: sqlite3.Connection, import_id: str, status: str, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (identity, source row) an import claimed, with what became of each."""
    rows = rows.sort(ROW)
    refused = db.execute(
        "SELECT source_row FROM refused WHERE import_id = ? AND seq > 0"
        " AND source_row IN (SELECT value FROM json_each(?))",
        (import_id, json.dumps(rows[ROW].to_list())),
    ).fetchall()
    state = (
        pl.repeat("landed", rows.height, dtype=pl.String, eager=True)
        if status == "finished"
        else _pending(db, import_id, rows)
    )
    return rows.select(ID, pl.lit(import_id).alias("import_id"), ROW).with_columns(
        pl.when(pl.col(ROW).is_in([r[0] for r in refused]))
        .then(pl.lit("refused"))
        .otherwise(state)
        .alias("state")
    )


def _pending(db: sqlite3.Connection, import_id: str, rows: pl.DataFrame) -> pl.Series:
    """Of an unfinished import's rows (sorted): unsent (in no batch yet, or its batch
    planned), in doubt (a part of its batch sent, unanswered), else landed."""
    batches = pl.DataFrame(
        db.execute(
            "SELECT MAX(first_row), MAX(last_row), MAX(CASE state WHEN 'sending' THEN 2"
            " WHEN 'planned' THEN 1 ELSE 0 END) FROM batches WHERE import_id = ? GROUP BY seq"
            " HAVING MAX(first_row) IS NOT NULL ORDER BY 1",
            (import_id,),
        ).fetchall(),
        schema={"first_row": pl.Int64, "last_row": pl.Int64, "pending": pl.Int64},
        orient="row",
    )
    by_row = rows.join_asof(batches, left_on=ROW, right_on="first_row")
    beyond = pl.col("last_row").is_null() | (pl.col(ROW) > pl.col("last_row"))
    pending = by_row.select(pl.when(beyond).then(1).otherwise(pl.col("pending"))).to_series()
    return pending.replace_strict({0: "landed", 1: "unsent", 2: "in_doubt"}, return_dtype=pl.String)


def _slots(identities: pl.Series) -> pl.Series:
    """Each identity's slot in the bit filter: its first FILTER_BITS bits (xxHash: uniform)."""
    unsigned = identities.reinterpret(signed=False)
    return pl.select((unsigned // (1 << (64 - FILTER_BITS))).cast(pl.UInt32)).to_series()


def _claims(records: list[tuple[int, bytes]]) -> list[pl.DataFrame]:
    """Claim records (id, blob) as index parts."""
    return [_rows(blob).select(ID, pl.lit(n, pl.Int32).alias(CLAIM)) for n, blob in records]


def _blob(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.write_ipc(out)
    return out.getvalue()


def _rows(blob: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(blob))


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(parts) if parts else pl.DataFrame(schema=INDEX)
