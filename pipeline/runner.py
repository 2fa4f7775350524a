"""The runner: load -> validate -> chunk -> post -> report, each stage's result collected.

With a journal, an import is registered with its plan before anything is sent, one process
at a time holds it, and a later run of the same import resumes it (or, finished, reports it
again without sending anything).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from pipeline import chunk as chunking
from pipeline import report
from pipeline.config import Config
from pipeline.engage import EngageClient
from pipeline.errors import (
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_REJECTS,
    ConfigError,
    JournalError,
    PipelineError,
)
from pipeline.journal import ImportRecord, Journal, plan_sha256
from pipeline.load import SOURCE_ROW, Loaded, load
from pipeline.post import OUTCOME_SCHEMA, Posted, Refused, Resume, post
from pipeline.validate import Rules, Validated, validate

log = structlog.get_logger("pipeline.runner")
FINISHED = "finished"


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


@dataclass
class RunReport:
    summary: dict[str, Any]
    rejects: pl.DataFrame
    message: str = ""
    replayed: bool = False  # a finished import reported again from its journal

    @property
    def exit_code(self) -> int:
        return int(self.summary["exit_code"])


@dataclass(frozen=True)
class _Plan:
    loaded: Loaded
    import_id: str
    validated: Validated
    batches: list[chunking.Batch]
    record: ImportRecord | None
    definitions: frozenset[int] | None


def run(
    settings: RunSettings,
    client: EngageClient | None,
    should_stop: Callable[[], bool] = lambda: False,
    journal: Journal | None = None,
) -> RunReport:
    """Import ``settings.input`` through ``client`` (None: validate only, no network)."""
    started, clock = datetime.now(UTC), time.perf_counter()
    plan = _plan(settings, client, journal)
    if settings.dry_run or client is None:
        posted, note = Posted(pl.DataFrame(schema=OUTCOME_SCHEMA)), ""
    elif journal is None:
        posted, note = post(plan.batches, client, should_stop), ""
    else:
        plan, posted, note = _journaled(settings, plan, client, should_stop, journal)
    result = _report(settings, plan, posted, started, clock, note)
    if journal is not None and not settings.dry_run and client is not None:
        _record_outcome(journal, plan, result)
    return result


def settled(settings: RunSettings, journal: Journal) -> tuple[pl.DataFrame, pl.DataFrame]:
    """An import's valid rows and every outcome its journal holds, sending nothing."""
    plan = _plan(settings, None, journal)
    if plan.record is None:
        raise JournalError(f"no import {plan.import_id} in the journal {journal.path}")
    posted = post(plan.batches, None, resume=_resume(journal, plan.import_id, settings))
    return plan.validated.valid, posted.outcomes


def _plan(settings: RunSettings, client: EngageClient | None, journal: Journal | None) -> _Plan:
    cfg = settings.config
    loaded = load(settings.input, cfg.input.format, cfg.input.delimiter, cfg.columns)
    import_id = settings.import_id or loaded.sha256[:16]
    structlog.contextvars.bind_contextvars(import_id=import_id)
    log.info("loaded", input=str(settings.input), format=loaded.format, rows=loaded.frame.height)
    record = journal.find(import_id) if journal else None
    if record is not None and record.input_sha256 != loaded.sha256:
        raise JournalError(
            f"import {import_id} was started from another file ({record.input_path}, "
            f"sha256 {record.input_sha256[:12]}…); give this one another --import-id"
        )
    if record is not None and record.definitions is not None:
        known: frozenset[int] | None = frozenset(record.definitions)  # as the plan was made
    else:
        known = _definitions(client, cfg) if loaded.frame.height else None
    validated = validate(loaded.frame, _rules(settings, known))
    log.info("validated", valid=validated.valid.height, invalid=validated.invalid.height)
    size = settings.batch_size or cfg.batching.batch_size
    batches = list(chunking.chunk(validated.valid, size, import_id))
    return _Plan(loaded, import_id, validated, batches, record, known)


def _definitions(client: EngageClient | None, cfg: Config) -> frozenset[int] | None:
    if client is None or not cfg.engage.check_definitions:
        return None
    ids = frozenset(client.definition_ids())
    log.info("definitions fetched", count=len(ids))
    return ids


