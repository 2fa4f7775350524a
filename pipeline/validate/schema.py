"""The documented field rules as a pandera schema over the helper columns ``parse`` adds.

Every check is a polars expression, true for the rows that pass: ``passes(rules)`` runs them
all as one pass over a piece, and pandera itself runs only on the rows that failed any
(usually few, and gathered across pieces), to say every reason each one failed. Most checks
also have an aggregate that shows, cheaply, that every row of a piece passes (no null
amount, none longer than the limit): ``passing(piece, rules)`` runs those first and the
row by row checks only where they can't tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import polars as pl

from pipeline.model import FIELDS, KEPT, LOAD_ERROR, REASON, ROW_ID, SOURCE_ROW
from pipeline.validate.local import original
from pipeline.validate.parse import DATE_FIELDS

if TYPE_CHECKING:  # pandera is imported only when a row fails: a clean run needs no time for it
    import pandera.polars as pa
    from pandera.api.polars.types import PolarsData

MALFORMED = "the row is malformed"  # stands for the row's _loadError
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # C0 and C1, but tab, LF and CR
MAX_DIGITS = 15  # Engage keeps amounts as doubles: 15 significant digits survive exactly
YEARS_1_TO_9999 = (  # epoch seconds, UTC
    int(datetime(1, 1, 1, tzinfo=UTC).timestamp()),
    int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()),
)
SAFE_YEARS = (  # any instant between, written with any offset, has a year of 1001 to 9998
    int(datetime(1001, 1, 2, tzinfo=UTC).timestamp()),
    int(datetime(9998, 12, 30, tzinfo=UTC).timestamp()),
)
DATE_HINT = "an ISO 8601 date or date-time, e.g. 2026-11-26 or 2026-11-26T10:00:00+01:00"


@dataclass(frozen=True)
class Rules:
    """What a valid row is, beyond the fixed rules."""

    timezone: str = "UTC"  # IANA zone for date-times without an offset
    allow_duplicates: bool = False
    max_source_length: int = 255
    max_description_length: int = 1000
    definition_ids: frozenset[int] | None = None  # the tenant's, when known
    id_column: str = ""  # the input's column holding each row's identity, if any
    decimal_separator: str = "."  # in amounts, e.g. ","
    thousands_separator: str = ""  # in amounts, e.g. "." or " "; "" none
    date_formats: tuple[str, ...] = ()  # strftime formats tried in order before ISO 8601


class Check(NamedTuple):
    """A rule: a polars expression, true for the rows that pass, and what a failing row is told;
    and maybe an aggregate, true only if every row passes (false says nothing)."""

    expr: pl.Expr
    error: str
    every: pl.Expr | None = None


@cache
def passes(rules: Rules) -> pl.Expr:
    """True for the rows that pass every check."""
    return _all(_checks(rules))


def passing(prepared: pl.DataFrame, rules: Rules) -> pl.Series:
    """``passes(rules)`` over ``prepared`` (as ``_ok``), row by row only for the checks whose
    aggregate doesn't show that every row passes."""
    checks = _checks(rules)
    every = {str(i): c.every.fill_null(False) for i, c in enumerate(checks) if c.every is not None}
    held = prepared.select(**every).row(0, named=True) if every else {}
    rest = [c for i, c in enumerate(checks) if not held.get(str(i))]
    if not rest:
        return pl.repeat(True, prepared.height, eager=True).alias("_ok")
    return prepared.select(_all(rest).alias("_ok")).to_series()


def _checks(rules: Rules) -> list[Check]:
    return [c for checks in _columns(rules).values() for c in checks] + _frame_checks(rules)


def _all(checks: list[Check]) -> pl.Expr:
    return pl.all_horizontal([c.expr.fill_null(False) for c in checks])


