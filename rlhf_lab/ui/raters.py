"""In-notebook raters: pairwise, Likert and ranking, built from plain ipywidgets (7.7 and 8) on the shared controller
`ui.base.Rater`; see also `FlagPanel` and `ui.thumbs.ThumbsRater` (one reply at a time).

Widgets only emit events; each rater is a thin controller that turns a click (or a key press) into one store call,
waits for it to return, and only then shows the next item. A store call that fails (a bad or repeated judgment, a
read-only or locked store) is said in one line in the rater's message area and the item stays on screen. Model
text is always escaped before it reaches an HTML widget, so a reply containing `<script>` displays as text.

    rater = PairwiseRater(store, "alice")     # the items alice has not judged yet
    rater                                     # display it; keys 1/2/0/x/s/u once the key box is clicked
    rater.on_submit.append(lambda item, answer, judgment_id: ...)

Nothing here waits for a frontend, so a rater displayed in a headless run (papermill) returns at once.
"""

from __future__ import annotations

import html

import ipywidgets as w

from rlhf_lab.feedback.records import Item
from rlhf_lab.ui.base import Rater
from rlhf_lab.ui.parts import LETTERS, reply_card, say

__all__ = ["PairwiseRater", "LikertRater", "RankingRater"]

STRENGTHS = (("slightly", 1), ("clearly", 2), ("much", 3))
"""How much better the chosen reply is (optional; the store keeps None when no strength is picked)."""


class PairwiseRater(Rater):
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


class LikertRater(Rater):
    """Each reply of an item gets a score on a Likert scale (default 1..7), then submit.

    Keys: a digit scores the first reply without a score, Enter submits, s = skip, u = undo.

    Only submit saves scores. Scores given but not submitted are never dropped unseen: with every reply scored,
    skip first says the answer is not saved (press submit, or skip again to leave it); undo keeps the scores on
    screen and fills them in again when the learner comes back to the item. (Skip does not save them itself: it
    means "record nothing", and a score cannot be taken off a reply again.) Scores not submitted are also kept in
    the drafts file, so a kernel restart gives them back (see `Rater`).
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

    def _draft(self):
        scores = [s.value for s in self.score_widgets]
        return scores if any(v is not None for v in scores) else None

    def _complete(self, draft) -> str | None:
        return None if draft is None or None in draft else self._describe({"scores": draft}, self.current)

    def _restore(self, draft) -> None:
        for widget, value in zip(self.score_widgets, draft):
            widget.value = value

    def _answer_widgets(self) -> list:
        return self.score_widgets

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


class RankingRater(Rater):
    """k replies (A, B, C, ...) side by side; pick the reply for each rank (1st = best), then submit.

    Keys: 1..k put reply A..k in the next empty rank, Backspace clears the last rank, Enter submits, s, u.

    Only submit saves a ranking. Ranks filled but not submitted are never dropped unseen: with every rank filled,
    skip first says the ranking is not saved (press submit, or skip again to leave it); undo keeps the ranks and
    fills them in again when the learner comes back to the item. Ranks not submitted are also kept in the drafts
    file, so a kernel restart gives them back (see `Rater`).
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

    def _draft(self):
        order = [d.value for d in self.rank_widgets]
        return order if any(v is not None for v in order) else None

    def _complete(self, draft) -> str | None:
        if draft is None or None in draft or len(set(draft)) != len(draft):
            return None
        return self._describe({"order": draft}, self.current)

    def _restore(self, draft) -> None:
        for dropdown, value in zip(self.rank_widgets, draft):
            dropdown.value = value

    def _answer_widgets(self) -> list:
        return self.rank_widgets

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
