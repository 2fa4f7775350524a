"""The Engage simulator, served by uvicorn on loopback and driven by a real httpx client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.simulator import FaultConfig, SimulatorConfig, SimulatorServer
from pipeline.simulator.fixture import contact_id

POST_PATH = "/api/v2/point-accounts/transactions"
HEADERS = {"apikey": "sim-key", "content-type": "application/json"}
ALICE, BOB = contact_id(1), contact_id(2)
STRANGER = "00000000-0000-0000-0000-000000000001"


@dataclass
class Sim:
    """A running simulator and a client for it."""

    server: SimulatorServer
    client: httpx.Client

    def post(self, rows: Any, key: str | None = None, **headers: str) -> httpx.Response:
        """POST ``rows`` (serialised with json.dumps unless already bytes)."""
        body = rows if isinstance(rows, bytes) else json.dumps(rows).encode()
        extra = {"idempotency-key": key} if key is not None else {}
        return self.client.post(POST_PATH, content=body, headers=extra | headers)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)

    def stored(self) -> list[dict[str, Any]]:
        stored: list[dict[str, Any]] = self.client.get("/_sim/transactions").json()
        return stored


def row(
    contact: str = ALICE, amount: Any = 10, definition: Any = 1, **fields: Any
) -> dict[str, Any]:
    base = {"contactId": contact, "amount": amount, "definitionId": definition}
    return base | {"source": "test", "description": "a row"} | fields


def raw_row(contact: str, amount: str) -> bytes:
    """A one-row body with ``amount`` written into the JSON exactly as given."""
    fields = f'"contactId": "{contact}", "definitionId": 1, "source": "s", "description": "d"'
    return f'[{{{fields}, "amount": {amount}}}]'.encode()


def exact(response: httpx.Response) -> Any:
    """The JSON body with numbers as Decimal, as a careful client reads it."""
    return json.loads(response.content, parse_float=Decimal)


@pytest.fixture
def start() -> Iterator[Callable[..., Sim]]:
    """Start simulators with given settings; each and its client stop after the test."""
    with ExitStack() as stack:

        def _start(**settings: Any) -> Sim:
            server = stack.enter_context(SimulatorServer(SimulatorConfig(**settings)))
            client = httpx.Client(base_url=server.url, headers=HEADERS, timeout=5)
            return Sim(server, stack.enter_context(client))

        yield _start


@pytest.fixture
def sim(start: Callable[..., Sim]) -> Sim:
    """A simulator with the default settings."""
    return start()


# --- authentication and batch-level errors ---------------------------------------------------


def test_missing_or_wrong_apikey_is_401(sim: Sim) -> None:
    """Without the right apikey header every API endpoint answers 401 and applies nothing."""
    for headers in ({}, {"apikey": "wrong"}):
        with httpx.Client(base_url=sim.server.url, headers=headers) as anonymous:
            assert anonymous.post(POST_PATH, json=[row()]).status_code == 401
            assert anonymous.get("/api/v2/point-accounts/definitions").status_code == 401
    assert sim.stored() == []


def test_post_without_json_content_type_is_415(sim: Sim) -> None:
    """A POST without Content-Type: application/json gets 415 and applies nothing."""
    response = sim.post([row()], **{"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]
    assert sim.stored() == []


def test_more_rows_than_allowed_is_400(start: Callable[..., Sim]) -> None:
    """Over max_rows the whole request is refused with the configured limit in the message."""
    default, small = start(), start(max_rows=2)
    assert default.post([row()] * 1001).json() == {"message": "at most 1000 rows per request"}
    assert small.post([row()] * 3).status_code == 400
    assert small.post([row()] * 3).json() == {"message": "at most 2 rows per request"}
    assert small.post([row()] * 2).status_code == 202


def test_too_long_description_refuses_the_whole_batch(start: Callable[..., Sim]) -> None:
    """With max_description_length, one over-long description makes the POST a 400."""
    sim = start(max_description_length=5)
    response = sim.post([row(description="short"), row(description="longer")])
    assert response.json() == {"message": "row 1: description is longer than 5 characters"}
    assert response.status_code == 400 and sim.stored() == []
    assert sim.post([row(description="short")]).status_code == 202


def test_body_not_an_array_of_objects_is_400(sim: Sim) -> None:
    """Malformed JSON, NaN, or anything but an array of objects gets 400 with a message."""
    for body in (b"{}", b"not json", b"[1]", b'[{"amount": NaN}]', b"", b'"rows"'):
        response = sim.post(body)
        assert response.status_code == 400, body
        assert response.json()["message"]
    assert sim.stored() == []


def test_blank_idempotency_key_is_400(sim: Sim) -> None:
    """An empty Idempotency-Key header is refused rather than silently ignored."""
    assert sim.post([row()], key="").status_code == 400


# --- per-row rules ---------------------------------------------------------------------------


def test_bad_rows_are_echoed_and_good_rows_applied(sim: Sim) -> None:
    """Each broken rule puts the row in notAccepted as sent; the others are applied (202)."""
    good = [
        row(),
        row(contact=BOB.upper(), timeStamp="2024-05-01T10:00:00Z"),
        row(amount=-2.5, validFrom="2024-01-01T00:00:00+01:00", validTo="2025-01-01T00:00:00Z"),
    ]
    bad = [
        row(contact=STRANGER),
        row(definition=99),
        row(contact=STRANGER, definition=98),
        {"description": "x", "amount": 1, "definitionId": 1, "contactId": ALICE, "source": " "},
        row(description=None),
        row(amount="10"),
        row(amount=True),
        row(definition=True),
        row(definition=1.0),
        row(contact="{" + ALICE + "}"),
        row(timeStamp="2024-05-01T10:00:00"),
        row(validFrom="2024-02-01T00:00:00Z", validTo="2024-01-01T00:00:00Z"),
    ]
    response = sim.post([*good[:2], *bad, good[2]])
    assert response.status_code == 202
    result = response.json()
    assert result["notAccepted"] == bad
    assert [list(echoed) for echoed in result["notAccepted"]] == [list(sent) for sent in bad]
    assert result["missingContactIds"] == [STRANGER]
    assert result["missingDefinitionIds"] == [99, 98]
    assert result["errorMessages"] == [
        "row 5: source is required",
        "row 6: description is required",
        "row 7: amount must be a number",
        "row 8: amount must be a number",
        "row 9: definitionId must be a positive integer",
        "row 10: definitionId must be a positive integer",
        "row 11: contactId must be a GUID",
        "row 12: timeStamp must be an ISO 8601 date-time with a UTC offset",
        "row 13: validTo must be after validFrom",
    ]
    assert [stored["contactId"] for stored in sim.stored()] == [ALICE, BOB, ALICE]


def test_fixture_has_500_contacts_from_the_shared_rule(sim: Sim) -> None:
    """Contacts 1..500 are uuid5(NAMESPACE_URL, 'points-import/contact/{i}'); 501 is unknown."""
    contacts = [
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"points-import/contact/{i}")) for i in (1, 500, 501)
    ]
    assert contacts[0] == ALICE
    assert sim.post([row(contact=contact) for contact in contacts]).json()["missingContactIds"] == [
        contacts[2]
    ]
    names = [found["name"] for found in sim.get("/api/v2/point-accounts/definitions").json()]
    assert names[:2] == ["Bonus points", "Purchase points"] and len(names) == 5


def test_configured_tenant_and_auto_created_contacts(start: Callable[..., Sim]) -> None:
    """contacts/definitions replace the fixture; auto_create_contacts accepts any GUID."""
    custom = start(contacts=[STRANGER.upper()], definitions=[{"id": 7, "name": "Seven"}])
    result = custom.post([row(contact=STRANGER, definition=7), row(definition=1)]).json()
    assert result["missingContactIds"] == [ALICE]
    assert result["missingDefinitionIds"] == [1]
    assert len(custom.stored()) == 1
    assert (
        start(auto_create_contacts=True).post([row(contact=STRANGER)]).json()["notAccepted"] == []
    )


# --- exact amounts -----------------------------------------------------------------------------


def test_amounts_and_balances_are_exact_decimals(sim: Sim) -> None:
    """0.1 + 0.2 is a balance of exactly 0.3; 30 significant digits come back unrounded."""
    big = "12345678901234567890.1234567891"
    for contact, amount in ((ALICE, "0.1"), (ALICE, "0.2"), (BOB, big)):
        sim.post(raw_row(contact, amount))
    balances = exact(sim.get("/api/v2/point-accounts", contactId=ALICE))["items"]
    assert balances[0]["balance"] == Decimal("0.3")
    assert f'"amount":{big},' in sim.get(f"{POST_PATH}/3").text
    assert f'"balance":{big},' in sim.get("/api/v2/point-accounts/2").text


# --- idempotency -------------------------------------------------------------------------------


def test_same_key_replays_identical_bytes_and_applies_once(sim: Sim) -> None:
    """A repeat with the same key and body gets the first answer byte for byte, no new rows."""
    rows = [row(), row(contact=STRANGER)]
    first, second = sim.post(rows, key="k-1"), sim.post(rows, key="k-1")
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.content == second.content
    assert [stored["idempotencyKey"] for stored in sim.stored()] == ["k-1"]
    notes = [logged["note"] for logged in sim.get("/_sim/requests").json()]
    assert notes == [None, "replayed"]


def test_same_key_different_body_is_422(sim: Sim) -> None:
    """Reusing a key with another body is refused with 422 and applies nothing."""
    sim.post([row()], key="k-1")
    response = sim.post([row(amount=11)], key="k-1")
    assert response.status_code == 422
    assert response.json() == {"message": "Idempotency-Key reused with a different body"}
    assert len(sim.stored()) == 1


def test_key_in_progress_is_409(start: Callable[..., Sim]) -> None:
    """While the first request with a key is being processed, a second one gets 409."""
    sim = start(faults={"latency_ms": 400})
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(sim.post, [row()], "k-1")
        time.sleep(0.15)
        second = pool.submit(sim.post, [row()], "k-1")
        statuses = (first.result().status_code, second.result().status_code)
    assert statuses == (202, 409)
    assert second.result().json() == {
        "message": "a request with this Idempotency-Key is in progress"
    }
    assert len(sim.stored()) == 1


def test_key_is_forgotten_after_the_window(start: Callable[..., Sim]) -> None:
    """Past idempotency_window_seconds the same key and body are applied again."""
    sim = start(idempotency_window_seconds=0.3)
    sim.post([row()], key="k-1")
    sim.post([row()], key="k-1")
    assert len(sim.stored()) == 1
    time.sleep(0.35)
    sim.post([row()], key="k-1")
    assert len(sim.stored()) == 2


# --- faults ------------------------------------------------------------------------------------


def test_injected_errors_apply_nothing(sim: Sim) -> None:
    """An injected 5xx or 429 is answered before anything is applied or remembered."""
    for status in (500, 502, 503, 429):
        sim.client.put("/_sim/faults", json={"error_rates": {status: 1.0}})
        assert sim.post([row()], key="k-1").status_code == status
    assert sim.stored() == []
    sim.client.put("/_sim/faults", json={})
    assert sim.post([row()], key="k-1").status_code == 202
    assert len(sim.stored()) == 1


def test_injected_429_has_retry_after(sim: Sim) -> None:
    """An injected 429 carries Retry-After: whole seconds as an integer, else a decimal."""
    for seconds, header in ((2.0, "2"), (0.5, "0.5")):
        faults = {"error_rates": {429: 1.0}, "retry_after_seconds": seconds}
        sim.client.put("/_sim/faults", json=faults)
        assert sim.post([row()]).headers["retry-after"] == header


def test_apply_then_fail_500_applies_once_and_retry_replays(start: Callable[..., Sim]) -> None:
    """A committed request answered 500 is not applied again when retried with its key."""
    sim = start(faults={"apply_then_fail_rate": 1.0, "apply_then_fail_mode": "500"})
    failed = sim.post([row()], key="k-1")
    assert failed.status_code == 500
    retried = sim.post([row()], key="k-1")
    assert retried.status_code == 202
    assert retried.json()["notAccepted"] == []
    assert len(sim.stored()) == 1


def test_apply_then_fail_drop_applies_once_and_retry_replays(
    start: Callable[..., Sim], capfd: pytest.CaptureFixture[str]
) -> None:
    """A committed request whose connection drops is not applied again on retry; no log noise."""
    sim = start(faults={"apply_then_fail_rate": 1.0, "apply_then_fail_mode": "drop"})
    with pytest.raises(httpx.RemoteProtocolError):
        sim.post([row()], key="k-1")
    assert sim.post([row()], key="k-1").status_code == 202
    assert len(sim.stored()) == 1
    assert "ASGI callable" not in capfd.readouterr().err


def test_apply_then_fail_mixed_gives_both_failures_each_applied_once(
    start: Callable[..., Sim],
) -> None:
    """Mode "mixed" answers committed requests with a 500 or a drop; each was applied once."""
    faults = {"apply_then_fail_rate": 1.0, "apply_then_fail_mode": "mixed", "seed": 3}
    sim = start(faults=faults)
    outcomes: set[int | str] = set()
    for number in range(12):
        try:
            outcomes.add(sim.post([row(amount=number)], key=f"k-{number}").status_code)
        except httpx.RemoteProtocolError:
            outcomes.add("drop")
    assert outcomes == {500, "drop"}
    assert [stored["amount"] for stored in sim.stored()] == list(range(12))


def test_seeded_faults_are_reproducible(sim: Sim) -> None:
    """The same seed gives the same sequence of injected statuses."""
    faults = {"error_rates": {500: 0.3, 503: 0.3}, "seed": 42}
    statuses = []
    for _ in range(2):
        sim.client.put("/_sim/faults", json=faults)
        statuses.append([sim.post([]).status_code for _ in range(20)])
    assert statuses[0] == statuses[1]
    assert set(statuses[0]) == {500, 503, 202}


def test_rate_limit_gives_429_with_retry_after(start: Callable[..., Sim]) -> None:
    """Above rate_limit_rps in a 1-second window requests get 429 with Retry-After: 1."""
    sim = start(rate_limit_rps=3)
    responses = [sim.get("/api/v2/point-accounts/definitions") for _ in range(5)]
    assert [response.status_code for response in responses] == [200, 200, 200, 429, 429]
    assert responses[-1].headers["retry-after"] == "1"


def test_latency_delays_every_request(start: Callable[..., Sim]) -> None:
    """latency_ms is added to GETs and POSTs alike."""
    sim = start(faults={"latency_ms": 100})
    began = time.monotonic()
    sim.get("/api/v2/point-accounts/definitions")
    sim.post([row()])
    assert time.monotonic() - began >= 0.2


# --- reads -------------------------------------------------------------------------------------


def test_definitions_paging_and_lookup(sim: Sim) -> None:
    """Definitions are a bare array sliced by offset/count; count over 1000 is refused."""
    page = sim.get("/api/v2/point-accounts/definitions", offset=1, count=2).json()
    assert [found["id"] for found in page] == [2, 3]
    assert page[0] == {
        "id": 2,
        "name": "Purchase points",
        "description": page[0]["description"],
        "links": [],
    }
    assert sim.get("/api/v2/point-accounts/definitions/5").json()["name"] == "Migration points"
    assert sim.get("/api/v2/point-accounts/definitions/6").status_code == 404
    for bad in ({"count": 1001}, {"count": -1}, {"offset": "x"}):
        assert sim.get("/api/v2/point-accounts/definitions", **bad).status_code == 400


def test_accounts_and_balances(sim: Sim) -> None:
    """Accounts are created per (contact, definition) on first use, ids from 1, summed."""
    sim.post([row(amount=5), row(amount=7), row(definition=2, amount=1), row(contact=BOB)])
    items = sim.get("/api/v2/point-accounts", contactId=ALICE.upper()).json()["items"]
    assert [(item["id"], item["definitionId"], item["balance"]) for item in items] == [
        (1, 1, 12),
        (2, 2, 1),
    ]
    assert sim.get("/api/v2/point-accounts/3").json() == {
        "id": 3,
        "contactId": BOB,
        "definitionId": 1,
        "balance": 10,
        "balanceExpires": None,
        "pendingPoints": 0,
        "links": [],
    }
    assert sim.get("/api/v2/point-accounts/4").status_code == 404
    assert sim.get("/api/v2/point-accounts").status_code == 400
    assert sim.get("/api/v2/point-accounts", contactId=STRANGER).json()["totalCount"] == 0


def test_transactions_paging_filters_and_addressing(sim: Sim) -> None:
    """Transactions by account or contact+definition, paged by id, filtered by validity."""
    now = datetime.now(UTC)
    later, earlier = (now + timedelta(days=1)).isoformat(), (now - timedelta(days=1)).isoformat()
    sim.post(
        [row(amount=n) for n in range(5)]
        + [
            row(validFrom=later),
            row(validTo=earlier, validFrom=(now - timedelta(days=2)).isoformat()),
        ]
    )
    page = sim.get(POST_PATH, accountId=1, offset=2, count=2).json()
    assert [item["amount"] for item in page["items"]] == [2, 3]
    assert (page["totalCount"], page["offset"], page["count"]) == (7, 2, 2)
    by_owner = sim.get(POST_PATH, contactId=ALICE, definitionId=1, filter="Active").json()
    assert [item["id"] for item in by_owner["items"]] == [1, 2, 3, 4, 5]
    assert [
        item["id"] for item in sim.get(POST_PATH, accountId=1, filter="pending").json()["items"]
    ] == [6]
    assert sim.get(POST_PATH, contactId=BOB, definitionId=1).json()["totalCount"] == 0
    assert sim.get(f"{POST_PATH}/7").json()["validTo"] is not None
    assert sim.get(f"{POST_PATH}/8").status_code == 404
    for bad in ({}, {"contactId": ALICE}, {"accountId": 9}, {"accountId": 1, "filter": "Old"}):
        assert sim.get(POST_PATH, **bad).status_code in (400, 404)


def test_transaction_model_fields(sim: Sim) -> None:
    """A stored transaction has every PointTransactionModel field; timeStamp is its date."""
    sim.post([row(timeStamp="2024-05-01T10:00:00+02:00")])
    model = sim.get(f"{POST_PATH}/1").json()
    assert set(model) == {
        "id",
        "accountId",
        "amount",
        "createdOn",
        "modifiedOn",
        "transactionDate",
        "type",
        "source",
        "description",
        "validFrom",
        "validTo",
        "retailTransactionLineItemId",
        "links",
    }
    assert model["transactionDate"] == "2024-05-01T10:00:00+02:00"
    assert model["retailTransactionLineItemId"] is None


# --- admin and config --------------------------------------------------------------------------


def test_admin_reset_and_request_log(sim: Sim) -> None:
    """The request log records each API call; /_sim/reset empties store and log."""
    sim.post([row(), row()], key="k-1")
    logged = sim.get("/_sim/requests").json()
    assert [(e["method"], e["status"], e["rows"], e["idempotencyKey"]) for e in logged] == [
        ("POST", 202, 2, "k-1")
    ]
    assert sim.client.post("/_sim/reset").status_code == 204
    assert sim.stored() == [] and sim.get("/_sim/requests").json() == []
    assert sim.server.store.accounts == []
    assert sim.post([row()], key="k-1").status_code == 202
    assert sim.stored()[0]["id"] == 1


def test_admin_faults_are_validated(sim: Sim) -> None:
    """PUT /_sim/faults refuses impossible settings with 400 and keeps the old ones."""
    response = sim.client.put("/_sim/faults", json={"error_rates": {"500": 0.7, "503": 0.7}})
    assert response.status_code == 400
    assert "more than 1" in response.json()["message"]
    assert sim.post([row()]).status_code == 202


def test_config_from_toml(tmp_path: Path) -> None:
    """[simulator] and [simulator.faults] are read; a missing table gives the defaults."""
    path = tmp_path / "sim.toml"
    path.write_text("[simulator]\nmax_rows = 5\n[simulator.faults]\nerror_rates = { 503 = 0.5 }\n")
    config = SimulatorConfig.from_toml(path)
    assert config.max_rows == 5 and config.faults == FaultConfig(error_rates={503: 0.5})
    path.write_text("[other]\nx = 1\n")
    assert SimulatorConfig.from_toml(path) == SimulatorConfig()


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[simulator]\nmax_rows = 0\n", "simulator.max_rows"),
        ("[simulator.faults]\napply_then_fail_rate = 1.5\n", "simulator.faults.apply_then_fail"),
        ("[simulator]\ncontacts = ['nope']\n", "contacts must be GUIDs"),
        ("[simulator]\nmax_row = 5\n", "simulator.max_row"),
        ("[simulator\n", "not valid TOML"),
    ],
)
def test_config_bad_values_raise_one_line_value_error(
    tmp_path: Path, toml: str, problem: str
) -> None:
    """Bad settings raise ValueError with a one-line message naming the setting."""
    path = tmp_path / "sim.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=problem) as raised:
        SimulatorConfig.from_toml(path)
    assert "\n" not in str(raised.value)


def test_serve_announces_its_address_and_stops_on_ctrl_c() -> None:
    """serve() prints where it listens (never the key), answers, and returns after SIGINT."""
    script = (
        "from pipeline.simulator import serve, SimulatorConfig\n"
        "serve(SimulatorConfig(api_key='secret-1'), port=0)\n"
        "print('stopped')\n"
    )
    command = [sys.executable, "-c", script]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split()[4]
        response = httpx.get(f"{url}/api/v2/point-accounts/1", headers={"apikey": "secret-1"})
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert line.startswith("Engage simulator listening on http://127.0.0.1:")
    assert "secret-1" not in line
    assert response.status_code == 404
    assert (proc.returncode, out, err) == (0, "stopped\n", "")
