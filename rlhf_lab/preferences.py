"""Judgments to preference pairs: the conversion every reward model and DPO trainer reads (InstructGPT's recipe).

Pure functions on the store's rows; `FeedbackStore.preference_pairs()` is the usual way in.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .store import Item, Response

PAIR_COLUMNS = ["prompt", "chosen", "rejected", "chosen_id", "rejected_id", "tie", "margin", "annotator", "iteration",
                "model", "source_kind", "judgment_id"]


def judgments_to_pairs(rows, items: dict[int, Item], include_ties: bool = True) -> pd.DataFrame:
    """Turn judgment rows into preference pairs (the InstructGPT conversion).

    - pairwise A/B: one pair; margin = strength (1..3) or NaN; tie: one pair marked tie with margin 0;
      both_bad: no pair (it still counts in `counts()`).
    - ranking of k: all k(k-1)/2 pairs, earlier in the order = chosen; margin NaN (ranks carry no strength).
    - rating: pairs between every two responses of one prompt rated by one annotator (across items; a response
      rated twice keeps the latest score); margin = score difference; equal scores make a tie.
    Thumbs and flags make no pairs.
    """
    pairs = []

    def add(a: Response, b: Response, margin: float, tie: bool, j, kind: str):
        if tie and not include_ties:
            return
        pairs.append(dict(prompt=a.prompt, chosen=a.text, rejected=b.text, chosen_id=a.id, rejected_id=b.id,
                          tie=tie, margin=float(margin), annotator=j.annotator, iteration=max(a.iteration, b.iteration),
                          model=",".join(sorted({a.model, b.model})), source_kind=kind, judgment_id=j.id))

    rated: dict[tuple[str, str], dict[int, tuple[int, Response, object]]] = {}
    for j in rows:
        answer = json.loads(j.answer)
        if j.kind == "pairwise":
            a, b = items[j.item_id].responses
            choice = answer["choice"]
            if choice in ("A", "B"):
                margin = answer.get("margin", answer.get("strength"))
                first, second = (a, b) if choice == "A" else (b, a)
                add(first, second, math.nan if margin is None else margin, False, j, "pairwise")
            elif choice == "tie":
                add(a, b, 0.0, True, j, "pairwise")
        elif j.kind == "ranking":
            by_id = {r.id: r for r in items[j.item_id].responses}
            order = [by_id[i] for i in answer["order"]]
            for i in range(len(order)):
                for k in range(i + 1, len(order)):
                    add(order[i], order[k], math.nan, False, j, "ranking")
        elif j.kind == "rating":
            item = items[j.item_id]
            scores = rated.setdefault((j.annotator, item.prompt), {})
            for r, s in zip(item.responses, answer["scores"]):
                scores[r.id] = (s, r, j)
    for scores in rated.values():
        entries = sorted(scores.values(), key=lambda e: e[1].id)
        for i in range(len(entries)):
            for k in range(i + 1, len(entries)):
                (sa_, ra, ja), (sb, rb, jb) = entries[i], entries[k]
                later = ja if ja.id > jb.id else jb
                first, second = ((ra, rb) if sa_ >= sb else (rb, ra))
                add(first, second, abs(sa_ - sb), sa_ == sb, later, "rating")
    df = pd.DataFrame(pairs, columns=PAIR_COLUMNS)
    return df.astype({"tie": bool, "margin": float})
