"""The run journal: the plan and batch states on disk, one holder per import, clear errors."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import JournalError
from pipeline.journal import FILENAME, Journal
from pipeline.journal.imports import STALE_AFTER_S
from pipeline.journal.schema import APP, SCHEMA_VERSION, journal_error

ID = "night-1"
TENANT = "https://t.example"
PLAN = [(1, "key-1", 3, "sha-1"), (2, "key-2", 2, "sha-2")]
ELSEWHERE = "another-host.example"


class Clock:
    """A settable clock for the journal's ``clock`` argument."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / FILENAME


@pytest.fixture
def journal(path: Path, clock: Clock) -> Iterator[Journal]:
    with Journal(path, clock=clock) as opened:
        opened.register(ID, "in.csv", "a" * 64, {"batch_size": 3}, TENANT, [3, 1, 2])
        for seq, key, rows, sha in PLAN:
            opened.plan_batches(ID, [(seq, key, rows, sha)])
        yield opened


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a real process that stays alive for the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection, committed."""
    with closing(sqlite3.connect(path)) as db, db:
        return db.execute(statement, params).fetchall()


def hold(path: Path, pid: int, host: str, beat: float, since: str = "2024-05-01T02:00:00+00:00"):
    sql(
        path,
        "UPDATE imports SET holder_pid = ?, holder_host = ?, holder_since = ?, holder_beat = ?"
        " WHERE import_id = ?",
        (pid, host, since, beat, ID),
    )


def holder(path: Path) -> tuple[Any, ...]:
    return sql(path, "SELECT holder_pid, holder_host FROM imports WHERE import_id = ?", (ID,))[0]


# --- creating and reading back ---------------------------------------------------------


def test_a_new_journal_names_its_app_and_schema_version(tmp_path: Path):
    """Journal.open creates the state directory and a file whose meta says app and version."""
    state = tmp_path / "state" / "deeper"
    Journal.open(state).close()
    meta = dict(sql(state / FILENAME, "SELECT key, value FROM meta"))
    assert meta["app"] == APP == "points-import"
    assert meta["schema_version"] == str(SCHEMA_VERSION) == "4"


def test_the_journal_runs_in_wal_mode(journal: Journal, path: Path):
    """WAL is on, so readers never block the run's writes."""
    assert sql(path, "PRAGMA journal_mode") == [("wal",)]


def test_a_registered_plan_comes_back_batch_by_batch(journal: Journal):
    """register() then batches(): each planned batch with its key and rows, nothing sent yet."""
    batches = journal.batches(ID)
    assert list(batches) == [(1, ""), (2, "")]
    first = batches[(1, "")]
    assert (first.key, first.rows, first.state, first.attempts) == ("key-1", 3, "planned", 0)
    assert first.first_sent_at is None and first.source_rows is None
    assert batches[(2, "")].key == "key-2"
    assert journal.counts(ID) == {"planned": 2}


def test_a_registered_import_is_found_with_its_identity(journal: Journal):
    """find(): path, fingerprint, settings, sorted definitions, batches so far, no holder."""
    record = journal.find(ID)
    assert record is not None
    assert (record.input_path, record.input_sha256) == ("in.csv", "a" * 64)
    assert record.settings == {"batch_size": 3}
    assert record.definitions == [1, 2, 3]
    assert (record.batches, record.status) == (2, "planned")
    assert record.holder is None and record.exit_code is None and record.summary is None


def test_a_reopened_journal_still_holds_what_was_recorded(journal: Journal, path: Path):
    """Opening an existing journal is not a fresh start."""
    journal.sending(ID, 1, "")
    with Journal(path) as again:
        assert again.find(ID) is not None
        assert again.batches(ID)[(1, "")].state == "sending"


def test_sending_counts_attempts_and_keeps_the_first_send_time(journal: Journal, clock: Clock):
    """Each sending() is one more attempt; first_sent_at stays the first one's time."""
    clock.now = 1000.0
    journal.sending(ID, 1, "")
    clock.now = 2000.0
    journal.sending(ID, 1, "")
    batch = journal.batches(ID)[(1, "")]
    assert (batch.state, batch.attempts, batch.first_sent_at) == ("sending", 2, 1000.0)
    assert journal.batches(ID)[(2, "")].attempts == 0


