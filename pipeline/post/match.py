"""Match Engage's ``notAccepted`` rows back to the input rows they stand for.

Engage echoes refused rows without an index or a reason. Each echoed row is matched to the
first untaken sent row equal on every field (dates as instants), then on fewer, in turn (the
echo may reformat or leave out some); if several rows that differ match what it gives, all
of them are left in doubt. A reason is inferred from ``missingContactIds``,
``missingDefinitionIds`` and the ``errorMessages`` that name the row. Rows are indexed by
their fields once per answer: a batch of 1000 refused rows is matched in one pass.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import polars as pl

from pipeline.model import FIELDS, SOURCE_ROW, PostResult

DATES = ("timestamp", "validfrom", "validto")
COMPARED = ("contactid", "definitionid", "amount", "source", "description", *DATES)
TIERS = (8, 5, 3, 2, 1)  # how many of COMPARED must be equal, from all to the contact only
AMBIGUOUS = (
    "outcome unknown: Engage refused one of rows {} and its answer does not tell which (it"
    " gives back only what they share); check them in Engage"
)


class Matched(NamedTuple):
    refused: list[tuple[int, str, str]]  # (sourceRow, stage, reason), by sourceRow
    unmatched: int  # notAccepted entries that stand for no row sent


def match_not_accepted(rows: pl.DataFrame, result: PostResult) -> Matched:
    """The input rows the ``notAccepted`` entries stand for, each with its reason. An entry
    that matches, on the fields it gives, several rows that differ in others leaves all of
    them in doubt (stage ``server``, reason ``outcome unknown``): which one Engage took is
    not known."""
    if not result.not_accepted:
        return Matched([], 0)
    sent = rows.select(SOURCE_ROW, *FIELDS).to_dicts()
    keys = [_key({k.lower(): v for k, v in row.items()}) for row in sent]
    by_key: list[dict[tuple[Any, ...], list[int]]] = [defaultdict(list) for _ in TIERS]
    for i, key in enumerate(keys):
        for tier, width in enumerate(TIERS):
            by_key[tier][key[:width]].append(i)
    taken: dict[int, tuple[str, str]] = {}  # row index -> (stage, reason)
    doubtful: set[int] = set()  # rows one entry matched among others: in doubt
    unmatched = 0
    missing = _Missing(result)
    for echoed in result.not_accepted:
        lower = {k.lower(): v for k, v in echoed.items()}
        candidates = _candidates(lower, by_key, taken, doubtful)
        if not candidates:
            unmatched += candidates is None
            continue
        if len({keys[i] for i in candidates}) == 1:  # alike in everything sent
            taken[candidates[0]] = ("server", missing.reason(sent[candidates[0]], candidates[0]))
        else:
            shown = ", ".join(str(sent[i][SOURCE_ROW]) for i in candidates)
            taken.update(dict.fromkeys(candidates, ("server", AMBIGUOUS.format(shown))))
            doubtful.update(candidates)
    refused = sorted((sent[i][SOURCE_ROW], *why) for i, why in taken.items())
    return Matched(refused, unmatched)


def _candidates(
    echoed: dict[str, Any], by_key: list[dict[tuple[Any, ...], list[int]]],
    taken: dict[int, tuple[str, str]], doubtful: set[int],
) -> list[int] | None:  # fmt: skip
    """The untaken rows an entry matches at the strictest tier where it matches any; none
    if there it matches rows left in doubt (it stands for one of them); None if no row."""
    key = _key(echoed)
    for width, rows in zip(TIERS, by_key, strict=True):
        found = rows.get(key[:width], [])
        untaken = [i for i in found if i not in taken]
        if untaken or doubtful.intersection(found):
            return untaken
    return None


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_norm(f, row.get(f)) for f in COMPARED)


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
    if name in DATES:  # the same instant, however written; without an offset, no instant
        try:
            at = datetime.fromisoformat(str(value).replace("z", "Z"))
        except ValueError:
            return str(value)
        return ("no offset", str(value)) if at.tzinfo is None else at.astimezone(UTC)
    return str(value)


class _Missing:
    """What a result says is missing, to tell a refused row why."""

    def __init__(self, result: PostResult) -> None:
        self.contacts = {c.lower() for c in result.missing_contact_ids}
        self.definitions = set(result.missing_definition_ids)
        self.messages = result.error_messages

    def reason(self, row: dict[str, Any], index: int) -> str:
        contact, definition = str(row["contactId"]).lower(), int(row["definitionId"])
        reasons = []
        if contact in self.contacts:
            reasons.append(f"contact {row['contactId']} does not exist in Engage")
        if definition in self.definitions:
            reasons.append(f"point definition {definition} does not exist in Engage")
        if not reasons:
            reasons = _messages_for(contact, index, self.messages)
        return "not accepted by Engage: " + ("; ".join(reasons) or "no reason given")


def _messages_for(contact: str, index: int, messages: list[str]) -> list[str]:
    """The batch's error messages that name this row, else all of them."""
    own = re.compile(rf"(\brow {index}\b|\[{index}\]|{re.escape(contact)})", re.IGNORECASE)
    mine = [m for m in messages if own.search(m)]
    return mine or messages
