"""The journal's commands: ``status``, ``runs`` and ``reconcile``."""

from __future__ import annotations

import random
import sys
from datetime import datetime
from pathlib import Path

import polars as pl

from pipeline import report
from pipeline.cli.progress import counting
from pipeline.config import Config
from pipeline.credentials import credentials_from_env
from pipeline.errors import EXIT_OK, EXIT_REJECTS, ConfigError
from pipeline.journal import ImportRecord, Journal
from pipeline.model import SOURCE_ROW
from pipeline.post.reconcile import accounts_of, count_held, read_accounts
from pipeline.runner import RunSettings, settled

CONTENT = ["contactId", "definitionId", "amount", "source", "description", "timeStamp"]


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _record(journal: Journal, import_id: str | None) -> ImportRecord:
    records = journal.imports()
    if import_id is None and records:
        return max(records, key=lambda r: r.updated_at)
    found = next((r for r in records if r.import_id == import_id), None)
    if found is None:
        known = ", ".join(r.import_id for r in records[-10:]) or "none"
        raise ConfigError(f"no import {import_id!r} in the journal {journal.path} (known: {known})")
    return found


def status(state_dir: Path, import_id: str | None) -> int:
    """An import's batches by state, counts and last error."""
    with Journal.open(state_dir, create=False) as journal:
        record = _record(journal, import_id)
        counts = journal.counts(record.import_id)
        refused = journal.refused_count(record.import_id)
        held = journal.held_count(record.import_id)
    _say(
        f"import {record.import_id}: {record.status}"
        + (f" (exit {record.exit_code})" if record.exit_code is not None else "")
    )
    _say(f"  input      {record.input_path} (sha256 {record.input_sha256[:16]}…)")
    _say(
        f"  rows       {record.rows} read; {refused} refused by Engage so far; {held} held back"
        f" (another import holds them); sorted against the landed rows through row"
        f" {record.claimed_through}"
    )
    _say(
        f"  batches    {record.batches} planned; by state: "
        + ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
    )
    _say(f"  started    {record.created_at}; last change {record.updated_at}")
    if record.holder:
        _say(f"  held by    {record.holder}")
    if record.status == "stopped":
        doubt = counts.get("sending", 0)
        _say(
            "  stopped    the process running it is gone (killed, its machine lost): run the"
            " same command again to resume"
            + (f"; {doubt} batches in doubt are settled first" if doubt else "")
        )
    if record.last_error:
        _say(f"  last error {record.last_error}")
    if record.summary:
        s = record.summary
        _say(
            f"  outcome    {s['rows_accepted']} accepted, {s['rows_rejected']} rejected,"
            f" {s.get('rows_already_landed', 0)} had landed before (not sent)"
            + (f" in {', '.join(s['already_landed_in'])}" if s.get("already_landed_in") else "")
        )
        if s.get("batches_settled"):
            _say(f"  in doubt   settled {report.settled_line(s)}")
    return EXIT_OK


def runs(state_dir: Path) -> int:
    """Every import in the journal, one line each."""
    with Journal.open(state_dir, create=False) as journal:
        records = journal.imports()
        lines = [(r, journal.counts(r.import_id), journal.held_count(r.import_id)) for r in records]
    _say(
        f"{'import':<28} {'status':<12} {'exit':>4} {'rows':>10} {'done':>11} {'landed':>8}"
        f" {'held':>6}  updated  input"
    )
    for r, counts, held in lines:
        done = counts.get("done", 0) + counts.get("failed", 0)
        landed = (r.summary or {}).get("rows_already_landed", "")
        _say(
            f"{r.import_id:<28} {r.status:<12} {r.exit_code if r.exit_code is not None else '':>4}"
            f" {r.rows:>10} {f'{done}/{r.batches}':>11} {landed:>8} {held:>6}  {r.updated_at}"
            f"  {r.input_path}"
        )
        if (r.summary or {}).get("batches_settled"):
            _say(f"{'':<28} settled in doubt: {report.settled_line(r.summary or {})}")
    if not records:
        _say("no imports yet")
    return EXIT_OK


def reconcile(
    cfg: Config, state_dir: Path, import_id: str, sample: int | None, env: dict[str, str]
) -> int:
    """Check that Engage holds every accepted row of the import exactly once."""
    from pipeline.api import open_client

    with Journal.open(state_dir, create=False) as journal:
        record = _record(journal, import_id)
        settings = RunSettings(
            input=Path(record.input_path),
            config=cfg,
            timezone=str(record.settings["timezone"]),
            import_id=import_id,
            batch_size=int(record.settings["batch_size"]),
        )
        valid, posted = settled(settings, journal)
    refused = posted.refused.frame()
    accepted = (
        valid
        if refused is None
        else valid.join(refused.select(SOURCE_ROW), on=SOURCE_ROW, how="anti")
    )
    chosen = _sample(accepted, sample)
    since = datetime.fromisoformat(record.created_at).timestamp()
    accounts = accounts_of(chosen)
    with (
        open_client(cfg, credentials_from_env(cfg.engage, env)) as client,
        counting("accounts read", len(accounts)) as advance,
    ):
        read = read_accounts(accounts, client, cfg.engage.concurrency, advance, since)
    rows = accepted.join(chosen.select("contactId", "definitionId").unique(),
                         on=["contactId", "definitionId"])  # fmt: skip
    return _verdict(rows, count_held(rows, read), chosen)


def _sample(accepted: pl.DataFrame, size: int | None) -> pl.DataFrame:
    if size is None or size >= accepted.height:
        return accepted
    picked = random.Random(0).sample(accepted[SOURCE_ROW].to_list(), size)
    return accepted.filter(pl.col(SOURCE_ROW).is_in(picked))


def _verdict(rows: pl.DataFrame, held: dict[int, int], chosen: pl.DataFrame) -> int:
    """Rows with equal content must be held as often as they were accepted."""
    counted = rows.with_columns(
        pl.col(SOURCE_ROW).replace_strict(held, default=0).alias("held"),
        pl.len().over(CONTENT).alias("expected"),
    )
    wrong = counted.filter(
        (pl.col("held") != pl.col("expected"))
        & pl.col(SOURCE_ROW).is_in(chosen[SOURCE_ROW].implode())
    )
    for row in wrong.iter_rows(named=True):
        what = "missing" if row["held"] < row["expected"] else "doubled"
        _say(
            f"row {row[SOURCE_ROW]}: {what}: Engage holds it {row['held']} time(s), "
            f"expected {row['expected']}"
        )
    _say(
        f"reconcile: checked {chosen.height} accepted rows; "
        + ("all are in Engage exactly once" if wrong.is_empty() else f"{wrong.height} mismatch")
    )
    return EXIT_OK if wrong.is_empty() else EXIT_REJECTS
