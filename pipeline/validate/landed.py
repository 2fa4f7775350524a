"""Landed: a piece's valid rows sorted against the rows other imports claimed (the journal's
landed-row index), so that a row lands once whatever file brings it back.

A row whose identity another import landed is not sent again: it is counted, not rejected.
One another import sent without an answer yet (in doubt), or claimed and has not sent (it is
unfinished), is held back: rejected with a reason that names that import, to re-run it. A
row without a time in its identity (no timeStamp, no id column) whose twin landed may be
another transaction (a monthly bonus) or the same one: it is held back too, to be sent
with ``allow_twins``. The rest are free: this import claims and sends them.

Rows the import sorted before (a resumed or finished import: up to ``claimed_through``) are
sorted as they were then: free if it claimed them, held back if it held them, else landed,
so that its batches, and their keys, are the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.model import IDENTITY, REASON, SOURCE_ROW
from pipeline.validate.identity import untimed

IN_DOUBT = (
    "outcome unknown: import {} sent it (its row {}) and has no answer yet, so it may be in"
    " Engage; re-run import {}'s input to settle it (this rejects report imported after"
    " that sends it only if it did not land)"
)
UNSENT = (
    "not sent yet: import {} (unfinished) holds it (its row {}) and will send it; re-run import"
    " {}'s input to send it (sent from here too, it would land twice)"
)
TWIN = (
    "a twin landed: import {} sent the same transaction (its row {}), and neither has a"
    " timeStamp to tell them apart; if this is another transaction (a monthly bonus, say)"
    " import it again with --allow-twins (this rejects report, say), else delete it"
)
LANDED_BEFORE = "an earlier import"  # a landed row whose holder was forgotten since
RANK = {"landed": 0, "in_doubt": 1, "unsent": 2}  # which holder a row is told about
HOLDERS = {"identity": "_id", "import_id": "_by", "source_row": "_at", "state": "_state"}


@dataclass(frozen=True)
class Sorted:
    free: pl.DataFrame  # the valid rows to claim and send
    landed: pl.DataFrame  # sourceRow, _by: where each landed
    held: pl.DataFrame  # the valid rows held back, with their reason (REASON)


@dataclass(frozen=True)
class Sorting:
    """How a piece is sorted for one import."""

    import_id: str
    claimed_through: int = 0  # its rows up to this one were sorted before, by its own run
    id_column: str = ""
    allow_twins: bool = False
    force: bool = False  # --force: every row is sent again, whoever holds it


def sort_out(
    valid: pl.DataFrame,
    holders: pl.DataFrame,
    held_before: list[tuple[int, str]],
    how: Sorting,
) -> Sorted:
    """``valid`` (with ``_identity``) sorted by its rows' holders (identity as Int64, import_id,
    source_row, state) and the rows this import held back before (source row, reason)."""
    if holders.is_empty() and not held_before and not how.claimed_through:  # all new: free
        held = valid.clear().with_columns(pl.lit(None, pl.String).alias(REASON))
        return Sorted(valid, pl.DataFrame(schema={SOURCE_ROW: pl.Int64, "_by": pl.String}), held)
    found = holders.select(pl.col(name).alias(alias) for name, alias in HOLDERS.items())
    rows = valid.with_columns(
        pl.col(IDENTITY).reinterpret(signed=True).alias("_id"),
        untimed(how.id_column).alias("_untimed"),
        (pl.col(SOURCE_ROW) <= how.claimed_through).alias("_before"),
    )
    rows = _with_holder(rows, found, how.import_id).join(
        pl.DataFrame(held_before, schema={SOURCE_ROW: pl.Int64, "_held": pl.String}, orient="row"),
        on=SOURCE_ROW,
        how="left",
    )
    verdict = _verdict(how)
    rows = rows.with_columns(verdict.alias("_verdict"))
    keep = valid.columns
    free = rows.filter(pl.col("_verdict") == "free").select(keep)
    landed = rows.filter(pl.col("_verdict") == "landed").select(
        SOURCE_ROW, pl.col("_by").fill_null(LANDED_BEFORE)
    )
    held = rows.filter(pl.col("_verdict") == "held").select(*keep, _reason().alias(REASON))
    return Sorted(free, landed, held)


def _with_holder(rows: pl.DataFrame, found: pl.DataFrame, me: str) -> pl.DataFrame:
    """Each row with whether this import claimed it (``_mine``), and the holder among the
    others that tells most (landed, else in doubt, else unsent; refused ones hold nothing)."""
    mine = (
        found.filter(pl.col("_by") == me)
        .select("_id", pl.col("_at").alias(SOURCE_ROW))
        .unique()
        .with_columns(pl.lit(True).alias("_mine"))
    )
    others = (
        found.filter((pl.col("_by") != me) & (pl.col("_state") != "refused"))
        .with_columns(pl.col("_state").replace_strict(RANK, return_dtype=pl.Int8).alias("_rank"))
        .sort("_rank", "_by", "_at")
        .unique("_id", keep="first", maintain_order=True)
        .select("_id", "_by", "_at", "_state")
    )
    rows = rows.join(mine, on=["_id", SOURCE_ROW], how="left")
    return rows.join(others, on="_id", how="left").with_columns(pl.col("_mine").fill_null(False))


def _verdict(how: Sorting) -> pl.Expr:
    """free, landed or held, for each row."""
    state = pl.col("_state")
    landed = state == "landed"
    new = (
        pl.when(pl.lit(how.force) | state.is_null())
        .then(pl.lit("free"))
        .when(landed & ~pl.col("_untimed"))
        .then(pl.lit("landed"))
        .when(landed & pl.lit(how.allow_twins))  # a twin: another transaction, as allowed
        .then(pl.lit("free"))
        .otherwise(pl.lit("held"))  # another import may still send it, twin or not
    )
    before = (
        pl.when(pl.col("_mine"))
        .then(pl.lit("free"))
        .when(pl.col("_held").is_not_null())
        .then(pl.lit("held"))
        .otherwise(pl.lit("landed"))
    )
    return pl.when(pl.col("_before")).then(before).otherwise(new)


def _reason() -> pl.Expr:
    """Why a row is held back: as said when it was first sorted, else by its holder."""
    by, at = pl.col("_by"), pl.col("_at")
    return (
        pl.when(pl.col("_held").is_not_null())
        .then(pl.col("_held"))
        .when(pl.col("_state") == "in_doubt")
        .then(pl.format(IN_DOUBT, by, at, by))
        .when(pl.col("_state") == "unsent")
        .then(pl.format(UNSENT, by, at, by))
        .otherwise(pl.format(TWIN, by, at))
    )
