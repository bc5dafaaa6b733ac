"""A thumbs rater: one reply at a time, thumbs up or thumbs down (the signal KTO learns from), skip and undo.

    rater = ThumbsRater(store, "alice", items)   # the replies of these items (or Responses, or response ids)
    rater                                       # display it; keys 1 (up) / 2 (down) / s / u once the key box is clicked

Each answer is one `store.record_thumbs` call. Progress resumes after a kernel restart like the other raters':
replies already judged with a thumb are counted as done and not shown again, and undo takes back only this
annotator's thumbs on this rater's replies (never a flag, never a judgment made elsewhere).
"""

from __future__ import annotations

import ipywidgets as w

from rlhf_lab.feedback.records import Response, replies_of
from rlhf_lab.ui.base import Rater
from rlhf_lab.ui.parts import reply_card

__all__ = ["ThumbsRater"]


class ThumbsRater(Rater):
    """One reply under its prompt; 👍 good / 👎 bad, skip and undo. `items`: Items (their replies, in order),
    Responses or response ids; default every reply of the store's items not yet judged with a thumb by `annotator`.

    Keys: 1 = thumbs up, 2 = thumbs down, s = skip, u = undo. `judge(True)` does what the thumbs-up button does.
    """

    kind = "thumbs"
    hint = "1 = 👍 thumbs up, 2 = 👎 thumbs down, s = skip, u = undo"

    def _given(self, items) -> list[Response]:
        return replies_of(self.store.items() if items is None else items, self.store.get_response)

    def _target(self, response_id: int) -> str:
        return f"thumbs:{int(response_id)}"

    def _pending_ids(self) -> set[int]:
        done = self.store.judged_targets(self.annotator)
        return {r.id for r in self.all_items if self._target(r.id) not in done}

    def _undo_latest(self, ids) -> int | None:
        return self.store.undo_last(self.annotator, targets=[self._target(i) for i in ids])

    def _controls(self) -> list:
        self.up_button = w.Button(description="👍 thumbs up", tooltip="a good reply (key 1)", button_style="success")
        self.down_button = w.Button(description="👎 thumbs down", tooltip="a bad reply (key 2)",
                                    button_style="danger")
        self.up_button.on_click(lambda _b: self.judge(True))
        self.down_button.on_click(lambda _b: self.judge(False))
        return [self.up_button, self.down_button]

    def _render(self, reply: Response) -> None:
        self.body.children = [reply_card("Reply", reply, self.markdown)]

    def _key_map(self) -> dict:
        return {"1": lambda: self.judge(True), "2": lambda: self.judge(False), **super()._key_map()}

    def _describe(self, answer: dict, reply: Response) -> str:
        return "thumbs up (a good reply)" if answer["up"] else "thumbs down (a bad reply)"

    def judge(self, up: bool) -> int | None:
        """Record thumbs up (True) or down (False) for the reply on screen; returns the judgment id."""
        return self._submit(lambda reply: self.store.record_thumbs(reply.id, self.annotator, bool(up)), {"up": up})
