"""Resume: post() settles what earlier runs recorded in a real journal, and records as it goes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from pipeline.chunk import Batch, child_key, chunk
from pipeline.engage import TRANSACTIONS, EngageClient, RetryPolicy
from pipeline.journal import FILENAME, Journal
from pipeline.limits import RateLimiter
from pipeline.post import Posted, Refused, Resume, post
from pipeline.runner import _JournalRecorder
from tests.unit.test_chunk import valid_rows

ID = "night-1"
WINDOW = 82800.0
T0 = 1_700_000_000.0
OK = {"notAccepted": [], "errorMessages": [], "missingDefinitionIds": [], "missingContactIds": []}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Engage:
    """Engage on a MockTransport: POSTs taken (or refused by ``refuse``), GETs from ``held``."""

    def __init__(
        self,
        held: Sequence[dict[str, Any]] = (),
        refuse: Callable[[httpx.Request], bool] = lambda request: False,
        on_request: Callable[[httpx.Request], None] = lambda request: None,
        get_status: int = 200,
    ) -> None:
        self.held = list(held)
        self.get_status = get_status
        self.refuse = refuse
        self.on_request = on_request
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == TRANSACTIONS
        self.requests.append(request)
        self.on_request(request)
        if request.method == "GET" and self.get_status != 200:
            return httpx.Response(self.get_status)
        if request.method == "GET":
            params = request.url.params
            items = [
                {k: v for k, v in t.items() if k not in ("contactId", "definitionId")}
                for t in self.held
                if (t["contactId"], str(t["definitionId"]))
                == (params["contactId"], params["definitionId"])
            ]
            return httpx.Response(200, json={"items": items, "totalCount": len(items)})
        if self.refuse(request):
            return httpx.Response(400, text="The field Description is invalid.")
        return httpx.Response(202, json=OK)

    def client(self) -> EngageClient:
        http = httpx.Client(
            base_url="https://t.example", transport=httpx.MockTransport(self.handle)
        )
        return EngageClient(http, RetryPolicy(max_attempts=1, initial_wait=0), sleep=lambda s: None)

    def posts(self) -> list[tuple[str, list[str]]]:
        """Each POST: its key and the descriptions of the rows it carried."""
        return [
            (r.headers["idempotency-key"], [row["description"] for row in json.loads(r.content)])
            for r in self.requests
            if r.method == "POST"
        ]

    def gets(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET"]


def transaction(row: dict[str, Any], created: float) -> dict[str, Any]:
    """The transaction Engage would hold for ``row``, created at ``created``."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat()
    return {
        "contactId": row["contactId"],
        "definitionId": row["definitionId"],
        "amount": float(row["amount"]),
        "source": row["source"],
        "description": row["description"],
        "createdOn": stamp,
        "transactionDate": stamp,
        "validFrom": row.get("validFrom") or stamp,
        "validTo": row.get("validTo"),
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    with Journal(tmp_path / FILENAME, clock=clock) as opened:
        yield opened


def planned(journal: Journal, frame: pl.DataFrame, size: int) -> list[Batch]:
    """Chunk ``frame`` and register the plan, as the runner does."""
    batches = list(chunk(frame, size, ID))
    journal.register(ID, "in.csv", "f" * 64, {"batch_size": size}, "https://t.example")
    for b in batches:
        journal.plan_batches(
            ID, [(b.seq, b.key, b.rows.height, hashlib.sha256(b.body).hexdigest())]
        )
    return batches


def resume_of(journal: Journal, now: float, window: float = WINDOW) -> Resume:
    """What the journal recorded, as the runner hands it to post()."""
    refused = partial(journal.refused_in, ID)
    return Resume(journal.batches(ID), refused, window, lambda: now)


def resumed(batches: list[Batch], engage: Engage, journal: Journal, now: float) -> Posted:
    """post() as a resumed run: the journal records, and what it recorded is the resume."""
    recorder = _JournalRecorder(journal, ID)
    return post(batches, engage.client(), recorder=recorder, resume=resume_of(journal, now))


def settled(posted: Posted) -> dict[int, tuple[bool, str | None, str | None]]:
    """sourceRow -> (accepted, stage, key)."""
    return {
        r["sourceRow"]: (r["accepted"], r["stage"], r["idempotencyKey"])
        for r in posted.outcomes.to_dicts()
    }


def state(journal: Journal, seq: int, part: str = "") -> str:
    return journal.batches(ID)[(seq, part)].state


# --- what earlier runs settled ---------------------------------------------------------


def test_a_done_batch_is_not_sent_again_and_its_refused_rows_come_back(journal: Journal):
    """Batch 1 done earlier (row 2 refused): only batch 2 is sent; row 2 is still a reject."""
    batches = planned(journal, valid_rows(6), 3)
    journal.sending(ID, 1, "")
    journal.settle(ID, 1, "", "done", 202, [(2, "server", "contact 3f25 does not exist")], "k")
    engage = Engage()
    posted = resumed(batches, engage, journal, T0)
    assert [key for key, _ in engage.posts()] == [batches[1].key]
    first, second = batches[0].key, batches[1].key
    assert settled(posted) == {
        1: (True, None, first), 2: (False, "server", first), 3: (True, None, first),
        4: (True, None, second), 5: (True, None, second), 6: (True, None, second),
    }  # fmt: skip
    reason = posted.outcomes.filter(pl.col("sourceRow") == 2)["reason"].item()
    assert reason == "contact 3f25 does not exist"
    assert (posted.requests, posted.batches_sent) == (1, 1)
    assert journal.batches(ID)[(1, "")].attempts == 1, "the done batch was not sent again"
    assert state(journal, 2) == "done"


@pytest.mark.parametrize(("age", "reconciled"), [(0.0, False), (WINDOW - 1, False), (WINDOW, True)])
def test_an_in_doubt_batch_is_resent_under_its_key_only_inside_the_window(
    journal: Journal, clock: Clock, age: float, reconciled: bool
):
    """'sending' younger than the window: re-sent, same key, no GET; at the window: reconciled."""
    batches = planned(journal, valid_rows(2), 2)
    journal.sending(ID, 1, "")
    engage = Engage()
    clock.now = T0 + age
    resumed(batches, engage, journal, T0 + age)
    if reconciled:
        assert len(engage.gets()) == 2  # definitions 1 and 2 of one contact
        assert [key for key, _ in engage.posts()] == [child_key(batches[0].key, "r")]
    else:
        assert engage.gets() == []
        assert [key for key, _ in engage.posts()] == [batches[0].key]
        record = journal.batches(ID)[(1, "")]
        assert (record.state, record.attempts, record.first_sent_at) == ("done", 2, T0)


def test_an_old_in_doubt_batch_resends_only_what_engage_does_not_hold(
    journal: Journal, clock: Clock
):
    """Past the window: GET per account; found rows accepted, the rest POSTed under a new key."""
    frame = valid_rows(4)  # definitions 1, 2, 3, 1
    batches = planned(journal, frame, 4)
    journal.sending(ID, 1, "")
    rows = frame.to_dicts()
    engage = Engage(held=[transaction(rows[0], T0 + 2), transaction(rows[2], T0 + 2)])
    clock.now = T0 + WINDOW + 60
    posted = resumed(batches, engage, journal, clock.now)

    key, again = batches[0].key, child_key(batches[0].key, "r")
    asked = {(r.url.params["contactId"], r.url.params["definitionId"]) for r in engage.gets()}
    assert asked == {(rows[0]["contactId"], d) for d in ("1", "2", "3")}
    assert engage.posts() == [(again, ["receipt 1", "receipt 3"])]
    assert settled(posted) == {
        1: (True, None, key),
        2: (True, None, again),
        3: (True, None, key),
        4: (True, None, again),
    }
    records = journal.batches(ID)
    assert records[(1, "")].state == "reconciled"
    child = records[(1, "r")]
    assert (child.key, child.source_rows, child.rows, child.state) == (again, [2, 4], 2, "done")


def test_an_old_in_doubt_batch_fully_held_is_done_without_a_post(journal: Journal, clock: Clock):
    """Every row found by the GETs: nothing is POSTed and the batch is recorded done."""
    frame = valid_rows(2)
    batches = planned(journal, frame, 2)
    journal.sending(ID, 1, "")
    engage = Engage(held=[transaction(row, T0 + 1) for row in frame.to_dicts()])
    clock.now = T0 + WINDOW
    posted = resumed(batches, engage, journal, clock.now)
    assert engage.posts() == []
    assert posted.outcomes["accepted"].all() and posted.outcomes.height == 2
    assert state(journal, 1) == "done" and (1, "r") not in journal.batches(ID)


def test_an_old_in_doubt_batch_whose_lookup_fails_stays_in_doubt(journal: Journal, clock: Clock):
    """The GETs of a reconciliation answer 404: the batch may still have been applied, so its
    rows are 'outcome unknown', not 'not applied', and nothing is POSTed."""
    batches = planned(journal, valid_rows(2), 2)
    journal.sending(ID, 1, "")
    engage = Engage(get_status=404)
    clock.now = T0 + WINDOW + 60
    posted = resumed(batches, engage, journal, clock.now)
    assert posted.aborted is not None and engage.gets() and engage.posts() == []
    reasons = posted.outcomes["reason"].to_list()
    assert len(reasons) == 2 and all(r.startswith("outcome unknown") for r in reasons)
    assert state(journal, 1) == "sending"


def test_a_reconciled_batch_resumes_from_its_recorded_child(journal: Journal):
    """'reconciled' with child rows [2]: row 1 accepted under the parent key, only 2 re-sent."""
    batches = planned(journal, valid_rows(2), 2)
    again = child_key(batches[0].key, "r")
    journal.sending(ID, 1, "")
    journal.divide(ID, 1, "", "reconciled", [("r", again, 1, "sha", [2])])
    engage = Engage()
    posted = resumed(batches, engage, journal, T0 + WINDOW * 2)
    assert engage.posts() == [(again, ["receipt 1"])]
    assert settled(posted) == {1: (True, None, batches[0].key), 2: (True, None, again)}
    assert state(journal, 1, "r") == "done"


def test_a_split_batch_resumes_into_its_halves_records(journal: Journal):
    """'split': half 0 done earlier (row 1 refused) is not re-sent; planned half 1 is."""
    batches = planned(journal, valid_rows(4), 4)
    low, high = batches[0].halves()
    journal.sending(ID, 1, "")
    journal.divide(ID, 1, "", "split", [(h.part, h.key, 2, "sha", None) for h in (low, high)])
    journal.sending(ID, 1, "0")
    journal.settle(ID, 1, "0", "done", 202, [(1, "server", "refused")], low.key)
    engage = Engage()
    posted = resumed(batches, engage, journal, T0)
    assert engage.posts() == [(high.key, ["receipt 2", "receipt 3"])]
    assert settled(posted) == {
        1: (False, "server", low.key), 2: (True, None, low.key),
        3: (True, None, high.key), 4: (True, None, high.key),
    }  # fmt: skip
    assert state(journal, 1, "1") == "done"


def test_without_a_client_unsettled_batches_are_unsent_and_nothing_is_sent(journal: Journal):
    """Reporting from the journal alone: done batches settle, planned ones are 'unsent', and
    one an earlier run sent without an answer is in doubt, under its key (its rows, fed into
    a new import, could land twice)."""
    batches = planned(journal, valid_rows(3), 1)
    journal.sending(ID, 1, "")
    journal.settle(ID, 1, "", "done", 202, [], batches[0].key)
    journal.sending(ID, 2, "")
    posted = post(batches, None, resume=resume_of(journal, T0 + WINDOW * 2))
    assert settled(posted) == {
        1: (True, None, batches[0].key),
        2: (False, "batch", batches[1].key),
        3: (False, "unsent", None),
    }
    in_doubt = posted.outcomes.filter(pl.col("sourceRow") == 2)["reason"][0]
    assert in_doubt.startswith("outcome unknown")
    assert posted.requests == 0
    assert journal.counts(ID) == {"done": 1, "sending": 1, "planned": 1}


# --- what this run records -------------------------------------------------------------


class LoggingRecorder(_JournalRecorder):
    """The journal recorder, also logging each call into ``events``."""

    def __init__(self, journal: Journal, events: list[tuple[str, ...]]) -> None:
        super().__init__(journal, ID)
        self.events = events

    def sending(self, batch: Batch) -> None:
        super().sending(batch)
        self.events.append(("sending", batch.label))

    def settled(
        self, batch: Batch, state: str, status: int | None, refused: Refused, unmatched: int = 0
    ) -> None:
        super().settled(batch, state, status, refused, unmatched)
        self.events.append(("settled", batch.label, state))

    def divided(self, batch: Batch, state: str, children: Sequence[Batch], explicit: bool) -> None:
        super().divided(batch, state, children, explicit)
        self.events.append((state, batch.label, *(c.label for c in children)))


def on_disk(path: Path, key: str) -> str:
    """The state of the batch sent under ``key``, read by another connection."""
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("SELECT state FROM batches WHERE key = ?", (key,)).fetchone()[0])


