"""In-notebook raters: pairwise, Likert and ranking, built from plain ipywidgets (7.7 and 8); see also `FlagPanel`.

Widgets only emit events; each rater is a thin controller that turns a click (or a key press) into one store call,
waits for it to return, and only then shows the next item. A `ValueError` from the store (a bad or repeated
judgment) is shown in the rater's message area and the item stays on screen. Model text is always escaped before
it reaches an HTML widget, so a reply containing `<script>` displays as text.

    rater = PairwiseRater(store, "alice")     # the items alice has not judged yet
    rater                                     # display it; keys 1/2/0/x/s/u once the key box is clicked
    rater.on_submit.append(lambda item, answer, judgment_id: ...)

Nothing here waits for a frontend, so a rater displayed in a headless run (papermill) returns at once.
"""

from __future__ import annotations

import html
import time

import ipywidgets as w

from rlhf_lab.feedback.records import Item
from rlhf_lab.ui.parts import (
    LETTERS,
    FlagPanel,
    make_key_catcher,
    notify,
    reply_card,
    say,
    style_widget,
    text_html,
)

__all__ = ["PairwiseRater", "LikertRater", "RankingRater"]

STRENGTHS = (("slightly", 1), ("clearly", 2), ("much", 3))
"""How much better the chosen reply is (optional; the store keeps None when no strength is picked)."""


def _buttons(widgets) -> list:
    """The buttons and toggles among `widgets` and their children (what the done state disables)."""
    found = []
    for widget in widgets:
        if isinstance(widget, (w.Button, w.ToggleButtons)):
            found.append(widget)
        found += _buttons(getattr(widget, "children", ()))
    return found


