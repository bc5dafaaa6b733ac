"""The raters when things go wrong or the learner is quick: a read-only, locked or vanished store, a double click on
save flags, undo or skip, a kernel restart with flags saved, items of another kind, an undo already taken back
elsewhere, a complete answer left unsubmitted, nothing to judge, and a reply that made the markdown slow.

Fixtures come from `test_raters`: a real store on a temporary SQLite file, and `callback_errors`, which makes an
exception inside any widget callback fail the test (ipywidgets would swallow it: the learner would see nothing).
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import time

import pytest
import test_raters

from rlhf_lab.feedback import database
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.ui import FlagPanel, LikertRater, PairwiseRater, RankingRater, ThumbsRater
from rlhf_lab.ui.parts import embolden, reply_html

store = test_raters.store
callback_errors = test_raters.callback_errors
answers = test_raters.answers
key = test_raters.key


def flags(store):
    """(response id, flags, comment) of the stored flag judgments, oldest first."""
    df = store.judgments_df()
    df = df[df["kind"] == "flags"]
    return [(int(r), a["flags"], c) for r, a, c in zip(df["response_id"], df["answer"], df["comment"])]


def read(rater):
    """Pretend the learner has looked at the item on screen for a while (past the double-click guard)."""
    rater._shown_at -= 10


# ---- a store that cannot be written ----------------------------------------------------------------------------------
@pytest.fixture
def read_only_store(store, monkeypatch):
    """The fixture's store opened again as a learner who may not write the file (a shared copy, mode 0444)."""
    path = store.url.removeprefix("sqlite:///")
    store.close()
    with monkeypatch.context() as patch:
        real = os.access
        patch.setattr(database.os, "access", lambda p, mode, *a, **k: mode != os.W_OK and real(p, mode, *a, **k))
        ro = FeedbackStore(path)
    assert ro.read_only
    yield ro
    ro.close()


def test_a_read_only_store_is_said_when_the_rater_is_built_and_its_answers_are_off(read_only_store):
    rater = PairwiseRater(read_only_store, "alice", guard_s=0, flags=True)
    assert "read-only to you" in rater.message.value and "Copy the file" in rater.message.value
    assert all(b.disabled for b in rater.buttons.values()) and rater.undo_button.disabled
    assert not rater.skip_button.disabled  # looking through the items still works
    rater.buttons["A"].click()
    key(rater, "u")
    assert rater.index == 0 and "read-only to you" in rater.message.value
    panel = rater.flag_panel
    assert panel.submit_button.disabled and "flags cannot be saved" in panel.message.value
    panel.checkboxes["harmful"].value = True
    assert panel.submit() is None and panel.checkboxes["harmful"].value
    rater.skip_button.click()
    assert rater.current.id == 2 and "read-only to you" in rater.message.value
    thumbs = ThumbsRater(read_only_store, "alice", guard_s=0)
    thumbs.up_button.click()
    assert thumbs.up_button.disabled and thumbs.index == 0 and "read-only to you" in thumbs.message.value
    assert len(read_only_store.judgments_df()) == 0


@pytest.fixture
def locked(store):
    """Another connection holding the store's write lock (another kernel writing); `locked.release()` ends it."""
    store.close()
    busy = FeedbackStore(store.url.removeprefix("sqlite:///"), busy_timeout_s=0.1)
    other = sqlite3.connect(busy.url.removeprefix("sqlite:///"), isolation_level=None)
    busy.release = lambda: other.execute("ROLLBACK")
    busy.hold = lambda: other.execute("BEGIN IMMEDIATE")
    yield busy
    other.close()
    busy.close()


