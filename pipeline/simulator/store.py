"""The simulator's in-memory tenant: contacts, definitions, point accounts, transactions, the
idempotency table and the request log.

Ids of accounts and transactions are sequential from 1. Balances are exact ``Decimal`` sums of
every accepted amount, whatever the transactions' validity (``pendingPoints`` is always 0).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

from pipeline.simulator.config import PointDefinition
from pipeline.simulator.rules import AcceptedRow

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


@dataclass
class Account:
    """A point account: one per (contact, definition), created by its first transaction."""

    id: int
    contact_id: str
    definition_id: int
    balance: Decimal = Decimal(0)

    def model(self) -> dict[str, Any]:
        """As Engage's PointAccountModel."""
        return {
            "id": self.id,
            "contactId": self.contact_id,
            "definitionId": self.definition_id,
            "balance": self.balance,
            "balanceExpires": None,
            "pendingPoints": 0,
            "links": [],
        }


@dataclass(frozen=True)
class Transaction:
    """An accepted row, as stored."""

    id: int
    account_id: int
    contact_id: str
    definition_id: int
    amount: Decimal
    transaction_date: datetime
    created_on: datetime
    source: str
    description: str
    valid_from: datetime
    valid_to: datetime | None
    idempotency_key: str | None
    type: str = "Manual"

    def is_active(self, now: datetime) -> bool:
        return self.valid_from <= now and (self.valid_to is None or self.valid_to > now)

    def is_pending(self, now: datetime) -> bool:
        return self.valid_from > now

    def model(self) -> dict[str, Any]:
        """As Engage's PointTransactionModel."""
        return {
            "id": self.id,
            "accountId": self.account_id,
            "amount": self.amount,
            "createdOn": self.created_on.isoformat(),
            "modifiedOn": self.created_on.isoformat(),
            "transactionDate": self.transaction_date.isoformat(),
            "type": self.type,
            "source": self.source,
            "description": self.description,
            "validFrom": self.valid_from.isoformat(),
            "validTo": self.valid_to.isoformat() if self.valid_to else None,
            "retailTransactionLineItemId": None,
            "links": [],
        }

    def record(self) -> dict[str, Any]:
        """The model plus what only the simulator shows: contact, definition, key."""
        extra = {
            "contactId": self.contact_id,
            "definitionId": self.definition_id,
            "idempotencyKey": self.idempotency_key,
        }
        return self.model() | extra


@dataclass(frozen=True)
class StoredOutcome:
    """The first answer to a request with an Idempotency-Key, replayed to its repeats."""

    body_sha256: str
    status: int
    body: bytes
    stored_at: float


@dataclass(frozen=True)
class LoggedRequest:
    """One API request as the simulator saw it (admin requests are not logged)."""

    monotonic: float
    wall_time: datetime
    method: str
    path: str
    idempotency_key: str | None
    status: int
    rows: int | None
    note: str | None
    query: str = ""  # the query string, as sent

    def record(self) -> dict[str, Any]:
        return {
            "monotonic": self.monotonic,
            "wallTime": self.wall_time.isoformat(),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "idempotencyKey": self.idempotency_key,
            "status": self.status,
            "rows": self.rows,
            "note": self.note,
        }


