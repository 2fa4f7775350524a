"""Local spellings: amounts with a decimal comma or thousands separators (``1.234,50``) and
dates in the formats a legacy export writes (``25.11.2026 14:05``, ``11/25/2026``), made the
plain text the parser reads (``1234.50``, ``2026-11-25T14:05:00``) before it reads them.

Only with ``[input] decimal_separator``, ``thousands_separator`` or ``date_formats`` set; the
input's own text is kept (``_in_<field>``) for the rejects report. An amount not written the
configured way is made unreadable (it is rejected, never read another way: ``12.50`` with a
decimal comma is not twelve and a half); a date matching no format is left to the ISO 8601
parser, and rejected if that can't read it either.
"""

from __future__ import annotations

import re

import polars as pl

from pipeline.model import date_shape as shape
from pipeline.validate.parse import DATE_FIELDS

UNREADABLE = "\x00"  # put before an amount not written the configured way: no number


def original(field: str) -> str:
    """The column holding ``field``'s text as the input wrote it, once it was made plain."""
    return f"_in_{field}"


def localised(
    frame: pl.DataFrame, decimal: str, thousands: str, formats: tuple[str, ...]
) -> pl.DataFrame:
    """``frame`` with its amounts and dates as plain text (the input's kept beside them)."""
    numbers = ["amount", "definitionId"] if (decimal, thousands) != (".", "") else []
    fields = numbers + (list(DATE_FIELDS) if formats else [])
    if not fields:
        return frame
    kept = frame.with_columns(pl.col(f).alias(original(f)) for f in fields)
    exprs = [_dates(pl.col(f), formats).alias(f) for f in fields if f in DATE_FIELDS]
    if numbers:
        exprs.append(plain_amount(pl.col("amount"), decimal, thousands).alias("amount"))
        exprs.append(_whole(pl.col("definitionId"), decimal, thousands).alias("definitionId"))
    return kept.with_columns(exprs)


def _whole(text: pl.Expr, decimal: str, thousands: str) -> pl.Expr:
    """An id holding a separator (``1.000`` with a thousands dot) is no id: not read as 1."""
    marks = [mark for mark in (decimal, thousands) if mark]
    odd = pl.any_horizontal(text.str.contains(mark, literal=True) for mark in marks)
    return pl.when(odd.fill_null(False)).then(UNREADABLE + text).otherwise(text)


def plain_amount(text: pl.Expr, decimal: str, thousands: str) -> pl.Expr:
    """An amount in the local spelling as a plain decimal; one written otherwise made
    unreadable (it is no number then)."""
    s = text.str.strip_chars()
    d, t = re.escape(decimal), re.escape(thousands)
    whole = rf"([0-9]{{1,3}}({t}[0-9]{{3}})+|[0-9]+)" if thousands else "[0-9]+"
    written = rf"^[+-]?({whole}({d}[0-9]*)?|{d}[0-9]+)$"
    plain = s.str.replace_all(thousands, "", literal=True) if thousands else s
    plain = plain.str.replace(decimal, ".", literal=True)
    return pl.when(s.str.contains(written)).then(plain).otherwise(UNREADABLE + s)


def _dates(text: pl.Expr, formats: tuple[str, ...]) -> pl.Expr:
    """The first format that reads the text, as ISO 8601 (naive: the zone comes after). A
    text must have the format's shape (``%Y`` four digits, as Python reads it: the parser
    alone would read ``25.11.26`` as the year 26)."""
    s = text.str.strip_chars()
    read = [
        pl.when(s.str.contains(shape(fmt))).then(
            s.str.strptime(pl.Datetime("us"), fmt, strict=False, exact=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%S%.f"
            )
        )
        for fmt in formats
    ]
    return pl.coalesce(*read, text)