def test_sending_is_durable_before_the_request_leaves(journal: Journal):
    """The recorder hears 'sending' before each request, and the file says so when it arrives."""
    batches = planned(journal, valid_rows(2), 1)
    events: list[tuple[str, ...]] = []

    def arrived(request: httpx.Request) -> None:
        key = request.headers["idempotency-key"]
        events.append(("request", key, on_disk(journal.path, key)))

    engage = Engage(on_request=arrived)
    post(batches, engage.client(), recorder=LoggingRecorder(journal, events))
    one, two = batches[0].key, batches[1].key
    assert events == [
        ("sending", "1"), ("request", one, "sending"), ("settled", "1", "done"),
        ("sending", "2"), ("request", two, "sending"), ("settled", "2", "done"),
    ]  # fmt: skip


def test_a_refused_batch_is_recorded_split_then_its_halves(journal: Journal):
    """A 400: the parent is recorded 'split' before its halves are sent; the bad half 'failed'."""
    frame = valid_rows(2, description=["fine", "poison"])
    batches = planned(journal, frame, 2)
    events: list[tuple[str, ...]] = []
    engage = Engage(refuse=lambda request: b"poison" in request.content)
    posted = post(batches, engage.client(), recorder=LoggingRecorder(journal, events))
    assert events == [
        ("sending", "1"), ("split", "1", "1.0", "1.1"),
        ("sending", "1.0"), ("settled", "1.0", "done"),
        ("sending", "1.1"), ("settled", "1.1", "failed"),
    ]  # fmt: skip
    records = journal.batches(ID)
    assert [records[(1, p)].state for p in ("", "0", "1")] == ["split", "done", "failed"]
    assert records[(1, "1")].status == 400
    [(row, stage, reason)] = journal.refused_in(ID, 1, "1")
    assert (row, stage, journal.refused_count(ID)) == (2, "batch", 1) and "400" in reason

    again = Engage()
    replayed = post(batches, again.client(), resume=resume_of(journal, T0))
    assert again.requests == [], "a resumed run sends none of it again"
    assert settled(replayed) == settled(posted)


