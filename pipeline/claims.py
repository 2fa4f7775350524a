"""Claims: each piece of an import's valid rows sorted against the journal's landed-row index
and claimed there, in one transaction, before any of them is batched and sent.

The plan asks (``Claims.sort``) for every piece in input order; the journal does the look-up
and the claim, ``validate.landed`` the sorting. Read-only (``write=False``) for the runs that
only report an import (``status``, ``reconcile``, a finished import run again).
"""

from __future__ import annotations

import polars as pl

from pipeline.journal import Journal
from pipeline.journal.landed import HOLDERS, Claimed, Found
from pipeline.model import IDENTITY, REASON, SOURCE_ROW
from pipeline.validate.landed import Sorted, Sorting, sort_out


class Claims:
    def __init__(self, journal: Journal, how: Sorting, write: bool = True) -> None:
        self.journal, self.how, self.write = journal, how, write

    def sort(self, valid: pl.DataFrame) -> Sorted:
        """``valid`` (a piece, in input order) sorted into free rows (now claimed by this
        import), rows that landed before and rows held back."""
        if valid.is_empty():
            return sort_out(valid, pl.DataFrame(schema=HOLDERS), [], self.how)
        sorted_: list[Sorted] = []
        rows = valid.select(pl.col(SOURCE_ROW).min().alias("first"), pl.col(SOURCE_ROW).max()).row(
            0
        )

        def decide(found: Found) -> Claimed:
            sorted_.append(sort_out(valid, found.holders, found.held_before, self.how))
            return self._claimed(sorted_[0])

        identities = valid[IDENTITY].reinterpret(signed=True)
        self.journal.claim(self.how.import_id, identities, rows, decide, self.write)
        return sorted_[0]

    def _claimed(self, sorted_: Sorted) -> Claimed:
        """What is new to record: the rows not sorted before."""
        after = pl.col(SOURCE_ROW) > self.how.claimed_through
        held = sorted_.held.filter(after)
        return Claimed(
            rows=sorted_.free.filter(after).select(
                pl.col(IDENTITY).reinterpret(signed=True).alias("identity"),
                pl.col(SOURCE_ROW).alias("source_row"),
            ),
            held=list(zip(held[SOURCE_ROW].to_list(), held[REASON].to_list(), strict=True)),
        )