class _Rater:
    """Shared controller: the queue of items, progress, skip/undo, messages, key shortcuts and callbacks.

    Subclasses set `kind`, build their answer widgets in `_controls()`, show an item in `_render(item)`, and map
    keys to actions in `_key_map()`. Attributes tests and lessons use: `widget` (the VBox to display), `items`,
    `index` (position in `items`), `history` ((index, judgment id) of this session's judgments, latest last),
    `message` and `progress` (HTML widgets), `actions` (the row of answer widgets, hidden when done), `keys` (the KeyCatcher or None), `on_submit` (callbacks
    `f(item, answer, judgment_id)` after each stored judgment) and `on_show` (callbacks `f(item or None)`).
    """

    kind = ""
    hint = ""

    def __init__(self, store, annotator: str, items=None, *, flags: bool = False, guard_s: float = 0.3,
                 markdown: bool = True):
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError("annotator must be a non-empty string such as 'alice' (who is rating?)")
        self.store, self.annotator, self.guard_s = store, annotator, guard_s
        self.markdown = markdown  # replies' markdown formatted (False: the raw text)
        pending = store.pending_items(annotator, self.kind)
        given = pending if items is None else [it if isinstance(it, Item) else store.get_item(it) for it in items]
        for item in given:
            self._check_item(item)
        # Items judged before (an earlier session, a restarted kernel) are counted as done and not shown again.
        self.all_items: list[Item] = given
        waiting = {it.id for it in pending}
        self.items: list[Item] = [it for it in given if it.id in waiting]
        self.judged_before = len(given) - len(self.items)
        self.index = 0
        self.history: list[tuple[int, int]] = []
        self.on_submit: list = []
        self.on_show: list = []
        self._shown_at = float("-inf")

        self.progress = w.HTML()
        self.bar = w.IntProgress(min=0, max=max(1, len(self.all_items)), layout=w.Layout(width="160px"))
        self.prompt = w.HTML()
        self.body = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap", width="100%"))
        self.skip_button = w.Button(description="skip", tooltip="skip this item (key s)", icon="forward")
        self.undo_button = w.Button(description="undo last", tooltip="undo your last judgment (key u)", icon="undo")
        self.skip_button.on_click(lambda _b: self.skip())
        self.undo_button.on_click(lambda _b: self.undo())
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

    def skip(self) -> None:
        """Go to the next item without recording anything."""
        if self.done:
            return
        self.index += 1
        self._show("Skipped (nothing saved).")

    def undo(self) -> int | None:
        """Delete this annotator's latest judgment of one of this rater's items (also one made before a restart;
        never a flag) and show that item again. Returns the deleted judgment's id (None: nothing to undo)."""
        if self.history:  # this session's latest: exactly that judgment
            index, judgment_id = self.history[-1]
            deleted = self.store.undo_last(self.annotator, item_ids=[self.items[index].id])
            if deleted == judgment_id:
                self.history.pop()
                self.index = index
                self._show("Undid your last judgment; judge it again.")
                return deleted
        waiting = {it.id for it in self.items}
        before = [it.id for it in self.all_items if it.id not in waiting]
        deleted = self.store.undo_last(self.annotator, item_ids=before) if before else None
        if deleted is None:
            say(self.message, "Nothing to undo.")
            return None
        pending = {it.id for it in self.store.pending_items(self.annotator, self.kind)}
        undone = next(it for it in self.all_items if it.id in pending and it.id not in waiting)
        self.items.insert(self.index, undone)
        self.judged_before -= 1
        self._show("Undid your earlier judgment of this pair (made before this rater opened); judge it again.")
        return deleted

    def _submit(self, record, answer: dict) -> int | None:
        """Store the current item's judgment with `record(item)`; advance only once the store call returned."""
        if self.done:
            say(self.message, "All items are done; press undo to change your last judgment.", error=True)
            return None
        if time.monotonic() - self._shown_at < self.guard_s:
            say(self.message, "That was quicker than reading: press or click again to record it.", error=True)
            self._shown_at = float("-inf")
            return None
        item = self.current
        if item.id not in {it.id for it in self.store.pending_items(self.annotator, self.kind)}:
            self.items.pop(self.index)  # judged meanwhile in another cell or notebook: that judgment stands
            self.judged_before += 1
            self._show("You had already judged that one elsewhere (another cell or notebook); your earlier judgment "
                       "stands. Here is the next.")
            return None
        try:
            judgment_id = record(item)
        except ValueError as err:
            say(self.message, str(err), error=True)
            return None
        self.history.append((self.index, judgment_id))
        self.index += 1
        self._show(f"Saved: {self._describe(answer, item)}.")
        notify(self.on_submit, self.message, item, answer, judgment_id)
        return judgment_id

    def _describe(self, answer: dict, item: Item) -> str:
        """The answer in words for the message area."""
        return ", ".join(f"{k} {v}" for k, v in answer.items() if v is not None)

    def _show(self, note: str = "") -> None:
        """Draw the current item (or the done state), the progress and `note`."""
        judged, total = self.judged_before + len(self.history), len(self.all_items)
        extra = (f" · {self.judged_before} from before" if self.judged_before else "") + (
            f" · {self.skipped} skipped" if self.skipped else "")
        self.progress.value = f"{judged} / {total}{extra}"
        self.bar.value = judged
        for widget in self._action_widgets:
            widget.disabled = self.done
        self.actions.layout.display = "none" if self.done else None
        if self.done:
            self.prompt.value = (f"<b>All done</b>: {judged} judged, {self.skipped} skipped. "
                                 "Thank you! (Undo still works.)")
            self.body.children = ()
        else:
            self.prompt.value = text_html(self.current.prompt, "rlhf-prompt")
            self._render(self.current)
        say(self.message, note)
        self._shown_at = time.monotonic()
        notify(self.on_show, self.message, self.current)


