"""The Engage simulator as an ASGI app: ``create_app(config)``.

Every API request needs the header ``apikey: <config.api_key>`` (else 401; 403 is never sent),
then passes the rate limit (else 429 with ``Retry-After: 1``). Every answer waits
``faults.latency_ms``; a POST waits between step 4 and step 5 below, while holding its
Idempotency-Key, so a concurrent repeat can see the 409.
``/_sim/...`` are admin endpoints for tests: no apikey, no latency, not logged.

``POST /api/v2/point-accounts/transactions``, in this order:

1. an injected fault (``faults.error_rates``): that status, nothing applied; 429s carry
   ``Retry-After``;
2. ``Content-Type`` not ``application/json``: 415. Real Engage answers 500 here; 415 lets tests
   tell a missing header from a server error;
3. a body that is not a JSON array of objects, has more than ``max_rows`` rows, or a row whose
   description is longer than ``max_description_length``: 400 (nothing applied; this models
   a batch Engage refuses whole, so a client's batch splitting can be tested);
4. ``Idempotency-Key``: blank 400; its first request still in progress 409; a stored outcome
   younger than the window is replayed byte for byte if the body (sha256 of the raw bytes) is
   the same, else 422. Only 2xx outcomes are stored;
5. the rows are judged (``rules.py``) and the accepted ones applied, with no ``await`` between
   judging, applying and storing the outcome; the answer is 202;
6. ``faults.apply_then_fail_rate``: the committed request is answered with a 500 or a dropped
   connection instead (its stored outcome stays the 202, so a retry with the key replays it).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipeline.simulator import reads
from pipeline.simulator.codec import BodyError, decode, encode, message, respond
from pipeline.simulator.config import FaultConfig, SimulatorConfig, describe_errors
from pipeline.simulator.faults import FaultInjector, RateLimiter
from pipeline.simulator.rules import judge
from pipeline.simulator.store import LoggedRequest, Store, StoredOutcome

TRANSACTIONS = "/api/v2/point-accounts/transactions"
_JSON = "application/json"


@dataclass
class Simulator:
    """The app's state: settings, store, fault injector and rate limiter."""

    config: SimulatorConfig
    store: Store
    faults: FaultInjector
    limiter: RateLimiter

    async def delay(self) -> None:
        """Wait the configured latency."""
        seconds = self.faults.latency_seconds()
        if seconds > 0:
            await asyncio.sleep(seconds)