def test_sending_is_committed_when_it_returns(journal: Journal, path: Path):
    """Another connection sees 'sending' at once, while this journal is still open."""
    journal.sending(ID, 2, "")
    with Journal(path) as other:
        assert other.batches(ID)[(2, "")].state == "sending"
    assert sql(path, "SELECT state FROM batches WHERE seq = 2") == [("sending",)]


def test_a_batch_s_refused_rows_are_found_by_index_in_old_journals_too(journal: Journal, path):
    """A resumed run looks refused rows up a batch at a time: by an index, which a journal
    written before it existed gets when it is opened."""
    journal.close()
    sql(path, "DROP INDEX refused_by_batch")
    with Journal(path):
        plan = sql(path, "EXPLAIN QUERY PLAN SELECT * FROM refused WHERE import_id = 'i'"
                         " AND seq = 1 AND part = ''")  # fmt: skip
    assert "refused_by_batch" in str(plan)


def test_settle_stores_the_state_the_status_and_the_refused_rows(journal: Journal, path: Path):
    """settle(): state and status on the batch; each refused row with its stage and reason."""
    journal.sending(ID, 1, "")
    journal.settle(ID, 1, "", "done", 202, [(2, "server", "contact missing")], "key-1")
    journal.settle(ID, 2, "", "failed", 400, [(5, "batch", "Engage refused it")], "key-2", "bad")
    batches = journal.batches(ID)
    assert (batches[(1, "")].state, batches[(1, "")].status) == ("done", 202)
    failed = batches[(2, "")]
    assert (failed.state, failed.status, failed.reason) == ("failed", 400, "bad")
    assert journal.refused_in(ID, 1, "") == [(2, "server", "contact missing")]
    assert journal.refused_in(ID, 2, "") == [(5, "batch", "Engage refused it")]
    assert journal.refused_in(ID, 2, "0") == []
    assert journal.refused_count(ID) == 2
    assert sql(path, "SELECT key FROM refused ORDER BY source_row") == [("key-1",), ("key-2",)]
    assert journal.counts(ID) == {"done": 1, "failed": 1}


def test_divide_marks_the_parent_and_plans_its_children(journal: Journal):
    """divide(): the parent takes the state; children are planned, explicit source rows kept."""
    journal.divide(ID, 1, "", "split", [("0", "k0", 2, "s0", None), ("1", "k1", 1, "s1", None)])
    journal.divide(ID, 2, "", "reconciled", [("r", "kr", 1, "sr", [5])])
    batches = journal.batches(ID)
    assert batches[(1, "")].state == "split"
    assert batches[(1, "0")].key == "k0" and batches[(1, "0")].state == "planned"
    assert batches[(1, "1")].rows == 1 and batches[(1, "1")].source_rows is None
    assert batches[(2, "")].state == "reconciled"
    assert batches[(2, "r")].source_rows == [5] and batches[(2, "r")].key == "kr"
    assert journal.counts(ID) == {"split": 1, "reconciled": 1, "planned": 3}


def test_finish_stores_the_summary_exit_code_and_error(journal: Journal):
    """finish(): status, exit code, the whole summary, and its error as the last error."""
    summary = {"status": "aborted", "rows_accepted": 3, "error": "Engage refused the API key"}
    journal.finish(ID, summary, 1, "aborted")
    record = journal.find(ID)
    assert record is not None
    assert (record.status, record.exit_code) == ("aborted", 1)
    assert record.summary == summary
    assert record.last_error == "Engage refused the API key"


def test_imports_lists_every_import_and_find_misses_unknown_ones(journal: Journal, clock: Clock):
    """imports() lists registered imports in creation order; find() of another id is None."""
    clock.now += 60
    journal.register("night-2", "b.csv", "b" * 64, {}, TENANT, None)
    assert [r.import_id for r in journal.imports()] == [ID, "night-2"]
    assert journal.find("night-2").definitions is None  # type: ignore[union-attr]
    assert journal.find("never") is None


