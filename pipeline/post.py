"""Post: send batches to Engage and settle every row: accepted, refused, or unsent.

Transient failures are retried inside the client under the same key. A batch Engage refuses
as a whole (a 4xx other than 401/403/409/429) is split in halves, each under a key derived
from its parent's, down to single rows, so one bad row cannot take 999 good ones with it.
A ``notAccepted`` row is matched back to its input row by content, its reason inferred from
``missingContactIds``, ``missingDefinitionIds`` and ``errorMessages``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import polars as pl
import structlog

from pipeline.chunk import Batch
from pipeline.engage import EngageClient, PostResult
from pipeline.errors import BatchRejectedError, EngageError, TransientEngageError
from pipeline.load import SOURCE_ROW

log = structlog.get_logger("pipeline.post")
OUTCOME_SCHEMA = {
    SOURCE_ROW: pl.Int64,
    "accepted": pl.Boolean,
    "stage": pl.String,
    "reason": pl.String,
    "idempotencyKey": pl.String,
}


@dataclass
class Posted:
    """Every row that was planned, settled; and why the run stopped early, if it did."""

    outcomes: pl.DataFrame  # OUTCOME_SCHEMA, one row per planned row
    requests: int = 0
    batches_sent: int = 0
    unmatched: int = 0  # notAccepted rows that matched no row sent
    aborted: EngageError | None = None


@dataclass
class _Ledger:
    parts: list[pl.DataFrame] = field(default_factory=list)
    requests: int = 0
    unmatched: int = 0

    def settle(
        self, rows: pl.DataFrame, key: str | None, stage: str | None, reason: str | None
    ) -> None:
        self.parts.append(
            rows.select(
                pl.col(SOURCE_ROW),
                pl.lit(stage is None).alias("accepted"),
                pl.lit(stage, pl.String).alias("stage"),
                pl.lit(reason, pl.String).alias("reason"),
                pl.lit(key, pl.String).alias("idempotencyKey"),
            )
        )

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.parts) if self.parts else pl.DataFrame(schema=OUTCOME_SCHEMA)


def post(
    batches: Iterable[Batch],
    client: EngageClient,
    should_stop: Callable[[], bool] = lambda: False,
) -> Posted:
    """Send ``batches`` in order; stop at the first error that retrying could not cure."""
    ledger = _Ledger()
    sent = 0
    pending = iter(batches)
    for batch in pending:
        if should_stop():
            _settle_unsent(ledger, batch, pending, "the run was interrupted before it was sent")
            break
        try:
            _send(batch, client, ledger)
            sent += 1
        except EngageError as exc:
            _settle_in_doubt(ledger, batch, exc)
            _settle_unsent(ledger, None, pending, f"not sent: the run stopped ({exc})")
            return Posted(ledger.frame(), ledger.requests, sent + 1, ledger.unmatched, exc)
    return Posted(ledger.frame(), ledger.requests, sent, ledger.unmatched)


def _send(batch: Batch, client: EngageClient, ledger: _Ledger) -> None:
    started = time.perf_counter()
    ledger.requests += 1
    bound = log.bind(batch=batch.label, key=batch.key, rows=batch.rows.height)
    try:
        result = client.post_transactions(batch.body, batch.key)
    except BatchRejectedError as exc:
        bound.warning("batch refused", status=exc.status, latency_s=_since(started))
        _split(batch, exc, client, ledger)
        return
    refused = match_not_accepted(batch.rows, result)
    ledger.unmatched += len(result.not_accepted) - refused.height
    accepted = batch.rows.join(refused, on=SOURCE_ROW, how="anti")
    ledger.settle(accepted, batch.key, None, None)
    for reason, group in refused.group_by("reason", maintain_order=True):
        ledger.settle(group, batch.key, "server", str(reason[0]))
    bound.info(
        "batch posted",
        status=result.status,
        attempts=result.attempts,
        latency_s=_since(started),
        accepted=accepted.height,
        not_accepted=refused.height,
    )


def _split(batch: Batch, exc: BatchRejectedError, client: EngageClient, ledger: _Ledger) -> None:
    if batch.rows.height == 1:
        ledger.settle(
            batch.rows,
            batch.key,
            "batch",
            f"Engage refused it: {exc.status} {_squash(exc.body)}".strip(),
        )
        return
    for half in batch.halves():
        _send(half, client, ledger)


def _settle_in_doubt(ledger: _Ledger, batch: Batch, exc: EngageError) -> None:
    """Rows of the batch in flight that no answer settled."""
    done = pl.concat([p.select(SOURCE_ROW) for p in ledger.parts]) if ledger.parts else None
    rows = batch.rows if done is None else batch.rows.join(done, on=SOURCE_ROW, how="anti")
    if isinstance(exc, TransientEngageError):
        reason = (
            f"outcome unknown ({exc}); re-run the same input to settle it: the same key "
            "is sent again and Engage applies it at most once"
        )
    else:
        reason = f"not applied: {exc}"
    ledger.settle(rows, batch.key, "batch", reason)


def _settle_unsent(ledger: _Ledger, first: Batch | None, rest: Iterable[Batch], why: str) -> None:
    for batch in ([first] if first else []) + list(rest):
        ledger.settle(batch.rows, None, "unsent", why)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _squash(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


# --- matching notAccepted rows back to input rows --------------------------------------


def match_not_accepted(rows: pl.DataFrame, result: PostResult) -> pl.DataFrame:
    """``sourceRow, reason`` for each input row a ``notAccepted`` entry stands for."""
    if not result.not_accepted:
        return pl.DataFrame(schema={SOURCE_ROW: pl.Int64, "reason": pl.String})
    sent = rows.select(
        SOURCE_ROW, "contactId", "amount", "definitionId", "source", "description"
    ).to_dicts()
    taken: set[int] = set()
    found: list[tuple[int, str]] = []
    for echoed in result.not_accepted:
        index = _best_match(_lower_keys(echoed), sent, taken)
        if index is not None:
            taken.add(index)
            found.append((sent[index][SOURCE_ROW], _reason(sent[index], index, result)))
    return pl.DataFrame(found, schema={SOURCE_ROW: pl.Int64, "reason": pl.String}, orient="row")


def _best_match(echoed: dict[str, Any], sent: list[dict[str, Any]], taken: set[int]) -> int | None:
    """The first untaken row equal on every field compared, trying looser tiers in turn."""
    tiers = (
        ("contactid", "definitionid", "amount", "source", "description"),
        ("contactid", "definitionid", "amount"),
        ("contactid", "definitionid"),
        ("contactid",),
    )
    for tier in tiers:
        want = tuple(_norm(f, echoed.get(f)) for f in tier)
        for i, row in enumerate(sent):
            if i not in taken and tuple(_norm(f, row[_API[f]]) for f in tier) == want:
                return i
    return None


_API = {
    "contactid": "contactId",
    "definitionid": "definitionId",
    "amount": "amount",
    "source": "source",
    "description": "description",
}


def _lower_keys(row: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in row.items()}


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