def test_a_stop_before_the_first_batch_sends_nothing(journal: Journal):
    """should_stop() true from the start: every row 'unsent', interrupted, no request."""
    batches = planned(journal, valid_rows(4), 2)
    engage = Engage()
    posted = post(
        batches,
        engage.client(),
        should_stop=lambda: True,
        recorder=_JournalRecorder(journal, ID),
        resume=resume_of(journal, T0),
    )
    assert engage.requests == []
    assert posted.interrupted and posted.requests == 0 and posted.batches_sent == 0
    assert set(posted.outcomes["stage"]) == {"unsent"} and posted.outcomes.height == 4
    assert all("interrupted" in r for r in posted.outcomes["reason"])
    assert journal.counts(ID) == {"planned": 2}


# --- bugs ----------------------------------------------------------------------------


def test_a_stopped_run_still_reports_rows_earlier_runs_settled(journal: Journal):
    """Stopped before planned batch 1: batch 2, done in an earlier run, stays accepted."""
    batches = planned(journal, valid_rows(2), 1)
    journal.sending(ID, 2, "")
    journal.settle(ID, 2, "", "done", 202, [], batches[1].key)
    posted = post(
        batches, Engage().client(), should_stop=lambda: True, resume=resume_of(journal, T0)
    )
    assert settled(posted) == {1: (False, "unsent", None), 2: (True, None, batches[1].key)}