# --- one run at a time ---------------------------------------------------------------


def test_acquire_records_this_process_as_the_holder(journal: Journal, path: Path):
    """acquire(): this pid and host hold the import; find() names them."""
    journal.acquire(ID)
    assert holder(path) == (os.getpid(), socket.gethostname())
    record = journal.find(ID)
    assert record is not None and record.holder is not None
    assert record.holder.startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")


def test_the_same_process_may_acquire_again(journal: Journal, path: Path):
    """A second acquire from the holding process is allowed (a resumed run in one process)."""
    journal.acquire(ID)
    with Journal(path) as other:
        other.acquire(ID)
    assert holder(path)[0] == os.getpid()


def test_a_live_holder_on_this_host_blocks_and_is_named(
    journal: Journal, path: Path, live_pid, clock: Clock
):
    """A running process holding the import: JournalError with its pid, host and since."""
    hold(path, live_pid, socket.gethostname(), beat=clock.now - 60)
    with pytest.raises(JournalError) as caught:
        journal.acquire(ID)
    message = str(caught.value)
    assert f"pid {live_pid}" in message
    assert socket.gethostname() in message
    assert "2024-05-01T02:00:00+00:00" in message
    assert holder(path)[0] == live_pid


def test_a_dead_holder_on_this_host_does_not_block(journal: Journal, path: Path, clock: Clock):
    """A holder whose process has ended is taken over, however recent its heartbeat."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    hold(path, proc.pid, socket.gethostname(), beat=clock.now)
    journal.acquire(ID)
    assert holder(path) == (os.getpid(), socket.gethostname())


@pytest.mark.parametrize(("age", "blocks"), [(10.0, True), (STALE_AFTER_S + 1, False)])
def test_a_live_pid_on_this_host_with_a_stale_heartbeat_does_not_block(
    journal: Journal, path: Path, clock: Clock, age: float, blocks: bool
):
    """The reviewer's import blocked for ever: after a kill -9 its pid was reused by a
    long-lived process (pid 1 here). A holder that stopped beating is dead, pid or not."""
    hold(path, 1, socket.gethostname(), beat=clock.now - age)
    if blocks:
        with pytest.raises(JournalError, match="pid 1 on"):
            journal.acquire(ID)
    else:
        journal.acquire(ID)
        assert holder(path) == (os.getpid(), socket.gethostname())


@pytest.mark.parametrize(
    ("age", "blocks"), [(10.0, True), (STALE_AFTER_S - 1, True), (STALE_AFTER_S + 1, False)]
)
def test_a_holder_on_another_host_blocks_until_its_heartbeat_is_stale(
    journal: Journal, path: Path, clock: Clock, age: float, blocks: bool
):
    """Another host's holder can't be asked if it lives: a recent heartbeat blocks, a stale not."""
    hold(path, 4242, ELSEWHERE, beat=clock.now - age)
    if blocks:
        with pytest.raises(JournalError, match=rf"pid 4242 on {ELSEWHERE} since"):
            journal.acquire(ID)
        assert holder(path) == (4242, ELSEWHERE)
    else:
        journal.acquire(ID)
        assert holder(path) == (os.getpid(), socket.gethostname())


def test_a_live_holder_on_another_host_with_our_pid_blocks(
    journal: Journal, path: Path, clock: Clock
):
    """Pids repeat across hosts (pid 1 in every container): same pid elsewhere is not us."""
    hold(path, os.getpid(), ELSEWHERE, beat=clock.now - 1)
    with pytest.raises(JournalError, match=ELSEWHERE):
        journal.acquire(ID)


def test_a_holder_appearing_during_acquire_is_not_overwritten(
    journal: Journal, path: Path, live_pid: int, clock: Clock
):
    """Check and take are one transaction: a concurrent holder makes acquire fail, not win."""
    interleaved: list[str] = []  # "done", or the error the other writer met

    def interleave(statement: str) -> None:
        """Another process takes the hold just before this journal's first write step."""
        if interleaved or not statement.upper().startswith(("BEGIN", "UPDATE", "SAVEPOINT")):
            return
        try:
            with closing(sqlite3.connect(path, timeout=0.5)) as other, other:
                other.execute(
                    "UPDATE imports SET holder_pid = ?, holder_host = ?, holder_since = ?,"
                    " holder_beat = ? WHERE import_id = ?",
                    (live_pid, socket.gethostname(), "2024-05-01T02:00:00+00:00", clock.now, ID),
                )
            interleaved.append("done")
        except sqlite3.Error as exc:
            interleaved.append(repr(exc))

    journal._db.set_trace_callback(interleave)
    try:
        with pytest.raises(JournalError, match=f"pid {live_pid}"):
            journal.acquire(ID)
    finally:
        journal._db.set_trace_callback(None)
    assert interleaved == ["done"]
    assert holder(path)[0] == live_pid


