"""The runner: load -> validate -> chunk -> post -> report, streamed, each stage's result
collected.

With a journal, an import is registered before anything is sent, its rows are sorted
against the rows other imports landed and claimed a piece at a time (``claims``), each batch
is recorded as it is planned, one process at a time holds the import, and a later run of the
same import resumes it (or, finished, reports it again without sending anything).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, astuple, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from pipeline import report
from pipeline.chunk import Batch
from pipeline.claims import Claims
from pipeline.config import Config
from pipeline.engage import EngageClient
from pipeline.errors import (
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_REJECTS,
    BatchRejectedError,
    ConfigError,
    JournalError,
    PipelineError,
)
from pipeline.grown import Continued, as_read, grown
from pipeline.journal import FINISHED, ImportRecord, Journal
from pipeline.journal.batches import Planned
from pipeline.load import Source, open_source
from pipeline.model import SOURCE_ROW
from pipeline.plan import Plan
from pipeline.post import Posted, Refused, Resume, Watch, post
from pipeline.validate.landed import Sorting

log = structlog.get_logger("pipeline.runner")


@dataclass(frozen=True)
class RunSettings:
    """One run, as the CLI resolved it from flags and config."""

    input: Path
    config: Config
    timezone: str
    import_id: str | None = None
    dry_run: bool = False
    batch_size: int | None = None
    rejects_path: Path | None = None
    force: bool = False
    confirm: Callable[[str], bool] = field(default=lambda message: False)
    continues: Continued | None = None  # an import of the file before it grew: read after it

    @property
    def size(self) -> int:
        return self.batch_size or self.config.batching.batch_size


@dataclass
class RunReport:
    summary: dict[str, Any]
    rejects: report.Rejects | None  # None: not made again (the import's rows were forgotten)
    message: str = ""
    replayed: bool = False  # a finished import reported again from its journal

    @property
    def exit_code(self) -> int:
        return int(self.summary["exit_code"])


class Progress(Watch):
    """Where a run reports its progress (the CLI shows it); by default, nowhere."""

    def rows_read(self, rows: int) -> None:
        pass

    def finished(self) -> None:
        """The run is over (a live display makes way for the outcome)."""


def run(
    settings: RunSettings,
    client: EngageClient | None,
    should_stop: Callable[[], bool] = lambda: False,
    journal: Journal | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Import ``settings.input`` through ``client`` (None: validate only, no network)."""
    started, clock = datetime.now(UTC), time.perf_counter()
    progress = progress or Progress()
    with open_source(
        settings.input, settings.config.input.format, settings.config.input.encoding
    ) as source:
        if journal is not None and not settings.import_id:
            source, continued = grown(journal, source, settings.input, settings.config)
            settings = replace(settings, continues=continued)
        import_id = settings.import_id or source.sha256[:16]
        structlog.contextvars.bind_contextvars(import_id=import_id)
        record, source = _record(journal, import_id, source, settings)
        settings = _as_planned(settings, record)
        plan = _plan(settings, source, import_id, client, record, progress)
        if settings.dry_run or client is None:
            posted = _drain(plan)
        elif journal is None:
            posted = post(plan.batches(), client, should_stop,
                          concurrency=settings.config.engage.concurrency,
                          watch=progress, keep_accepted=False)  # fmt: skip
        else:
            return _journaled(settings, plan, record, client, should_stop, journal, progress,
                              started, clock)  # fmt: skip
    return _report(settings, plan, posted, started, clock, "")


def _as_planned(settings: RunSettings, record: ImportRecord | None) -> RunSettings:
    """An import continuing an earlier one reads on from where it was planned to."""
    if record is None or "continues" not in record.settings:
        return settings
    return replace(settings, continues=Continued(*record.settings["continues"]))


def _record(
    journal: Journal | None, import_id: str, source: Source, settings: RunSettings
) -> tuple[ImportRecord | None, Source]:
    """The journal's record of the import, checked against its file and settings, and the
    part of the file it read (all of it, unless the file grew since)."""
    record = journal.find(import_id) if journal else None
    source = as_read(record, source) if record else source
    if record is not None and record.input_sha256 != source.sha256:
        raise JournalError(
            f"import {import_id} was started from another file ({record.input_path}, "
            f"sha256 {record.input_sha256[:12]}…); finish it from that file. Another "
            "--import-id sends every row of this file again, those that landed too: only for "
            "a file that holds none of them"
        )
    forced = settings.force and record is not None and record.status == FINISHED
    if record is not None and not forced and not settings.dry_run:
        _same_shaping(record, settings)
    return record, source


