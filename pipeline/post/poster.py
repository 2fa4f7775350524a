"""One batch, settled: sent (split on refusal, reconciled when in doubt past Engage's memory
of its key, from what ``settle`` found), or replayed from what the journal recorded of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl
import structlog

from pipeline.chunk import Batch, child_key
from pipeline.engage import EngageClient
from pipeline.errors import BatchInDoubtError, BatchRejectedError, EngageError, NotSentError
from pipeline.journal import BatchRecord
from pipeline.model import SOURCE_ROW
from pipeline.post.ledger import Ledger, Refused
from pipeline.post.match import match_not_accepted
from pipeline.post.reconcile import Account, Held, accounts_of, read_accounts

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
        self.found: dict[tuple[int, str], set[int]] = {}  # in doubt: the rows Engage holds
        self._unsettled = {seq for (seq, _), r in resume.records.items() if r.state not in SETTLED}

    def needs_sending(self, batch: Batch) -> bool:
        """Whether any part of ``batch`` is still to be sent (or settled by a GET)."""
        return (batch.seq, batch.part) not in self.resume.records or batch.seq in self._unsettled

    def doubtful(self) -> set[int]:
        """The batches (seq) of which a part is in doubt past Engage's memory of its key."""
        return {seq for (seq, _), r in self.resume.records.items() if self._reconciled(r)}

    def in_doubt(self, batch: Batch) -> list[tuple[Batch, BatchRecord]]:
        """The parts of ``batch`` in doubt past Engage's memory of their key, with their
        records: what ``settle`` asks Engage about."""
        record = self.resume.records.get((batch.seq, batch.part))
        if record is None:
            return []
        if record.state in ("split", "reconciled"):
            return [
                part for child in self._children(batch, record) for part in self.in_doubt(child)
            ]
        return [(batch, record)] if self._reconciled(record) else []

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
        elif record and self._reconciled(record):
            self._reconcile(batch, record)
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

    def _reconciled(self, record: BatchRecord) -> bool:
        """In doubt since before Engage's memory of its key: settled by a GET, not re-sent."""
        if record.state != "sending":
            return False
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

    def _reconcile(self, batch: Batch, record: BatchRecord) -> None:
        """In doubt past Engage's memory of the key: what Engage holds is accepted, the rest
        sent again under a new key."""
        applied = self.found.pop((batch.seq, batch.part), None)
        if applied is None:  # not settled with the others (``settle``): asked on its own
            applied = settle([(batch, record)], self.read)[(batch.seq, batch.part)]
        missing = batch.rows.filter(~pl.col(SOURCE_ROW).is_in(sorted(applied)))
        self.ledger.count_settled(len(applied), missing.height)
        log.warning("batch reconciled", batch=batch.label, key=batch.key, found=len(applied),
                    resent=missing.height)  # fmt: skip
        if not missing.height:
            self.recorder.settled(batch, "done", None, [])
            self.ledger.settle(batch.rows, batch.key, None, None, batch.seq)
            return
        child = Batch.of(batch.seq, child_key(batch.key, "r"), missing, batch.part + "r")
        self.recorder.divided(batch, "reconciled", [child], explicit=True)
        found = batch.rows.join(missing, on=SOURCE_ROW, how="anti")
        self.ledger.settle(found, batch.key, None, None, batch.seq)
        self.walk(child)

    def read(
        self, accounts: list[Account], window: Window, concurrency: int = 1,
        done: Callable[[], None] | None = None,
    ) -> dict[Account, list[dict[str, Any]]]:  # fmt: skip
        """The transactions of each of ``accounts`` created in ``window``, each account read
        once, counted."""
        assert self.client is not None, "reconciling needs a client"

        def read_one() -> None:
            self.ledger.count_read()
            if done is not None:
                done()

        return read_accounts(accounts, self.client, concurrency, read_one, *window)


Window = tuple[float | None, float | None]  # (since, until): when the batches were sent
Read = Callable[[list[Account], Window], dict[Account, list[dict[str, Any]]]]


def settle(
    parts: Sequence[tuple[Batch, BatchRecord]], read: Read
) -> dict[tuple[int, str], set[int]]:
    """Which rows of each batch in doubt Engage holds: every account they touch read once
    (``read``), then their rows matched (``Held``), each transaction standing for one row of
    one batch at most. An error reading goes up as the batches' doubt."""
    if not parts:
        return {}
    sent = [(r.first_sent_at, r.updated_at) for _, r in parts]
    since = None if any(s is None for s, _ in sent) else min(s for s, _ in sent if s is not None)
    until = None if any(u is None for _, u in sent) else max(u for _, u in sent if u is not None)
    accounts = accounts_of(
        pl.concat([b.rows.select("contactId", "definitionId") for b, _ in parts])
    )
    try:
        held = Held(read(accounts, (since, until)))
    except EngageError as exc:  # still in doubt: not "not applied"
        raise BatchInDoubtError(f"reconciling failed: {exc}", status=exc.status) from exc
    return held.find_applied(
        [((b.seq, b.part), b.rows, r.first_sent_at, r.updated_at) for b, r in parts]
    )


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _squash(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]
