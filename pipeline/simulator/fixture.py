"""The simulator's built-in tenant: 500 contacts and five point definitions.

The contact ids follow one rule, shared with the sample data: contact ``i`` (1..500) is
``uuid5(NAMESPACE_URL, "points-import/contact/{i}")``.
"""

from __future__ import annotations

import uuid

CONTACT_COUNT = 500

DEFINITIONS: tuple[tuple[int, str, str], ...] = (
    (1, "Bonus points", "Points given as a bonus, outside any purchase."),
    (2, "Purchase points", "Points earned on purchases."),
    (3, "Campaign points", "Points earned in a marketing campaign."),
    (4, "Birthday points", "Points given on the contact's birthday."),
    (5, "Migration points", "Points carried over from a previous loyalty system."),
)


def contact_id(number: int) -> str:
    """The GUID of built-in contact ``number`` (1-based)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"points-import/contact/{number}"))


def contact_ids() -> list[str]:
    """The GUIDs of all built-in contacts, contact 1 first."""
    return [contact_id(number) for number in range(1, CONTACT_COUNT + 1)]
