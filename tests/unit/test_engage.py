"""The Engage client over httpx.MockTransport: headers, status mapping, retries."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from pipeline.engage import USER_AGENT, EngageClient, RetryPolicy
from pipeline.errors import (
    BatchInDoubtError,
    BatchRejectedError,
    FatalEngageError,
    NotSentError,
    TransientEngageError,
)
from pipeline.limits import RateLimiter

Handler = Callable[[httpx.Request], httpx.Response]
OK = {"notAccepted": [], "errorMessages": [], "missingDefinitionIds": [], "missingContactIds": []}


def client(handler: Handler, sleeps: list[float] | None = None, attempts: int = 4) -> EngageClient:
    http = httpx.Client(
        base_url="https://tenant.example",
        transport=httpx.MockTransport(handler),
        headers={"apikey": "k", "User-Agent": USER_AGENT},
    )
    waits = sleeps if sleeps is not None else []
    return EngageClient(
        http, RetryPolicy(max_attempts=attempts, initial_wait=0.5, max_wait=2), sleep=waits.append
    )


def answers(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler giving ``responses`` in turn, and the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handle, seen


def test_post_sends_the_documented_headers_and_body():
    """apikey, User-Agent, JSON content type and the Idempotency-Key go with the body."""
    handle, seen = answers(httpx.Response(202, json=OK))
    result = client(handle).post_transactions(b"[]", "key-1")
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/api/v2/point-accounts/transactions")
    assert request.headers["apikey"] == "k"
    assert request.headers["user-agent"].startswith("points-import/")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "key-1"
    assert request.content == b"[]"
    assert (result.status, result.attempts) == (202, 1)


@pytest.mark.parametrize("status", [200, 202])
def test_200_and_202_are_accepted_with_their_lists(status):
    """Both success codes are read, with the notAccepted rows and missing ids."""
    body = {
        **OK,
        "notAccepted": [{"contactId": "c"}],
        "missingContactIds": ["c"],
        "missingDefinitionIds": [7],
        "errorMessages": ["bad"],
    }
    handle, _ = answers(httpx.Response(status, json=body))
    result = client(handle).post_transactions(b"[]", "k")
    assert result.not_accepted == [{"contactId": "c"}]
    assert (result.missing_contact_ids, result.missing_definition_ids) == (["c"], [7])
    assert result.error_messages == ["bad"]


def test_transient_failures_are_retried_under_the_same_key():
    """Connection error, 503, 409 and a timeout, then 202: four retries, one key."""
    handle, seen = answers(
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.Response(409),
        httpx.ReadTimeout("slow"),
        httpx.Response(202, json=OK),
    )
    sleeps: list[float] = []
    result = client(handle, sleeps, attempts=5).post_transactions(b"[1]", "same")
    assert result.attempts == 5
    assert {r.headers["idempotency-key"] for r in seen} == {"same"}
    assert len(sleeps) == 4


def test_an_undecodable_answer_is_retried_under_the_same_key():
    """A body whose Content-Encoding lies is an answer that can't be read: transient."""
    gzip = {"Content-Encoding": "gzip"}
    garbled = httpx.Response(202, headers=gzip, stream=httpx.ByteStream(b"not gzip"))
    handle, seen = answers(garbled, httpx.Response(202, json=OK))
    assert client(handle).post_transactions(b"[]", "k").attempts == 2
    assert [r.headers["idempotency-key"] for r in seen] == ["k", "k"]


@pytest.mark.parametrize("field", ["notAccepted", "errorMessages", "missingContactIds"])
def test_an_answer_whose_lists_are_not_lists_is_not_taken_for_success(field):
    """Which rows such an answer took can't be told: retried, then in doubt (never 'all in')."""
    handle, seen = answers(*[httpx.Response(202, json={**OK, field: 5})] * 2)
    with pytest.raises(TransientEngageError, match="not lists"):
        client(handle, attempts=2).post_transactions(b"[]", "k")
    assert len(seen) == 2


def test_retry_after_is_honoured():
    """A 429 with Retry-After: 1.5 waits at least 1.5 s before the retry."""
    handle, _ = answers(
        httpx.Response(429, headers={"Retry-After": "1.5"}), httpx.Response(202, json=OK)
    )
    sleeps: list[float] = []
    client(handle, sleeps).post_transactions(b"[]", "k")
    assert sleeps and sleeps[0] >= 1.5