def test_release_ends_our_own_hold(journal: Journal, path: Path):
    """release() after acquire() leaves the import without a holder."""
    journal.acquire(ID)
    journal.release(ID)
    assert holder(path) == (None, None)
    assert journal.find(ID).holder is None  # type: ignore[union-attr]


def test_release_leaves_another_process_hold(journal: Journal, path: Path, live_pid: int):
    """release() by a process that does not hold the import changes nothing."""
    hold(path, live_pid, socket.gethostname(), beat=0.0)
    journal.release(ID)
    assert holder(path) == (live_pid, socket.gethostname())


def test_release_leaves_another_hosts_hold_with_our_pid(journal: Journal, path: Path, clock: Clock):
    """A hold by our pid number on another host is not ours to release."""
    hold(path, os.getpid(), ELSEWHERE, beat=clock.now)
    journal.release(ID)
    assert holder(path) == (os.getpid(), ELSEWHERE)


# --- journals this version can't vouch for ----------------------------------------------


def test_a_garbage_file_is_a_corrupt_journal_and_is_left_alone(path: Path):
    """Not SQLite at all: JournalError saying corrupt; the file is not overwritten."""
    garbage = b"this is not a database, it is a shopping list\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(JournalError, match="corrupt") as caught:
        Journal(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == garbage


def test_another_programs_sqlite_file_is_refused(path: Path):
    """An SQLite file with other tables: 'not a points-import journal', and left as it was."""
    sql(path, "CREATE TABLE foo (bar TEXT)")
    with pytest.raises(JournalError, match="not a points-import journal"):
        Journal(path)
    assert sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("foo",)]


def test_a_journal_of_version_1_is_migrated_and_its_batches_kept(journal: Journal, path: Path):
    """Version 1 had no count of unmatched refusals, no input size, no landed-row index:
    opened, the columns and the table are added (0 for the batches it holds, no tenant for
    the imports), the version says 4, and a settled count is kept."""
    journal.close()
    for statement in [
        "DROP TABLE claims", "DROP TABLE landed_index", "DROP INDEX imports_by_ref",
        "DROP INDEX batches_by_row",
        *[f"ALTER TABLE imports DROP COLUMN {c}"
          for c in ("ref", "tenant", "claimed_through", "forgotten", "input_bytes")],
        *[f"ALTER TABLE batches DROP COLUMN {c}" for c in ("first_row", "last_row", "unmatched")],
        "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
    ]:  # fmt: skip
        sql(path, statement)
    with Journal(path) as again:
        assert {r.unmatched for r in again.batches(ID).values()} == {0}
        again.settle(ID, 1, "", "done", 202, [], "key-1", unmatched=2)
        assert again.batches(ID)[(1, "")].unmatched == 2
        record = again.find(ID)
        assert (record.tenant, record.claimed_through, record.forgotten) == (None, 0, False)
    assert sql(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("4",)]
    assert sql(path, "SELECT COUNT(*) FROM claims") == [(0,)]