def _same_shaping(record: ImportRecord, settings: RunSettings) -> None:
    """An import is planned (batches, keys, reasons) by its settings: re-run, it must be
    with the same ones, or its report would not be its own (and rows fed back from it could
    land twice)."""
    now = json.loads(json.dumps(_shaping(settings)))
    recorded = {**ADDED_SINCE, **record.settings}  # what an older version did not record
    differ = [name for name, value in now.items() if recorded.get(name) != value]
    if differ:
        was = ", ".join(f"{name} {recorded.get(name)!r}" for name in differ)
        raise JournalError(
            f"import {record.import_id} was planned with {was}; re-run it with the same"
            f" settings (now: {', '.join(f'{n} {now[n]!r}' for n in differ)})"
        )


def _plan(
    settings: RunSettings,
    source: Source,
    import_id: str,
    client: EngageClient | None,
    record: ImportRecord | None,
    progress: Progress,
) -> Plan:
    known: list[frozenset[int] | None] = []

    def definitions() -> frozenset[int] | None:
        if not known:
            recorded = record.definitions if record else None
            known.append(
                frozenset(recorded)
                if recorded is not None
                else _fetch_definitions(client, settings.config)
            )
        return known[0]

    after = settings.continues.through_row if settings.continues else 0
    return Plan(source, import_id, settings.config, settings.timezone, settings.size,
                definitions, on_read=progress.rows_read, skip_through=after)  # fmt: skip


def _fetch_definitions(client: EngageClient | None, cfg: Config) -> frozenset[int] | None:
    if client is None or not cfg.engage.check_definitions:
        return None
    try:
        ids = frozenset(client.definition_ids())
    except BatchRejectedError as exc:  # no such endpoint here: Engage still reports unknown ids
        log.warning("point definitions can't be read; rows are not checked against them",
                    status=exc.status)  # fmt: skip
        return None
    log.info("definitions fetched", count=len(ids))
    return ids


def _drain(plan: Plan) -> Posted:
    """A dry run: every batch planned (bodies and keys made), none sent."""
    for _ in plan.batches():
        pass
    return Posted()


# --- with a journal ------------------------------------------------------------------


def _journaled(
    settings: RunSettings, plan: Plan, record: ImportRecord | None, client: EngageClient,
    should_stop: Callable[[], bool], journal: Journal, progress: Progress,
    started: datetime, clock: float,
) -> RunReport:  # fmt: skip
    forgotten = journal.forget(settings.config.journal.remember_days)
    if forgotten:
        log.info("rows of old imports forgotten", imports=forgotten,
                 remember_days=settings.config.journal.remember_days)  # fmt: skip
        record = journal.find(plan.import_id) if record else None
    forced = False
    if record is not None and record.status == FINISHED:
        if not settings.force:
            return _replayed(settings, plan, record, journal, started, clock)
        plan, record = _forced(settings, plan, journal), None
        forced = True
    if record is None:
        _register(journal, plan, settings, client.base_url)
    elif record.tenant is None:
        journal.set_tenant(plan.import_id, client.base_url)
    journal.acquire(plan.import_id)
    try:
        plan.sort = _claims(settings, plan, record, journal, forced=forced).sort
        journal.set_status(plan.import_id, "running")
        posted = post(_recorded(journal, plan), client, should_stop,
                      _JournalRecorder(journal, plan.import_id),
                      _resume(journal, plan.import_id, settings),
                      settings.config.engage.concurrency, progress,
                      keep_accepted=False)  # fmt: skip
        note = f"--force: sent again as import {plan.import_id}" if settings.force else ""
        result = _report(settings, plan, posted, started, clock, note)
        status = {"completed": FINISHED}.get(result.summary["status"], result.summary["status"])
        journal.finish(plan.import_id, result.summary, result.exit_code, status)
    except Exception as exc:  # the input broke off mid-way, say: not "running" for ever
        journal.set_status(plan.import_id, "aborted", str(exc) or type(exc).__name__)
        raise
    finally:
        journal.release(plan.import_id)
    return result


