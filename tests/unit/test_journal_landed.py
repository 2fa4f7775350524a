"""The journal's landed-row index: claims, what a holder's state is, tenants, forgetting,
and two imports claiming at once (a real SQLite file)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.journal import Journal
from pipeline.journal.landed import Claimed, Found

TENANT = "https://t.example"


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite", clock=lambda: 1_800_000_000.0) as opened:
        yield opened


def register(journal: Journal, import_id: str, tenant: str = TENANT) -> None:
    journal.register(import_id, f"{import_id}.csv", "0" * 64, {}, tenant)


def claim_all(journal: Journal, import_id: str, rows: dict[int, int]) -> Found:
    """Claim ``rows`` (source row -> identity) for ``import_id``; what it found before."""
    seen: list[Found] = []

    def decide(found: Found) -> Claimed:
        seen.append(found)
        return Claimed(rows=[(identity, row) for row, identity in rows.items()])

    journal.claim(import_id, list(rows.values()), (min(rows), max(rows)), decide)
    return seen[0]


def holders(journal: Journal, import_id: str, *identities: int) -> set[tuple]:
    """What ``import_id`` finds of ``identities``, claiming nothing."""
    seen: list[Found] = []
    journal.claim(import_id, list(identities), (1, 1), lambda f: seen.append(f) or Claimed(), False)
    return set(seen[0].holders)


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

    def decide(found: Found) -> Claimed:
        return Claimed(rows=[(102, 2)], held=[(1, "outcome unknown: …")])

    journal.claim("b", [101, 102], (1, 2), decide)
    assert journal.held_count("b") == 1
    assert journal.refused_count("b") == 0  # held back is not refused by Engage
    seen: list[Found] = []
    journal.claim("b", [101], (1, 2), lambda f: seen.append(f) or Claimed(), False)
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
        found = {h[1] for h in holders(journal, "new", *ids.values())}
        assert found == {"open", "new"}


def test_two_imports_claiming_the_same_rows_at_once_never_both_get_them(tmp_path: Path):
    """The look-up and the claim are one transaction: of two journals (two processes) on one
    file racing for the same identities, one claims them and the other sees its claim."""
    path = tmp_path / "journal.sqlite"
    with Journal(path) as setup:
        register(setup, "a")
        register(setup, "b")
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def race(import_id: str) -> None:
        with Journal(path) as journal:
            start.wait()
            for identity in range(1, 201):

                def decide(found: Found, identity: int = identity) -> Claimed:
                    if any(h[1] != import_id for h in found.holders):
                        return Claimed()
                    claimed.setdefault(import_id, []).append(identity)
                    return Claimed(rows=[(identity, identity)])

                journal.claim(import_id, [identity], (identity, identity), decide)

    threads = [threading.Thread(target=race, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a, b = set(claimed.get("a", [])), set(claimed.get("b", []))
    assert not a & b
    assert a | b == set(range(1, 201))
