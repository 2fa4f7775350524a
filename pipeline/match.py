"""Match Engage's ``notAccepted`` rows back to the input rows they stand for.

Engage echoes refused rows without an index or a reason. Each echoed row is matched to the
first untaken sent row equal on every field (dates as instants), then on fewer, in turn (the
echo may reformat or leave out some); its reason is inferred from ``missingContactIds``,
``missingDefinitionIds`` and the ``errorMessages`` that name it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import polars as pl

from pipeline.engage import PostResult
from pipeline.load import SOURCE_ROW

DATES = ("timestamp", "validfrom", "validto")
TIERS = (
    ("contactid", "definitionid", "amount", "source", "description", *DATES),
    ("contactid", "definitionid", "amount", "source", "description"),
    ("contactid", "definitionid", "amount"),
    ("contactid", "definitionid"),
    ("contactid",),
)
_API = {
    "contactid": "contactId",
    "definitionid": "definitionId",
    "amount": "amount",
    "source": "source",
    "description": "description",
    "timestamp": "timeStamp",
    "validfrom": "validFrom",
    "validto": "validTo",
}


def match_not_accepted(rows: pl.DataFrame, result: PostResult) -> list[tuple[int, str]]:
    """``(sourceRow, reason)`` for each input row a ``notAccepted`` entry stands for."""
    if not result.not_accepted:
        return []
    sent = rows.select(SOURCE_ROW, *_API.values()).to_dicts()
    taken: set[int] = set()
    found: list[tuple[int, str]] = []
    for echoed in result.not_accepted:
        index = _best_match({k.lower(): v for k, v in echoed.items()}, sent, taken)
        if index is not None:
            taken.add(index)
            found.append((sent[index][SOURCE_ROW], _reason(sent[index], index, result)))
    return sorted(found)


def _best_match(echoed: dict[str, Any], sent: list[dict[str, Any]], taken: set[int]) -> int | None:
    for tier in TIERS:
        want = tuple(_norm(f, echoed.get(f)) for f in tier)
        for i, row in enumerate(sent):
            if i not in taken and tuple(_norm(f, row[_API[f]]) for f in tier) == want:
                return i
    return None


def _norm(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "contactid":
        return str(value).strip().lower()
    if name in ("amount", "definitionid"):
        try:
            return Decimal(str(value)).normalize()
        except InvalidOperation:
            return str(value)
    if name in DATES:  # the same instant, however written
        try:
            return datetime.fromisoformat(str(value).replace("z", "Z")).astimezone(UTC)
        except (ValueError, OverflowError):
            return str(value)
    return str(value)


def _reason(row: dict[str, Any], index: int, result: PostResult) -> str:
    contact, definition = str(row["contactId"]).lower(), int(row["definitionId"])
    reasons = []
    if contact in {c.lower() for c in result.missing_contact_ids}:
        reasons.append(f"contact {row['contactId']} does not exist in Engage")
    if definition in result.missing_definition_ids:
        reasons.append(f"point definition {definition} does not exist in Engage")
    if not reasons:
        reasons = _messages_for(contact, index, result.error_messages)
    return "not accepted by Engage: " + ("; ".join(reasons) or "no reason given")


def _messages_for(contact: str, index: int, messages: list[str]) -> list[str]:
    """The batch's error messages that name this row, else all of them."""
    own = re.compile(rf"(\brow {index}\b|\[{index}\]|{re.escape(contact)})", re.IGNORECASE)
    mine = [m for m in messages if own.search(m)]
    return mine or messages
