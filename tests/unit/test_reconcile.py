"""Reconcile: which rows Engage holds a transaction for, judged from the GET endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl
import pytest

from pipeline.engage import EngageClient, RetryPolicy
from pipeline.post.reconcile import (
    RETRIES_S,
    SLACK_S,
    ZONES_S,
    Held,
    Reader,
    accounts_of,
    count_held,
    read_accounts,
)
from tests.unit.test_chunk import GUID, valid_rows

OTHER = "11111111-2222-3333-4444-555555555555"
SENT = 1_700_000_000.0  # when the batch was first sent


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def held(row: dict[str, Any], created: float = SENT + 1, **changes: Any) -> dict[str, Any]:
    """The transaction Engage would hold for ``row`` (as Engage words it), with ``changes``."""
    return {
        "id": 1,
        "amount": float(row["amount"]),
        "createdOn": iso(created),
        "transactionDate": iso(created),
        "source": row["source"],
        "description": row["description"],
        "validFrom": row.get("validFrom") or iso(created),
        "validTo": row.get("validTo"),
        **changes,
    }


class Ledger:
    """Engage's transactions per (contactId, definitionId), and the accounts asked for."""

    def __init__(self, accounts: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
        self.accounts = accounts
        self.asked: list[tuple[str, int]] = []

    def transactions(self, contact_id: str, definition_id: int) -> list[dict[str, Any]]:
        self.asked.append((contact_id, definition_id))
        return [dict(t) for t in self.accounts.get((contact_id, definition_id), [])]


def find_applied(
    rows: pl.DataFrame, engage: Reader, since: float | None = None, until: float | None = None
) -> set[int]:
    """The rows of one batch found: its accounts read, then matched."""
    read = read_accounts(accounts_of(rows), engage)
    return Held(read).find_applied([("batch", rows, since, until)])["batch"]


def held_counts(rows: pl.DataFrame, engage: Reader, since: float | None) -> dict[int, int]:
    return count_held(rows, read_accounts(accounts_of(rows), engage, since=since))


def one_row(**values: Any) -> pl.DataFrame:
    return valid_rows(1, definitionId=[1], **{k: [v] for k, v in values.items()})


def found(rows: pl.DataFrame, *items: dict[str, Any], since: float | None = SENT) -> set[int]:
    """find_applied for rows of one account (GUID, definition 1) holding ``items``."""
    return find_applied(rows, Ledger({(GUID, 1): list(items)}), since)


def test_a_transaction_with_the_rows_content_is_found():
    """Same source, description and amount on the row's account: the row is applied."""
    rows = one_row()
    assert found(rows, held(rows.to_dicts()[0])) == {1}


@pytest.mark.parametrize(
    "change", [{"source": "WEB"}, {"description": "receipt 9"}, {"amount": 0.51}, {"amount": None}]
)
def test_a_transaction_differing_in_source_description_or_amount_is_not_the_row(change):
    """Any compared field different: not found (the row is to be sent)."""
    rows = one_row()
    assert found(rows, held(rows.to_dicts()[0], **change)) == set()


@pytest.mark.parametrize(
    ("row_amount", "engage_amount"),
    [
        ("10", 10.0),
        ("10", "10.00"),
        ("10.50", 10.5),
        ("0.1", 0.1),
        ("-12345678901.25", -12345678901.25),
    ],
)
def test_amounts_compare_as_exact_decimals(row_amount, engage_amount):
    """10 == 10.0 == "10.00": amounts are compared as numbers, not as text."""
    rows = one_row(amount=row_amount)
    assert found(rows, held(rows.to_dicts()[0], amount=engage_amount)) == {1}


@pytest.mark.parametrize(
    ("transaction_date", "is_found"),
    [
        ("2024-05-01T12:00:00+02:00", True),
        ("2024-05-01T10:00:00Z", True),
        ("2024-05-01T10:00:00+00:00", True),
        ("2024-05-01T05:00:00-05:00", True),
        ("2024-05-01T12:00:00Z", False),
        ("2024-05-01T10:00:01+00:00", False),
        (None, False),
    ],
)
def test_a_row_with_a_time_stamp_matches_only_the_same_instant(transaction_date, is_found):
    """timeStamp given: the transaction date must be the same instant, in whatever offset."""
    rows = one_row(timeStamp="2024-05-01T12:00:00+02:00")
    item = held(rows.to_dicts()[0], transactionDate=transaction_date)
    assert found(rows, item) == ({1} if is_found else set())


@pytest.mark.parametrize(
    ("transaction_date", "is_found"),
    [
        (iso(SENT + 1), True),  # dated by Engage when it was created
        (iso(SENT + 1 + 13 * 3600), True),  # ... in a zone far from UTC
        (None, True),  # no date given back: can't tell
        (iso(SENT - 6 * 86400), False),  # back-dated: another row's own timeStamp
    ],
)
def test_a_row_without_a_time_stamp_matches_a_transaction_engage_dated(transaction_date, is_found):
    """No timeStamp: Engage dated the transaction itself, at the request; one dated days
    before its creation carries another row's timeStamp (the reviewer's lost row: two rows
    equal but for one's timeStamp, the other's found through it and never sent)."""
    rows = one_row()
    item = held(rows.to_dicts()[0], transactionDate=transaction_date)
    assert found(rows, item) == ({1} if is_found else set())


def test_a_row_without_valid_from_matches_a_transaction_valid_from_its_creation_or_date():
    """validFrom defaults like timeStamp: to the request's time, or to the row's timeStamp
    (either reading of the sources; a found row is not sent twice)."""
    rows = one_row(timeStamp=iso(SENT - 6 * 86400))
    row = rows.to_dicts()[0]
    back_dated = {"transactionDate": row["timeStamp"]}
    assert found(rows, held(row, **back_dated)) == {1}
    assert found(rows, held(row, **back_dated, validFrom=row["timeStamp"])) == {1}
    assert found(rows, held(row, **back_dated, validFrom=iso(SENT - 30 * 86400))) == set()


@pytest.mark.parametrize(
    ("created", "is_found"),
    [
        (SENT + 3600, True),
        (SENT, True),
        (SENT - SLACK_S + 1, True),
        (SENT - SLACK_S - 1, False),
        (SENT - 86400 * 30, False),
    ],
)
def test_a_transaction_created_before_the_first_send_is_not_taken(created, is_found):
    """Created before the batch was first sent (less the clock slack): an older, other row."""
    rows = one_row()
    assert found(rows, held(rows.to_dicts()[0], created)) == ({1} if is_found else set())


@pytest.mark.parametrize(
    ("created", "is_found"),
    [
        (SENT + 60, True),
        (SENT + RETRIES_S + SLACK_S - 1, True),  # retried for hours, or Engage's clock ahead
        (SENT + RETRIES_S + SLACK_S + 1, False),
        (SENT + 86400, False),  # the next night's import, same content
    ],
)
def test_a_transaction_created_long_after_the_last_send_is_not_taken(created, is_found):
    """The reviewer's lost row: a batch in doubt, and the next night another file gives the
    same contact the same bonus; that transaction is not this row's (it is sent)."""
    rows = one_row()
    item = held(rows.to_dicts()[0], created)
    assert find_applied(rows, Ledger({(GUID, 1): [item]}), SENT, SENT) == (
        {1} if is_found else set()
    )


def naive(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()


@pytest.mark.parametrize("created", [SENT + 1, SENT - ZONES_S + 60, SENT + ZONES_S])
def test_a_creation_time_without_an_offset_may_be_in_any_zone(created):
    """createdOn without an offset (the sources don't fix the format): read in UTC, off by up
    to a zone's offset either way; no crash (it was a TypeError), not sent twice."""
    rows = one_row()
    item = held(rows.to_dicts()[0], transactionDate=naive(SENT), createdOn=naive(created))
    assert find_applied(rows, Ledger({(GUID, 1): [item]}), SENT, SENT) == {1}
    month_ago = held(rows.to_dicts()[0], createdOn=naive(SENT - 30 * 86400))
    assert find_applied(rows, Ledger({(GUID, 1): [month_ago]}), SENT, SENT) == set()


@pytest.mark.parametrize(
    ("transaction_date", "is_found"),
    [
        ("2024-05-01T10:00:00", True),  # UTC
        ("2024-05-01T12:00:00", True),  # as the row wrote it
        ("2024-05-01T11:00:00", False),
    ],
)
def test_a_date_without_an_offset_matches_in_utc_or_as_the_row_wrote_it(transaction_date, is_found):
    """Engage's date without an offset: either reading is the row's (sent twice is worse)."""
    rows = one_row(timeStamp="2024-05-01T12:00:00+02:00")
    item = held(rows.to_dicts()[0], transactionDate=transaction_date)
    assert found(rows, item) == ({1} if is_found else set())


def test_without_a_send_time_any_creation_time_is_taken():
    """since=None: the creation time does not filter."""
    rows = one_row()
    assert found(rows, held(rows.to_dicts()[0], SENT - 86400 * 365), since=None) == {1}


def test_each_transaction_stands_for_one_row_at_most():
    """Two identical rows, one transaction: one row found; two transactions: both."""
    rows = valid_rows(2, amount=["5", "5"], definitionId=[1, 1], description=["x", "x"])
    item = held(rows.to_dicts()[0])
    assert found(rows, item) == {1}
    assert found(rows, item, dict(item, id=2)) == {1, 2}


def test_transactions_are_looked_up_per_account_once():
    """One GET per (contactId, definitionId); another account's transaction is not the row's."""
    rows = valid_rows(4, contactId=[GUID, GUID, OTHER, OTHER], definitionId=[1, 2, 1, 1])
    dicts = rows.to_dicts()
    ledger = Ledger(
        {
            (GUID, 1): [held(dicts[0]), held(dicts[2])],  # row 3's content, on GUID's account
            (GUID, 2): [],
            (OTHER, 1): [held(dicts[3])],
        }
    )
    assert find_applied(rows, ledger, SENT) == {1, 4}
    assert len(ledger.asked) == 3
    assert set(ledger.asked) == {(GUID, 1), (GUID, 2), (OTHER, 1)}


def test_found_through_the_engage_client_with_json_numbers():
    """Over the real client (MockTransport, JSON amounts as numbers), a held row is found."""
    rows = valid_rows(2, amount=["0.1", "7"], definitionId=[1, 1])
    dicts = rows.to_dicts()

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.params["contactId"] == GUID
        assert request.url.params["definitionId"] == "1"
        item = {
            "amount": 0.1,
            "source": "POS",
            "description": "receipt 0",
            "validTo": dicts[0]["validTo"],
        }
        return httpx.Response(
            200, json={"items": [{**item, "createdOn": iso(SENT + 5)}], "totalCount": 1}
        )

    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(handle))
    client = EngageClient(http, RetryPolicy(max_attempts=1))
    assert dicts[0]["description"] == "receipt 0"
    assert find_applied(rows, client, SENT) == {1}


def test_count_held_counts_every_matching_transaction_per_row():
    """count_held: 0, 1 or 2 per row; identical rows each see every match (nothing is taken)."""
    rows = valid_rows(
        3, amount=["5", "5", "6"], definitionId=[1, 1, 1], description=["x", "x", "y"]
    )
    dicts = rows.to_dicts()
    ledger = Ledger(
        {
            (GUID, 1): [
                held(dicts[0]),
                held(dicts[0], id=2),
                held(dicts[0], SENT - SLACK_S - 60, id=3),  # too old to count
                held(dicts[2], description="z"),
            ]
        }
    )
    assert held_counts(rows, ledger, SENT) == {1: 2, 2: 2, 3: 0}
    assert held_counts(rows, ledger, None) == {1: 3, 2: 3, 3: 0}


def test_only_transactions_created_while_the_batches_were_sent_are_kept():
    """An account's years of transactions are not kept in memory: only those created in the
    window (with the clocks' slack), and those whose creation can't be read."""
    row = one_row().to_dicts()[0]
    kept = [held(row, SENT + 10), held(row, SENT - SLACK_S + 60, id=2), held(row, createdOn=None)]
    old = [held(row, SENT - 86400 * 365, id=3), held(row, SENT + RETRIES_S + SLACK_S + 60, id=4)]
    read = read_accounts([(GUID, 1)], Ledger({(GUID, 1): [old[0], *kept, old[1]]}),
                         since=SENT, until=SENT)  # fmt: skip
    assert read == {(GUID, 1): kept}