@pytest.mark.parametrize(
    "hint", ["soon", "inf", "nan", "1e400", "99999999999999999999", "Fri, 01 Jan 2100 00:00:00 GMT"]
)
def test_an_odd_retry_after_neither_crashes_nor_stalls_the_run(hint):
    """A Retry-After that is no number or date is ignored; a huge one is capped by
    max_retry_after, in the back-off and in the rate limiter's pause alike."""
    handle, _ = answers(
        httpx.Response(429, headers={"Retry-After": hint}), httpx.Response(202, json=OK)
    )
    sleeps: list[float] = []
    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(handle))
    limiter = RateLimiter(1000)
    retry = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02, max_retry_after=0.05)
    engage = EngageClient(http, retry, sleep=sleeps.append, limiter=limiter)
    started = time.monotonic()
    assert engage.post_transactions(b"[]", "k").attempts == 2
    assert sleeps and sleeps[0] <= 0.05
    assert limiter._paused_until <= started + 0.05 + 1


def test_backoff_grows_exponentially():
    """Without Retry-After the waits grow: 0.5, 1, 2 (capped), plus jitter."""
    handle, _ = answers(*[httpx.Response(500)] * 4)
    sleeps: list[float] = []
    with pytest.raises(TransientEngageError):
        client(handle, sleeps).post_transactions(b"[]", "k")
    assert len(sleeps) == 3
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 1.5 and 2.0 <= sleeps[2] <= 2.5


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_fatal_at_once(status):
    """401/403 stop at once: no retry."""
    handle, seen = answers(httpx.Response(status), httpx.Response(202, json=OK))
    with pytest.raises(FatalEngageError, match="refused the API key"):
        client(handle).post_transactions(b"[]", "k")
    assert len(seen) == 1


@pytest.mark.parametrize("status", [400, 413, 422])
def test_other_4xx_refuse_the_batch_without_retry(status):
    """A 400/413/422 is a refusal of this request as it is: no retry, status and body kept."""
    handle, seen = answers(httpx.Response(status, text="row 3 is bad"))
    with pytest.raises(BatchRejectedError) as info:
        client(handle).post_transactions(b"[]", "k")
    assert (info.value.status, info.value.body, len(seen)) == (status, "row 3 is bad", 1)


@pytest.mark.parametrize("status", [404, 405])
def test_no_such_endpoint_is_fatal_not_a_refused_batch(status):
    """A 404/405 on the POST means a wrong base URL: stop, don't split every batch to rows."""
    handle, seen = answers(httpx.Response(status))
    with pytest.raises(FatalEngageError, match="check the base URL"):
        client(handle).post_transactions(b"[]", "k")
    assert len(seen) == 1


@pytest.mark.parametrize(
    "unknown",
    [httpx.Response(500), httpx.Response(409), httpx.ReadTimeout("slow")],
    ids=["500", "409", "timeout"],
)
def test_a_4xx_after_an_unknown_outcome_is_retried_then_in_doubt_not_refused(unknown):
    """The first try may have been applied: a later 400 (a gateway's?) must not split the
    batch under new keys. It is retried under the same key; if it stays, the batch is in
    doubt."""
    handle, seen = answers(unknown, *[httpx.Response(400, text="bad")] * 3)
    with pytest.raises(BatchInDoubtError) as info:
        client(handle).post_transactions(b"[]", "k")
    assert (info.value.status, len(seen)) == (400, 4)
    assert {r.headers["idempotency-key"] for r in seen} == {"k"}


def test_a_4xx_after_an_unknown_outcome_then_a_replay_is_a_success():
    handle, _ = answers(httpx.Response(502), httpx.Response(400), httpx.Response(202, json=OK))
    assert client(handle).post_transactions(b"[]", "k").attempts == 3


def test_a_4xx_after_a_429_is_a_refusal():
    """A 429 was not processed: the 400 after it is Engage's answer to the batch."""
    handle, _ = answers(httpx.Response(429), httpx.Response(400))
    with pytest.raises(BatchRejectedError):
        client(handle).post_transactions(b"[]", "k")


def test_a_batch_an_earlier_run_left_in_doubt_is_not_refused_on_a_4xx():
    handle, _ = answers(*[httpx.Response(400)] * 4)
    with pytest.raises(BatchInDoubtError):
        client(handle).post_transactions(b"[]", "k", in_doubt=True)