class PairwiseRater(_Rater):
    """Two replies side by side; A / B / tie / both bad, an optional strength, skip and undo.

    Keys: 1 = A, 2 = B, 0 = tie, x = both bad, q / w / e = by slightly / clearly / much (before 1 or 2), s = skip,
    u = undo. `choose("A")` does what the A button does.
    """

    kind = "pairwise"
    hint = "1 = A, 2 = B, 0 = tie, x = both bad, q / w / e = by slightly / clearly / much, s = skip, u = undo"
    WORDS = {"A": "A is better", "B": "B is better", "tie": "a tie", "both_bad": "both bad"}
    STRENGTH_KEYS = {"q": 1, "w": 2, "e": 3}
    CHOICES = (("A", "A is better", "1"), ("B", "B is better", "2"), ("tie", "tie", "0"),
               ("both_bad", "both bad", "x"))

    def _check_item(self, item: Item) -> None:
        if len(item.responses) != 2:
            raise ValueError(f"item {item.id} has {len(item.responses)} replies; PairwiseRater shows 2 "
                             "(use RankingRater or LikertRater)")

    def _controls(self) -> list:
        self.buttons = {}
        for choice, label, key in self.CHOICES:
            button = w.Button(description=label, tooltip=f"key {key}",
                              button_style="danger" if choice == "both_bad" else "primary")
            button.on_click(lambda _b, choice=choice: self.choose(choice))
            self.buttons[choice] = button
        self.strength = w.ToggleButtons(options=list(STRENGTHS), value=None,
                                        tooltips=["slightly better", "clearly better", "much better"],
                                        style={"button_width": "64px"})
        # "by" and the three toggles on one row, kept together (a narrow screen moves them as a unit)
        together = w.HBox([w.HTML("&nbsp;by&nbsp;"), self.strength],
                          layout=w.Layout(flex_flow="row nowrap", align_items="center", flex="0 0 auto"))
        return [*self.buttons.values(), together]

    def _render(self, item: Item) -> None:
        self.body.children = [reply_card(label, r, self.markdown) for label, r in zip("AB", item.responses)]
        self.strength.value = None

    def _key_map(self) -> dict:
        keys = {key: (lambda choice=choice: self.choose(choice)) for choice, _label, key in self.CHOICES}
        strengths = {key: (lambda value=value: setattr(self.strength, "value", value))
                     for key, value in self.STRENGTH_KEYS.items()}
        return {**keys, **strengths, **super()._key_map()}

    def _describe(self, answer: dict, item: Item) -> str:
        words = self.WORDS[answer["choice"]]
        strength = {value: label for label, value in STRENGTHS}.get(answer.get("strength"))
        return f"{words}, {strength}" if strength else words

    def choose(self, choice: str, strength: int | None = None) -> int | None:
        """Record `choice` ("A", "B", "tie", "both_bad") for the item on screen; returns the judgment id.

        `strength` (1..3) defaults to the strength toggle, and applies to A and B only.
        """
        if choice in ("A", "B"):
            strength = self.strength.value if strength is None else strength
        else:
            strength = None
        return self._submit(lambda item: self.store.record_pairwise(item.id, self.annotator, choice, strength),
                            {"choice": choice, "strength": strength})


class LikertRater(_Rater):
    """Each reply of an item gets a score on a Likert scale (default 1..7), then submit.

    Keys: a digit scores the first reply without a score, Enter submits, s = skip, u = undo.
    """

    kind = "rating"

    def __init__(self, store, annotator: str, items=None, *, scale: tuple[int, int] = (1, 7),
                 labels: tuple[str, str] = ("poor", "excellent"), **kwargs):
        lo, hi = scale
        if not (isinstance(lo, int) and isinstance(hi, int) and lo < hi):
            raise ValueError(f"scale must be two ints (low, high) with low < high, got {scale!r}")
        self.scale, self.labels = (lo, hi), labels
        self.hint = f"{lo}–{min(hi, 9)} = score, Enter = submit, s = skip, u = undo"
        super().__init__(store, annotator, items, **kwargs)

    def _controls(self) -> list:
        self.submit_button = w.Button(description="submit", button_style="primary", tooltip="key Enter")
        self.submit_button.on_click(lambda _b: self.rate())
        self.score_widgets: list[w.ToggleButtons] = []
        lo, hi = self.scale
        return [w.HTML(f"{lo} = {html.escape(self.labels[0])}, {hi} = {html.escape(self.labels[1])}"),
                self.submit_button]

    def _render(self, item: Item) -> None:
        lo, hi = self.scale
        self.score_widgets = [w.ToggleButtons(options=[(str(v), v) for v in range(lo, hi + 1)], value=None,
                                              style={"button_width": "2.6em"}) for _ in item.responses]
        cards = []
        for i, (response, scores) in enumerate(zip(item.responses, self.score_widgets)):
            label = LETTERS[i] if len(item.responses) > 1 else "Reply"
            card = reply_card(label, response, self.markdown)
            card.children += (scores,)
            cards.append(card)
        self.body.children = cards

    def _key_map(self) -> dict:
        lo, hi = self.scale
        keys = {str(v): (lambda v=v: self._score_next(v)) for v in range(max(lo, 0), min(hi, 9) + 1)}
        return {**keys, "Enter": self.rate, **super()._key_map()}

    def _score_next(self, value: int) -> None:
        """Give `value` to the first reply on screen that has no score yet."""
        for scores in self.score_widgets:
            if scores.value is None:
                scores.value = value
                return

    def rate(self, scores=None) -> int | None:
        """Record `scores` (one per reply; default: the score toggles) for the item on screen."""
        if scores is None and not self.done:
            scores = [s.value for s in self.score_widgets]
            if None in scores:
                say(self.message, "Give every reply a score first.", error=True)
                return None
        return self._submit(lambda item: self.store.record_rating(item.id, self.annotator, scores, self.scale),
                            {"scores": scores})

    def _describe(self, answer: dict, item: Item) -> str:
        lo, hi = self.scale
        names = LETTERS if len(item.responses) > 1 else ["the reply"]
        return ", ".join(f"{names[i]} {v}" for i, v in enumerate(answer["scores"])) + f" (on {lo}–{hi})"


