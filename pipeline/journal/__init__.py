"""The run journal: one SQLite file (WAL) that remembers each import's plan and each batch's state.

Per import: its identity, the input's fingerprint and path, the settings that shape the plan,
the point definitions validation used, and per batch its key, rows and content hash and its
state, ``planned -> sending -> done | failed``, or ``split``/``reconciled`` into child batches.
Each change is committed before the step that depends on it: ``sending`` is durable before
the request leaves. Rows Engage refused are kept with their reasons; accepted rows are derived
(a done batch's rows less its refused ones), so the journal stays small for 50M-row imports.

A journal this version can't vouch for (corrupt, another program's, a newer schema, read-only)
is a ``JournalError`` (exit 2), never a silent fresh start.
"""

from __future__ import annotations

from pipeline.journal.batches import TERMINAL, Batches, BatchRecord
from pipeline.journal.imports import FINISHED, ImportRecord, Imports
from pipeline.journal.landed import Landed
from pipeline.journal.store import FILENAME

__all__ = [
    "FILENAME",
    "FINISHED",
    "TERMINAL",
    "BatchRecord",
    "ImportRecord",
    "Journal",
]


class Journal(Imports, Batches, Landed):
    """The journal file of a state directory: its imports, their batches, the rows landed."""
