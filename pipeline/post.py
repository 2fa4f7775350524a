"""Post: send batches to Engage and settle every row: accepted, refused, or unsent.

Transient failures are retried inside the client under the same key. A batch Engage refuses
as a whole (a 4xx other than 401/403/409/429) is split in halves, each under a key derived
from its parent's, down to single rows, so one bad row cannot take 999 good ones with it.
A ``notAccepted`` row is matched back to its input row by content (``match``).

With a journal, each batch's state is recorded before and after its request, and a resumed
run settles what earlier runs did: done batches are not sent again, batches in doubt are
re-sent under their key while Engage still remembers it, and reconciled through the GET
endpoints after that (``reconcile``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl
import structlog

from pipeline.chunk import Batch, child_key
from pipeline.engage import EngageClient
from pipeline.errors import BatchRejectedError, EngageError, TransientEngageError
from pipeline.journal import BatchRecord
from pipeline.load import SOURCE_ROW
from pipeline.match import match_not_accepted
from pipeline.reconcile import find_applied

log = structlog.get_logger("pipeline.post")
OUTCOME_SCHEMA = {
    SOURCE_ROW: pl.Int64,
    "accepted": pl.Boolean,
    "stage": pl.String,
    "reason": pl.String,
    "idempotencyKey": pl.String,
}
Refused = list[tuple[int, str, str]]  # (sourceRow, stage, reason)


class Recorder(Protocol):
    """Where batch states go (the journal); each call is durable when it returns."""

    def sending(self, batch: Batch) -> None: ...

    def settled(self, batch: Batch, state: str, status: int | None, refused: Refused) -> None: ...

    def divided(
        self, batch: Batch, state: str, children: Sequence[Batch], explicit: bool
    ) -> None: ...


class NoRecorder:
    """No journal: nothing is remembered between runs."""

    def sending(self, batch: Batch) -> None:
        pass

    def settled(self, batch: Batch, state: str, status: int | None, refused: Refused) -> None:
        pass

    def divided(self, batch: Batch, state: str, children: Sequence[Batch], explicit: bool) -> None:
        pass


@dataclass(frozen=True)
class Resume:
    """What earlier runs of this import recorded, and how long Engage remembers a key."""

    records: dict[tuple[int, str], BatchRecord] = field(default_factory=dict)
    refused: dict[tuple[int, str], Refused] = field(default_factory=dict)
    window_s: float = 82800.0
    now: Callable[[], float] = time.time


@dataclass
class Posted:
    """Every row that was planned, settled; and why the run stopped early, if it did."""

    outcomes: pl.DataFrame  # OUTCOME_SCHEMA, one row per planned row
    requests: int = 0
    batches_sent: int = 0
    unmatched: int = 0  # notAccepted rows that matched no row sent
    aborted: EngageError | None = None
    interrupted: bool = False


@dataclass
class _Ledger:
    parts: list[pl.DataFrame] = field(default_factory=list)
    requests: int = 0
    unmatched: int = 0

    def settle(
        self, rows: pl.DataFrame, key: str | None, stage: str | None, reason: str | None
    ) -> None:
        self.parts.append(
            rows.select(
                pl.col(SOURCE_ROW),
                pl.lit(stage is None).alias("accepted"),
                pl.lit(stage, pl.String).alias("stage"),
                pl.lit(reason, pl.String).alias("reason"),
                pl.lit(key, pl.String).alias("idempotencyKey"),
            )
        )

    def refuse(self, rows: pl.DataFrame, key: str, refused: Refused) -> None:
        """``rows`` accepted, except the refused ones, each with its stage and reason."""
        frame = pl.DataFrame(
            refused,
            schema={SOURCE_ROW: pl.Int64, "stage": pl.String, "reason": pl.String},
            orient="row",
        )
        self.settle(rows.join(frame, on=SOURCE_ROW, how="anti"), key, None, None)
        self.parts.append(
            rows.select(SOURCE_ROW)
            .join(frame, on=SOURCE_ROW)
            .select(
                pl.col(SOURCE_ROW),
                pl.lit(False).alias("accepted"),
                "stage",
                "reason",
                pl.lit(key, pl.String).alias("idempotencyKey"),
            )
        )

    def settled_rows(self) -> pl.DataFrame:
        if not self.parts:
            return pl.DataFrame(schema={SOURCE_ROW: pl.Int64})
        return pl.concat([p.select(SOURCE_ROW) for p in self.parts])

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.parts) if self.parts else pl.DataFrame(schema=OUTCOME_SCHEMA)


class _Poster:
    def __init__(
        self,
        client: EngageClient | None,
        recorder: Recorder,
        resume: Resume,
        ledger: _Ledger | None = None,
        unsent: str = "not settled yet",
    ) -> None:
        self.client = client  # None: only report what the journal knows, send nothing
        self.recorder = recorder
        self.resume = resume
        self.ledger = ledger or _Ledger()
        self.unsent = unsent

    def walk(self, batch: Batch) -> None:
        """Settle ``batch`` from what the journal knows of it, sending what needs sending."""
        record = self.resume.records.get((batch.seq, batch.part))
        state = record.state if record else "planned"
        if record and state in ("done", "failed"):
            self.ledger.refuse(
                batch.rows, batch.key, self.resume.refused.get((batch.seq, batch.part), [])
            )
        elif record and state in ("split", "reconciled"):
            self._walk_children(batch, record)
        elif self.client is None:
            self.ledger.settle(batch.rows, None, "unsent", self.unsent)
        elif record and state == "sending" and self._too_old(record):
            self._reconcile(batch, record.first_sent_at)
        else:
            self._send(batch)

    def _walk_children(self, batch: Batch, record: BatchRecord) -> None:
        children = self._children(batch, record)
        for child in children:
            self.walk(child)
        covered = pl.concat([c.rows.select(SOURCE_ROW) for c in children])
        rest = batch.rows.join(covered, on=SOURCE_ROW, how="anti")
        if rest.height:  # rows a reconciliation found applied
            self.ledger.settle(rest, batch.key, None, None)

    def _children(self, batch: Batch, record: BatchRecord) -> list[Batch]:
        if record.state == "split":
            return list(batch.halves())
        child = self.resume.records[(batch.seq, batch.part + "r")]
        rows = batch.rows.filter(pl.col(SOURCE_ROW).is_in(child.source_rows or []))
        return [Batch(batch.seq, child.key, rows, batch.part + "r")]

    def _too_old(self, record: BatchRecord) -> bool:
        sent = record.first_sent_at or self.resume.now()
        return self.resume.now() - sent >= self.resume.window_s

    def _send(self, batch: Batch) -> None:
        assert self.client is not None, "a batch to send needs a client"
        started = time.perf_counter()
        self.ledger.requests += 1
        bound = log.bind(batch=batch.label, key=batch.key, rows=batch.rows.height)
        self.recorder.sending(batch)
        try:
            result = self.client.post_transactions(batch.body, batch.key)
        except BatchRejectedError as exc:
            bound.warning("batch refused", status=exc.status, latency_s=_since(started))
            self._refused(batch, exc)
            return
        refused = [(row, "server", why) for row, why in match_not_accepted(batch.rows, result)]
        self.ledger.unmatched += len(result.not_accepted) - len(refused)
        self.recorder.settled(batch, "done", result.status, refused)
        self.ledger.refuse(batch.rows, batch.key, refused)
        bound.info(
            "batch posted",
            status=result.status,
            attempts=result.attempts,
            latency_s=_since(started),
            accepted=batch.rows.height - len(refused),
            not_accepted=len(refused),
        )

    def _refused(self, batch: Batch, exc: BatchRejectedError) -> None:
        if batch.rows.height == 1:
            why = f"Engage refused it: {exc.status} {_squash(exc.body)}".strip()
            refused = [(int(batch.rows[SOURCE_ROW][0]), "batch", why)]
            self.recorder.settled(batch, "failed", exc.status, refused)
            self.ledger.refuse(batch.rows, batch.key, refused)
            return
        halves = batch.halves()
        self.recorder.divided(batch, "split", halves, explicit=False)
        for half in halves:
            self.walk(half)

    def _reconcile(self, batch: Batch, since: float | None) -> None:
        """In doubt past Engage's memory of the key: ask Engage which rows it holds."""
        assert self.client is not None, "reconciling needs a client"
        applied = find_applied(batch.rows, self.client, since)
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
            self.ledger.settle(batch.rows, batch.key, None, None)
            return
        child = Batch(batch.seq, child_key(batch.key, "r"), missing, batch.part + "r")
        self.recorder.divided(batch, "reconciled", [child], explicit=True)
        self.ledger.settle(
            batch.rows.join(missing, on=SOURCE_ROW, how="anti"), batch.key, None, None
        )
        self.walk(child)


