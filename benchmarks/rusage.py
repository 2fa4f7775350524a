"""A tiny launcher that measures one command: ``python -S rusage.py REPORT -- COMMAND...``.

It forks, the child execs COMMAND, and the launcher waits for exactly that child with
``os.wait4``, then writes JSON to REPORT: wall seconds (fork to exit), CPU seconds and the
child's peak RSS (``ru_maxrss``). It exits with the child's exit code.

Why a launcher: Linux carries ``ru_maxrss`` across fork and exec, so a child forked straight
from the benchmark would report at least the benchmark's own peak (hundreds of MiB once it has
generated a file). Forked from this small process (a few MiB, no site imports), the child's
peak is its own.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(arguments: list[str]) -> int:
    report, separator, command = arguments[0], arguments[1], arguments[2:]
    if separator != "--" or not command:
        print("usage: rusage.py REPORT -- COMMAND...", file=sys.stderr)
        return 2
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    measured = {
        "exit_code": code,
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": usage.ru_maxrss,
    }
    with open(report, "w", encoding="utf-8") as file:
        json.dump(measured, file)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
