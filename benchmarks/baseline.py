"""The sequential baseline: what a script with Voyado's generated SDK does.

``python benchmarks/baseline.py FILE --rows N --url URL`` (the API key from ENGAGE_API_KEY):
csv.DictReader turns the first N rows into Python dicts with the SDK model's types (amount a
float, definitionId an int, dates as ISO date-times), the list is cut into 1000-row lists, and
each is sent with ``json.dumps`` and one ``httpx`` POST, one request at a time, on one
keep-alive connection (a generated SDK keeps a client, so this is the kind version). Prints one
JSON line: rows read, rows skipped (an SDK model refuses them), requests, rows accepted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterator
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

import httpx

TRANSACTIONS = "/api/v2/point-accounts/transactions"
BATCH = 1000


def rows(path: Path, limit: int) -> Iterator[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        yield from islice(csv.DictReader(file), limit)


def typed(row: dict[str, str]) -> dict[str, Any] | None:
    """The row as the SDK's model serializes it, or None if the model refuses it."""
    try:
        model: dict[str, Any] = {
            "contactId": row["contactId"],
            "amount": float(row["amount"]),
            "definitionId": int(row["definitionId"]),
            "timeStamp": row["timeStamp"],
            "source": row["source"],
            "description": row["description"],
        }
        if row.get("validTo"):
            model["validTo"] = f"{date.fromisoformat(row['validTo'])}T00:00:00+00:00"
    except ValueError:
        return None
    return model


def send(models: list[dict[str, Any]], url: str, api_key: str) -> tuple[int, int]:
    """POST the models 1000 at a time, one after the other: (requests, rows accepted)."""
    requests = accepted = 0
    headers = {"apikey": api_key, "content-type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for start in range(0, len(models), BATCH):
            batch = models[start : start + BATCH]
            response = client.post(TRANSACTIONS, content=json.dumps(batch))
            response.raise_for_status()
            requests += 1
            accepted += len(batch) - len(response.json()["notAccepted"])
    return requests, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    read = list(rows(args.file, args.rows))
    models = [model for model in map(typed, read) if model is not None]
    requests, accepted = send(models, args.url, os.environ["ENGAGE_API_KEY"])
    outcome = {
        "rows": len(read),
        "skipped": len(read) - len(models),
        "requests": requests,
        "accepted": accepted,
    }
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
