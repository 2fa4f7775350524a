"""The nightly import as a Dagster asset (Dagster is not a dependency of points-import).

A run that stopped early raises ``ImportAborted`` and the materialization fails; a finished
one records its counts as metadata. Keep the journal (``state_dir``) on a volume every run
sees, so that a retried run resumes the one before it.
"""

from __future__ import annotations

from dagster import AssetExecutionContext, DailyPartitionsDefinition, MaterializeResult, asset

from pipeline.api import run_import


@asset(partitions_def=DailyPartitionsDefinition(start_date="2026-12-01"))
def loyalty_points_in_engage(context: AssetExecutionContext) -> MaterializeResult:
    day = context.partition_key
    summary = run_import(
        f"/data/incoming/points-{day}.csv",
        "/etc/points-import/prod.toml",  # ENGAGE_BASE_URL and ENGAGE_API_KEY from the env
        summary=f"/data/reports/{day}/summary.json",
        state_dir="/data/state",
    )
    return MaterializeResult(
        metadata={
            "import_id": summary.import_id,
            "rows_accepted": summary.rows_accepted,
            "rows_rejected": summary.rows_rejected,
            "rejects_report": str(summary.rejects_path),
            "exit_code": summary.exit_code,
        }
    )
