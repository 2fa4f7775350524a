"""The documented field rules as a pandera schema over the helper columns ``parse`` adds.

Every check is a polars expression, true for the rows that pass: ``passes(rules)`` runs them
all as one pass over a piece, and pandera itself runs only on the rows that failed any
(usually few, and gathered across pieces), to say every reason each one failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from pipeline.engage import FIELDS
from pipeline.load import LOAD_ERROR, SOURCE_ROW
from pipeline.validate.parse import DATE_FIELDS, GUID

REASON = "reason"
MALFORMED = "the row is malformed"  # stands for the row's _loadError
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # C0 and C1, but tab, LF and CR
MAX_DIGITS = 15  # Engage keeps amounts as doubles: 15 significant digits survive exactly
DATE_HINT = "an ISO 8601 date or date-time, e.g. 2026-11-26 or 2026-11-26T10:00:00+01:00"


@dataclass(frozen=True)
class Rules:
    """What a valid row is, beyond the fixed rules."""

    timezone: str = "UTC"  # IANA zone for date-times without an offset
    allow_duplicates: bool = False
    max_source_length: int = 255
    max_description_length: int = 1000
    definition_ids: frozenset[int] | None = None  # the tenant's, when known


@cache
def passes(rules: Rules) -> pl.Expr:
    """True for the rows that pass every check."""
    return pl.all_horizontal([_expression(c).fill_null(False) for c in _checks(rules)])


def describe(failing: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """``failing`` (prepared rows that failed a check) as sourceRow, FIELDS as in the input
    and every reason each failed, ``; ``-joined in field order."""
    failing = failing.with_row_index("_i")
    found = pl.DataFrame(schema={"_i": pl.UInt32, REASON: pl.String})
    try:
        _schema(rules).validate(failing, lazy=True)
    except pa.errors.SchemaErrors as exc:
        found = _reasons_from(exc.failure_cases, failing)
    return failing.join(found, on="_i", how="left").select(
        SOURCE_ROW, *FIELDS, pl.col(REASON).fill_null("failed a rule")
    )


def _checks(rules: Rules) -> list[pa.Check]:
    schema = _schema(rules)
    return [*schema.checks, *(c for col in schema.columns.values() for c in col.checks)]


def _significant_digits(amount: pl.Expr) -> pl.Expr:
    """Of a canonical amount, from the first non-zero digit on: ``0.0012`` has 2, ``1200`` has 4.

    Counting an integer's trailing zeros keeps every amount under 1e15: a bigger one is a
    mistake (a card number in the amount column), and would not fit the report's sums.
    """
    return amount.str.strip_chars_start("-0.").str.replace(".", "", literal=True).str.len_bytes()


def _blank(field: str) -> pl.Expr:
    return pl.col(field).is_null() | (pl.col(field).str.strip_chars() == "")


def _check(expr: pl.Expr, error: str) -> pa.Check:
    """A pandera check from a polars expression that is true for the rows that pass."""

    def run(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(expr.fill_null(False))

    run.polars_expr = expr  # type: ignore[attr-defined]  # for the one-pass fast path
    return pa.Check(run, error=error, ignore_na=False)


def _expression(check: pa.Check) -> pl.Expr:
    expr: pl.Expr = vars(check._check_fn)["polars_expr"]
    return expr


def _required(field: str) -> pa.Check:
    return _check(~_blank(field), f"{field} is required")


def _text_checks(field: str, max_length: int) -> list[pa.Check]:
    s = pl.col(field)
    return [
        _required(field),
        _check(
            _blank(field) | (s.str.len_chars() <= max_length),
            f"{field} is longer than {max_length} characters",
        ),
        _check(_blank(field) | ~s.str.contains(CONTROL), f"{field} holds a control character"),
    ]


def _date_checks(field: str) -> list[pa.Check]:
    return [
        _check(
            _blank(field) | pl.col(f"_{field}").is_not_null(),
            f"{field} must be {DATE_HINT}, existing in the configured time zone",
        )
    ]


def _definition_checks(known: frozenset[int] | None) -> list[pa.Check]:
    checks = [
        _required("definitionId"),
        _check(
            _blank("definitionId") | (pl.col("_definitionId") > 0),
            "definitionId must be a positive whole number",
        ),
    ]
    if known is not None:
        shown = ", ".join(str(i) for i in sorted(known)[:20]) or "none"
        checks.append(
            _check(
                pl.col("_definitionId").is_null()
                | (pl.col("_definitionId") <= 0)
                | pl.col("_definitionId").is_in(sorted(known)),
                f"definitionId is not a point definition of this Engage tenant (known: {shown})",
            )
        )
    return checks


@cache
def _schema(rules: Rules) -> pa.DataFrameSchema:
    amount = pl.col("_amount")
    columns = {
        "contactId": [
            _required("contactId"),
            _check(
                _blank("contactId") | pl.col("_contactId").str.contains(GUID),
                "contactId must be a GUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            ),
        ],
        "amount": [
            _required("amount"),
            _check(
                _blank("amount") | amount.is_not_null(),
                "amount must be a number like 12 or -3.5 (a '.' for decimals)",
            ),
            _check(
                amount.is_null() | (_significant_digits(amount) <= MAX_DIGITS),
                f"amount has more than {MAX_DIGITS} significant digits",
            ),
        ],
        "definitionId": _definition_checks(rules.definition_ids),
        "source": _text_checks("source", rules.max_source_length),
        "description": _text_checks("description", rules.max_description_length),
        **{f: _date_checks(f) for f in DATE_FIELDS},
    }
    window = (
        pl.col("_validFrom").is_null()
        | pl.col("_validTo").is_null()
        | (pl.col("_validTo") > pl.col("_validFrom"))
    )
    return pa.DataFrameSchema(
        {
            name: pa.Column(pl.String, checks=checks, nullable=True)
            for name, checks in columns.items()
        },
        checks=[
            _check(window, "validTo must be after validFrom"),
            _check(pl.col(LOAD_ERROR).is_null(), MALFORMED),
        ],
    )


def _reasons_from(cases: pl.DataFrame, prepared: pl.DataFrame) -> pl.DataFrame:
    order = {name: rank for rank, name in enumerate(FIELDS)}
    load_errors = prepared.select(pl.col("_i"), pl.col(LOAD_ERROR).alias("_loadReason"))
    return (
        cases.filter(pl.col("index").is_not_null())
        .select(
            pl.col("index").cast(pl.UInt32).alias("_i"),
            pl.when(pl.col("check") == MALFORMED)
            .then(-1)  # the cause of the others: first
            .otherwise(pl.col("column").replace_strict(order, default=len(order)))
            .fill_null(len(order))
            .alias("_rank"),
            pl.col("check_number").fill_null(0).alias("_n"),
            pl.col("check").alias(REASON),
        )
        .join(load_errors, on="_i", how="left")
        .with_columns(
            pl.when(pl.col(REASON) == MALFORMED)
            .then(pl.col("_loadReason"))
            .otherwise(pl.col(REASON))
            .alias(REASON)
        )
        .unique(["_i", REASON])
        .sort("_i", "_rank", "_n")
        .group_by("_i", maintain_order=True)
        .agg(pl.col(REASON).str.join("; "))
    )
