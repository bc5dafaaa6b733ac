"""What the feedback store holds, as plain records: a model reply, and an item (a prompt and the replies judged
together). The store returns these; raters, annotators and the preference conversion read them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Response", "Item", "ITEM_KINDS", "CHOICES", "FLAGS", "replies_of"]

ITEM_KINDS = ("pairwise", "rating", "ranking")
CHOICES = ("A", "B", "tie", "both_bad")
FLAGS = ("harmful", "biased", "off_topic", "factually_wrong", "other")


@dataclass
class Response:
    """One model reply and what produced it."""

    id: int
    prompt: str
    text: str
    model: str
    iteration: int
    sampling: dict = field(default_factory=dict)
    eos: bool | None = None


@dataclass
class Item:
    """One prompt and the responses judged together (pairwise: A then B)."""

    id: int
    kind: str
    prompt: str
    responses: list[Response]

    @property
    def iteration(self) -> int:
        """The newest iteration among the item's responses."""
        return max(r.iteration for r in self.responses)

    @property
    def model(self) -> str:
        """The model(s) that wrote the responses, comma-joined when they differ."""
        return ",".join(sorted({r.model for r in self.responses}))


def replies_of(things, get_response) -> list[Response]:
    """Items (their replies, in order), Responses or response ids -> the Responses, each once, in the order first
    met; `get_response(id)` (e.g. `store.get_response`) looks an id up."""
    replies: dict[int, Response] = {}
    for thing in things:
        found = thing.responses if isinstance(thing, Item) else [
            thing if isinstance(thing, Response) else get_response(thing)]
        replies.update((r.id, r) for r in found if r.id not in replies)
    return list(replies.values())