def _claims(
    settings: RunSettings,
    plan: Plan,
    record: ImportRecord | None,
    journal: Journal,
    write: bool = True,
    forced: bool = False,
) -> Claims:
    """How the import's rows are sorted against the landed rows (and claimed, ``write``)."""
    how = Sorting(
        import_id=plan.import_id,
        claimed_through=record.claimed_through if record else 0,
        id_column=settings.config.input.id_column,
        allow_twins=settings.config.validation.allow_twins,
        force=forced,  # a finished import sent again: every row is sent, whoever holds it
    )
    return Claims(journal, how, write)


def _replayed(
    settings: RunSettings, plan: Plan, record: ImportRecord, journal: Journal,
    started: datetime, clock: float,
) -> RunReport:  # fmt: skip
    """A finished import run again: its report made again from the journal, nothing sent."""
    note = _finished_note(record)
    if record.forgotten:  # which rows it sent is not known any more: no report to make again
        note += f"; its rows were forgotten ({_FORGOTTEN}): its rejects report is not made again"
        return RunReport(record.summary or {}, None, note, replayed=True)
    plan.sort = _claims(settings, plan, record, journal, write=False).sort
    posted = post(plan.batches(), None, resume=_resume(journal, plan.import_id, settings),
                  keep_accepted=False)  # fmt: skip
    result = _report(settings, plan, posted, started, clock, note)
    return replace(result, summary=record.summary or result.summary, replayed=True)


_FORGOTTEN = "it finished longer ago than [journal] remember_days"


def _recorded(journal: Journal, plan: Plan) -> Iterator[Batch]:
    """The plan's batches, each recorded (or checked against its record) before it is sent:
    a piece's batches in one transaction."""
    recorded = False
    for batches in plan.pieces():
        if not recorded and batches:
            known = plan.definitions()
            if known is not None:
                journal.set_definitions(plan.import_id, sorted(known))
            recorded = True
        journal.plan_batches(plan.import_id, [_planned(b) for b in batches])
        yield from batches


def _planned(batch: Batch) -> Planned:
    rows = batch.rows[SOURCE_ROW]
    digest = hashlib.sha256(batch.body).hexdigest()
    return Planned(batch.seq, batch.key, batch.rows.height, digest, rows[0], rows[-1])


def _finished_note(record: ImportRecord) -> str:
    return (
        f"import {record.import_id} already finished ({record.updated_at}, exit "
        f"{record.exit_code}): nothing sent; --force sends it again"
    )


def _forced(settings: RunSettings, plan: Plan, journal: Journal) -> Plan:
    """The same rows again, as a new import whose keys Engage has never seen."""
    taken = {r.import_id for r in journal.imports()}
    n = next(i for i in range(1, 10_000) if f"{plan.import_id}+force{i}" not in taken)
    import_id = f"{plan.import_id}+force{n}"
    summary = (journal.find(plan.import_id) or _missing(plan.import_id)).summary or {}
    message = (
        f"import {plan.import_id} already finished; --force sends its "
        f"{summary.get('rows_valid', 'valid')} valid rows again as import {import_id}. "
        "Engage will hold them twice if it kept the first import. Go on?"
    )
    if not settings.confirm(message):
        raise ConfigError("--force not confirmed: nothing sent")
    return replace(plan, import_id=import_id, tally=type(plan.tally)())


def _missing(import_id: str) -> ImportRecord:
    raise JournalError(f"import {import_id} vanished from the journal")


def _register(journal: Journal, plan: Plan, settings: RunSettings, tenant: str) -> None:
    try:
        source = plan.source  # its bytes as read (not a gzip's): a grown file's first ones
        size = source.size if source.data == source.path else None
        journal.register(plan.import_id, str(settings.input.resolve()), source.sha256,
                         _shaping(settings), tenant, input_bytes=size)  # fmt: skip
    except JournalError as exc:
        if isinstance(exc.__cause__, sqlite3.IntegrityError):
            raise JournalError(
                f"import {plan.import_id} was registered by another process just now; let it run"
            ) from exc
        raise


