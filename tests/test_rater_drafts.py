"""Answers entered in a rater but not submitted survive a kernel restart: each change is kept in a JSON drafts file
(`rlhf_lab.feedback.drafts`), a rater built later fills the answer in again and says so, and the draft goes once
its judgment is stored. Also: another annotator never sees it, an in-memory store writes no file, a damaged file is
moved aside and said in one line, a full disk is said once and judging goes on.

A "restart" here is what a learner's restarted kernel does: a new `FeedbackStore` object on the same file and a new
rater. Fixtures come from `test_raters`: a real store on a temporary SQLite file (items 4 and 5 are rating items with
1 and 2 replies, 6 and 7 ranking items with 3), and `callback_errors`, which fails a test when a widget callback
raised (ipywidgets would swallow it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import types
from pathlib import Path

import pytest
import test_raters

import rlhf_lab.core.files as files
from rlhf_lab.feedback import drafts as drafts_module
from rlhf_lab.feedback.drafts import DRAFTS_ENV, DraftBook, saved_words
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.ui import FlagPanel, LikertRater, PairwiseRater, RankingRater, ThumbsRater

store = test_raters.store
callback_errors = test_raters.callback_errors
answers = test_raters.answers
key = test_raters.key

BACK = re.compile(r"Your unsubmitted answer from (\d{1,2} \w+ )?\d\d:\d\d is back: press submit to save it\.")
FLAGS_BACK = re.compile(r"Your unsaved flags from (\d{1,2} \w+ )?\d\d:\d\d are back: press save flags to keep "
                        r"them\.")


@pytest.fixture(autouse=True)
def user_folder(tmp_path, monkeypatch):
    """The per-user drafts folder of these tests (never the real home folder)."""
    folder = tmp_path / "user-drafts"
    monkeypatch.setenv(DRAFTS_ENV, str(folder))
    return folder


def store_path(store) -> str:
    return store.url.removeprefix("sqlite:///")


def restart(store) -> FeedbackStore:
    """The kernel restarts: the store object is gone, and the lesson opens the same file again."""
    store.close()
    return FeedbackStore(store_path(store))


def draft_files(store) -> list:
    """The drafts files beside the store's file."""
    return sorted(Path(store_path(store) + "-drafts").glob("*.json"))


def scores(rater) -> list:
    return [s.value for s in rater.score_widgets]


# ---- the answer comes back after a restart ---------------------------------------------------------------------------
def test_likert_scores_not_submitted_come_back_after_a_restart_and_go_once_submitted(store):
    first = LikertRater(store, "alice", guard_s=0)
    first.score_widgets[0].value = 6
    first.submit_button.click()
    assert first.current.id == 5 and draft_files(store) == []  # item 4 was submitted: nothing left to keep
    first.score_widgets[0].value = 2
    first.score_widgets[1].value = 6
    del first

    again = restart(store)
    second = LikertRater(again, "alice", guard_s=0)
    assert second.current.id == 5 and scores(second) == [2, 6]
    assert BACK.search(second.message.value), second.message.value
    second.submit_button.click()
    assert answers(again, "rating") == [{"scores": [6], "scale": [1, 7]}, {"scores": [2, 6], "scale": [1, 7]}]
    assert second.done and not Path(store_path(again) + "-drafts").exists()  # no file, no empty folder left

    third = LikertRater(restart(again), "alice", items=[4, 5], guard_s=0)
    assert third.done
    third.undo_button.click()  # item 5 again: its draft went with the judgment, so nothing is filled in
    assert third.current.id == 5 and scores(third) == [None, None]
    assert "unsubmitted" not in third.message.value and "filled in" not in third.message.value
    third.store.close()


