"""One batch, settled: sent (split on refusal, reconciled when in doubt past Engage's memory
of its key), or replayed from what the journal recorded of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl
import structlog

from pipeline.chunk import Batch, child_key
from pipeline.engage import EngageClient
from pipeline.errors import BatchInDoubtError, BatchRejectedError, EngageError, NotSentError
from pipeline.journal import BatchRecord
from pipeline.model import SOURCE_ROW
from pipeline.post.ledger import Ledger, Refused
from pipeline.post.match import match_not_accepted
from pipeline.post.reconcile import find_applied

log = structlog.get_logger("pipeline.post")
SETTLED = ("done", "failed", "split", "reconciled")
STOPPED = "not sent: the run was interrupted"
IN_DOUBT = (
    "outcome unknown: an earlier run sent it and got no answer; re-run the same input to"
    " settle it (Engage applies its key at most once)"
)


class Recorder(Protocol):
    """Where batch states go (the journal); each call is durable when it returns."""

    def sending(self, batch: Batch) -> None: ...

    def settled(
        self, batch: Batch, state: str, status: int | None, refused: Refused, unmatched: int = 0
    ) -> None: ...

    def divided(
        self, batch: Batch, state: str, children: Sequence[Batch], explicit: bool
    ) -> None: ...


class NoRecorder:
    """No journal: nothing is remembered between runs."""

    def sending(self, batch: Batch) -> None:
        pass

    def settled(
        self, batch: Batch, state: str, status: int | None, refused: Refused, unmatched: int = 0
    ) -> None:
        pass

    def divided(self, batch: Batch, state: str, children: Sequence[Batch], explicit: bool) -> None:
        pass


@dataclass(frozen=True)
class Resume:
    """What earlier runs of this import recorded, and how long Engage remembers a key."""

    records: dict[tuple[int, str], BatchRecord] = field(default_factory=dict)
    # the rows a settled batch refused, looked up by (seq, part) when it is replayed
    refused: Callable[[int, str], Refused] = lambda seq, part: []
    window_s: float = 82800.0
    now: Callable[[], float] = time.time


class Poster:
    def __init__(
        self,
        client: EngageClient | None,
        recorder: Recorder,
        resume: Resume,
        ledger: Ledger | None = None,
        unsent: str = "not settled yet",
    ) -> None:
        self.client = client  # None: only report what the journal knows, send nothing
        self.recorder = recorder
        self.resume = resume
        self.ledger = ledger or Ledger()
        self.unsent = unsent
        self.refused_alone: dict[int, int] = {}  # by seq: rows Engage refused one by one

    def needs_sending(self, batch: Batch) -> bool:
        record = self.resume.records.get((batch.seq, batch.part))
        return record is None or record.state not in SETTLED

    def walk(self, batch: Batch) -> None:
        """Settle ``batch`` from what the journal knows of it, sending what needs sending."""
        record = self.resume.records.get((batch.seq, batch.part))
        state = record.state if record else "planned"
        if record and state in ("done", "failed"):
            refused = self.resume.refused(batch.seq, batch.part)
            if record.unmatched:  # said when it was answered; said again for this run
                self.ledger.count_unmatched(record.unmatched)
                log.warning("not accepted rows match no row sent: counted accepted",
                            batch=batch.label, key=batch.key, count=record.unmatched)  # fmt: skip
            self.ledger.refuse(batch.rows, batch.key, refused, batch.seq)
        elif record and state in ("split", "reconciled"):
            self._walk_children(batch, record)
        elif self.client is None and state == "sending":  # an earlier run sent it
            self.ledger.settle(batch.rows, batch.key, "batch", IN_DOUBT, batch.seq)
        elif self.client is None:
            self.ledger.settle(batch.rows, None, "unsent", self.unsent, batch.seq)
        elif record and state == "sending" and self._too_old(record):
            self._reconcile(batch, record.first_sent_at, record.updated_at)
        else:
            self._send(batch)

    def _walk_children(self, batch: Batch, record: BatchRecord) -> None:
        children = self._children(batch, record)
        for child in children:
            self.walk(child)
        covered = pl.concat([c.rows.select(SOURCE_ROW) for c in children])
        rest = batch.rows.join(covered, on=SOURCE_ROW, how="anti")
        if rest.height:  # rows a reconciliation found applied
            self.ledger.settle(rest, batch.key, None, None, batch.seq)

    def _children(self, batch: Batch, record: BatchRecord) -> list[Batch]:
        if record.state == "split":
            return list(batch.halves())
        child = self.resume.records[(batch.seq, batch.part + "r")]
        rows = batch.rows.filter(pl.col(SOURCE_ROW).is_in(child.source_rows or []))
        return [Batch.of(batch.seq, child.key, rows, batch.part + "r")]

    def _too_old(self, record: BatchRecord) -> bool:
        sent = record.first_sent_at or self.resume.now()
        return self.resume.now() - sent >= self.resume.window_s

    def _send(self, batch: Batch) -> None:
        assert self.client is not None, "a batch to send needs a client"
        started = time.perf_counter()
        record = self.resume.records.get((batch.seq, batch.part))
        in_doubt = record is not None and record.state == "sending"  # an earlier run's try
        try:  # a BatchInDoubtError goes up: the batch stays in doubt, the run stops
            result = self.client.post_transactions(
                batch.body, batch.key, in_doubt, lambda: self._leaving(batch)
            )
        except NotSentError:  # the run stopped while it waited for the rate limiter
            self.ledger.settle(batch.rows, None, "unsent", STOPPED, batch.seq)
            return
        except BatchRejectedError as exc:
            log.warning("batch refused", batch=batch.label, key=batch.key, status=exc.status,
                        latency_s=_since(started))  # fmt: skip
            self._refused(batch, exc)
            return
        refused, unmatched = match_not_accepted(batch.rows, result)
        if unmatched:
            self.ledger.count_unmatched(unmatched)
            log.warning("not accepted rows match no row sent: counted accepted",
                        batch=batch.label, key=batch.key, count=unmatched)  # fmt: skip
        self.recorder.settled(batch, "done", result.status, refused, unmatched)
        self.ledger.refuse(batch.rows, batch.key, refused, batch.seq)
        log.debug("batch posted", batch=batch.label, key=batch.key, rows=batch.rows.height,
                  status=result.status, attempts=result.attempts, latency_s=_since(started),
                  not_accepted=len(refused))  # fmt: skip

    def _leaving(self, batch: Batch) -> None:
        """The limiter let the batch's request go: durable before it is written."""
        self.recorder.sending(batch)
        self.ledger.count_request(planned=batch.part == "")

    def _refused(self, batch: Batch, exc: BatchRejectedError) -> None:
        if batch.rows.height == 1:
            self.refused_alone[batch.seq] = self.refused_alone.get(batch.seq, 0) + 1
            why = f"Engage refused it: {exc.status} {_squash(exc.body)}".strip()
            refused = [(int(batch.rows[SOURCE_ROW][0]), "batch", why)]
            self.recorder.settled(batch, "failed", exc.status, refused)
            self.ledger.refuse(batch.rows, batch.key, refused, batch.seq)
            return
        halves = batch.halves()
        self.recorder.divided(batch, "split", halves, explicit=False)
        for half in halves:
            self.walk(half)

    def _reconcile(self, batch: Batch, since: float | None, until: float | None) -> None:
        """In doubt past Engage's memory of the key: ask Engage which rows it holds."""
        assert self.client is not None, "reconciling needs a client"
        try:
            applied = find_applied(batch.rows, self.client, since, until)
        except EngageError as exc:  # still in doubt: not "not applied"
            raise BatchInDoubtError(f"reconciling it failed: {exc}", status=exc.status) from exc
        missing = batch.rows.filter(~pl.col(SOURCE_ROW).is_in(sorted(applied)))
        log.warning(
            "batch reconciled",
            batch=batch.label,
            key=batch.key,
            found=len(applied),
            resent=missing.height,
        )
        if not missing.height:
            self.recorder.settled(batch, "done", None, [])
            self.ledger.settle(batch.rows, batch.key, None, None, batch.seq)
            return
        child = Batch.of(batch.seq, child_key(batch.key, "r"), missing, batch.part + "r")
        self.recorder.divided(batch, "reconciled", [child], explicit=True)
        found = batch.rows.join(missing, on=SOURCE_ROW, how="anti")
        self.ledger.settle(found, batch.key, None, None, batch.seq)
        self.walk(child)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _squash(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]