ADDED_SINCE = {"id_column": ""}  # settings that shape a plan, with what older plans had


def _shaping(settings: RunSettings) -> dict[str, Any]:
    """The settings that shape an import's batches (allow_twins does not: the rows an import
    sorted are sorted as then, on every run of it)."""
    cfg = settings.config
    return {
        "batch_size": settings.size,
        "timezone": settings.timezone,
        "columns": cfg.columns,
        "validation": cfg.validation.model_dump(exclude={"allow_twins"}),
        "format": cfg.input.format,
        "id_column": cfg.input.id_column,
    } | ({"continues": astuple(settings.continues)} if settings.continues else {})


def _resume(journal: Journal, import_id: str, settings: RunSettings) -> Resume:
    refused = partial(journal.refused_in, import_id)
    return Resume(journal.batches(import_id), refused, settings.config.journal.idempotency_window)


class _JournalRecorder:
    """The journal as post's recorder."""

    def __init__(self, journal: Journal, import_id: str) -> None:
        self.journal = journal
        self.import_id = import_id

    def sending(self, batch: Batch) -> None:
        self.journal.sending(self.import_id, batch.seq, batch.part)

    def settled(
        self, batch: Batch, state: str, status: int | None, refused: Refused, unmatched: int = 0
    ) -> None:
        self.journal.settle(self.import_id, batch.seq, batch.part, state, status, refused,
                            batch.key, unmatched=unmatched)  # fmt: skip

    def divided(self, batch: Batch, state: str, children: Sequence[Batch],
                explicit: bool) -> None:  # fmt: skip
        self.journal.divide(self.import_id, batch.seq, batch.part, state, [
            (c.part, c.key, c.rows.height, hashlib.sha256(c.body).hexdigest(),
             c.rows[SOURCE_ROW].to_list() if explicit else None) for c in children])  # fmt: skip


def settled(settings: RunSettings, journal: Journal) -> tuple[pl.DataFrame, Posted]:
    """An import's valid rows and what its journal says became of them, sending nothing."""
    with open_source(
        settings.input, settings.config.input.format, settings.config.input.encoding
    ) as source:
        import_id = settings.import_id or source.sha256[:16]
        record, source = _record(journal, import_id, source, settings)
        if record is None:
            raise JournalError(f"no import {import_id} in the journal {journal.path}")
        settings = _as_planned(settings, record)
        plan = _plan(settings, source, import_id, None, record, Progress())
        plan.sort = _claims(settings, plan, record, journal, write=False).sort
        batches = list(plan.batches())
        posted = post(
            batches, None, resume=_resume(journal, import_id, settings), keep_accepted=False
        )
    valid = pl.concat([b.rows for b in batches]) if batches else pl.DataFrame()
    return valid, posted


# --- the report ----------------------------------------------------------------------


def _report(settings: RunSettings, plan: Plan, posted: Posted, started: datetime,
            clock: float, note: str) -> RunReport:  # fmt: skip
    rejects = report.Rejects((plan.tally.invalid, posted.refused), settings.config.input.id_column)
    summary = _summary(settings, plan, posted, rejects)
    summary.update(started_at=started.isoformat(timespec="seconds"),
                   duration_s=round(time.perf_counter() - clock, 3))  # fmt: skip
    return RunReport(summary, rejects, "; ".join(filter(None, [_message(summary), note])))


