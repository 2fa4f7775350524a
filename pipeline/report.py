"""Report: the rejects CSV, the summary (JSON and a table) from the stages' results.

The rejects report holds every row that did not get in: the API's eight fields as they were
in the input, then ``sourceRow``, ``stage`` (validation, server, batch, unsent), ``reason`` and
``idempotencyKey``. It is itself valid input: fix its rows and import it again.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import polars as pl
from rich.console import Console
from rich.table import Table

from pipeline.engage import FIELDS
from pipeline.load import SOURCE_ROW

REJECT_COLUMNS = (*FIELDS, SOURCE_ROW, "stage", "reason", "idempotencyKey")
STAGES = ("validation", "server", "batch", "unsent")


def rejects(invalid: list[pl.DataFrame], refused: pl.DataFrame) -> pl.DataFrame:
    """Every row not accepted, with the values it had in the input, in input order."""
    parts = [
        frame.select(
            SOURCE_ROW,
            *FIELDS,
            pl.lit("validation").alias("stage"),
            "reason",
            pl.lit(None, pl.String).alias("idempotencyKey"),
        )
        for frame in invalid
    ]
    parts.append(refused.select(SOURCE_ROW, *FIELDS, "stage", "reason", "idempotencyKey"))
    return pl.concat(parts).sort(SOURCE_ROW).select(REJECT_COLUMNS)


def points(totals: dict[int, Decimal]) -> dict[str, int | float]:
    """Accepted points per definitionId, summed exactly, as JSON numbers."""
    return {str(d): _number(totals[d]) for d in sorted(totals)}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def write_rejects(frame: pl.DataFrame, path: Path) -> None:
    """Write the rejects CSV (a header only when there are none, so no stale file misleads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.select(REJECT_COLUMNS).write_csv(tmp)
    tmp.replace(path)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def render(summary: dict[str, Any], stream: TextIO) -> None:
    """The summary as a table, for a person (stderr)."""
    table = Table(title=f"points-import {summary['status']}", show_header=False)
    for label, key in (
        ("import", "import_id"),
        ("input", "input"),
        ("rows read", "rows_read"),
        ("rows valid", "rows_valid"),
        ("rows invalid", "rows_invalid"),
        ("rows sent", "rows_sent"),
        ("rows accepted", "rows_accepted"),
        ("rows rejected", "rows_rejected"),
        ("batches", "batches_total"),
        ("batches sent", "batches_sent"),
        ("duration (s)", "duration_s"),
        ("rejects report", "rejects_path"),
        ("exit code", "exit_code"),
    ):
        table.add_row(label, str(summary.get(key, "")))
    for stage, count in summary.get("rejected_by_stage", {}).items():
        if count:
            table.add_row(f"  rejected at {stage}", str(count))
    for definition, points in summary.get("points_by_definition", {}).items():
        table.add_row(f"points to definition {definition}", str(points))
    Console(file=stream, width=100, soft_wrap=True).print(table)
