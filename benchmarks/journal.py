"""The run journal's cost: what a run of an import of N rows writes to it (the import, each
batch planned, sending, settled, the finish), timed on a real SQLite file, to set beside the
dry run of the same number of rows (issue: at most 5 % of a 100k-row dry run)."""

from __future__ import annotations

import hashlib
import time

from benchmarks.runs import Measurement, Settings
from pipeline.journal import Journal

BATCH = 1000
PIECE = 55  # batches a piece of 8 MiB of ~150-byte rows holds


def journal_cost(rows: int, settings: Settings) -> Measurement:
    """Every journal write of a ``rows``-row import in batches of 1000, timed together."""
    folder = settings.scratch / f"journal-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    batches = -(-rows // BATCH)
    started = time.perf_counter()
    with Journal.open(folder) as journal:
        _import(journal, batches)
    seconds = time.perf_counter() - started
    (folder / "journal.sqlite").unlink(missing_ok=True)
    return Measurement(
        key="journal", name="run journal writes", file=f"{rows:,} rows, {batches} batches",
        size=rows, rows=rows, seconds=seconds, peak_rss_mib=None, cpu_seconds=None, ok=True,
        note=f"{batches * 2 + -(-batches // PIECE) + 3} transactions",
    )  # fmt: skip


def _import(journal: Journal, batches: int) -> None:
    tenant = "https://t.example"
    journal.register("bench", "in.csv", "0" * 64, {"batch_size": BATCH}, tenant, [1, 2, 3])
    journal.acquire("bench")
    keys = {seq: hashlib.sha256(str(seq).encode()).hexdigest() for seq in range(1, batches + 1)}
    for first in range(1, batches + 1, PIECE):  # a piece's batches are recorded together
        piece = range(first, min(first + PIECE, batches + 1))
        journal.plan_batches("bench", [(seq, keys[seq], BATCH, keys[seq]) for seq in piece])
        for seq in piece:
            journal.sending("bench", seq, "")
            journal.settle("bench", seq, "", "done", 202, [], keys[seq])
    journal.finish("bench", {"rows_read": batches * BATCH, "batches_total": batches}, 0, "finished")
    journal.release("bench")
