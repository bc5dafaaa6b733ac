"""`rlhf-lab feedback simulate | stats | export`, driven through an argparse parser of our own."""

import argparse
import json
import sqlite3

import pandas as pd
import pytest

from rlhf_lab.feedback.cli import add_feedback_commands, corpus_pairs, feedback_stats, main
from rlhf_lab.feedback.store import FeedbackStore


def run(argv):
    """Parse like `rlhf-lab` does (subparsers + add_feedback_commands) and call the chosen command."""
    parser = argparse.ArgumentParser(prog="rlhf-lab")
    add_feedback_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "runs" / "feedback.db"
    run(["feedback", "simulate", "--store", str(path), "--annotators", "4", "--items", "12", "--seed", "3",
         "--model", "corpus"])
    return path


def test_simulate_writes_n_times_m_judgments(simulated, capsys):
    with FeedbackStore(simulated) as store:
        df = store.judgments_df()
        assert len(df) == 4 * 12 and set(df["kind"]) == {"pairwise"}
        assert df.groupby("annotator")["item_id"].nunique().tolist() == [12] * 4  # the same 12 items each
        assert len(store.items()) == 12 and set(df["model"]) == {"corpus"} and set(df["iteration"]) == {0}
        assert all(len(set(texts)) == 2 for texts in df["responses"])


def test_simulate_is_seeded(tmp_path):
    answers = []
    for name in ("a.db", "b.db", "c.db"):
        seed = "9" if name != "c.db" else "10"
        run(["feedback", "simulate", "--store", str(tmp_path / name), "--annotators", "3", "--items", "8",
             "--seed", seed, "--model", "corpus", "--rationality", "1"])
        with FeedbackStore(tmp_path / name) as store:
            df = store.judgments_df()
        answers.append(df[["annotator", "prompt", "responses", "answer"]].to_json())
    assert answers[0] == answers[1] != answers[2]


