"""The Engage API client: the one place where httpx errors become ``EngageError``s.

It talks to ``/api/v2/point-accounts``: POST transactions (at most 1000 rows, optional
``Idempotency-Key``) and the GET endpoints. Retries (tenacity) live here too, built once
from a ``RetryPolicy`` of plain values; ``sleep`` is injectable so unit tests never wait.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
import tenacity

from pipeline import __version__
from pipeline.errors import (
    BatchInDoubtError,
    BatchRejectedError,
    FatalEngageError,
    NotSentError,
    TransientEngageError,
)
from pipeline.limits import RateLimiter
from pipeline.model import PostResult

if TYPE_CHECKING:  # imported when a client is made: a run without Engage needs no time for it
    import httpx

TRANSACTIONS = "/api/v2/point-accounts/transactions"
DEFINITIONS = "/api/v2/point-accounts/definitions"
ACCOUNTS = "/api/v2/point-accounts"
USER_AGENT = f"points-import/{__version__}"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
PAGE = 100

log = structlog.get_logger("pipeline.engage")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a request is retried: plain values, built from the config at the edge."""

    max_attempts: int = 8  # per request, the first included
    initial_wait: float = 1.0  # seconds, doubled each attempt, with jitter
    max_wait: float = 60.0  # cap of one back-off
    max_retry_after: float = 300.0  # cap on a server's Retry-After


