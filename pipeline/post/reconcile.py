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

After a crash, every batch in doubt is settled together (``poster.settle``): each account
their rows touch is read once (all pages, ``read_accounts``, side by side), and their rows are
matched against what was read (``Held``), a transaction found for a row of one batch standing
for no row of another.

Not covered: two rows of one import equal but for dates one of them leaves out (or identical,
with allow_duplicates), one in a settled batch sent the same day the other was in doubt: the
settled one's transaction can stand for the in-doubt one, which is then not re-sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Protocol, TypeVar

import polars as pl

from pipeline.model import SOURCE_ROW

SLACK_S = 3600.0  # clocks differ: a transaction may look older than our send, or newer
RETRIES_S = 6 * 3600.0  # a send's retries (Retry-After, back-off) end well within this
ZONES_S = 14 * 3600.0  # the widest offset: a date without one may be off by up to this
DEFAULTED_S = ZONES_S + SLACK_S  # a date Engage set to "now", in any zone, vs createdOn


Account = tuple[str, int]  # (contactId, definitionId)


class Reader(Protocol):
    def transactions(self, contact_id: str, definition_id: int) -> list[dict[str, Any]]: ...


def accounts_of(rows: pl.DataFrame) -> list[Account]:
    """The accounts ``rows`` touch, each once, in the order they first appear."""
    pairs = rows.select("contactId", "definitionId").unique(maintain_order=True)
    return [(str(c), int(str(d))) for c, d in pairs.iter_rows()]


def read_accounts(
    accounts: Sequence[Account],
    engage: Reader,
    concurrency: int = 1,
    done: Callable[[], None] = lambda: None,
    since: float | None = None,
    until: float | None = None,
) -> dict[Account, list[dict[str, Any]]]:
    """The transactions of each account (all pages) that were created between ``since`` and
    a few hours after ``until`` (older and newer ones are not kept: an account may hold
    years of them), each account read once, ``concurrency`` at a time (the client's rate
    limiter paces the GETs). The first read that fails stops the others and goes up."""
    read: dict[Account, list[dict[str, Any]]] = {}
    pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="settle")
    try:
        futures = {pool.submit(engage.transactions, *account): account for account in accounts}
        for future in as_completed(futures):
            items = future.result()
            read[futures[future]] = [t for t in items if _within(t, since, until)]
            done()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return read


K = TypeVar("K", bound=Hashable)  # what names a part (a batch)


class Held:
    """What Engage holds, read once per account for every batch in doubt."""

    def __init__(self, read: dict[Account, list[dict[str, Any]]]) -> None:
        self.read = read

    def find_applied(
        self, parts: Sequence[tuple[K, pl.DataFrame, float | None, float | None]]
    ) -> dict[K, set[int]]:
        """For each part (its rows, sent between ``since`` and ``until``), the sourceRows
        Engage holds a transaction for, each transaction standing for one row at most, of
        whichever part. An account's transactions are taken oldest first, each by the row it
        matches whose window closes first: a transaction in the windows of two batches is
        not taken by the one that could also have another (sending twice is the worse
        mistake)."""
        found: dict[K, set[int]] = {key: set() for key, *_ in parts}
        waiting: dict[Account, list[_Waiting[K]]] = {}
        for order, (key, rows, since, until) in enumerate(parts):
            for row in rows.iter_rows(named=True):
                account = (str(row["contactId"]), int(str(row["definitionId"])))
                waiting.setdefault(account, []).append(_Waiting(key, row, since, until, order))
        for account, left in waiting.items():
            for item in sorted(self.read[account], key=_oldest_first):
                taker = min((w for w in left if w.takes(item)), key=_Waiting.closes, default=None)
                if taker is not None:
                    left.remove(taker)
                    found[taker.key].add(int(taker.row[SOURCE_ROW]))
        return found


@dataclass(frozen=True, eq=False)  # each its own: taken once
class _Waiting(Generic[K]):
    """A row in doubt, not found yet."""

    key: K
    row: dict[str, Any]
    since: float | None
    until: float | None
    order: int

    def takes(self, item: dict[str, Any]) -> bool:
        return _within(item, self.since, self.until) and _same(self.row, item)

    def closes(self) -> tuple[float, int]:
        return (math.inf if self.until is None else self.until, self.order)


def _oldest_first(item: dict[str, Any]) -> tuple[bool, float]:
    created, _ = _created(item)
    return (created is None, created.timestamp() if created else 0.0)


def count_held(rows: pl.DataFrame, read: dict[Account, list[dict[str, Any]]]) -> dict[int, int]:
    """For each row, how many of the transactions ``read`` match its content (for
    ``reconcile``)."""
    counts: dict[int, int] = {}
    for (contact, definition), group in rows.group_by(
        "contactId", "definitionId", maintain_order=True
    ):
        held = read[(str(contact), int(str(definition)))]
        for row in group.iter_rows(named=True):
            counts[int(row[SOURCE_ROW])] = sum(_same(row, t) for t in held)
    return counts


def _within(item: dict[str, Any], since: float | None, until: float | None) -> bool:
    """Whether ``item`` was created no earlier than ``since`` and no later than a few hours
    after ``until`` (with the clocks' slack); when, if Engage does not say, is no bar."""
    created, doubt = _created(item)
    if created is None:
        return True
    at = created.timestamp()
    if since is not None and at < since - SLACK_S - doubt:
        return False
    return until is None or at <= until + RETRIES_S + SLACK_S + doubt


def _created(item: dict[str, Any]) -> tuple[datetime | None, float]:
    """When Engage created ``item`` (read in UTC if it has no offset) and how far off that
    may be for want of one."""
    created = _instant(item.get("createdOn"))
    if created is None or created.tzinfo is not None:
        return created, 0.0
    return created.replace(tzinfo=UTC), ZONES_S


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
