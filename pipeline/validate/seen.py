"""Duplicates: a valid row equal to an earlier one (after normalising) is rejected, across
every piece of the input, by a 64-bit hash of what is sent for it."""

from __future__ import annotations

import polars as pl


class Seen:
    """Every valid row so far, as a 64-bit hash and its row number (not the rows): duplicates
    are found across the pieces of a file of any length. Sorted runs, merged as they grow
    (a run is merged into the one before it once that is at most 4 times its size)."""

    def __init__(self) -> None:
        self.runs: list[pl.DataFrame] = []  # each: _h (UInt64, sorted), first (UInt32): 12 B/row

    def first_rows(self, hashes: pl.Series) -> pl.Series:
        """For each hash, the row it was first seen in, else null (fastest with the hashes
        sorted: the searches then walk each run in order)."""
        found = pl.repeat(None, len(hashes), dtype=pl.Int64, eager=True)
        for run in self.runs:
            at = run["_h"].search_sorted(hashes).clip(0, run.height - 1)
            hits = (run["_h"].gather(at) == hashes).arg_true()  # few: only they are gathered
            if len(hits):
                found = found.scatter(hits, run["first"].gather(at.gather(hits)))
        return found

    def add(self, hashes: pl.Series, rows: pl.Series, ordered: bool = False) -> None:
        """Add rows not seen before (``ordered``: already sorted by hash)."""
        if hashes.is_empty():
            return
        run = pl.DataFrame({"_h": hashes, "first": rows.cast(pl.UInt32)})
        run = run if ordered else run.sort("_h")
        while self.runs and self.runs[-1].height <= 4 * run.height:
            run = self.runs.pop().merge_sorted(run, key="_h")  # no hash is in two runs
        self.runs.append(run)

    def mark(self, hashes: pl.Series, rows: pl.Series) -> pl.Series:
        """For each row (``hashes`` of what is sent, ``rows`` its row numbers, increasing),
        the earlier row it repeats, else null; the rows not seen before are added."""
        by_hash = pl.DataFrame(
            {"h": hashes, "row": rows, "at": pl.int_range(len(rows), eager=True)}
        ).sort("h", maintain_order=True)  # equal rows side by side, the first first
        new = (pl.col("h") != pl.col("h").shift(1)).fill_null(True)
        marked = by_hash.with_columns(
            self.first_rows(by_hash["h"]).alias("earlier"),
            pl.when(new).then(pl.col("row")).forward_fill().alias("in_piece"),
            new.alias("new"),
        )
        fresh = marked.filter(pl.col("earlier").is_null() & pl.col("new"))
        self.add(fresh["h"], fresh["row"], ordered=True)
        first = pl.coalesce("earlier", "in_piece")
        repeats = marked.filter(first != pl.col("row")).select("at", first.alias("first"))
        found = pl.repeat(None, len(rows), dtype=pl.Int64, eager=True)
        return found.scatter(repeats["at"], repeats["first"]) if repeats.height else found
