"""Grown: the input is a file an earlier import read, with rows appended since (the day's
export run again after late rows came in, or a file still being written when it was read).

Its first bytes are that import's, byte for byte (the same path; their SHA-256 is the one
the journal holds), ending where a row ends: the rows in them were that import's, and only
the rows after them are read, as a new import. Under new keys, sending them all again would
award the earlier rows twice. If that import is unfinished, this run finishes it first, from
its own bytes, and the next run reads the rest. Only for an import id taken from the file's
hash (an ``--import-id`` names a file that is not expected to grow).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import Config
from pipeline.journal import FINISHED, ImportRecord, Journal
from pipeline.load import Source, read_chunks
from pipeline.model import LOAD_ERROR, SOURCE_ROW


@dataclass(frozen=True)
class Continued:
    """An import that reads on where an earlier one, of the same file, stopped."""

    import_id: str  # the earlier import
    through_row: int  # the last row number it held: rows after it are this import's


def grown(
    journal: Journal, source: Source, path: Path, config: Config
) -> tuple[Source, Continued | None]:
    """``source`` and what it continues; or, if the earlier import is unfinished, its part of
    the file, to finish it first."""
    if journal.find(source.sha256[:16]) is not None:  # this very file: a re-run
        return source, None
    earlier = _earlier(journal, source, path)
    if earlier is None or earlier.input_bytes is None:
        return source, None
    before = replace(source, size=earlier.input_bytes, sha256=earlier.input_sha256)
    if earlier.status != FINISHED:
        return before, None
    through = _last_row(before, config)
    return source, Continued(earlier.import_id, through) if through else None


def as_read(record: ImportRecord, source: Source) -> Source:
    """``source`` as ``record``'s import read it: its first bytes, if the file grew since."""
    if record.input_sha256 == source.sha256 or not record.input_bytes:
        return source
    if source.earlier_part([(record.input_bytes, record.input_sha256)]) is None:
        return source  # rewritten: not its file any more
    return replace(source, size=record.input_bytes, sha256=record.input_sha256)


def _earlier(journal: Journal, source: Source, path: Path) -> ImportRecord | None:
    """The import of ``path`` (however written) whose bytes are the most of this file's first
    ones; one named by them: not a --force'd copy, nor one given an --import-id."""
    imports = [
        r
        for r in journal.imports()
        if r.input_bytes
        and r.import_id == r.input_sha256[:16]
        and Path(r.input_path).resolve() == path.resolve()
    ]
    found = source.earlier_part([(r.input_bytes or 0, r.input_sha256) for r in imports])
    return next((r for r in imports if (r.input_bytes, r.input_sha256) == found), None)


def _last_row(source: Source, config: Config) -> int:
    """The number of the last whole row in ``source`` (blank lines after it are no rows). A
    last row that is malformed may have been cut (a quoted value's line break, where the file
    ended when it was read): it was rejected then, and is read again, whole."""
    last, cut = 0, False
    for frame in read_chunks(source, config.input.delimiter, config.columns):
        if frame.height:
            row = frame.row(frame.height - 1, named=True)
            last, cut = int(row[SOURCE_ROW]), row[LOAD_ERROR] is not None
    return last - 1 if cut else last
