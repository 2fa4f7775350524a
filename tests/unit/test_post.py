"""Post: settling rows from Engage's answers — matching, splitting, aborting."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import polars as pl
import pytest

from pipeline.chunk import chunk
from pipeline.engage import EngageClient, RetryPolicy
from pipeline.limits import RateLimiter
from pipeline.model import FIELDS, PostResult
from pipeline.post import ledger as ledger_module
from pipeline.post import post
from pipeline.post.ledger import Ledger
from pipeline.post.match import match_not_accepted
from pipeline.post.poster import STOPPED, NoRecorder
from tests.unit.test_chunk import valid_rows

OK = {"notAccepted": [], "errorMessages": [], "missingDefinitionIds": [], "missingContactIds": []}
OTHER = "11111111-2222-3333-4444-555555555555"


def engage(handler, attempts: int = 2) -> EngageClient:
    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(handler))
    return EngageClient(
        http, RetryPolicy(max_attempts=attempts, initial_wait=0), sleep=lambda s: None
    )


def settled(posted) -> dict[int, tuple[bool, str | None]]:
    return {r["sourceRow"]: (r["accepted"], r["stage"]) for r in posted.outcomes.to_dicts()}


def test_a_refused_batch_is_split_down_to_the_bad_row():
    """A 400 whenever the body holds the bad row: only that row is rejected, with the status."""
    frame = valid_rows(10).with_columns(
        pl.when(pl.col("sourceRow") == 7)
        .then(pl.lit("poison"))
        .otherwise("description")
        .alias("description")
    )
    keys: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        if b"poison" in request.content:
            return httpx.Response(400, text="The field Description is invalid.")
        return httpx.Response(202, json=OK)

    posted = post(chunk(frame, 10, "x"), engage(handle))
    rows = settled(posted)
    assert rows.pop(7) == (False, "batch")
    assert all(ok for ok, _ in rows.values()) and len(rows) == 9
    reason = posted.outcomes.filter(pl.col("sourceRow") == 7)["reason"].item()
    assert "400" in reason and "Description" in reason
    assert len(keys) == len(set(keys)), "every split half has a key of its own"


def test_not_accepted_rows_are_matched_by_content_with_their_reason():
    """Echoed rows map back to their input rows; missing contact/definition explain why."""
    frame = valid_rows(4, contactId=[OTHER, OTHER, OTHER, OTHER], definitionId=[1, 2, 1, 9])
    rows = frame.to_dicts()
    echoed = [{**rows[3], "amount": float(rows[3]["amount"])}, rows[1]]
    result = PostResult(
        202,
        not_accepted=echoed,
        missing_definition_ids=[9],
        error_messages=["row 1: source is required"],
    )
    matched = {row: why for row, _, why in match_not_accepted(frame, result).refused}
    assert set(matched) == {2, 4}
    assert "point definition 9 does not exist" in matched[4]
    assert "row 1: source is required" in matched[2]


def test_identical_rows_are_matched_once_each():
    """Two equal rows, one refused: exactly one of them is marked."""
    frame = valid_rows(2, description=["same", "same"], amount=["1", "1"], definitionId=[1, 1])
    result = PostResult(202, not_accepted=[frame.to_dicts()[0]], missing_contact_ids=[])
    assert len(match_not_accepted(frame, result).refused) == 1


@pytest.mark.parametrize("echoed_to", ["2020-01-01T00:00:00+01:00", "2019-12-31T23:00:00Z"])
def test_rows_told_apart_only_by_a_date_are_matched_by_it(echoed_to):
    """Two rows equal but for validTo, the second refused: the second is marked, not the
    first (which Engage stored), however the echo writes the date."""
    dates = ["2030-01-01T00:00:00+01:00", "2020-01-01T00:00:00+01:00"]
    frame = valid_rows(
        2, description=["same"] * 2, amount=["1"] * 2, definitionId=[1, 1], validTo=dates
    )
    echo = {**frame.select(FIELDS).to_dicts()[1], "validTo": echoed_to}
    result = PostResult(202, not_accepted=[echo], error_messages=["validTo is in the past"])
    assert [row for row, _, _ in match_not_accepted(frame, result).refused] == [2]


def test_an_echo_that_can_t_tell_rows_apart_leaves_them_all_in_doubt():
    """Two rows differing only in validTo, the echo without dates: which one Engage refused
    is unknown, so neither is taken for accepted nor for refused: both in doubt."""
    dates = ["2030-01-01T00:00:00+01:00", "2020-01-01T00:00:00+01:00"]
    frame = valid_rows(
        3, description=["same"] * 3, amount=["1"] * 3, definitionId=[1] * 3,
        validTo=[*dates, None],
    ).with_columns(pl.Series("description", ["same", "same", "other"]))  # fmt: skip
    echo = frame.select(FIELDS).to_dicts()[1]
    del echo["validTo"]
    matched = match_not_accepted(frame, PostResult(202, not_accepted=[echo, echo]))
    assert [(row, stage) for row, stage, _ in matched.refused] == [(1, "server"), (2, "server")]
    assert all(why.startswith("outcome unknown") and "rows 1, 2" in why
               for _, _, why in matched.refused)  # fmt: skip
    assert matched.unmatched == 0  # the second echo: one of the rows in doubt


def test_an_echo_date_without_an_offset_is_no_instant_to_match_by(monkeypatch):
    """Engage gives back a refused row's date without an offset: on a machine in another
    zone it must not pick the row whose date it happens to equal there; the rows left in
    doubt instead (whatever this machine's zone)."""
    stamps = ["2026-01-01T08:00:00+01:00", "2026-01-01T07:00:00+01:00"]  # 07:00Z, 06:00Z
    frame = valid_rows(
        2, description=["same"] * 2, amount=["1"] * 2, definitionId=[1, 1], timeStamp=stamps
    )
    echo = {**frame.select(FIELDS).to_dicts()[0], "timeStamp": "2026-01-01T07:00:00"}
    monkeypatch.setenv("TZ", "Europe/Stockholm")  # where row 1's 07:00 (UTC) reads as row 2's
    time.tzset()
    try:
        matched = match_not_accepted(frame, PostResult(202, not_accepted=[echo]))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert [row for row, _, _ in matched.refused] == [1, 2]
    assert all(why.startswith("outcome unknown") for _, _, why in matched.refused)


def test_an_echo_matching_nothing_is_unmatched():
    frame = valid_rows(2)
    matched = match_not_accepted(frame, PostResult(202, not_accepted=[{"contactId": "x"}, {}]))
    assert matched == ([], 2)


def test_posted_rows_not_accepted_become_server_rejects():
    """The server's notAccepted rows are rejected at stage 'server'; the rest accepted."""
    frame = valid_rows(3, contactId=[OTHER, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", OTHER])

    def handle(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        missing = [r for r in sent if r["contactId"] == OTHER]
        return httpx.Response(
            202, json={**OK, "notAccepted": missing, "missingContactIds": [OTHER]}
        )

    posted = post(chunk(frame, 10, "x"), engage(handle))
    assert settled(posted) == {1: (False, "server"), 2: (True, None), 3: (False, "server")}
    assert posted.unmatched == 0


def test_an_unreachable_engage_aborts_with_in_doubt_and_unsent_rows():
    """Retries run out on batch 2: batch 1 accepted, 2 in doubt ('batch'), 3 'unsent'."""
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(202, json=OK) if calls["n"] == 1 else httpx.Response(503)

    posted = post(chunk(valid_rows(30), 10, "x"), engage(handle, attempts=3))
    stages = posted.outcomes.group_by("stage").len().sort("stage").rows()
    assert sorted(stages, key=str) == sorted([(None, 10), ("batch", 10), ("unsent", 10)], key=str)
    assert posted.aborted is not None and posted.batches_sent == 2
    in_doubt = posted.outcomes.filter(pl.col("stage") == "batch")["reason"][0]
    assert "outcome unknown" in in_doubt and "re-run the same input" in in_doubt


@pytest.mark.parametrize(
    ("statuses", "said"),
    [
        ([404], "not applied"),
        ([500, 404], "outcome unknown"),
        ([401], "not applied"),
        ([503, 401], "outcome unknown"),
    ],
)
def test_a_fatal_answer_stops_the_run_and_says_whether_the_batch_may_have_landed(statuses, said):
    """A 404 (a wrong base URL) or a 401 stops the run. Its batch was not applied, unless an
    attempt before had an unknown outcome (a 5xx): then its rows must not be fed back."""
    answers = iter(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers, statuses[-1]))

    posted = post(chunk(valid_rows(20), 10, "x"), engage(handle))
    assert posted.aborted is not None
    reasons = posted.outcomes.filter(pl.col("stage") == "batch")["reason"]
    assert reasons.len() == 10 and reasons[0].startswith(said)


def test_an_unexpected_error_in_flight_still_reports_every_row(monkeypatch):
    """A surprise (not an EngageError) while batch 2 is in flight: the run stops with a
    report; batch 2's rows are in doubt (never 'not applied', never fed back), 3 unsent."""
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("surprise")
        return httpx.Response(202, json=OK)

    posted = post(chunk(valid_rows(30), 10, "x"), engage(handle))
    stages = dict(posted.outcomes.group_by("stage").len().rows())
    assert stages == {None: 10, "batch": 10, "unsent": 10}
    reason = posted.outcomes.filter(pl.col("stage") == "batch")["reason"][0]
    assert reason.startswith("outcome unknown") and "RuntimeError: surprise" in reason
    assert "surprise" in str(posted.aborted)


def test_a_refused_key_stops_before_the_next_batch():
    """A 401 on the first batch: nothing else is sent."""
    seen: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return httpx.Response(401)

    posted = post(chunk(valid_rows(20), 10, "x"), engage(handle))
    assert len(seen) == 1
    assert set(posted.outcomes["stage"]) == {"batch", "unsent"}
    assert posted.outcomes.height == 20


def test_accepted_points_are_summed_exactly_at_any_scale():
    """A tiny amount next to a big one is not rounded away in the summary's points."""
    tiny = "0." + "0" * 150 + "1"
    rows = valid_rows(
        3, amount=["123456789012345", tiny, "0.000000000000001"], definitionId=[1, 1, 1]
    )
    ledger = Ledger()
    ledger.settle(rows, "k", None, None)
    assert ledger.points[1] == Decimal("123456789012345." + "0" * 14 + "1" + "0" * 135 + "1")
    assert ledger.accepted == 3


def test_batches_stopped_behind_the_limiter_are_unsent_not_in_doubt():
    """A stop while batches wait for the rate limiter: they never left, so their rows are
    unsent (not in doubt), the journal never marks them sending, and no request is counted."""
    seen: list[httpx.Request] = []
    client = engage(lambda request: seen.append(request) or httpx.Response(202, json=OK))
    client._limiter = RateLimiter(1)
    client._limiter.acquire()  # this second's only slot is taken
    client._stopping = lambda: True

    class Recorder(NoRecorder):
        def sending(self, batch) -> None:
            raise AssertionError(f"batch {batch.label} marked sending")

    posted = post(chunk(valid_rows(30), 10, "x"), client, recorder=Recorder(), concurrency=3)
    assert seen == [] and posted.requests == posted.batches_sent == 0 and posted.aborted is None
    assert set(settled(posted).values()) == {(False, "unsent")}
    assert set(posted.outcomes["reason"]) == {STOPPED}


def test_points_are_summed_in_bulk_as_rows_are_accepted(monkeypatch):
    """Amounts summed a few rows at a time (polars' decimals) and one by one (more places
    than they keep) give the same exact points."""
    monkeypatch.setattr(ledger_module, "SUM_AT", 4)
    amounts = ["0.1", "0.2", "1." + "0" * 20 + "1", "7", "-0.3", "2.25", "1"] * 3
    rows = valid_rows(len(amounts), amount=amounts, definitionId=[1, 2] * 10 + [1])
    ledger = Ledger()
    for start in range(0, rows.height, 3):
        ledger.settle(rows.slice(start, 3), "k", None, None)
    expected: dict[int, Decimal] = {}
    for definition, amount in zip(rows["definitionId"], rows["amount"], strict=True):
        expected[definition] = expected.get(definition, Decimal(0)) + Decimal(amount)
    assert ledger.points == expected and ledger.accepted == rows.height
