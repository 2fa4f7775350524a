"""Duplicates: a valid row equal to an earlier one (after normalising) is rejected, across
every piece of the input, by a 64-bit hash of what is sent for it.

The costly part, searching a piece's hashes in everything seen so far, runs with the
screening of the pieces, in parallel (``probe``, against the index as it was then); marking
the pieces in order (``mark``) then searches only what was added since, and adds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Probe:
    """A piece's hashes, sorted, and the rows the index knew them from when it was probed."""

    by_hash: pl.DataFrame  # h, row (its row number), at (its place in the piece), earlier
    runs: tuple[pl.DataFrame, ...]  # the runs searched (held: a merged run is a new one)


class Seen:
    """Every valid row so far, as a 64-bit hash and its row number (not the rows): duplicates
    are found across the pieces of a file of any length. Sorted runs, merged as they grow
    (a run is merged into the one before it once that is at most 4 times its size)."""

    def __init__(self) -> None:
        self.runs: list[pl.DataFrame] = []  # each: _h (UInt64, sorted), first (UInt32): 12 B/row
        self._lock = threading.Lock()  # runs are replaced, never changed: probes read them

    def probe(self, hashes: pl.Series, rows: pl.Series) -> Probe:
        """Search ``hashes`` (of rows numbered ``rows``, increasing) in the index as it is
        now. Any thread, while pieces are marked."""
        by_hash = pl.DataFrame(
            {"h": hashes, "row": rows, "at": pl.int_range(len(rows), eager=True)}
        ).sort("h", maintain_order=True)  # equal rows side by side, the first first
        with self._lock:
            runs = tuple(self.runs)
        earlier = _first_rows(runs, by_hash["h"])
        return Probe(by_hash.with_columns(earlier.alias("earlier")), runs)

    def mark(self, probe: Probe) -> pl.Series:
        """For each row of the probed piece, the earlier row it repeats, else null; the rows
        not seen before are added. The pieces in input order: the first of equal rows wins."""
        searched = {id(run) for run in probe.runs}  # alive while probe is: ids not reused
        added = [run for run in self.runs if id(run) not in searched]
        by_hash = probe.by_hash
        new = (pl.col("h") != pl.col("h").shift(1)).fill_null(True)
        marked = by_hash.with_columns(
            pl.col("earlier").fill_null(_first_rows(added, by_hash["h"])),
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
        run = pl.DataFrame({"_h": hashes, "first": rows.cast(pl.UInt32)})
        runs = list(self.runs)
        while runs and runs[-1].height <= 4 * run.height:
            run = runs.pop().merge_sorted(run, key="_h")  # no hash is in two runs
        with self._lock:
            self.runs = [*runs, run]


def _first_rows(runs: Sequence[pl.DataFrame], hashes: pl.Series) -> pl.Series:
    """For each hash (sorted: the searches then walk each run in order), the row it was first
    seen in, else null."""
    found = pl.repeat(None, len(hashes), dtype=pl.Int64, eager=True)
    for run in runs:
        at = run["_h"].search_sorted(hashes).clip(0, run.height - 1)
        hits = (run["_h"].gather(at) == hashes).arg_true()  # few: only they are gathered
        if len(hits):
            found = found.scatter(hits, run["first"].gather(at.gather(hits)))
    return found
