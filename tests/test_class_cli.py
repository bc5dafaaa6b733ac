"""`rlhf-lab class serve | create | progress` and `feedback simulate --annotators 0`, as an instructor runs them:
one clear line and exit 2 for bad input, the students' logins in a private file, progress that counts."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from rlhf_lab.cli import main
from rlhf_lab.feedback.classroom import whoami
from rlhf_lab.feedback.store import FeedbackStore


def test_an_instructor_sets_up_a_class(postgres, tmp_path, capsys):
    url = postgres.create_database("class_cli")
    assert main(["feedback", "simulate", "--store", url, "--annotators", "0", "--items", "6", "--model",
                 "corpus"]) == 0
    printed = capsys.readouterr().out
    assert "6 pairwise items" in printed and postgres.password not in printed  # the URL is shown without it
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,display_name\nada,Ada L.\nbob,Bob\ncy,Cy\n")
    logins = tmp_path / "logins.csv"
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "2", "--logins",
                 str(logins)]) == 0
    assert "3 new students enrolled; 6 items assigned to 2 students each" in capsys.readouterr().out
    assert stat.S_IMODE(logins.stat().st_mode) == 0o600
    rows = {r["student_id"]: r for r in csv.DictReader(logins.open(encoding="utf-8-sig"))}
    assert set(rows) == {"ada", "bob", "cy"} and rows["ada"]["display_name"] == "Ada L."
    with FeedbackStore(rows["bob"]["url"]) as bob:
        assert whoami(bob) == "bob" and len(bob.pending_items("bob")) == 4  # 6 items x 2 / 3 students
        bob.record_pairwise(bob.pending_items("bob")[0].id, "bob", "A")
    assert main(["class", "progress", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "1 of 12 assigned judgments made; 0 of 3 students done" in out
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--logins", str(logins)]) == 0
    assert "0 new students" in capsys.readouterr().out  # and no new logins:
    assert len(logins.read_text(encoding="utf-8-sig").splitlines()) == 4


@pytest.mark.parametrize("argv,message", [
    (["class", "progress", "--store", "runs/class.db"], "is the class store's URL"),
    (["class", "create", "--store", "sqlite:///{tmp}/x.db", "--roster", "{tmp}/none.csv"], "roster"),
    (["class", "serve", "--dir", "{tmp}/db", "--allow", "campus"], "not a network"),
])
def test_bad_input_gets_one_line_and_exit_2(argv, message, tmp_path, capsys, postgres):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[1] == "serve":  # a folder the server's user can reach (pytest's own tmp is root-only)
        argv[3] = tempfile.mkdtemp(prefix="rlhf-lab-serve-")
    try:
        assert main(argv) == 2
    finally:
        if argv[1] == "serve":
            shutil.rmtree(argv[3], ignore_errors=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_serve_starts_a_server_of_your_own_and_stops_it(capsys, postgres):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="rlhf-lab-serve-")
    try:
        assert main(["class", "serve", "--dir", folder, "--class", "cs101", "--port", str(port)]) == 0
        url = capsys.readouterr().out.strip().splitlines()[-1]
        assert url.startswith("postgresql+psycopg://rlhf_admin:") and url.endswith(f"@127.0.0.1:{port}/cs101")
        with FeedbackStore(url) as store:
            assert store.counts()["total"] == 0
        assert main(["class", "serve", "--dir", folder, "--stop"]) == 0
        with pytest.raises(Exception):
            FeedbackStore(url)  # stopped: nobody listens any more
    finally:
        main(["class", "serve", "--dir", folder, "--stop"])
        shutil.rmtree(folder, ignore_errors=True)


def _class_with_items(postgres, name, tmp_path):
    url = postgres.create_database(name)
    assert main(["feedback", "simulate", "--store", url, "--annotators", "0", "--items", "4", "--model",
                 "corpus"]) == 0
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,display_name\nada,Ada L.\nbob,Bob\n")
    return url, roster


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_logins_file_that_cannot_be_written_is_refused_before_any_password(postgres, tmp_path, capsys):
    from rlhf_lab.feedback.classroom import roster as class_roster

    url, roster = _class_with_items(postgres, "logins_refused", tmp_path)
    before = roster.read_bytes()
    (tmp_path / "folder").mkdir()
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\nfile,here\n")
    for logins, message in [(tmp_path / "folder", "is a folder"), (roster, "is the roster"),
                            (tmp_path / "x" / ".." / "roster.csv", "is the roster"),
                            (notes, "already exists and is not a logins file"),
                            (tmp_path / "no" / "logins.csv", "does not exist")]:
        assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "2", "--logins",
                     str(logins)]) == 2
        assert message in _one_line_error(capsys), logins
    assert roster.read_bytes() == before and notes.read_text() == "my,own\nfile,here\n"
    with FeedbackStore(url) as store:
        assert len(class_roster(store)) == 0  # nobody enrolled, no password set: no login lost


def test_logins_are_added_to_an_earlier_logins_file_and_kept_private(postgres, tmp_path, capsys):
    url, roster = _class_with_items(postgres, "logins_added", tmp_path)
    logins = tmp_path / "logins.csv"
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "1", "--logins",
                 str(logins)]) == 0
    logins.chmod(0o644)
    roster.write_text("student_id,display_name\nada,Ada L.\nbob,Bob\ncy,Cy\n")
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "1", "--logins",
                 str(logins)]) == 0
    assert "1 student logins written" in capsys.readouterr().out
    lines = logins.read_text(encoding="utf-8-sig").splitlines()
    written = logins.read_bytes()
    assert written.startswith(b"\xef\xbb\xbfstudent_id,") and written.count(b"\xef\xbb\xbf") == 1, \
        "one BOM, at the start (Excel reads the names as UTF-8); none where logins were added"
    assert lines[0] == "student_id,display_name,url" and [line.split(",")[0] for line in lines[1:]] == \
        ["ada", "bob", "cy"]
    assert stat.S_IMODE(logins.stat().st_mode) == 0o600
    fresh = tmp_path / "none.csv"  # no new students: no new (empty) file
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--logins", str(fresh)]) == 0
    assert "no new logins: every enrolled student already has one" in capsys.readouterr().out
    assert not fresh.exists()


def test_a_disk_that_fills_while_logins_are_written_sets_no_password(postgres, tmp_path, capsys, monkeypatch):
    """The logins are on disk before the passwords are committed: a full disk leaves the old file and no student
    with a password nobody wrote down; the next run (space freed) hands out every login, and each one works."""
    import errno
    import os

    from rlhf_lab.feedback.classroom import roster as class_roster

    url, roster = _class_with_items(postgres, "logins_full", tmp_path)
    logins = tmp_path / "logins.csv"
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "1", "--logins",
                 str(logins)]) == 0
    before = logins.read_bytes()
    roster.write_text("student_id,display_name\nada,Ada L.\nbob,Bob\ncy,Cy\ndee,Dee\n")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "1", "--logins",
                 str(logins)]) == 2
    assert "the disk is full" in _one_line_error(capsys)
    assert logins.read_bytes() == before  # the lines for cy and dee went with their passwords
    with FeedbackStore(url) as store:
        no_login = class_roster(store).set_index("student_id")["db_role"].isna().to_dict()
    assert no_login == {"ada": False, "bob": False, "cy": True, "dee": True}
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "1", "--logins",
                 str(logins)]) == 0
    rows = list(csv.DictReader(logins.open(encoding="utf-8-sig")))
    assert [r["student_id"] for r in rows] == ["ada", "bob", "cy", "dee"]
    for row in rows[2:]:
        with FeedbackStore(row["url"]) as store:
            assert whoami(store) == row["student_id"]


def test_a_sqlite_class_store_says_it_writes_no_logins(tmp_path, capsys):
    store = tmp_path / "class.db"
    assert main(["feedback", "simulate", "--store", str(store), "--annotators", "0", "--items", "3", "--model",
                 "corpus"]) == 0
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id\nada\nbob\n")
    logins = tmp_path / "logins.csv"
    capsys.readouterr()
    assert main(["class", "create", "--store", f"sqlite:///{store}", "--roster", str(roster), "--k", "2",
                 "--logins", str(logins)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 new students enrolled") and len(out) == 2
    assert out[1].startswith("no logins written: ") and "has no per-student logins" in out[1]
    assert not logins.exists()


def test_wrong_urls_get_a_hint_that_fits_and_no_password(postgres, tmp_path, capsys):
    url, roster = _class_with_items(postgres, "wrong_urls", tmp_path)
    logins = tmp_path / "logins.csv"
    assert main(["class", "create", "--store", url, "--roster", str(roster), "--k", "2", "--logins",
                 str(logins)]) == 0
    student = next(csv.DictReader(logins.open(encoding="utf-8-sig")))["url"]
    secret = student.split(":")[2].split("@")[0]
    for argv in (["class", "create", "--store", student, "--roster", str(roster), "--logins", str(tmp_path / "l.csv")],
                 ["feedback", "simulate", "--store", student, "--annotators", "1", "--items", "2", "--model",
                  "corpus"]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert "use the instructor's URL" in err and secret not in err and postgres.password not in err
    assert not (tmp_path / "l.csv").exists()
    wrong = url.replace(postgres.password, "not-the-password")
    assert main(["class", "progress", "--store", wrong]) == 2
    err = _one_line_error(capsys)
    assert "password authentication failed" in err and "is the URL's user name and password right?" in err
    assert "not-the-password" not in err and "free disk space" not in err


def test_serve_checks_before_it_starts_and_stop_says_when_nothing_runs(capsys, postgres):
    from rlhf_lab.feedback.pgserver import LocalPostgres

    folder = tempfile.mkdtemp(prefix="rlhf-lab-serve-")
    try:
        for args, message in [(["--class", "bad-name"], "--class 'bad-name': use letters, digits and underscores"),
                              (["--port", "99999"], "a TCP port is a number from 1 to 65535"),
                              (["--port", "-1"], "a TCP port is a number from 1 to 65535"),
                              (["--max-connections", "0"], "--max-connections must be at least 1")]:
            assert main(["class", "serve", "--dir", folder, *args]) == 2
            assert message in _one_line_error(capsys)
            assert not LocalPostgres(folder).initialised()  # refused before anything was made or started
        assert main(["class", "serve", "--dir", f"{folder}/nothing-here", "--stop"]) == 2
        assert "no server is running in" in _one_line_error(capsys)
        assert main(["class", "serve", "--dir", folder, "--port", str(postgres.port)]) == 2  # a port in use
        err = _one_line_error(capsys)
        assert f"PostgreSQL did not start: port {postgres.port} on 127.0.0.1 is in use" in err
        assert f"{folder}/server.log" in err and not LocalPostgres(folder).running()
        assert main(["class", "serve", "--dir", folder, "--max-connections", "2"]) == 2  # PostgreSQL's own refusal
        err = _one_line_error(capsys)
        assert "PostgreSQL did not start: " in err and "max_connections" in err and f"{folder}/server.log" in err
    finally:
        main(["class", "serve", "--dir", folder, "--stop"])
        shutil.rmtree(folder, ignore_errors=True)


def test_reading_an_empty_class_database_makes_no_store_in_it(postgres, tmp_path, capsys):
    import sqlalchemy as sa

    url = postgres.create_database("still_empty")
    out = tmp_path / "x.jsonl"
    for argv in (["feedback", "stats", "--store", url], ["feedback", "export", "--store", url, "--out", str(out)]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert "no store at postgresql+psycopg://rlhf_admin:***@" in err and postgres.password not in err
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_the_admin_password_file_is_private_from_the_moment_it_is_made(tmp_path, monkeypatch):
    """Written at the umask's mode (0644) and chmodded afterwards, the superuser's password was readable by anyone on
    the machine for a moment; made with mode 600, no later chmod is needed (one is ignored here)."""
    import os
    from pathlib import Path

    from rlhf_lab.feedback import pgserver

    if pgserver.postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed")
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)  # the window between the write and a chmod
    previous = os.umask(0o022)
    try:
        server = pgserver.LocalPostgres(tmp_path / "class-db")
        monkeypatch.setattr(server, "_as_postgres", False)
        monkeypatch.setattr(server, "_run", lambda *args, **kwargs: None)  # no initdb: only the password file
        server.init()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "class-db" / "admin-password").stat().st_mode) == 0o600
    assert len(server.password) == 24


def test_students_enrolled_late_are_told_apart_and_get_the_next_items(postgres, tmp_path, capsys):
    url = postgres.create_database("class_late")
    simulate = ["feedback", "simulate", "--store", url, "--annotators", "0", "--model", "corpus"]
    assert main(simulate + ["--items", "6"]) == 0
    roster, logins = tmp_path / "roster.csv", tmp_path / "logins.csv"
    roster.write_text("student_id\nada\nbob\ncy\n")
    create = ["class", "create", "--store", url, "--roster", str(roster), "--k", "2", "--logins", str(logins)]
    assert main(create) == 0
    roster.write_text("student_id\nada\nbob\ncy\ndee\n")  # a student who joined late: every item is assigned
    capsys.readouterr()
    assert main(create) == 0
    assert "1 students have no items to judge (dee)" in capsys.readouterr().out
    assert main(["class", "progress", "--store", url]) == 0
    assert "0 of 4 students done (1 with no items assigned)" in capsys.readouterr().out  # dee did nothing
    assert main(simulate + ["--items", "4", "--seed", "1"]) == 0
    assert main(create) == 0
    assert "no items to judge" not in capsys.readouterr().out
    assert main(["class", "progress", "--store", url, "--json"]) == 0
    assigned = {r["student_id"]: r["assigned"] for r in json.loads(capsys.readouterr().out)}
    assert assigned["dee"] == 4 and sorted(assigned.values()) == [4, 5, 5, 6]  # the new items went to dee first


def test_serve_on_every_network_card_prints_a_url_students_can_reach(capsys, monkeypatch):
    """README: `class serve --host 0.0.0.0 --allow NET`. 0.0.0.0 is where the server listens, not an address to
    connect to (on a student's laptop it is the laptop itself): the printed URL, which `class create` copies into
    every student's login, names this machine's address on the --allow network instead."""
    from rlhf_lab.feedback import class_cli, pgserver

    class FakeServer(pgserver.LocalPostgres):  # listens nowhere: what serve prints is what is tested
        def __init__(self, folder, port, host):
            self.folder, self.data, self.port, self.host = Path(folder), Path(folder) / "data", port, host

        password = "pw"
        init = allow = start = lambda self, *a, **k: None

        def create_database(self, name):
            return self.url(name)

    monkeypatch.setattr(class_cli, "LocalPostgres", FakeServer)
    assert main(["class", "serve", "--dir", "db", "--class", "cs329", "--host", "0.0.0.0",
                 "--allow", "127.0.0.0/8"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "postgresql+psycopg://rlhf_admin:pw@127.0.0.1:5433/cs329"
    assert pgserver.reachable_host("0.0.0.0", ["127.0.0.0/8"]) == "127.0.0.1"  # the address facing that network
    assert pgserver.reachable_host("10.1.2.3", ["127.0.0.0/8"]) == "10.1.2.3"  # a named address stays
    assert pgserver.reachable_host("::", ["::1/128"]) in ("[::1]", socket.getfqdn())  # no IPv6 here: the name


def test_class_share_is_the_instructors_and_never_replaces_the_store(postgres, tmp_path, capsys):
    """`class share` from a student's login is refused in one line (their login reads only their own judgments);
    --out naming the store's own file is refused, the store left whole; the instructor's URL writes the file."""
    from rlhf_lab.feedback.classroom import enroll, secure_class

    url = postgres.create_database("class_share_cli")
    assert main(["feedback", "simulate", "--store", url, "--annotators", "0", "--items", "4", "--model",
                 "corpus"]) == 0
    with FeedbackStore(url) as store:
        enroll(store, ["ada", "bob"])
        logins = secure_class(store)
        items = [it.id for it in store.pending_items("ada")]
        for sid in ("ada", "bob"):
            store.record_pairwise(items[0], sid, "A" if sid == "ada" else "tie")
    capsys.readouterr()
    out = tmp_path / "class_pairs.jsonl"
    assert main(["class", "share", "--store", logins["ada"], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "login of student 'ada'" in err[0] and "instructor" in err[0] and not out.exists()
    assert main(["class", "share", "--store", url, "--out", str(out)]) == 0
    assert "2 pairwise judgments written" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["tie"] for r in lines] == [False, True] and {r["item_id"] for r in lines} == {items[0]}

    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        store.record_pairwise(store.add_items([store.add_responses([
            dict(prompt="p", response=t, model="m", iteration=0) for t in ("a", "b")])])[0], "me", "A")
    before = db.read_bytes()
    assert main(["class", "share", "--store", f"sqlite:///{db}", "--out", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a SQLite database" in err[0] and "Traceback" not in err[0]
    assert db.read_bytes() == before
    with FeedbackStore(db) as store:
        assert store.counts()["total"] == 1
