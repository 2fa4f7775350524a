"""Reconcile: ask Engage, through the GET endpoints, which rows it really holds.

Voyado's advice for a POST whose outcome is unknown is to check with a GET before sending it
again. A row is found when one of its account's transactions has the same source,
description and amount, the same instants for the dates the row gives (timeStamp,
validFrom, validTo) and plausible ones for those it leaves out, and was created while the
row was being sent: no earlier than its first send (last month's identical row is not taken
for it) and no later than a few hours after its last (nor tomorrow's, of another import).
Each transaction stands for one row at most. The clocks may differ by up to an hour; a
date Engage writes without an offset is read in UTC or, for the row's own dates, as the row
wrote it (either reading matches: sending twice is the worse mistake).

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
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import polars as pl

from pipeline.model import SOURCE_ROW

SLACK_S = 3600.0  # clocks differ: a transaction may look older than our send, or newer
RETRIES_S = 6 * 3600.0  # a send's retries (Retry-After, back-off) end well within this
ZONES_S = 14 * 3600.0  # the widest offset: a date without one may be off by up to this
DEFAULTED_S = ZONES_S + SLACK_S  # a date Engage set to "now", in any zone, vs createdOn


class Ledger(Protocol):
    def transactions(self, contact_id: str, definition_id: int) -> list[dict[str, Any]]: ...


def find_applied(
    rows: pl.DataFrame, engage: Ledger, since: float | None = None, until: float | None = None
) -> set[int]:
    """The sourceRows of ``rows`` that Engage holds a transaction for, created between
    ``since`` (the first send) and a few hours after ``until`` (the last), if given."""
    found: set[int] = set()
    for (contact, definition), group in rows.group_by(
        "contactId", "definitionId", maintain_order=True
    ):
        items = engage.transactions(str(contact), int(str(definition)))
        held = _held(items, since, until)
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


def _held(
    items: Iterable[dict[str, Any]], since: float | None, until: float | None = None
) -> list[dict[str, Any]]:
    out = []
    for item in items:
        created, doubt = _created(item)
        if created is None:
            out.append(item)
            continue
        at = created.timestamp()
        if since is not None and at < since - SLACK_S - doubt:
            continue
        if until is not None and at > until + RETRIES_S + SLACK_S + doubt:
            continue
        out.append(item)
    return out


def _created(item: dict[str, Any]) -> tuple[datetime | None, float]:
    """When Engage created ``item`` (read in UTC if it has no offset) and how far off that
    may be for want of one."""
    created = _instant(item.get("createdOn"))
    if created is None or created.tzinfo is not None:
        return created, 0.0
    return created.replace(tzinfo=UTC), ZONES_S


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
        _same_instant(held.get(theirs), row[ours])
        for ours, theirs in dates
    )  # fmt: skip


def _same_instant(theirs: Any, ours: Any) -> bool:
    """Engage's date is the row's: the same instant, or without an offset, the same clock
    time in UTC or in the row's own offset."""
    held, sent = _instant(theirs), _instant(ours)
    if held is None or sent is None or sent.tzinfo is None:
        return False
    if held.tzinfo is not None:
        return held == sent
    return held in (sent.replace(tzinfo=None), sent.astimezone(UTC).replace(tzinfo=None))


def _defaulted(held: dict[str, Any], name: str) -> bool:
    """Whether Engage could have set ``name`` itself, the row giving none: a date it defaults
    to the time of the request is within a day's zones of the transaction's creation (one
    back-dated by another row's own timeStamp is not); validFrom may also default to the
    transaction's date; validTo has no such default."""
    value, (created, doubt) = _instant(held.get(name)), _created(held)
    if name == "validTo" or value is None or created is None:
        return True
    if name == "validFrom" and value == _instant(held.get("transactionDate")):
        return True
    if value.tzinfo is None:
        value, doubt = value.replace(tzinfo=UTC), doubt + ZONES_S
    return abs((value - created).total_seconds()) <= DEFAULTED_S + doubt


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
