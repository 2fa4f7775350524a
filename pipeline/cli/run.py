"""What the commands do around the API (``pipeline.api``): catch signals, show the progress,
tell the outcome on stderr; and the demo."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import structlog

from pipeline import report
from pipeline.api import ImportOptions, execute, with_report_paths
from pipeline.cli.progress import progress_display
from pipeline.config import Config
from pipeline.errors import EXIT_ABORTED, EXIT_OK, EXIT_REJECTS, ConfigError
from pipeline.runner import RunReport

log = structlog.get_logger("pipeline.cli.run")
SAMPLE = "transactions.csv"


def import_file(
    cfg: Config,
    input: Path,
    options: ImportOptions,
    env: dict[str, str] | None,
    quiet: bool = False,
) -> int:
    """Run one import through the API, with signals, the progress display and the outcome on
    stderr (``quiet``: the one-line outcome only); ``env=None`` means no network at all."""
    options = with_report_paths(options, input)
    stop = threading.Event()
    with _graceful(stop), progress_display(quiet) as progress:
        result = execute(cfg, input, options, env, stop, progress,
                         lambda result: _tell(result, options.rejects, quiet))  # fmt: skip
    return result.exit_code


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


def _tell(result: RunReport, rejects: Path | None, quiet: bool) -> None:
    if quiet:
        where = f" (see {rejects})" if result.rejects and result.rejects.height else ""
        print(f"points-import: {result.message}{where}", file=sys.stderr)
        return
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