def test_an_aborted_run_still_reports_rows_earlier_runs_settled(journal: Journal):
    """A 401 on batch 1 aborts the run: batch 2, done in an earlier run, stays accepted."""
    batches = planned(journal, valid_rows(2), 1)
    journal.sending(ID, 2, "")
    journal.settle(ID, 2, "", "done", 202, [], batches[1].key)
    http = httpx.Client(
        base_url="https://t.example", transport=httpx.MockTransport(lambda r: httpx.Response(401))
    )
    posted = post(
        batches, EngageClient(http, RetryPolicy(max_attempts=1)), resume=resume_of(journal, T0)
    )
    assert posted.aborted is not None
    assert settled(posted)[2] == (True, None, batches[1].key)


def test_a_transaction_of_a_settled_batch_is_not_taken_for_an_in_doubt_row(
    journal: Journal, clock: Clock
):
    """Two rows alike but for validTo; one transaction, from done batch 1: batch 2's row is sent."""
    frame = valid_rows(
        2, amount=["100", "100"], definitionId=[1, 1], description=["bonus", "bonus"],
        validTo=["2027-01-01T00:00:00+01:00", "2028-01-01T00:00:00+01:00"],
    )  # fmt: skip
    batches = planned(journal, frame, 1)
    journal.sending(ID, 1, "")
    journal.settle(ID, 1, "", "done", 202, [], batches[0].key)
    clock.now = T0 + 1
    journal.sending(ID, 2, "")  # in doubt: the process died before Engage answered
    engage = Engage(held=[transaction(frame.to_dicts()[0], T0 + 0.5)])  # batch 1's row only
    clock.now = T0 + 1 + WINDOW
    resumed(batches, engage, journal, clock.now)
    assert [key for key, _ in engage.posts()] == [child_key(batches[1].key, "r")]


