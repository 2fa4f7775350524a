"""The input as a whole, read once before any row is: its SHA-256 (the import's default
identity), its format, and the checks that make a file unreadable as a whole — missing,
empty, binary, not UTF-8, a broken gzip — so that no row of such a file is ever sent.
A gzipped input is decompressed, on the way, into a temporary file the readers stream from.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from pipeline.errors import ConfigError, InputError

BLOCK = 8 << 20
HEAD = 64 << 10  # how much of the start decides the format and the binary check
BOM = b"\xef\xbb\xbf"
FORMATS = ("csv", "tsv", "ndjson", "parquet")
EXTENSIONS = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
    ".pq": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson",
}  # fmt: skip


@dataclass(frozen=True)
class Source:
    """An input file, checked, and where its (decompressed) bytes can be read."""

    path: Path  # as the user named it
    data: Path  # the bytes to parse: the file itself, or its decompressed copy
    sha256: str  # of the bytes as stored
    format: str
    text_start: int  # offset past a BOM
    line_breaks: bool  # holds a "\n" (else classic Mac "\r" line ends)
    size: int  # the bytes of ``data`` hashed: no more are read (an export still being written)
    stat: tuple[int, int]  # of ``path`` when it was hashed: size, mtime (ns)

    def changed(self) -> bool:
        """Whether ``path`` holds more or other than what was hashed (grown, rewritten; or only
        its first bytes were read); a file moved away since is not changed."""
        try:
            now = self.path.stat()
        except OSError:
            return False
        unread = self.data == self.path and now.st_size > self.size
        return (now.st_size, now.st_mtime_ns) != self.stat or unread

    def earlier_part(self, known: Sequence[tuple[int, str]]) -> tuple[int, str] | None:
        """Of ``known`` (size, sha256) pairs, the largest one whose first bytes of the file,
        as stored now, are those hashed, ending where a row ends (at a line break): what an
        earlier import read of it, before rows were appended. One pass over the file. Never
        for a compressed file or Parquet."""
        if self.data != self.path or self.format == "parquet":
            return None
        try:
            now = self.path.stat().st_size
        except OSError:
            return None
        wanted = sorted((size, sha) for size, sha in known if 0 < size < now)
        found, digest, last = None, hashlib.sha256(), b""
        with self.path.open("rb") as handle:
            for size, sha256 in wanted:
                while handle.tell() < size:
                    block = handle.read(min(BLOCK, size - handle.tell()))
                    if not block:  # cut short since
                        return found
                    digest.update(block)
                    last = block[-1:]
                after = handle.read(1)
                handle.seek(size)
                whole = last in (b"\n", b"\r") or after in (b"\n", b"\r")
                if whole and digest.copy().hexdigest() == sha256:
                    found = (size, sha256)
        return found


@contextmanager
def open_source(path: Path, fmt: str = "auto") -> Iterator[Source]:
    """Check ``path`` whole and yield it as a Source; a temporary copy is removed after."""
    if fmt not in ("auto", *FORMATS):
        raise ConfigError(f"input format must be auto, {', '.join(FORMATS)}; not {fmt!r}")
    scan = _Scan()
    copy: Path | None = None
    try:
        with _opened(path) as raw:
            before = os.fstat(raw.fileno())
            copy = _read(raw, path, scan)
        fmt = _detect(path, scan.head) if fmt == "auto" else fmt
        if fmt != "parquet":
            scan.check_text(path)
        sha256, size = scan.sha256.hexdigest(), scan.size
        if copy is None and fmt != "parquet":
            sha256, size = scan.whole_rows(path)
        yield Source(
            path,
            copy or path,
            sha256,
            fmt,
            len(BOM) if scan.head.startswith(BOM) else 0,
            scan.line_breaks,
            size,
            (before.st_size, before.st_mtime_ns),
        )
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input {path} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"input file {path} can't be read: {exc.strerror}") from exc
    with handle:
        yield handle


def _read(raw: BinaryIO, path: Path, scan: _Scan) -> Path | None:
    """Feed every block to ``scan``; a gzip is inflated into a temporary file, returned."""
    first = raw.read(BLOCK)
    if not first.startswith(b"\x1f\x8b"):
        for block in _blocks(raw, first):
            scan.stored(block)
            scan.feed(block)
        return None
    fd, name = tempfile.mkstemp(prefix="points-import-", suffix=".in")
    with os.fdopen(fd, "wb") as out:
        try:
            _inflate(_blocks(raw, first), scan, out)
        except zlib.error as exc:
            Path(name).unlink(missing_ok=True)
            raise InputError(f"{path} is a broken gzip file: {exc}") from None
    return Path(name)


def _inflate(blocks: Iterator[bytes], scan: _Scan, out: BinaryIO) -> None:
    """Every member of a gzip file (``cat a.gz b.gz``, pigz and bgzip make several), in turn;
    zero bytes after a member are padding."""
    inflate: Any = zlib.decompressobj(wbits=31)  # None between members
    for block in blocks:
        scan.stored(block)
        data = block
        while data:
            if inflate is None:
                data = data.lstrip(b"\0")  # padding, wherever a block ends
                if not data:
                    break
                inflate = zlib.decompressobj(wbits=31)
            text = inflate.decompress(data)
            scan.feed(text)
            out.write(text)
            if not inflate.eof:
                break
            data, inflate = inflate.unused_data, None
    if inflate is not None and not inflate.eof:
        raise zlib.error("the compressed data ends too early")


def _blocks(raw: BinaryIO, first: bytes) -> Iterator[bytes]:
    block = first
    while block:
        yield block
        block = raw.read(BLOCK)


class _Scan:
    """What one pass over the bytes learns: hash, head, UTF-8 validity, line breaks."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.head = b""
        self.size = 0
        self.blank = True
        self.line_breaks = False
        self.bad_utf8: tuple[int, int] | None = None  # (offset, byte)
        self._carry = b""  # a character cut by the end of a block
        self._stored = 0
        self.to_line: tuple[Any, int] | None = None  # the hash, bytes through the last "\n"

    def stored(self, block: bytes) -> None:
        at = block.rfind(b"\n")
        if at >= 0:
            self.sha256.update(memoryview(block)[: at + 1])
            self.to_line = (self.sha256.copy(), self._stored + at + 1)
            block = block[at + 1 :]
        self.sha256.update(block)
        self._stored += at + 1 + len(block)

    def whole_rows(self, path: Path) -> tuple[str, int]:
        """The hash and size of what is read of a plain file: all of it, but a file that grew
        while it was hashed (still being written) only to its last line break, as the row
        after it may be cut short (it is read whole next time)."""
        try:
            grew = path.stat().st_size > self._stored
        except OSError:
            grew = False
        if grew and self.to_line is not None and self.to_line[1] < self._stored:
            digest, size = self.to_line
            return digest.hexdigest(), size
        return self.sha256.hexdigest(), self.size

    def feed(self, data: bytes) -> None:
        if len(self.head) < HEAD:
            self.head += data[: HEAD - len(self.head)]
        if self.blank:
            self.blank = not data.strip()
        self.line_breaks = self.line_breaks or b"\n" in data
        if self.bad_utf8 is None and not (data.isascii() and not self._carry):
            self._check_utf8(data)
        self.size += len(data)

    def _check_utf8(self, data: bytes) -> None:
        """polars checks UTF-8 (fast, no text made); Python finds where it breaks."""
        start, text = self.size - len(self._carry), self._carry + data
        end = _whole_characters(text)
        self._carry = text[end:]
        try:
            pl.Series([text[:end]], dtype=pl.Binary).cast(pl.String)
        except pl.exceptions.ComputeError:
            try:
                text[:end].decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad_utf8 = (start + exc.start, text[exc.start])

    def check_text(self, path: Path) -> None:
        if self.blank or not self.head.removeprefix(BOM).strip():
            raise InputError(f"{path} is empty: no header, no rows")
        if _binary(self.head.removeprefix(BOM), self.bad_utf8 is not None):
            raise InputError(
                f"{path} looks binary (it holds NUL bytes), not CSV, TSV or NDJSON text"
            )
        if self.bad_utf8 is None and self._carry:  # the file ends inside a character
            self.bad_utf8 = (self.size - len(self._carry), self._carry[0])
        if self.bad_utf8 is not None:
            offset, byte = self.bad_utf8
            raise InputError(
                f"{path} is not UTF-8 text (byte 0x{byte:02x} at offset {offset});"
                " convert it first, e.g. iconv -f latin1 -t utf-8"
            )


def _binary(head: bytes, not_utf8: bool) -> bool:
    """NUL bytes in the first line, more than a few, or with bytes that are not UTF-8:
    UTF-16, a spreadsheet, an image. (One in a row of text is that row's problem: a rejects
    report can hold one, and must load again.)"""
    nuls = head.count(b"\x00")
    first_line = head.split(b"\n", 1)[0]
    return bool(nuls) and (not_utf8 or b"\x00" in first_line or nuls > max(8, len(head) // 1000))


def _whole_characters(data: bytes) -> int:
    """Where the last UTF-8 character that ``data`` holds whole ends."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation: the last character starts here
            length = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if length > back else len(data)
    return len(data)


def _detect(path: Path, head: bytes) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in EXTENSIONS:
        return EXTENSIONS[suffixes[-1]]
    if head.startswith(b"PAR1"):
        return "parquet"
    return "ndjson" if head.lstrip(BOM + b" \t\r\n").startswith(b"{") else "csv"
