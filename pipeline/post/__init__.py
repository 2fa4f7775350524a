"""Post: send batches to Engage and settle every row: accepted, refused, or unsent.

Transient failures are retried inside the client under the same key. A batch Engage refuses
as a whole (a 4xx other than 401/403/409/429) is split in halves, each under a key derived
from its parent's, down to single rows, so one bad row cannot take 999 good ones with it.
A ``notAccepted`` row is matched back to its input row by content (``match``).

``concurrency`` batches are in flight at once (the client's rate limiter paces the
requests); batches are taken from the iterator only as workers free up, so memory stays
bounded. With a journal, each batch's state is recorded once its request may leave and when
it is answered, and a resumed run settles what earlier runs did (``poster``): the batches
they left in doubt past Engage's memory of their keys all together, before anything else is
sent (every account they touch read once, side by side: ``poster.settle``). The first error
retrying could not cure stops the run: no new batch is sent, the ones in flight finish, and
every other row is still accounted for (what earlier runs settled, or ``unsent``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl
import structlog

from pipeline.ahead import prefetched
from pipeline.chunk import Batch
from pipeline.engage import EngageClient
from pipeline.errors import (
    BatchInDoubtError,
    EngageError,
    FatalEngageError,
    NotSentError,
    TransientEngageError,
)
from pipeline.journal import BatchRecord
from pipeline.model import SOURCE_ROW
from pipeline.post.ledger import REFUSED_SCHEMA, Ledger, Refused, Settling
from pipeline.post.poster import STOPPED, NoRecorder, Poster, Recorder, Resume, Window, settle
from pipeline.post.reconcile import Account
from pipeline.spool import Spool

__all__ = ["REFUSED_SCHEMA", "Posted", "Recorder", "Refused", "Resume", "Settling", "Watch", "post"]
log = structlog.get_logger("pipeline.post")


@dataclass
class Posted:
    """What became of every planned row, and why the run stopped early, if it did."""

    refused: Spool = field(default_factory=Spool)
    accepted: int = 0
    points: dict[int, Decimal] = field(default_factory=dict)
    requests: int = 0
    batches_sent: int = 0
    unmatched: int = 0  # notAccepted rows that matched no row sent
    settling: Settling = field(default_factory=Settling)
    aborted: EngageError | None = None
    interrupted: bool = False
    outcomes: pl.DataFrame | None = None  # every row's outcome, when asked for (keep_accepted)


class Watch:
    """Who watches a run's progress (a bar on a terminal); by default, nobody."""

    def batch_done(self, batch: Batch) -> None:
        """``batch`` is settled: accepted, refused, or left unsent."""

    def settling(self, batches: int, accounts: int) -> None:
        """``batches`` in doubt are being settled by reading ``accounts`` accounts."""

    def account_read(self) -> None:
        """One more account read (all its pages)."""