def test_the_drafts_file_is_plain_json_beside_the_store(store):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[1].value = 3
    [path] = draft_files(store)
    assert path.parent.name == "feedback.db-drafts" and path.name.startswith("alice-") and path.suffix == ".json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["annotator"] == "alice" and doc["store"] == store.display_url
    assert list(doc["drafts"]) == ["item:5"] and doc["drafts"]["item:5"]["answer"] == [None, 3]
    assert isinstance(doc["drafts"]["item:5"]["saved_at"], float)
    rater.score_widgets[0].value = 4
    assert json.loads(path.read_text())["drafts"]["item:5"]["answer"] == [4, 3]


def test_a_partial_ranking_comes_back_and_clearing_it_drops_the_draft(store):
    ranker = RankingRater(store, "alice", guard_s=0)
    a, b, c = (r.id for r in ranker.current.responses)
    ranker.rank_widgets[0].value = c
    key(ranker, "1")  # a key press sets the dropdown too
    assert [d.value for d in ranker.rank_widgets] == [c, a, None]

    again = restart(store)
    second = RankingRater(again, "alice", guard_s=0)
    assert [d.value for d in second.rank_widgets] == [c, a, None]
    assert re.search(r"Your unsubmitted answer from (\d{1,2} \w+ )?\d\d:\d\d is back: finish it and press submit "
                     r"to save it\.", second.message.value), second.message.value
    second.clear_button.click()
    assert draft_files(again) == []  # the learner took the answer back: nothing to keep
    second.rank_widgets[1].value = b
    key(second, "Enter")  # incomplete: refused, the draft stays
    assert answers(again) == [] and len(draft_files(again)) == 1
    second.rank_widgets[0].value = a
    second.rank_widgets[2].value = c
    second.submit_button.click()
    assert answers(again, "ranking") == [{"order": [a, b, c]}] and draft_files(again) == []
    again.close()


def test_a_store_made_anew_at_the_same_path_gets_no_old_answer(store):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value = 2
    path = Path(store_path(store))
    store.close()
    for old in path.parent.glob("feedback.db*"):
        if old.is_file():
            old.unlink()
    fresh = FeedbackStore(path)  # the same ids, other items
    ids = fresh.add_response_groups([dict(prompt="new", response=t, model="tiny", iteration=0, sampling={})
                                     for t in ("x", "y")] * 5, size=2, kind="rating")
    assert 5 in ids
    second = LikertRater(fresh, "alice", items=[5], guard_s=0)
    assert scores(second) == [None, None] and "unsubmitted" not in second.message.value
    second.score_widgets[0].value = 4  # the new answer replaces the old draft
    [file] = draft_files(fresh)
    assert json.loads(file.read_text())["drafts"]["item:5"]["answer"] == [4, None]
    fresh.close()


def test_a_skipped_answer_is_kept_for_a_restart_too(store):
    rater = LikertRater(store, "alice", guard_s=0)
    rater.score_widgets[0].value = 5
    rater.skip_button.click()  # complete: skip says first it is not saved
    rater.skip_button.click()
    assert rater.current.id == 5 and answers(store) == []
    again = restart(store)
    second = LikertRater(again, "alice", guard_s=0)
    assert second.current.id == 4 and scores(second) == [5] and BACK.search(second.message.value)
    again.close()


def test_a_draft_of_an_item_judged_since_is_dropped(store):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value = 1
    store.record_rating(5, "alice", [7, 7])  # another cell or notebook judged it meanwhile
    rater.score_widgets[1].value = 2
    rater.submit_button.click()  # "already judged elsewhere": that judgment stands, and the draft goes
    assert answers(store) == [{"scores": [7, 7], "scale": [1, 7]}] and draft_files(store) == []

    other = LikertRater(store, "alice", items=[4], guard_s=0)
    other.score_widgets[0].value = 3
    store.record_rating(4, "alice", 1)
    again = restart(store)
    LikertRater(again, "alice", guard_s=0)  # built after item 4 was judged: its draft is dropped
    assert draft_files(again) == []
    again.close()


