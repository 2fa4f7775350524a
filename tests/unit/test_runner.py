"""The runner with a client over httpx.MockTransport: what it does when Engage can't list its
point definitions."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from pipeline.config import Config
from pipeline.engage import EngageClient, RetryPolicy
from pipeline.journal import Journal
from pipeline.runner import RunSettings, run
from tests.conftest import write_csv

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
OK = {"notAccepted": [], "errorMessages": [], "missingDefinitionIds": [], "missingContactIds": []}


def test_without_a_definitions_endpoint_rows_are_sent_unchecked(tmp_path):
    """GET definitions answers 404: a warning, the rows go out, Engage judges the ids."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "GET":
            return httpx.Response(404)
        sent = json.loads(request.content)
        return httpx.Response(202, json={**OK, "notAccepted": [r for r in sent
                                                              if r["definitionId"] == 9],
                                         "missingDefinitionIds": [9]})  # fmt: skip

    rows = [{"contactId": GUID, "amount": "1", "definitionId": d, "source": "s",
             "description": f"d{d}"} for d in ("1", "9")]  # fmt: skip
    path = write_csv(tmp_path / "in.csv", rows)
    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(handle))
    client = EngageClient(http, RetryPolicy(max_attempts=1), sleep=lambda s: None)
    report = run(RunSettings(input=path, config=Config(), timezone="UTC"), client)
    assert report.exit_code == 3
    assert report.summary["rows_accepted"] == 1
    assert report.rejects.frame()["reason"].to_list() == [
        "not accepted by Engage: point definition 9 does not exist in Engage"
    ]
    assert "POST /api/v2/point-accounts/transactions" in seen


@pytest.mark.parametrize("echo", [{"contactId": "{" + GUID + "}"}, "row 2"])
def test_refusals_that_match_no_row_sent_are_not_a_clean_run(tmp_path, echo):
    """A notAccepted entry that matches no row (reformatted beyond recognition, or not an
    object): the rows are counted accepted, but the run says so and exits 3, not 0."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404)
        return httpx.Response(202, json={**OK, "notAccepted": [echo]})

    rows = [{"contactId": GUID, "amount": "1", "definitionId": "1", "source": "s",
             "description": f"d{i}"} for i in range(2)]  # fmt: skip
    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(handle))
    client = EngageClient(http, RetryPolicy(max_attempts=1), sleep=lambda s: None)
    report = run(RunSettings(input=write_csv(tmp_path / "in.csv", rows), config=Config(),
                             timezone="UTC"), client)  # fmt: skip
    assert (report.exit_code, report.summary["not_accepted_unmatched"]) == (3, 1)
    assert "Engage refused 1 rows that match no row sent" in report.message


def test_refusals_matching_no_row_are_remembered_when_a_run_resumes(tmp_path):
    """Batch 1's answer refuses a row it does not let us find, batch 2 gets a 401: the run
    stops; the run that resumes it still says so (exit 3, not a clean 0)."""
    answers = iter([{**OK, "notAccepted": [{"contactId": "{" + GUID + "}"}]}, 401])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404)
        answer = next(answers, OK)
        return (
            httpx.Response(answer) if isinstance(answer, int) else httpx.Response(202, json=answer)
        )

    rows = [{"contactId": GUID, "amount": "1", "definitionId": "1", "source": "s",
             "description": f"d{i}"} for i in range(4)]  # fmt: skip
    cfg = Config.model_validate({"engage": {"concurrency": 1}})
    settings = RunSettings(input=write_csv(tmp_path / "in.csv", rows), config=cfg,
                           timezone="UTC", batch_size=2)  # fmt: skip
    with Journal.open(tmp_path / "state") as journal:
        first = run(settings, client(handle), journal=journal)
        second = run(settings, client(handle), journal=journal)
    assert (first.exit_code, first.summary["not_accepted_unmatched"]) == (1, 1)
    assert "1 rows that match no row sent" in first.message
    assert (second.exit_code, second.summary["not_accepted_unmatched"]) == (3, 1)


def client(handle: Callable[[httpx.Request], httpx.Response]) -> EngageClient:
    http = httpx.Client(base_url="https://t.example", transport=httpx.MockTransport(handle))
    return EngageClient(http, RetryPolicy(max_attempts=1), sleep=lambda s: None)


def test_an_import_an_older_version_planned_can_be_run_again(tmp_path):
    """Its recorded settings lack what shapes plans since (the id column), and allow_twins
    shapes no plan: re-run with the same settings, it is not refused; with another batch
    size it is."""
    from pipeline.errors import JournalError
    from pipeline.runner import _same_shaping

    settings = RunSettings(input=tmp_path / "in.csv", config=Config(), timezone="UTC")
    validation = {"allow_duplicates": False, "max_source_length": 255,
                  "max_description_length": 1000}  # fmt: skip
    older = {"batch_size": 1000, "timezone": "UTC", "columns": {}, "validation": validation,
             "format": "auto"}  # fmt: skip
    with Journal.open(tmp_path / "state") as journal:
        journal.register("old", "in.csv", "0" * 64, older, "https://t.example")
        _same_shaping(journal.find("old"), settings)
        twins = Config.model_validate({"validation": {"allow_twins": True}})
        _same_shaping(journal.find("old"), RunSettings(tmp_path / "in.csv", twins, "UTC"))
        with pytest.raises(JournalError, match="batch_size 1000"):
            _same_shaping(journal.find("old"), RunSettings(tmp_path / "in.csv", Config(), "UTC",
                                                           batch_size=10))  # fmt: skip
