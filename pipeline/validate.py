"""Validate: the documented field rules as a pandera schema over polars, every failure collected.

``validate(frame, rules)`` takes the text frame ``load`` made and splits it in two: the valid
rows, normalised to what is sent (a lower-case GUID, the amount as an exact canonical decimal,
the definition id as an integer, date-times with an explicit offset), and the invalid rows,
each with every reason it failed, ``; ``-joined. Nothing here reads a file or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from pipeline.engage import FIELDS
from pipeline.load import LOAD_ERROR, SOURCE_ROW

REASON = "reason"
MALFORMED = "the row is malformed"  # stands for the row's _loadError
DATE_FIELDS = ("timeStamp", "validFrom", "validTo")
GUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# [0-9], not \d: polars' \d also matches other scripts' digits, which no parser downstream reads
DECIMAL = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"
WHOLE = r"^\+?[0-9]{1,18}(\.0*)?$"
CANONICAL = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"  # already as sent: no sign +, no padding
ISO_8601 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-5][0-9](\.[0-9]+)?)?([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # C0 and C1, but tab, LF and CR
MAX_DIGITS = 15  # Engage keeps amounts as doubles: 15 significant digits survive exactly
DATE_HINT = "an ISO 8601 date or date-time, e.g. 2026-11-26 or 2026-11-26T10:00:00+01:00"
OUT_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


@dataclass(frozen=True)
class Rules:
    """What a valid row is, beyond the fixed rules."""

    timezone: str = "UTC"  # IANA zone for date-times without an offset
    allow_duplicates: bool = False
    max_source_length: int = 255
    max_description_length: int = 1000
    definition_ids: frozenset[int] | None = None  # the tenant's, when known


RAW = {name: f"_raw_{name}" for name in FIELDS}  # the input's text, kept for the rejects


@dataclass(frozen=True)
class Validated:
    valid: pl.DataFrame  # sourceRow, FIELDS normalised (definitionId Int64, the rest text), RAW
    invalid: pl.DataFrame  # sourceRow, FIELDS as in the input, reason


class Seen:
    """Every valid row so far, as a 64-bit hash and its row number (not the rows): duplicates
    are found across the pieces of a file of any length. Sorted runs, merged as they grow."""

    def __init__(self) -> None:
        self.runs: list[pl.DataFrame] = []  # each: _h (UInt64, sorted), first (UInt32): 12 B/row

    def first_rows(self, hashes: pl.Series) -> pl.Series:
        """For each hash, the row it was first seen in, else null."""
        found = pl.Series("first", [None] * len(hashes), dtype=pl.Int64)
        for run in self.runs:
            at = run["_h"].search_sorted(hashes).clip(0, run.height - 1)
            hit = run["_h"].gather(at) == hashes
            found = found.fill_null(
                pl.select(pl.when(hit).then(run["first"].gather(at).cast(pl.Int64))).to_series()
            )
        return found

    def add(self, hashes: pl.Series, rows: pl.Series) -> None:
        if hashes.is_empty():
            return
        run = pl.DataFrame({"_h": hashes, "first": rows.cast(pl.UInt32)}).sort("_h")
        while self.runs and self.runs[-1].height <= 2 * run.height:
            run = pl.concat([self.runs.pop(), run]).sort("_h")
        self.runs.append(run)


def validate(frame: pl.DataFrame, rules: Rules, seen: Seen | None = None) -> Validated:
    """Split ``frame`` into normalised valid rows and invalid rows with their reasons.
    ``seen`` carries the duplicate index from the earlier pieces of the same input."""
    prepared = _prepare(frame, rules.timezone).with_row_index("_i")
    reasons = _schema_reasons(prepared, rules)
    checked = prepared.join(reasons, on="_i", how="left")
    if not rules.allow_duplicates:
        checked = _mark_duplicates(checked, Seen() if seen is None else seen)
    invalid = checked.filter(pl.col(REASON).is_not_null()).select(SOURCE_ROW, *FIELDS, REASON)
    valid = checked.filter(pl.col(REASON).is_null()).select(
        SOURCE_ROW, *_normalised(), *[pl.col(f).alias(RAW[f]) for f in FIELDS]
    )
    return Validated(valid=valid, invalid=invalid)


def _prepare(frame: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Parse each text field once, into helper columns ``_<field>`` the checks read."""
    return (
        frame.lazy()
        .with_columns(  # lazy: shared subexpressions are computed once
            pl.col("contactId")
            .str.strip_chars()
            .str.replace(r"^\{(.*)\}$", "$1")
            .str.to_lowercase()
            .alias("_contactId"),
            _canonical_amount(pl.col("amount").str.strip_chars()).alias("_amount"),
            _whole_number(pl.col("definitionId").str.strip_chars()).alias("_definitionId"),
            *[expr for f in DATE_FIELDS for expr in _dates(frame, f, tz)],
        )
        .collect()
    )


