"""The ``points-import`` command line: the edge where files, environment and network meet.

Exit codes: 0 every row accepted; 3 finished, some rows are in the rejects report;
1 aborted (Engage unreachable after retries, key refused); 2 usage, config or unreadable
input, nothing sent. Every ``PipelineError`` is caught once, here, and printed as one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from pipeline import __version__
from pipeline.config import Config, load_config
from pipeline.errors import EXIT_ABORTED, ConfigError, PipelineError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="points-import")
def app(debug: bool) -> None:
    """Load loyalty point transactions into Voyado Engage: exactly once, nothing lost.

    Exit codes: 0 every row accepted; 3 finished, some rows are in the rejects report;
    1 aborted (Engage unreachable after retries, key refused); 2 usage, config or
    unreadable input, nothing sent.
    """
    _state["debug"] = debug


_state: dict[str, bool] = {"debug": False}


def _verbosity(command: Callable[..., int]) -> Callable[..., int]:
    """``-v``/``-q``: a line per batch and every event, or errors and the outcome only."""
    verbose = click.option("-v", "--verbose", is_flag=True,
                           help="Show every event, down to a line per batch.")  # fmt: skip
    quiet = click.option("-q", "--quiet", is_flag=True,
                         help="Show errors and the one-line outcome only.")  # fmt: skip
    return verbose(quiet(command))


def _level(verbose: bool, quiet: bool) -> int:
    if verbose and quiet:
        raise click.UsageError("-v and -q can't go together")
    return 1 if verbose else -1 if quiet else 0


_input = click.argument("input", type=click.Path(path_type=Path))
_config = click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(path_type=Path),
    help="TOML config file (see configs/default.toml).",
)
_rejects = click.option(
    "--rejects",
    type=click.Path(path_type=Path),
    help="Where to write the rejects CSV [default: next to --summary, "
    "else <input stem>.rejects.csv here].",
)
_summary = click.option(
    "--summary", type=click.Path(path_type=Path), help="Also write the summary as JSON here."
)


_metrics_file = click.option(
    "--metrics-file",
    type=click.Path(path_type=Path),
    help="Write the run's metrics here, for node_exporter's textfile collector "
    "[default: from config, none].",
)
_state_dir = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Folder of the run journal [default: from config, .points-import].",
)


@app.command("run")
@_input
@_config
@click.option("--dry-run", is_flag=True, help="Do everything but POST (no journal entry).")
@_rejects
@_summary
@click.option(
    "--import-id",
    help="The import's identity; keys derive from it [default: the input's fingerprint].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    help="Rows per request, at most 1000 [default: from config, 1000].",
)
@_state_dir
@click.option(
    "--idempotency-window",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a batch in doubt is re-sent under its own key; older ones are "
    "reconciled first [default: from config, 82800].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help="Requests in flight at once [default: from config, 16].",
)
@click.option(
    "--max-rps",
    type=click.FloatRange(min=1),
    help="At most this many requests in any second [default: from config, 50].",
)
@click.option(
    "--allow-twins",
    is_flag=True,
    default=None,
    help="Send rows without timeStamp whose twin landed in another import (another "
    "transaction) [default: from config, no].",
)
@click.option(
    "--id-column",
    help="The input's column holding the source's transaction id: each row's identity, "
    "never sent [default: from config, none: the row's content].",
)
@click.option("--force", is_flag=True, help="Send a finished import again, under new keys.")
@click.option("--yes", is_flag=True, help="Confirm --force without asking (needed off a terminal).")
@_metrics_file
@_verbosity
def run_cmd(
    input: Path,
    config: Path | None,
    dry_run: bool,
    rejects: Path | None,
    summary: Path | None,
    import_id: str | None,
    batch_size: int | None,
    state_dir: Path | None,
    idempotency_window: float | None,
    concurrency: int | None,
    max_rps: float | None,
    allow_twins: bool | None,
    id_column: str | None,
    force: bool,
    yes: bool,
    metrics_file: Path | None,
    verbose: bool,
    quiet: bool,
) -> int:
    """Import INPUT into Engage (ENGAGE_BASE_URL, ENGAGE_API_KEY).

    INPUT is a CSV, TSV, Parquet or NDJSON file, optionally gzipped. A run of an import that
    stopped (crash, signal, outage) goes on where it stopped; a finished import is not sent
    again.
    """
    from pipeline.api import ImportOptions
    from pipeline.cli.run import import_file

    verbosity = _level(verbose, quiet)
    try:
        cfg = _setup(config, verbosity)
    except PipelineError as exc:  # a bad config fails a night too: told as far as known
        from pipeline.api import failed_early

        failed_early(exc, metrics_file, os.environ)
        raise
    options = ImportOptions(
        rejects=rejects,
        summary=summary,
        import_id=import_id,
        batch_size=batch_size,
        dry_run=dry_run,
        state_dir=state_dir,
        idempotency_window=idempotency_window,
        concurrency=concurrency,
        max_rps=max_rps,
        allow_twins=allow_twins,
        id_column=id_column,
        force=force,
        confirm=_confirmer(yes),
        metrics_file=metrics_file,
    )
    return import_file(cfg, input, options, dict(os.environ), quiet=verbosity < 0)


def _confirmer(yes: bool) -> Callable[[str], bool]:
    def confirm(message: str) -> bool:
        print(f"points-import: {message}", file=sys.stderr)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise ConfigError("--force needs --yes when not run from a terminal")
        return click.confirm("Send again?", default=False, err=True)

    return confirm


@app.command("validate")
@_input
@_config
@_rejects
@_summary
@_verbosity
def validate_cmd(
    input: Path,
    config: Path | None,
    rejects: Path | None,
    summary: Path | None,
    verbose: bool,
    quiet: bool,
) -> int:
    """Load and validate INPUT only, without network.

    The invalid rows go to the rejects report; exit 0 if every row is valid, else 3.
    """
    from pipeline.api import ImportOptions
    from pipeline.cli.run import import_file

    verbosity = _level(verbose, quiet)
    cfg = _setup(config, verbosity)
    options = ImportOptions(rejects=rejects, summary=summary, dry_run=True)
    return import_file(cfg, input, options, None, quiet=verbosity < 0)


@app.command("status")
@click.argument("import_id", required=False)
@_config
@_state_dir
def status_cmd(import_id: str | None, config: Path | None, state_dir: Path | None) -> int:
    """Show an import's batches by state, its counts and its last error.

    Without IMPORT_ID: the most recently updated import.
    """
    from pipeline.cli.status import status

    cfg = _setup(config)
    return status(_journal_dir(cfg, state_dir), import_id)


@app.command("runs")
@_config
@_state_dir
def runs_cmd(config: Path | None, state_dir: Path | None) -> int:
    """List the imports in the journal with their outcome."""
    from pipeline.cli.status import runs

    cfg = _setup(config)
    return runs(_journal_dir(cfg, state_dir))


@app.command("reconcile")
@click.argument("import_id")
@_config
@_state_dir
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    help="Check this many accepted rows, drawn at random [default: all].",
)
def reconcile_cmd(
    import_id: str, config: Path | None, state_dir: Path | None, sample: int | None
) -> int:
    """Check through Engage's GET endpoints that every accepted row of IMPORT_ID is there once.

    Exit 0 when everything matches, 3 when a row is missing or doubled (listed on stderr).
    """
    from pipeline.cli.status import reconcile

    cfg = _setup(config)
    return reconcile(cfg, _journal_dir(cfg, state_dir), import_id, sample, dict(os.environ))


@app.group("balances")
def balances_group() -> None:
    """Engage's point balances: export them, or verify them against a legacy system's."""


@balances_group.command("export")
@click.argument("contacts", required=False, type=click.Path(path_type=Path))
@click.option("--import", "import_id", help="The contacts of this import's input instead.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("balances.csv"),
              show_default=True, help="CSV, or Parquet by its extension.")  # fmt: skip
@_config
@_state_dir
def balances_export_cmd(contacts: Path | None, import_id: str | None, output: Path,
                        config: Path | None, state_dir: Path | None) -> int:  # fmt: skip
    """The balance of every point account of the contacts in CONTACTS (a CSV, Parquet or Excel
    file with a contactId column): contactId, definitionId, accountId, balance, pendingPoints,
    balanceExpires. Read at the configured rate limit and concurrency."""
    from pipeline.cli.balances import export

    cfg = _setup(config)
    return export(cfg, contacts, import_id, output, _journal_dir(cfg, state_dir), dict(os.environ))


@balances_group.command("verify")
@click.argument("expected", type=click.Path(path_type=Path))
@click.option("--before", type=click.Path(path_type=Path),
              help="A balances export taken before the migration: its balances are added to "
              "the expected ones.")  # fmt: skip
@click.option("--sample", type=click.IntRange(min=1),
              help="Check this many balances, drawn at random [default: all].")  # fmt: skip
@click.option("--report", type=click.Path(path_type=Path), default=Path("balance-mismatches.csv"),
              show_default=True, help="Where the mismatches go.")  # fmt: skip
@_config
def balances_verify_cmd(expected: Path, before: Path | None, sample: int | None, report: Path,
                        config: Path | None) -> int:  # fmt: skip
    """Check Engage's balances against EXPECTED (contactId, definitionId, balance: the legacy
    system's). Mismatches (contactId, definitionId, expected, actual, difference, note) go to
    the report; exit 0 when every balance matches, 3 when one differs."""
    from pipeline.cli.balances import verify

    cfg = _setup(config)
    return verify(cfg, expected, before, sample, report, dict(os.environ))


@app.command("inspect")
@click.argument("contact")
@click.option("--latest", type=click.IntRange(min=1), default=10, show_default=True,
              help="Transactions shown per account.")  # fmt: skip
@_config
def inspect_cmd(contact: str, latest: int, config: Path | None) -> int:
    """A contact's point accounts with their definitions by name, and the latest transactions
    of each: for "where are my points?"."""
    from pipeline.cli.balances import inspect

    cfg = _setup(config)
    return inspect(cfg, contact, latest, dict(os.environ))


def _journal_dir(cfg: Config, state_dir: Path | None) -> Path:
    return state_dir or cfg.journal.state_dir


@app.command("simulate")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@_config
def simulate_cmd(port: int, host: str, config: Path | None) -> int:
    """Run the Engage simulator until stopped.

    Its [simulator] config sets the API key, contacts, definitions and faults.
    """
    from pipeline.simulator import serve

    cfg = _setup(config)
    serve(cfg.simulator, host, port)
    return 0


@app.command("demo")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for the demo's rejects and summary.",
)
@_config
def demo_cmd(output: Path, config: Path | None) -> int:
    """Import sample_data/ into the built-in simulator and show the outcome.

    Exit 0 when the import finished (the sample's bad rows are expected in the rejects).
    """
    from pipeline.cli.run import demo

    cfg = _setup(config or _demo_config())
    return demo(cfg, output)


def _demo_config() -> Path | None:
    here = Path(__file__).resolve().parent
    for candidate in (
        Path("configs/demo.toml"),
        here.parent / "configs/demo.toml",
        here / "_configs/demo.toml",
    ):
        if candidate.is_file():
            return candidate
    return None


def _setup(config_path: Path | None, verbosity: int = 0) -> Config:
    from pipeline import logs

    cfg = load_config(config_path)
    logs.configure(cfg.logging.level, cfg.logging.format, verbosity=verbosity)
    return cfg


def cli(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors are one line on stderr."""
    try:
        code = app.main(args=args, standalone_mode=False, prog_name="points-import")
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("points-import: interrupted", file=sys.stderr)
        return EXIT_ABORTED
    except PipelineError as exc:
        return _fail(exc, exc.exit_code)
    except Exception as exc:
        return _fail(exc, EXIT_ABORTED, prefix="internal error: ")
    return code if isinstance(code, int) else 0


def _fail(exc: BaseException, code: int, prefix: str = "") -> int:
    if _state["debug"]:
        import traceback

        traceback.print_exception(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"points-import: error: {prefix}{message}", file=sys.stderr)
    return code


def main() -> None:
    sys.exit(cli())