def test_another_annotator_does_not_see_the_draft(store):
    alice = LikertRater(store, "alice", items=[5], guard_s=0)
    alice.score_widgets[0].value = 2
    before = [p.read_text() for p in draft_files(store)]
    bob = LikertRater(store, "bob", items=[5], guard_s=0)
    assert scores(bob) == [None, None] and "unsubmitted" not in bob.message.value
    bob.score_widgets[1].value = 7
    assert len(draft_files(store)) == 2
    again = LikertRater(store, "alice", items=[5], guard_s=0)
    assert scores(again) == [2, None] and [p.read_text() for p in draft_files(store) if "alice" in p.name] == before


def test_pairwise_and_thumbs_have_nothing_to_draft(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    rater.strength.value = 2  # the strength goes with the click that submits
    thumbs = ThumbsRater(store, "alice", guard_s=0)
    assert rater.draft_book is not None and thumbs.draft_book is not None and draft_files(store) == []
    rater.buttons["A"].click()
    thumbs.up_button.click()
    assert len(answers(store)) == 2 and draft_files(store) == []


# ---- stores that keep no drafts file, or keep it elsewhere -----------------------------------------------------------
def test_an_in_memory_store_writes_no_file(tmp_path, monkeypatch, user_folder):
    monkeypatch.chdir(tmp_path)
    memory = FeedbackStore(":memory:")
    memory.add_response_groups([dict(prompt="p", response=t, model="tiny", iteration=0, sampling={})
                                for t in ("one", "two")], size=2, kind="rating")
    rater = LikertRater(memory, "alice", guard_s=0)
    assert rater.draft_book is None
    rater.score_widgets[0].value = 3
    rater.score_widgets[1].value = 4
    assert list(tmp_path.rglob("*")) == [] and not user_folder.exists()
    rater.submit_button.click()
    assert answers(memory) == [{"scores": [3, 4], "scale": [1, 7]}]


def test_a_store_elsewhere_keeps_its_drafts_in_the_user_folder_without_the_password(user_folder):
    server = types.SimpleNamespace(url="postgresql+psycopg://bob:s3cret@db.example/class",
                                   display_url="postgresql+psycopg://bob:***@db.example/class", read_only=False)
    book = DraftBook.for_store(server, "Bob Smith/../x")
    assert book.path.parent == user_folder and "/" not in book.path.name and book.path.name.startswith("Bob_Smith")
    book.put("item:3", [1, 2])
    text = book.path.read_text()
    assert "s3cret" not in text and "s3cret" not in str(book.path) and json.loads(text)["drafts"]["item:3"]["answer"]
    other = DraftBook.for_store(types.SimpleNamespace(**{**vars(server), "url": server.url.replace("class", "c2"),
                                                         "display_url": server.display_url.replace("class", "c2")}),
                                "Bob Smith/../x")
    assert other.path != book.path and other.get("item:3") is None
    assert DraftBook.for_store(types.SimpleNamespace(**{**vars(server), "read_only": True}), "bob") is None


def test_a_store_in_a_folder_the_learner_may_not_write_keeps_its_drafts_in_the_user_folder(store, monkeypatch,
                                                                                         user_folder):
    folder, real = Path(store_path(store)).parent, os.access  # the store's file may be written, its folder not
    monkeypatch.setattr(drafts_module.os, "access", lambda p, mode: not (mode == os.W_OK and Path(p) == folder)
                        and real(p, mode))
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value = 6
    assert draft_files(store) == [] and [p.parent for p in user_folder.glob("alice-*.json")] == [user_folder]
    second = LikertRater(restart(store), "alice", items=[5], guard_s=0)
    assert scores(second) == [6, None] and BACK.search(second.message.value) is None  # an incomplete one
    assert "is back: finish it" in second.message.value
    second.store.close()


# ---- trouble with the drafts file ------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [b'{"drafts": {"item:5": ', b"\xff\xfe not text", b"[1, 2, 3]"])
def test_a_damaged_drafts_file_is_moved_aside_and_said_in_one_line(store, damage):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value = 2
    [path] = draft_files(store)
    path.write_bytes(damage)
    again = restart(store)
    second = LikertRater(again, "alice", guard_s=0)
    [aside] = [p for p in path.parent.iterdir() if p != path]
    assert aside.read_bytes() == damage and aside.name.startswith(path.stem + ".damaged-") and not path.exists()
    text = second.message.value
    assert "moved aside" in text and str(aside) in text and "\n" not in text and text.count("Your") == 1
    assert second.current.id == 4 and scores(second) == [None]  # it goes on without the drafts
    second.score_widgets[0].value = 3
    assert json.loads(path.read_text())["drafts"]["item:4"]["answer"] == [3]
    second.submit_button.click()
    assert answers(again) == [{"scores": [3], "scale": [1, 7]}] and aside.read_bytes() == damage
    again.close()


def test_a_drafts_file_that_can_be_neither_read_nor_moved_is_left_alone(store, monkeypatch):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value = 2
    [path] = draft_files(store)
    path.write_bytes(b"{damaged")
    again = restart(store)
    with monkeypatch.context() as locked:
        locked.setattr(drafts_module.os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError(13, "no")))
        second = LikertRater(again, "alice", items=[5], guard_s=0)
    assert "nor moved aside" in second.message.value and "not kept for a restart" in second.message.value
    second.score_widgets[0].value = 4  # nothing is written over the file the learner may still want
    second.score_widgets[1].value = 5
    assert path.read_bytes() == b"{damaged"
    second.submit_button.click()  # judging goes on
    assert answers(again) == [{"scores": [4, 5], "scale": [1, 7]}] and path.read_bytes() == b"{damaged"
    again.close()


