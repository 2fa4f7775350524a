"""Balances: what Engage holds per contact and point definition (the accounts endpoint), and
the check a migration is signed off by: Engage's balances against the legacy system's.

Contacts are read side by side, ``concurrency`` at a time, within the client's rate limit
(a GET counts against Engage's per-key limit like a POST). Balances are compared as exact
decimals, to within ``TOLERANCE`` (Engage keeps doubles: 0.1 + 0.2 is 0.30000000000000004).
"""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.engage import EngageClient
from pipeline.errors import InputError
from pipeline.load.columns import header_key
from pipeline.load.formats import sniff_delimiter
from pipeline.validate.local import plain_amount
from pipeline.validate.parse import GUID

TOLERANCE = Decimal("0.000001")
BALANCES = {
    "contactId": pl.String, "definitionId": pl.Int64, "accountId": pl.Int64,
    "balance": pl.String, "pendingPoints": pl.String, "balanceExpires": pl.String,
}  # fmt: skip
MISMATCHES = {"contactId": pl.String, "definitionId": pl.Int64, "expected": pl.String,
              "actual": pl.String, "difference": pl.String, "note": pl.String}  # fmt: skip


def read_table(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """A CSV (delimiter sniffed; gzipped or not; in ``encoding``), Parquet or Excel file,
    every column as text."""
    try:
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path).select(pl.all().cast(pl.String))
        if suffix in (".xlsx", ".xlsm", ".xls", ".ods"):
            return pl.read_excel(path, engine="calamine", infer_schema_length=0)
        data = path.read_bytes()
        data = gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data
        text = data.decode("utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding)
        data = text.encode()
        return pl.read_csv(io.BytesIO(data), separator=sniff_delimiter(data), infer_schema=False)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except UnicodeError as exc:
        raise InputError(f"{path} is not {encoding} text ({exc}); check [input] encoding") from None
    except Exception as exc:  # polars', calamine's and the OS's errors alike
        raise InputError(f"{path} can't be read as a table: {_line(exc)}") from exc


def column(
    frame: pl.DataFrame, name: str, path: Path, mapping: dict[str, str] | None = None
) -> str:
    """The column of ``frame`` that is ``name`` in any case and spacing, or mapped to it by
    ``[columns]``."""
    for found in frame.columns:
        if (mapping or {}).get(found) == name or header_key(found) == header_key(name):
            return found
    raise InputError(f"{path} has no {name} column (found: {', '.join(frame.columns)[:200]})")


def guids(ids: pl.Series) -> tuple[list[str], int]:
    """The distinct GUIDs (lower case, braces gone) of ``ids``, in order; and how many
    values were no GUID (not asked about: Engage would refuse them)."""
    ids = ids.drop_nulls().to_frame("id").select(_contact(pl.col("id"))).to_series()
    ids = ids.filter(ids != "")
    guid = ids.str.contains(GUID)
    return ids.filter(guid).unique(maintain_order=True).to_list(), int((~guid).sum())


def contacts_of(path: Path, encoding: str = "utf-8", mapping: dict[str, str] | None = None
                ) -> tuple[list[str], int]:  # fmt: skip
    """The contacts of a file's contactId column: ``guids``."""
    table = read_table(path, encoding)
    return guids(table[column(table, "contactId", path, mapping)])


def balances(
    contacts: Sequence[str],
    client: EngageClient,
    concurrency: int,
    done: Callable[[int], None] = lambda n: None,
) -> pl.DataFrame:
    """Every account of ``contacts`` (all pages), ``concurrency`` contacts at a time."""
    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="balances") as pool:
        for contact, accounts in zip(contacts, pool.map(client.accounts, contacts), strict=True):
            rows += [_row(contact, account) for account in accounts]
            done(1)
    return pl.DataFrame(rows, schema=BALANCES, orient="row")