def _rules(settings: RunSettings, known: frozenset[int] | None) -> Rules:
    v = settings.config.validation
    return Rules(
        timezone=settings.timezone,
        allow_duplicates=v.allow_duplicates,
        max_source_length=v.max_source_length,
        max_description_length=v.max_description_length,
        definition_ids=known,
    )


# --- with a journal ------------------------------------------------------------------


def _journaled(
    settings: RunSettings,
    plan: _Plan,
    client: EngageClient,
    should_stop: Callable[[], bool],
    journal: Journal,
) -> tuple[_Plan, Posted, str]:
    note = ""
    if plan.record is not None and plan.record.status == FINISHED:
        if not settings.force:
            return plan, _replayed(plan, journal, settings), _finished_note(plan.record)
        plan = _forced(settings, plan, journal)
        note = f"--force: sent again as import {plan.import_id}"
    _register(journal, plan, settings)
    journal.acquire(plan.import_id)
    try:
        journal.set_status(plan.import_id, "running")
        resume = _resume(journal, plan.import_id, settings)
        posted = post(
            plan.batches, client, should_stop, _JournalRecorder(journal, plan.import_id), resume
        )
    finally:
        journal.release(plan.import_id)
    return plan, posted, note


def _replayed(plan: _Plan, journal: Journal, settings: RunSettings) -> Posted:
    """A finished import: every row's outcome from the journal, nothing sent."""
    return post(plan.batches, None, resume=_resume(journal, plan.import_id, settings))


def _finished_note(record: ImportRecord) -> str:
    return (
        f"import {record.import_id} already finished ({record.updated_at}, exit "
        f"{record.exit_code}): nothing sent; --force sends it again"
    )


def _forced(settings: RunSettings, plan: _Plan, journal: Journal) -> _Plan:
    """The same rows again, as a new import whose keys Engage has never seen."""
    taken = {r.import_id for r in journal.imports()}
    n = next(i for i in range(1, 10_000) if f"{plan.import_id}+force{i}" not in taken)
    import_id = f"{plan.import_id}+force{n}"
    rows = plan.validated.valid.height
    message = (
        f"import {plan.import_id} already finished; --force sends its {rows} valid rows "
        f"again in {len(plan.batches)} batches as import {import_id}. Engage will hold "
        "them twice if it kept the first import. Go on?"
    )
    if not settings.confirm(message):
        raise ConfigError("--force not confirmed: nothing sent")
    size = settings.batch_size or settings.config.batching.batch_size
    batches = list(chunking.chunk(plan.validated.valid, size, import_id))
    return _Plan(plan.loaded, import_id, plan.validated, batches, None, plan.definitions)


def _register(journal: Journal, plan: _Plan, settings: RunSettings) -> None:
    steps = _plan_rows(plan.batches)
    if plan.record is not None:
        if plan.record.plan_sha256 != plan_sha256(steps):
            raise JournalError(
                f"import {plan.import_id} was planned with other settings (batch size, time "
                "zone, columns or validation); re-run it with the same config, or give it "
                "another --import-id"
            )
        return
    try:
        journal.register(
            plan.import_id,
            str(settings.input),
            plan.loaded.sha256,
            steps,
            _shaping(settings),
            _sorted(plan.definitions),
            plan.loaded.frame.height,
        )
    except JournalError as exc:
        if isinstance(exc.__cause__, sqlite3.IntegrityError):
            raise JournalError(
                f"import {plan.import_id} was registered by another process just now; let it run"
            ) from exc
        raise


def _sorted(ids: frozenset[int] | None) -> list[int] | None:
    return None if ids is None else sorted(ids)


def _plan_rows(batches: Sequence[chunking.Batch]) -> list[tuple[int, str, int, str]]:
    return [(b.seq, b.key, b.rows.height, hashlib.sha256(b.body).hexdigest()) for b in batches]


def _shaping(settings: RunSettings) -> dict[str, Any]:
    cfg = settings.config
    return {
        "batch_size": settings.batch_size or cfg.batching.batch_size,
        "timezone": settings.timezone,
        "columns": cfg.columns,
        "validation": cfg.validation.model_dump(),
        "format": cfg.input.format,
    }


def _resume(journal: Journal, import_id: str, settings: RunSettings) -> Resume:
    refused: dict[tuple[int, str], Refused] = {}
    for row, seq, part, stage, reason in journal.refused(import_id):
        refused.setdefault((seq, part), []).append((row, stage, reason))
    return Resume(journal.batches(import_id), refused, settings.config.journal.idempotency_window)


