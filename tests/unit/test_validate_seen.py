"""The duplicate index: pieces marked in turn, the first of equal rows wins, whether the
filter in front of the runs lets a hash through (equal top bits) or not."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.validate import Seen
from pipeline.validate.seen import FILTER_BITS

NEAR = 1 << (64 - FILTER_BITS)  # hashes this far apart share a bit of the filter


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
    st.sampled_from([1, NEAR // 3, 1 << 50, (1 << 58) + 7]),
)
def test_pieces_marked_in_turn_find_the_first_of_equal_rows(
    pieces: list[list[int]], spread: int
) -> None:
    """Values 0..40 times ``spread``: all in one slot of the filter (every hash searched),
    in a few, or each in its own (only hashes seen before searched)."""
    seen, marks, row = Seen(), [], 1
    for values in pieces:
        hashes = pl.Series([v * spread for v in values], dtype=pl.UInt64)
        rows = pl.Series(range(row, row + len(values)), dtype=pl.Int64)
        marks.append(seen.mark(hashes, rows).to_list())
        row += len(values)
    assert marks == first_of_equal(pieces)
    assert sum(run.height for run in seen.runs) == len({v for values in pieces for v in values})