def _dates(frame: pl.DataFrame, field: str, tz: str) -> list[pl.Expr]:
    """``_<field>`` (the instant) and ``_<field>_out`` (as sent), each distinct value parsed
    once: dates repeat (a validity end, a night's timestamps to the second)."""
    key = pl.col(field).str.strip_chars()
    distinct = frame.select(key.unique().drop_nulls().alias("text"))
    if distinct.height > frame.height // 4:  # mostly distinct: mapping back costs more
        at = _instant(key, tz)
        return [at.alias(f"_{field}"), at.dt.strftime(OUT_FORMAT).alias(f"_{field}_out")]
    parsed = distinct.select("text", _instant(pl.col("text"), tz).alias("at")).with_columns(
        pl.col("at").dt.strftime(OUT_FORMAT).alias("out")
    )
    dtype = parsed.schema["at"]
    return [
        key.replace_strict(parsed["text"], parsed["at"], default=None, return_dtype=dtype).alias(
            f"_{field}"
        ),
        key.replace_strict(
            parsed["text"], parsed["out"], default=None, return_dtype=pl.String
        ).alias(f"_{field}_out"),
    ]


def _canonical_amount(s: pl.Expr) -> pl.Expr:
    """``+007.50`` -> ``7.5``; null unless a plain decimal number."""
    parts = s.str.strip_chars_start("+-").str.split_exact(".", 1)
    whole = parts.struct.field("field_0").str.strip_chars_start("0")
    frac = parts.struct.field("field_1").fill_null("").str.strip_chars_end("0")
    zero = (whole == "") & (frac == "")
    text = pl.concat_str(
        pl.when(s.str.starts_with("-") & ~zero).then(pl.lit("-")).otherwise(pl.lit("")),
        pl.when(whole == "").then(pl.lit("0")).otherwise(whole),
        pl.when(frac == "").then(pl.lit("")).otherwise(pl.lit(".") + frac),
    )
    canonical = s.str.contains(CANONICAL) & (s != "-0")  # most are: skip the work for them
    return pl.when(canonical).then(s).when(s.str.contains(DECIMAL)).then(text)


def _significant_digits(amount: pl.Expr) -> pl.Expr:
    """Of a canonical amount, from the first non-zero digit on: ``0.0012`` has 2, ``1200`` has 4.

    Counting an integer's trailing zeros keeps every amount under 1e15: a bigger one is a
    mistake (a card number in the amount column), and would not fit the report's sums.
    """
    return amount.str.replace_all(r"[-.]", "").str.strip_chars_start("0").str.len_chars()


def _whole_number(s: pl.Expr) -> pl.Expr:
    return pl.when(s.str.contains(WHOLE)).then(
        s.str.replace(r"\..*$", "").cast(pl.Int64, strict=False)
    )


