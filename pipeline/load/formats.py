"""The formats: a piece of CSV/TSV or NDJSON text, or a slice of a Parquet file, as a frame
of text columns with ``_loadError`` for malformed rows."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl

from pipeline.errors import ConfigError, InputError
from pipeline.model import LOAD_ERROR, SOURCE_ROW

DELIMITERS = (",", ";", "\t", "|")
BLANK = " \t\r\n"  # what a blank line, or a line of only delimiters, holds
EOF_MARK = "\u2403"  # appended to CSV text as a last line: a quote never closed swallows it
NO_VALUES = "the line is a JSON object with no values"
UNPAIRED = "the line holds a \\u escape that is no character (an unpaired surrogate)"
UNCLOSED_QUOTE = "a quote opened in this row is never closed: the rest of the file was read into it"
SWALLOWED = (
    "a quoted value spans lines and one of them looks like a whole row (a stray quote?): the"
    " rows it holds were read into this one; fix the quotes"
)
_BLANK_LINE = re.compile(rb"(?:\A|\n)[ \t\r]*(?:\n|\Z)")  # the last line too
_LONG_NUMBER = re.compile(rb"[0-9](?:\.?[0-9]){15}")  # 16+ digits: polars' float would round
_SURROGATE = re.compile(rb"\\[uU][dD][89abAB]")  # polars reads a lone one as NUL
_DUPLICATE = re.compile(r"_duplicated_[0-9]+$")  # how polars names a repeated header


def parse_csv(header: bytes, records: bytes | None, sep: str, path: Path) -> pl.DataFrame:
    """A header line and the records after it (no trailing line break; ``b""`` is one blank
    line, None none at all) as text columns, one row per record, ``_loadError`` saying what
    is wrong with a malformed one."""
    tail = (EOF_MARK.encode(), b"")
    data = b"\n".join((header, *([] if records is None else [records]), *tail))  # one copy
    try:
        frame = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False)
        errors: list[str | None] | None = None  # none: no list of a row each to build
    except (pl.exceptions.PolarsError, OSError):
        frame, errors = _read_csv_tolerant(data.decode("utf-8"), sep, path)
    frame = _with_load_errors(*_end_of_file(frame, errors))
    if data.count(b"\n") > frame.height + 2:  # a line break in a value (or blank lines)
        return _swallowed(frame, sep)
    return frame


def _swallowed(frame: pl.DataFrame, sep: str) -> pl.DataFrame:
    """Rows with a value holding a line that has a delimiter per column: a stray quote read
    the lines after it into one row (RFC 4180 allows it), malformed, not silently sent."""
    values = [c for c in frame.columns if c != LOAD_ERROR]
    if len(values) < 3:  # one or two delimiters in a line of text tell nothing
        return frame
    row_like = rf"\n(?:[^\n]*{re.escape(sep)}){{{len(values) - 1}}}"
    hit = pl.any_horizontal(pl.col(c).str.contains(row_like) for c in values).fill_null(False)
    said = pl.col(LOAD_ERROR)  # a quote never closed says so already
    swallowed = pl.when(hit & said.is_null()).then(pl.lit(SWALLOWED)).otherwise(said)
    return frame.with_columns(swallowed.alias(LOAD_ERROR))


def one_char(delimiter: str) -> str:
    sep = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
    if len(sep) != 1 or not sep.isascii() or sep in '"\r\n':
        raise ConfigError(
            f"delimiter must be 'auto' or one ASCII character other than a quote "
            f"or line break, not {delimiter!r}"
        )
    return sep


def sniff_delimiter(data: bytes) -> str:
    header = data.lstrip(b"\r\n").split(b"\n", 1)[0].decode("utf-8")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])  # ties keep the earlier, so "," wins
    return best if counts[best] else ","


def _read_csv_tolerant(text: str, sep: str, path: Path) -> tuple[pl.DataFrame, list[str | None]]:
    """Python's csv module for files polars refuses: a malformed row becomes a rejected row."""
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=False)
    rows: list[list[str | None]] = []
    errors: list[str | None] = []
    try:
        header = next(r for r in reader if r)  # polars, too, skips blank lines before the header
        for record in reader:
            width = len(record)
            errors.append(
                f"row has {width} fields, the header has {len(header)}; "
                f"the rest: {_shown(sep.join(record[len(header) :]).encode())}"
                if width > len(header)
                else None
            )
            padded: list[str | None] = [v if v != "" else None for v in record[: len(header)]]
            rows.append(padded + [None] * (len(header) - len(padded)))
    except csv.Error as exc:
        raise InputError(f"{path} can't be read as CSV: {exc}") from exc
    frame = pl.DataFrame(rows, schema=dict.fromkeys(_unique(header), pl.String), orient="row")
    return frame, errors


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, -1) + 1
        out.append(name if not seen[name] else f"{name}_duplicated_{seen[name] - 1}")
    return out


def _end_of_file(
    frame: pl.DataFrame, errors: list[str | None] | None
) -> tuple[pl.DataFrame, list[str | None] | None]:
    """Drop the end-of-file mark's row; if a value swallowed the mark, a quote was never closed."""
    swallowed = "\n" + EOF_MARK + "\n"
    frame = frame.rename(lambda name: name.removesuffix(swallowed))
    if frame.height and frame.row(-1)[0] == EOF_MARK:
        return frame.head(-1), None if errors is None else errors[:-1]
    if frame.height:
        frame = frame.with_columns(pl.all().str.strip_suffix(swallowed))
        errors = [None] * frame.height if errors is None else errors
        errors[-1] = "; ".join(filter(None, [errors[-1], UNCLOSED_QUOTE]))
    return frame, errors