def _ordinal(n: int) -> str:
    return f"{n}{'st' if n == 1 else 'nd' if n == 2 else 'rd' if n == 3 else 'th'}"


class RankingRater(_Rater):
    """k replies (A, B, C, ...) side by side; pick the reply for each rank (1st = best), then submit.

    Keys: 1..k put reply A..k in the next empty rank, Backspace clears the last rank, Enter submits, s, u.
    """

    kind = "ranking"
    hint = "reply numbers best first (1 = A, 2 = B, ...), Enter = submit, s = skip, u = undo"

    def _check_item(self, item: Item) -> None:
        if not 2 <= len(item.responses) <= len(LETTERS):
            raise ValueError(f"item {item.id} has {len(item.responses)} replies; RankingRater ranks 2 to 26")

    def _controls(self) -> list:
        self.submit_button = w.Button(description="submit", button_style="primary", tooltip="key Enter")
        self.clear_button = w.Button(description="clear", tooltip="clear the ranks (Backspace clears the last)")
        self.submit_button.on_click(lambda _b: self.rank())
        self.clear_button.on_click(lambda _b: self._clear())
        self.rank_box = w.VBox()
        self.rank_widgets: list[w.Dropdown] = []
        return [self.rank_box, w.VBox([self.submit_button, self.clear_button])]

    def _render(self, item: Item) -> None:
        self.body.children = [reply_card(LETTERS[i], r, self.markdown) for i, r in enumerate(item.responses)]
        options = [("—", None)] + [(LETTERS[i], r.id) for i, r in enumerate(item.responses)]
        k = len(item.responses)
        self.rank_widgets = [w.Dropdown(options=options, value=None,
                                        description=f"{_ordinal(n)}{' (best)' if n == 1 else ''}")
                             for n in range(1, k + 1)]
        self.rank_box.children = self.rank_widgets

    def _key_map(self) -> dict:
        keys = {str(n): (lambda n=n: self._place(n - 1)) for n in range(1, 10)}
        return {**keys, "Backspace": self._unplace, "Enter": self.rank, **super()._key_map()}

    def _place(self, position: int) -> None:
        """Put the reply at `position` (0 = A) into the first empty rank, unless it is ranked already."""
        if self.done or position >= len(self.current.responses):
            return
        response_id = self.current.responses[position].id
        ranked = [d.value for d in self.rank_widgets]
        if response_id not in ranked and None in ranked:
            self.rank_widgets[ranked.index(None)].value = response_id

    def _unplace(self) -> None:
        """Clear the last filled rank."""
        for dropdown in reversed(self.rank_widgets):
            if dropdown.value is not None:
                dropdown.value = None
                return

    def _clear(self) -> None:
        for dropdown in self.rank_widgets:
            dropdown.value = None

    def rank(self, order=None) -> int | None:
        """Record `order` (the item's response ids, best first; default: the rank dropdowns) for the item on screen."""
        if order is None and not self.done:
            order = [d.value for d in self.rank_widgets]
            if None in order or len(set(order)) != len(order):
                say(self.message, "Give each rank a different reply first.", error=True)
                return None
        return self._submit(lambda item: self.store.record_ranking(item.id, self.annotator, list(order)),
                            {"order": order})

    def _describe(self, answer: dict, item: Item) -> str:
        letter = {r.id: LETTERS[i] for i, r in enumerate(item.responses)}
        return "best first " + " > ".join(letter.get(r, str(r)) for r in answer["order"])
