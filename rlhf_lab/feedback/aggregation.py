"""Several people judged the same pair: what do they say together? Majority vote, or Dawid–Skene, which estimates
how reliable each annotator is and weighs them by it (an adversarial annotator, reliably wrong, is read backwards).

    labels = label_matrix(store, "pairwise")          # items x annotators: "A", "B" (ties, both_bad: not counted)
    p_a, reliability = dawid_skene(labels)            # P(A is better) per item; P(annotator is right) per person
    pairs = aggregated_pairs(store)                   # one pair per item, target = P(chosen is better): soft labels

The one-coin Dawid–Skene model (Dawid & Skene 1979, with one accuracy per annotator): item i's true label z_i is
A with prior π; annotator j reports it correctly with probability p_j. EM alternates

    E: log P(z_i = A | labels) / P(z_i = B | labels) = log π/(1−π) + Σ_j ±log p_j/(1−p_j)   (+ when j said A)
    M: p_j = mean over j's items of P(j's label is the true one),  π = mean_i P(z_i = A)

starting from the majority vote. p_j is kept in [0.01, 0.99].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["majority_vote", "dawid_skene", "aggregated_pairs"]


def _votes(labels: pd.DataFrame) -> np.ndarray:
    """+1 for A, −1 for B, 0 for anything else (tie, both bad, not judged): (items, annotators)."""
    values = labels.to_numpy(dtype=object)
    return np.where(values == "A", 1.0, np.where(values == "B", -1.0, 0.0))


def majority_vote(labels: pd.DataFrame) -> pd.Series:
    """P(A is better) per item by majority of the A/B votes: 1, 0, or ½ on a draw (or no vote)."""
    total = _votes(labels).sum(1)
    return pd.Series(np.where(total > 0, 1.0, np.where(total < 0, 0.0, 0.5)), index=labels.index, name="p_a")


def dawid_skene(labels: pd.DataFrame, iterations: int = 100, tol: float = 1e-6) -> tuple[pd.Series, pd.Series]:
    """(P(A is better) per item, P(annotator is right) per annotator) by EM (see the module docstring)."""
    votes = _votes(labels)  # (I, J)
    said = votes != 0
    q = majority_vote(labels).to_numpy()
    p = np.full(votes.shape[1], 0.7)
    for _ in range(iterations):
        # M-step: each annotator's accuracy against the current posteriors, and the prior
        right = np.where(votes > 0, q[:, None], 1 - q[:, None]) * said  # P(j's label is true) where j voted
        p = np.clip(right.sum(0) / np.maximum(said.sum(0), 1), 0.01, 0.99)
        p = np.where(said.sum(0) > 0, p, 0.5)
        prior = float(np.clip(q.mean(), 0.01, 0.99))
        # E-step: posterior log-odds of A
        log_odds = np.log(prior / (1 - prior)) + (votes * np.log(p / (1 - p))[None, :]).sum(1)
        new_q = 1 / (1 + np.exp(-log_odds))
        done = np.abs(new_q - q).max() < tol
        q = new_q
        if done:
            break
    return (pd.Series(q, index=labels.index, name="p_a"),
            pd.Series(p, index=labels.columns, name="reliability"))


def aggregated_pairs(store, method: str = "dawid_skene") -> pd.DataFrame:
    """One preference pair per pairwise item judged A or B by anyone: chosen = the reply more likely better,
    `target` = that probability (a soft label; `EmbeddingRewardModel.fit` trains on it), with the item's votes.
    method: "dawid_skene" or "majority"."""
    from rlhf_lab.feedback.agreement import label_matrix

    if method not in ("dawid_skene", "majority"):
        raise ValueError(f"method must be 'dawid_skene' or 'majority', got {method!r}")
    labels = label_matrix(store, "pairwise")
    columns = ["prompt", "chosen", "rejected", "tie", "margin", "target", "item_id", "votes"]
    if labels.empty:
        return pd.DataFrame(columns=columns)
    p_a = dawid_skene(labels)[0] if method == "dawid_skene" else majority_vote(labels)
    votes = pd.Series(np.abs(_votes(labels)).sum(1), index=labels.index)
    rows = []
    for item_id, p in p_a.items():
        if votes[item_id] == 0:
            continue
        item = store.get_item(int(item_id))
        a, b = (r.text for r in item.responses)
        chosen, rejected, target = (a, b, p) if p >= 0.5 else (b, a, 1 - p)
        rows.append(dict(prompt=item.prompt, chosen=chosen, rejected=rejected, tie=bool(target == 0.5),
                         margin=float("nan"), target=float(target), item_id=int(item_id), votes=int(votes[item_id])))
    return pd.DataFrame(rows, columns=columns)
