"""Report: the rejects CSV, the summary (JSON and a table) from the stages' results.

The rejects report holds every row that did not get in: the API's eight fields as they were
in the input, then ``sourceRow``, ``stage`` (validation, server, batch, unsent), ``reason`` and
``idempotencyKey``. It is itself valid input: fix its rows and import it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import polars as pl
from rich.console import Console
from rich.table import Table

from pipeline.errors import ReportError
from pipeline.model import FIELDS, ROW_ID, SOURCE_ROW
from pipeline.spool import Spool, in_order

REJECT_COLUMNS = (*FIELDS, SOURCE_ROW, "stage", "reason", "idempotencyKey")  # then the id column
STAGES = ("validation", "server", "batch", "unsent")


@dataclass(frozen=True)
class Rejects:
    """Every row not accepted, with the values it had in the input: the validation's and
    Engage's (spooled, read back in input order a part at a time)."""

    spools: tuple[Spool, ...]
    id_column: str = ""  # the input's id column: reported last, under its own name

    @property
    def height(self) -> int:
        return sum(spool.height for spool in self.spools)

    def by_stage(self) -> dict[str, int]:
        return {s: sum(spool.stages[s] for spool in self.spools) for s in STAGES}

    def parts(self) -> Iterator[pl.DataFrame]:
        """The rows in input order, in parts of bounded size."""
        for part in in_order(self.spools):
            yield part.select(*REJECT_COLUMNS, *self._id())

    def _id(self) -> list[pl.Expr]:
        return [pl.col(ROW_ID).alias(self.id_column)] if self.id_column else []

    def frame(self) -> pl.DataFrame:
        """All of them in one frame (for the small and for tests)."""
        parts = list(self.parts())
        return pl.concat(parts) if parts else self.empty()

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=REJECTS_SCHEMA).with_columns(
            pl.lit(None, pl.String).alias(self.id_column) for _ in self._id()
        )


REJECTS_SCHEMA = {**dict.fromkeys(REJECT_COLUMNS, pl.String), SOURCE_ROW: pl.Int64}


def points(totals: dict[int, Decimal]) -> dict[str, int | float]:
    """Accepted points per definitionId, summed exactly, as JSON numbers."""
    return {str(d): _number(totals[d]) for d in sorted(totals)}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def write_rejects(rejects: Rejects, path: Path) -> None:
    """Write the rejects CSV, a part at a time (a header only when there are none, so no
    stale file misleads)."""

    def write(out: BinaryIO) -> None:
        first = True
        for part in rejects.parts():
            part.write_csv(out, include_header=first)
            first = False
        if first:
            rejects.empty().write_csv(out)

    _replace(path, write)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    _replace(path, lambda out: out.write((json.dumps(summary, indent=2) + "\n").encode("utf-8")))


def _replace(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``path`` written whole, or left as it was (a full disk: no half file, no .tmp left)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as out:
            write(out)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(
            f"{path} can't be written ({exc.strerror or exc}); the run's outcome is above: make"
            " room and run the same command again (nothing is sent twice)"
        ) from exc


def settled_line(summary: dict[str, Any]) -> str:
    """What settling the batches an earlier run left in doubt took and found."""
    return (
        f"{summary['batches_settled']:,} batches, {summary['accounts_read']:,} accounts read:"
        f" {summary['rows_found_applied']:,} rows found applied, {summary['rows_resent']:,}"
        " re-sent"
    )


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
    if summary.get("batches_settled"):
        table.add_row("batches in doubt settled", settled_line(summary))
    for definition, points in summary.get("points_by_definition", {}).items():
        table.add_row(f"points to definition {definition}", str(points))
    Console(file=stream, width=100, soft_wrap=True).print(table)
