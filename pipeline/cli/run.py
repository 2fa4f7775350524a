"""What the commands do, at the edge: resolve paths, read the environment, open the client and
the journal, catch signals, write the reports."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from pipeline import report
from pipeline.cli.progress import progress_display
from pipeline.config import Config, resolve_timezone
from pipeline.credentials import Credentials, credentials_from_env
from pipeline.engage import EngageClient, RetryPolicy
from pipeline.errors import EXIT_ABORTED, EXIT_OK, EXIT_REJECTS, ConfigError
from pipeline.journal import Journal
from pipeline.limits import RateLimiter
from pipeline.runner import RunReport, RunSettings, run

log = structlog.get_logger("pipeline.cli.run")
S = TypeVar("S", bound=BaseModel)
SAMPLE = "transactions.csv"


@dataclass(frozen=True)
class ImportOptions:
    """The flags of ``run`` and ``validate``."""

    rejects: Path | None = None
    summary: Path | None = None
    import_id: str | None = None
    batch_size: int | None = None
    dry_run: bool = False
    state_dir: Path | None = None
    idempotency_window: float | None = None
    concurrency: int | None = None
    max_rps: float | None = None
    allow_twins: bool | None = None
    id_column: str | None = None
    force: bool = False
    confirm: Callable[[str], bool] = field(default=lambda message: False)


def import_file(
    cfg: Config, input: Path, options: ImportOptions, env: dict[str, str] | None
) -> int:
    """Run one import and write its reports; ``env=None`` means no network at all."""
    cfg = _with_overrides(cfg, options)
    settings = RunSettings(
        input=input,
        config=cfg,
        timezone=resolve_timezone(cfg.input.timezone),
        import_id=options.import_id,
        dry_run=options.dry_run,
        batch_size=options.batch_size,
        rejects_path=options.rejects
        or (options.summary.parent if options.summary else Path.cwd()) / _rejects_name(input),
        force=options.force,
        confirm=options.confirm,
    )
    _outputs(settings.rejects_path, options.summary, input)
    creds = _credentials(cfg, env, options.dry_run)
    stop = threading.Event()
    client = open_client(cfg, creds, stop) if creds else None
    journal = Journal.open(cfg.journal.state_dir) if client and not options.dry_run else None
    try:
        with _graceful(stop), progress_display() as progress:
            result = run(settings, client, stop.is_set, journal, progress)
    finally:
        for closing in (client, journal):
            if closing is not None:
                closing.close()
    _write(result, settings.rejects_path, options.summary)
    return result.exit_code


def _with_overrides(cfg: Config, options: ImportOptions) -> Config:
    """The config with the flags given on the command line put in."""
    engage = _set(cfg.engage, concurrency=options.concurrency,
                  max_requests_per_second=options.max_rps)  # fmt: skip
    journal = _set(cfg.journal, state_dir=options.state_dir,
                   idempotency_window=options.idempotency_window)  # fmt: skip
    validation = _set(cfg.validation, allow_twins=options.allow_twins)
    input = _set(cfg.input, id_column=options.id_column)
    return cfg.model_copy(
        update={"engage": engage, "journal": journal, "validation": validation, "input": input}
    )


FLAGS = {"max_requests_per_second": "--max-rps"}  # the rest are named like their setting


def _set(section: S, **flags: object) -> S:
    """``section`` with the flags given, checked by its rules (no NaN or infinity either)."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "a flag"
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        raise ConfigError(f"{flag}: {error['msg']}, not {error['input']!r}") from None


def _outputs(rejects: Path | None, summary: Path | None, input: Path) -> None:
    """The reports can be written, each to a file of its own: known before anything is sent."""
    _writable(rejects, "rejects report", input)
    _writable(summary, "summary", input)
    if summary and rejects and summary.resolve() == rejects.resolve():
        raise ConfigError(f"--rejects and --summary are the same file: {summary}")


def _writable(path: Path | None, what: str, input: Path) -> None:
    """Known before anything is sent: a report that can't be written is a usage error, and
    one that would replace the input, or something that is not a file, too."""
    if path is None:
        return
    if path.exists() and (not path.is_file() or (input.exists() and path.samefile(input))):
        raise ConfigError(f"the {what} would replace {path}, which is the input or not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"the {what} can't go to {path}: {exc.strerror}") from None
    if path.is_dir() or not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ConfigError(f"the {what} can't be written to {path}")


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


def open_client(
    cfg: Config, creds: Credentials, stop: threading.Event | None = None
) -> EngageClient:
    import httpx  # here: a run without Engage does not need it

    timeout = httpx.Timeout(cfg.engage.read_timeout, connect=cfg.engage.connect_timeout)
    limiter = RateLimiter(cfg.engage.max_requests_per_second)
    return EngageClient.connect(
        creds.base_url,
        creds.api_key.get_secret_value(),
        timeout=timeout,
        retry=RetryPolicy(**cfg.retry.model_dump()),
        stop=stop,
        limiter=limiter,
        connections=cfg.engage.concurrency,
    )


@contextmanager
def _graceful(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM: take no new batch, let the one in flight finish; a second SIGINT
    stops at once (the journal stays consistent: its last batch is left in doubt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        log.warning(
            "stopping: no new batches; the request in flight is finished first",
            signal=signal.Signals(signum).name,
        )

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write(result: RunReport, rejects: Path | None, summary: Path | None) -> None:
    try:
        if rejects is not None and result.rejects is not None:
            report.write_rejects(result.rejects, rejects)
        if summary is not None:
            report.write_summary(result.summary, summary)
    finally:  # the outcome is told, written or not
        report.render(result.summary, sys.stderr)
        print(f"points-import: {result.message}", file=sys.stderr)
    if result.rejects is not None and result.rejects.height and rejects is not None:
        stages = result.rejects.by_stage()
        pending = stages["batch"] + stages["unsent"] if result.exit_code == EXIT_ABORTED else 0
        print(
            f"points-import: {result.rejects.height} rows not accepted are in {rejects}"
            + (f"; {pending} of them not settled (in doubt or unsent): run the same command"
               " again to settle them, do not import them from the report" if pending else ""),
            file=sys.stderr,
        )  # fmt: skip


def demo(cfg: Config, output: Path) -> int:
    """Import the sample file into the built-in simulator; 0 when it ran as expected."""
    from pipeline.simulator import SimulatorServer

    sample = _sample_file()
    options = ImportOptions(
        rejects=output / "transactions.rejects.csv",
        summary=output / "summary.json",
        state_dir=output / "state",
    )
    with SimulatorServer(cfg.simulator) as sim:
        env = {cfg.engage.base_url_env: sim.url, cfg.engage.api_key_env: cfg.simulator.api_key}
        _forget(output / "state")
        code = import_file(cfg, sample, options, env)
        held = len(sim.store.transactions)
    print(
        f"points-import demo: the simulator at {sim.url} now holds {held} transactions; "
        f"summary in {output / 'summary.json'}",
        file=sys.stderr,
    )
    return EXIT_OK if code in (EXIT_OK, EXIT_REJECTS) else code


def _forget(state_dir: Path) -> None:
    """The demo's simulator starts empty each time, so its journal must too."""
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (state_dir / name).unlink(missing_ok=True)


def _sample_file() -> Path:
    here = Path(__file__).resolve().parent
    for folder in (Path("sample_data"), here.parent / "sample_data", here / "_sample_data"):
        if (folder / SAMPLE).is_file():
            return folder / SAMPLE
    raise ConfigError(
        f"the demo's sample file sample_data/{SAMPLE} is missing; run it from the project folder"
    )
