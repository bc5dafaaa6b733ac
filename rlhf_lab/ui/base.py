"""The raters' shared controller, `Rater`: a queue of things to judge, progress, skip and undo, messages, key
shortcuts and callbacks. `ui.raters` (pairwise, Likert, ranking) and `ui.thumbs` (one reply at a time) build on it.

Widgets only emit events; the controller turns a click (or a key press) into one store call, waits for it to
return, and only then shows the next item. A store call that fails (a bad or repeated judgment, a read-only or
locked store, a file gone) is said in one line in the message area, with how to fix it, and the item and the answer
on screen stay; a store that is read-only to the learner is said when the rater is built, its answer buttons off.
"""

from __future__ import annotations

import html
import time

import ipywidgets as w
from traitlets import TraitError

from rlhf_lab.feedback.drafts import DraftBook, fingerprint, saved_words
from rlhf_lab.feedback.records import Item
from rlhf_lab.ui.parts import (
    FlagPanel,
    make_key_catcher,
    notify,
    read_only_note,
    say,
    say_store_trouble,
    style_widget,
    text_html,
)

__all__ = ["Rater", "RATER_OF_KIND"]

RATER_OF_KIND = {"pairwise": "PairwiseRater", "rating": "LikertRater", "ranking": "RankingRater"}
"""Which rater judges the store's items of each kind."""
_GROUP_SIZE = {"pairwise": 2, "rating": 2, "ranking": 3, "thumbs": 2}  # for the "how to add items" hint


class _Shown(Exception):
    """A store call failed and the message area says so (the action stops there)."""


def _buttons(widgets) -> list:
    """The buttons and toggles among `widgets` and their children (what the done state disables)."""
    found = []
    for widget in widgets:
        if isinstance(widget, (w.Button, w.ToggleButtons)):
            found.append(widget)
        found += _buttons(getattr(widget, "children", ()))
    return found


