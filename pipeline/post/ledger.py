"""The ledger: what became of every row sent or replayed, kept small.

Accepted rows are counted, with their points per definition summed exactly (in bulk, as
polars decimals); only rows that did not get in are kept, with the input's text for the
rejects report. Thread-safe: the workers of a run settle batches concurrently; the order
they finish in changes nothing.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from decimal import MAX_PREC, Context, Decimal

import polars as pl

from pipeline.frames import detached
from pipeline.model import KEPT, RAW, SOURCE_ROW
from pipeline.spool import Spool

Refused = list[tuple[int, str, str]]  # (sourceRow, stage, reason)
EXACT = Context(prec=MAX_PREC)  # sums as long as their digits need: never rounded
SUM_AT = 200_000  # accepted rows whose amounts are summed at once, in polars
BULK_SCALE = 17  # decimals polars sums exactly (38 digits: 21 left for a sum of amounts < 1e15)
REFUSED_SCHEMA = {
    SOURCE_ROW: pl.Int64, "stage": pl.String, "reason": pl.String, "idempotencyKey": pl.String,
    **dict.fromkeys(KEPT, pl.String),
}  # fmt: skip


@dataclass
class Settling:
    """Batches an earlier run left in doubt past Engage's memory of their keys, settled."""

    batches: int = 0
    accounts: int = 0  # accounts read (each once, all pages)
    rows_found: int = 0  # rows Engage held: applied before, not sent again
    rows_resent: int = 0  # rows it did not hold: sent again under a new key