def test_a_locked_store_is_said_in_one_line_and_the_learner_keeps_their_place(locked):
    rater = LikertRater(locked, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value, rater.score_widgets[1].value = 2, 6
    locked.hold()
    rater.submit_button.click()
    message = rater.message.value
    assert "Not saved: the store is busy" in message and "try again" in message and "\n" not in message
    assert rater.index == 0 and [s.value for s in rater.score_widgets] == [2, 6]
    locked.release()
    rater.submit_button.click()
    assert answers(locked) == [{"scores": [2, 6], "scale": [1, 7]}] and rater.done

    locked.hold()
    rater.undo_button.click()
    assert "Not undone: the store is busy" in rater.message.value and rater.done and len(rater.history) == 1
    panel = FlagPanel(locked, "alice", locked.get_item(1).responses)
    panel.checkboxes["harmful"].value, panel.comment.value = True, "rude"
    panel.submit_button.click()
    assert "Flags not saved: the store is busy" in panel.message.value
    assert panel.checkboxes["harmful"].value and panel.comment.value == "rude"
    locked.release()
    panel.submit_button.click()
    assert flags(locked) == [(locked.get_item(1).responses[0].id, ["harmful"], "rude")]


def test_a_store_file_deleted_under_the_rater_is_said(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    rater.strength.value = 2
    store.engine.dispose()
    path = store.url.removeprefix("sqlite:///")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    rater.buttons["A"].click()
    assert "Not saved: the store&#x27;s file was moved or deleted" in rater.message.value
    assert "rerun the cell that opens it" in rater.message.value
    assert rater.index == 0 and rater.strength.value == 2


def test_an_error_that_is_not_the_stores_is_said_and_raised(store, monkeypatch, callback_errors):
    rater = PairwiseRater(store, "alice", guard_s=0)
    monkeypatch.setattr(store, "record_pairwise", lambda *a, **k: {}["bug"])
    with pytest.raises(KeyError):
        rater.buttons["A"].click()
    callback_errors.clear()
    assert "Not saved: KeyError" in rater.message.value and rater.index == 0


# ---- the flag panel: double click, restart, another reply chosen -----------------------------------------------------
def test_a_double_click_on_save_flags_keeps_the_flags_just_saved(store):
    rater = PairwiseRater(store, "alice", flags=True)
    panel, b = rater.flag_panel, rater.current.responses[1].id
    panel.reply.value = b
    panel.checkboxes["harmful"].value, panel.comment.value = True, "tells the user to hurt themselves"
    panel.submit_button.click()
    panel.submit_button.click()
    assert flags(store) == [(b, ["harmful"], "tells the user to hurt themselves")]
    assert "Already saved for B: harmful." in panel.message.value
    assert panel.checkboxes["harmful"].value and panel.comment.value == "tells the user to hurt themselves"


def test_after_a_restart_the_panel_shows_the_saved_flags_and_moving_on_keeps_them(store):
    first = PairwiseRater(store, "alice", guard_s=0, flags=True)
    a, b = (r.id for r in first.current.responses)
    first.flag_panel.submit(["harmful", "biased"], "insults a group", response_id=b)

    again = PairwiseRater(store, "alice", guard_s=0, flags=True)  # the kernel restarted: the cell runs again
    panel = again.flag_panel
    assert again.current.id == 1 and panel.reply.value == a and not any(c.value for c in panel.checkboxes.values())
    assert "Flags you saved before: B harmful, biased" in panel.message.value
    panel.reply.value = b
    assert [f for f, c in panel.checkboxes.items() if c.value] == ["harmful", "biased"]
    assert panel.comment.value == "insults a group"
    again.choose("A")  # moving on with the form as loaded writes nothing
    assert flags(store) == [(b, ["harmful", "biased"], "insults a group")]

    again.undo()  # back to pair 1: B's flags show again; a changed comment is saved with them on moving on
    panel.reply.value = b
    panel.comment.value = "also off topic"
    again.choose("B")
    assert flags(store) == [(b, ["harmful", "biased"], "also off topic")]


def test_ticks_stay_with_the_reply_they_were_made_for(store):
    rater = PairwiseRater(store, "alice", guard_s=0, flags=True)
    panel = rater.flag_panel
    a, b = (r.id for r in rater.current.responses)
    panel.checkboxes["harmful"].value = True  # A is chosen: "A is harmful"
    panel.reply.value = b  # ...then B: A's tick is saved for A, the form shows B's (none)
    assert flags(store) == [(a, ["harmful"], "")] and "Saved for A: harmful." in panel.message.value
    assert not any(c.value for c in panel.checkboxes.values())
    panel.checkboxes["biased"].value = True
    panel.submit_button.click()
    panel.reply.value = a
    assert [f for f, c in panel.checkboxes.items() if c.value] == ["harmful"]
    assert flags(store) == [(a, ["harmful"], ""), (b, ["biased"], "")]


# ---- the double-click guard on undo and skip -------------------------------------------------------------------------
def test_a_double_click_on_undo_or_skip_acts_once(store):
    rater = PairwiseRater(store, "alice")
    assert rater.guard_s == 0.5  # the usual operating-system double-click interval
    for choice in ("A", "B", "tie"):
        read(rater)
        rater.buttons[choice].click()
    read(rater)
    rater.undo_button.click()
    rater.undo_button.click()
    assert [a["choice"] for a in answers(store)] == ["A", "B"] and rater.current.id == 3
    assert "quicker than reading: press undo again" in rater.message.value
    rater.undo_button.click()  # a deliberate second press goes through
    assert [a["choice"] for a in answers(store)] == ["A"] and rater.current.id == 2
    read(rater)
    key(rater, "s")
    key(rater, "s")
    assert rater.current.id == 3 and rater.skipped == 1 and "quicker than reading" in rater.message.value


def test_two_clicks_inside_the_usual_double_click_interval_record_once(store):
    rater = PairwiseRater(store, "alice")
    read(rater)
    rater.buttons["A"].click()
    rater._shown_at = time.monotonic() - 0.35  # the second click of a slow double click
    rater.buttons["A"].click()
    assert [a["choice"] for a in answers(store)] == ["A"] and rater.current.id == 2


# ---- items of another kind -------------------------------------------------------------------------------------------
def test_items_of_another_kind_are_refused_with_one_message(store):
    with pytest.raises(ValueError, match=r"LikertRater judges rating items, but item\(s\) 1, 2, 3, 6, 7 are pairwise "
                                         r"and ranking items: judge those with PairwiseRater or RankingRater, or "
                                         r"pass store.items\(kind='rating'\)"):
        LikertRater(store, "alice", items=store.items())
    with pytest.raises(ValueError, match=r"item\(s\) 5 are rating items: judge those with LikertRater"):
        PairwiseRater(store, "bob", items=[5])  # a rating item that happens to have two replies


def test_undo_takes_back_only_its_own_kind(store):
    store.record_pairwise(5, "alice", "A")  # a pairwise judgment of rating item 5 (store API, another cell)
    rater = LikertRater(store, "alice", items=[4, 5], guard_s=0)
    assert [it.id for it in rater.items] == [4] and rater.judged_before == 1
    assert rater.undo() is None and "Nothing to undo" in rater.message.value
    assert answers(store) == [{"choice": "A", "strength": None}]
    rater.rate([3])
    assert rater.undo() is not None and answers(store) == [{"choice": "A", "strength": None}]


# ---- undo after the same item changed in another rater ---------------------------------------------------------------
def test_undo_deletes_exactly_its_own_judgment_or_says_it_is_gone(store):
    first = PairwiseRater(store, "alice", items=[1, 2, 3], guard_s=0)
    first.choose("A")
    second = PairwiseRater(store, "alice", items=[1, 2, 3], guard_s=0)  # the cell run again into a new cell
    second.undo()
    second.choose("B")
    second.choose("tie")
    assert first.undo() is None and first.history == []
    assert "already taken back or changed in another cell" in first.message.value
    assert [(int(i), a["choice"]) for i, a in zip(store.judgments_df()["item_id"], answers(store))] == [
        (1, "B"), (2, "tie")]
    assert first.undo() is None and "Nothing to undo" in first.message.value


# ---- an answer entered but not submitted -----------------------------------------------------------------------------
def test_skip_over_a_complete_answer_says_it_is_not_saved_first(store):
    rater = LikertRater(store, "alice", items=[5], guard_s=0)
    rater.score_widgets[0].value, rater.score_widgets[1].value = 2, 6
    rater.skip_button.click()
    assert "Not skipped: your answer is complete but not saved yet: A 2, B 6" in rater.message.value
    assert rater.index == 0 and [s.value for s in rater.score_widgets] == [2, 6]
    rater.skip_button.click()
    assert rater.done and answers(store) == [] and "Skipped (nothing saved)" in rater.message.value

    ranker = RankingRater(store, "alice", guard_s=0)
    a, b, c = (r.id for r in ranker.current.responses)
    for dropdown, value in zip(ranker.rank_widgets, (c, a, b)):
        dropdown.value = value
    key(ranker, "s")
    assert "not saved yet: best first C &gt; A &gt; B" in ranker.message.value and ranker.index == 0
    key(ranker, "Enter")
    assert answers(store) == [{"order": [c, a, b]}]
    ranker.rank_widgets[0].value = ranker.current.responses[0].id  # a partial ranking: skipped at once
    key(ranker, "s")
    assert ranker.done and "Skipped (nothing saved)" in ranker.message.value


def test_undo_keeps_the_answer_on_screen_for_when_the_learner_comes_back(store):
    rater = LikertRater(store, "alice", guard_s=0)
    rater.rate([4])
    rater.score_widgets[0].value, rater.score_widgets[1].value = 2, 6
    rater.undo()
    assert rater.current.id == 4 and [s.value for s in rater.score_widgets] == [None]
    rater.rate([5])
    assert rater.current.id == 5 and [s.value for s in rater.score_widgets] == [2, 6]
    assert "Your unsaved answer to this one is filled in again." in rater.message.value


# ---- nothing to judge ------------------------------------------------------------------------------------------------
def test_an_empty_rater_says_there_is_nothing_to_judge_and_how_to_add_items(tmp_path):
    empty = FeedbackStore(tmp_path / "empty.db")
    for rater in (PairwiseRater(empty, "alice"), RankingRater(empty, "alice"), ThumbsRater(empty, "alice")):
        assert "Nothing to judge" in rater.prompt.value and "All done" not in rater.prompt.value
        assert "store.add_response_groups(records, size=" in rater.prompt.value
    assert "kind=&#x27;ranking&#x27;" in RankingRater(empty, "alice").prompt.value
    assert "no replies yet" in ThumbsRater(empty, "alice").prompt.value
    assert "the list of items given is empty" in LikertRater(empty, "alice", items=[]).prompt.value
    empty.close()


# ---- long replies ----------------------------------------------------------------------------------------------------
def test_bold_is_found_in_linear_time_as_the_old_regex_found_it():
    old = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
    rng = random.Random(0)
    pieces = ["*", "**", "***", " ", "\n", "a", "b c", "\t", "\u00a0", "<"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert embolden(text) == old.sub(r"<strong>\1</strong>", text), repr(text)
    start = time.perf_counter()
    shown = reply_html("**a " * 10000)  # 40k characters of openings that never close: 6.7 s with the regex
    assert time.perf_counter() - start < 0.5 and "<strong>" not in shown