def expected_of(
    path: Path, encoding: str = "utf-8", decimal: str = ".", thousands: str = ""
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A file of balances (contactId, definitionId, balance) as the rows to check and the rows
    that can't be, with their reason: a balance or id that is not a number, a contact that is
    no GUID, a contact and definition an earlier line gave already."""
    table = read_table(path, encoding)
    names = [column(table, n, path) for n in ("contactId", "definitionId", "balance")]
    balance = pl.col(names[2]).str.strip_chars()
    local = (decimal, thousands) != (".", "")
    frame = table.with_row_index("line", 2).select(
        "line",
        _contact(pl.col(names[0])).alias("contactId"),
        pl.col(names[1]).str.strip_chars().alias("definitionId"),
        (plain_amount(balance, decimal, thousands) if local else balance).alias("expected"),
        balance.alias("written"),
    )
    number = pl.col("expected").str.contains(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$")
    whole = pl.col("definitionId").str.contains(r"^[0-9]{1,18}$")
    guid = pl.col("contactId").str.contains(GUID)
    again = pl.struct("contactId", "definitionId").is_first_distinct().not_()
    fine = (number & whole & guid).fill_null(False) & ~again
    bad = frame.filter(~fine).with_columns(
        pl.when(~guid.fill_null(False))
        .then(pl.lit("contactId is not a GUID"))
        .when(~whole.fill_null(False))
        .then(pl.lit("definitionId is not a whole number"))
        .when(~number.fill_null(False))
        .then(pl.lit("balance is not a number like 12 or -3.5"))
        .otherwise(pl.lit("the same contact and definition as an earlier line"))
        .alias("note")
    )
    good = frame.filter(fine).with_columns(pl.col("definitionId").cast(pl.Int64))
    bad = bad.with_columns(pl.col("written").alias("expected"))  # as the file wrote it
    return good.drop("line", "written"), bad.drop("line", "written").with_columns(
        pl.col("definitionId").cast(pl.Int64, strict=False)
    )


def _contact(text: pl.Expr) -> pl.Expr:
    """A contact id as Engage's GUIDs are compared: trimmed, braces gone, lower case."""
    return text.str.strip_chars().str.strip_prefix("{").str.strip_suffix("}").str.to_lowercase()


def snapshot_of(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """A balances export taken before (contactId, definitionId, balance); a line that can't
    be read is an InputError naming it: a snapshot is a whole, not a list of claims."""
    good, bad = expected_of(path, encoding)
    if bad.height:
        first = bad.row(0, named=True)
        raise InputError(f"{path}: {first['note']} ({first['contactId']}, {first['definitionId']})")
    return good.rename({"expected": "balance"})


def compare(
    expected: pl.DataFrame, actual: pl.DataFrame, before: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The (contact, definition) pairs whose balance in Engage is not the expected one (plus
    what ``before``, a snapshot taken before the migration, held)."""
    have = _sums(actual)
    had = _sums(before) if before is not None else {}
    rows = []
    for contact, definition, text in expected.select(
        "contactId", "definitionId", "expected"
    ).iter_rows():
        key = (contact.lower(), definition)
        want = Decimal(text) + had.get(key, Decimal(0))
        found = have.get(key)
        got = Decimal(0) if found is None else found  # no account: nothing, which 0 expects
        if abs(got - want) > TOLERANCE:
            note = "no such account in Engage" if found is None else ""
            rows.append((contact, definition, _text(want), _text(got), _text(got - want), note))
    return pl.DataFrame(rows, schema=MISMATCHES, orient="row")


def _sums(frame: pl.DataFrame) -> dict[tuple[str, int], Decimal]:
    sums: dict[tuple[str, int], Decimal] = {}
    for contact, definition, balance in frame.select(
        "contactId", "definitionId", "balance"
    ).iter_rows():
        if contact is None or definition is None:
            continue
        try:
            value = Decimal(str(balance)) if balance not in (None, "") else Decimal(0)
        except InvalidOperation:
            continue
        key = (str(contact).lower(), int(definition))
        sums[key] = sums.get(key, Decimal(0)) + value
    return sums


def _row(contact: str, account: dict[str, Any]) -> dict[str, Any]:
    return {
        "contactId": account.get("contactId") or contact,
        "definitionId": _int(account.get("definitionId")),
        "accountId": _int(account.get("id")),
        "balance": _number(account.get("balance")),
        "pendingPoints": _number(account.get("pendingPoints")),
        "balanceExpires": account.get("balanceExpires"),
    }


def _number(value: Any) -> str | None:
    """A JSON number as exact decimal text (a double's shortest repr)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return _text(Decimal(repr(value) if isinstance(value, float) else str(value)))
    except InvalidOperation:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sample(frame: pl.DataFrame, n: int | None, seed: int | None = None) -> pl.DataFrame:
    """``n`` rows drawn at random (all of them when ``n`` is None or more)."""
    return frame if n is None or n >= frame.height else frame.sample(n, seed=seed)