class Rater:
    """Shared controller: the queue of items, progress, skip/undo, messages, key shortcuts and callbacks.

    Subclasses set `kind`, build their answer widgets in `_controls()`, show an item in `_render(item)`, and map
    keys to actions in `_key_map()`; one that judges something other than the store's items (single replies) also
    overrides `_given`, `_pending_ids` and `_undo_latest`. Attributes tests and lessons use: `widget` (the VBox to
    display), `items`, `index` (position in `items`), `history` ((index, judgment id) of this session's judgments,
    latest last), `message` and `progress` (HTML widgets), `actions` (the row of answer widgets, hidden when done),
    `keys` (the KeyCatcher or None), `draft_book` (see below), `on_submit` (callbacks `f(item, answer, judgment_id)`
    after each stored judgment) and `on_show` (callbacks `f(item or None)`).

    A rater judges items of its own `kind` only (others are refused when it is built), and its undo takes back only
    its own kind's judgments. Undo deletes exactly the judgment this rater recorded last (if another cell took it
    back meanwhile, undo says so and deletes nothing). Skip, undo and the answers ignore a second press within
    `guard_s` seconds of the screen changing (a double click, a key pressed twice): it says so, and a third press
    goes through. An answer entered but not submitted is never dropped unseen: undo keeps it and fills it in again
    when the learner comes back to the item, and a skip over a complete answer (one submit would save) first says
    it is not saved; a second skip leaves it unsaved. Skip never saves: submit does.

    Unsubmitted answers also survive a kernel crash or restart: every change to the answer widgets is saved to a
    drafts file (`draft_book`, a `feedback.drafts.DraftBook`: beside a SQLite store's file, in `<store file>-drafts/`,
    else in a per-user folder; none for an in-memory or read-only store), and a rater built later for the same store
    and annotator fills the answer in again when it shows the item, and says so. Storing the item's judgment drops
    its draft. Subclasses with such widgets list them in `_answer_widgets()`.
    """

    kind = ""
    hint = ""

    def __init__(self, store, annotator: str, items=None, *, flags: bool = False, guard_s: float = 0.5,
                 markdown: bool = True):
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError("annotator must be a non-empty string such as 'alice' (who is rating?)")
        self.store, self.annotator, self.guard_s = store, annotator, guard_s
        self.markdown = markdown  # replies' markdown formatted (False: the raw text)
        self.read_only = read_only_note(store, "judgments")  # "" when the store can be written
        self._asked = items is not None
        given = self._given(items)
        for item in given:
            self._check_item(item)
        # Items judged before (an earlier session, a restarted kernel) are counted as done and not shown again.
        self.all_items: list[Item] = given
        waiting = self._pending_ids()
        self.items: list[Item] = [it for it in given if it.id in waiting]
        self.judged_before = len(given) - len(self.items)
        self.index = 0
        self.history: list[tuple[int, int]] = []
        self.on_submit: list = []
        self.on_show: list = []
        self._shown_at = float("-inf")
        self.draft_book = DraftBook.for_store(store, annotator)  # answers not submitted, kept for a restart
        found = self.draft_book.resume({it.id: (self._target(it.id), fingerprint(it)) for it in self.items},
                                       store.judged_targets(annotator)) if self.draft_book else {}
        self._drafts: dict = {i: e["answer"] for i, e in found.items()}  # item id -> an answer entered, not submitted
        self._draft_times = {i: e["saved_at"] for i, e in found.items()}  # item id -> when (drafts from the file)
        self._filling = False  # True while the rater itself sets the answer widgets (no draft is saved then)
        self._warned = None  # the index where skip said a complete answer is not saved

        self.progress = w.HTML()
        self.bar = w.IntProgress(min=0, max=max(1, len(self.all_items)), layout=w.Layout(width="160px"))
        self.prompt = w.HTML()
        self.body = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap", width="100%"))
        self.skip_button = w.Button(description="skip", tooltip="skip this item (key s)", icon="forward")
        self.undo_button = w.Button(description="undo last", tooltip="undo your last judgment (key u)", icon="undo")
        self.skip_button.on_click(lambda _b: self.skip())
        self.undo_button.on_click(lambda _b: self.undo())
        self.undo_button.disabled = bool(self.read_only)
        self.message = w.HTML()
        self.actions = w.HBox(self._controls(), layout=w.Layout(flex_flow="row wrap"))  # narrow: wrap whole widgets
        self._action_widgets = _buttons([self.actions, self.skip_button])
        self.keys = make_key_catcher(self.press, self._key_map(), self.hint)
        top = [self.keys] if self.keys is not None else []
        self.flag_panel = FlagPanel(store, annotator) if flags else None
        self.widget = w.VBox([style_widget(), *top, w.HBox([self.bar, self.progress]), self.prompt, self.body,
                              self.actions, w.HBox([self.skip_button, self.undo_button]), self.message])
        self.widget.add_class("rlhf-rater")  # keys.js keeps the keys on after a click on this rater's buttons
        if self.flag_panel is not None:
            self.flag_panel.attach(self)
            self.widget.children += (self.flag_panel.widget,)
        self._show()

    # ---- to override -----------------------------------------------------------------------------------------------
    def _given(self, items) -> list:
        """What this rater shows: `items` (Items or their ids), or the annotator's pending items of its kind."""
        if items is None:
            return self.store.pending_items(self.annotator, self.kind)
        given = [it if isinstance(it, Item) else self.store.get_item(it) for it in items]
        other = [it for it in given if it.kind != self.kind]
        if other:
            kinds = sorted({it.kind for it in other})
            ids = ", ".join(str(it.id) for it in other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
            raise ValueError(f"{type(self).__name__} judges {self.kind} items, but item(s) {ids} are "
                             f"{' and '.join(kinds)} items: judge those with "
                             f"{' or '.join(RATER_OF_KIND.get(k, '?') for k in kinds)}, or pass "
                             f"store.items(kind={self.kind!r})")
        return given

    def _pending_ids(self) -> set[int]:
        """The ids of what the annotator has not judged yet, as the store says now."""
        return {it.id for it in self.store.pending_items(self.annotator, self.kind)}

    def _undo_latest(self, ids) -> int | None:
        """Delete the annotator's latest judgment of one of `ids` (nothing else); returns its id or None."""
        return self.store.undo_last(self.annotator, item_ids=ids, kind=self.kind)

    def _check_item(self, item: Item) -> None:
        """Refuse items this rater cannot show (raise ValueError)."""

    def _controls(self) -> list:
        """The answer widgets (buttons, toggles) shown under the item; built once."""
        return []

    def _render(self, item: Item) -> None:
        """Show `item` in `self.body` and reset the answer widgets."""

    def _key_map(self) -> dict:
        """Key -> action for the keyboard shortcuts."""
        return {"s": self.skip, "u": self.undo}

    def _draft(self):
        """The answer entered on screen and not submitted (widget values), or None when nothing was entered."""
        return None

    def _complete(self, draft) -> str | None:
        """`draft` in words when it is a whole answer (submit would save it), else None."""
        return None

    def _restore(self, draft) -> None:
        """Fill the answer widgets with `draft` again (the item was just rendered)."""

    def _answer_widgets(self) -> list:
        """The widgets whose values `_draft()` reads (each change is saved to the drafts file)."""
        return []

    def _target(self, item_id: int) -> str:
        """The store's name for what this rater judges ("item:7"): the key of its draft in the drafts file."""
        return f"item:{int(item_id)}"

    # ---- state -----------------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once every item has been judged or skipped."""
        return self.index >= len(self.items)

    @property
    def current(self) -> Item | None:
        """The item on screen (None when done)."""
        return None if self.done else self.items[self.index]

    @property
    def skipped(self) -> int:
        """How many items before the current one were skipped."""
        judged = {i for i, _ in self.history}
        return sum(1 for i in range(min(self.index, len(self.items))) if i not in judged)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ---- actions ---------------------------------------------------------------------------------------------------
    def press(self, key: str) -> None:
        """Act on a shortcut key (what the KeyCatcher calls); unknown keys are ignored."""
        action = self._key_map().get(key)
        if action is not None:
            action()

    def _too_quick(self, again: str | None) -> bool:
        """True when an action comes within `guard_s` of the screen changing (the second click of a double click, a
        key pressed twice): it is not taken, `again` (how to do it anyway) is said, and the next press goes through."""
        if time.monotonic() - self._shown_at >= self.guard_s:
            return False
        self._shown_at = float("-inf")
        if again:
            say(self.message, f"That was quicker than reading: {again}", error=True)
        return True

    def _call(self, failed: str, fn, *args):
        """`fn(*args)`, a store call; when the store fails, the message area says what went wrong and how to fix it
        (starting with `failed`) and `_Shown` is raised. An error that is not the store's is raised as it is."""
        try:
            return fn(*args)
        except Exception as err:
            say_store_trouble(self.message, err, failed)  # a bug's error is raised again there
            raise _Shown from err

    def _keep_draft(self) -> None:
        """Remember the answer on screen (if any) for when the current item is shown again."""
        draft = None if self.done else self._draft()
        if draft is not None:
            self._drafts[self.current.id] = draft

    def _save_draft(self, _change=None) -> None:
        """An answer widget changed: save the answer on screen to the drafts file (trouble is said once)."""
        if self._filling or self.draft_book is None or self.done:
            return
        self.draft_book.put(self._target(self.current.id), self._draft(), fingerprint(self.current))
        trouble = self.draft_book.take_note()
        if trouble:
            say(self.message, trouble, error=True)

    def _put_back(self, draft) -> str:
        """Fill in `draft` for the item just rendered; returns what to say about it."""
        saved_at = self._draft_times.pop(self.current.id, None)
        try:
            self._restore(draft)
        except (TraitError, TypeError, ValueError):  # a draft file edited by hand, or an item that changed
            self._render(self.current)
            return "Your unsubmitted answer from before does not fit this item, so it is not filled in."
        if saved_at is None:
            return "Your unsaved answer to this one is filled in again."
        how = "press submit to save it" if self._complete(draft) else "finish it and press submit to save it"
        return f"Your unsubmitted answer from {saved_words(saved_at)} is back: {how}."

    def skip(self) -> None:
        """Go to the next item without recording anything (a complete answer on screen: say first that it is not
        saved; a second skip leaves it unsaved)."""
        if self.done:
            return
        warned = self._warned == self.index
        if self._too_quick(None if warned else "press skip again to skip it."):
            return
        words = self._complete(self._draft())
        if words and not warned:
            self._warned, self._shown_at = self.index, time.monotonic()  # a double click is no confirmation
            say(self.message, f"Not skipped: your answer is complete but not saved yet: {words}. Press submit "
                              "(Enter) to save it, or skip again to leave it unsaved.", error=True)
            return
        self._keep_draft()
        self.index += 1
        self._show("Skipped (nothing saved).")

    def undo(self) -> int | None:
        """Delete this annotator's latest judgment of one of this rater's items (also one made before a restart;
        never a flag, never another kind) and show that item again. Returns the deleted judgment's id (None:
        nothing undone)."""
        if self._too_quick("press undo again to undo one more."):
            return None
        if self.read_only:
            say(self.message, self.read_only, error=True)
            return None
        try:
            return self._undo()
        except _Shown:
            return None

    def _undo(self) -> int | None:
        if self.history:  # this session's latest: exactly that judgment, or nothing
            index, judgment_id = self.history[-1]
            deleted = self._call("Not undone", self._undo_judgment, judgment_id)
            self.history.pop()
            if deleted is None:
                self._shown_at = time.monotonic()
                self._show_progress()
                say(self.message, "Your last judgment here was already taken back or changed in another cell or "
                                  "notebook, so nothing was deleted; press undo again for the one before it.")
                return None
            self._keep_draft()
            self.index = index
            self._show("Undid your last judgment; judge it again.")
            return deleted
        waiting = {it.id for it in self.items}
        before = [it.id for it in self.all_items if it.id not in waiting]
        deleted = self._call("Not undone", self._undo_latest, before) if before else None
        if deleted is None:
            say(self.message, "Nothing to undo.")
            return None
        pending = self._call(f"Undid judgment {deleted}, but then", self._pending_ids)
        undone = next((it for it in self.all_items if it.id in pending and it.id not in waiting), None)
        if undone is None:  # e.g. no longer assigned to this annotator
            say(self.message, f"Undid judgment {deleted}, made before this rater opened; its item is not "
                              "waiting for you here, so it is not shown again.")
            return deleted
        self._keep_draft()
        self.items.insert(self.index, undone)
        self.judged_before -= 1
        self._show("Undid a judgment you made before this rater opened; judge it again.")
        return deleted

    def _undo_judgment(self, judgment_id: int) -> int | None:
        """Delete exactly `judgment_id` (if it is still there); returns it, or None."""
        return self.store.undo_last(self.annotator, judgment_ids=[judgment_id])

    def _submit(self, record, answer: dict) -> int | None:
        """Store the current item's judgment with `record(item)`; advance only once the store call returned."""
        if self.done:
            say(self.message, "All items are done; press undo to change your last judgment.", error=True)
            return None
        if self._too_quick("press or click again to record it."):
            return None
        if self.read_only:
            say(self.message, self.read_only, error=True)
            return None
        item = self.current
        try:
            pending = item.id in self._call("Not saved", self._pending_ids)
            judgment_id = self._call("Not saved", record, item) if pending else None
        except _Shown:
            return None
        if self.draft_book is not None:  # stored now (or judged elsewhere before): the draft is done with
            self.draft_book.drop(self._target(item.id))
        if not pending:
            self.items.pop(self.index)  # judged meanwhile in another cell or notebook: that judgment stands
            self.judged_before += 1
            self._show("You had already judged that one elsewhere (another cell or notebook); your earlier judgment "
                       "stands. Here is the next.")
            return None
        self.history.append((self.index, judgment_id))
        self.index += 1
        self._show(f"Saved: {self._describe(answer, item)}.")
        notify(self.on_submit, self.message, item, answer, judgment_id)
        return judgment_id

    def _describe(self, answer: dict, item: Item) -> str:
        """The answer in words for the message area."""
        return ", ".join(f"{k} {v}" for k, v in answer.items() if v is not None)

    def _show_progress(self) -> int:
        judged, total = self.judged_before + len(self.history), len(self.all_items)
        extra = (f" · {self.judged_before} from before" if self.judged_before else "") + (
            f" · {self.skipped} skipped" if self.skipped else "")
        self.progress.value = f"{judged} / {total}{extra}"
        self.bar.value = judged
        return judged

    def _nothing_to_judge(self) -> str:
        """What a rater with nothing to judge says, and how to add something."""
        add = (f"store.add_response_groups(records, size={_GROUP_SIZE.get(self.kind, 2)}"
               + (f", kind={self.kind!r})" if self.kind in RATER_OF_KIND else ")"))
        if self._asked:
            where = "the list of items given is empty"
        elif self.kind in RATER_OF_KIND:
            where = f"{self.annotator} has no {self.kind} items waiting in this store (none added yet, or all judged)"
        else:
            where = "this store has no replies yet"
        return (f"<b>Nothing to judge</b>: {html.escape(where)}. Add some with <code>{html.escape(add)}</code> "
                "(records: dicts with prompt, response, model, iteration), then run this cell again.")

    def _show(self, note: str = "") -> None:
        """Draw the current item (or the done state), the progress and `note`."""
        judged = self._show_progress()
        for widget in self._action_widgets:
            widget.disabled = self.done or (bool(self.read_only) and widget is not self.skip_button)
        self.actions.layout.display = "none" if self.done else None
        self._warned = None
        if not self.all_items:
            self.prompt.value = self._nothing_to_judge()
            self.body.children = ()
        elif self.done:
            self.prompt.value = (f"<b>All done</b>: {judged} judged, {self.skipped} skipped. "
                                 "Thank you! (Undo still works.)")
            self.body.children = ()
        else:
            self.prompt.value = text_html(self.current.prompt, "rlhf-prompt")
            self._filling = True
            try:
                self._render(self.current)
                draft = self._drafts.pop(self.current.id, None)
                if draft is not None:
                    note = f"{note} {self._put_back(draft)}".strip()
            finally:
                self._filling = False
            for widget in self._answer_widgets():
                widget.observe(self._save_draft, names="value")  # once per widget (traitlets keeps one)
        trouble = self.draft_book.take_note() if self.draft_book is not None else ""  # the drafts file: said once
        note = f"{trouble} {note}".strip()
        say(self.message, self.read_only or note, error=bool(self.read_only or trouble))  # read-only: said until fixed
        self._shown_at = time.monotonic()
        notify(self.on_show, self.message, self.current)
