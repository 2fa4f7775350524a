"""The ``points-import`` command line: the edge where files, environment and network meet.

Exit codes: 0 every row accepted; 3 finished, some rows are in the rejects report;
1 aborted (Engage unreachable after retries, key refused); 2 usage, config or unreadable
input, nothing sent. Every ``PipelineError`` is caught once, here, and printed as one line.
"""

from __future__ import annotations

import os
import sys
import zoneinfo
from pathlib import Path
from typing import Annotated

import click
import typer

from pipeline import __version__
from pipeline.config import Config, load_config
from pipeline.errors import EXIT_ABORTED, ConfigError, PipelineError

app = typer.Typer(
    help="Load loyalty point transactions into Voyado Engage: exactly once, nothing lost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state: dict[str, bool] = {"debug": False}

InputArg = Annotated[Path, typer.Argument(help="CSV, TSV, Parquet or NDJSON file, optionally .gz")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
RejectsOpt = Annotated[Path | None, typer.Option(
    help="Where to write the rejects CSV [default: next to --summary, else "
         "<input stem>.rejects.csv here]")]
SummaryOpt = Annotated[Path | None, typer.Option(help="Also write the summary as JSON here")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"points-import {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    _state["debug"] = debug


@app.command("run")
def run_cmd(
    input: InputArg,
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Do everything but POST")] = False,
    rejects: RejectsOpt = None,
    summary: SummaryOpt = None,
    import_id: Annotated[str | None, typer.Option(
        help="The import's identity (keys derive from it) [default: the input's fingerprint]")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, max=1000, help="Rows per request, at most 1000 [default: from config, 1000]")] = None,
) -> int:
    """Import INPUT into Engage (ENGAGE_BASE_URL, ENGAGE_API_KEY)."""
    from pipeline.commands import import_file

    cfg = _setup(config)
    return import_file(cfg, input, rejects=rejects, summary=summary, import_id=import_id,
                       batch_size=batch_size, dry_run=dry_run, env=dict(os.environ))


@app.command("validate")
def validate_cmd(input: InputArg, config: ConfigOpt = None, rejects: RejectsOpt = None,
                 summary: SummaryOpt = None) -> int:
    """Load and validate INPUT only: no network; the invalid rows go to the rejects report."""
    from pipeline.commands import import_file

    cfg = _setup(config)
    return import_file(cfg, input, rejects=rejects, summary=summary, dry_run=True, env=None)


@app.command("simulate")
def simulate_cmd(
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one)")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    config: ConfigOpt = None,
) -> int:
    """Run the Engage simulator (its [simulator] config: key, contacts, faults)."""
    from pipeline.simulator import serve

    cfg = _setup(config)
    serve(cfg.simulator, host, port)
    return 0


@app.command("demo")
def demo_cmd(
    output: Annotated[Path, typer.Option(help="Folder for the demo's rejects and summary")] = Path(
        "demo-output"),
    config: ConfigOpt = None,
) -> int:
    """Import sample_data/ into the built-in simulator and show the outcome."""
    from pipeline.commands import demo

    cfg = _setup(config or _demo_config())
    return demo(cfg, output)


def _demo_config() -> Path | None:
    here = Path(__file__).resolve().parent
    for candidate in (Path("configs/demo.toml"), here.parent / "configs/demo.toml",
                      here / "_configs/demo.toml"):
        if candidate.is_file():
            return candidate
    return None


def _setup(config_path: Path | None) -> Config:
    from pipeline import logs

    cfg = load_config(config_path)
    logs.configure(cfg.logging.level, cfg.logging.format)
    return cfg


def resolve_timezone(name: str) -> str:
    """The configured IANA zone, or this machine's."""
    if not name:
        import tzlocal

        try:
            name = tzlocal.get_localzone_name() or "UTC"
        except Exception:  # noqa: BLE001 - tzlocal raises many kinds; any means "unknown"
            name = "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}; use an IANA name like Europe/Stockholm")
    return name


def cli(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors are one line on stderr."""
    try:
        code = app(args=args, standalone_mode=False, prog_name="points-import")
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("points-import: interrupted", file=sys.stderr)
        return EXIT_ABORTED
    except PipelineError as exc:
        return _fail(exc, exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the promise is one line, never a traceback
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

