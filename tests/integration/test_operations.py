"""What an operations team watches: the metrics file and the Pushgateway, the rejects
threshold, and notifications to a webhook, against the simulator and loopback servers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SAMPLE


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


class Hook:
    """A loopback HTTP server that keeps what is POSTed to it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    started = Hook()
    yield started
    started.close()


def test_the_metrics_file_after_a_run_with_rejects(simulator, run_cli, tmp_path):
    """Rows by outcome, batches, requests, the exit code; no last success for an exit 3, and
    the one of an earlier exit 0 kept."""
    sim = simulator()
    metrics = tmp_path / "m" / "points_import.prom"
    metrics.parent.mkdir()
    metrics.write_text(
        "# TYPE points_import_last_success_timestamp_seconds gauge\n"
        "points_import_last_success_timestamp_seconds 1.7e9\n"
    )
    done = run_cli("run", str(SAMPLE), "--metrics-file", str(metrics), "--summary", "s.json",
                   sim=sim)  # fmt: skip
    summary, found = done.summary("s.json"), _samples(metrics)
    assert done.code == 3
    rows = {dict(labels)["outcome"]: v for (name, labels), v in found.items()
            if name == "points_import_rows"}  # fmt: skip
    assert rows["read"] == summary["rows_read"] and rows["accepted"] == summary["rows_accepted"]
    assert rows["rejected"] == summary["rows_rejected"] > 0
    assert rows["rejected_validation"] == summary["rejected_by_stage"]["validation"]
    assert found["points_import_exit_code", ()] == 3
    assert found["points_import_requests", ()] == summary["requests"]
    assert found["points_import_batches", (("state", "sent"),)] == summary["batches_sent"]
    assert found["points_import_last_success_timestamp_seconds", ()] == 1.7e9


def test_rejects_within_the_threshold_exit_0_and_above_it_exit_3(simulator, run_cli):
    """The sample's rejects are a few percent of its rows: within 50 % they only warn; a
    validation of the same file tolerates none (a check of a file is no night's import)."""
    lenient = run_cli("run", str(SAMPLE), "--summary", "a.json", "--state-dir", "a",
                      sim=simulator(), config="[alerts]\nmax_rejected_share = 0.5\n")  # fmt: skip
    strict = run_cli("run", str(SAMPLE), "--summary", "b.json", "--state-dir", "b",
                     sim=simulator(), config="[alerts]\nmax_rejected_share = 0.0001\n")  # fmt: skip
    checked = run_cli("validate", str(SAMPLE), config="[alerts]\nmax_rejected_share = 0.5\n")
    rejected = lenient.summary("a.json")["rows_rejected"]
    assert rejected > 0 and lenient.code == 0 and "max_rejected_share" in lenient.err
    assert strict.code == 3 and strict.summary("b.json")["rows_rejected"] == rejected
    assert checked.code == 3


def test_a_notification_reaches_a_webhook_without_the_key_or_a_row(
    simulator, run_cli, hook, monkeypatch
):
    """Exit 3: the webhook hears the outcome, the counts and the report's path; not the API
    key, not a contact id of the file. The URL may come from the environment (a Secret)."""
    sim = simulator()
    monkeypatch.setenv("POINTS_IMPORT_NOTIFY", f"json://127.0.0.1:{hook.port}/hook")
    done = run_cli("run", str(SAMPLE), sim=sim, key="sim-key")
    assert done.code == 3 and len(hook.received) == 1
    path, body = hook.received[0]
    sent = json.loads(body)
    text = json.dumps(sent)
    assert path == "/hook" and "exit 3" in sent["title"] and "rows rejected" in sent["message"]
    assert "transactions.rejects.csv" in sent["message"]
    assert "sim-key" not in text
    contacts = {line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:] if line}
    assert not any(c and c in text for c in contacts)


def test_a_failure_before_any_row_is_told_without_the_file_s_text(
    simulator, run_cli, hook, tmp_path, monkeypatch
):
    """A file without its header (exit 2: its first row is taken for one) is told by the kind
    of error, not its message, which quotes that row; a bad config file is told through the
    environment's URLs; a clean run and a validation are not told."""
    config = f'[alerts]\nnotify = ["json://127.0.0.1:{hook.port}/hook"]\n'
    rows = SAMPLE.read_text().splitlines()[1:50]
    (tmp_path / "noheader.csv").write_text("\n".join(rows) + "\n")
    headless = run_cli("run", "noheader.csv", sim=simulator(), config=config)
    assert headless.code == 2 and len(hook.received) == 1
    told = json.loads(hook.received[0][1])
    assert "exit 2" in told["title"] and "input file" in told["message"]
    assert rows[0].split(",")[0] not in json.dumps(told)
    monkeypatch.setenv("POINTS_IMPORT_NOTIFY", f"json://127.0.0.1:{hook.port}/env")
    (tmp_path / "bad.toml").write_text("[engage\n")
    assert run_cli("run", str(SAMPLE), "--config", "bad.toml").code == 2
    assert [path for path, _ in hook.received] == ["/hook", "/env"]
    clean = tmp_path / "clean.csv"
    clean.write_text(SAMPLE.read_text().splitlines()[0] + "\n")
    assert run_cli("run", str(clean), sim=simulator(), config=config).code == 0
    assert run_cli("validate", "noheader.csv", config=config).code == 2
    assert len(hook.received) == 2


def test_metrics_are_pushed_to_a_pushgateway(simulator, run_cli, hook):
    """[metrics] pushgateway: the run's gauges POSTed under its job."""
    config = f'[metrics]\npushgateway = "http://127.0.0.1:{hook.port}"\njob = "nightly"\n'
    done = run_cli("run", str(SAMPLE), sim=simulator(), config=config)
    assert done.code == 3 and len(hook.received) == 1
    path, body = hook.received[0]
    assert path == "/metrics/job/nightly"
    assert b"points_import_exit_code 3.0" in body and b'points_import_rows{outcome="read"}' in body


def test_a_metrics_file_that_is_not_text_is_overwritten(simulator, run_cli, tmp_path):
    (tmp_path / "m.prom").write_bytes(b"\xff\xfe garbage\n")
    done = run_cli("run", str(SAMPLE), "--metrics-file", "m.prom", sim=simulator())
    assert done.code == 3 and "points_import_exit_code 3.0" in (tmp_path / "m.prom").read_text()


def test_a_journal_on_a_container_s_own_filesystem_is_warned_of(simulator, run_cli, monkeypatch):
    """In a pod (KUBERNETES_SERVICE_HOST), a state folder on the root filesystem is lost with
    it: the run says so (and goes on)."""
    import pipeline.api

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr(pipeline.api, "_on_root_filesystem", lambda folder: True)
    warned = run_cli("run", str(SAMPLE), sim=simulator())
    assert warned.code == 3 and "lost with the container" in warned.err
    monkeypatch.setattr(pipeline.api, "_on_root_filesystem", lambda folder: False)
    assert "lost with the container" not in run_cli("run", str(SAMPLE), sim=simulator()).err