# --- settling every batch in doubt together ---------------------------------------------


def in_doubt_past_the_window(journal: Journal, clock: Clock, *seqs: int) -> None:
    """Batches ``seqs`` sent at T0 by a run that died; now Engage has forgotten their keys."""
    for seq in seqs:
        journal.sending(ID, seq, "")
    clock.now = T0 + WINDOW + 60


def asked(engage: Engage) -> list[tuple[str, str]]:
    return [(r.url.params["contactId"], r.url.params["definitionId"]) for r in engage.gets()]


def test_every_account_is_read_once_for_all_batches_in_doubt(journal: Journal, clock: Clock):
    """Three batches in doubt, all on one contact's three accounts: three GETs, not nine;
    the rows found are accepted, the rest re-sent; the counts say so."""
    frame = valid_rows(9)  # definitions 1, 2, 3 in every batch of 3
    batches = planned(journal, frame, 3)
    in_doubt_past_the_window(journal, clock, 1, 2, 3)
    rows = frame.to_dicts()
    engage = Engage(held=[transaction(rows[i], T0 + 1) for i in (0, 4, 8)])
    posted = resumed(batches, engage, journal, clock.now)
    assert sorted(asked(engage)) == [(rows[0]["contactId"], d) for d in ("1", "2", "3")]
    assert posted.outcomes["accepted"].all() and posted.outcomes.height == 9
    sent = sorted(d for _, descriptions in engage.posts() for d in descriptions)
    assert sent == sorted(f"receipt {i}" for i in range(9) if i not in (0, 4, 8))
    s = posted.settling
    assert (s.batches, s.accounts, s.rows_found, s.rows_resent) == (3, 3, 3, 6)


def test_one_transaction_stands_for_a_row_of_one_batch_only(journal: Journal, clock: Clock):
    """The same row in two batches in doubt, one transaction in Engage: one row is found, the
    other sent again (the shared read must not find it for both)."""
    frame = valid_rows(2, amount=["5", "5"], definitionId=[1, 1], description=["x", "x"])
    batches = planned(journal, frame, 1)
    in_doubt_past_the_window(journal, clock, 1, 2)
    engage = Engage(held=[transaction(frame.to_dicts()[0], T0 + 1)])
    posted = resumed(batches, engage, journal, clock.now)
    assert len(engage.gets()) == 1
    assert [descriptions for _, descriptions in engage.posts()] == [["x"]]
    assert (posted.settling.rows_found, posted.settling.rows_resent) == (1, 1)


def test_settling_reads_before_any_batch_is_sent(journal: Journal, clock: Clock):
    """Batches between and after those in doubt wait for the reads: no POST of this run can
    be taken for an earlier run's row. They are sent afterwards, under their own keys."""
    frame = valid_rows(4, definitionId=[1, 1, 1, 1])
    batches = planned(journal, frame, 1)
    in_doubt_past_the_window(journal, clock, 1, 3)
    engage = Engage()
    recorder = _JournalRecorder(journal, ID)
    post(batches, engage.client(), recorder=recorder, resume=resume_of(journal, clock.now),
         concurrency=4)  # fmt: skip
    methods = [r.method for r in engage.requests]
    assert methods == ["GET"] + ["POST"] * 4
    keys = {key for key, _ in engage.posts()}
    assert keys == {batches[1].key, batches[3].key, child_key(batches[0].key, "r"),
                    child_key(batches[2].key, "r")}  # fmt: skip


def test_a_resume_inside_the_window_reads_nothing(journal: Journal, clock: Clock):
    """In doubt, but Engage still knows the keys: re-sent under them, no GET at all."""
    batches = planned(journal, valid_rows(6), 2)
    for seq in (1, 2):
        journal.sending(ID, seq, "")
    clock.now = T0 + WINDOW - 60
    engage = Engage()
    posted = resumed(batches, engage, journal, clock.now)
    assert engage.gets() == [] and posted.settling.batches == 0
    assert {key for key, _ in engage.posts()} == {b.key for b in batches}


