"""The plan, streamed: the input's pieces loaded, validated and cut into batches as they are
needed, so that memory does not grow with the file. The invalid rows and the counts are
kept on the way for the report; the valid rows live only in the batches not yet settled.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import polars as pl
import structlog

from pipeline.ahead import mapped, prefetched
from pipeline.chunk import Batch, Chunker
from pipeline.config import Config
from pipeline.frames import detached
from pipeline.load import CHUNK_BYTES, Source, read_chunks
from pipeline.model import REASON, SOURCE_ROW
from pipeline.spool import Spool
from pipeline.validate import Checked, Rules, Seen, as_rejects, dedupe, describe, screen
from pipeline.validate.landed import Sorted

log = structlog.get_logger("pipeline.plan")
TEXT_FORMATS = ("csv", "tsv")  # where amounts are written in the local spelling
SCREENERS = 2  # pieces screened at once (most of the work is in polars, off the GIL)
DESCRIBE_AT = 50_000  # failing rows held before pandera describes them


@dataclass
class Tally:
    """What the plan saw: rows read, valid and invalid (these with the input's text, spooled:
    a file of millions of invalid rows is reported in bounded memory). The rows failing a rule
    are described (pandera says why) in bulk, not piece by piece."""

    read: int = 0
    valid: int = 0
    batches: int = 0
    landed: int = 0  # valid rows another import landed: not sent, not rejected
    landed_in: Counter[str] = field(default_factory=Counter)  # of those, where they landed
    held: int = 0  # valid rows held back (another import may send them): rejected
    described: Spool = field(default_factory=Spool)
    failing: list[pl.DataFrame] = field(default_factory=list)  # reasons yet to be given
    rules: Rules = field(default_factory=Rules)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def invalid(self) -> Spool:
        """The invalid rows so far: sourceRow, FIELDS as in the input, stage, reason."""
        self.describe()
        return self.described

    @property
    def invalid_rows(self) -> int:
        with self.lock:
            return self.described.height + sum(frame.height for frame in self.failing)

    def add(self, checked: Checked, rules: Rules) -> None:
        with self.lock:
            self.rules = rules
            self.described.add(_rejected(checked.duplicates))
            if checked.failing.height:  # detached: not the whole piece's text
                self.failing.append(detached(checked.failing))
        if sum(frame.height for frame in self.failing) >= DESCRIBE_AT:
            self.describe()

    def describe(self) -> None:
        with self.lock:
            if self.failing:
                self.described.add(_rejected(describe(pl.concat(self.failing), self.rules)))
                self.failing.clear()


def _rejected(invalid: pl.DataFrame) -> pl.DataFrame:
    """Invalid rows (sourceRow, FIELDS, reason) as rejects of the validation stage."""
    stage = pl.lit("validation").alias("stage")
    return detached(invalid.with_columns(stage, pl.lit(None, pl.String).alias("idempotencyKey")))


@dataclass
class Plan:
    """An import's batches, produced lazily from its source."""

    source: Source
    import_id: str
    config: Config
    timezone: str
    batch_size: int
    definitions: Callable[[], frozenset[int] | None]  # asked once, when the first row needs it
    tally: Tally = field(default_factory=Tally)
    on_read: Callable[[int], None] = lambda rows: None
    chunk_bytes: int = CHUNK_BYTES  # how much text a piece holds
    skip_through: int = 0  # rows numbered up to this one are an earlier import's: not read
    sort: Callable[[pl.DataFrame], Sorted] | None = None  # against the landed rows (claims)
    _known: Rules | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def batches(self) -> Iterator[Batch]:
        """Every batch of the import, in order (the same on every run of the same input)."""
        for batches in self.pieces():
            yield from batches

    def pieces(self) -> Iterator[list[Batch]]:
        """The batches, as the pieces of the input fill them (maybe none for a piece)."""
        seen, chunker = Seen(), Chunker(self.batch_size, self.import_id)
        cfg = self.config
        pieces = read_chunks(
            self.source, cfg.input.delimiter, cfg.columns, self.chunk_bytes, cfg.input.id_column
        )
        ahead = prefetched(pieces, 1, name="read")  # the next piece read meanwhile
        results = mapped(self._screen, ahead, SCREENERS, "screen")
        for read, rules, screened in results:
            checked = dedupe(screened, seen, rules)  # in order: the first of equal rows wins
            checked = self._unread(checked) if self.skip_through else checked
            checked = self._sorted(checked) if self.sort else checked
            self._count(read, checked, rules)
            yield self._counted(list(chunker.feed(checked.valid)))
        yield self._counted(list(chunker.flush()))
        log.info(
            "planned",
            rows=self.tally.read,
            valid=self.tally.valid,
            invalid=self.tally.invalid_rows,
            batches=self.tally.batches,
        )
        if self.tally.landed:
            log.info("rows already landed: not sent", rows=self.tally.landed,
                     imports=dict(self.tally.landed_in))  # fmt: skip

    def _screen(self, frame: pl.DataFrame) -> tuple[int, Rules, Checked]:
        rules = self._rules_for(frame.height)
        read = frame.height
        if self.skip_through:
            read = int(frame.select((pl.col(SOURCE_ROW) > self.skip_through).sum()).item())
        return read, rules, screen(frame, rules)

    def _unread(self, checked: Checked) -> Checked:
        """Without the rows an earlier import read: they are checked, and seen (a row after
        them repeating one is a duplicate), but neither sent nor reported again."""
        new = pl.col(SOURCE_ROW) > self.skip_through
        valid, failing, duplicates = checked.valid, checked.failing, checked.duplicates
        return Checked(valid.filter(new), failing.filter(new), duplicates.filter(new))

    def _sorted(self, checked: Checked) -> Checked:
        """Without the rows that landed before (counted) or that another import may send
        (held back: rejected with their reason)."""
        assert self.sort is not None
        sorted_ = self.sort(checked.valid)
        self.tally.landed += sorted_.landed.height
        self.tally.landed_in.update(sorted_.landed["_by"].to_list())
        self.tally.held += sorted_.held.height
        held = as_rejects(sorted_.held, pl.col(REASON))
        return Checked(sorted_.free, checked.failing, pl.concat([checked.duplicates, held]))

    def _rules_for(self, rows: int) -> Rules:
        """The rules; the definitions are asked once, when the first row needs them."""
        with self._lock:
            if self._known is None and rows:
                self._known = self._rules(self.definitions())
            return self._known or self._rules(None)

    def _counted(self, batches: list[Batch]) -> list[Batch]:
        self.tally.batches += len(batches)
        return batches

    def _count(self, read: int, checked: Checked, rules: Rules) -> None:
        self.tally.read += read
        self.tally.valid += checked.valid.height
        self.tally.add(checked, rules)
        self.on_read(read)

    def _rules(self, known: frozenset[int] | None) -> Rules:
        v, given = self.config.validation, self.config.input
        # typed numbers (Excel cells, Parquet, JSON) are numbers already: 1.234 is never 1234
        text = self.source.format in TEXT_FORMATS
        decimal = given.decimal_separator if text else "."
        thousands = given.thousands_separator if text else ""
        return Rules(
            timezone=self.timezone,
            allow_duplicates=v.allow_duplicates,
            max_source_length=v.max_source_length,
            max_description_length=v.max_description_length,
            definition_ids=known,
            id_column=self.config.input.id_column,
            decimal_separator=decimal,
            thousands_separator=thousands,
            date_formats=tuple(self.config.input.date_formats),
        )