class Store:
    """All state of one simulated tenant."""

    def __init__(
        self,
        contacts: Iterable[str],
        definitions: Sequence[PointDefinition],
        auto_create_contacts: bool = False,
    ) -> None:
        self._contacts = frozenset(contact.lower() for contact in contacts)
        self._auto_create_contacts = auto_create_contacts
        self.definitions = list(definitions)
        self._definitions = {definition.id: definition for definition in definitions}
        self.outcomes: dict[str, StoredOutcome] = {}
        self.in_progress: set[str] = set()
        self.requests: list[LoggedRequest] = []
        self._accounts: list[Account] = []
        self._transactions: list[Transaction] = []
        self._owners: dict[tuple[str, int], Account] = {}
        self._by_account: dict[int, list[Transaction]] = {}
        self._unsettled: list[_Applied] = []
        self._lock = threading.Lock()

    @property
    def accounts(self) -> list[Account]:
        """Every point account, by id."""
        self._settle()
        return self._accounts

    @property
    def transactions(self) -> list[Transaction]:
        """Every stored transaction, by id."""
        self._settle()
        return self._transactions

    def reset(self) -> None:
        """Forget every account, transaction, stored outcome and logged request."""
        with self._lock:
            for table in (self._accounts, self._transactions, self.requests, self._unsettled):
                table.clear()
            for index in (self.outcomes, self._owners, self._by_account):
                index.clear()

    def has_contact(self, contact_id: str) -> bool:
        return self._auto_create_contacts or contact_id.lower() in self._contacts

    def has_definition(self, definition_id: int) -> bool:
        return definition_id in self._definitions

    def definition(self, definition_id: int) -> PointDefinition | None:
        return self._definitions.get(definition_id)

    def apply(self, rows: Sequence[AcceptedRow], key: str | None, now: datetime) -> None:
        """Append one transaction per row and update the balances. Never awaits.

        The transactions and accounts are built on the first read through the store that
        needs them, in the order the rows were applied, with the ``now`` of their request:
        what a reader sees is the same as if they were built here, and a POST does not pay for
        building them. (An Account kept from an earlier read shows its balance as of then.)
        """
        if rows:
            with self._lock:
                self._unsettled.append(_Applied(tuple(map(tuple, rows)), key, now))

    def account(self, account_id: int) -> Account | None:
        accounts = self.accounts
        return accounts[account_id - 1] if 0 < account_id <= len(accounts) else None

    def find_account(self, contact_id: str, definition_id: int) -> Account | None:
        self._settle()
        return self._owners.get((contact_id.lower(), definition_id))

    def accounts_of(self, contact_id: str) -> list[Account]:
        return [account for account in self.accounts if account.contact_id == contact_id.lower()]

    def transaction(self, transaction_id: int) -> Transaction | None:
        in_range = 0 < transaction_id <= len(self.transactions)
        return self.transactions[transaction_id - 1] if in_range else None

    def transactions_of(self, account_id: int) -> list[Transaction]:
        self._settle()
        return list(self._by_account.get(account_id, []))

    def recall(self, key: str, now: float, window: float) -> StoredOutcome | None:
        """The stored outcome for ``key`` if younger than ``window`` seconds."""
        outcome = self.outcomes.get(key)
        if outcome is not None and now - outcome.stored_at >= window:
            del self.outcomes[key]
            return None
        return outcome

    def _settle(self) -> None:
        """Build the transactions and balances of every request applied since the last read."""
        with self._lock:
            for applied in self._unsettled:
                self._build(applied)
            self._unsettled.clear()

    def _build(self, applied: _Applied) -> None:
        transactions, by_account = self._transactions, self._by_account
        for row in map(AcceptedRow._make, applied.rows):
            account = self._account_for(row.contact_id, row.definition_id)
            number = len(transactions) + 1
            transaction = _transaction(number, account, row, applied.key, applied.now)
            transactions.append(transaction)
            by_account.setdefault(account.id, []).append(transaction)
            account.balance = _EXACT.add(account.balance, row.amount)

    def _account_for(self, contact_id: str, definition_id: int) -> Account:
        account = self._owners.get((contact_id, definition_id))
        if account is None:
            account = Account(len(self._accounts) + 1, contact_id, definition_id)
            self._accounts.append(account)
            self._owners[(contact_id, definition_id)] = account
        return account


@dataclass(frozen=True)
class _Applied:
    """The accepted rows of one request, not yet built into transactions.

    The rows are kept as plain tuples (of str, int, Decimal, datetime): the garbage collector
    stops tracking those, so a store holding millions of them does not slow every collection.
    """

    rows: tuple[tuple[Any, ...], ...]
    key: str | None
    now: datetime


def _transaction(
    transaction_id: int, account: Account, row: AcceptedRow, key: str | None, now: datetime
) -> Transaction:
    return Transaction(
        id=transaction_id,
        account_id=account.id,
        contact_id=account.contact_id,
        definition_id=account.definition_id,
        amount=row.amount,
        transaction_date=row.time_stamp or now,
        created_on=now,
        source=row.source,
        description=row.description,
        valid_from=row.valid_from or now,
        valid_to=row.valid_to,
        idempotency_key=key,
    )