def test_a_journal_of_a_newer_version_is_refused(journal: Journal, path: Path):
    """schema_version above ours: JournalError telling to upgrade, never a downgrade."""
    sql(path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(JournalError, match="newer") as caught:
        Journal(path)
    assert "99" in str(caught.value)
    assert sql(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("99",)]


@pytest.mark.parametrize(
    "meta",
    [
        "DELETE FROM meta WHERE key = 'schema_version'",
        "UPDATE meta SET value = 'x' WHERE key = 'schema_version'",
    ],
)
def test_a_journal_with_an_unreadable_schema_version_is_a_journal_error(
    journal: Journal, path: Path, meta: str
):
    """A damaged version in meta: a clear JournalError, not a traceback."""
    sql(path, meta)
    with pytest.raises(JournalError, match="schema"):
        Journal(path)


def test_opening_without_create_needs_an_existing_journal(tmp_path: Path):
    """Journal.open(create=False) on a directory without a journal: JournalError, nothing made."""
    state = tmp_path / "nothing-here"
    with pytest.raises(JournalError, match="no journal"):
        Journal.open(state, create=False)
    assert not state.exists()


def test_a_state_directory_that_cannot_be_made_is_a_journal_error(tmp_path: Path):
    """--state-dir pointing below a file: JournalError, not an OSError traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="can't be created"):
        Journal.open(blocker / "state")


def test_a_read_only_error_says_read_only():
    """SQLite's 'readonly database' becomes a JournalError saying read-only, with the path."""
    path = Path("/srv/state/journal.sqlite")
    error = journal_error(sqlite3.OperationalError("attempt to write a readonly database"), path)
    assert isinstance(error, JournalError)
    assert "read-only" in str(error) and str(path) in str(error)


def test_a_write_refused_by_sqlite_becomes_a_read_only_journal_error(journal: Journal):
    """A real refused write (query_only) surfaces as JournalError, not sqlite3's error."""
    journal._db.execute("PRAGMA query_only = ON")
    with pytest.raises(JournalError, match="read-only") as caught:
        journal.sending(ID, 1, "")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


def test_a_batch_planned_again_must_have_its_key(journal: Journal):
    """plan_batches() of a known batch with another key: the plan changed, JournalError."""
    journal.plan_batches(ID, [(1, "key-1", 3, "sha-1")])  # the same: fine
    with pytest.raises(JournalError, match="planned differently"):
        journal.plan_batches(ID, [(2, "other-key", 2, "sha-2")])


def test_batches_planned_together_are_all_or_nothing(journal: Journal, path: Path):
    """plan_batches() records a piece's batches in one transaction: a changed key among them
    raises and records none of the others."""
    journal.plan_batches(ID, [(3, "key-3", 1, "sha-3"), (4, "key-4", 3, "sha-4")])
    assert sql(path, "SELECT seq, key FROM batches WHERE seq > 2 ORDER BY seq") == [
        (3, "key-3"),
        (4, "key-4"),
    ]
    assert sql(path, "SELECT batches FROM imports") == [(4,)]
    with pytest.raises(JournalError, match="batch 2 had other rows"):
        journal.plan_batches(ID, [(5, "key-5", 3, "sha-5"), (2, "changed", 2, "sha-2")])
    assert sql(path, "SELECT count(*) FROM batches WHERE seq = 5") == [(0,)]
    assert sql(path, "SELECT batches FROM imports") == [(4,)]


def test_the_heartbeat_goes_on_after_a_failed_beat(
    journal: Journal, path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """A beat that fails (the database busy) is retried at the next beat: the hold stays fresh,
    or after STALE_AFTER_S another host would take a live run for dead."""
    monkeypatch.setattr("pipeline.journal.imports.BEAT_EVERY_S", 0.02)
    real = journal._write
    failures = iter([True])

    def flaky():  # the first beat fails, as a locked database would
        if threading.current_thread().name.startswith("journal-beat") and next(failures, False):
            raise JournalError("database is locked")
        return real()

    monkeypatch.setattr(journal, "_write", flaky)
    journal.acquire(ID)
    clock.now += 100.0
    deadline = time.monotonic() + 5
    while sql(path, "SELECT holder_beat FROM imports")[0][0] != clock.now:
        assert time.monotonic() < deadline, "the heartbeat stopped after one failure"
        time.sleep(0.02)
    journal.release(ID)
