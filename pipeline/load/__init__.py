"""Load: read an input file, in pieces of bounded size, into frames of text columns named
like the API's fields.

Every value stays text so that a bad value becomes a row-level rejection in ``validate``,
never a crash or a silent null. Every row keeps its 1-based data row number, ``sourceRow``
(a quoted field spanning lines is one row; a blank line is not a row but has a number).
Whatever makes the file unreadable as a whole (missing, empty, not UTF-8, binary, no header,
a required column missing) is an ``InputError`` raised before the first piece: exit 2,
nothing sent. Memory does not grow with the file: pieces are ``chunk_bytes`` of text (or
that many rows of Parquet) at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl
import structlog

from pipeline.load.columns import canonical_columns, number_rows
from pipeline.load.formats import (
    excel_rows,
    one_char,
    parquet_slices,
    parse_csv,
    parse_ndjson,
    sniff_delimiter,
)
from pipeline.load.source import Source, open_source

log = structlog.get_logger("pipeline.load")
CHUNK_BYTES = 8 << 20
FIRST_PIECE = 1 << 20  # the first batches go out soon; bigger pieces follow

__all__ = [
    "CHUNK_BYTES",
    "Loaded",
    "Source",
    "load",
    "open_source",
    "read_chunks",
]


@dataclass(frozen=True)
class Loaded:
    """The rows of one input, as text, with their source row numbers."""

    frame: pl.DataFrame  # FIELDS as String, sourceRow (Int64), _loadError, _rowId (String)
    sha256: str  # of the file's bytes as stored
    format: str


def load(
    path: Path, fmt: str = "auto", delimiter: str = "auto", columns: Mapping[str, str] | None = None
) -> Loaded:
    """The whole input in one frame (for small files and tests; runs use ``read_chunks``)."""
    with open_source(path, fmt) as source:
        frames = list(read_chunks(source, delimiter, columns))
    return Loaded(pl.concat(frames), source.sha256, source.format)


def read_chunks(
    source: Source,
    delimiter: str = "auto",
    columns: Mapping[str, str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    id_column: str = "",
) -> Iterator[pl.DataFrame]:
    """The input's rows, piece by piece, in canonical columns (at least one, maybe empty);
    with an ``id_column``, its values as ``_rowId``."""
    if source.format == "parquet":
        raws = parquet_slices(source.data, source.path, max(1, chunk_bytes // 128))
    elif source.format == "excel":
        raws = excel_rows(source.data, source.path)
    elif source.format == "ndjson":
        raws = (parse_ndjson(piece) for piece in _pieces(source, chunk_bytes, quoted=False))
    else:
        raws = _csv_frames(source, delimiter, chunk_bytes)
    offset, named = 0, False  # NDJSON: the first piece with keys must have the required ones
    for raw in raws:
        keys = raw.width > 1  # more than _loadError: not only blank lines
        strict = source.format != "ndjson" or (keys and not named)
        named = named or keys
        numbered = number_rows(raw, offset)
        yield canonical_columns(numbered, source.path, columns or {}, strict, id_column)
        offset += raw.height


def _csv_frames(source: Source, delimiter: str, chunk_bytes: int) -> Iterator[pl.DataFrame]:
    pieces = _pieces(source, chunk_bytes, quoted=True)
    header = next(pieces)
    if delimiter == "auto":
        sep = "\t" if source.format == "tsv" else sniff_delimiter(header)
    else:
        sep = one_char(delimiter)
        if sep.encode() not in header:  # a rejects report fed back: "," whatever the input had
            sep, said = sniff_delimiter(header), sep
            log.warning("the header holds no configured delimiter: read with the one it holds",
                        configured=said, read_with=sep)  # fmt: skip
    first = True
    for piece in pieces:
        first = False
        yield parse_csv(header, piece, sep, source.path)
    if first:  # a header and no rows: a quiet night
        yield parse_csv(header, None, sep, source.path)


def _pieces(source: Source, chunk_bytes: int, quoted: bool) -> Iterator[bytes]:
    """For CSV, the header line first; then runs of whole records (lines), each without its
    last line break."""
    with source.data.open("rb") as handle:
        handle.seek(source.text_start)
        left = source.size - source.text_start  # what was hashed: rows appended since are not
        if not source.line_breaks:  # classic Mac line ends: small files, read whole
            text = handle.read(left).replace(b"\r", b"\n")
            yield from _split(text.lstrip(b"\r\n"), quoted)
            return
        yield from _stream(_Capped(handle, left), chunk_bytes, quoted)


def _split(text: bytes, quoted: bool) -> Iterator[bytes]:
    if quoted:
        end = _record_end(text)
        header, text = (text, b"") if end < 0 else (text[:end], text[end + 1 :])
        yield header
    if text.strip(b"\r\n"):
        yield text


class _Capped:
    """A file read no further than ``left`` bytes."""

    def __init__(self, handle: BinaryIO, left: int) -> None:
        self.handle, self.left = handle, left

    def read(self, size: int) -> bytes:
        block = self.handle.read(min(size, self.left))
        self.left -= len(block)
        return block


class _Reader:
    """A file read in blocks into a growing buffer."""

    def __init__(self, handle: _Capped, size: int) -> None:
        self.handle, self.size = handle, size
        self.buffer, self.eof = b"", False

    def fill(self, at_least: int) -> None:
        while not self.eof and len(self.buffer) < at_least:
            block = self.handle.read(self.size)
            self.eof = not block
            self.buffer += block

    def take(self, end: int) -> bytes:
        """The buffer up to ``end`` (a line break, dropped)."""
        piece, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
        return piece


def _stream(handle: _Capped, chunk_bytes: int, quoted: bool) -> Iterator[bytes]:
    """Pieces of ``chunk_bytes``; the first ones smaller (from FIRST_PIECE, doubling), so that
    the first batch is ready, and sent, soon after the start."""
    reader = _Reader(handle, chunk_bytes)
    if quoted:
        yield _header(reader)
    size = min(FIRST_PIECE, chunk_bytes)
    while True:
        reader.fill(size)
        if reader.eof:
            if reader.buffer.strip(b"\r\n"):
                yield reader.buffer  # a final line break parses as a blank line: harmless
            return
        end = _last_record_end(reader.buffer, quoted, size)
        if end < 0:  # a record longer than a piece: read on
            size = len(reader.buffer) + chunk_bytes
            reader.fill(size)
            continue
        yield reader.take(end)
        size = min(2 * size, chunk_bytes)


def _header(reader: _Reader) -> bytes:
    """The first line that is not blank (a quoted header may span lines)."""
    while True:
        reader.fill(len(reader.buffer) + 1)
        reader.buffer = reader.buffer.lstrip(b"\r\n")
        end = _record_end(reader.buffer)
        if end >= 0:
            return reader.take(end).removesuffix(b"\r")
        if reader.eof:
            header, reader.buffer = reader.buffer, b""
            return header


def _record_end(buffer: bytes) -> int:
    """The first line break outside quotes, or -1."""
    start = 0
    while (end := buffer.find(b"\n", start)) >= 0:
        if buffer.count(b'"', 0, end) % 2 == 0:
            return end
        start = end + 1
    return -1


def _last_record_end(buffer: bytes, quoted: bool, limit: int) -> int:
    """The last line break before ``limit`` that ends a record (outside quotes), or -1."""
    end = buffer.rfind(b"\n", 0, limit)
    if end < 0 or not quoted:
        return end
    quotes = buffer.count(b'"', 0, end)
    while end >= 0 and quotes % 2:
        previous = buffer.rfind(b"\n", 0, end)
        quotes -= buffer.count(b'"', max(previous, 0), end)
        end = previous
    return end
