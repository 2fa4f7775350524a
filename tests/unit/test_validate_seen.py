"""The duplicate index: pieces probed ahead of their turn (as the screeners do, in parallel)
are marked as if each had been probed just before: the first of equal rows wins."""

from __future__ import annotations

from collections import deque

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.validate import Seen


def first_of_equal(pieces: list[list[int]]) -> list[list[int | None]]:
    """The model: for each value, the row number of its first occurrence, if earlier."""
    first: dict[int, int] = {}
    row, marks = 0, []
    for values in pieces:
        marked: list[int | None] = []
        for value in values:
            row += 1
            marked.append(first.get(value))
            first.setdefault(value, row)
        marks.append(marked)
    return marks


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=1, max_size=14),
    st.integers(0, 4),
)
def test_pieces_probed_ahead_are_marked_like_pieces_probed_in_turn(
    pieces: list[list[int]], ahead: int
) -> None:
    seen, probes, marks, row = Seen(), deque(), [], 1
    numbered = []
    for values in pieces:
        numbered.append((values, list(range(row, row + len(values)))))
        row += len(values)
    upcoming = iter(numbered)
    for _ in numbered:
        while len(probes) <= ahead and (piece := next(upcoming, None)) is not None:
            values, rows = piece
            hashes = pl.Series(values, dtype=pl.UInt64)  # any 64-bit values will do
            probes.append(seen.probe(hashes, pl.Series(rows, dtype=pl.Int64)))
        marks.append(seen.mark(probes.popleft()).to_list())
    assert marks == first_of_equal(pieces)
    assert sum(run.height for run in seen.runs) == len({v for values in pieces for v in values})