def test_when_a_draft_was_saved_reads_as_a_clock_time():
    now = time.time()
    assert re.fullmatch(r"\d\d:\d\d", saved_words(now))
    assert re.fullmatch(r"\d{1,2} \w+ \d\d:\d\d", saved_words(now - 3 * 86400))


def test_a_draft_that_no_longer_fits_its_item_is_said_and_left_out(store):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value = 2
    [path] = draft_files(store)
    doc = json.loads(path.read_text())
    doc["drafts"]["item:5"]["answer"] = [99, "x"]  # edited by hand, or a scale of 1..7 no longer holds it
    path.write_text(json.dumps(doc))
    second = LikertRater(restart(store), "alice", items=[5], guard_s=0)
    assert scores(second) == [None, None] and "does not fit this item" in second.message.value
    second.store.close()


def test_a_full_disk_is_said_once_and_judging_goes_on(store, monkeypatch):
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as disk:
        disk.setattr(files.os, "fsync", full)
        rater = LikertRater(store, "alice", guard_s=0)
        rater.score_widgets[0].value = 2
        assert "could not be kept for a restart (the disk is full" in rater.message.value
        assert "submit it to save it" in rater.message.value and draft_files(store) == []
        rater.message.value = ""
        rater.score_widgets[0].value = 3
        assert rater.message.value == ""  # said once
        rater.submit_button.click()
        assert answers(store) == [{"scores": [3], "scale": [1, 7]}] and "Saved" in rater.message.value
    rater.score_widgets[1].value = 4  # space again: kept
    assert json.loads(draft_files(store)[0].read_text())["drafts"]["item:5"]["answer"] == [None, 4]


# ---- flags ticked and a comment typed, not saved yet -----------------------------------------------------------------
def form(panel) -> tuple:
    """What the flag panel's form shows: the ticked flags (sorted) and the comment."""
    return sorted(f for f, box in panel.checkboxes.items() if box.value), panel.comment.value


