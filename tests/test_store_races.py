"""Kernels racing on one PostgreSQL class store: a new store opened by many at once, one judgment replaced from two
notebooks at once, a connection the server dropped, a server with no connection left. Each kernel is a store of its
own (its own connections)."""

import threading

import pytest
import sqlalchemy as sa

from rlhf_lab.feedback.store import FeedbackStore


def _together(n: int, work) -> list:
    """Run work(i) in n threads started at one moment; the outcomes ("ok" or the error in words), in order."""
    barrier, out = threading.Barrier(n), [None] * n

    def one(i):
        barrier.wait()
        try:
            work(i)
            out[i] = "ok"
        except Exception as err:  # noqa: BLE001 - every outcome is asserted on
            out[i] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_kernels_opening_a_new_postgresql_store_at_once_all_open_it(postgres):
    for attempt in range(3):
        url = postgres.create_database(f"race_open_{attempt}")
        assert _together(8, lambda i: FeedbackStore(url).close()) == ["ok"] * 8
        with FeedbackStore(url) as store, store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM schema_version").scalar() == 1
            assert store.schema_version == 2


def test_one_judgment_replaced_from_two_notebooks_at_once_is_stored_once(postgres):
    url = postgres.create_database("race_replace")
    with FeedbackStore(url) as teacher:
        ids = teacher.add_responses([dict(prompt=f"p{i}", response=f"r{ab}", model="m", iteration=0)
                                     for i in range(10) for ab in "ab"])
        items = teacher.add_items([ids[i:i + 2] for i in range(0, len(ids), 2)])
        kernels = [FeedbackStore(url), FeedbackStore(url)]
        try:
            for item in items:
                kernels[0].record_pairwise(item, "alice", "A")
                replaced = _together(2, lambda i: kernels[i].record_pairwise(item, "alice", "B", replace=True))
                assert replaced == ["ok"] * 2
                clicks = _together(2, lambda i: kernels[i].record_pairwise(item, "bob", "A"))  # a double click
                assert sorted(clicks)[0] == "ValueError: 'bob' already judged item:%d (judgment %s); call " \
                    "store.undo_last(annotator) or pass replace=True to change it" % (
                        item, teacher.judgment("bob", f"item:{item}")["id"]) and sorted(clicks)[1] == "ok"
        finally:
            for kernel in kernels:
                kernel.close()
        df = teacher.judgments_df()
        assert len(df) == 2 * len(items) and not df.duplicated(["annotator", "item_id"]).any()
        assert [a["choice"] for a in df[df["annotator"] == "alice"]["answer"]] == ["B"] * len(items)


def test_a_connection_the_server_dropped_is_replaced_and_the_judgment_stored(postgres):
    url = postgres.create_database("dropped")
    with FeedbackStore(url) as teacher, FeedbackStore(url) as student:
        ids = teacher.add_responses([dict(prompt="p", response=f"r{i}", model="m", iteration=0) for i in range(4)])
        items = teacher.add_items([ids[:2], ids[2:]])
        student.record_pairwise(items[0], "alice", "A")  # the student's kernel now holds an idle connection
        with teacher.engine.connect() as conn:  # a server restart, an idle timeout: every other session ends
            ended = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                         "pid <> pg_backend_pid() AND datname = current_database()")).scalar()
            conn.commit()
        assert ended >= 1
        assert student.record_pairwise(items[1], "alice", "B") > 0
        assert sorted(teacher.judgments_df()["answer"].map(lambda a: a["choice"])) == ["A", "B"]


def test_a_server_with_no_connection_left_says_so_and_what_to_do(postgres):
    url = postgres.create_database("full")
    with FeedbackStore(url) as admin, admin.engine.connect() as conn:  # a login allowed one connection at a time
        conn.exec_driver_sql("CREATE ROLE one_seat LOGIN PASSWORD 'seat' CONNECTION LIMIT 1")
        conn.exec_driver_sql("GRANT ALL ON ALL TABLES IN SCHEMA public TO one_seat")
        conn.commit()
    seat = sa.engine.make_url(url).set(username="one_seat", password="seat").render_as_string(hide_password=False)
    with FeedbackStore(seat):  # holds its connection, as a kernel's store does
        with pytest.raises(ConnectionError) as refused:
            FeedbackStore(seat)
    words = str(refused.value)
    assert "\n" not in words and "too many connections" in words
    assert "close stores in notebooks you are done with (store.close())" in words and "--max-connections" in words
    assert "is a PostgreSQL server running" not in words


def test_one_annotator_registered_from_two_kernels_at_once_is_registered_once(postgres):
    url = postgres.create_database("race_register")
    kernels = [FeedbackStore(url), FeedbackStore(url)]
    try:
        for n in range(10):
            outcomes = _together(2, lambda i: kernels[i].register_annotator(f"judge{n}", "ai", f"model {i}"))
            assert outcomes == ["ok", "ok"]
        kinds = kernels[0].annotator_kinds()
        assert kinds == {f"judge{n}": "ai" for n in range(10)}
    finally:
        for kernel in kernels:
            kernel.close()


def test_two_instructors_enrolling_and_assigning_at_once_both_succeed_once(postgres):
    """Two TAs run enroll (overlapping rosters) and then assign_items at one moment: no UniqueViolation traceback;
    every student enrolled once, every item given to k students once."""
    from rlhf_lab.feedback.classroom import assign_items, enroll, roster

    url = postgres.create_database("race_enroll")
    with FeedbackStore(url) as teacher:
        ids = teacher.add_responses([dict(prompt=f"p{i}", response=f"r{ab}", model="m", iteration=0)
                                     for i in range(12) for ab in "ab"])
        teacher.add_items([ids[i:i + 2] for i in range(0, len(ids), 2)])
    tas = [FeedbackStore(url), FeedbackStore(url)]
    try:
        rosters = [[f"s{j}" for j in range(0, 8)], [f"s{j}" for j in range(4, 12)]]
        assert _together(2, lambda i: enroll(tas[i], rosters[i])) == ["ok", "ok"]
        assert sorted(roster(tas[0])["student_id"]) == sorted(f"s{j}" for j in range(12))
        assert _together(2, lambda i: assign_items(tas[i], k=2)) == ["ok", "ok"]
        with tas[0].engine.connect() as conn:
            per_item = conn.exec_driver_sql("SELECT item_id, count(*) FROM assignments GROUP BY item_id").all()
        assert len(per_item) == 12 and {n for _, n in per_item} == {2}
    finally:
        for ta in tas:
            ta.close()
