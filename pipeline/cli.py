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


@app.command("run")
@_input
@_config
@click.option("--dry-run", is_flag=True, help="Do everything but POST.")
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
def run_cmd(
    input: Path,
    config: Path | None,
    dry_run: bool,
    rejects: Path | None,
    summary: Path | None,
    import_id: str | None,
    batch_size: int | None,
) -> int:
    """Import INPUT into Engage (ENGAGE_BASE_URL, ENGAGE_API_KEY).

    INPUT is a CSV, TSV, Parquet or NDJSON file, optionally gzipped.
    """
    from pipeline.commands import import_file

    cfg = _setup(config)
    return import_file(
        cfg,
        input,
        rejects=rejects,
        summary=summary,
        import_id=import_id,
        batch_size=batch_size,
        dry_run=dry_run,
        env=dict(os.environ),
    )


@app.command("validate")
@_input
@_config
@_rejects
@_summary
def validate_cmd(
    input: Path, config: Path | None, rejects: Path | None, summary: Path | None
) -> int:
    """Load and validate INPUT only, without network.

    The invalid rows go to the rejects report; exit 0 if every row is valid, else 3.
    """
    from pipeline.commands import import_file

    cfg = _setup(config)
    return import_file(cfg, input, rejects=rejects, summary=summary, dry_run=True, env=None)


@app.command("simulate")
@click.option(
    "--port", type=int, default=8080, show_default=True, help="Port to listen on (0: any free one)."
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
    from pipeline.commands import demo

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
        except Exception:
            name = "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Stockholm"
        ) from None
    return name


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
