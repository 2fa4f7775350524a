"""Load: read an input file into a frame of text columns named like the API's fields.

Every value stays text so that a bad value becomes a row-level rejection in ``validate``,
never a crash or a silent null. Every row keeps its 1-based data row number, ``sourceRow``.
Whatever makes the file unreadable as a whole (missing, empty, not UTF-8, binary, no header,
a required column missing) is an ``InputError``: exit 2, nothing sent.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl

from pipeline.engage import FIELDS, OPTIONAL_FIELDS, REQUIRED_FIELDS
from pipeline.errors import ConfigError, InputError

SOURCE_ROW = "sourceRow"
LOAD_ERROR = "_loadError"
DELIMITERS = (",", ";", "\t", "|")
BOM = b"\xef\xbb\xbf"
BLANK = " \t\r\n"  # what a blank line, or a line of only delimiters, holds
EOF_MARK = "\u2403"  # appended to CSV text as a last line: a quote never closed swallows it
UNCLOSED_QUOTE = "a quote opened in this row is never closed: the rest of the file was read into it"
_BLANK_LINE = re.compile(rb"(?:\A|\n)[ \t\r]*\n")
_LONG_NUMBER = re.compile(rb"[0-9](?:\.?[0-9]){15}")  # 16+ digits: polars' float would round
_DUPLICATE = re.compile(r"_duplicated_[0-9]+$")  # how polars names a repeated header
EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}


@dataclass(frozen=True)
class Loaded:
    """The rows of one input, as text, with their source row numbers."""

    frame: pl.DataFrame  # FIELDS as String, sourceRow (Int64), _loadError (String)
    sha256: str  # of the file's bytes as stored
    format: str


def load(
    path: Path, fmt: str = "auto", delimiter: str = "auto", columns: Mapping[str, str] | None = None
) -> Loaded:
    """Read ``path`` (CSV, TSV, Parquet or NDJSON, optionally gzipped) into canonical columns."""
    raw = _read_bytes(path)
    data = _gunzip(raw, path)
    fmt = _detect_format(path, data) if fmt == "auto" else fmt
    if fmt not in _READERS:
        raise ConfigError(f"input format must be auto, {', '.join(_READERS)}; not {fmt!r}")
    frame = _number_rows(_READERS[fmt](data, path, delimiter))
    frame = _canonical_columns(frame, path, columns or {})
    return Loaded(frame, hashlib.sha256(raw).hexdigest(), fmt)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input {path} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"input file {path} can't be read: {exc.strerror}") from exc


def _gunzip(raw: bytes, path: Path) -> bytes:
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path} is a broken gzip file: {exc}") from exc


def _detect_format(path: Path, data: bytes) -> str:
    suffixes = [s for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1].lower() in EXTENSIONS:
        return EXTENSIONS[suffixes[-1].lower()]
    if data.startswith(b"PAR1"):
        return "parquet"
    return "ndjson" if data.lstrip(BOM + b" \t\r\n").startswith(b"{") else "csv"


def _text(data: bytes, path: Path) -> bytes:
    """The bytes of a text format without a BOM, checked to be non-empty, non-binary UTF-8."""
    data = data.removeprefix(BOM)
    if not data.strip():
        raise InputError(f"{path} is empty: no header, no rows")
    if b"\x00" in data[:65536]:
        raise InputError(f"{path} looks binary (it holds NUL bytes), not CSV, TSV or NDJSON text")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return data


def _read_csv(data: bytes, path: Path, delimiter: str) -> pl.DataFrame:
    data = _text(data, path)
    if b"\n" not in data:
        data = data.replace(b"\r", b"\n")  # classic Mac line ends (Excel's "CSV (Macintosh)")
    sep = _sniff_delimiter(data) if delimiter == "auto" else _one_char(delimiter)
    data += b"\n" + EOF_MARK.encode() + b"\n"
    try:
        frame = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False)
        errors: list[str | None] = [None] * frame.height
    except (pl.exceptions.PolarsError, OSError):
        frame, errors = _read_csv_tolerant(data.decode("utf-8"), sep, path)
    return _with_load_errors(*_end_of_file(frame, errors))


def _read_tsv(data: bytes, path: Path, delimiter: str) -> pl.DataFrame:
    return _read_csv(data, path, "\t" if delimiter == "auto" else delimiter)


def _one_char(delimiter: str) -> str:
    sep = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
    if len(sep) != 1 or not sep.isascii() or sep in '"\r\n':
        raise ConfigError(
            f"delimiter must be 'auto' or one ASCII character other than a quote "
            f"or line break, not {delimiter!r}"
        )
    return sep


def _sniff_delimiter(data: bytes) -> str:
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
                f"row has {width} fields, the header has {len(header)}"
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
    frame: pl.DataFrame, errors: list[str | None]
) -> tuple[pl.DataFrame, list[str | None]]:
    """Drop the end-of-file mark's row; if a value swallowed the mark, a quote was never closed."""
    swallowed = "\n" + EOF_MARK + "\n"
    frame = frame.rename(lambda name: name.removesuffix(swallowed))
    if frame.height and frame.row(-1)[0] == EOF_MARK:
        return frame.head(-1), errors[:-1]
    if frame.height:
        frame = frame.with_columns(pl.all().str.strip_suffix(swallowed))
        errors[-1] = "; ".join(filter(None, [errors[-1], UNCLOSED_QUOTE]))
    return frame, errors