def test_a_success_without_json_is_retried():
    """A 202 whose body is not JSON is treated as an unknown outcome and retried (same key)."""
    handle, seen = answers(httpx.Response(202, text="<html>"), httpx.Response(202, json=OK))
    assert client(handle).post_transactions(b"[]", "k").attempts == 2
    assert len(seen) == 2


def test_definitions_are_read_across_pages():
    """GET definitions pages by offset/count until a short page."""
    pages = {0: [{"id": i} for i in range(1, 101)], 100: [{"id": 101}, {"id": 102}]}

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/point-accounts/definitions"
        return httpx.Response(200, json=pages[int(request.url.params["offset"])])

    assert client(handle).definition_ids() == set(range(1, 103))


def test_paging_ends_when_engage_ignores_the_offset():
    """The reviewer's endless loop: every offset answers the same full page. Definitions stop
    at a page with nothing new; transactions can't all be known then: an error (the batch
    being reconciled stays in doubt), not a list missing some (it would be sent again)."""
    page = [{"id": i, "amount": 1} for i in range(1, 151)]
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path.endswith("/definitions"):
            return httpx.Response(200, json=page)
        return httpx.Response(200, json={"items": page[:100], "totalCount": 1000})

    assert client(handle).definition_ids() == set(range(1, 151))
    assert len(asked) == 2
    with pytest.raises(FatalEngageError, match="same page"):
        client(handle).transactions("c", 1)
    assert len(asked) == 4


def test_items_that_are_not_a_list_are_an_engage_error():
    """A page whose ``items`` is no list: an error the batch in doubt stays in doubt for,
    not a crash."""
    answer = httpx.Response(200, json={"items": 5, "totalCount": 1})
    with pytest.raises(FatalEngageError, match="not a list"):
        client(lambda request: answer).transactions("c", 1)


def test_the_journal_hook_runs_after_the_limiter_grants_and_before_the_write():
    """``leaving`` runs once, after the rate limiter's grant and before the request is
    written: a batch queued behind the limiter is not yet in doubt."""
    events: list[str] = []

    class Limiter(RateLimiter):
        def acquire(self, stopping: Callable[[], bool] = lambda: False) -> float | None:
            events.append("granted")
            return super().acquire(stopping)

    def handle(request: httpx.Request) -> httpx.Response:
        events.append("written")
        return httpx.Response(202, json=OK) if len(events) > 3 else httpx.Response(503)

    engage = client(handle)
    engage._limiter = Limiter(1000)
    engage.post_transactions(b"[]", "k", leaving=lambda: events.append("leaving"))
    assert events == ["granted", "leaving", "written", "granted", "written"]


def test_a_request_stopped_behind_the_limiter_is_not_sent():
    """A stop while the request waits for the limiter: nothing written, NotSentError, and
    the journal hook never runs; a batch an earlier run sent stays in doubt instead."""
    seen: list[httpx.Request] = []
    engage = client(lambda request: seen.append(request) or httpx.Response(202, json=OK))
    engage._limiter = RateLimiter(1)
    engage._limiter.acquire()  # the only slot of this second is taken
    engage._stopping = lambda: True
    hooked: list[bool] = []
    with pytest.raises(NotSentError):
        engage.post_transactions(b"[]", "k", leaving=lambda: hooked.append(True))
    with pytest.raises(TransientEngageError):
        engage.post_transactions(b"[]", "k", in_doubt=True)
    assert seen == [] and hooked == []


def test_the_limiter_counts_a_request_from_when_it_was_written():
    """Over a real connection, the limiter is told when the body has been written."""
    written: list[float] = []

    class Limiter(RateLimiter):
        def sent(self, stamp: float) -> None:
            written.append(stamp)
            super().sent(stamp)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    limiter = Limiter(100)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with EngageClient.connect(url, "k", limiter=limiter) as engage:
            engage.post_transactions(b"[]", "k1")
            engage.post_transactions(b"[]", "k2")
    finally:
        server.shutdown()
        server.server_close()
    assert len(written) == 2  # the grant stamps, each moved to when its body was written
    assert all(at > stamp for at, stamp in zip(limiter._starts, written, strict=True))