class _Run:
    def __init__(self, poster: Poster, concurrency: int, watch: Watch) -> None:
        self.poster, self.ledger = poster, poster.ledger
        self.concurrency, self.watch = max(1, concurrency), watch
        self.done = watch.batch_done
        self.inflight: dict[Future[None], Batch] = {}
        self.failure: EngageError | None = None
        self.stopped_by: str | None = None
        self.refusing = 0  # batches in a row whose every row Engage refused, one by one
        self.tripped: EngageError | None = None  # stops the run if another batch is to go

    def make_room(self, should_stop: Callable[[], bool]) -> None:
        """Wait for a free worker; then say whether the run is to stop."""
        while len(self.inflight) >= self.concurrency:
            self.collect(wait(self.inflight, return_when=FIRST_COMPLETED).done)
        self.failure = self.failure or self.tripped
        if self.stopped_by is None and self.failure is not None:
            self.stopped_by = f"not sent: the run stopped ({self.failure})"
        if self.stopped_by is None and should_stop():
            self.stopped_by = STOPPED

    def submit(self, pool: ThreadPoolExecutor, batch: Batch) -> None:
        self.ledger.opened(batch.seq)
        self.inflight[pool.submit(self.poster.walk, batch)] = batch

    def settled_first(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """``batches``, the ones in doubt past Engage's memory of their keys (and those to be
        sent among them) held back until all of them are settled together: their accounts
        are read before this run sends anything, so no transaction of its own is taken for
        an earlier run's row. Batches that need no sending pass at once."""
        waiting = self.poster.doubtful()
        held: list[Batch] = []
        for batch in batches if waiting else ():
            if batch.seq in waiting or self.poster.needs_sending(batch):
                held.append(batch)
            else:
                yield batch
            waiting.discard(batch.seq)
            if not waiting:
                break
        self._settle([part for batch in held for part in self.poster.in_doubt(batch)])
        yield from held
        yield from batches

    def _settle(self, parts: list[tuple[Batch, BatchRecord]]) -> None:
        def read(accounts: list[Account], window: Window) -> dict[Account, list[dict[str, Any]]]:
            self.watch.settling(len(parts), len(accounts))
            log.warning("settling batches in doubt", batches=len(parts), accounts=len(accounts))
            return self.poster.read(accounts, window, self.concurrency, self.watch.account_read)

        try:
            self.poster.found = settle(parts, read)
        except BatchInDoubtError as exc:  # they stay in doubt; nothing else is sent
            stopping = isinstance(exc.__cause__, NotSentError)
            self.failure = None if stopping else exc
            self.stopped_by = STOPPED if stopping else f"not sent: the run stopped ({exc})"
        except Exception as exc:  # a bug or a surprise: still in doubt, every row reported
            log.error("settling the batches in doubt failed unexpectedly", exc_info=exc)
            self.failure = TransientEngageError(
                f"settling the batches in doubt failed: {type(exc).__name__}: {exc}"
            )
            self.stopped_by = f"not sent: the run stopped ({self.failure})"

    def collect(self, finished: Iterable[Future[None]]) -> None:
        for future in list(finished):
            batch = self.inflight.pop(future)
            try:
                future.result()
            except Exception as exc:  # every row in flight is still reported
                failure = exc if isinstance(exc, EngageError) else _unexpected(batch, exc)
                self._in_doubt(batch, failure)
                self.failure = self.failure or failure
            else:
                self.ledger.closed(batch.seq)
                self._count_refusals(batch)
            self.done(batch)

    def _count_refusals(self, batch: Batch) -> None:
        """A few batches in a row that Engage refused row by row (2n-1 requests each): it
        refuses everything (a contract changed, a tenant's rule); the rest is not sent."""
        alone = self.poster.refused_alone.pop(batch.seq, 0)
        self.refusing = self.refusing + 1 if alone == batch.rows.height > 1 else 0
        if self.refusing >= REFUSING_IN_A_ROW:
            self.tripped = FatalEngageError(
                f"Engage refused every row of {self.refusing} batches in a row, one by one (the"
                f" last: batch {batch.label}); see why in the rejects report, then run the"
                " same command again"
            )

    def _in_doubt(self, batch: Batch, exc: EngageError) -> None:
        """Rows of the batch in flight that no answer settled."""
        done = self.ledger.closed(batch.seq).to_frame(SOURCE_ROW)
        rows = batch.rows.join(done, on=SOURCE_ROW, how="anti")
        if isinstance(exc, TransientEngageError) or getattr(exc, "outcome_unknown", False):
            reason = (
                f"outcome unknown ({exc}); re-run the same input to settle it: Engage "
                "applies its key at most once, and the journal reconciles it later"
            )
        else:
            reason = f"not applied: {exc}"
        self.ledger.settle(rows, batch.key, "batch", reason)


def _unexpected(batch: Batch, exc: Exception) -> EngageError:
    """A bug or a surprise while a batch was in flight: its outcome is unknown (the journal
    keeps it in doubt, and a re-run settles it under the same key)."""
    log.error("batch failed unexpectedly", batch=batch.label, key=batch.key, exc_info=exc)
    failure = TransientEngageError(f"unexpected error: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure


def post(
    batches: Iterable[Batch],
    client: EngageClient | None,
    should_stop: Callable[[], bool] = lambda: False,
    recorder: Recorder | None = None,
    resume: Resume | None = None,
    concurrency: int = 1,
    watch: Watch | None = None,
    keep_accepted: bool = True,
) -> Posted:
    """Settle every batch of ``batches``, sending what needs sending (``client`` None: send
    nothing, report what the journal knows). ``keep_accepted``: also say which rows were
    accepted (``Posted.outcomes``), for small imports and checks."""
    poster = Poster(client, recorder or NoRecorder(), resume or Resume(), Ledger(keep_accepted))
    run = _Run(poster, concurrency, watch or Watch())
    done = run.done
    reporter: Poster | None = None
    ahead = iter(batches)
    if client is not None:
        ahead = run.settled_first(prefetched(batches, PREFETCH, name="plan"))
    with ThreadPoolExecutor(max_workers=run.concurrency, thread_name_prefix="post") as pool:
        for batch in ahead:
            if run.stopped_by is None and client is not None and poster.needs_sending(batch):
                run.make_room(should_stop)
                if run.stopped_by is None:
                    run.submit(pool, batch)
                    continue
            reporter = reporter or Poster(None, NoRecorder(), poster.resume, poster.ledger)
            reporter.unsent = run.stopped_by or "not settled yet"
            (reporter if run.stopped_by or client is None else poster).walk(batch)
            done(batch)
        run.collect(list(run.inflight))
    return _posted(run.ledger, run, should_stop)


PREFETCH = 64  # batches planned ahead of the ones in flight
REFUSING_IN_A_ROW = 3  # batches refused row by row before the run stops


def _posted(ledger: Ledger, run: _Run, should_stop: Callable[[], bool]) -> Posted:
    return Posted(
        refused=ledger.refused,
        accepted=ledger.accepted,
        points=dict(ledger.points),
        requests=ledger.requests,
        batches_sent=ledger.batches_sent,
        unmatched=ledger.unmatched,
        settling=ledger.settling,
        aborted=run.failure,
        interrupted=should_stop(),
        outcomes=ledger.outcomes() if ledger.keep_accepted else None,
    )
