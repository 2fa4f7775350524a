"""The run's progress display: the settling phase on a terminal and in a log."""

from __future__ import annotations

import io

import structlog
from rich.console import Console
from rich.progress import Progress, TextColumn

from pipeline.cli.progress import EVERY_S, _Bar, _Logged


def test_the_bar_counts_the_accounts_read_while_settling():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with Progress(TextColumn("{task.description}"), console=console) as bar:
        shown = _Bar(bar)
        shown.settling(3, 1894)
        for _ in range(412):
            shown.account_read()
        [_, settling] = bar.tasks
        assert settling.description == "settling 3 batches in doubt: 412/1,894 accounts read"
        assert (settling.completed, settling.total) == (412, 1894)


def test_off_a_terminal_a_line_tells_the_settling_every_few_seconds():
    logged = _Logged()
    logged.settling(2, 10)
    with structlog.testing.capture_logs() as lines:
        logged.last -= EVERY_S  # the last line was a while ago
        logged.account_read()  # told
        logged.account_read()  # not: a line was just written
        logged.last -= EVERY_S
        logged.account_read()  # told
    assert [line["settling"] for line in lines] == [
        "settling 2 batches in doubt: 1/10 accounts read",
        "settling 2 batches in doubt: 3/10 accounts read",
    ]
