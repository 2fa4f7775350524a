"""Overlap: a new import whose batches hold exactly the rows of batches that another import in
the journal sent. That is the same rows under new keys (the file grew, a row was fixed in
place, it was exported again, gzipped, given CRLF line ends), and Engage would award them
again: the import is refused before anything is sent, unless ``--force`` (confirmed).

Batches are compared by the sha256 of their bodies, so only rows sent in the same batches
match: rows that landed in other company (another batch size, rows inserted before them)
are not found. The rows of a batch that Engage refused whole never count.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from pipeline.journal import Journal, Landed
from pipeline.plan import Plan, Tally


def overlap(journal: Journal, plan: Plan) -> str | None:
    """What to tell if a batch of ``plan`` holds the rows of a batch another import sent,
    else None. The plan is made once more for it, but only if any other import sent any."""
    if not journal.sent_any(besides=plan.import_id):
        return None
    seqs: dict[str, int] = {}
    for batch in replace(plan, tally=Tally(), on_read=lambda rows: None).batches():
        seqs.setdefault(hashlib.sha256(batch.body).hexdigest(), batch.seq)
    landed = journal.landed(seqs, besides=plan.import_id)
    return _told(plan, landed, seqs) if landed else None


def _told(plan: Plan, landed: list[Landed], seqs: dict[str, int]) -> str:
    first = landed[0]
    mine = sorted({seqs[batch.content_sha256] for batch in landed})
    others = sorted({batch.import_id for batch in landed})
    also = f" (and {len(others) - 1} other imports)" if len(others) > 1 else ""
    return (
        f"{plan.source.path}: {len(mine)} of its batches (the first: batch {mine[0]}) hold"
        f" exactly the rows of batches import {first.import_id} ({first.input_path},"
        f" {first.created_at}){also} sent, so Engage may hold them: sending them again would"
        " award their points twice. Put only the new or fixed rows in a file of their own"
        " (rows Engage refused: fix its rejects report and import that)"
    )
