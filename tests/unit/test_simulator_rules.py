"""The simulator's rules: the column-by-column fast path agrees with the row-by-row rules, and
the store builds on first read what it would have built on apply."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.simulator.codec import decode
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.fixture import contact_id
from pipeline.simulator.rules import _accept_all, _judge_each, judge
from pipeline.simulator.store import Store

KNOWN = [contact_id(n) for n in (1, 2, 3)]
STRANGER = "00000000-0000-0000-0000-000000000001"

VALID: dict[str, list[Any]] = {
    "contactId": [*KNOWN, KNOWN[0].upper()],
    "definitionId": [1, 2, 5],
    "amount": [0, 5, -50, 10**30, Decimal("1.50"), Decimal("0.10"), Decimal("1E+2"), Decimal("-0")],
    "source": ["Store 12", "a\u00e9\u6f22", " x "],
    "description": ["receipt 1", "b"],
    "timeStamp": [None, "2026-11-25T08:00:13+01:00", "2026-11-25T08:00:13Z"],
    "validFrom": [None, "2025-01-01T00:00:00+00:00"],
    "validTo": [None, "2027-12-31T00:00:00+01:00", "2030-01-01T00:00:00.5-05:00"],
}
INVALID: dict[str, list[Any]] = {
    "contactId": [STRANGER, "not-a-guid", "", 7],
    "definitionId": [9, 0, -1, True, Decimal("1.0"), "1"],
    "amount": [True, "7", "x", 1.5],
    "source": ["  ", "", 3],
    "description": ["", ["a"]],
    "timeStamp": ["2026-11-25T08:00:13", "2027-12-31+02:00", "yesterday", "", 5],
    "validFrom": ["2027-12-31", "x"],
    "validTo": ["2025-01-01T00:00:00+00:00", "2024-12-31T23:59:59-01:00", "2026-01-01", 0],
}


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row as json.loads with Decimal floats gives it: valid, or with one value broken;
    optional dates present or absent."""
    broken = draw(st.sampled_from([None, None, *VALID]))
    row: dict[str, Any] = {}
    for name, valid in VALID.items():
        value = draw(st.sampled_from(INVALID[name] if name == broken else valid))
        if value is not None or draw(st.booleans()):
            row[name] = value
    return row


def store() -> Store:
    config = SimulatorConfig(contacts=KNOWN)
    return Store(config.contact_ids(), config.point_definitions())


@settings(max_examples=500, deadline=None)
@given(st.lists(rows(), max_size=4))
def test_fast_path_accepts_only_what_the_rules_accept_and_parses_the_same(
    batch: list[dict[str, Any]],
) -> None:
    """Whenever the fast path accepts a request, every row passes the rules, parsed alike;
    whenever every row passes, the fast path takes it."""
    fast, each = _accept_all(batch, store()), _judge_each(batch, store())
    if fast is not None:
        assert fast == each.accepted
        assert [list(map(repr, row)) for row in fast] == [
            list(map(repr, row)) for row in each.accepted
        ]
    assert (fast is not None) == (each.not_accepted == [])
    assert judge(batch, store()) == each


def test_fast_path_takes_a_plain_valid_request() -> None:
    """A request of valid rows of the plain JSON types is judged by the fast path."""
    body = json.dumps(
        [
            {
                "contactId": KNOWN[n % 3],
                "amount": 100 + n,
                "definitionId": 1 + n % 5,
                "timeStamp": f"2026-11-25T08:00:{n:02}+01:00",
                "source": "Webshop",
                "description": f"receipt {n}",
                "validTo": "2027-12-31T00:00:00+01:00",
            }
            for n in range(50)
        ]
    ).replace('"amount": 101', '"amount": 101.50')
    batch = decode(body.encode())
    accepted = _accept_all(batch, store())
    assert accepted is not None and len(accepted) == 50
    assert accepted[1].amount == Decimal("101.50") and str(accepted[1].amount) == "101.50"
    assert accepted == _judge_each(batch, store()).accepted


def test_store_builds_transactions_on_first_read_in_apply_order() -> None:
    """Applied rows become transactions, accounts and balances when first read, in order."""
    tenant = store()
    first, second = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    rows = [
        {"contactId": KNOWN[1], "definitionId": 2, "amount": Decimal("1.50")},
        {"contactId": KNOWN[0], "definitionId": 2, "amount": 3},
    ]
    for row in rows:
        row |= {"source": "s", "description": "d"}
    tenant.apply(judge(rows, tenant).accepted, "k1", first)
    tenant.apply(judge(rows[:1], tenant).accepted, "k2", second)
    assert [(t.id, t.account_id, t.idempotency_key) for t in tenant.transactions] == [
        (1, 1, "k1"),
        (2, 2, "k1"),
        (3, 1, "k2"),
    ]
    assert tenant.transactions[2].created_on == second
    assert [str(account.balance) for account in tenant.accounts] == ["3.00", "3"]
    tenant.reset()
    assert tenant.transactions == [] and tenant.accounts == []
