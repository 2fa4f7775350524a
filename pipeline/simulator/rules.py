"""Engage's per-row rules for ``POST /api/v2/point-accounts/transactions``, written from the API
description alone.

A row that breaks a rule is not accepted: it is echoed back in ``notAccepted`` exactly as sent.
An unknown contact or definition goes to ``missingContactIds``/``missingDefinitionIds``; every
other broken rule adds ``"row N: ..."`` (N 0-based within the request) to ``errorMessages``.
Keys the rules do not know are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_guid(value: object) -> bool:
    """True for a plain 36-character GUID string (no braces), in either case."""
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


class Directory(Protocol):
    """What the rules need to know about the tenant."""

    def has_contact(self, contact_id: str) -> bool: ...

    def has_definition(self, definition_id: int) -> bool: ...


@dataclass(frozen=True)
class AcceptedRow:
    """A row that passed every rule, with its values parsed."""

    contact_id: str
    definition_id: int
    amount: Decimal
    source: str
    description: str
    time_stamp: datetime | None
    valid_from: datetime | None
    valid_to: datetime | None


@dataclass
class Verdict:
    """The outcome of one request: rows to apply and the response's four lists."""

    accepted: list[AcceptedRow] = field(default_factory=list)
    not_accepted: list[Any] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    missing_definition_ids: list[int] = field(default_factory=list)
    missing_contact_ids: list[str] = field(default_factory=list)

    def result(self) -> dict[str, list[Any]]:
        """The body of the 202 response (PointTransactionToAccountResultModel)."""
        return {
            "notAccepted": self.not_accepted,
            "errorMessages": self.error_messages,
            "missingDefinitionIds": self.missing_definition_ids,
            "missingContactIds": self.missing_contact_ids,
        }


@dataclass
class _Row:
    """One row while it is being checked."""

    index: int
    data: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    missing_contact: str | None = None
    missing_definition: int | None = None

    def fail(self, problem: str) -> None:
        self.errors.append(f"row {self.index}: {problem}")

    @property
    def ok(self) -> bool:
        return not self.errors and self.missing_contact is None and self.missing_definition is None


def judge(rows: list[dict[str, Any]], directory: Directory) -> Verdict:
    """Check every row; the verdict says which to apply and what to answer."""
    verdict = Verdict()
    for index, data in enumerate(rows):
        row = _Row(index, data)
        accepted = _check(row, directory)
        if row.ok:
            verdict.accepted.append(accepted)
        else:
            _reject(row, verdict)
    return verdict


def _check(row: _Row, directory: Directory) -> AcceptedRow:
    """Parse every field, recording each broken rule on ``row``."""
    checked = AcceptedRow(
        contact_id=_contact(row, directory),
        definition_id=_definition(row, directory),
        amount=_amount(row),
        source=_text(row, "source"),
        description=_text(row, "description"),
        time_stamp=_moment(row, "timeStamp"),
        valid_from=_moment(row, "validFrom"),
        valid_to=_moment(row, "validTo"),
    )
    valid_from, valid_to = checked.valid_from, checked.valid_to
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        row.fail("validTo must be after validFrom")
    return checked


def _reject(row: _Row, verdict: Verdict) -> None:
    verdict.not_accepted.append(row.data)
    verdict.error_messages.extend(row.errors)
    contact, definition = row.missing_contact, row.missing_definition
    if contact is not None and contact not in verdict.missing_contact_ids:
        verdict.missing_contact_ids.append(contact)
    if definition is not None and definition not in verdict.missing_definition_ids:
        verdict.missing_definition_ids.append(definition)


def _contact(row: _Row, directory: Directory) -> str:
    value = row.data.get("contactId")
    if value is None:
        row.fail("contactId is required")
    elif not is_guid(value):
        row.fail("contactId must be a GUID")
    elif not directory.has_contact(value.lower()):
        row.missing_contact = value.lower()
    return value.lower() if isinstance(value, str) else ""


def _definition(row: _Row, directory: Directory) -> int:
    value = row.data.get("definitionId")
    if value is None:
        row.fail("definitionId is required")
    elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        row.fail("definitionId must be a positive integer")
    elif not directory.has_definition(value):
        row.missing_definition = value
    return value if isinstance(value, int) else 0


def _amount(row: _Row) -> Decimal:
    value = row.data.get("amount")
    if value is None:
        row.fail("amount is required")
    elif isinstance(value, bool) or not isinstance(value, int | Decimal):
        row.fail("amount must be a number")
    else:
        return Decimal(value)
    return Decimal(0)


def _text(row: _Row, name: str) -> str:
    value = row.data.get(name)
    if value is not None and not isinstance(value, str):
        row.fail(f"{name} must be a string")
    elif not value or not value.strip():
        row.fail(f"{name} is required")
    else:
        return value
    return ""


def _moment(row: _Row, name: str) -> datetime | None:
    value = row.data.get(name)
    if value is None:
        return None
    moment = _parse_moment(value)
    if moment is None:
        row.fail(f"{name} must be an ISO 8601 date-time with a UTC offset")
    return moment


def _parse_moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None
