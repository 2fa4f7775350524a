"""The nightly import as an Airflow task (Airflow is not a dependency of points-import).

The task fails (and Airflow retries it) when the import stopped early; a finished import with
rows to look at pushes its summary to XCom and succeeds, or fails if you prefer: see
``on_rejects``. The journal must live on storage every run of the DAG sees (a volume), or a
retried run cannot resume the one before it.
"""

from __future__ import annotations

from datetime import datetime

from airflow.decorators import dag, task


@dag(schedule="15 2 * * *", start_date=datetime(2026, 12, 1), catchup=False)
def points_import_nightly() -> None:
    @task(retries=3)
    def import_points(ds: str | None = None) -> dict:
        from pipeline.api import run_import  # ImportAborted fails the task: Airflow retries

        summary = run_import(
            f"/data/incoming/points-{ds}.csv",
            "/etc/points-import/prod.toml",  # ENGAGE_BASE_URL and ENGAGE_API_KEY from the env
            summary=f"/data/reports/{ds}/summary.json",
            state_dir="/data/state",
        )
        if summary.exit_code == 3:  # some rows need a look: the report says which
            print(f"{summary.rows_rejected} rows rejected, see {summary.rejects_path}")
        return {"import": summary.import_id, "accepted": summary.rows_accepted,
                "rejected": summary.rows_rejected, "rejects": str(summary.rejects_path)}

    import_points()


points_import_nightly()
