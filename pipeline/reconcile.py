"""Reconcile: ask Engage, through the GET endpoints, which rows it really holds.

Voyado's advice for a POST whose outcome is unknown is to check with a GET before sending it
again. A row is found when one of its account's transactions has the same source,
description and amount, the same instants for the dates the row gives (timeStamp,
validFrom, validTo) and plausible ones for those it leaves out, and was created no earlier
than the row was first sent (so last month's identical row is not taken for it). Each
transaction stands for one row at most.

A date the row does not give, Engage sets: timeStamp to the time of the request (so the
transaction's must lie within a day's time zones of its creation: a transaction back-dated
by another row's timeStamp is not this row's), validFrom like it or to the transaction's
date (the sources don't say which), validTo to anything.

Not covered: two rows of one import equal but for dates one of them leaves out (or identical,
with allow_duplicates), one in a settled batch sent the same day the other was in doubt: the
settled one's transaction can stand for the in-doubt one, which is then not re-sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import polars as pl

from pipeline.load import SOURCE_ROW

SLACK_S = 300.0  # clocks differ: a transaction may look a little older than our send
DEFAULTED_S = 14 * 3600 + SLACK_S  # a date Engage set to "now", in any zone, vs createdOn


class Ledger(Protocol):
    def transactions(self, contact_id: str, definition_id: int) -> list[dict[str, Any]]: ...


def find_applied(rows: pl.DataFrame, engage: Ledger, since: float | None = None) -> set[int]:
    """The sourceRows of ``rows`` that Engage holds a transaction for."""
    found: set[int] = set()
    for (contact, definition), group in rows.group_by(
        "contactId", "definitionId", maintain_order=True
    ):
        held = _held(engage.transactions(str(contact), int(str(definition))), since)
        for row in group.iter_rows(named=True):
            index = _first_match(row, held)
            if index is not None:
                held.pop(index)
                found.add(int(row[SOURCE_ROW]))
    return found


def count_held(rows: pl.DataFrame, engage: Ledger, since: float | None) -> dict[int, int]:
    """For each row, how many of Engage's transactions match its content (for ``reconcile``)."""
    counts: dict[int, int] = {}
    for (contact, definition), group in rows.group_by(
        "contactId", "definitionId", maintain_order=True
    ):
        held = _held(engage.transactions(str(contact), int(str(definition))), since)
        for row in group.iter_rows(named=True):
            counts[int(row[SOURCE_ROW])] = sum(_same(row, t) for t in held)
    return counts


def _held(items: Iterable[dict[str, Any]], since: float | None) -> list[dict[str, Any]]:
    out = []
    for item in items:
        created = _instant(item.get("createdOn"))
        if since is None or created is None or created.timestamp() >= since - SLACK_S:
            out.append(item)
    return out


def _first_match(row: dict[str, Any], held: list[dict[str, Any]]) -> int | None:
    return next((i for i, t in enumerate(held) if _same(row, t)), None)


def _same(row: dict[str, Any], held: dict[str, Any]) -> bool:
    if (
        str(held.get("source")) != row["source"]
        or str(held.get("description")) != row["description"]
    ):
        return False
    if _decimal(held.get("amount")) != _decimal(row["amount"]):
        return False
    dates = (("timeStamp", "transactionDate"), ("validFrom", "validFrom"), ("validTo", "validTo"))
    return all(
        _defaulted(held, theirs) if row.get(ours) is None else
        _instant(held.get(theirs)) == _instant(row[ours])
        for ours, theirs in dates
    )  # fmt: skip


def _defaulted(held: dict[str, Any], name: str) -> bool:
    """Whether Engage could have set ``name`` itself, the row giving none: a date it defaults
    to the time of the request is within a day's zones of the transaction's creation (one
    back-dated by another row's own timeStamp is not); validFrom may also default to the
    transaction's date; validTo has no such default."""
    value, created = _instant(held.get(name)), _instant(held.get("createdOn"))
    if name == "validTo" or value is None or created is None:
        return True
    if name == "validFrom" and value == _instant(held.get("transactionDate")):
        return True
    return abs((value - created).total_seconds()) <= DEFAULTED_S


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).normalize()
    except InvalidOperation:
        return None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