def _summary(settings: RunSettings, plan: Plan, posted: Posted,
             rejects: report.Rejects) -> dict[str, Any]:  # fmt: skip
    tally, read = plan.tally, plan.tally.read
    settled = tally.landed + (
        tally.valid + tally.invalid_rows if settings.dry_run else posted.accepted + rejects.height
    )
    if settled != read:
        raise PipelineError(
            f"row count check failed: read {read}, settled {settled}; this is "
            "a bug, please report it"
        )
    changed = plan.source.changed()
    appended = changed and plan.source.earlier_part([(plan.source.size, plan.source.sha256)])
    code, status = _outcome(settings, posted, rejects, changed, tally.held, read)
    by_stage = rejects.by_stage()
    return {
        "import_id": plan.import_id,
        "input": str(settings.input),
        "input_sha256": plan.source.sha256,
        "input_changed": changed,  # what it holds now was not all read (it grew, say)
        "input_appended": bool(appended),  # rows only: run again, only they are read
        "continues": asdict(settings.continues) if settings.continues else None,
        "status": status,
        "dry_run": settings.dry_run,
        "rows_read": read,
        "rows_valid": tally.valid,
        "rows_invalid": tally.invalid_rows,
        "rows_sent": 0 if settings.dry_run else tally.valid - by_stage["unsent"],
        "rows_accepted": posted.accepted,
        "rows_already_landed": tally.landed,  # another import landed them: not sent again
        "already_landed_in": dict(sorted(tally.landed_in.items())),
        "rows_held_back": tally.held,  # another import may send them: rejected, to re-run it
        "rows_rejected": rejects.height,
        "rejected_by_stage": by_stage,
        "batches_total": tally.batches,
        "batches_sent": posted.batches_sent,
        "requests": posted.requests,
        "not_accepted_unmatched": posted.unmatched,
        "batches_settled": posted.settling.batches,  # in doubt past their keys' window
        "accounts_read": posted.settling.accounts,  # to settle them, each once
        "rows_found_applied": posted.settling.rows_found,
        "rows_resent": posted.settling.rows_resent,
        "points_by_definition": report.points(posted.points),
        "rejects_path": str(settings.rejects_path) if settings.rejects_path else None,
        "error": str(posted.aborted) if posted.aborted else None,
        "exit_code": code,
    }


def _outcome(
    settings: RunSettings,
    posted: Posted,
    rejects: report.Rejects,
    changed: bool,
    held: int,
    read: int,
) -> tuple[int, str]:
    if posted.interrupted:
        return EXIT_ABORTED, "interrupted"
    if posted.aborted is not None:
        return EXIT_ABORTED, "aborted"
    rejected = rejects.height - held
    share = Decimal(str(settings.config.alerts.max_rejected_share))
    tolerated = not settings.dry_run and rejected <= share * read  # a check tolerates nothing
    look = (rejected and not tolerated) or held or posted.unmatched or changed
    if rejected and not look:
        log.warning("rows rejected, within [alerts] max_rejected_share: exit 0", rows=rejected,
                    share=round(rejected / read, 6), max_share=float(share))  # fmt: skip
    return EXIT_REJECTS if look else EXIT_OK, "dry run" if settings.dry_run else "completed"


def _message(summary: dict[str, Any]) -> str:
    unmatched = summary["not_accepted_unmatched"]
    notes = [_outcome_message(summary)]
    if unmatched:
        notes.append(
            f"Engage refused {unmatched} rows that match no row sent (counted accepted; the"
            " log names their batches): check those batches in Engage"
        )
    landed = summary.get("rows_already_landed", 0)
    if landed:
        notes.append(
            f"{landed} rows had landed before (import {', '.join(summary['already_landed_in'])}):"
            " not sent again"
        )
    continued = summary.get("continues")
    if continued:
        notes.append(
            f"rows 1-{continued['through_row']} of {summary['input']} were import"
            f" {continued['import_id']}'s (the file grew since): only the rows after them were"
            " read"
        )
    if summary.get("input_appended"):
        notes.append(
            f"{summary['input']} holds rows appended after what was read ({summary['rows_read']}"
            " rows: what it held at the start, or an earlier import's part of it, now"
            " finished): run it again for them, only they are read"
        )
    elif summary.get("input_changed"):
        notes.append(
            f"{summary['input']} changed while it was read: only what it held at the start was"
            f" read ({summary['rows_read']} rows); run it again for the rows added since (those"
            " that landed are not sent again)"
        )
    return "; ".join(notes)


def _outcome_message(summary: dict[str, Any]) -> str:
    if summary["rows_read"] == 0:
        return "nothing to import: the input has a header but no rows"
    if summary["status"] in ("aborted", "interrupted"):
        return f"{summary['status']}: {summary['error'] or 'stopped by a signal'}"
    if summary["dry_run"]:
        return (
            f"dry run: {summary['rows_valid']} rows would be sent in "
            f"{summary['batches_total']} batches; {summary['rows_invalid']} rows rejected"
        )
    return (
        f"{summary['rows_accepted']} of {summary['rows_read']} rows accepted; "
        f"{summary['rows_rejected']} rejected"
    )
