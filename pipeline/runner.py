"""The runner: load -> validate -> chunk -> post -> report, each stage's result collected."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from pipeline import chunk as chunking
from pipeline import report
from pipeline.config import Config
from pipeline.engage import EngageClient
from pipeline.errors import EXIT_ABORTED, EXIT_OK, EXIT_REJECTS, PipelineError
from pipeline.load import load
from pipeline.post import OUTCOME_SCHEMA, Posted, post
from pipeline.validate import Rules, Validated, validate

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


@dataclass
class RunReport:
    summary: dict[str, Any]
    rejects: pl.DataFrame
    message: str = ""
    error: PipelineError | None = None

    @property
    def exit_code(self) -> int:
        return int(self.summary["exit_code"])


def run(
    settings: RunSettings,
    client: EngageClient | None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunReport:
    """Import ``settings.input`` through ``client`` (None: validate only, no network)."""
    started, clock = datetime.now(UTC), time.perf_counter()
    cfg = settings.config
    loaded = load(settings.input, cfg.input.format, cfg.input.delimiter, cfg.columns)
    import_id = settings.import_id or loaded.sha256[:16]
    structlog.contextvars.bind_contextvars(import_id=import_id)
    log.info("loaded", input=str(settings.input), format=loaded.format, rows=loaded.frame.height)
    known = _definitions(client, cfg) if loaded.frame.height else None
    validated = validate(loaded.frame, _rules(settings, known))
    log.info("validated", valid=validated.valid.height, invalid=validated.invalid.height)
    batches = list(
        chunking.chunk(validated.valid, settings.batch_size or cfg.batching.batch_size, import_id)
    )
    if settings.dry_run or client is None:
        posted = Posted(pl.DataFrame(schema=OUTCOME_SCHEMA))
    else:
        posted = post(batches, client, should_stop)
    rejects = report.rejects(loaded.frame, validated.invalid, posted.outcomes)
    summary = _summary(
        settings, import_id, loaded.sha256, loaded.frame.height, validated, batches, posted, rejects
    )
    summary.update(
        started_at=started.isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - clock, 3),
    )
    return RunReport(summary, rejects, _message(summary), posted.aborted)


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


def _summary(
    settings: RunSettings,
    import_id: str,
    sha256: str,
    read: int,
    validated: Validated,
    batches: list[chunking.Batch],
    posted: Posted,
    rejects: pl.DataFrame,
) -> dict[str, Any]:
    outcomes = posted.outcomes
    accepted = int(outcomes["accepted"].sum()) if outcomes.height else 0
    by_stage = {s: int((rejects["stage"] == s).sum()) for s in report.STAGES}
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
    if posted.aborted is not None:
        code, status = EXIT_ABORTED, "aborted"
    else:
        code = EXIT_REJECTS if rejects.height else EXIT_OK
        status = "dry run" if settings.dry_run else "completed"
    return {
        "import_id": import_id,
        "input": str(settings.input),
        "input_sha256": sha256,
        "status": status,
        "dry_run": settings.dry_run,
        "rows_read": read,
        "rows_valid": validated.valid.height,
        "rows_invalid": validated.invalid.height,
        "rows_sent": int(outcomes.filter(pl.col("stage").ne_missing("unsent")).height),
        "rows_accepted": accepted,
        "rows_rejected": rejects.height,
        "rejected_by_stage": by_stage,
        "batches_total": len(batches),
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


def _message(summary: dict[str, Any]) -> str:
    if summary["rows_read"] == 0:
        return "nothing to import: the input has a header but no rows"
    if summary["status"] == "aborted":
        return f"aborted: {summary['error']}"
    if summary["dry_run"]:
        return (
            f"dry run: {summary['rows_valid']} rows would be sent in "
            f"{summary['batches_total']} batches; {summary['rows_invalid']} rows rejected"
        )
    return (
        f"{summary['rows_accepted']} of {summary['rows_read']} rows accepted; "
        f"{summary['rows_rejected']} rejected"
    )
