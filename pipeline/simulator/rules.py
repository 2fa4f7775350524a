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
from itertools import repeat
from typing import Any, NamedTuple, Protocol

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_guid(value: object) -> bool:
    """True for a plain 36-character GUID string (no braces), in either case."""
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


class Directory(Protocol):
    """What the rules need to know about the tenant."""

    def has_contact(self, contact_id: str) -> bool: ...

    def has_definition(self, definition_id: int) -> bool: ...


class AcceptedRow(NamedTuple):
    """A row that passed every rule, with its values parsed.

    A named tuple rather than a dataclass: a request builds up to 1000 of them, and a tuple is
    cheap to build (the store keeps them as plain tuples, see ``store._Applied``).
    """

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
    plain = _accept_all(rows, directory)
    return Verdict(accepted=plain) if plain is not None else _judge_each(rows, directory)


def _judge_each(rows: list[dict[str, Any]], directory: Directory) -> Verdict:
    """Row by row, naming every broken rule."""
    verdict = Verdict()
    for index, data in enumerate(rows):
        row = _Row(index, data)
        accepted = _check(row, directory)
        if row.ok:
            verdict.accepted.append(accepted)
        else:
            _reject(row, verdict)
    return verdict


# The fast path. A request whose rows all pass every rule, with values of the plain JSON types,
# is judged column by column: the per-row work runs in C (map, set, zip) instead of a Python
# loop, values repeated in the request are checked once, and the GUIDs seen last are
# remembered. The result is the AcceptedRows ``_check`` would give. Any other request (a row
# that breaks a rule, or a value of an unusual type) goes through ``_check`` row by row, which
# names each broken rule.

_NONE = type(None)
_GUIDS_REMEMBERED = 65536
_known_guids: set[str] = set()


def _accept_all(rows: list[dict[str, Any]], directory: Directory) -> list[AcceptedRow] | None:
    """Every row parsed, if every row plainly passes every rule; else None."""
    contacts = _plain_contacts(_column(rows, "contactId"), directory)
    definitions = _plain_definitions(_column(rows, "definitionId"), directory)
    amounts = _column(rows, "amount")
    texts = [_column(rows, "source"), _column(rows, "description")]
    if contacts is None or definitions is None or not _plain_amounts(amounts):
        return None
    if not all(_plain_texts(column) for column in texts):
        return None
    moments = [_plain_moments(_column(rows, name)) for name in _MOMENTS]
    time_stamps, valid_from, valid_to = moments
    if time_stamps is None or valid_from is None or valid_to is None:
        return None
    if not _valid_in_order(valid_from, valid_to):
        return None
    parsed = zip(contacts, definitions, map(Decimal, amounts), *texts, *moments, strict=True)
    return list(map(tuple.__new__, repeat(AcceptedRow), parsed))


_MOMENTS = ("timeStamp", "validFrom", "validTo")


def _column(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return list(map(dict.get, rows, repeat(name)))


def _types(column: list[Any]) -> set[type]:
    return set(map(type, column))


def _plain_contacts(column: list[Any], directory: Directory) -> list[str] | None:
    """The contact ids in lower case, if all are GUIDs of known contacts."""
    if _types(column) - {str}:
        return None
    unseen = set(column) - _known_guids
    if not all(map(_GUID.fullmatch, unseen)):
        return None
    if len(_known_guids) + len(unseen) > _GUIDS_REMEMBERED:
        _known_guids.clear()
    _known_guids.update(unseen)
    lowered = list(map(str.lower, column))
    return lowered if all(map(directory.has_contact, set(lowered))) else None


def _plain_definitions(column: list[Any], directory: Directory) -> list[int] | None:
    """The definition ids, if all are known positive integers."""
    if _types(column) - {int}:
        return None
    distinct = set(column)
    if distinct and min(distinct) <= 0:
        return None
    return column if all(map(directory.has_definition, distinct)) else None


def _plain_amounts(column: list[Any]) -> bool:
    return not _types(column) - {int, Decimal}


def _plain_texts(column: list[Any]) -> bool:
    """All strings, none blank."""
    return not _types(column) - {str} and all(map(str.strip, column))


def _plain_moments(column: list[Any]) -> list[datetime | None] | None:
    """The moments (None where absent), if every present one is valid."""
    if _types(column) - {str, _NONE}:
        return None
    distinct = set(column)
    if len(distinct) * 2 > len(column) and None not in distinct:  # mostly unique, all there
        return _parsed_moments(column)
    distinct.discard(None)
    values = list(distinct)
    parsed = _parsed_moments(values)
    if parsed is None:
        return None
    return list(map(dict(zip(values, parsed, strict=True)).get, column))


def _parsed_moments(values: list[str]) -> list[datetime | None] | None:
    """Each value as a moment, if every one is an ISO 8601 date-time with a UTC offset."""
    try:
        moments = list(map(datetime.fromisoformat, values))
    except ValueError:
        return None
    return None if None in map(datetime.utcoffset, moments) else list(moments)


def _valid_in_order(valid_from: list[datetime | None], valid_to: list[datetime | None]) -> bool:
    """No row has a validTo at or before its validFrom."""
    if valid_from.count(None) == len(valid_from):
        return True
    pairs = zip(valid_from, valid_to, strict=True)
    return not any(start is not None and end is not None and end <= start for start, end in pairs)


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
