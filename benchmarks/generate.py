"""Synthetic input files: ``points-v1-<rows>.csv`` under ``benchmarks/data/``, made once.

The rows are what a night's export from a store system looks like: the simulator's 500
built-in contacts, definitions 1-5, amounts with and without a fraction, a ``timeStamp`` with
an offset, a store name, a description with a receipt number (some quoted, some with quotes
inside), and a ``validTo`` date on most rows; about 145 bytes a row. A few rows per million are
invalid (an amount that is no number, a contactId that is no GUID), so the rejects path is
exercised too. The values come from polars' seeded hash of the row number: the same file on
every run of one polars version, built a million rows at a time in bounded memory.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from pipeline.simulator.fixture import contact_ids

DATA_DIR = Path(__file__).resolve().parent / "data"
VERSION = "v1"
CHUNK_ROWS = 1_000_000
INVALID_EVERY = 250_000
HEADER = ("contactId", "amount", "definitionId", "timeStamp", "source", "description", "validTo")
STORES = (
    "Store 012 Stockholm Drottninggatan",
    "Store 044 Göteborg Nordstan",
    "Store 101 Malmö Triangeln",
    "Store 230 Uppsala Forumgallerian",
    "Webshop SE",
    "Webshop NO",
    "Customer service",
    "Partner: SAS EuroBonus",
)
DESCRIPTIONS = (
    "Purchase, receipt",
    'Bonus "double points" week, receipt',
    "Campaign NOV26 (members only), order",
    "Birthday gift points, reference",
    "Migrated balance from the old loyalty system, account",
)
TIMEZONE = "Europe/Stockholm"
_EPOCH = datetime(2025, 12, 31, 23, tzinfo=UTC)


def label(rows: int) -> str:
    """1000000 -> '1M', 100000 -> '100k'."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if rows >= size and rows % size == 0:
            return f"{rows // size}{suffix}"
    return f"{rows:,}"


def file_name(rows: int) -> str:
    return f"points-{VERSION}-{rows}.csv"


def input_file(rows: int, folder: Path = DATA_DIR) -> Path:
    """The cached file of ``rows`` rows, generated first if it is not there yet."""
    path = folder / file_name(rows)
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".csv.partial")
        write_rows(partial, rows)
        os.replace(partial, path)
    return path


def invalid_rows(rows: int) -> int:
    """How many rows of a generated file of ``rows`` rows are invalid."""
    full, rest = divmod(rows, INVALID_EVERY)
    return 2 * full + (rest > 7) + (rest > 11)


def write_rows(path: Path, rows: int) -> None:
    """Write ``rows`` rows (and the header) to ``path``, one chunk at a time."""
    with open(path, "wb") as out:
        for start in range(0, rows, CHUNK_ROWS):
            chunk = _chunk(start, min(CHUNK_ROWS, rows - start))
            chunk.write_csv(out, include_header=start == 0, quote_style="necessary")


def _chunk(start: int, rows: int) -> pl.DataFrame:
    numbers = pl.DataFrame({"i": pl.int_range(start, start + rows, dtype=pl.Int64, eager=True)})
    return numbers.select(
        contactId=_contact(),
        amount=_amount(),
        definitionId=(_draw(3, 5) + 1).cast(pl.String),
        timeStamp=_time_stamp(),
        source=_pick(STORES, _draw(4, len(STORES))),
        description=_description(),
        validTo=_valid_to(),
    )


def _draw(seed: int, choices: int) -> pl.Expr:
    """A pseudo-random integer in [0, choices), fixed per row number and seed."""
    return (pl.col("i").hash(seed) % choices).cast(pl.Int64)


def _pick(values: tuple[str, ...] | list[str], index: pl.Expr) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=pl.String)).gather(index)


def _contact() -> pl.Expr:
    contacts = _pick(contact_ids(), _draw(1, 500))
    broken = pl.col("i") % INVALID_EVERY == 11
    return pl.when(broken).then(pl.lit("not-a-guid")).otherwise(contacts)


def _amount() -> pl.Expr:
    whole = (_draw(2, 2000) - 200).cast(pl.String)
    cents = (_draw(5, 100)).cast(pl.String).str.zfill(2)
    kind = _draw(6, 4)
    amount = pl.when(kind == 0).then(whole + "." + cents).otherwise(whole)
    return pl.when(pl.col("i") % INVALID_EVERY == 7).then(pl.lit("ten")).otherwise(amount)


def _time_stamp() -> pl.Expr:
    moment = pl.lit(_EPOCH) + pl.duration(seconds=pl.col("i") * 3 + _draw(7, 3))
    return moment.dt.convert_time_zone(TIMEZONE).dt.strftime("%Y-%m-%dT%H:%M:%S%:z")


def _description() -> pl.Expr:
    text = _pick(DESCRIPTIONS, _draw(8, len(DESCRIPTIONS)))
    return text + " " + (pl.col("i") + 10_000_000).cast(pl.String)


def _valid_to() -> pl.Expr:
    year = (2027 + _draw(9, 3)).cast(pl.String)
    return pl.when(_draw(10, 10) == 0).then(pl.lit("")).otherwise(year + "-12-31")