def test_flags_not_saved_come_back_after_a_restart_and_go_once_saved(store):
    first = FlagPanel(store, "alice", store.get_item(1).responses)
    a, b = first.reply.options[0][1], first.reply.options[1][1]
    first.reply.value = b
    first.checkboxes["harmful"].value = True  # through the widgets, as the learner does
    first.checkboxes["biased"].value = True
    first.comment.value = "rude"
    [path] = draft_files(store)
    assert json.loads(path.read_text())["drafts"][f"flags:{b}"]["answer"] == {"flags": ["biased", "harmful"],
                                                                            "comment": "rude"}
    del first

    again = restart(store)
    second = FlagPanel(again, "alice", again.get_item(1).responses)
    assert second.reply.value == a and form(second) == ([], "") and "unsaved" not in second.message.value
    second.reply.value = b
    assert form(second) == (["biased", "harmful"], "rude") and second.changed
    assert FLAGS_BACK.search(second.message.value), second.message.value
    second.submit_button.click()
    found = again.judgment("alice", f"flags:{b}")
    assert sorted(found["answer"]["flags"]) == ["biased", "harmful"] and found["comment"] == "rude"
    assert not Path(store_path(again) + "-drafts").exists()  # no draft, no empty folder left

    third = FlagPanel(restart(again), "alice", again.get_item(1).responses)
    third.reply.value = b
    assert form(third) == (["biased", "harmful"], "rude") and not third.changed
    assert "unsaved" not in third.message.value and "are back" not in third.message.value
    third.store.close()


def test_flags_not_saved_on_a_raters_reply_come_back_and_are_saved_when_it_moves_on(store):
    rater = PairwiseRater(store, "alice", flags=True, guard_s=0)
    a = rater.flag_panel.reply.value
    rater.flag_panel.checkboxes["off_topic"].value = True
    again = restart(store)
    second = PairwiseRater(again, "alice", flags=True, guard_s=0)
    assert second.flag_panel.reply.value == a and form(second.flag_panel) == (["off_topic"], "")
    assert FLAGS_BACK.search(second.flag_panel.message.value), second.flag_panel.message.value
    second.buttons["A"].click()  # moving on saves the flags shown for the reply they were made for
    assert again.judgment("alice", f"flags:{a}")["answer"] == {"flags": ["off_topic"]} and draft_files(again) == []
    again.close()


def test_a_flag_form_back_as_it_was_loaded_leaves_no_draft(store):
    responses = store.get_item(1).responses
    panel = FlagPanel(store, "alice", responses)
    panel.submit(["harmful"], "rude")
    panel.checkboxes["biased"].value = True
    assert len(draft_files(store)) == 1  # a change: kept
    panel.checkboxes["biased"].value = False
    assert draft_files(store) == []  # the saved flags again: nothing to keep
    panel.comment.value = "rude!"
    assert len(draft_files(store)) == 1
    panel.comment.value = "rude"
    assert draft_files(store) == []
    second = FlagPanel(restart(store), "alice", responses)
    assert form(second) == (["harmful"], "rude") and "are back" not in second.message.value
    second.store.close()


def test_another_annotator_does_not_see_unsaved_flags(store):
    responses = store.get_item(1).responses
    alice = FlagPanel(store, "alice", responses)
    alice.checkboxes["other"].value = True
    alice.comment.value = "odd"
    bob = FlagPanel(store, "bob", responses)
    assert form(bob) == ([], "") and "are back" not in bob.message.value
    again = FlagPanel(store, "alice", responses)
    assert form(again) == (["other"], "odd") and FLAGS_BACK.search(again.message.value)


def test_trouble_with_the_drafts_file_is_said_in_the_flag_panel(store, monkeypatch):
    responses = store.get_item(1).responses
    panel = FlagPanel(store, "alice", responses)
    panel.checkboxes["harmful"].value = True
    [path] = draft_files(store)
    path.write_bytes(b"{damaged")
    second = FlagPanel(restart(store), "alice", responses)
    assert "moved aside" in second.message.value and form(second) == ([], "")
    with monkeypatch.context() as disk:
        disk.setattr(files.os, "fsync", lambda _fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
        second.checkboxes["biased"].value = True
        assert "could not be kept for a restart (the disk is full" in second.message.value
    second.submit_button.click()  # flagging goes on
    assert second.store.judgment("alice", f"flags:{responses[0].id}")["answer"] == {"flags": ["biased"]}
    second.store.close()
