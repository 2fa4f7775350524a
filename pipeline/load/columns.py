"""Columns and rows: headers named like the API's fields, rows numbered from 1."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from pipeline.errors import InputError
from pipeline.load.formats import BLANK
from pipeline.model import (
    FIELDS,
    LOAD_ERROR,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    ROW_ID,
    SOURCE_ROW,
)

_DUPLICATE = re.compile(r"_duplicated_[0-9]+$")  # how polars names a repeated header


def header_key(name: str) -> str:
    """A header in any case and spacing: ``Contact Id``, ``contact_id`` are ``contactid``."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


_BY_KEY = {header_key(f): f for f in FIELDS}


def canonical_columns(
    frame: pl.DataFrame,
    path: Path,
    mapping: Mapping[str, str],
    strict: bool = True,
    id_column: str = "",
) -> pl.DataFrame:
    """Rename headers to the API's fields (any case and spacing, or by [columns]), and the
    ``id_column`` (if one is named) to ``_rowId``. Strict: a required field, or the id
    column, with no column is an InputError; else its values are null (NDJSON lines after the
    first piece may simply not have the key)."""
    by_key = {**_BY_KEY, **{header_key(k): v for k, v in mapping.items()}}
    found = [c for c in frame.columns if c not in (LOAD_ERROR, SOURCE_ROW)]
    renames: dict[str, str] = {}
    headers: dict[str, str] = {}  # field -> the header it is read from
    for name in found:
        header = _DUPLICATE.sub("", name)  # a repeated header counts as the same name
        header = header if header in frame.columns else name
        target = mapping.get(header) or by_key.get(header_key(header))
        if target is None:
            continue
        if target in headers:
            raise InputError(
                f"{path} has two columns for {target}: {_show(headers[target])!r} "
                f"and {_show(header)!r}; drop one or map it in [columns] of the config"
            )
        renames[name], headers[target] = target, header
    if strict:
        _require(path, found, set(renames.values()))
    row_id = _row_id(found, id_column, path, strict)
    frame = frame.select(*renames, SOURCE_ROW, LOAD_ERROR, row_id).rename(renames)
    optional = OPTIONAL_FIELDS if strict else FIELDS
    missing = [pl.lit(None, dtype=pl.String).alias(f) for f in optional if f not in frame]
    return frame.with_columns(missing).select([*FIELDS, SOURCE_ROW, LOAD_ERROR, ROW_ID])


def _row_id(found: list[str], id_column: str, path: Path, strict: bool) -> pl.Expr:
    """The id column's values as ``_rowId`` (its name as written, else in any case and
    spacing); null when no id column is named."""
    if not id_column:
        return pl.lit(None, dtype=pl.String).alias(ROW_ID)
    keys = {header_key(name): name for name in found}
    name = id_column if id_column in found else keys.get(header_key(id_column))
    if name is not None:
        return pl.col(name).cast(pl.String).alias(ROW_ID)
    if strict:
        raise InputError(
            f"{path} has no id column {id_column!r} ([input] id_column of the config); name"
            " the column that holds the source's transaction id, or leave it empty"
        )
    return pl.lit(None, dtype=pl.String).alias(ROW_ID)


def _require(path: Path, found: list[str], present: set[str]) -> None:
    missing = [f for f in REQUIRED_FIELDS if f not in present]
    if not missing:
        return
    shown = ", ".join(_show(name) for name in found[:12]) + (", ..." if len(found) > 12 else "")
    hint = "map them in [columns] of the config"
    if len(found) == 1 or not present:  # nothing matched: most likely split on the wrong char
        hint = "is the delimiter right? set [input] delimiter in the config"
    raise InputError(
        f"{path} has no column {', '.join(repr(m) for m in missing)} (found: {shown}); {hint}"
    )


def _show(name: str, width: int = 40) -> str:
    """A header as one short line, for a message."""
    name = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], name)
    return name if len(name) <= width else name[: width - 3] + "..."


def number_rows(frame: pl.DataFrame, offset: int = 0) -> pl.DataFrame:
    """Number the data rows from 1, then drop rows with no value in any column (blank lines).

    An empty value is null, whether it was written as nothing or as ``""``.
    """
    values = [c for c in frame.columns if c != LOAD_ERROR]
    numbered = frame.with_row_index(SOURCE_ROW, offset=offset + 1).with_columns(
        pl.col(SOURCE_ROW).cast(pl.Int64),
        *[pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in values],
    )
    if not values:  # no column at all: every row is blank, or malformed
        return numbered.filter(pl.col(LOAD_ERROR).is_not_null())
    # a blank row is blank in its first column: only those few rows are looked at whole
    maybe = numbered.select(pl.arg_where(_blank(values[0]))).to_series()
    if maybe.is_empty():
        return numbered
    candidates = numbered[maybe]
    blank = pl.all_horizontal(_blank(c) for c in values) & pl.col(LOAD_ERROR).is_null()
    dropped = candidates.filter(blank)[SOURCE_ROW]
    return numbered.filter(~pl.col(SOURCE_ROW).is_in(dropped.implode()))


def _blank(column: str) -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars(BLANK) == "")
