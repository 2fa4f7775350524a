"""The Python API: one import as a function call, for Airflow, Dagster or a script.

``run_import`` does what ``points-import run`` does, and the command line calls it: it reads
the key from the environment, writes the rejects report and the summary, keeps the journal,
and returns a ``Summary``. It prints nothing and never exits: what the command maps to exit
code 2 is raised (``ConfigError``, ``InputError``, ``JournalError``), a run that stopped
early (exit 1) raises ``ImportAborted`` carrying its summary (its reports are written), and a
run that finished returns, with ``exit_code`` 0, or 3 when rows need a look.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from pipeline import metrics, notify, report
from pipeline.config import Config, load_config, resolve_timezone
from pipeline.credentials import Credentials, credentials_from_env
from pipeline.engage import EngageClient, RetryPolicy
from pipeline.errors import (
    EXIT_ABORTED,
    EXIT_OK,
    ConfigError,
    EngageError,
    InputError,
    JournalError,
    PipelineError,
    ReportError,
)
from pipeline.journal import Journal
from pipeline.limits import RateLimiter
from pipeline.runner import Progress, RunReport, RunSettings, run

__all__ = ["ImportAborted", "Summary", "run_import"]
log = structlog.get_logger("pipeline.api")
S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True)
class Summary:
    """What one import did: the main counts typed, every field of the summary JSON in
    ``data``."""

    import_id: str
    status: str  # completed, dry run, aborted, interrupted
    exit_code: int  # as the command's: 0 all in, 3 some rows need a look, 1 stopped early
    message: str  # the one-line outcome
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rows_held_back: int
    rows_already_landed: int
    rejects_path: Path | None
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, result: RunReport) -> Summary:
        data = result.summary
        rejects = data.get("rejects_path")
        return cls(
            import_id=data["import_id"],
            status=data["status"],
            exit_code=result.exit_code,
            message=result.message,
            rows_read=data["rows_read"],
            rows_accepted=data["rows_accepted"],
            rows_rejected=data["rows_rejected"],
            rows_held_back=data.get("rows_held_back", 0),
            rows_already_landed=data.get("rows_already_landed", 0),
            rejects_path=Path(rejects) if rejects else None,
            data=data,
        )


class ImportAborted(PipelineError):
    """The import stopped before every row was settled (Engage unreachable after retries,
    a refused key, a signal): run the same import again to finish it. Its reports are
    written; ``summary`` says what was done (None: it stopped before it began, e.g. Engage
    unreachable when its point definitions were read)."""

    exit_code = EXIT_ABORTED

    def __init__(self, message: str, summary: Summary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class ImportOptions:
    """The flags of ``run`` and ``validate``: None keeps the config's value."""

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
    metrics_file: Path | None = None


def run_import(
    input: str | Path,
    config: Config | str | Path | None = None,
    *,
    rejects: str | Path | None = None,
    summary: str | Path | None = None,
    dry_run: bool = False,
    offline: bool = False,
    import_id: str | None = None,
    batch_size: int | None = None,
    state_dir: str | Path | None = None,
    idempotency_window: float | None = None,
    concurrency: int | None = None,
    max_rps: float | None = None,
    allow_twins: bool | None = None,
    id_column: str | None = None,
    metrics_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
) -> Summary:
    """Import ``input`` into Engage (the base URL and key from ``env``, by default the
    process's environment), as ``points-import run`` does; ``offline``: validate only, no
    network (``points-import validate``). ``config``: a ``Config``, a TOML file, or None for
    the defaults. ``stop``: set it to stop the run as a signal would (no new batch is sent).
    """
    cfg = config if isinstance(config, Config) else load_config(_path(config))
    options = ImportOptions(
        rejects=_path(rejects),
        summary=_path(summary),
        import_id=import_id,
        batch_size=batch_size,
        dry_run=dry_run or offline,
        state_dir=_path(state_dir),
        idempotency_window=idempotency_window,
        concurrency=concurrency,
        max_rps=max_rps,
        allow_twins=allow_twins,
        id_column=id_column,
        metrics_file=_path(metrics_file),
    )
    environ = None if offline else dict(os.environ if env is None else env)
    try:
        result = execute(cfg, Path(input), options, environ, stop or threading.Event())
    except PipelineError as exc:
        if exc.exit_code == EXIT_ABORTED and not isinstance(exc, ImportAborted):
            raise ImportAborted(_said(exc)) from exc  # before any row: nothing to report
        raise
    return _summarized(result)


def execute(
    cfg: Config,
    input: Path,
    options: ImportOptions,
    env: dict[str, str] | None,
    stop: threading.Event,
    progress: Progress | None = None,
    tell: Callable[[RunReport], None] = lambda result: None,
) -> RunReport:
    """Run one import, write its reports, ``tell`` its outcome (written or not), record its
    metrics and send the notifications its outcome calls for (a failure too, then raised)."""
    options = with_report_paths(options, input)
    told = env if env is not None else dict(os.environ)
    try:
        result = _import_report(cfg, input, options, env, stop, progress)
    except Exception as exc:
        _outcome(cfg, options, None, getattr(exc, "exit_code", EXIT_ABORTED), _kind(exc), told)
        raise
    failed: Exception | None = None
    try:
        _write_reports(result, options)
    except Exception as exc:
        failed = exc
        raise
    finally:
        (progress or Progress()).finished()
        tell(result)
        code = getattr(failed, "exit_code", EXIT_ABORTED) if failed else result.exit_code
        said = _kind(failed) if failed else result.message
        _outcome(cfg, options, result.summary, code, said, told)
    return result


