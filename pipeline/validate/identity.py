"""Identity: what makes a valid row the same transaction in any file that carries it.

By default a fingerprint of the row as it is sent, normalised: a lower-case GUID, the
canonical amount (``+007.50`` and ``7.5`` are one), the definition id as a number, the
source and description as written (their line breaks as LF), and each date as an instant
(``…T10:15:00+01:00`` and ``…T09:15:00Z`` are one). With ``[input] id_column``, the source
system's transaction id (trimmed) instead. Either way a 64-bit xxHash, the same on every
machine and version, so the journal knows a row again whatever file, format, order or
column names bring it back.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl
from polars_hash import NonCryptographicHashingNameSpace

from pipeline.model import IDENTITY, ROW_ID
from pipeline.validate.parse import DATE_FIELDS

SEPARATOR = "\x1f"  # a control character: validation lets none into the text fields
TEXTS = ("source", "description")
CONTENT = ("_contactId", "_amount", "_definitionId", *TEXTS)


def identity(id_column: str, cr_in: Collection[str] = TEXTS) -> pl.Expr:
    """Each prepared row's identity (UInt64), as ``_identity``. ``cr_in``: the text fields
    that may hold a carriage return (the others need no line breaks made LF)."""
    if id_column:
        text = pl.lit("id" + SEPARATOR) + pl.col(ROW_ID).str.strip_chars()
    else:
        parts = [pl.col(name).cast(pl.String) for name in CONTENT]
        parts[3:5] = [_line_breaks(pl.col(n)) if n in cr_in else pl.col(n) for n in TEXTS]
        parts += [pl.col(f"_{name}").dt.epoch("us").cast(pl.String) for name in DATE_FIELDS]
        text = pl.concat_str([part.fill_null("") for part in parts], separator=SEPARATOR)
    return NonCryptographicHashingNameSpace(text).xxhash64().alias(IDENTITY)


def with_cr(frame: pl.DataFrame) -> list[str]:
    """The text fields of ``frame`` where a carriage return is (most files have none)."""
    return [name for name in TEXTS if frame[name].str.contains("\r", literal=True).any()]


def _line_breaks(text: pl.Expr) -> pl.Expr:
    """A text's line breaks as LF: an export with CRLF line ends holds the same rows."""
    return text.str.replace_all("\r\n", "\n", literal=True).str.replace_all(
        "\r", "\n", literal=True
    )


def untimed(id_column: str) -> pl.Expr:
    """True for a row whose identity holds no time (no timeStamp, no id column): two equal
    ones in different imports may be two real transactions (a monthly bonus) or one sent
    twice."""
    return pl.lit(not id_column) & pl.col("timeStamp").is_null()