def _with_load_errors(frame: pl.DataFrame, errors: list[str | None] | None = None) -> pl.DataFrame:
    """The input's columns, except any named like ours (a rejects report has ``sourceRow``),
    and ``_loadError``: why each row is malformed (null if it isn't)."""
    frame = frame.drop(SOURCE_ROW, LOAD_ERROR, strict=False)
    loaded = (
        pl.repeat(None, frame.height, dtype=pl.String, eager=True).alias(LOAD_ERROR)
        if errors is None
        else pl.Series(LOAD_ERROR, errors, dtype=pl.String)
    )
    return frame.with_columns(loaded) if frame.width else loaded.to_frame()  # blank lines only


def parse_ndjson(data: bytes) -> pl.DataFrame:
    """Lines (no trailing line break: one at the end is a blank last line), one row each.
    Polars reads them unless there are blank lines (polars would not number them), a number
    polars would round (more than 15 digits) or a surrogate escape (polars makes a lone one a
    NUL); then Python reads them line by line."""
    if not (_BLANK_LINE.search(data) or _LONG_NUMBER.search(data) or _SURROGATE.search(data)):
        try:
            names = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None).columns
            frame = pl.read_ndjson(io.BytesIO(data), schema=dict.fromkeys(names, pl.String))
        except pl.exceptions.PolarsError:
            return _read_ndjson_tolerant(data)
        empty = pl.all_horizontal(_no_value(c) for c in frame.columns) if frame.width else True
        return _with_load_errors(frame).with_columns(
            pl.when(empty).then(pl.lit(NO_VALUES)).alias(LOAD_ERROR)  # an object, not a blank
        )
    return _read_ndjson_tolerant(data)


def _no_value(column: str) -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars(BLANK) == "")


def _read_ndjson_tolerant(data: bytes) -> pl.DataFrame:
    """Line by line, numbers exact: a line that is not a JSON object becomes a rejected row."""
    records: list[dict[str, str | None]] = []
    errors: list[str | None] = []
    for line in data.split(b"\n"):
        value: object = {}
        if line.strip():
            try:
                value = json.loads(line, parse_float=Decimal, object_pairs_hook=_first_wins)
            except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                value = None
        record = {k: _scalar_text(v) for k, v in value.items()} if isinstance(value, dict) else {}
        unpaired = not _is_text(record)
        records.append({} if unpaired else record)
        blank = not any((v or "").strip(BLANK) for v in record.values())
        errors.append(
            f"line is not a JSON object: {_shown(line)}" if not isinstance(value, dict)
            else UNPAIRED if unpaired
            else NO_VALUES if line.strip() and blank
            else None
        )  # fmt: skip
    keys = list(dict.fromkeys(k for r in records for k in r))
    frame = pl.DataFrame(
        {k: [r.get(k) for r in records] for k in keys}, schema=dict.fromkeys(keys, pl.String)
    )
    return _with_load_errors(frame, errors)


def _shown(line: bytes, limit: int = 300) -> str:
    """A line as the report shows it (its fields can't be: the fixer needs its text)."""
    text = line.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_text(record: dict[str, str | None]) -> bool:
    """Whether every key and value is text (a \\u escape can make an unpaired surrogate)."""
    try:
        "".join([*record, *filter(None, record.values())]).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_wins(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A key given twice keeps its first value, as polars reads it."""
    found: dict[str, object] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found


def _scalar_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Decimal) and value.is_finite() and abs(value.adjusted()) < 100:
        return format(value, "f")  # exactly as written, without an exponent
    if isinstance(value, int | float | Decimal):
        return str(value)
    return orjson.dumps(value, default=float).decode()


def parquet_slices(path: Path, shown: Path, rows: int) -> Iterator[pl.DataFrame]:
    """The file's rows, ``rows`` at a time, as text columns."""
    try:
        scan = pl.scan_parquet(path)
        total = scan.select(pl.len()).collect().item()
        for offset in range(0, max(total, 1), rows):
            yield _with_load_errors(_as_text(scan.slice(offset, rows).collect()))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{shown} is not a readable Parquet file: {_first_line(exc)}") from exc


def excel_rows(path: Path, shown: Path) -> Iterator[pl.DataFrame]:
    """The first sheet of a workbook (.xlsx, .xlsm, .xls, .ods), every cell as its text:
    numbers as Excel shows them to a reader (12.5; a whole number without .0; Excel keeps 15
    digits), dates as ISO date-times, in the configured zone. Read whole: a sheet holds at
    most about a million rows."""
    try:
        import warnings

        with warnings.catch_warnings():  # a library's own deprecations are not the run's
            warnings.simplefilter("ignore", DeprecationWarning)
            frame = pl.read_excel(path, engine="calamine", infer_schema_length=0)
    except ModuleNotFoundError as exc:  # fastexcel: a dependency, unless someone removed it
        raise InputError(f"{shown}: reading Excel needs the fastexcel package ({exc})") from exc
    except Exception as exc:  # calamine's errors are not polars'
        raise InputError(f"{shown} is not a readable Excel workbook: {_first_line(exc)}") from exc
    yield _with_load_errors(_as_text(frame))


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text; nested values become their JSON text (and fail validation); a
    whole number stored as a float is written as one (100, not 100.0: pandas stores a column
    of integers with a null as floats, and an id must read as the CSV export of it does)."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype.is_nested():  # {"v":<json>} -> <json>
            exprs.append(
                pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(name)
            )
        elif dtype.is_float():
            whole = col.cast(pl.Int64, strict=False)
            exprs.append(
                pl.when(whole == col).then(whole.cast(pl.String)).otherwise(col.cast(pl.String))
            )
        else:
            exprs.append(col.cast(pl.String))
    return frame.select(exprs)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
