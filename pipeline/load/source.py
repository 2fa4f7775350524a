"""The input as a whole, read once before any row is: its SHA-256 (the import's default
identity), its format, and the checks that make a file unreadable as a whole — missing,
empty, binary, not in its encoding, a broken gzip — so that no row of such a file is ever
sent. A gzipped input is decompressed, and text in another encoding than UTF-8 (``[input]
encoding``, or UTF-16 with its byte order mark) made UTF-8, on the way, into a temporary file
the readers stream from.
"""

from __future__ import annotations

import codecs
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
FORMATS = ("csv", "tsv", "ndjson", "parquet", "excel")
BINARY = ("parquet", "excel")  # not text: no encoding, no line checks
EXTENSIONS = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
    ".pq": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson",
    ".xlsx": "excel", ".xlsm": "excel", ".xls": "excel", ".ods": "excel",
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
        if self.data != self.path or self.format in BINARY:
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
def open_source(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> Iterator[Source]:
    """Check ``path`` whole and yield it as a Source; a temporary copy is removed after."""
    if fmt not in ("auto", *FORMATS):
        raise ConfigError(f"input format must be auto, {', '.join(FORMATS)}; not {fmt!r}")
    scan = _Scan()
    copy: Path | None = None
    try:
        with _opened(path) as raw:
            before = os.fstat(raw.fileno())
            try:
                copy = _read(raw, path, scan, encoding, fmt)
            except _IsUtf8:  # a rejects report fed back, say: UTF-8, whatever the input was
                raw.seek(0)
                scan = _Scan()
                copy = _read(raw, path, scan, "utf-8", fmt)
        fmt = _detect(path, scan.head) if fmt == "auto" else fmt
        if fmt not in BINARY:
            scan.check_text(path)
        sha256, size = scan.sha256.hexdigest(), scan.size
        if copy is None and fmt not in BINARY:
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


def _read(raw: BinaryIO, path: Path, scan: _Scan, encoding: str, fmt: str) -> Path | None:
    """Feed every block to ``scan``; a gzip is inflated, and text in another encoding made
    UTF-8, into a temporary file, returned."""
    first = raw.read(BLOCK)
    gzipped = first.startswith(b"\x1f\x8b")
    binary = (fmt if fmt != "auto" else _detect(path, first[:HEAD])) in BINARY
    recode = None if binary else _Recoder.of(encoding, path, first if not gzipped else None)
    if not gzipped and recode is None:
        for block in _blocks(raw, first):
            scan.stored(block)
            scan.feed(block)
        return None
    fd, name = tempfile.mkstemp(prefix="points-import-", suffix=".in")
    try:
        with os.fdopen(fd, "wb") as out:
            write = _Writer(scan, out, recode, path)
            if gzipped:
                _inflate(_blocks(raw, first), scan, write)
            else:
                for block in _blocks(raw, first):
                    scan.stored(block)
                    write(block)
            write.close()
    except zlib.error as exc:
        Path(name).unlink(missing_ok=True)
        raise InputError(f"{path} is a broken gzip file: {exc}") from None
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


class _Writer:
    """Text on its way to the temporary copy: recoded when it must be, then scanned."""

    def __init__(self, scan: _Scan, out: BinaryIO, recode: _Recoder | None, path: Path) -> None:
        self.scan, self.out, self.recode, self.path = scan, out, recode, path

    def __call__(self, data: bytes) -> None:
        marked = _marked(data) if self.scan.size == 0 else None
        if marked and (self.recode is None or self.recode.encoding != marked):
            self.recode = _Recoder(marked, self.path)  # a gzipped file's byte order mark
        text = self.recode(data) if self.recode else data
        self.scan.feed(text)
        self.out.write(text)

    def close(self) -> None:
        if self.recode is not None:
            tail = self.recode(b"", final=True)
            self.scan.feed(tail)
            self.out.write(tail)


class _IsUtf8(Exception):
    """Declared in a one-byte encoding, the text is UTF-8 with accents: read as UTF-8."""


class _Recoder:
    """Text in ``encoding`` as UTF-8, block by block; bytes that are not ``encoding`` are an
    ``InputError`` naming the line. A file declared in a one-byte encoding (cp1252, latin-1)
    that is UTF-8 with accents (a rejects report fed back, say) is read as UTF-8: read as
    declared, it would be mojibake (ö as Ã¶), and such bytes are almost never cp1252 text."""

    def __init__(self, encoding: str, path: Path) -> None:
        self.encoding, self.path = encoding, path
        self.decoder = codecs.getincrementaldecoder(encoding)("strict")
        self.one_byte = _one_byte(encoding)
        self.utf8 = codecs.getincrementaldecoder("utf-8")("strict") if self.one_byte else None
        self.accents = False
        self.line = 1

    @classmethod
    def of(cls, encoding: str, path: Path, first: bytes | None) -> _Recoder | None:
        """The recoder ``encoding`` needs (None for UTF-8): a byte order mark says UTF-16
        or UTF-32 whatever the config guessed; a file set as UTF-16 or UTF-32 without one,
        and without a NUL byte, is UTF-8 text (a rejects report fed back)."""
        name = _codec(encoding)
        marked = _marked(first or b"")
        if marked:
            return cls(marked, path)
        if name.startswith(("utf-16", "utf-32")) and first is not None and b"\0" not in first:
            return None
        return None if name == "utf-8" else cls(name, path)

    def __call__(self, data: bytes, final: bool = False) -> bytes:
        try:
            text = self.decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            line = self.line + data[: exc.start].decode(self.encoding, "replace").count("\n")
            raise InputError(
                f"{self.path} is not {self.encoding} text: byte 0x{exc.object[exc.start]:02x}"
                f" on line {line} can't be read; check [input] encoding"
            ) from None
        except UnicodeError as exc:  # a stream without the mark its codec wants, say
            raise InputError(f"{self.path} is not {self.encoding} text: {exc}") from None
        self.line += text.count("\n")
        self._check_not_utf8(data, final)
        return text.encode("utf-8")

    def _check_not_utf8(self, data: bytes, final: bool) -> None:
        if self.utf8 is None:
            return
        self.accents = self.accents or not data.isascii()
        try:
            self.utf8.decode(data, final)
        except UnicodeDecodeError:
            self.utf8 = None  # not UTF-8: the declared encoding stands
            return
        if final and self.accents:
            raise _IsUtf8


def _marked(first: bytes) -> str | None:
    """The encoding a byte order mark at the start says, if any."""
    if first.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def _codec(encoding: str) -> str:
    try:
        found = codecs.lookup(encoding)
        if not getattr(found, "_is_text_encoding", True):  # rot13, base64: not a text's bytes
            raise LookupError(encoding)
        return found.name
    except LookupError:
        raise ConfigError(
            f"unknown [input] encoding {encoding!r}; e.g. utf-8, cp1252, utf-16"
        ) from None


def _one_byte(encoding: str) -> bool:
    """Whether every byte is a character of its own (cp1252, latin-1; not UTF-16, Shift JIS)."""
    try:
        return len(codecs.getincrementaldecoder(encoding)().decode(b"\xe4")) == 1
    except UnicodeDecodeError:
        return False


def _inflate(blocks: Iterator[bytes], scan: _Scan, write: _Writer) -> None:
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
            write(inflate.decompress(data))
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
                f"{path} is not UTF-8 text (byte 0x{byte:02x} at offset {offset}); set its"
                ' encoding, e.g. [input] encoding = "cp1252" for a Windows export'
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
    if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # zip (xlsx, ods), OLE (xls)
        return "excel"
    return "ndjson" if head.lstrip(BOM + b" \t\r\n").startswith(b"{") else "csv"
