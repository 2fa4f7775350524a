"""Validate: the documented field rules (a pandera schema over polars), duplicates, and each
valid row as the JSON that is sent for it.

``check(frame, rules, seen)`` takes a piece of the text frame ``load`` made and splits it in
three: the valid rows, normalised to what is sent (a lower-case GUID, the amount as an exact
canonical decimal, the definition id as an integer, date-times with an explicit offset) and
encoded; the rows failing a rule, whose reasons ``describe`` gives (pandera, run on many of
them at once); and the duplicates of earlier valid rows. It is ``screen`` (any piece, in
parallel) then ``dedupe`` (the pieces in order). ``validate`` does it all for a whole frame.
Nothing here reads a file or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.model import FIELDS, IDENTITY, KEPT, RAW, REASON, ROW_ID, SOURCE_ROW, encode
from pipeline.validate.identity import identity, with_cr
from pipeline.validate.local import localised
from pipeline.validate.parse import DATE_FIELDS, prepare
from pipeline.validate.schema import Rules, as_written, describe, passing
from pipeline.validate.seen import Seen

__all__ = [
    "Checked",
    "Rules",
    "Seen",
    "Validated",
    "as_rejects",
    "check",
    "dedupe",
    "describe",
    "screen",
    "validate",
]

DUPLICATE = "duplicate of row {} (set allow_duplicates to send both)"


@dataclass(frozen=True)
class Validated:
    # sourceRow, FIELDS normalised (definitionId Int64, the rest text), RAW, _identity, _json
    valid: pl.DataFrame
    invalid: pl.DataFrame  # sourceRow, FIELDS (and _rowId) as in the input, reason


@dataclass(frozen=True)
class Checked:
    valid: pl.DataFrame  # as Validated.valid
    failing: pl.DataFrame  # the rows failing a rule, parsed: ``describe`` says why
    duplicates: pl.DataFrame  # as Validated.invalid


def validate(frame: pl.DataFrame, rules: Rules, seen: Seen | None = None) -> Validated:
    """Split ``frame`` into normalised valid rows and invalid rows with their reasons.
    ``seen`` carries the duplicate index from the earlier pieces of the same input."""
    checked = check(frame, rules, Seen() if seen is None else seen)
    invalid = pl.concat([describe(checked.failing, rules), checked.duplicates])
    return Validated(valid=checked.valid, invalid=invalid.sort(SOURCE_ROW))


def check(frame: pl.DataFrame, rules: Rules, seen: Seen) -> Checked:
    """One piece: ``screen`` then ``dedupe``."""
    return dedupe(screen(frame, rules), seen, rules)


def screen(frame: pl.DataFrame, rules: Rules) -> Checked:
    """Every rule as one pass; the passing rows encoded, with their identity (equal after
    normalising means the same identity). Pieces can be screened in parallel."""
    if ROW_ID not in frame.columns:  # not read by load: no id column
        frame = frame.with_columns(pl.lit(None, pl.String).alias(ROW_ID))
    frame = localised(frame, rules.decimal_separator, rules.thousands_separator, rules.date_formats)
    prepared = prepare(frame, rules.timezone)
    prepared = prepared.with_columns(passing(prepared, rules))
    normal = (
        prepared.lazy()
        .filter("_ok")
        .select(
            SOURCE_ROW,
            *_normalised(),
            *[text.alias(RAW[f]) for f, text in zip(KEPT, as_written(frame.columns), strict=True)],
            identity(rules.id_column, with_cr(frame)),
        )
    )
    failing = prepared.filter(~pl.col("_ok")).drop("_ok")
    return Checked(encode(normal.collect()), failing, _none())


def dedupe(screened: Checked, seen: Seen, rules: Rules) -> Checked:
    """The screened rows that repeat an earlier valid row (the same identity), split off.
    Pieces in order."""
    valid = screened.valid
    if rules.allow_duplicates or valid.is_empty():
        return screened
    first = seen.mark(valid[IDENTITY], valid[SOURCE_ROW])
    marked = valid.with_columns(first.alias("_first"))
    repeated = pl.col("_first").is_not_null()
    duplicates = as_rejects(marked.filter(repeated), pl.format(DUPLICATE, pl.col("_first")))
    kept = marked.filter(~repeated).drop("_first")
    return Checked(kept, screened.failing, pl.concat([screened.duplicates, duplicates]))


def as_rejects(rows: pl.DataFrame, reason: pl.Expr) -> pl.DataFrame:
    """Valid rows as invalid ones: sourceRow, the input's values as written, ``reason``."""
    return rows.select(SOURCE_ROW, *[pl.col(RAW[f]).alias(f) for f in KEPT], reason.alias(REASON))


def _none() -> pl.DataFrame:
    return pl.DataFrame(
        schema={SOURCE_ROW: pl.Int64, **dict.fromkeys(KEPT, pl.String), REASON: pl.String}
    )


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