def post(
    batches: Iterable[Batch],
    client: EngageClient | None,
    should_stop: Callable[[], bool] = lambda: False,
    recorder: Recorder | None = None,
    resume: Resume | None = None,
) -> Posted:
    """Settle ``batches`` in order; stop at the first error that retrying could not cure."""
    poster = _Poster(client, recorder or NoRecorder(), resume or Resume())
    ledger, sent = poster.ledger, 0
    pending = iter(batches)
    for batch in pending:
        if should_stop() and _needs_sending(batch, poster.resume):
            _settle_rest(poster, [batch, *pending], "not sent: the run was interrupted")
            return Posted(ledger.frame(), ledger.requests, sent, ledger.unmatched, interrupted=True)
        requests = ledger.requests
        try:
            poster.walk(batch)
        except EngageError as exc:
            _settle_in_doubt(ledger, batch, exc)
            _settle_rest(poster, list(pending), f"not sent: the run stopped ({exc})")
            sent += ledger.requests > requests
            return Posted(
                ledger.frame(),
                ledger.requests,
                sent,
                ledger.unmatched,
                exc,
                interrupted=should_stop(),
            )
        sent += ledger.requests > requests
    return Posted(ledger.frame(), ledger.requests, sent, ledger.unmatched)


def _needs_sending(batch: Batch, resume: Resume) -> bool:
    record = resume.records.get((batch.seq, batch.part))
    return record is None or record.state not in ("done", "failed", "split", "reconciled")


def _settle_in_doubt(ledger: _Ledger, batch: Batch, exc: EngageError) -> None:
    """Rows of the batch in flight that no answer settled."""
    rows = batch.rows.join(ledger.settled_rows(), on=SOURCE_ROW, how="anti")
    if isinstance(exc, TransientEngageError):
        reason = (
            f"outcome unknown ({exc}); re-run the same input to settle it: the same key "
            "is sent again and Engage applies it at most once"
        )
    else:
        reason = f"not applied: {exc}"
    ledger.settle(rows, batch.key, "batch", reason)


def _settle_rest(poster: _Poster, batches: list[Batch], why: str) -> None:
    """Batches the run won't send: what earlier runs settled is reported, the rest unsent."""
    reporter = _Poster(None, NoRecorder(), poster.resume, poster.ledger, unsent=why)
    for batch in batches:
        reporter.walk(batch)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _squash(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]
