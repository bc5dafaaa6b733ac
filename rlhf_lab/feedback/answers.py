"""One judgment's answer, checked: for each kind of judgment, a pure function that validates what an annotator gave
and returns `(answer, check)`: the JSON-ready answer the store writes, and `check(subject)` which validates it
against the item (or response) it judges, inside the store's transaction; `check` may return a corrected answer.
Every bad value raises a `ValueError` that says what to give instead (the raters show its message)."""

from __future__ import annotations

from rlhf_lab.feedback.records import CHOICES, FLAGS, Item
from rlhf_lab.core.inputs import is_whole
from rlhf_lab.feedback.validation import as_list

__all__ = ["flags_answer", "pairwise_answer", "ranking_answer", "rating_answer", "thumbs_answer"]


def pairwise_answer(choice: str, strength: int | None):
    """A preference between an item's two responses: choice A | B | tie | both_bad, strength None or 1..3."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    if strength is not None and not (is_whole(strength) and 1 <= strength <= 3):
        raise ValueError(f"strength must be None or 1, 2, 3 (slightly, clearly, much better), got {strength!r}")

    def check(item: Item):
        if len(item.responses) != 2:
            raise ValueError(f"item {item.id} has {len(item.responses)} responses; pairwise needs 2 "
                             "(use record_ranking or record_rating)")

    return {"choice": choice, "strength": None if strength is None else int(strength)}, check


def rating_answer(scores, scale: tuple[int, int]):
    """Likert scores on `scale` (inclusive), one per response of the item (an int for a 1-response item)."""
    lo, hi = scale
    if not (is_whole(lo) and is_whole(hi) and lo < hi):
        raise ValueError(f"scale must be two ints (low, high) with low < high, got {scale!r}")
    scores = [scores] if is_whole(scores) else as_list(scores, "scores")

    def check(item: Item):
        if len(scores) != len(item.responses):
            raise ValueError(f"item {item.id} has {len(item.responses)} responses; give one score each, "
                             f"got {len(scores)}")
        bad = [s for s in scores if not (is_whole(s) and lo <= s <= hi)]
        if bad:
            raise ValueError(f"scores {bad} are not whole numbers from {lo} to {hi}; pick from the scale")

    return {"scores": [int(s) if is_whole(s) else s for s in scores], "scale": [int(lo), int(hi)]}, check


def ranking_answer(order):
    """A ranking: `order` lists the item's response ids, best first (a permutation of them)."""
    order = as_list(order, "order")

    def check(item: Item):
        ids = [r.id for r in item.responses]
        if len(ids) < 2:
            raise ValueError(f"item {item.id} has one response; rank items with 2 or more (or rate it)")
        if not all(is_whole(o) for o in order) or sorted(order) != sorted(ids):
            raise ValueError(f"order must list each of the item's response ids {ids} once, best first; got {order}")
        return {"order": [int(o) for o in order]}

    return {}, check


def thumbs_answer(up: bool):
    """A thumbs up (True) or down (False) on one response."""
    if not isinstance(up, bool):
        raise ValueError(f"up must be True (thumbs up) or False (thumbs down), got {up!r}")
    return {"up": up}, None


def flags_answer(flags):
    """Flags on one response: a subset of FLAGS, possibly empty (checked and fine); one name may be a string."""
    flags = [flags] if isinstance(flags, str) else as_list(flags, "flags")
    unknown = [f for f in flags if f not in FLAGS]
    if unknown or len(set(flags)) != len(flags):
        raise ValueError(f"flags must be distinct names from {FLAGS}; got {flags}")
    return {"flags": flags}, None