def test_stats_json(simulated, capsys):
    run(["feedback", "stats", "--store", str(simulated), "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 48 and stats["by_kind"] == {"pairwise": 48}
    assert stats["by_annotator"] == {f"sim-{i}": 12 for i in range(4)} and stats["by_iteration"] == {"0": 48}
    assert sum(stats["pairwise_choices"].values()) == 48
    agree = stats["agreement"]
    assert agree["units"] == 12 and agree["annotators"] == 4
    assert agree["fleiss_kappa"] is None or -1 <= agree["fleiss_kappa"] <= 1
    with FeedbackStore(simulated) as store:
        assert feedback_stats(store)["total"] == 48


def test_stats_text(simulated, capsys):
    run(["feedback", "stats", "--store", str(simulated)])
    out = capsys.readouterr().out
    assert "48 judgments" in out and "sim-3: 12" in out and "Fleiss kappa" in out


def test_export_jsonl_and_csv(simulated, tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    run(["feedback", "export", "--store", str(simulated), "--format", "jsonl", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with FeedbackStore(simulated) as store:
        pairs = store.preference_pairs(include_ties=False)
    assert len(rows) == len(pairs) > 0 and f"wrote {len(rows)} preference pairs" in capsys.readouterr().out
    assert all({"prompt", "chosen", "rejected", "iteration", "model"} <= set(r) for r in rows)
    run(["feedback", "export", "--store", str(simulated), "--format", "csv"])  # default: next to the store
    csv = pd.read_csv(simulated.with_suffix(".csv"))
    assert len(csv) == 48 and {"annotator", "kind", "answer", "iteration", "model"} <= set(csv.columns)


def test_main_reports_errors(tmp_path, capsys):
    assert main(["feedback", "stats", "--store", str(tmp_path / "missing.db")]) == 2
    assert "no store" in capsys.readouterr().err
    assert main(["feedback", "simulate", "--store", str(tmp_path / "x.db"), "--items", "0", "--model", "corpus"]) == 2
    assert main(["feedback", "simulate", "--store", str(tmp_path / "x.db"), "--items", "2", "--annotators", "2",
                 "--model", "corpus"]) == 0


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path, capsys):
    foreign = tmp_path / "music.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
        conn.execute("INSERT INTO songs VALUES ('a')")
    conn.close()
    before = foreign.read_bytes()
    assert main(["feedback", "stats", "--store", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a feedback store" in err and "songs" in err and "Traceback" not in err
    assert foreign.read_bytes() == before and not (tmp_path / "music.db-wal").exists()
    (tmp_path / "notes.db").write_text("just text, not a database\n" * 10)
    with pytest.raises(ValueError, match="not a SQLite database"):
        FeedbackStore(tmp_path / "notes.db")
    FeedbackStore(tmp_path / "fresh.db").add_responses([])  # a new file and a store's own file still open
    assert FeedbackStore(tmp_path / "fresh.db").counts()["total"] == 0


def test_corpus_pairs():
    triples = corpus_pairs(30, seed=0)
    assert len(triples) == 30 and triples == corpus_pairs(30, seed=0) != corpus_pairs(30, seed=1)
    assert all(a != b and len(p.split()) >= 2 for p, a, b in triples)
    assert len(corpus_pairs(3000, seed=0)) == 3000  # more than the corpus has: prompts repeat


def test_simulate_with_the_tiny_model(tmp_path):
    path = tmp_path / "tiny.db"
    run(["feedback", "simulate", "--store", str(path), "--annotators", "2", "--items", "2", "--seed", "0",
         "--model", "tiny", "--max-new-tokens", "8"])
    with FeedbackStore(path) as store:
        df = store.judgments_df()
        assert len(df) == 4 and set(df["model"]) == {"tiny"}
        response = store.items()[0].responses[0]
        assert response.sampling["max_new_tokens"] == 8 and response.eos in (True, False)


@pytest.mark.parametrize("args, message", [(["--rationality", "nan"], "--rationality must be a finite number"),
                                           (["--annotators", "3", "--careless", "5"], "--careless counts annotators")])
def test_simulate_refuses_bad_settings(tmp_path, capsys, args, message):
    assert main(["feedback", "simulate", "--store", str(tmp_path / "s.db"), "--model", "corpus", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("where", ["items", "judging"])
def test_a_killed_simulate_resumes_when_rerun(tmp_path, monkeypatch, where):
    from rlhf_lab.feedback.crowd import SimulatedAnnotator
    from rlhf_lab.feedback.schema import items_t

    argv = ["feedback", "simulate", "--store", str(tmp_path / "s.db"), "--annotators", "3", "--items", "6",
            "--model", "corpus"]
    real = SimulatedAnnotator.annotate

    def killed(self=None, *args, **kwargs):
        if where == "items" or self.name == "sim-1":
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with monkeypatch.context() as m:
        if where == "items":  # killed at its first item: the replies it had added must not stay behind
            m.setattr(items_t, "insert", killed)
        else:  # killed while the second annotator judges
            m.setattr(SimulatedAnnotator, "annotate", killed)
        with pytest.raises(KeyboardInterrupt):
            run(argv)
    run(argv)
    with FeedbackStore(tmp_path / "s.db") as store:
        c = store.counts()
    assert (c["responses"], c["items"], c["total"]) == (12, 6, 18)


def test_store_and_output_problems_are_one_line(tmp_path, capsys):
    (tmp_path / "folder.db").mkdir()
    FeedbackStore(tmp_path / "new.db").close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    for argv, message in [(["stats", "--store", str(tmp_path / "folder.db")], "is a folder"),
                          (["stats", "--store", "foo://host/db"], "neither a store path nor a database URL"),
                          (["stats", "--store", str(tmp_path / "new.db")], "Upgrade rlhf-lab"),
                          (["export", "--store", str(tmp_path / "new.db"), "--out", str(tmp_path)], "is a folder")]:
        assert main(["feedback", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("entry", ["feedback", "rlhf-lab"])
def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch, entry):
    from sqlalchemy.exc import OperationalError

    import rlhf_lab.cli

    def full(*args, **kwargs):
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(FeedbackStore, "add_response_groups", full)
    run = main if entry == "feedback" else rlhf_lab.cli.main  # its own entry point, and within rlhf-lab's
    assert run(["feedback", "simulate", "--store", str(tmp_path / "s.db"), "--model", "corpus", "--items", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "database or disk is full" in err and "the store refused" in err
    assert err.startswith("rlhf-lab feedback: error:")


def _simulated_store(path):
    assert main(["feedback", "simulate", "--store", str(path), "--annotators", "2", "--items", "3", "--model",
                 "corpus"]) == 0
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_export_never_overwrites_silently_nor_the_store(tmp_path, capsys, monkeypatch):
    store = _simulated_store(tmp_path / "fb.db")
    before = store.read_bytes()
    out = tmp_path / "prefs.jsonl"
    out.write_text("my notes\n")
    assert main(["feedback", "export", "--store", str(store), "--out", str(out)]) == 2
    assert "already exists" in _one_line_error(capsys) and out.read_text() == "my notes\n"
    assert main(["feedback", "export", "--store", str(store), "--out", str(out), "--force"]) == 0
    assert len(out.read_text().splitlines()) > 0 and "my notes" not in out.read_text()
    for target in (store, tmp_path / "fb.db-wal", tmp_path / "sub" / ".." / "fb.db"):  # never the store, even forced
        assert main(["feedback", "export", "--store", str(store), "--out", str(target), "--force"]) == 2
        assert "is the store's own file" in _one_line_error(capsys)
    assert store.read_bytes() == before
    own = tmp_path / "x.jsonl"  # a store whose default export name is itself
    own.write_bytes(before)
    assert main(["feedback", "export", "--store", str(own), "--force"]) == 2
    assert "is the store's own file" in _one_line_error(capsys) and own.read_bytes() == before
    monkeypatch.chdir(tmp_path)  # a URL store without --out: no path made from the URL (no ./sqlite: folder)
    for url in ("sqlite:///fb.db", "postgresql+psycopg://u:SECRET@127.0.0.1:1/x"):
        assert main(["feedback", "export", "--store", url]) == 2
        err = _one_line_error(capsys)
        assert "--store is a URL: give --out" in err and "SECRET" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fb.db", "prefs.jsonl", "x.jsonl"]


@pytest.mark.parametrize("command", ["stats", "export"])
def test_reading_commands_refuse_a_missing_or_empty_store(tmp_path, capsys, command, monkeypatch):
    empty = tmp_path / "empty.db"
    empty.touch()
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "out.jsonl")] if command == "export" else []
    for where in (str(empty), "sqlite:///empty.db", "sqlite:///missing.db", str(tmp_path / "new" / "missing.db")):
        assert main(["feedback", command, "--store", where, *out]) == 2, where
        assert f"no store at {where}: make one first" in _one_line_error(capsys)
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    _simulated_store(empty)  # a command that makes stores still takes an empty file
    assert main(["feedback", command, "--store", str(empty)]) == 0


def test_a_relative_sqlite_url_opens_an_existing_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _simulated_store("fb.db")
    capsys.readouterr()
    assert main(["feedback", "stats", "--store", "sqlite:///fb.db"]) == 0
    assert "6 judgments, 3 items" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "Unknown model 'no-such-model'"),
    (["--model", "tiny", "--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--model", "tiny", "--prompt-set", "no-such-set"], "Unknown prompt source 'no-such-set'"),
    (["--model", "corpus", "--seed", "-1"], "--seed must be 0 or more, got -1"),
])
def test_simulate_checks_its_inputs_before_it_makes_a_store(tmp_path, capsys, args, message):
    store = tmp_path / "runs" / "s.db"
    assert main(["feedback", "simulate", "--store", str(store), "--items", "2", *args]) == 2
    assert message in _one_line_error(capsys)
    assert not store.exists() and not store.parent.exists()


def test_database_errors_are_one_line_that_fits_and_hide_the_password(capsys):
    import socket

    from rlhf_lab.core.script import hide_password

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["feedback", "stats", "--store", f"postgresql+psycopg://u:SECRET@127.0.0.1:{port}/x"]) == 2
    err = _one_line_error(capsys)
    assert f"is a PostgreSQL server running at 127.0.0.1:{port}?" in err and "free disk space" not in err
    assert "SECRET" not in err and "Is the server running on that host" not in err
    assert main(["feedback", "stats", "--store", "postgres://u:SECRET@127.0.0.1:1/x"]) == 2
    err = _one_line_error(capsys)
    assert "postgres://u:***@127.0.0.1:1/x is neither a store path nor a database URL" in err and "SECRET" not in err
    assert hide_password("at postgresql+psycopg://me:p@ss:w0rd@db:5432/c, or sqlite:///a.db") == \
        "at postgresql+psycopg://me:***@db:5432/c, or sqlite:///a.db"
