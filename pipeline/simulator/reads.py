"""The GET endpoints of Engage's point-account API, answered from the store.

Bad query parameters raise ``HTTPException(400)``, unknown ids ``HTTPException(404)``; the app
turns both into ``{"message": ...}``. Lists are ordered by id. ``count`` in a paged result is
the requested page size, not the number of items returned.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pipeline.simulator.codec import respond
from pipeline.simulator.config import PointDefinition
from pipeline.simulator.rules import is_guid
from pipeline.simulator.store import Store, Transaction

MAX_COUNT = 1000
_BIG = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")

_FILTERS: dict[str, Callable[[Transaction, datetime], bool]] = {
    "all": lambda transaction, now: True,
    "active": Transaction.is_active,
    "pending": Transaction.is_pending,
}


def definitions(store: Store, request: Request) -> Response:
    """GET /api/v2/point-accounts/definitions: a bare array, sliced by offset and count."""
    offset, count = _page(request)
    return respond([_definition(found) for found in store.definitions[offset : offset + count]])


def definition(store: Store, request: Request) -> Response:
    """GET /api/v2/point-accounts/definitions/{id}."""
    definition_id: int = request.path_params["id"]
    found = store.definition(definition_id)
    if found is None:
        raise HTTPException(404, f"point definition {definition_id} not found")
    return respond(_definition(found))


def accounts(store: Store, request: Request) -> Response:
    """GET /api/v2/point-accounts?contactId=...: the contact's accounts (none is not an error)."""
    contact_id = _guid(request, "contactId")
    models = [account.model() for account in store.accounts_of(contact_id)]
    return respond(_paged(models, *_page(request)))


def account(store: Store, request: Request) -> Response:
    """GET /api/v2/point-accounts/{id}."""
    account_id: int = request.path_params["id"]
    found = store.account(account_id)
    if found is None:
        raise HTTPException(404, f"point account {account_id} not found")
    return respond(found.model())


def transactions(store: Store, request: Request) -> Response:
    """GET /api/v2/point-accounts/transactions?accountId | contactId+definitionId, filtered."""
    wanted = _filter(request)
    now = datetime.now(UTC)
    models = [found.model() for found in _addressed(store, request) if wanted(found, now)]
    return respond(_paged(models, *_page(request)))


def transaction(store: Store, request: Request) -> Response:
    """GET /api/v2/point-accounts/transactions/{id}."""
    transaction_id: int = request.path_params["id"]
    found = store.transaction(transaction_id)
    if found is None:
        raise HTTPException(404, f"point transaction {transaction_id} not found")
    return respond(found.model())


def _addressed(store: Store, request: Request) -> list[Transaction]:
    """The transactions of the account named by accountId, or by contactId + definitionId."""
    params = request.query_params
    if "accountId" in params:
        account_id = _integer(request, "accountId", minimum=1)
        if store.account(account_id) is None:
            raise HTTPException(404, f"point account {account_id} not found")
        return store.transactions_of(account_id)
    if "contactId" in params and "definitionId" in params:
        contact_id = _guid(request, "contactId")
        found = store.find_account(contact_id, _integer(request, "definitionId", minimum=1))
        return store.transactions_of(found.id) if found else []
    raise HTTPException(400, "give accountId, or both contactId and definitionId")


def _filter(request: Request) -> Callable[[Transaction, datetime], bool]:
    name = request.query_params.get("filter", "All")
    if name.lower() not in _FILTERS:
        raise HTTPException(400, f"filter must be All, Active or Pending, got {name!r}")
    return _FILTERS[name.lower()]


def _page(request: Request) -> tuple[int, int]:
    offset = _integer(request, "offset", default=0)
    return offset, _integer(request, "count", default=100, maximum=MAX_COUNT)


def _paged(items: list[dict[str, Any]], offset: int, count: int) -> dict[str, Any]:
    return {
        "items": items[offset : offset + count],
        "totalCount": len(items),
        "offset": offset,
        "count": count,
        "links": [],
    }


def _definition(found: PointDefinition) -> dict[str, Any]:
    """As Engage's PointDefinitionModel."""
    return {"id": found.id, "name": found.name, "description": found.description, "links": []}


def _guid(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if value is None:
        raise HTTPException(400, f"{name} is required")
    if not is_guid(value):
        raise HTTPException(400, f"{name} must be a GUID, got {value!r}")
    return value


def _integer(
    request: Request, name: str, default: int | None = None, minimum: int = 0, maximum: int = _BIG
) -> int:
    """Query parameter ``name`` as an integer within [minimum, maximum]."""
    raw = request.query_params.get(name)
    if raw is None and default is not None:
        return default
    if raw is None:
        raise HTTPException(400, f"{name} is required")
    value = int(raw) if _INTEGER.fullmatch(raw) else None
    if value is None or not minimum <= value <= maximum:
        upper = "" if maximum == _BIG else f" to {maximum}"
        raise HTTPException(400, f"{name} must be an integer from {minimum}{upper}, got {raw!r}")
    return value