class Ledger:
    """Accepted counts and points, refused rows, and which rows each batch settled so far."""

    def __init__(self, keep_accepted: bool = False) -> None:
        self._lock = threading.Lock()
        self.keep_accepted = keep_accepted  # also keep which rows were accepted, under which key
        self.accepted_rows: list[pl.DataFrame] = []
        self.accepted = 0
        self._points: dict[int, Decimal] = defaultdict(Decimal)
        self._unsummed: list[pl.DataFrame] = []  # definitionId, amount: accepted, not summed yet
        self._unsummed_rows = 0
        self._summing = threading.Lock()
        self.refused = Spool()  # in bounded memory: a stopped run's unsent rows may be millions
        self.requests = 0
        self.batches_sent = 0  # planned batches whose request left in this run
        self.unmatched = 0  # notAccepted rows that matched no row sent
        self.settling = Settling()
        self._open: dict[int, list[pl.Series]] = {}  # seq -> rows settled, while in flight

    def settle(
        self,
        rows: pl.DataFrame,
        key: str | None,
        stage: str | None,
        reason: str | None,
        seq: int | None = None,
    ) -> None:
        """``rows`` accepted (``stage`` None) or refused with ``stage`` and ``reason``."""
        if stage is None:
            self._accept(rows, seq, key)
            return
        refused = rows.select(
            pl.col(SOURCE_ROW), pl.lit(stage, pl.String).alias("stage"),
            pl.lit(reason, pl.String).alias("reason"),
            pl.lit(key, pl.String).alias("idempotencyKey"),
            *[pl.col(RAW[f]).alias(f) for f in KEPT],
        )  # fmt: skip
        self.refused.add(detached(refused))  # not the whole piece's text
        with self._lock:
            self._note(rows, seq)

    def refuse(
        self, rows: pl.DataFrame, key: str, refused: Refused, seq: int | None = None
    ) -> None:
        """``rows`` accepted, except the refused ones, each with its stage and reason."""
        if not refused:
            self.settle(rows, key, None, None, seq)
            return
        why = pl.DataFrame(
            refused,
            schema={SOURCE_ROW: pl.Int64, "stage": pl.String, "reason": pl.String},
            orient="row",
        )
        self._accept(rows.join(why, on=SOURCE_ROW, how="anti"), seq, key)
        for (stage, reason), group in rows.join(why, on=SOURCE_ROW).group_by(
            "stage", "reason", maintain_order=True
        ):
            self.settle(group, key, str(stage), str(reason), seq)

    def _accept(self, rows: pl.DataFrame, seq: int | None, key: str | None) -> None:
        amounts = rows.select("definitionId", "amount")  # summed in bulk, not row by row
        with self._lock:
            self.accepted += rows.height
            if self.keep_accepted:
                self.accepted_rows.append(
                    rows.select(SOURCE_ROW, pl.lit(key, pl.String).alias("idempotencyKey"))
                )
            self._unsummed.append(amounts)
            self._unsummed_rows += amounts.height
            self._note(rows, seq)
            full = self._unsummed_rows >= SUM_AT
        if full:
            self._sum()

    @property
    def points(self) -> dict[int, Decimal]:
        """Accepted points per definition, summed exactly."""
        self._sum()
        with self._lock:
            return dict(self._points)

    def _sum(self) -> None:
        """Add the amounts accepted since the last sum to the points (one sum at a time, so
        that ``points`` sees every amount added before it was asked)."""
        with self._summing:
            with self._lock:
                parts, self._unsummed, self._unsummed_rows = self._unsummed, [], 0
            sums = _sums(pl.concat(parts)) if parts else {}
            with self._lock:
                for definition, amount in sums.items():
                    self._points[definition] = EXACT.add(self._points[definition], amount)

    def _note(self, rows: pl.DataFrame, seq: int | None) -> None:
        if seq is not None and seq in self._open:
            self._open[seq].append(rows[SOURCE_ROW])

    def opened(self, seq: int) -> None:
        with self._lock:
            self._open[seq] = []

    def closed(self, seq: int) -> pl.Series:
        """The rows settled for batch ``seq`` since it was opened."""
        with self._lock:
            parts = self._open.pop(seq, [])
        if len(parts) == 1:  # the usual case: no polars work on the way back
            return parts[0]
        return pl.concat(parts) if parts else pl.Series(SOURCE_ROW, [], dtype=pl.Int64)

    def count_request(self, planned: bool = False) -> None:
        """A request left; ``planned``: a batch as planned (not a half or a reconciled part)."""
        with self._lock:
            self.requests += 1
            self.batches_sent += planned

    def count_settled(self, found: int, resent: int) -> None:
        """A batch in doubt settled by GETs: ``found`` rows Engage held, ``resent`` not."""
        with self._lock:
            self.settling.batches += 1
            self.settling.rows_found += found
            self.settling.rows_resent += resent

    def count_read(self) -> None:
        with self._lock:
            self.settling.accounts += 1

    def count_unmatched(self, n: int) -> None:
        with self._lock:
            self.unmatched += n

    def outcomes(self) -> pl.DataFrame:
        """Every settled row: sourceRow, accepted, stage, reason, idempotencyKey (with
        ``keep_accepted``; else the refused ones only)."""
        accepted = [frame.select(SOURCE_ROW, pl.lit(True).alias("accepted"),
                                 pl.lit(None, pl.String).alias("stage"),
                                 pl.lit(None, pl.String).alias("reason"), "idempotencyKey")
                    for frame in self.accepted_rows]  # fmt: skip
        refused = self.frame().select(SOURCE_ROW, pl.lit(False).alias("accepted"), "stage",
                                      "reason", "idempotencyKey")  # fmt: skip
        return pl.concat([*accepted, refused]).sort(SOURCE_ROW)

    def frame(self) -> pl.DataFrame:
        """Every refused row (sourceRow, stage, reason, idempotencyKey, the input's fields)."""
        frame = self.refused.frame()
        return pl.DataFrame(schema=REFUSED_SCHEMA) if frame is None else frame


def _sums(amounts: pl.DataFrame) -> dict[int, Decimal]:
    """Per definition, the exact sum of canonical decimal amounts (under 1e15 each): in
    polars' 38-digit decimals, or one by one where a decimal has more places than they keep."""
    places = amounts["amount"].str.split_exact(".", 1).struct.field("field_1").str.len_bytes()
    if (places.max() or 0) > BULK_SCALE:  # type: ignore[operator]
        sums: dict[int, Decimal] = defaultdict(Decimal)
        for definition, amount in amounts.iter_rows():
            sums[definition] = EXACT.add(sums[definition], Decimal(amount))
        return sums
    summed = amounts.group_by("definitionId").agg(
        pl.col("amount").cast(pl.Decimal(38, BULK_SCALE)).sum()
    )
    return {int(d): Decimal(a) for d, a in summed.iter_rows()}