Handler = Callable[[Simulator, Request], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class _Batch:
    """A POST that passed the batch-level checks and holds its Idempotency-Key, if any."""

    rows: list[dict[str, Any]]
    key: str | None
    digest: str


def create_app(config: SimulatorConfig) -> Starlette:
    """The simulator; ``app.state.store`` is its Store, ``app.state.simulator`` its state."""
    store = Store(config.contact_ids(), config.point_definitions(), config.auto_create_contacts)
    sim = Simulator(config, store, FaultInjector(config.faults), RateLimiter(config.rate_limit_rps))
    app = Starlette(routes=_routes(sim), exception_handlers={HTTPException: _http_error})
    app.state.store = store
    app.state.simulator = sim
    return app


def _routes(sim: Simulator) -> list[Route]:
    base = "/api/v2/point-accounts"
    return [
        Route(TRANSACTIONS, _api(sim, post_transactions), methods=["POST"]),
        Route(TRANSACTIONS, _api(sim, _reading(reads.transactions))),
        Route(f"{TRANSACTIONS}/{{id:int}}", _api(sim, _reading(reads.transaction))),
        Route(f"{base}/definitions", _api(sim, _reading(reads.definitions))),
        Route(f"{base}/definitions/{{id:int}}", _api(sim, _reading(reads.definition))),
        Route(base, _api(sim, _reading(reads.accounts))),
        Route(f"{base}/{{id:int}}", _api(sim, _reading(reads.account))),
        Route("/_sim/transactions", partial(_admin_transactions, sim)),
        Route("/_sim/requests", partial(_admin_requests, sim)),
        Route("/_sim/reset", partial(_admin_reset, sim), methods=["POST"]),
        Route("/_sim/faults", partial(_admin_faults, sim), methods=["PUT"]),
    ]


def _api(sim: Simulator, handler: Handler) -> Endpoint:
    """Wrap an API handler: apikey, rate limit, HTTPException -> JSON, request log.

    A refused request waits the latency here; the handlers wait it themselves.
    """

    async def endpoint(request: Request) -> Response:
        arrived, wall_time = time.monotonic(), datetime.now(UTC)
        refusal = _refusal(sim, request, arrived)
        if refusal is not None:
            await sim.delay()
        response = refusal or await _handle(sim, handler, request)
        sim.store.requests.append(_logged(request, response, arrived, wall_time))
        return response

    return endpoint


def _reading(read: Callable[[Store, Request], Response]) -> Handler:
    """A GET handler: wait the latency, then answer from the store."""

    async def handler(sim: Simulator, request: Request) -> Response:
        await sim.delay()
        return read(sim.store, request)

    return handler


async def _handle(sim: Simulator, handler: Handler, request: Request) -> Response:
    try:
        return await handler(sim, request)
    except HTTPException as exc:
        return message(exc.status_code, exc.detail)


def _refusal(sim: Simulator, request: Request, now: float) -> Response | None:
    if request.headers.get("apikey") != sim.config.api_key:
        return message(401, "the apikey header is missing or wrong")
    if not sim.limiter.admit(now):
        request.state.note = "rate_limited"
        return message(429, "too many requests", {"Retry-After": "1"})
    return None


def _logged(request: Request, response: Response, arrived: float, wall: datetime) -> LoggedRequest:
    state = request.state
    return LoggedRequest(
        monotonic=arrived,
        wall_time=wall,
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        idempotency_key=request.headers.get("idempotency-key"),
        status=response.status_code,
        rows=getattr(state, "rows", None),
        note=getattr(state, "note", None),
    )


async def post_transactions(sim: Simulator, request: Request) -> Response:
    """POST /api/v2/point-accounts/transactions (see the module docstring)."""
    begun = _begin(sim, request, await request.body())
    try:
        await sim.delay()
        return begun if isinstance(begun, Response) else _commit(sim, request, begun)
    finally:
        if isinstance(begun, _Batch) and begun.key is not None:
            sim.store.in_progress.discard(begun.key)


def _begin(sim: Simulator, request: Request, body: bytes) -> Response | _Batch:
    """Steps 1-4: an early answer, or the batch to apply (its key now marked in progress)."""
    try:
        return _checked(sim, request, body)
    except HTTPException as exc:
        return message(exc.status_code, exc.detail)


def _checked(sim: Simulator, request: Request, body: bytes) -> Response | _Batch:
    status = sim.faults.draw_error()
    if status is not None:
        return _injected(sim, request, status)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != _JSON:
        raise HTTPException(415, "Content-Type must be application/json")
    rows = _rows(body, sim.config.max_rows)
    request.state.rows = len(rows)
    _check_descriptions(rows, sim.config.max_description_length)
    batch = _Batch(rows, _idempotency_key(request), hashlib.sha256(body).hexdigest())
    replay = _replay(sim, batch)
    if replay is not None:
        request.state.note = "replayed"
        return replay
    if batch.key is not None:
        sim.store.in_progress.add(batch.key)
    return batch


def _injected(sim: Simulator, request: Request, status: int) -> Response:
    request.state.note = f"injected_{status}"
    headers = {"Retry-After": sim.faults.retry_after()} if status == 429 else None
    return message(status, f"injected fault: {status}", headers)


def _rows(body: bytes, max_rows: int) -> list[dict[str, Any]]:
    try:
        parsed = decode(body)
    except BodyError as exc:
        raise HTTPException(400, str(exc)) from exc
    if not isinstance(parsed, list):
        raise HTTPException(400, "the body must be a JSON array of point transactions")
    if len(parsed) > max_rows:
        raise HTTPException(400, f"at most {max_rows} rows per request")
    for index, row in enumerate(parsed):
        if not isinstance(row, dict):
            raise HTTPException(400, f"row {index} is not a JSON object")
    return parsed


def _check_descriptions(rows: list[dict[str, Any]], limit: int | None) -> None:
    if limit is None:
        return
    for index, row in enumerate(rows):
        description = row.get("description")
        if isinstance(description, str) and len(description) > limit:
            raise HTTPException(400, f"row {index}: description is longer than {limit} characters")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not key.strip():
        raise HTTPException(400, "Idempotency-Key must not be blank")
    return key


def _replay(sim: Simulator, batch: _Batch) -> Response | None:
    """The stored answer for the batch's key, or None if there is none (or it expired)."""
    if batch.key is None:
        return None
    if batch.key in sim.store.in_progress:
        raise HTTPException(409, "a request with this Idempotency-Key is in progress")
    window = sim.config.idempotency_window_seconds
    stored = sim.store.recall(batch.key, time.monotonic(), window)
    if stored is None:
        return None
    if stored.body_sha256 != batch.digest:
        raise HTTPException(422, "Idempotency-Key reused with a different body")
    return Response(stored.body, stored.status, media_type=_JSON)


def _commit(sim: Simulator, request: Request, batch: _Batch) -> Response:
    """Steps 5-6: judge, apply, store the outcome, answer. Never awaits."""
    verdict = judge(batch.rows, sim.store)
    sim.store.apply(verdict.accepted, batch.key, datetime.now(UTC))
    body = encode(verdict.result())
    if batch.key is not None:
        outcome = StoredOutcome(batch.digest, 202, body, time.monotonic())
        sim.store.outcomes[batch.key] = outcome
    return _answer(sim, request, body)


def _answer(sim: Simulator, request: Request, body: bytes) -> Response:
    """The 202, unless an apply-then-fail fault turns it into a 500 or a dropped connection."""
    mode = sim.faults.draw_apply_then_fail()
    if mode is None:
        return Response(body, 202, media_type=_JSON)
    request.state.note = f"apply_then_fail_{mode}"
    if mode == "500":
        return message(500, "internal error")
    return _DroppedResponse(body, 202, media_type=_JSON)


class _DroppedResponse(Response):
    """Sends the status line, the headers (with the full Content-Length) and half the body, then
    stops: uvicorn closes the connection, the client sees an incomplete response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers = self.status_code, self.raw_headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        half = bytes(self.body[: len(self.body) // 2])
        await send({"type": "http.response.body", "body": half, "more_body": True})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) as ``{"message": ...}``."""
    http = cast(HTTPException, exc)
    return message(http.status_code, http.detail, dict(http.headers or {}))


async def _admin_transactions(sim: Simulator, request: Request) -> Response:
    """GET /_sim/transactions: every stored transaction, with contact, definition and key."""
    return respond([transaction.record() for transaction in sim.store.transactions])


async def _admin_requests(sim: Simulator, request: Request) -> Response:
    """GET /_sim/requests: the request log, oldest first."""
    return respond([logged.record() for logged in sim.store.requests])


async def _admin_reset(sim: Simulator, request: Request) -> Response:
    """POST /_sim/reset: empty the store, the rate-limit window; restart the fault sequence."""
    sim.store.reset()
    sim.limiter.reset()
    sim.faults.replace(sim.faults.config)
    return Response(status_code=204)


async def _admin_faults(sim: Simulator, request: Request) -> Response:
    """PUT /_sim/faults: replace the fault settings with the JSON body (a FaultConfig)."""
    try:
        faults = FaultConfig.model_validate_json(await request.body())
    except ValidationError as exc:
        return message(400, describe_errors(exc, "faults"))
    sim.faults.replace(faults)
    return respond(faults.model_dump(mode="json"))