def _with_load_errors(frame: pl.DataFrame, errors: list[str | None] | None = None) -> pl.DataFrame:
    """The input's columns, except any named like ours (a rejects report has ``sourceRow``),
    and ``_loadError``: why each row is malformed (null if it isn't)."""
    frame = frame.drop(SOURCE_ROW, LOAD_ERROR, strict=False)
    errors = [None] * frame.height if errors is None else errors
    return frame.with_columns(pl.Series(LOAD_ERROR, errors, dtype=pl.String))


def _read_ndjson(data: bytes, path: Path, delimiter: str) -> pl.DataFrame:
    """Polars reads the file unless it has blank lines (polars would not number them) or a
    number polars would round (more than 15 digits); then Python reads it line by line."""
    data = _text(data, path)
    if not (_BLANK_LINE.search(data) or _LONG_NUMBER.search(data)):
        try:
            names = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None).columns
            frame = pl.read_ndjson(io.BytesIO(data), schema=dict.fromkeys(names, pl.String))
            return _with_load_errors(frame)
        except pl.exceptions.PolarsError:
            pass
    return _read_ndjson_tolerant(data)


def _read_ndjson_tolerant(data: bytes) -> pl.DataFrame:
    """Line by line, numbers exact: a line that is not a JSON object becomes a rejected row."""
    records: list[dict[str, str | None]] = []
    errors: list[str | None] = []
    for line in data.split(b"\n"):
        value: object = {}
        if line.strip():
            try:
                value = json.loads(line, parse_float=Decimal)
            except ValueError:
                value = None
        records.append(
            {k: _scalar_text(v) for k, v in value.items()} if isinstance(value, dict) else {}
        )
        errors.append(None if isinstance(value, dict) else "line is not a JSON object")
    keys = list(dict.fromkeys(k for r in records for k in r))
    frame = pl.DataFrame(
        {k: [r.get(k) for r in records] for k in keys}, schema=dict.fromkeys(keys, pl.String)
    )
    return _with_load_errors(frame, errors)


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


def _read_parquet(data: bytes, path: Path, delimiter: str) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from exc
    return _with_load_errors(_as_text(frame))


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text; nested values become their JSON text (and fail validation)."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype.is_nested():  # {"v":<json>} -> <json>
            exprs.append(
                pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(name)
            )
        else:
            exprs.append(col.cast(pl.String))
    return frame.select(exprs)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


_BY_KEY = {_key(f): f for f in FIELDS}


def _canonical_columns(frame: pl.DataFrame, path: Path, mapping: Mapping[str, str]) -> pl.DataFrame:
    """Rename headers to the API's fields (any case and spacing, or by [columns])."""
    by_key = {**_BY_KEY, **{_key(k): v for k, v in mapping.items()}}
    found = [c for c in frame.columns if c not in (LOAD_ERROR, SOURCE_ROW)]
    renames: dict[str, str] = {}
    headers: dict[str, str] = {}  # field -> the header it is read from
    for name in found:
        header = _DUPLICATE.sub("", name)  # a repeated header counts as the same name
        header = header if header in frame.columns else name
        target = mapping.get(header) or by_key.get(_key(header))
        if target is None:
            continue
        if target in headers:
            raise InputError(
                f"{path} has two columns for {target}: {_show(headers[target])!r} "
                f"and {_show(header)!r}; drop one or map it in [columns] of the config"
            )
        renames[name], headers[target] = target, header
    _require(path, found, set(renames.values()))
    frame = frame.select([*renames, SOURCE_ROW, LOAD_ERROR]).rename(renames)
    missing = [pl.lit(None, dtype=pl.String).alias(f) for f in OPTIONAL_FIELDS if f not in frame]
    return frame.with_columns(missing).select([*FIELDS, SOURCE_ROW, LOAD_ERROR])


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


def _number_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Number the data rows from 1, then drop rows with no value in any column (blank lines).

    An empty value is null, whether it was written as nothing or as ``""``.
    """
    values = [c for c in frame.columns if c != LOAD_ERROR]
    numbered = frame.with_row_index(SOURCE_ROW, offset=1).with_columns(
        pl.col(SOURCE_ROW).cast(pl.Int64),
        *[pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in values],
    )
    if not values:
        return numbered
    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars(BLANK) == "") for c in values]
    )
    return numbered.filter(~blank | pl.col(LOAD_ERROR).is_not_null())


_READERS: dict[str, Callable[[bytes, Path, str], pl.DataFrame]] = {
    "csv": _read_csv,
    "tsv": _read_tsv,
    "ndjson": _read_ndjson,
    "parquet": _read_parquet,
}
