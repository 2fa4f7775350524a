"""``balances export``, ``balances verify`` and ``inspect``: Engage's balances and accounts,
read through the GET endpoints at the configured rate limit."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from pipeline import balances
from pipeline.api import open_client
from pipeline.cli.progress import counting
from pipeline.config import Config
from pipeline.credentials import credentials_from_env
from pipeline.engage import EngageClient
from pipeline.errors import EXIT_OK, EXIT_REJECTS, InputError
from pipeline.journal import Journal
from pipeline.load import open_source, read_chunks


def export(cfg: Config, contacts: Path | None, import_id: str | None, output: Path,
           state_dir: Path, env: dict[str, str]) -> int:  # fmt: skip
    """Write the balances of the contacts of a file, or of an import's input, to ``output``."""
    if contacts is not None:
        ids, odd = balances.contacts_of(contacts, cfg.input.encoding, cfg.columns)
    else:
        ids, odd = _import_contacts(cfg, import_id, state_dir)
    with _client(cfg, env) as client:
        found = _read_balances(ids, client, cfg)
    _write(found, output)
    skipped = f"; {odd} contact ids that are no GUID skipped" if odd else ""
    print(f"points-import: {found.height} accounts of {len(ids)} contacts in {output}{skipped}",
          file=sys.stderr)  # fmt: skip
    return EXIT_OK


def verify(cfg: Config, expected: Path, before: Path | None, sample: int | None,
           report: Path, env: dict[str, str]) -> int:  # fmt: skip
    """Check Engage's balances against ``expected``; the mismatches to ``report``."""
    given = cfg.input
    wanted, bad = balances.expected_of(
        expected, given.encoding, given.decimal_separator, given.thousands_separator
    )
    wanted = balances.sample(wanted, sample)
    earlier = balances.snapshot_of(before, cfg.input.encoding) if before else None
    contacts = wanted["contactId"].unique(maintain_order=True).to_list()
    with _client(cfg, env) as client:
        actual = _read_balances(contacts, client, cfg)
    mismatches = balances.compare(wanted, actual, earlier)
    unreadable = bad.select("contactId", "definitionId", "expected",
                            pl.lit(None, pl.String).alias("actual"),
                            pl.lit(None, pl.String).alias("difference"), "note")  # fmt: skip
    found = pl.concat([mismatches, unreadable])
    _write(found, report)
    checked = wanted.height
    print(f"points-import: {checked} balances checked, {mismatches.height} differ, "
          f"{bad.height} unreadable; report in {report}", file=sys.stderr)  # fmt: skip
    return EXIT_REJECTS if found.height else EXIT_OK


def inspect(cfg: Config, contact: str, latest: int, env: dict[str, str]) -> int:
    """A contact's accounts, their definitions by name, and their latest transactions."""
    found, odd = balances.guids(pl.Series([contact]))
    if odd or not found:
        raise InputError(f"{contact!r} is not a contact id (a GUID like 3f2504e0-4f89-…)")
    contact = found[0]
    with _client(cfg, env) as client:
        names = {int(d["id"]): str(d.get("name") or "") for d in client.definitions()}
        accounts = client.accounts(contact)
        console = Console(file=sys.stdout, width=120)
        if not accounts:
            console.print(f"Contact {contact} has no point account in Engage.")
            return EXIT_OK
        table = Table("account", "definition", "balance", "pending", "expires",
                      title=f"Point accounts of {contact}")  # fmt: skip
        for account in accounts:
            definition = account.get("definitionId")
            label = f"{definition} {names.get(int(definition), '')}".strip() if definition else "?"
            expires = str(account.get("balanceExpires") or "")
            table.add_row(str(account.get("id")), label, str(account.get("balance")),
                          str(account.get("pendingPoints")), expires)  # fmt: skip
        console.print(table)
        for account in accounts:
            _print_transactions(console, client, account, latest)
    return EXIT_OK


def _print_transactions(
    console: Console, client: EngageClient, account: dict[str, Any], latest: int
) -> None:
    found = client.account_transactions(int(account["id"]))
    found.sort(key=lambda t: (str(t.get("transactionDate") or ""), t.get("id") or 0), reverse=True)
    title = f"Latest transactions of account {account['id']} ({len(found)} in all)"
    table = Table("id", "date", "amount", "type", "source", "description", title=title)
    for t in found[:latest]:
        table.add_row(str(t.get("id")), str(t.get("transactionDate") or ""), str(t.get("amount")),
                      str(t.get("type") or ""), str(t.get("source") or ""),
                      str(t.get("description") or ""))  # fmt: skip
    console.print(table)


def _import_contacts(cfg: Config, import_id: str | None, state_dir: Path) -> tuple[list[str], int]:
    """The contacts of ``import_id``'s input, read as ``run`` reads it (the config's format,
    encoding, delimiter and columns)."""
    if not import_id:
        raise InputError("give a file of contacts, or --import ID")
    with Journal.open(state_dir, create=False) as journal:
        record = journal.find(import_id)
    if record is None:
        raise InputError(f"no import {import_id} in the journal in {state_dir}")
    given = cfg.input
    with open_source(Path(record.input_path), given.format, given.encoding) as source:
        pieces = read_chunks(source, given.delimiter, cfg.columns)
        return balances.guids(pl.concat([piece["contactId"] for piece in pieces]))


@contextmanager
def _client(cfg: Config, env: dict[str, str]) -> Iterator[EngageClient]:
    with open_client(cfg, credentials_from_env(cfg.engage, env), threading.Event()) as client:
        yield client


def _read_balances(contacts: list[str], client: EngageClient, cfg: Config) -> pl.DataFrame:
    with counting("accounts read", len(contacts)) as advance:
        return balances.balances(contacts, client, cfg.engage.concurrency, advance)


def _write(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
