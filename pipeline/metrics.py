"""Metrics for Prometheus: a run's outcome as a text file (node_exporter's textfile
collector) or pushed to a Pushgateway (a CronJob lives too briefly to be scraped).

Gauges of the last run, named by Prometheus' conventions (``points_import_`` prefix, base
units, ``_seconds``, ``_timestamp_seconds``): rows by outcome, batches, requests, retries,
429 answers, the accounts read to settle batches in doubt, duration, exit code, when it ran,
and when a run last succeeded (exit 0), which a failed run keeps as it was, so that "no
success for 26 h" can be alerted on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "points_import"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"
ROWS = {  # outcome label -> the summary's count
    "read": "rows_read",
    "accepted": "rows_accepted",
    "rejected": "rows_rejected",
    "held_back": "rows_held_back",
    "already_landed": "rows_already_landed",
}


def registry_of(summary: dict[str, Any] | None, exit_code: int, now: float) -> CollectorRegistry:
    """The run's gauges (``summary`` None: it failed before it had one). The last success is
    set only when this run is one."""
    summary = summary or {}
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> None:
        metric = Gauge(f"{PREFIX}_{name}", doc, list(labels or {}), registry=registry)
        (metric.labels(**labels) if labels else metric).set(value)

    rows = Gauge(f"{PREFIX}_rows", "Rows of the last run, by outcome", ["outcome"],
                 registry=registry)  # fmt: skip
    for outcome, key in ROWS.items():
        rows.labels(outcome=outcome).set(summary.get(key) or 0)
    for stage, count in (summary.get("rejected_by_stage") or {}).items():
        rows.labels(outcome=f"rejected_{stage}").set(count)
    batches = Gauge(f"{PREFIX}_batches", "Batches of the last run", ["state"], registry=registry)
    batches.labels(state="planned").set(summary.get("batches_total") or 0)
    batches.labels(state="sent").set(summary.get("batches_sent") or 0)
    batches.labels(state="settled").set(summary.get("batches_settled") or 0)
    settled = Gauge(f"{PREFIX}_settled_rows", "Rows in doubt the last run settled through GETs",
                    ["outcome"], registry=registry)  # fmt: skip
    settled.labels(outcome="found_applied").set(summary.get("rows_found_applied") or 0)
    settled.labels(outcome="resent").set(summary.get("rows_resent") or 0)
    gauge(
        "accounts_read",
        "Accounts read to settle batches in doubt",
        summary.get("accounts_read") or 0,
    )
    gauge("requests", "POST requests of the last run", summary.get("requests") or 0)
    gauge("retries", "Retried attempts of the last run", summary.get("retries") or 0)
    gauge("rate_limited_responses", "429 answers in the last run", summary.get("throttled") or 0)
    gauge("duration_seconds", "How long the last run took", summary.get("duration_s") or 0)
    gauge("exit_code", "The last run's exit code (0 all in, 3 rows to look at, 1, 2)", exit_code)
    gauge("last_run_timestamp_seconds", "When the last run ended", now)
    if exit_code == 0:
        gauge("last_success_timestamp_seconds", "When a run last ended with exit 0", now)
    return registry


def write_file(path: Path, registry: CollectorRegistry) -> None:
    """Write the text file atomically; a failed run keeps the last success it finds there."""
    if LAST_SUCCESS not in _names(registry):
        earlier = _last_success(path)
        if earlier is not None:
            Gauge(LAST_SUCCESS, "When a run last ended with exit 0",
                  registry=registry).set(earlier)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def push(gateway: str, job: str, registry: CollectorRegistry) -> None:
    """Push to the Pushgateway (POST: the last success a failed run does not set stays)."""
    pushadd_to_gateway(gateway, job=job, registry=registry, timeout=10)


def record(summary: dict[str, Any] | None, exit_code: int, file: Path | None, gateway: str,
           job: str) -> None:  # fmt: skip
    """The run's metrics to the file and the Pushgateway configured (either, both, none)."""
    if file is None and not gateway:
        return
    registry = registry_of(summary, exit_code, time.time())
    if file is not None:
        write_file(file, registry)
    if gateway:
        push(gateway, job, registry)


def _names(registry: CollectorRegistry) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


def _last_success(path: Path) -> float | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):  # gone, or not text: nothing to keep, it is overwritten
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except ValueError:  # not a metrics file: nothing to keep
        return None
    return None
