"""Sorting a piece against the landed-row index: free, landed, held back, and as before."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.journal.landed import HOLDERS
from pipeline.model import IDENTITY, REASON, SOURCE_ROW
from pipeline.validate.landed import Sorting, sort_out

ME = "night-2"


def piece(*rows: tuple[int, int, str | None]) -> pl.DataFrame:
    """Valid rows: (sourceRow, identity, timeStamp)."""
    return pl.DataFrame(
        {
            SOURCE_ROW: [r[0] for r in rows],
            IDENTITY: [r[1] for r in rows],
            "timeStamp": [r[2] for r in rows],
        },
        schema={SOURCE_ROW: pl.Int64, IDENTITY: pl.UInt64, "timeStamp": pl.String},
    )


TIMED = "2026-11-25T10:00:00+00:00"


def sort(rows, holders=(), held=(), **how):
    found = pl.DataFrame(list(holders), schema=HOLDERS, orient="row")
    return sort_out(rows, found, list(held), Sorting(ME, **how))


def test_rows_no_other_import_holds_are_free():
    """Nothing in the index: every row is claimed and sent."""
    result = sort(piece((1, 11, TIMED), (2, 12, None)))
    assert result.free[SOURCE_ROW].to_list() == [1, 2]
    assert result.landed.is_empty() and result.held.is_empty()


def test_a_row_another_import_landed_is_counted_not_sent():
    """Landed elsewhere: left out, counted with the import that landed it."""
    result = sort(piece((1, 11, TIMED), (2, 12, TIMED)), [(11, "night-1", 7, "landed")])
    assert result.free[SOURCE_ROW].to_list() == [2]
    assert result.landed.rows() == [(1, "night-1")]
    assert result.held.is_empty()


@pytest.mark.parametrize(
    ("state", "starts"),
    [("in_doubt", "outcome unknown: import night-1"), ("unsent", "not sent yet")],
)
def test_a_row_another_import_may_still_send_is_held_back_naming_it(state: str, starts: str):
    """Sent without an answer, or claimed and not sent: held back, to re-run that import."""
    result = sort(piece((1, 11, TIMED)), [(11, "night-1", 7, state)])
    assert result.free.is_empty() and result.landed.is_empty()
    why = result.held[REASON].item()
    assert why.startswith(starts) and "re-run import night-1" in why and "row 7" in why


def test_a_row_engage_refused_elsewhere_is_free():
    """Refused by Engage in another import: it did not land, it may be sent."""
    result = sort(piece((1, 11, TIMED)), [(11, "night-1", 7, "refused")])
    assert result.free[SOURCE_ROW].to_list() == [1]


def test_landed_tells_more_than_in_doubt():
    """Held by several: the landed one decides (the row is in Engage)."""
    holders = [(11, "a", 1, "unsent"), (11, "b", 2, "landed"), (11, "c", 3, "in_doubt")]
    assert sort(piece((1, 11, TIMED)), holders).landed.rows() == [(1, "b")]


def test_an_untimed_twin_is_held_back_unless_twins_are_allowed():
    """No timeStamp, no id column: a twin may be another transaction; never dropped silently."""
    holders = [(11, "night-1", 7, "landed")]
    held = sort(piece((1, 11, None)), holders).held
    assert "a twin landed: import night-1" in held[REASON].item()
    assert "--allow-twins" in held[REASON].item()
    allowed = sort(piece((1, 11, None)), holders, allow_twins=True)
    assert allowed.free[SOURCE_ROW].to_list() == [1]


def test_with_an_id_column_no_row_is_a_twin():
    """An id is a time of its own: a landed id is the same transaction."""
    result = sort(piece((1, 11, None)), [(11, "night-1", 7, "landed")], id_column="txn")
    assert result.landed.rows() == [(1, "night-1")]


def test_force_sends_every_row_whoever_holds_it():
    """--force: the user said to send again."""
    result = sort(piece((1, 11, TIMED)), [(11, "night-1", 7, "landed")], force=True)
    assert result.free[SOURCE_ROW].to_list() == [1]


def test_rows_sorted_before_are_sorted_as_then():
    """Up to claimed_through: free if this import claimed it, held back if it held it (its
    reason as then), else landed; whatever the index says now: the same batches every run."""
    rows = piece((1, 11, TIMED), (2, 12, TIMED), (3, 13, TIMED), (4, 14, TIMED))
    holders = [
        (11, ME, 1, "in_doubt"),  # its own claim: free, though in doubt
        (12, "night-1", 9, "refused"),  # held back then: held back again
        (13, "night-1", 8, "refused"),  # landed then, refused since: still left out
        (14, "night-1", 4, "landed"),  # after claimed_through: sorted now
    ]
    result = sort(rows, holders, [(2, "as said then")], claimed_through=3)
    assert result.free[SOURCE_ROW].to_list() == [1]
    assert result.held.select(SOURCE_ROW, REASON).rows() == [(2, "as said then")]
    assert result.landed.rows() == [(3, "an earlier import"), (4, "night-1")]


def test_the_sorted_rows_keep_the_pieces_columns_and_order():
    """Free rows come out as they came in (the batches are cut from them)."""
    rows = piece((3, 13, TIMED), (1, 11, TIMED), (2, 12, TIMED))
    result = sort(rows, [(11, "night-1", 1, "landed")])
    assert result.free.columns == rows.columns
    assert result.free[SOURCE_ROW].to_list() == [3, 2]


@pytest.mark.parametrize("state", ["in_doubt", "unsent"])
def test_allow_twins_sends_no_row_another_import_may_still_send(state: str):
    """--allow-twins is for twins that landed; a row another import holds in doubt or unsent
    is held back all the same (sent from here too, it could land twice)."""
    result = sort(piece((1, 11, None)), [(11, "night-1", 7, state)], allow_twins=True)
    assert result.free.is_empty() and result.held[SOURCE_ROW].to_list() == [1]
