"""The raters, driven in-kernel: click the real buttons, set widget values, send key messages, read the store.

Every test records into a real `FeedbackStore` on a temporary SQLite file. ipywidgets swallows exceptions raised
inside widget callbacks (it logs them or hands them to IPython's `showtraceback`); the autouse fixture
`callback_errors` makes them propagate instead, so an exception in any click or key handler fails the test.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import traceback
from importlib.resources import files

import ipywidgets
import pytest

from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.ui import FlagPanel, LikertRater, PairwiseRater, RankingRater, ThumbsRater, parts

EVIL = "<script>alert(1)</script><b>bold</b>"


class _CallbackErrors(list):
    """Exceptions raised inside widget callbacks during a test (see the `callback_errors` fixture)."""

    def showtraceback(self, *args, **kwargs):
        """Called by ipywidgets inside its `except` block: record the exception and raise it again."""
        self.append(sys.exc_info()[1])
        raise


@contextlib.contextmanager
def widget_callback_errors(monkeypatch):
    """Make exceptions inside widget callbacks visible: they propagate, and leaving fails if any were raised.

    ipywidgets' CallbackDispatcher (on_click, on_msg, ...) catches exceptions and calls
    `get_ipython().showtraceback()`, or logs a warning when there is no IPython. We hand it a stand-in shell whose
    `showtraceback` records the exception and re-raises it, so `button.click()` raises what the handler raised; the
    record fails the test at teardown even if something between the click and the test swallowed it again.
    """
    errors = _CallbackErrors()
    monkeypatch.setattr(ipywidgets.widgets.widget, "get_ipython", lambda: errors)
    yield errors
    if errors:
        details = "".join("".join(traceback.format_exception(e)) for e in errors)
        pytest.fail(f"{len(errors)} exception(s) inside widget callbacks:\n{details}")


@pytest.fixture(autouse=True)
def callback_errors(monkeypatch):
    """Every test here fails if a widget callback raised (clear the list to expect an error)."""
    with widget_callback_errors(monkeypatch) as errors:
        yield errors


@pytest.fixture
def store(tmp_path):
    """A real store with 3 pairwise, 2 rating (1 and 2 replies) and 2 ranking (3 replies) items."""
    store = FeedbackStore(tmp_path / "feedback.db")

    def add(prompt, texts, kind):
        ids = store.add_responses([dict(prompt=prompt, response=t, model="tiny", iteration=0,
                                        sampling={"temperature": 0.7}, eos=True) for t in texts])
        return store.add_item(ids, kind=kind)

    for n in range(3):
        add(f"pair prompt {n}", [f"pair {n} reply A", f"pair {n} reply B"], "pairwise")
    add("rate one", ["only reply"], "rating")
    add("rate two", ["first reply", "second reply"], "rating")
    for n in range(2):
        add(f"rank prompt {n}", [f"rank {n} reply {c}" for c in "ABC"], "ranking")
    yield store
    store.close()


def answers(store, kind=None):
    """The stored answers, oldest first (optionally of one kind)."""
    df = store.judgments_df()
    if kind is not None:
        df = df[df["kind"] == kind]
    return list(df["answer"])


def key(rater, k):
    """Deliver key `k` the way the browser does: a custom message to the KeyCatcher."""
    rater.keys._handle_custom_msg({"type": "key", "key": k}, [])


def html_values(widget):
    """The values of every HTML widget in a widget tree."""
    found = [widget.value] if isinstance(widget, ipywidgets.HTML) else []
    for child in getattr(widget, "children", ()):
        found += html_values(child)
    return found


# ---- the fixture itself ------------------------------------------------------------------------------------------
def _broken_button():
    def broken(_button):
        raise RuntimeError("boom")

    button = ipywidgets.Button()
    button.on_click(broken)
    return button


def test_these_tests_run_on_the_ipywidgets_they_expect():
    """`make test` runs this file twice: on .venv's ipywidgets 8, then under ipywidgets 7.7.1 as Colab ships it
    (`scripts/test_widgets7.sh` sets RLHF_LAB_EXPECT_IPYWIDGETS); a layer that silently fell back would fail here."""
    import os

    import ipywidgets

    expected = os.environ.get("RLHF_LAB_EXPECT_IPYWIDGETS")
    if expected:
        assert ipywidgets.__version__ == expected
    else:
        assert ipywidgets.__version__.startswith("8."), ipywidgets.__version__


def test_fixture_catches_exceptions_in_widget_callbacks(callback_errors):
    with pytest.raises(RuntimeError, match="boom"):
        _broken_button().click()
    assert len(callback_errors) == 1 and str(callback_errors[0]) == "boom"
    callback_errors.clear()


def test_fixture_fails_a_test_even_if_the_exception_was_caught_again():
    with pytest.MonkeyPatch.context() as patch, pytest.raises(pytest.fail.Exception, match="RuntimeError: boom"):
        with widget_callback_errors(patch):
            with contextlib.suppress(RuntimeError):
                _broken_button().click()


def test_failing_on_submit_callback_is_reported_after_the_judgment_is_stored(store, callback_errors):
    rater = PairwiseRater(store, "alice", guard_s=0)
    rater.on_submit.append(lambda item, answer, judgment_id: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        rater.buttons["A"].click()
    assert [type(e) for e in callback_errors] == [ZeroDivisionError]
    callback_errors.clear()
    assert answers(store) == [{"choice": "A", "strength": None}]
    assert "ZeroDivisionError" in rater.message.value and rater.index == 1


# ---- pairwise ----------------------------------------------------------------------------------------------------
def test_pairwise_buttons_store_each_choice_and_reach_done(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    submitted = []
    rater.on_submit.append(lambda item, answer, judgment_id: submitted.append((item.id, answer["choice"])))
    assert rater.progress.value == "0 / 3" and "pair prompt 0" in rater.prompt.value

    rater.strength.value = 2
    rater.buttons["A"].click()
    assert answers(store) == [{"choice": "A", "strength": 2}]
    assert rater.progress.value == "1 / 3" and "pair prompt 1" in rater.prompt.value
    assert rater.strength.value is None

    rater.buttons["tie"].click()
    rater.strength.value = 3
    rater.buttons["both_bad"].click()
    assert answers(store)[1:] == [{"choice": "tie", "strength": None}, {"choice": "both_bad", "strength": None}]
    assert submitted == [(1, "A"), (2, "tie"), (3, "both_bad")]
    assert rater.done and rater.progress.value == "3 / 3" and "All done" in rater.prompt.value
    assert all(b.disabled for b in rater.buttons.values()) and rater.skip_button.disabled
    assert not rater.undo_button.disabled

    rater.buttons["B"].click()
    assert len(answers(store)) == 3 and "done" in rater.message.value
    assert store.pending_items("alice", "pairwise") == []


def test_each_judgment_is_stored_before_the_next_item_shows(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    seen = []
    rater.on_show.append(lambda item: seen.append((item and item.id, len(store.judgments_df()))))
    for choice in ("B", "A", "tie"):
        rater.buttons[choice].click()
    assert seen == [(2, 1), (3, 2), (None, 3)]


def test_skip_records_nothing_and_undo_removes_the_last_judgment(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    rater.skip_button.click()
    assert answers(store) == [] and rater.progress.value == "0 / 3 · 1 skipped" and rater.current.id == 2

    rater.buttons["B"].click()
    rater.buttons["A"].click()
    assert [a["choice"] for a in answers(store)] == ["B", "A"] and rater.done

    rater.undo_button.click()
    assert [a["choice"] for a in answers(store)] == ["B"]
    assert rater.current.id == 3 and rater.progress.value == "1 / 3 · 1 skipped"
    rater.buttons["tie"].click()
    assert [a["choice"] for a in answers(store)] == ["B", "tie"]

    rater.undo_button.click()
    rater.undo_button.click()
    assert answers(store) == [] and rater.current.id == 2 and rater.progress.value == "0 / 3 · 1 skipped"
    rater.undo_button.click()
    assert "Nothing to undo" in rater.message.value


def test_a_restarted_kernel_resumes_where_the_learner_stopped(store):
    """Judge 2 of 3, restart (a new rater on the same items, as rerunning the lesson's cell does): the rater counts
    the 2, shows pair 3, and undo takes back pair 2's judgment from before the restart and shows pair 2 again."""
    first = PairwiseRater(store, "alice", items=[1, 2, 3], guard_s=0)
    first.choose("A")
    first.choose("B")
    again = PairwiseRater(store, "alice", items=[1, 2, 3], guard_s=0)
    assert again.current.id == 3 and again.progress.value == "2 / 3 · 2 from before" and again.bar.value == 2
    again.undo_button.click()
    assert [a["choice"] for a in answers(store)] == ["A"] and again.current.id == 2
    assert again.progress.value == "1 / 3 · 1 from before" and "judge it again" in again.message.value
    again.choose("A")
    again.choose("tie")
    assert again.done and again.progress.value == "3 / 3 · 1 from before"
    assert [a["choice"] for a in answers(store)] == ["A", "A", "tie"]
    again.undo()  # this session's latest first
    assert again.current.id == 3 and [a["choice"] for a in answers(store)] == ["A", "A"]


def test_undo_never_touches_flags_or_other_items(store):
    rater = PairwiseRater(store, "alice", items=[1, 2], flags=True, guard_s=0)
    rater.choose("B")
    rater.flag_panel.checkboxes["harmful"].value = True
    rater.flag_panel.submit_button.click()
    store.record_pairwise(3, "alice", "A")  # judged in another cell, not one of this rater's items
    assert rater.undo() is not None
    df = store.judgments_df()
    assert df["kind"].tolist() == ["flags", "pairwise"] and df["item_id"].tolist()[1] == 3
    assert answers(store, "flags") == [{"flags": ["harmful"]}]
    assert rater.current.id == 1 and rater.undo() is None and "Nothing to undo" in rater.message.value


def test_an_item_judged_elsewhere_meanwhile_is_not_judged_twice(store):
    rater = PairwiseRater(store, "alice", items=[1, 2], guard_s=0)
    store.record_pairwise(1, "alice", "A")  # the same pair judged in another cell after this rater opened
    rater.buttons["B"].click()
    assert answers(store) == [{"choice": "A", "strength": None}] and "earlier judgment stands" in rater.message.value
    assert rater.current.id == 2 and rater.progress.value == "1 / 2 · 1 from before"
    rater.choose("B")
    assert answers(store)[-1] == {"choice": "B", "strength": None} and rater.done


def test_messages_speak_plainly_and_the_strength_has_keys(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    rater.press("w")
    rater.press("1")
    assert answers(store) == [{"choice": "A", "strength": 2}]
    assert "Saved: A is better, clearly." in rater.message.value and "item" not in rater.message.value
    rater.press("x")
    assert "Saved: both bad." in rater.message.value and "both_bad" not in rater.message.value
    ranker = RankingRater(store, "alice", guard_s=0)
    a, b, c = (r.id for r in ranker.current.responses)
    ranker.rank([c, a, b])
    assert "best first C &gt; A &gt; B" in ranker.message.value or "best first C > A > B" in ranker.message.value


def test_quick_double_click_is_not_taken_for_the_next_item(store):
    rater = PairwiseRater(store, "alice", guard_s=60)
    rater._shown_at -= 120
    rater.buttons["A"].click()
    rater.buttons["A"].click()
    assert len(answers(store)) == 1 and "quicker" in rater.message.value
    rater.buttons["A"].click()
    assert len(answers(store)) == 2


def test_pending_items_resume_where_the_annotator_stopped(store):
    PairwiseRater(store, "alice", guard_s=0).choose("A")
    again = PairwiseRater(store, "alice", guard_s=0)
    assert [it.id for it in again.items] == [2, 3] and again.progress.value == "0 / 2"
    assert len(PairwiseRater(store, "bob").items) == 3


def test_pairwise_refuses_items_it_cannot_show(store):
    with pytest.raises(ValueError, match=r"item\(s\) 6 are ranking items: judge those with RankingRater"):
        PairwiseRater(store, "alice", items=[6])
    with pytest.raises(ValueError, match="annotator"):
        PairwiseRater(store, " ")


# ---- keyboard ----------------------------------------------------------------------------------------------------
def test_key_messages_drive_the_pairwise_rater(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    assert set(rater.keys.shortcuts) == {"1", "2", "0", "x", "q", "w", "e", "s", "u"}
    key(rater, "1")
    key(rater, "2")
    assert [a["choice"] for a in answers(store)] == ["A", "B"]
    key(rater, "u")
    assert [a["choice"] for a in answers(store)] == ["A"] and rater.current.id == 2
    key(rater, "0")
    key(rater, "u")
    key(rater, "s")
    key(rater, "x")
    assert [a["choice"] for a in answers(store)] == ["A", "both_bad"] and rater.done
    assert store.judgments_df()["item_id"].tolist() == [1, 3]


def test_unknown_keys_and_malformed_messages_are_ignored(store):
    rater = PairwiseRater(store, "alice", guard_s=0)
    for content in ({"type": "key", "key": "q"}, {"type": "key"}, {"type": "other", "key": "1"}, "1", None):
        rater.keys._handle_custom_msg(content, [])
    assert answers(store) == [] and rater.index == 0


def test_raters_work_without_the_keyboard_widget(store, monkeypatch):
    monkeypatch.setattr(parts, "KeyCatcher", None)
    rater = PairwiseRater(store, "alice", guard_s=0)
    assert rater.keys is None
    rater.buttons["A"].click()
    rater.press("2")
    assert [a["choice"] for a in answers(store)] == ["A", "B"]


def test_keys_js_ships_in_the_package_and_sends_messages():
    source = files("rlhf_lab.widgets").joinpath("keys.js").read_text(encoding="utf-8")
    assert "model.send(" in source and 'type: "key"' in source and "export default" in source
    assert parts.KeyCatcher._esm == source
    assert files("rlhf_lab.widgets").joinpath("raters.css").is_file()


KEYS_HARNESS = """
import { readFileSync } from "node:fs";
const listeners = {}, docListeners = {}, classes = new Set();
let focused = 0;
globalThis.Element = class {};
class Node extends Element {  // a clicked element: inside the rater or not, a button or not
  constructor(inRater, button) { super(); this.inRater = inRater; this.button = button; }
  closest(sel) { return sel === "button" && this.button ? this : null; }
}
const rater = { contains: (t) => t.inRater === true };
const box = { setAttribute() {}, addEventListener(t, f) { listeners[t] = f; },
              removeEventListener(t) { delete listeners[t]; }, classList: { toggle(c, on) {
                on ? classes.add(c) : classes.delete(c); } },
              closest: (sel) => (sel === ".rlhf-rater" ? rater : null), contains: (t) => t === box,
              focus() { focused += 1; } };
globalThis.document = { createElement: () => box, addEventListener(t, f) { docListeners[t] = f; },
                        removeEventListener(t) { delete docListeners[t]; } };
const sent = [], states = [];
const traits = { hint: "1 = A", shortcuts: ["1", "x", "Enter"] };
const model = { get: (k) => traits[k], send: (m) => sent.push(m), on() {}, off() {} };
const mod = await import("data:text/javascript," + encodeURIComponent(readFileSync(process.argv[2], "utf8")));
const cleanup = mod.default.render({ model, el: { appendChild() {} } });
const state = () => states.push([box.textContent, classes.has("rlhf-keys-on"), focused]);
const tick = () => new Promise((r) => setTimeout(r, 5));
const press = (key, extra = {}) => listeners.keydown({ key, ctrlKey: false, metaKey: false, altKey: false,
  repeat: false, preventDefault() {}, stopPropagation() {}, ...extra });
state();                                                         // 0: keys off until the box is clicked
listeners.focus(); state();                                      // 1: on
for (const key of ["1", "X", "q", "Enter"]) press(key);
press("1", { repeat: true });
press("1", { ctrlKey: true });
docListeners.click({ target: new Node(true, true) }); await tick(); state();    // 2: a click on "A is better": on
docListeners.click({ target: new Node(true, false) }); await tick(); state();   // 3: elsewhere in the rater: off
listeners.focus(); docListeners.click({ target: new Node(false, true) }); await tick(); state();  // 4: another cell
cleanup();
console.log(JSON.stringify({ sent, left: Object.keys(listeners).concat(Object.keys(docListeners)), states,
                             tab: box.tabIndex }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run keys.js")
def test_keys_js_sends_one_message_per_handled_key_and_says_whether_keys_are_on(tmp_path):
    """Run keys.js's render() in Node against a stub element and model: key presses become model.send calls; the box
    says keys are off until clicked; a click on the rater's own button keeps them on (focus returns), a click
    anywhere else turns them off and the box says so."""
    harness = tmp_path / "harness.mjs"
    harness.write_text(KEYS_HARNESS)
    source = files("rlhf_lab.widgets").joinpath("keys.js")
    run = subprocess.run(["node", str(harness), str(source)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["sent"] == [{"type": "key", "key": k} for k in ("1", "x", "Enter")]
    assert out["left"] == [] and out["tab"] == 0
    off, on = "⌨ keys off: click here to use the keys · 1 = A", "⌨ keys on: 1 = A"
    assert out["states"] == [[off, False, 0], [on, True, 0], [on, True, 1], [off, False, 1], [off, False, 1]]


# ---- Likert and ranking ------------------------------------------------------------------------------------------
def test_likert_scores_from_toggles_and_keys(store):
    rater = LikertRater(store, "alice", guard_s=0)
    assert [len(it.responses) for it in rater.items] == [1, 2]
    rater.submit_button.click()
    assert answers(store) == [] and "score" in rater.message.value

    rater.score_widgets[0].value = 6
    rater.submit_button.click()
    assert answers(store) == [{"scores": [6], "scale": [1, 7]}] and rater.progress.value == "1 / 2"

    key(rater, "3")
    key(rater, "7")
    key(rater, "Enter")
    assert answers(store)[-1] == {"scores": [3, 7], "scale": [1, 7]} and rater.done

    rater.undo()
    assert len(answers(store)) == 1 and rater.current.id == 5
    assert [s.value for s in rater.score_widgets] == [None, None]


def test_likert_custom_scale(store):
    rater = LikertRater(store, "alice", items=[4], scale=(1, 5), guard_s=0)
    assert [v for _, v in rater.score_widgets[0].options] == [1, 2, 3, 4, 5]
    rater.rate([5])
    assert answers(store) == [{"scores": [5], "scale": [1, 5]}]


def test_ranking_from_dropdowns_and_keys(store):
    rater = RankingRater(store, "alice", guard_s=0)
    a, b, c = (r.id for r in rater.current.responses)
    rater.rank_widgets[0].value = b
    rater.rank_widgets[1].value = b
    rater.rank_widgets[2].value = a
    rater.submit_button.click()
    assert answers(store) == [] and "different reply" in rater.message.value

    rater.rank_widgets[1].value = c
    rater.submit_button.click()
    assert answers(store) == [{"order": [b, c, a]}] and rater.progress.value == "1 / 2"

    a, b, c = (r.id for r in rater.current.responses)
    for k in ("3", "3", "1", "Backspace", "2", "1"):
        key(rater, k)
    assert [d.value for d in rater.rank_widgets] == [c, b, a]
    key(rater, "Enter")
    assert answers(store)[-1] == {"order": [c, b, a]} and rater.done
    assert rater.actions.layout.display == "none" and rater.submit_button.disabled
    rater.undo()
    assert rater.actions.layout.display is None and [d.value for d in rater.rank_widgets] == [None] * 3


# ---- thumbs ------------------------------------------------------------------------------------------------------
def thumbs(store):
    """(response id, up) of the stored thumbs, oldest first."""
    df = store.judgments_df()
    df = df[df["kind"] == "thumbs"]
    return [(int(r), a["up"]) for r, a in zip(df["response_id"], df["answer"])]


def test_thumbs_buttons_and_keys_store_each_answer_one_reply_at_a_time(store):
    rater = ThumbsRater(store, "alice", items=[store.get_item(1), store.get_item(2)], guard_s=0)
    replies = [r.id for i in (1, 2) for r in store.get_item(i).responses]
    assert [r.id for r in rater.items] == replies and rater.progress.value == "0 / 4"
    assert [r.id for r in ThumbsRater(store, "alice", items=replies[::-1]).items] == replies[::-1]  # by reply id
    assert set(rater.keys.shortcuts) == {"1", "2", "s", "u"}
    assert "pair prompt 0" in rater.prompt.value and len(rater.body.children) == 1
    assert "pair 0 reply A" in "".join(html_values(rater.body))

    rater.up_button.click()
    assert thumbs(store) == [(replies[0], True)] and rater.progress.value == "1 / 4"
    assert "Saved: thumbs up (a good reply)." in rater.message.value and "True" not in rater.message.value
    assert "pair 0 reply B" in "".join(html_values(rater.body))
    key(rater, "2")
    assert thumbs(store)[-1] == (replies[1], False) and "Saved: thumbs down (a bad reply)." in rater.message.value
    key(rater, "s")
    assert len(thumbs(store)) == 2 and rater.progress.value == "2 / 4 · 1 skipped"
    assert "pair prompt 1" in rater.prompt.value and "Skipped (nothing saved)" in rater.message.value
    rater.down_button.click()
    assert thumbs(store) == [(replies[0], True), (replies[1], False), (replies[3], False)]
    assert rater.done and "All done" in rater.prompt.value and rater.up_button.disabled and rater.down_button.disabled
    rater.judge(True)
    assert len(thumbs(store)) == 3 and "done" in rater.message.value
    assert store.pending_items("alice") == store.pending_items("bob"), "thumbs judge replies, not items"
    assert len(ThumbsRater(store, "bob", guard_s=0).items) == 15  # default: every reply in the store


def test_thumbs_resume_after_a_restart_and_undo_only_their_own(store):
    """Two of four judged, then a restart (a new rater on the same replies): it counts the two and shows the third.
    Undo takes back this annotator's latest thumb on this rater's replies, never a flag on the same reply, a
    judgment of an item, or a thumb given elsewhere, even when those came later."""
    pairs = [store.get_item(1), store.get_item(2)]
    first = ThumbsRater(store, "alice", items=pairs, flags=True, guard_s=0)
    a, b, c, d = (r.id for r in first.items)
    first.judge(True)
    first.judge(False)
    assert [label for label, _ in first.flag_panel.reply.options] == ["this reply"]
    first.flag_panel.submit(["harmful"], response_id=b)
    store.record_pairwise(1, "alice", "A")
    outside = store.get_item(3).responses[0].id
    store.record_thumbs(outside, "alice", True)

    again = ThumbsRater(store, "alice", items=pairs, guard_s=0)
    assert again.current.id == c and again.progress.value == "2 / 4 · 2 from before" and again.bar.value == 2
    again.undo_button.click()
    assert thumbs(store) == [(a, True), (outside, True)] and again.current.id == b
    assert "judge it again" in again.message.value and again.progress.value == "1 / 4 · 1 from before"
    assert answers(store, "flags") == [{"flags": ["harmful"]}] and len(answers(store, "pairwise")) == 1
    again.judge(True)
    again.judge(True)
    assert again.current.id == d and thumbs(store)[-2:] == [(b, True), (c, True)]
    key(again, "u")
    assert again.current.id == c and thumbs(store)[-1] == (b, True)
    again.undo()
    again.undo()
    assert thumbs(store) == [(outside, True)] and again.current.id == a
    assert again.undo() is None and "Nothing to undo" in again.message.value
    assert answers(store, "flags") == [{"flags": ["harmful"]}] and len(answers(store, "pairwise")) == 1


def test_a_thumb_given_elsewhere_meanwhile_stands(store):
    rater = ThumbsRater(store, "alice", items=[store.get_item(1)], guard_s=0)
    first, second = (r.id for r in rater.items)
    store.record_thumbs(first, "alice", False)
    rater.up_button.click()
    assert thumbs(store) == [(first, False)] and "earlier judgment stands" in rater.message.value
    assert rater.current.id == second


# ---- flags -------------------------------------------------------------------------------------------------------
def test_flag_panel_follows_a_rater_and_stores_flags(store):
    rater = PairwiseRater(store, "alice", flags=True, guard_s=0)
    panel = rater.flag_panel
    assert panel.widget in rater.widget.children
    first_b = rater.current.responses[1].id
    assert [label for label, _ in panel.reply.options] == ["A", "B"]

    panel.reply.value = first_b
    panel.checkboxes["harmful"].value = True
    panel.checkboxes["off_topic"].value = True
    panel.comment.value = "rude"
    panel.submit_button.click()
    df = store.judgments_df()
    assert df["kind"].tolist() == ["flags"] and df["response_id"].tolist() == [first_b]
    assert df["answer"][0] == {"flags": ["harmful", "off_topic"]} and df["comment"][0] == "rude"
    assert panel.checkboxes["harmful"].value and panel.comment.value == "rude"  # the form shows what is saved
    assert panel.message.value.endswith("Saved for B: harmful, off topic.</span>")  # words, not internal names

    assert panel.reply.value == first_b  # flagging B again changes B's flags: still one flag judgment for B
    panel.checkboxes["harmful"].value = panel.checkboxes["off_topic"].value = False
    panel.checkboxes["biased"].value = True
    panel.submit_button.click()
    assert "Changed your flags for B: biased." in panel.message.value and len(store.judgments_df()) == 1
    assert answers(store, "flags") == [{"flags": ["biased"]}]
    panel.reply.value = rater.current.responses[0].id
    panel.submit_button.click()
    assert answers(store, "flags")[-1] == {"flags": []} and "Saved for A: nothing wrong." in panel.message.value

    rater.buttons["A"].click()
    assert panel.reply.value == rater.current.responses[0].id
    rater.undo()
    assert len(store.judgments_df()) == 2 and rater.current.id == 1


def test_flags_ticked_but_not_saved_are_saved_when_the_rater_moves_on(store):
    rater = PairwiseRater(store, "alice", flags=True, guard_s=0)
    panel = rater.flag_panel
    first_b = rater.current.responses[1].id
    panel.reply.value = first_b
    panel.checkboxes["harmful"].value = True
    panel.comment.value = "insults the user"
    rater.buttons["A"].click()  # chose A before pressing "save flags"
    flags = store.judgments_df().query("kind == 'flags'")
    assert flags["response_id"].tolist() == [first_b] and flags["answer"].tolist() == [{"flags": ["harmful"]}]
    assert flags["comment"].tolist() == ["insults the user"]
    assert "Saved for B: harmful." in panel.message.value
    assert not panel.checkboxes["harmful"].value and panel.comment.value == ""  # the next item's form is clean
    rater.buttons["B"].click()  # nothing ticked: moving on stores no flag judgment
    assert (store.judgments_df()["kind"] == "flags").sum() == 1


def test_flag_panel_alone(store):
    responses = store.get_item(4).responses
    panel = FlagPanel(store, "bob", responses)
    seen = []
    panel.on_submit.append(lambda response, answer, judgment_id: seen.append((response.id, answer["flags"])))
    panel.checkboxes["factually_wrong"].value = True
    panel.submit_button.click()
    assert seen == [(responses[0].id, ["factually_wrong"])]
    assert answers(store, "flags") == [{"flags": ["factually_wrong"]}]
    assert FlagPanel(store, "bob").submit_button.disabled


# ---- escaping ----------------------------------------------------------------------------------------------------
def test_every_rater_shows_html_in_replies_as_text(tmp_path):
    store = FeedbackStore(tmp_path / "evil.db")
    ids = store.add_responses([dict(prompt=EVIL, response=EVIL + str(n), model="m", iteration=0, sampling={},
                                    eos=True) for n in range(3)])
    raters = [PairwiseRater(store, "eve", items=[store.add_item(ids[:2], kind="pairwise")], flags=True),
              LikertRater(store, "eve", items=[store.add_item(ids[:1], kind="rating")]),
              RankingRater(store, "eve", items=[store.add_item(ids, kind="ranking")])]
    raters.append(ThumbsRater(store, "eve", items=ids[:1], flags=True))
    for rater in raters:
        shown = "\n".join(html_values(rater.widget))
        assert shown.count("&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;") == 1 + len(
            getattr(rater.current, "responses", [rater.current]))
        assert "<script>" not in shown and "<b>bold" not in shown
    store.close()


# ---- headless ----------------------------------------------------------------------------------------------------
HEADLESS = """
import sys, time
if sys.argv[2] == "no-anywidget":
    sys.modules["anywidget"] = None  # import anywidget now fails
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.ui import PairwiseRater
shell = InteractiveShell.instance()
store = FeedbackStore(sys.argv[1])
ids = store.add_responses([dict(prompt="p", response=t, model="m", iteration=0, sampling={}, eos=True)
                           for t in "ab"])
store.add_item(ids)
start = time.perf_counter()
with capture_output() as shown:
    rater = PairwiseRater(store, "ci", guard_s=0)
    display(rater)
took = time.perf_counter() - start
rater.buttons["A"].click()
mimes = [sorted(o.data) for o in shown.outputs]
print(took, rater.keys is None, len(store.judgments_df()), mimes)
"""


@pytest.mark.parametrize("mode", ["anywidget", "no-anywidget"])
def test_headless_display_returns_at_once(tmp_path, mode):
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(HEADLESS), str(tmp_path / "h.db"), mode],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    took, no_keys, judged, mimes = run.stdout.strip().split(" ", 3)
    assert float(took) < 5 and judged == "1"
    assert no_keys == str(mode == "no-anywidget")
    assert "application/vnd.jupyter.widget-view+json" in mimes


# ---- reading long replies --------------------------------------------------------------------------------------------
def test_markdown_replies_read_as_formatted_and_stay_inert():
    from rlhf_lab.ui.parts import markdown_html, reply_html

    text = ("# Plan\nSome **bold**, *italic* and `x < y`; 2*3*4 stays.\n- one\n- two " + EVIL +
            "\n```python\nprint('**not bold**')\n```\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    shown = markdown_html(text)
    assert "<strong>Plan</strong>" in shown and "<strong>bold</strong>" in shown and "<em>italic</em>" in shown
    assert "<code>x &lt; y</code>" in shown and "2*3*4" in shown and "• one\n• two" in shown
    assert "<pre><code>print(&#x27;**not bold**&#x27;)</code></pre>" in shown  # no formatting inside code
    assert '<pre class="rlhf-table">| a | b |\n|---|---|\n| 1 | 2 |</pre>' in shown
    assert "<script>" not in shown and "<b>bold" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    tags = set(re.findall(r"<(\w+)", shown))
    assert tags <= {"strong", "em", "code", "pre"} and "href" not in shown and "onerror" not in shown
    assert markdown_html("a\x000\x00b") == "a␀0␀b"  # a NUL byte shows, and cannot reach the block markers
    assert "(empty reply)" in reply_html(" \n ") and "rlhf-empty" in reply_html("")
    raw = reply_html("**x**", markdown=False)
    assert "**x**" in raw and "<strong>" not in raw


def test_a_rater_shows_markdown_unless_told_not_to(tmp_path):
    store = FeedbackStore(tmp_path / "md.db")
    ids = store.add_responses([dict(prompt="p", response=t, model="m", iteration=0) for t in ("**yes**", "")])
    store.add_item(ids)
    cards = [c.children[1].value for c in PairwiseRater(store, "md", guard_s=0).body.children]
    assert "<strong>yes</strong>" in cards[0] and "(empty reply)" in cards[1]
    plain = [c.children[1].value for c in PairwiseRater(store, "plain", guard_s=0, markdown=False).body.children]
    assert "**yes**" in plain[0] and "<strong>" not in plain[0]
