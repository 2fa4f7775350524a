"""The journal's landed-row index: claims, what a holder's state is, tenants, forgetting,
and two imports claiming at once (a real SQLite file)."""

from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
import pytest

from pipeline.journal import Journal
from pipeline.journal.landed import CLAIMED, Claimed, Found

TENANT = "https://t.example"


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite", clock=lambda: 1_800_000_000.0) as opened:
        yield opened


def register(journal: Journal, import_id: str, tenant: str = TENANT) -> None:
    journal.register(import_id, f"{import_id}.csv", "0" * 64, {}, tenant)


def ids(*identities: int) -> pl.Series:
    return pl.Series(identities, dtype=pl.Int64)


def claimed(pairs: list[tuple[int, int]], held: list[tuple[int, str]] | None = None) -> Claimed:
    """Claims of (identity, source row), and rows held back."""
    return Claimed(pl.DataFrame(pairs, schema=CLAIMED, orient="row"), held or [])


def claim_all(journal: Journal, import_id: str, rows: dict[int, int]) -> None:
    """Claim ``rows`` (source row -> identity) for ``import_id``."""
    pairs = [(identity, row) for row, identity in rows.items()]
    journal.claim(import_id, ids(*rows.values()), (min(rows), max(rows)), lambda f: claimed(pairs))


def look(journal: Journal, import_id: str, *identities: int) -> Found:
    """What ``import_id`` finds of ``identities``, claiming nothing."""
    seen: list[Found] = []
    journal.claim(
        import_id, ids(*identities), (1, 1), lambda f: seen.append(f) or claimed([]), False
    )
    return seen[0]


def holders(journal: Journal, import_id: str, *identities: int) -> set[tuple]:
    return set(look(journal, import_id, *identities).holders.rows())


def test_a_claimed_row_is_unsent_then_in_doubt_then_landed_or_refused(journal: Journal):
    """A holder's state follows its batch: claimed (no batch yet, or planned) is unsent, sent
    is in doubt, answered is landed, unless Engage refused the row."""
    register(journal, "a")
    register(journal, "b")
    claim_all(journal, "a", {1: 101, 2: 102, 3: 103})
    assert holders(journal, "b", 101) == {(101, "a", 1, "unsent")}
    journal.plan_batches("a", [(1, "k1", 2, "s1", 1, 2)])
    assert holders(journal, "b", 101, 103) == {(101, "a", 1, "unsent"), (103, "a", 3, "unsent")}
    journal.sending("a", 1, "")
    assert holders(journal, "b", 101) == {(101, "a", 1, "in_doubt")}
    journal.settle("a", 1, "", "done", 202, [(2, "server", "no such contact")], "k1")
    assert holders(journal, "b", 101, 102) == {(101, "a", 1, "landed"), (102, "a", 2, "refused")}


def test_a_split_batch_with_a_half_in_flight_is_in_doubt(journal: Journal):
    """Any part of the row's batch sent and unanswered: the row may be in Engage."""
    register(journal, "a")
    register(journal, "b")
    claim_all(journal, "a", {1: 101, 2: 102})
    journal.plan_batches("a", [(1, "k1", 2, "s1", 1, 2)])
    journal.divide("a", 1, "", "split", [("0", "k10", 1, "s", None), ("1", "k11", 1, "s", None)])
    journal.settle("a", 1, "0", "done", 202, [], "k10")
    journal.sending("a", 1, "1")
    assert holders(journal, "b", 101) == {(101, "a", 1, "in_doubt")}


def test_a_finished_imports_rows_are_landed_but_those_refused(journal: Journal):
    register(journal, "a")
    register(journal, "b")
    claim_all(journal, "a", {1: 101, 2: 102})
    journal.plan_batches("a", [(1, "k1", 2, "s1", 1, 2)])
    journal.settle("a", 1, "", "done", 202, [(2, "server", "no")], "k1")
    journal.finish("a", {}, 3, "finished")
    assert holders(journal, "b", 101, 102) == {(101, "a", 1, "landed"), (102, "a", 2, "refused")}