def _instant(s: pl.Expr, tz: str) -> pl.Expr:
    """An ISO 8601 date or date-time as an instant in ``tz``; null when it isn't one."""
    iso = pl.when(s.str.contains(ISO_8601)).then(s.str.replace(r"^(.{10}) ", "${1}T"))
    offset = iso.str.slice(10).str.extract(r"([zZ]|[+-][0-9]{2}(?::?[0-9]{2})?)$")
    local = iso.str.slice(0, iso.str.len_chars() - offset.str.len_chars().fill_null(0))
    # one shape, one format: the date, T, hours, minutes, seconds (a fraction if given)
    local = local.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})$", "${1}T00:00:00").str.replace(
        r"^(.{10}T[0-9]{2}:[0-9]{2})$", "${1}:00"
    )
    naive = local.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
    aware = (local + _offset(offset)).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us"
    )
    in_zone = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    return pl.when(offset.is_null()).then(in_zone).otherwise(aware.dt.convert_time_zone(tz))


def _offset(offset: pl.Expr) -> pl.Expr:
    """``Z``, ``+02``, ``+0230``, ``-02:30`` all as ``±HH:MM``."""
    return (
        offset.str.replace(r"^[zZ]$", "+00:00")
        .str.replace(r"^([+-][0-9]{2})$", "${1}:00")
        .str.replace(r"^([+-][0-9]{2})([0-9]{2})$", "${1}:${2}")
    )


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


def _schema_reasons(prepared: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """Row index ``_i`` -> every reason it failed, in field order.

    All checks run first as one polars pass; pandera then reports on the rows that failed
    any (usually few), so valid rows cost one pass, not one per check."""
    schema = _schema(rules)
    checks = [*schema.checks, *(c for col in schema.columns.values() for c in col.checks)]
    passes = pl.all_horizontal([_expression(c).fill_null(False) for c in checks])
    failing = prepared.lazy().filter(~passes).collect()  # lazy: shared subexpressions once
    try:
        schema.validate(failing, lazy=True)
    except pa.errors.SchemaErrors as exc:
        positions = failing.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("index"), "_i")
        cases = exc.failure_cases.join(positions, on="index").with_columns(index=pl.col("_i"))
        return _reasons_from(cases.drop("_i"), prepared)
    return pl.DataFrame(schema={"_i": pl.UInt32, REASON: pl.String})


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


def _mark_duplicates(checked: pl.DataFrame, seen: Seen) -> pl.DataFrame:
    """A row equal to an earlier valid row (after normalising) is rejected as its duplicate.
    Rows compare by a 64-bit hash of their normalised values: a collision (about one in
    10^12 for ten million rows) would reject a row as a duplicate, never send one twice."""
    valid = pl.col(REASON).is_null()
    hashed = checked.with_columns(pl.struct(_normalised_names()).hash(seed=7).alias("_h"))
    fresh = hashed.filter(valid)
    earlier = seen.first_rows(fresh["_h"])
    in_piece = fresh.select(pl.col(SOURCE_ROW).first().over("_h")).to_series()
    first = earlier.fill_null(in_piece)
    duplicate = (
        fresh.select(SOURCE_ROW)
        .with_columns(first.alias("_first"))
        .filter(pl.col("_first") != pl.col(SOURCE_ROW))
    )
    originals = fresh.filter(earlier.is_null() & (in_piece == fresh[SOURCE_ROW]))
    seen.add(originals["_h"], originals[SOURCE_ROW])
    marked = checked.join(duplicate, on=SOURCE_ROW, how="left")
    return marked.with_columns(
        pl.when(pl.col("_first").is_not_null())
        .then(pl.format("duplicate of row {} (set allow_duplicates to send both)", "_first"))
        .otherwise(pl.col(REASON))
        .alias(REASON)
    ).drop("_first")


def _normalised_names() -> list[str]:
    return [
        "_contactId",
        "_amount",
        "_definitionId",
        "_timeStamp",
        "source",
        "description",
        "_validFrom",
        "_validTo",
    ]


def _normalised() -> list[pl.Expr]:
    """The helper columns back under the API's names, as they are sent."""
    exprs = []
    for name in FIELDS:
        if name in DATE_FIELDS:
            exprs.append(pl.col(f"_{name}_out").alias(name))
        elif name in ("source", "description"):
            exprs.append(pl.col(name))
        else:
            exprs.append(pl.col(f"_{name}").alias(name))
    return exprs
