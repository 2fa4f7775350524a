"""Write sample_data/transactions.csv: a night's export with a handful of bad rows of each kind.

Deterministic (seeded), so the file and its expected outcome (README) never drift:
    python sample_data/generate.py
Contacts follow the simulator's built-in fixture: uuid5(NAMESPACE_URL, "points-import/contact/N").
"""

from __future__ import annotations

import csv
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.engage import FIELDS

ROWS = 4000
HEADER = list(FIELDS)  # the API's fields, in its order
STORES = ["Store 012 Stockholm", "Store 044 Göteborg", "Store 101 Malmö", "Webshop"]


def contact(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"points-import/contact/{n}"))


def good_row(rng: random.Random, i: int) -> list[str]:
    when = datetime(2026, 11, 25, 8, 0) + timedelta(seconds=i * 13)
    store = rng.choice(STORES)
    definition = rng.choice([1, 1, 1, 2, 2, 3])
    amount = rng.choice([str(rng.randint(1, 500)), f"{rng.randint(1, 200)}.5", "-50"])
    receipt = f"receipt {100000 + i}"
    description = {
        1: f"Purchase, {receipt}",
        2: f'Bonus "double points" week, {receipt}',
        3: f"Campaign NOV26, {receipt}",
    }[definition]
    valid_to = "2027-12-31" if definition != 3 else "2026-12-31T23:59:59+01:00"
    return [
        contact(rng.randint(1, 500)),
        amount,
        str(definition),
        when.isoformat(),
        store,
        description,
        "",
        valid_to,
    ]


def bad_rows(rng: random.Random) -> list[tuple[list[str], str]]:
    """(row, why) — each kind a few times; 'why' is for the README, not the file."""
    base = good_row(rng, 0)

    def variant(**changes: str) -> list[str]:
        row = list(base)
        row[HEADER.index("description")] += f" #{rng.randint(1, 10**9)}"
        for name, value in changes.items():
            row[HEADER.index(name)] = value
        return row

    kinds: list[tuple[list[str], str]] = []
    kinds += [(variant(contactId=v), "contactId not a GUID") for v in ("12345", "not-a-guid", "")]
    kinds += [(variant(amount=v), "amount not a number") for v in ("", "12,5", "ten")]
    kinds += [
        (variant(definitionId=v), "definitionId not a positive whole number")
        for v in ("abc", "0", "-2")
    ]
    kinds += [(variant(definitionId="9"), "definitionId unknown to the tenant") for _ in range(2)]
    kinds += [(variant(source=v), "source blank") for v in ("", "   ")]
    kinds += [(variant(description=""), "description missing") for _ in range(2)]
    kinds += [(variant(timeStamp=v), "timeStamp not ISO 8601") for v in ("31/12/2026", "yesterday")]
    kinds += [
        (variant(validFrom="2027-06-01", validTo="2027-01-01"), "validTo before validFrom")
        for _ in range(2)
    ]
    kinds += [
        (
            variant(contactId=str(uuid.UUID(int=rng.getrandbits(128)))),
            "contact unknown to Engage (refused by the server)",
        )
        for _ in range(4)
    ]
    return kinds


def main() -> None:
    rng = random.Random(20261125)
    rows = [good_row(rng, i) for i in range(1, ROWS + 1)]
    rows[17][HEADER.index("description")] = "Goodwill points\nafter complaint, ticket 4411"
    for row, _why in bad_rows(rng):
        rows.insert(rng.randint(0, len(rows)), row)
    for n in (25, 1200, 3900):  # exact duplicates of an earlier row
        rows.insert(n + 1, list(rows[n]))
    path = Path(__file__).with_name("transactions.csv")
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