def test_another_tenants_rows_are_not_seen(journal: Journal):
    """The index is per Engage tenant: a row landed in a test tenant is new to production."""
    register(journal, "a", "https://test.example")
    register(journal, "b")
    claim_all(journal, "a", {1: 101})
    assert holders(journal, "b", 101) == set()


def test_held_rows_are_kept_with_their_reason_and_counted(journal: Journal):
    register(journal, "b")

    decided = claimed([(102, 2)], [(1, "outcome unknown: …")])
    journal.claim("b", ids(101, 102), (1, 2), lambda found: decided)
    assert journal.held_count("b") == 1
    assert journal.refused_count("b") == 0  # held back is not refused by Engage
    seen: list[Found] = []
    journal.claim("b", ids(101), (1, 2), lambda f: seen.append(f) or claimed([]), False)
    assert seen[0].held_before == [(1, "outcome unknown: …")]
    assert journal.find("b").claimed_through == 2


def test_a_finished_import_is_forgotten_after_remember_days(tmp_path: Path):
    """Its rows leave the index (another import may send them again); an unfinished one's
    stay, whatever its age (they may be in flight)."""
    now = [1_800_000_000.0]
    with Journal(tmp_path / "journal.sqlite", clock=lambda: now[0]) as journal:
        ids = {"old": 1, "open": 2, "new": 3}
        for name, identity in ids.items():
            register(journal, name)
            claim_all(journal, name, {1: identity})
        journal.finish("old", {}, 0, "finished")
        now[0] += 10 * 86400
        journal.finish("new", {}, 0, "finished")
        assert journal.forget(5) == ["old"]
        assert journal.forget(5) == []
        assert journal.find("old").forgotten
    with Journal(tmp_path / "journal.sqlite") as later:  # a later run
        found = {h[1] for h in holders(later, "new", *ids.values())}
    assert found == {"open", "new"}