class EngageClient:
    """Engage's point-account endpoints over an ``httpx.Client`` the caller builds."""

    def __init__(
        self,
        http: httpx.Client,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], object] = time.sleep,
        stopping: Callable[[], bool] = lambda: False,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._http = http
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._stopping = stopping
        self._limiter = limiter
        self.retries = 0  # attempts after the first, over every request
        self.throttled = 0  # 429 answers
        self._counting = threading.Lock()

    @classmethod
    def connect(
        cls,
        base_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
        limiter: RateLimiter | None = None,
        connections: int = 10,
    ) -> EngageClient:
        """One keep-alive connection pool for every request of the run."""
        import httpx

        headers = {"apikey": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}
        http = httpx.Client(
            base_url=base_url,
            headers=headers,
            transport=transport,
            timeout=timeout or httpx.Timeout(60.0, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        stop = stop or threading.Event()
        return cls(http, retry, sleep=stop.wait, stopping=stop.is_set, limiter=limiter)

    @property
    def base_url(self) -> str:
        """Engage's address (the tenant): whose rows the journal's landed-row index holds."""
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EngageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post_transactions(
        self,
        body: bytes,
        key: str,
        in_doubt: bool = False,
        leaving: Callable[[], None] = lambda: None,
    ) -> PostResult:
        """POST one batch (a JSON array) under ``key``, retrying what is worth retrying.

        ``leaving`` is called once, when the rate limiter has granted the first attempt its
        slot, just before the request is written: from then on its outcome is unknown until
        answered (the journal records it there). A run asked to stop before that sends
        nothing: ``NotSentError``.

        A 4xx after an attempt whose outcome is unknown (``in_doubt``: one of an earlier run)
        may not be Engage's answer to the key (a gateway's, say) while that attempt was
        applied: it is retried under the same key, and if it persists the batch is in doubt
        (``BatchInDoubtError``), not refused. A 404 or 405 means a wrong base URL: fatal.
        """
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        unknown, left = in_doubt, False

        def leave() -> None:
            nonlocal left
            left = True
            leaving()

        def once() -> PostResult:
            nonlocal unknown
            try:
                sent = self._send("POST", TRANSACTIONS, leave if not left else None,
                                  content=body, headers=headers)  # fmt: skip
                return _post_result(sent)
            except NotSentError as exc:
                if left or unknown:  # an earlier attempt left: still in doubt
                    raise TransientEngageError(f"{exc}; an earlier attempt's outcome is unknown",
                                               status=exc.status) from exc  # fmt: skip
                raise
            except BatchRejectedError as exc:
                if exc.status in (404, 405):
                    fatal = FatalEngageError(
                        f"{exc}: Engage has no such endpoint; check the base URL",
                        status=exc.status,
                        body=exc.body,
                    )
                    fatal.outcome_unknown = unknown
                    raise fatal from exc
                if unknown:
                    raise _Doubtful(exc) from exc
                raise
            except TransientEngageError as exc:
                unknown = unknown or exc.status != 429  # a 429 was not processed
                raise
            except FatalEngageError as exc:  # 401/403, or an answer no API gives
                exc.outcome_unknown = unknown
                raise

        try:
            result, attempts = self._retrying(once, key=key)
        except _Doubtful as exc:
            raise BatchInDoubtError(str(exc), status=exc.status, body=exc.body) from exc
        return replace(result, attempts=attempts)

    def definition_ids(self) -> set[int]:
        """Every point definition id of the tenant (all pages)."""
        return {int(d["id"]) for d in self.definitions() if "id" in d}

    def definitions(self) -> list[dict[str, Any]]:
        """Every point definition of the tenant (all pages): id, name, description."""
        found: dict[int, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self.get_json(DEFINITIONS, {"offset": offset, "count": PAGE})
            if not isinstance(page, list):
                raise FatalEngageError(f"GET {DEFINITIONS} did not answer a JSON array")
            new = {int(d["id"]): d for d in page if isinstance(d, dict) and _is_int(d.get("id"))}
            fresh = set(new) - set(found)
            found |= new
            if len(page) < PAGE or not fresh:  # the last page, or the same again (offset ignored)
                return list(found.values())
            offset += PAGE

    def accounts(self, contact_id: str) -> list[dict[str, Any]]:
        """A contact's point accounts (all pages): balance and pending points per definition."""
        return self._items(ACCOUNTS, {"contactId": contact_id})

    def transactions(self, contact_id: str, definition_id: int) -> list[dict[str, Any]]:
        """Every transaction of a contact's point account (all pages, filter All)."""
        params = {"contactId": contact_id, "definitionId": definition_id, "filter": "All"}
        return self._items(TRANSACTIONS, params)

    def account_transactions(self, account_id: int) -> list[dict[str, Any]]:
        """Every transaction of a point account (all pages, filter All)."""
        return self._items(TRANSACTIONS, {"accountId": account_id, "filter": "All"})

    def _items(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a paged result (``items``, ``totalCount``)."""
        items: list[dict[str, Any]] = []
        previous: list[dict[str, Any]] = []
        while True:
            page = self.get_json(path, {**params, "offset": len(items), "count": PAGE}) or {}
            if not isinstance(page, dict):
                raise FatalEngageError(f"GET {path} did not answer a JSON object")
            listed = page.get("items") or []
            if not isinstance(listed, list):
                raise FatalEngageError(f"GET {path} answered items that are not a list")
            chunk = [t for t in listed if isinstance(t, dict)]
            if chunk and chunk == previous:  # offset ignored: all of them can't be known
                raise FatalEngageError(f"GET {path} answers the same page at any offset")
            items.extend(chunk)
            previous = chunk
            total = page.get("totalCount")
            if len(chunk) < PAGE or (isinstance(total, int) and len(items) >= total):
                return items

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` with retries; the decoded JSON body."""

        def once() -> Any:
            return _json(self._send("GET", path, None, params=params))

        return self._retrying(once, key=None)[0]

    def _retrying(self, once: Callable[[], T], key: str | None) -> tuple[T, int]:
        retrying = retry_policy(self._retry, self._sleep, key, self._stopping)
        try:
            return retrying(once), self._attempts(retrying)
        except BaseException:
            self._attempts(retrying)
            raise

    def _attempts(self, retrying: tenacity.Retrying) -> int:
        attempts = int(retrying.statistics.get("attempt_number", 1))
        with self._counting:
            self.retries += attempts - 1
        return attempts

    def _send(
        self,
        method: str,
        path: str,
        leaving: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        import httpx

        limiter = self._limiter
        stamp = limiter.acquire(self._stopping) if limiter else (None if self._stopping() else 0.0)
        if stamp is None:
            raise NotSentError(f"{method} {path} not sent: the run is stopping")
        if leaving is not None:
            leaving()
        if limiter is not None:
            kwargs["extensions"] = {"trace": _written(limiter, stamp)}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientEngageError(f"{method} {path} timed out ({type(exc).__name__})") from exc
        except httpx.RequestError as exc:  # transport, an undecodable body, redirect loops
            raise TransientEngageError(
                f"{method} {path} failed: {exc or type(exc).__name__}"
            ) from exc
        if response.status_code == 429:
            with self._counting:
                self.throttled += 1
        if self._limiter is not None:
            self._pace(response)
        _raise_for_status(response, f"{method} {path}")
        return response

    def _pace(self, response: httpx.Response) -> None:
        assert self._limiter is not None
        if response.status_code == 429:
            hinted = _retry_after(response)
            self._limiter.throttled(
                None if hinted is None else min(hinted, self._retry.max_retry_after)
            )
        elif response.status_code < 400:
            self._limiter.succeeded()


def _written(limiter: RateLimiter, stamp: float) -> Callable[[str, dict[str, Any]], None]:
    """httpcore's trace hook: the limiter is told when the request has been written."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            limiter.sent(stamp)

    return trace


class _Doubtful(TransientEngageError):
    """A 4xx after an attempt whose outcome is unknown: retried under the same key."""

    def __init__(self, refused: BatchRejectedError) -> None:
        message = f"{refused} after an attempt whose outcome is unknown"
        super().__init__(message, status=refused.status, body=refused.body)


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    body = response.text[:2000]
    message = f"{what} answered {status} {response.reason_phrase}".rstrip()
    if status in (401, 403):
        raise FatalEngageError(
            f"Engage refused the API key ({status}); check it", status=status, body=body
        )
    if status in RETRYABLE_STATUS or status >= 500:
        raise TransientEngageError(
            message, status=status, body=body, retry_after=_retry_after(response)
        )
    if 400 <= status < 500:
        raise BatchRejectedError(message, status=status, body=body)
    raise FatalEngageError(f"{message}: unexpected; check the base URL", status=status, body=body)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds, or an HTTP date; None for anything else (then the back-off decides)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content) if response.content.strip() else None
    except orjson.JSONDecodeError as exc:
        raise TransientEngageError(
            f"{response.request.method} {response.request.url.path} "
            f"answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
        ) from exc


def _post_result(response: httpx.Response) -> PostResult:
    data = _json(response) or {}
    if not isinstance(data, dict):
        raise TransientEngageError(
            f"POST {TRANSACTIONS} answered {response.status_code} with JSON that is not an object",
            status=response.status_code,
        )
    lower = {str(k).lower(): v for k, v in data.items()}
    lists = {name: lower.get(name) or [] for name in _LISTS}
    if not all(isinstance(value, list) for value in lists.values()):
        raise TransientEngageError(  # which rows it took can't be told: in doubt, not accepted
            f"POST {TRANSACTIONS} answered {response.status_code} with lists that are not lists",
            status=response.status_code,
        )
    return PostResult(
        status=response.status_code,
        # an entry that is no object matches no row: it is counted as unmatched, not dropped
        not_accepted=[r if isinstance(r, dict) else {} for r in lists["notaccepted"]],
        error_messages=[str(m) for m in lists["errormessages"]],
        missing_contact_ids=[str(c) for c in lists["missingcontactids"]],
        missing_definition_ids=[int(d) for d in lists["missingdefinitionids"] if _is_int(d)],
    )


_LISTS = ("notaccepted", "errormessages", "missingcontactids", "missingdefinitionids")


def _is_int(value: object) -> bool:
    try:
        int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _discard(value: object) -> None:
    """tenacity wants a sleep that returns None; Event.wait returns a bool."""


class _StopWhen(tenacity.stop.stop_base):
    """Stop retrying once the run is asked to stop (SIGINT/SIGTERM)."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self.stopping = stopping

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.stopping()


def retry_policy(
    settings: RetryPolicy,
    sleep: Callable[[float], object],
    key: str | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> tenacity.Retrying:
    """Retry transient errors with exponential back-off and jitter, honouring Retry-After."""
    backoff = tenacity.wait_exponential(
        multiplier=settings.initial_wait, max=settings.max_wait
    ) + tenacity.wait_random(0, settings.initial_wait)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None) or 0.0
        return max(min(float(hinted), settings.max_retry_after), backoff(state))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "retrying",
            key=key,
            attempt=state.attempt_number,
            error=str(exc),
            status=getattr(exc, "status", None),
            wait_s=round(state.next_action.sleep if state.next_action else 0, 3),
        )

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientEngageError),
        stop=tenacity.stop_after_attempt(settings.max_attempts) | _StopWhen(stopping),
        wait=wait,
        sleep=lambda seconds: _discard(sleep(seconds)),
        before_sleep=before_sleep,
        reraise=True,
    )
