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

import hashlib
from dataclasses import dataclass, replace

import polars as pl

from pipeline.model import FIELDS, JSON, PRIOR_REASON, RAW, REASON, SOURCE_ROW, encode
from pipeline.validate.parse import DATE_FIELDS, prepare
from pipeline.validate.schema import Rules, describe, passing
from pipeline.validate.seen import Seen

__all__ = [
    "Checked",
    "Rules",
    "Seen",
    "Validated",
    "check",
    "dedupe",
    "describe",
    "screen",
    "validate",
]

HASH = "_hash"
DUPLICATE = "duplicate of row {} (set allow_duplicates to send both; fingerprint {})"
REPEATED = (  # a rejects report fed back: its duplicates, unchanged, stay out
    "a duplicate before (its first copy landed), unchanged since: delete it, or set"
    " allow_duplicates to send it (fingerprint {})"
)
FINGERPRINT = r"\(.*fingerprint ([0-9a-f]{16})\)$"
IN_DOUBT = "outcome unknown"  # how a reason starts when a row may be in Engage
IN_DOUBT_BEFORE = (  # a rejects report fed back: its rows in doubt stay out (and stay in doubt)
    "outcome unknown when a run reported it: it may be in Engage; re-run that run's input to"
    " settle it (or clear this reason to send the row anyway)"
)
NOT_SENT = ("not sent", "not settled", "not applied")  # the row's import is unfinished
NOT_SENT_BEFORE = (  # ... and re-running its input sends the row: from the report, it'd be twice
    "not sent when a run reported it: re-running that run's input sends it; sent from here too"
    " it would land twice (clear this reason to send the row from here anyway)"
)


@dataclass(frozen=True)
class Validated:
    # sourceRow, FIELDS normalised (definitionId Int64, the rest text), RAW, _json
    valid: pl.DataFrame
    invalid: pl.DataFrame  # sourceRow, FIELDS as in the input, reason


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
    """Every rule as one pass; the passing rows encoded, with a hash of their JSON (equal
    after normalising means equal JSON). Pieces can be screened in parallel."""
    if PRIOR_REASON not in frame.columns:  # not read by load: no report fed back
        frame = frame.with_columns(pl.lit(None, pl.String).alias(PRIOR_REASON))
    prepared = prepare(frame, rules.timezone)
    prepared = prepared.with_columns(passing(prepared, rules))
    normal = (
        prepared.lazy()
        .filter("_ok")
        .select(SOURCE_ROW, *_normalised(), *[pl.col(f).alias(RAW[f]) for f in FIELDS])
    )
    valid, in_doubt = _in_doubt(encode(normal.collect()), frame)
    valid, repeated = _repeated(valid, frame, rules)
    repeated = pl.concat([in_doubt, repeated]) if in_doubt.height else repeated
    failing = prepared.filter(~pl.col("_ok")).drop("_ok")
    if not rules.allow_duplicates:
        valid = valid.with_columns(pl.col(JSON).hash(seed=7).alias(HASH))
    return Checked(valid, failing, repeated)


def dedupe(screened: Checked, seen: Seen, rules: Rules) -> Checked:
    """The screened rows that repeat an earlier valid row, split off. Pieces in order."""
    valid = screened.valid.drop(HASH, strict=False)
    if rules.allow_duplicates or valid.is_empty():
        return replace(screened, valid=valid)
    first = seen.mark(screened.valid[HASH], valid[SOURCE_ROW])
    marked = valid.with_columns(first.alias("_first"))
    repeated = pl.col("_first").is_not_null()
    duplicates = _rejected(marked.filter(repeated), DUPLICATE, pl.col("_first"))
    kept = marked.filter(~repeated).drop("_first")
    return Checked(kept, screened.failing, pl.concat([screened.duplicates, duplicates]))


def _repeated(
    valid: pl.DataFrame, frame: pl.DataFrame, rules: Rules
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A rejects report fed back: the rows it rejected as duplicates, unchanged (the same
    fingerprint), split off; their first copies landed."""
    prior = frame.select(SOURCE_ROW, pl.col(PRIOR_REASON).str.extract(FINGERPRINT).alias("_was"))
    prior = prior.filter(pl.col("_was").is_not_null())
    if rules.allow_duplicates or prior.is_empty() or valid.is_empty():
        return valid, _none()
    said = valid.select(SOURCE_ROW, JSON).join(prior, on=SOURCE_ROW)
    same = said.filter(pl.Series(fingerprints(said[JSON])) == said["_was"])[SOURCE_ROW]
    again = pl.col(SOURCE_ROW).is_in(same.implode())
    return valid.filter(~again), _rejected(valid.filter(again), REPEATED)


def _in_doubt(valid: pl.DataFrame, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A rejects report fed back: the rows of an unfinished import, split off: those whose
    outcome it said was unknown (they may be in Engage) and those not sent yet (re-running
    that import sends them); from here too, their points could be awarded twice."""
    said = pl.col(PRIOR_REASON).str.strip_chars().str.to_lowercase()
    unsent = pl.any_horizontal(said.str.starts_with(start) for start in NOT_SENT)
    reason = (
        pl.when(said.str.starts_with(IN_DOUBT))
        .then(pl.lit(IN_DOUBT_BEFORE))
        .when(unsent)
        .then(pl.lit(NOT_SENT_BEFORE))
    )
    marked = frame.select(SOURCE_ROW, reason.alias("_again"))
    marked = marked.filter(pl.col("_again").is_not_null())
    if marked.is_empty() or valid.is_empty():
        return valid, _none()
    again = pl.col(SOURCE_ROW).is_in(marked[SOURCE_ROW].implode())
    rows = valid.filter(again).join(marked, on=SOURCE_ROW)  # the order of rejects is the report's
    return valid.filter(~again), _as_rejects(rows, pl.col("_again"))


def _rejected(rows: pl.DataFrame, reason: str, *values: pl.Expr) -> pl.DataFrame:
    """``rows`` (valid, encoded) as rejects, ``reason`` given ``values`` and a fingerprint."""
    printed = pl.Series("_print", fingerprints(rows[JSON]), dtype=pl.String)
    return _as_rejects(rows.with_columns(printed), pl.format(reason, *values, "_print"))


def _as_rejects(rows: pl.DataFrame, reason: pl.Expr) -> pl.DataFrame:
    """Valid rows as invalid ones: sourceRow, FIELDS as in the input, ``reason``."""
    return rows.select(SOURCE_ROW, *[pl.col(RAW[f]).alias(f) for f in FIELDS], reason.alias(REASON))


def fingerprints(json: pl.Series) -> list[str]:
    """Of each row's JSON, a short digest that is the same in any version (few rows: the
    duplicates)."""
    return [hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] for text in json]


def _none() -> pl.DataFrame:
    return pl.DataFrame(
        schema={SOURCE_ROW: pl.Int64, **dict.fromkeys(FIELDS, pl.String), REASON: pl.String}
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