def describe(failing: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """``failing`` (prepared rows that failed a check) as sourceRow, FIELDS as in the input
    and every reason each failed, ``; ``-joined in field order."""
    import pandera.polars as pa

    failing = failing.with_row_index("_i")
    found = pl.DataFrame(schema={"_i": pl.UInt32, REASON: pl.String})
    try:
        _schema(rules).validate(failing, lazy=True)
    except pa.errors.SchemaErrors as exc:
        found = _reasons_from(exc.failure_cases, failing)
    return failing.join(found, on="_i", how="left").select(
        SOURCE_ROW, *as_written(failing.columns), pl.col(REASON).fill_null("failed a rule")
    )


def as_written(columns: list[str]) -> list[pl.Expr]:
    """The input's text of each KEPT field: the original where a local spelling was made
    plain."""
    return [pl.col(original(f)).alias(f) if original(f) in columns else pl.col(f) for f in KEPT]


def _amount_hint(rules: Rules) -> str:
    d, t = rules.decimal_separator, rules.thousands_separator
    example = f"1{t}234{d}5" if t else f"-3{d}5"
    between = f", {t!r} between thousands" if t else ""
    return f"amount must be a number like 12 or {example} (a {d!r} for decimals{between})"


def _significant_digits(amount: pl.Expr) -> pl.Expr:
    """Of a canonical amount, from the first non-zero digit on: ``0.0012`` has 2, ``1200`` has 4.

    Counting an integer's trailing zeros keeps every amount under 1e15: a bigger one is a
    mistake (a card number in the amount column), and would not fit the report's sums.
    """
    return amount.str.strip_chars_start("-0.").str.replace(".", "", literal=True).str.len_bytes()


def _blank(field: str) -> pl.Expr:
    return pl.col(field).is_null() | (pl.col(field).str.strip_chars() == "")


def _required(field: str, every: pl.Expr | None = None) -> Check:
    return Check(~_blank(field), f"{field} is required", every)


def _no_nulls(name: str) -> pl.Expr:
    return pl.col(name).null_count() == 0


def _text_checks(field: str, max_length: int) -> list[Check]:
    s = pl.col(field)
    return [
        _required(field),
        Check(
            _blank(field) | (s.str.len_chars() <= max_length),
            f"{field} is longer than {max_length} characters",
            s.str.len_bytes().max() <= max_length,  # a character is at least a byte
        ),
        Check(_blank(field) | ~s.str.contains(CONTROL), f"{field} holds a control character"),
    ]


def _date_checks(field: str, formats: tuple[str, ...] = ()) -> list[Check]:
    at = pl.col(f"_{field}")
    hint = (
        f"a date in one of the formats {', '.join(formats)}, or {DATE_HINT}"
        if formats
        else DATE_HINT
    )
    return [
        Check(
            _blank(field) | at.is_not_null(),
            f"{field} must be {hint}, existing in the configured time zone",
            at.null_count() == pl.col(field).null_count(),  # read wherever there is text
        ),
        Check(  # years 1 to 9999, as sent and in UTC: what ISO 8601 (and .NET) can write
            at.is_null()
            | (at.dt.epoch("s").is_between(*YEARS_1_TO_9999) & _four_digit_year(field)),
            f"{field} must lie between the years 1 and 9999",
            at.dt.epoch("s").min().is_between(*SAFE_YEARS)
            & at.dt.epoch("s").max().is_between(*SAFE_YEARS),
        ),
    ]


def _four_digit_year(field: str) -> pl.Expr:
    """The date as sent starts with a year of four digits, not 0000 (nor +10000)."""
    out = pl.col(f"_{field}_out")
    return out.str.contains(r"^[0-9]{4}-") & ~out.str.starts_with("0000")


def _definition_checks(known: frozenset[int] | None) -> list[Check]:
    checks = [
        _required("definitionId", _no_nulls("_definitionId")),
        Check(
            _blank("definitionId") | (pl.col("_definitionId") > 0),
            "definitionId must be a positive whole number",
            _no_nulls("_definitionId") & (pl.col("_definitionId").min() > 0),
        ),
    ]
    if known is not None:
        shown = ", ".join(str(i) for i in sorted(known)[:20]) or "none"
        checks.append(
            Check(
                pl.col("_definitionId").is_null()
                | (pl.col("_definitionId") <= 0)
                | pl.col("_definitionId").is_in(sorted(known)),
                f"definitionId is not a point definition of this Engage tenant (known: {shown})",
            )
        )
    return checks


@cache
def _columns(rules: Rules) -> dict[str, list[Check]]:
    """Each field's checks, in the order a failing row is told them."""
    amount = pl.col("_amount")
    return {
        "contactId": [  # _contactId is a GUID, or null
            _required("contactId", _no_nulls("_contactId")),
            Check(
                _blank("contactId") | pl.col("_contactId").is_not_null(),
                "contactId must be a GUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                _no_nulls("_contactId"),
            ),
        ],
        "amount": [  # _amount is a plain decimal, or null
            _required("amount", _no_nulls("_amount")),
            Check(
                _blank("amount") | amount.is_not_null(),
                _amount_hint(rules),
                _no_nulls("_amount"),
            ),
            Check(
                amount.is_null() | (_significant_digits(amount) <= MAX_DIGITS),
                f"amount has more than {MAX_DIGITS} significant digits",
                amount.str.len_bytes().max() <= MAX_DIGITS,  # no more digits than characters
            ),
        ],
        "definitionId": _definition_checks(rules.definition_ids),
        "source": _text_checks("source", rules.max_source_length),
        "description": _text_checks("description", rules.max_description_length),
        **{f: _date_checks(f, rules.date_formats) for f in DATE_FIELDS},
    }


@cache
def _frame_checks(rules: Rules) -> list[Check]:
    window = (
        pl.col("_validFrom").is_null()
        | pl.col("_validTo").is_null()
        | (pl.col("_validTo") > pl.col("_validFrom"))
    )
    return [
        Check(window, "validTo must be after validFrom"),
        Check(pl.col(LOAD_ERROR).is_null(), MALFORMED),
        *_id_checks(rules.id_column),
    ]


def _id_checks(id_column: str) -> list[Check]:
    """With an id column, every row must have an id: it is the row's identity."""
    if not id_column:
        return []
    return [
        Check(
            ~_blank(ROW_ID),
            f"{id_column} (the id column) is empty: the row has no identity",
            _no_nulls(ROW_ID) & (pl.col(ROW_ID).str.strip_chars().str.len_bytes().min() > 0),
        )
    ]


@cache
def _schema(rules: Rules) -> pa.DataFrameSchema:
    """The checks as a pandera schema (which says every check each row failed)."""
    import pandera.polars as pa

    def check(rule: Check) -> pa.Check:
        def run(data: PolarsData) -> pl.LazyFrame:
            return data.lazyframe.select(rule.expr.fill_null(False))

        return pa.Check(run, error=rule.error, ignore_na=False)

    return pa.DataFrameSchema(
        {
            name: pa.Column(pl.String, checks=[check(c) for c in checks], nullable=True)
            for name, checks in _columns(rules).items()
        },
        checks=[check(c) for c in _frame_checks(rules)],
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
