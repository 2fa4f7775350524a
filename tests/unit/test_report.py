"""Report: the rejects CSV's shape, that it is valid input again, and exact point totals."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from pipeline.engage import FIELDS
from pipeline.load import load
from pipeline.post.ledger import REFUSED_SCHEMA, Ledger
from pipeline.report import REJECT_COLUMNS, points, rejects, write_rejects
from pipeline.validate import RAW

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def invalid(rows: list[int]) -> pl.DataFrame:
    """Invalid rows as validate gives them: sourceRow, the input's fields, reason."""
    data = {f: ["x"] * len(rows) for f in FIELDS}
    data["amount"] = ["1,5"] * len(rows)
    data["description"] = ['say "hi",\nthen go'] * len(rows)
    return pl.DataFrame(
        {"sourceRow": rows, **data, "reason": ["amount must be a number"] * len(rows)}
    )


def refused(rows: list[tuple[int, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(r, stage, "why", "k1", *(["2"] * len(FIELDS))) for r, stage in rows],
        schema=REFUSED_SCHEMA, orient="row",
    )  # fmt: skip


def test_rejects_hold_every_refused_row_in_input_order_with_its_input_values():
    """Validation and server rejects together, sorted by sourceRow, values as in the input."""
    frame = rejects([invalid([4]), invalid([1])], refused([(3, "server")]))
    assert frame.columns == list(REJECT_COLUMNS)
    assert frame.select("sourceRow", "stage", "amount").rows() == [
        (1, "validation", "1,5"), (3, "server", "2"), (4, "validation", "1,5")]  # fmt: skip
    assert frame["idempotencyKey"].to_list() == [None, "k1", None]


def test_the_rejects_file_loads_again_as_input(tmp_path):
    """Written and loaded back, the rejects' eight fields are the same; extra columns ignored."""
    frame = rejects([invalid([1, 2])], refused([]))
    write_rejects(frame, tmp_path / "r.csv")
    again = load(tmp_path / "r.csv").frame
    assert again.select(FIELDS).rows() == frame.select(FIELDS).rows()
    assert again["sourceRow"].to_list() == [1, 2]  # its own row numbers, not the old ones


def test_points_are_summed_exactly_per_definition():
    """0.1 + 0.2 is 0.3 in the ledger, and whole sums are integers in the summary."""
    ledger = Ledger()
    rows = pl.DataFrame({"sourceRow": [1, 2, 3], "amount": ["0.1", "0.2", "5"],
                         "definitionId": [1, 1, 2]}).with_columns(
        *[pl.lit(None, pl.String).alias(RAW[f]) for f in FIELDS])  # fmt: skip
    ledger.settle(rows, "k", None, None)
    assert ledger.points == {1: Decimal("0.3"), 2: Decimal("5")}
    assert points(ledger.points) == {"1": 0.3, "2": 5}