def _record_outcome(journal: Journal, plan: _Plan, result: RunReport) -> None:
    if result.replayed:
        return
    status = {"completed": FINISHED}.get(result.summary["status"], result.summary["status"])
    journal.finish(plan.import_id, result.summary, result.exit_code, status)


class _JournalRecorder:
    """The journal as post's recorder."""

    def __init__(self, journal: Journal, import_id: str) -> None:
        self.journal = journal
        self.import_id = import_id

    def sending(self, batch: chunking.Batch) -> None:
        self.journal.sending(self.import_id, batch.seq, batch.part)

    def settled(
        self, batch: chunking.Batch, state: str, status: int | None, refused: Refused
    ) -> None:
        self.journal.settle(
            self.import_id, batch.seq, batch.part, state, status, refused, batch.key
        )

    def divided(
        self, batch: chunking.Batch, state: str, children: Sequence[chunking.Batch], explicit: bool
    ) -> None:
        self.journal.divide(
            self.import_id,
            batch.seq,
            batch.part,
            state,
            [
                (
                    c.part,
                    c.key,
                    c.rows.height,
                    hashlib.sha256(c.body).hexdigest(),
                    c.rows[SOURCE_ROW].to_list() if explicit else None,
                )
                for c in children
            ],
        )


# --- the report ----------------------------------------------------------------------


def _report(
    settings: RunSettings, plan: _Plan, posted: Posted, started: datetime, clock: float, note: str
) -> RunReport:
    rejects = report.rejects(plan.loaded.frame, plan.validated.invalid, posted.outcomes)
    finished = plan.record is not None and plan.record.status == FINISHED
    if (
        finished
        and plan.record
        and plan.record.summary
        and not settings.force
        and not settings.dry_run
    ):
        return RunReport(plan.record.summary, rejects, note, replayed=True)
    summary = _summary(settings, plan, posted, rejects)
    summary.update(
        started_at=started.isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - clock, 3),
    )
    return RunReport(summary, rejects, "; ".join(filter(None, [_message(summary), note])))


def _summary(
    settings: RunSettings, plan: _Plan, posted: Posted, rejects: pl.DataFrame
) -> dict[str, Any]:
    outcomes, validated, read = posted.outcomes, plan.validated, plan.loaded.frame.height
    accepted = int(outcomes["accepted"].sum()) if outcomes.height else 0
    settled = (
        validated.valid.height + validated.invalid.height
        if settings.dry_run
        else accepted + rejects.height
    )
    if settled != read:
        raise PipelineError(
            f"row count check failed: read {read}, settled {settled}; "
            "this is a bug, please report it with the input's shape"
        )
    code, status = _outcome(settings, posted, rejects)
    return {
        "import_id": plan.import_id,
        "input": str(settings.input),
        "input_sha256": plan.loaded.sha256,
        "status": status,
        "dry_run": settings.dry_run,
        "rows_read": read,
        "rows_valid": validated.valid.height,
        "rows_invalid": validated.invalid.height,
        "rows_sent": int(outcomes.filter(pl.col("stage").ne_missing("unsent")).height),
        "rows_accepted": accepted,
        "rows_rejected": rejects.height,
        "rejected_by_stage": {s: int((rejects["stage"] == s).sum()) for s in report.STAGES},
        "batches_total": len(plan.batches),
        "batches_sent": posted.batches_sent,
        "requests": posted.requests,
        "not_accepted_unmatched": posted.unmatched,
        "points_by_definition": report.points_by_definition(validated.valid, outcomes)
        if outcomes.height
        else {},
        "rejects_path": str(settings.rejects_path) if settings.rejects_path else None,
        "error": str(posted.aborted) if posted.aborted else None,
        "exit_code": code,
    }


def _outcome(settings: RunSettings, posted: Posted, rejects: pl.DataFrame) -> tuple[int, str]:
    if posted.interrupted:
        return EXIT_ABORTED, "interrupted"
    if posted.aborted is not None:
        return EXIT_ABORTED, "aborted"
    code = EXIT_REJECTS if rejects.height else EXIT_OK
    return code, "dry run" if settings.dry_run else "completed"


def _message(summary: dict[str, Any]) -> str:
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