def test_accounts_are_read_side_by_side(journal: Journal, clock: Clock):
    """Many accounts, concurrency 4: up to four GETs at once, never more."""
    contacts = [f"00000000-0000-4000-8000-{i:012d}" for i in range(12)]
    frame = valid_rows(12, contactId=contacts, definitionId=[1] * 12)
    batches = planned(journal, frame, 4)
    in_doubt_past_the_window(journal, clock, 1, 2, 3)
    lock, now, most = threading.Lock(), [0], [0]

    def slow(request: httpx.Request) -> None:
        if request.method == "GET":
            with lock:
                now[0] += 1
                most[0] = max(most[0], now[0])
            time.sleep(0.05)
            with lock:
                now[0] -= 1

    engage = Engage(on_request=slow)
    post(batches, engage.client(), recorder=_JournalRecorder(journal, ID),
         resume=resume_of(journal, clock.now), concurrency=4)  # fmt: skip
    assert len(engage.gets()) == 12 and 1 < most[0] <= 4


def test_a_stop_while_settling_leaves_the_batches_in_doubt(journal: Journal, clock: Clock):
    """Stopped while the accounts are read: nothing is POSTed, the batches stay in doubt (not
    'not applied'), the rest unsent; the next run settles them."""
    batches = planned(journal, valid_rows(6), 2)
    in_doubt_past_the_window(journal, clock, 1)
    stop = threading.Event()
    engage = Engage(on_request=lambda request: stop.set())
    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(engage.handle))
    client = EngageClient(http, RetryPolicy(max_attempts=1), stopping=stop.is_set,
                          limiter=RateLimiter(1000.0))  # fmt: skip
    posted = post(batches, client, should_stop=stop.is_set, recorder=_JournalRecorder(journal, ID),
                  resume=resume_of(journal, clock.now))  # fmt: skip
    assert engage.posts() == [] and posted.interrupted and posted.aborted is None
    stages = dict(zip(posted.outcomes["sourceRow"], posted.outcomes["stage"], strict=True))
    assert stages == {1: "batch", 2: "batch", 3: "unsent", 4: "unsent", 5: "unsent", 6: "unsent"}
    assert state(journal, 1) == "sending"


def test_a_transaction_in_two_batches_windows_goes_to_the_one_that_has_no_other(
    journal: Journal, clock: Clock
):
    """The same row in batches 1 and 2, both applied: batch 1 at T0 (its answer lost, re-sent
    under its key 6 h later), batch 2 at T0+6h; both still in doubt when Engage has forgotten
    the keys, and Engage lists newest first. Batch 1's window holds both transactions, batch
    2's only the newer: each batch gets one, nothing is sent again."""
    frame = valid_rows(2, amount=["5", "5"], definitionId=[1, 1], description=["x", "x"])
    batches = planned(journal, frame, 1)
    journal.sending(ID, 1, "")
    clock.now = T0 + 6 * 3600
    journal.sending(ID, 1, "")
    journal.sending(ID, 2, "")
    row = frame.to_dicts()[0]
    engage = Engage(held=[transaction(row, T0 + 6 * 3600 + 1), transaction(row, T0 + 1)])
    clock.now = T0 + 6 * 3600 + WINDOW + 60
    posted = resumed(batches, engage, journal, clock.now)
    assert engage.posts() == []
    assert (posted.settling.rows_found, posted.settling.rows_resent) == (2, 0)


def test_a_surprise_while_settling_stops_the_run_with_every_row_reported(
    journal: Journal, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """Not an Engage error (a bug, say) while the batches in doubt are settled: the run stops,
    nothing is POSTed, the batch stays in doubt and every row is in the report."""
    batches = planned(journal, valid_rows(6), 2)
    in_doubt_past_the_window(journal, clock, 1)

    def broken(*args: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("pipeline.post.poster.Held.find_applied", broken)
    engage = Engage()
    posted = resumed(batches, engage, journal, clock.now)
    assert engage.posts() == [] and posted.aborted is not None
    assert "ZeroDivisionError" in str(posted.aborted)
    stages = dict(zip(posted.outcomes["sourceRow"], posted.outcomes["stage"], strict=True))
    assert stages == {1: "batch", 2: "batch", 3: "unsent", 4: "unsent", 5: "unsent", 6: "unsent"}
    assert state(journal, 1) == "sending"
