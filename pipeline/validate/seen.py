"""Duplicates: a valid row equal to an earlier one (after normalising) is rejected, across
every piece of the input, by a 64-bit hash of what is sent for it.

A bit per 2^36 hash values (a 32 MiB filter) says which hashes may have been seen; only
those (a few in a hundred at ten million rows) are searched in the sorted runs that hold
every hash seen with its row, so a piece costs about the same early or late in the file.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

FILTER_BITS = 28  # 2^28 bits: at 10M hashes, 1 in 27 of the new ones is searched for nothing
FAN_IN = 4  # runs of a level merged into one of the next: each hash is rewritten once a level


class Seen:
    """Every valid row so far, as a 64-bit hash and its row number (not the rows): duplicates
    are found across the pieces of a file of any length. The pieces are marked in input order
    (the first of equal rows wins), by one thread."""

    def __init__(self) -> None:
        self.runs: list[pl.DataFrame] = []  # each: _h (UInt64, sorted), first (UInt32): 12 B/row
        self._levels: list[int] = []  # of each run: merged that many times over
        self._filter: pl.Series | None = None  # Boolean, a bit per slot; made when first needed

    def mark(self, hashes: pl.Series, rows: pl.Series) -> pl.Series:
        """For each row (its hash, its row number; increasing), the earlier row it repeats,
        else null; the rows not seen before are added."""
        by_hash = pl.DataFrame(
            {"h": hashes, "row": rows, "at": pl.int_range(len(rows), eager=True)}
        ).sort("h", maintain_order=True)  # equal rows side by side, the first first
        slots = _slots(by_hash["h"])
        maybe = self._filter.gather(slots) if self._filter is not None else slots.is_null()
        earlier = _first_rows(self.runs, by_hash["h"], maybe.arg_true())
        new = (pl.col("h") != pl.col("h").shift(1)).fill_null(True)
        marked = by_hash.with_columns(
            earlier.alias("earlier"),
            pl.when(new).then(pl.col("row")).forward_fill().alias("in_piece"),
            new.alias("new"),
        )
        fresh = marked.filter(pl.col("earlier").is_null() & pl.col("new"))
        self._add(fresh["h"], fresh["row"])
        first = pl.coalesce("earlier", "in_piece")
        repeats = marked.filter(first != pl.col("row")).select("at", first.alias("first"))
        found = pl.repeat(None, by_hash.height, dtype=pl.Int64, eager=True)
        return found.scatter(repeats["at"], repeats["first"]) if repeats.height else found

    def _add(self, hashes: pl.Series, rows: pl.Series) -> None:
        """Add rows not seen before, sorted by hash."""
        if hashes.is_empty():
            return
        if self._filter is None:
            self._filter = pl.repeat(False, 1 << FILTER_BITS, dtype=pl.Boolean, eager=True)
        self._filter.scatter(_slots(hashes), True)  # in place
        self.runs.append(pl.DataFrame({"_h": hashes, "first": rows.cast(pl.UInt32)}))
        self._levels.append(0)
        while len(self._levels) >= FAN_IN and len(set(self._levels[-FAN_IN:])) == 1:
            merged = pl.concat(self.runs[-FAN_IN:]).sort("_h")  # no hash is in two runs
            level = self._levels[-1] + 1
            del self.runs[-FAN_IN:], self._levels[-FAN_IN:]
            self.runs.append(merged)
            self._levels.append(level)


def _slots(hashes: pl.Series) -> pl.Series:
    """Each hash's bit in the filter: its top FILTER_BITS bits."""
    return (hashes // (1 << (64 - FILTER_BITS))).cast(pl.Int64)


def _first_rows(runs: Sequence[pl.DataFrame], hashes: pl.Series, maybe: pl.Series) -> pl.Series:
    """For each hash (sorted), the row it was first seen in, else null; only the hashes at
    ``maybe`` (sorted positions) can have been seen, and only they are searched."""
    found = pl.repeat(None, len(hashes), dtype=pl.Int64, eager=True)
    wanted = hashes.gather(maybe)
    for run in runs if len(maybe) else ():
        at = run["_h"].search_sorted(wanted).clip(0, run.height - 1)
        hits = (run["_h"].gather(at) == wanted).arg_true()  # few: only they are gathered
        if len(hits):
            found = found.scatter(maybe.gather(hits), run["first"].gather(at.gather(hits)))
    return found
