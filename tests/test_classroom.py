"""The class store: roster, assignments and progress on SQLite and on a real PostgreSQL server; per-student logins
that the server itself holds to their own student's judgments (row-level security), attacked with raw SQL."""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from rlhf_lab.feedback.classroom import assign_items, enroll, progress, roster, secure_class, whoami
from rlhf_lab.feedback.store import FeedbackStore


def _class(url, students=6, items=10):
    store = FeedbackStore(url)
    ids = store.add_responses([dict(prompt=f"prompt {i}", response=f"reply {i}{ab}", model="m", iteration=0)
                               for i in range(items) for ab in "ab"])
    item_ids = store.add_items([ids[2 * i:2 * i + 2] for i in range(items)])
    enroll(store, [(f"s{n:02d}", f"Student {n}") for n in range(students)])
    return store, item_ids


def test_roster_assignments_and_progress(store_url, tmp_path):
    store, items = _class(store_url)
    csv = tmp_path / "roster.csv"
    csv.write_text("student_id,display_name\ns00,Again\ns06,New One\n")
    assert enroll(store, csv) == 1  # s00 is kept as it was
    assert roster(store).set_index("student_id").loc["s00", "display_name"] == "Student 0"
    new = assign_items(store, k=3, seed=1)
    per_item = new.groupby("item_id")["student_id"].agg(list)
    assert sorted(per_item.index) == items and all(len(set(s)) == 3 for s in per_item)  # 3 different students
    load = Counter(new["student_id"])
    assert len(load) == 7 and max(load.values()) - min(load.values()) <= 1 and sum(load.values()) == 30
    assert assign_items(store, k=3).empty  # already assigned: nothing changes
    mine = sorted(new.loc[new["student_id"] == "s03", "item_id"])
    assert [it.id for it in store.pending_items("s03")] == mine
    store.record_pairwise(mine[0], "s03", "A")
    store.record_pairwise(items[0] if items[0] not in mine else items[1], "s03", "B")  # an unassigned item too
    row = progress(store).set_index("student_id").loc["s03"]
    assert (row["assigned"], row["judged"], row["remaining"], row["judgments"]) == (len(mine), 1, len(mine) - 1, 2)
    assert [it.id for it in store.pending_items("s03")] == mine[1:]
    assert [it.id for it in store.pending_items("instructor")] == items  # no assignments: every item
    store.close()


@pytest.mark.parametrize("bad,message", [
    (["a", "a"], "repeat"), ([""], "non-empty"), ("missing.csv", "not found")])
def test_bad_rosters_say_how_to_fix_them(store_url, bad, message):
    with FeedbackStore(store_url) as store:
        with pytest.raises(ValueError, match=message):
            enroll(store, bad)
        with pytest.raises(ValueError, match="enroll"):
            assign_items(store)
        assert roster(store).empty


def test_secure_class_needs_postgresql(tmp_path):
    with FeedbackStore(tmp_path / "f.db") as store:
        with pytest.raises(ValueError, match="PostgreSQL"):
            secure_class(store)
        assert whoami(store) is None


def test_a_student_login_reads_and_writes_only_its_own_rows(postgres):
    url = postgres.create_database("class_rls")
    store, items = _class(url, students=3, items=6)
    assign_items(store, k=2, seed=0)
    logins = secure_class(store)
    assert set(logins) == {"s00", "s01", "s02"} and secure_class(store) == {}  # passwords only handed out once
    store.record_pairwise(items[0], "instructor", "A")
    alice, bob = FeedbackStore(logins["s00"]), FeedbackStore(logins["s01"])
    assert whoami(alice) == "s00" and whoami(bob) == "s01" and whoami(store) is None
    bob_item = bob.pending_items("s01")[0].id
    bob.record_pairwise(bob_item, "s01", "B")
    a_item = alice.pending_items("s00")[0].id

    # through the API: a clear refusal, nothing written
    with pytest.raises(PermissionError, match="own student"):
        alice.record_pairwise(a_item, "s01", "A")
    # raw SQL on alice's own connection: the server refuses or sees nothing of others
    engine = alice.engine
    with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO judgments (annotator, created_at, kind, item_id, target, answer, "
                                 "comment) VALUES ('s01', 0, 'pairwise', %s, 'item:999', '{}', '')", (a_item,))
    with engine.begin() as conn:
        assert conn.exec_driver_sql("DELETE FROM judgments WHERE annotator <> 's00'").rowcount == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM judgments").scalar() == 0  # sees none of the others'
        assert conn.exec_driver_sql("SELECT count(*) FROM students").scalar() == 1  # nor the roster
    for attack in ("UPDATE judgments SET annotator = 's00'", "INSERT INTO responses (prompt, text, model, iteration, "
                   "sampling, created_at) VALUES ('p', 't', 'm', 0, '{}', 0)", "UPDATE students SET db_role = NULL",
                   "DELETE FROM assignments", "CREATE TABLE mine (x int)", "ALTER TABLE judgments DISABLE ROW LEVEL "
                   "SECURITY", "SET row_security = off; SELECT count(*) FROM judgments"):
        with pytest.raises(sa.exc.ProgrammingError):
            with engine.begin() as conn:
                conn.exec_driver_sql(attack)
    # her own judgment goes in; the instructor sees everyone's, unchanged
    alice.record_pairwise(a_item, "s00", "A")
    assert alice.judgments_df()["annotator"].tolist() == ["s00"]
    seen = store.judgments_df().set_index("annotator")["item_id"].to_dict()
    assert seen == {"instructor": items[0], "s01": bob_item, "s00": a_item}
    alice.close(), bob.close(), store.close()


def test_a_student_login_creates_nothing_in_schema_public_whatever_the_server_version(postgres):
    """PostgreSQL 14 and older let every role CREATE in schema public (a function there can catch a call of the
    instructor's superuser session: CVE-2018-1058); secure_class takes that away itself, not relying on 15's default."""
    url = postgres.create_database("class_public_schema")
    store, _ = _class(url, students=1, items=2)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("GRANT CREATE ON SCHEMA public TO PUBLIC")  # the default before PostgreSQL 15
    assign_items(store, k=1, seed=0)
    student = sa.create_engine(secure_class(store)["s00"])
    for attack in ("CREATE TABLE public.mine (x int)",
                   "CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT 1::text'"):
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema public"):
            with student.begin() as conn:
                conn.exec_driver_sql(attack)
    with student.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar() == 2  # still reads what it rates
    student.dispose(), store.close()


def test_a_class_under_load_loses_nothing(postgres):
    """A small version of bench/class_load.py: 30 students with their own logins rate 5 items each over a few
    seconds, one worker of 10 students is killed mid-run and restarted; nothing lost or doubled, nobody wrote as
    another, everyone finished."""
    from rlhf_lab.feedback.classload import class_load

    figures = class_load(postgres.create_database("class_load"), students=30, items_each=5, seconds=4.0, kills=1,
                         workers=3, seed=0, timeout_s=120)
    assert figures["judgments"] == 30 * 5 and figures["logged"] <= 150
    assert (figures["lost"], figures["duplicated"], figures["cross_student_writes"], figures["unfinished"]) == (
        0, 0, 0, 0)
    assert figures["kills"] == 1 and figures["cross_refused"] >= 30  # every student tried once, some twice
