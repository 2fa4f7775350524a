"""What the commands do, at the edge: resolve paths, read the environment, open the client."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import structlog

from pipeline import report
from pipeline.cli import resolve_timezone
from pipeline.config import Config, Credentials, credentials_from_env
from pipeline.engage import EngageClient
from pipeline.errors import EXIT_OK, EXIT_REJECTS, ConfigError
from pipeline.runner import RunReport, RunSettings, run

log = structlog.get_logger("pipeline.commands")
SAMPLE = "transactions.csv"


def import_file(
    cfg: Config,
    input: Path,
    *,
    rejects: Path | None,
    summary: Path | None,
    import_id: str | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    env: dict[str, str] | None,
) -> int:
    """Run one import and write its reports; ``env=None`` means no network at all."""
    settings = RunSettings(
        input=input,
        config=cfg,
        timezone=resolve_timezone(cfg.input.timezone),
        import_id=import_id,
        dry_run=dry_run,
        batch_size=batch_size,
        rejects_path=rejects or (summary.parent if summary else Path.cwd()) / _rejects_name(input),
    )
    creds = _credentials(cfg, env, dry_run)
    client = _client(cfg, creds) if creds else None
    try:
        result = run(settings, client)
    finally:
        if client:
            client.close()
    _write(result, settings.rejects_path, summary)
    return result.exit_code


def _rejects_name(input: Path) -> str:
    name = input.name.removesuffix(".gz")
    return f"{Path(name).stem or name}.rejects.csv"


def _credentials(cfg: Config, env: dict[str, str] | None, dry_run: bool) -> Credentials | None:
    if env is None:
        return None
    if dry_run and not env.get(cfg.engage.base_url_env):
        log.warning(
            "dry run without Engage: point definitions are not checked",
            variable=cfg.engage.base_url_env,
        )
        return None
    return credentials_from_env(cfg.engage, env)


def _client(cfg: Config, creds: Credentials) -> EngageClient:
    timeout = httpx.Timeout(cfg.engage.read_timeout, connect=cfg.engage.connect_timeout)
    return EngageClient.connect(
        creds.base_url, creds.api_key.get_secret_value(), timeout=timeout, retry=cfg.retry
    )


def _write(result: RunReport, rejects: Path | None, summary: Path | None) -> None:
    if rejects is not None:
        report.write_rejects(result.rejects, rejects)
    if summary is not None:
        report.write_summary(result.summary, summary)
    report.render(result.summary, sys.stderr)
    print(f"points-import: {result.message}", file=sys.stderr)
    if result.rejects.height and rejects is not None:
        print(
            f"points-import: {result.rejects.height} rejected rows are in {rejects}",
            file=sys.stderr,
        )


def demo(cfg: Config, output: Path) -> int:
    """Import the sample file into the built-in simulator; 0 when it ran as expected."""
    from pipeline.simulator import SimulatorServer

    sample = _sample_file()
    with SimulatorServer(cfg.simulator) as sim:
        env = {cfg.engage.base_url_env: sim.url, cfg.engage.api_key_env: cfg.simulator.api_key}
        code = import_file(
            cfg,
            sample,
            rejects=output / "transactions.rejects.csv",
            summary=output / "summary.json",
            env=env,
        )
        held = len(sim.store.transactions)
    print(
        f"points-import demo: the simulator at {sim.url} now holds {held} transactions; "
        f"summary in {output / 'summary.json'}",
        file=sys.stderr,
    )
    return EXIT_OK if code in (EXIT_OK, EXIT_REJECTS) else code


def _sample_file() -> Path:
    here = Path(__file__).resolve().parent
    for folder in (Path("sample_data"), here.parent / "sample_data", here / "_sample_data"):
        if (folder / SAMPLE).is_file():
            return folder / SAMPLE
    raise ConfigError(
        f"the demo's sample file sample_data/{SAMPLE} is missing; run it from the project folder"
    )