def test_two_imports_claiming_the_same_rows_at_once_never_both_get_them(tmp_path: Path):
    """The look-up and the claim are one transaction: of two journals (two processes) on one
    file racing for the same identities, one claims them and the other sees its claim."""
    path = tmp_path / "journal.sqlite"
    with Journal(path) as setup:
        register(setup, "a")
        register(setup, "b")
    won: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def race(import_id: str) -> None:
        with Journal(path) as journal:
            start.wait()
            for identity in range(1, 201):

                def decide(found: Found, identity: int = identity) -> Claimed:
                    if (found.holders["import_id"] != import_id).any():
                        return claimed([])
                    won.setdefault(import_id, []).append(identity)
                    return claimed([(identity, identity)])

                journal.claim(import_id, ids(identity), (identity, identity), decide)

    threads = [threading.Thread(target=race, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a, b = set(won.get("a", [])), set(won.get("b", []))
    assert not a & b
    assert a | b == set(range(1, 201))


@pytest.mark.parametrize("max_runs", [8, 1])
def test_claims_stored_as_runs_are_found_by_later_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_runs: int
):
    """Past COMPACT_AT rows, a claiming run stores them as a sorted run (past MAX_RUNS, every
    run merged into one); a later run reads the runs (and the claims after them) and finds
    every row, but a forgotten import's."""
    monkeypatch.setattr("pipeline.journal.landed.COMPACT_AT", 5)
    monkeypatch.setattr("pipeline.journal.landed.MAX_RUNS", max_runs)
    path = tmp_path / "journal.sqlite"
    clock = [1_800_000_000.0]
    with Journal(path, clock=lambda: clock[0]) as journal:
        for name, first in (("a", 1), ("b", 101)):
            register(journal, name)
            for piece in range(4):  # 3 rows a piece
                start = first + 3 * piece
                claim_all(journal, name, {row: 1000 + row for row in range(start, start + 3)})
        journal.finish("a", {}, 0, "finished")
        assert sql_count(path, "landed_index") >= 1
        clock[0] += 100 * 86400
        register(journal, "c")
        claim_all(journal, "c", {1: 5000})
        assert journal.forget(30) == ["a"]
        claim_all(journal, "c", {row: 6000 + row for row in range(2, 8)})  # compacts again
    wanted = [1000 + r for r in (1, 12, 101, 112)] + [5000, 6007]
    with Journal(path) as later:
        register(later, "d")
        found = {(h[1], h[2]) for h in holders(later, "d", *wanted)}
    assert found == {("b", 101), ("b", 112), ("c", 1), ("c", 7)}


def sql_count(path: Path, table: str) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_every_holder_of_an_identity_is_found_in_the_stored_index_and_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A row Engage refused for one import and another import claimed again: both holders,
    whether their claims are in the stored (compacted) index or recorded after it."""
    monkeypatch.setattr("pipeline.journal.landed.COMPACT_AT", 2)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        for name in ("a", "b", "c"):
            register(journal, name)
        claim_all(journal, "a", {1: 7, 2: 8})  # compacted: in the stored index
        journal.plan_batches("a", [(1, "k1", 2, "s1", 1, 2)])
        journal.settle("a", 1, "", "done", 202, [(1, "server", "no such contact")], "k1")
        claim_all(journal, "b", {5: 7})  # after it
    with Journal(path) as later:
        assert holders(later, "c", 7, 8) == {
            (7, "a", 1, "refused"), (8, "a", 2, "landed"), (7, "b", 5, "unsent")
        }  # fmt: skip


def test_a_claim_that_fails_records_nothing_and_the_next_one_works(journal: Journal):
    """The sorting raising mid-transaction: no claim, no held row, no claimed_through; the
    index in memory is read again, so the next claim sees only what was committed."""
    register(journal, "a")
    register(journal, "b")

    def broken(found: Found) -> Claimed:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        journal.claim("a", ids(7), (1, 1), broken)
    assert journal.find("a").claimed_through == 0
    assert holders(journal, "b", 7) == set()
    claim_all(journal, "a", {1: 7})
    assert holders(journal, "b", 7) == {(7, "a", 1, "unsent")}


def test_a_claim_after_the_newest_were_forgotten_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Claims stored as a run, then every claim forgotten: a new claim's id is never one the
    stored run said it covers (ids are not reused), so a later run finds it."""
    monkeypatch.setattr("pipeline.journal.landed.COMPACT_AT", 2)
    path, clock = tmp_path / "journal.sqlite", [1_800_000_000.0]
    with Journal(path, clock=lambda: clock[0]) as journal:
        register(journal, "a")
        claim_all(journal, "a", {1: 1, 2: 2, 3: 3})  # stored as a run
        journal.finish("a", {}, 0, "finished")
        clock[0] += 2 * 86400
        assert journal.forget(1) == ["a"]
        register(journal, "b")
        claim_all(journal, "b", {1: 77})
    with Journal(path) as later:
        register(later, "c")
        assert holders(later, "c", 77) == {(77, "b", 1, "unsent")}


def test_two_processes_storing_runs_at_once_do_not_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each journal (process) read the index before the other stored a run: the next run's
    number comes from the journal, not from what one process read."""
    monkeypatch.setattr("pipeline.journal.landed.COMPACT_AT", 2)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as one, Journal(path) as two:
        register(one, "a")
        register(one, "b")
        look(one, "a", 1)  # both read the (empty) index
        look(two, "b", 1)
        claim_all(one, "a", {1: 101, 2: 102})  # stores run 0
        claim_all(two, "b", {1: 201, 2: 202})  # would store run 0 again
    with Journal(path) as later:
        register(later, "c")
        assert {h[1] for h in holders(later, "c", 101, 201)} == {"a", "b"}
