"""The model: what Engage and the stages share, and nothing that does I/O.

The transaction's fields as Engage's API names them, the bookkeeping columns the stages add
to a frame (the source row, a load error, a reason), how a valid row is written as the JSON
Engage gets, and the typed result of one POST. Every layer may import this module; it
imports no other part of the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import polars as pl

FIELDS = (
    "contactId",
    "amount",
    "definitionId",
    "timeStamp",
    "source",
    "description",
    "validFrom",
    "validTo",
)
REQUIRED_FIELDS = ("contactId", "amount", "definitionId", "source", "description")
OPTIONAL_FIELDS = ("timeStamp", "validFrom", "validTo")

SOURCE_ROW = "sourceRow"  # the 1-based data row of the input
LOAD_ERROR = "_loadError"  # why a row could not be read as one (malformed)
ROW_ID = "_rowId"  # the value of the input's id column ([input] id_column), never sent
IDENTITY = "_identity"  # a valid row's identity: what makes it the same row in any file
REASON = "reason"  # why a row did not get in
KEPT = (*FIELDS, ROW_ID)  # the input's values a rejected row is reported with
RAW = {name: f"_raw_{name}" for name in KEPT}  # the input's text, kept for the rejects
JSON = "_json"  # the row as it is sent

NUMBERS = ("amount", "definitionId")
FREE_TEXT = ("source", "description")  # the rest are GUIDs, numbers, dates: nothing to escape
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
ESCAPED = r'["\\\n\r\t]'  # any of ESCAPES' keys


@dataclass(frozen=True)
class PostResult:
    """Engage's answer to one POST: the rows it did not take and why (batch-level lists)."""

    status: int
    attempts: int = 1
    not_accepted: list[dict[str, Any]] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    missing_contact_ids: list[str] = field(default_factory=list)
    missing_definition_ids: list[int] = field(default_factory=list)


def encode(valid: pl.DataFrame) -> pl.DataFrame:
    """Add ``_json``: each row as the JSON object Engage gets; absent fields stay absent.
    Written here by hand, field by field, so no serializer's version can change a body.
    What a piece's columns hold decides the expression: a field absent from every row is
    left out, one present in every row needs no null handling, and only the texts with
    something to escape are escaped."""
    escaped = {name: _escaped(valid[name]) for name in FREE_TEXT}
    parts: list[pl.Expr | str] = []  # str: literal text
    for i, name in enumerate(FIELDS):
        lead = ("{" if i == 0 else ",") + f'"{name}":'
        nulls = valid[name].null_count()
        if nulls == valid.height and name not in REQUIRED_FIELDS:
            continue
        quote = "" if name in NUMBERS else '"'
        value = pl.col(name).cast(pl.String) if name in NUMBERS else pl.col(name)
        value = pl.lit(escaped[name]) if escaped.get(name) is not None else value
        if name in REQUIRED_FIELDS or not nulls:  # in every row
            parts += [lead + quote, value, quote]
        else:  # null where absent: left out whole
            parts.append(pl.concat_str(pl.lit(lead + quote), value, pl.lit(quote)))
    parts.append("}")
    return valid.with_columns(pl.concat_str(_joined(parts), ignore_nulls=True).alias(JSON))


def _joined(parts: list[pl.Expr | str]) -> list[pl.Expr]:
    """Adjacent literal texts as one literal: each part costs a pass."""
    exprs: list[pl.Expr] = []
    text = ""
    for part in parts:
        if isinstance(part, str):
            text += part
            continue
        if text:
            exprs.append(pl.lit(text))
        exprs.append(part)
        text = ""
    return [*exprs, pl.lit(text)] if text else exprs


def _escaped(text: pl.Series) -> pl.Series | None:
    """``text`` with JSON's escapes, or None if no value needs one (validation lets no other
    control character through); only the values that need them are rewritten."""
    rows = text.str.contains(ESCAPED).arg_true()  # a regex class: faster than contains_any
    if rows.is_empty():
        return None
    fixed = text.gather(rows).str.replace_many(list(ESCAPES), list(ESCAPES.values()))
    return text.clone().scatter(rows, fixed)


DIRECTIVES = {
    "d": "[0-9]{1,2}", "m": "[0-9]{1,2}", "Y": "[0-9]{4}", "y": "[0-9]{2}",
    "H": "[0-9]{1,2}", "I": "[0-9]{1,2}", "M": "[0-9]{2}", "S": "[0-9]{2}",
    "f": "[0-9]{1,9}", "p": "(?i:am|pm)", "b": "[A-Za-z]{3}", "B": "[A-Za-z]+", "%": "%",
}  # fmt: skip


def date_shape(fmt: str) -> str:
    """A regex of the texts ``fmt`` reads; ValueError for a directive it does not know (an
    offset, %z or %Z, among them: local times are in [input] timezone; ISO 8601 texts with
    an offset are read without a format)."""
    parts, at = ["^"], 0
    while at < len(fmt):
        if fmt[at] != "%":
            parts.append(re.escape(fmt[at]))
            at += 1
            continue
        code = fmt[at + 1 : at + 2]
        if code not in DIRECTIVES:
            raise ValueError(
                f"date format {fmt!r}: %{code} is not one of "
                + " ".join(f"%{d}" for d in DIRECTIVES if d != "%")
            )
        parts.append(DIRECTIVES[code])
        at += 2
    return "".join(parts) + "$"
