"""Report: the rejects CSV's shape, that it is valid input again, and exact point totals."""

from __future__ import annotations

import polars as pl

from pipeline.load import load
from pipeline.report import REJECT_COLUMNS, points_by_definition, rejects, write_rejects

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def raw(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "contactId": [GUID] * n,
            "amount": ["1,5"] + ["2"] * (n - 1),
            "definitionId": ["1"] * n,
            "timeStamp": [None] * n,
            "source": ["POS"] * n,
            "description": ['say "hi",\nthen go'] * n,
            "validFrom": [None] * n,
            "validTo": [None] * n,
            "sourceRow": list(range(1, n + 1)),
        },
        schema_overrides={c: pl.String for c in ("timeStamp", "validFrom", "validTo")},
    )


def outcomes(rows: list[tuple[int, bool, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(r, ok, stage, "why" if stage else None, "k1") for r, ok, stage, _ in rows],
        schema={
            "sourceRow": pl.Int64,
            "accepted": pl.Boolean,
            "stage": pl.String,
            "reason": pl.String,
            "idempotencyKey": pl.String,
        },
        orient="row",
    )


def test_rejects_hold_every_refused_row_in_input_order_with_its_input_values():
    """Validation and server rejects together, sorted by sourceRow, values as in the input."""
    invalid = pl.DataFrame({"sourceRow": [1], "reason": ["amount must be a number"]})
    done = outcomes([(2, True, None, None), (3, False, "server", None)])
    frame = rejects(raw(3), invalid, done)
    assert frame.columns == list(REJECT_COLUMNS)
    assert frame.select("sourceRow", "stage", "amount").rows() == [
        (1, "validation", "1,5"),
        (3, "server", "2"),
    ]
    assert frame["idempotencyKey"].to_list() == [None, "k1"]


def test_the_rejects_file_loads_again_as_input(tmp_path):
    """Written and loaded back, the rejects' eight fields are the same; extra columns ignored."""
    invalid = pl.DataFrame({"sourceRow": [1, 2], "reason": ["a", "b"]})
    frame = rejects(raw(2), invalid, outcomes([]))
    write_rejects(frame, tmp_path / "r.csv")
    again = load(tmp_path / "r.csv").frame
    fields = [c for c in REJECT_COLUMNS[:8]]
    assert again.select(fields).rows() == frame.select(fields).rows()
    assert again["sourceRow"].to_list() == [1, 2]  # its own row numbers, not the old ones


def test_points_by_definition_sums_exactly():
    """0.1 + 0.2 is 0.3 here, and whole sums are integers."""
    valid = pl.DataFrame(
        {
            "sourceRow": [1, 2, 3, 4],
            "amount": ["0.1", "0.2", "5", "-2"],
            "definitionId": [1, 1, 2, 2],
        }
    )
    done = outcomes(
        [
            (1, True, None, None),
            (2, True, None, None),
            (3, True, None, None),
            (4, False, "server", None),
        ]
    )
    assert points_by_definition(valid, done) == {"1": 0.3, "2": 5}