def failed_early(exc: PipelineError, metrics_file: Path | None, env: Mapping[str, str]) -> None:
    """A run that failed before its config was read (a bad config file): told to the
    notification URLs of the environment and the metrics file given, as far as known."""
    options = ImportOptions(metrics_file=metrics_file)
    _outcome(Config(), options, None, exc.exit_code, _kind(exc), env)


def _outcome(
    cfg: Config,
    options: ImportOptions,
    summary: dict[str, Any] | None,
    code: int,
    said: str,
    env: Mapping[str, str],
) -> None:
    """The metrics, and a notification unless every row is in (exit 0); not for a dry run
    or a validation (a check of a file is not the night's import)."""
    if options.dry_run:
        return
    try:
        file = options.metrics_file or cfg.metrics.file
        metrics.record(summary, code, file, cfg.metrics.pushgateway, cfg.metrics.job)
    except Exception as exc:  # a metrics sink down is no reason to fail an import
        log.warning("metrics not recorded", error=" ".join(str(exc).split()))
    if code != EXIT_OK:
        urls = [*cfg.alerts.notify, *env.get(cfg.alerts.notify_env, "").split()]
        notify.notify(urls, *notify.message(summary, said, code))


KINDS = (
    (ConfigError, "the config, a flag or the environment is wrong"),
    (InputError, "the input file can't be read as a whole"),
    (JournalError, "the run journal can't be used"),
    (EngageError, "Engage could not be reached or refused the requests"),
    (ReportError, "the rejects report or the summary could not be written"),
)


def _kind(exc: BaseException) -> str:
    """What went wrong, for a notification: the kind, never the message (an error can quote
    the input: a header line that is a row)."""
    found = next((said for kind, said in KINDS if isinstance(exc, kind)), None)
    return f"{found or 'internal error'} ({type(exc).__name__}): see the run's log"


def _said(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def with_report_paths(options: ImportOptions, input: Path) -> ImportOptions:
    """The rejects report's path given, or its default: next to the summary, else here."""
    folder = options.summary.parent if options.summary else Path.cwd()
    return replace(options, rejects=options.rejects or folder / _rejects_name(input))


def _summarized(result: RunReport) -> Summary:
    """The run's summary; ``ImportAborted`` if it stopped early."""
    found = Summary.of(result)
    if result.exit_code == EXIT_ABORTED:
        raise ImportAborted(found.message, found)
    return found


def _import_report(
    cfg: Config,
    input: Path,
    options: ImportOptions,
    env: dict[str, str] | None,
    stop: threading.Event,
    progress: Progress | None = None,
) -> RunReport:
    """Run one import (its reports not written yet); ``env=None`` means no network at all."""
    cfg = _with_overrides(cfg, options)
    settings = RunSettings(
        input=input,
        config=cfg,
        timezone=resolve_timezone(cfg.input.timezone),
        import_id=options.import_id,
        dry_run=options.dry_run,
        batch_size=None if options.batch_size is None else cfg.batching.batch_size,
        rejects_path=with_report_paths(options, input).rejects,
        force=options.force,
        confirm=options.confirm,
    )
    _outputs(settings.rejects_path, options.summary, input)
    creds = _credentials(cfg, env, options.dry_run)
    client = open_client(cfg, creds, stop) if creds else None
    journal = Journal.open(cfg.journal.state_dir) if client and not options.dry_run else None
    if journal is not None and in_container() and _on_root_filesystem(cfg.journal.state_dir):
        log.warning(
            "the journal is on the container's own filesystem: it is lost with the container,"
            " and a re-run can then neither resume this import nor know the rows it landed;"
            " put the state folder on a volume (the image's /data, a PersistentVolumeClaim)",
            state_dir=str(cfg.journal.state_dir),
        )
    try:
        result = run(settings, client, stop.is_set, journal, progress or Progress())
    finally:
        for closing in (client, journal):
            if closing is not None:
                closing.close()
    if client is not None:
        result.summary.update(retries=client.retries, throttled=client.throttled)
    return result


def _write_reports(result: RunReport, options: ImportOptions) -> None:
    """The rejects report (unless the import's rows were forgotten) and the summary JSON."""
    if options.rejects is not None and result.rejects is not None:
        report.write_rejects(result.rejects, options.rejects)
    if options.summary is not None:
        report.write_summary(result.summary, options.summary)


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


def in_container() -> bool:
    """In a Kubernetes pod, whose own filesystem goes with it (the image's /data is a
    volume under Docker already)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _on_root_filesystem(folder: Path) -> bool:
    try:
        return os.stat(folder).st_dev == os.stat("/").st_dev
    except OSError:
        return False


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _with_overrides(cfg: Config, options: ImportOptions) -> Config:
    """The config with the flags given put in."""
    engage = _set(cfg.engage, concurrency=options.concurrency,
                  max_requests_per_second=options.max_rps)  # fmt: skip
    journal = _set(cfg.journal, state_dir=options.state_dir,
                   idempotency_window=options.idempotency_window)  # fmt: skip
    validation = _set(cfg.validation, allow_twins=options.allow_twins)
    input = _set(cfg.input, id_column=options.id_column)
    batching = _set(cfg.batching, batch_size=options.batch_size)
    update = {"engage": engage, "journal": journal, "validation": validation, "input": input,
              "batching": batching}  # fmt: skip
    return cfg.model_copy(update=update)


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
