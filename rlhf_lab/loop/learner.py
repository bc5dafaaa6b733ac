"""A learner's run (`FeedbackConfig(learner="me")`): one person's judgments drive each iteration's reward model, the
crowd's only as much as `crowd_weight` says, and a simulated stand-in judges (said aloud) when the person did not.

    learner_or_stand_in(store, items, feedback, seed=0)   # before an iteration's reward model: who judged its pairs
    training_pairs(store, feedback)                       # the learner's pairs (weight 1) + the crowd's (crowd_weight)

Whose judgments are "the learner's" is decided per iteration (`round_judge`): the person's when they judged at least
`learner_minimum` of its pairs, else the stand-in's. A stand-in and the simulated crowd are both of kind
"simulated", so they are told apart by name (`weight_by_annotator`), never by kind.
"""

from __future__ import annotations

import pandas as pd

from rlhf_lab.feedback.crowd import stand_in_name
from rlhf_lab.feedback.preferences import weight_by_annotator
from rlhf_lab.feedback.tastes import SimulatedLearner

__all__ = ["judged", "learner_or_stand_in", "round_judge", "learner_pairs", "crowd_pairs", "training_pairs",
           "stand_in_taste"]


def _learner(feedback) -> str:
    if feedback.learner is None:
        raise ValueError("this run has no learner (FeedbackConfig.learner is None): every judgment trains it")
    return feedback.learner


def judged(store, name: str, items) -> int:
    """How many of the pairwise `items` `name` has judged (A, B, tie or both bad)."""
    df = store.judgments_df()
    ids = [it.id if hasattr(it, "id") else int(it) for it in items]
    return int(((df["annotator"] == name) & df["item_id"].isin(ids) & (df["kind"] == "pairwise")).sum())


def learner_or_stand_in(store, items, feedback, *, seed: int = 0, log=print) -> int:
    """The learner's judgments of `items` when they judged at least `feedback.learner_minimum` of them; otherwise a
    simulated learner with the taste `feedback.stand_in`, "<learner> (simulated)", judges them all, and `log` says
    so. Returns the number of new judgments."""
    learner = _learner(feedback)
    done = judged(store, learner, items)
    if done >= feedback.learner_minimum:
        log(f"using your {done} judgment(s) as {learner!r} of this iteration's {len(items)} pairs")
        return 0
    stand_in = SimulatedLearner(feedback.stand_in, name=stand_in_name(learner), seed=seed)
    new = stand_in.annotate(store, items)
    why = (f"You judged {done} of {len(items)} pairs as {learner!r}; an iteration needs at least "
           f"{feedback.learner_minimum}" if done else f"Nobody rated as {learner!r}")
    log(f"⚠ {why}: a SIMULATED learner ({stand_in.name!r}, taste {feedback.stand_in!r}) judged this iteration's "
        f"{len(items)} pairs, and the reward model learns its judgments, not yours. Rate the pairs before running "
        "an iteration to use your own.")
    return len(new)


def round_judge(store, feedback, k: int) -> str:
    """Whose judgments of iteration k's pairs count as the learner's: theirs, or the stand-in's when they judged
    fewer than `learner_minimum` of them."""
    learner = _learner(feedback)
    items = store.items(kind="pairwise", iteration=k)
    return learner if judged(store, learner, items) >= feedback.learner_minimum else stand_in_name(learner)


def learner_pairs(store, feedback) -> pd.DataFrame:
    """The learner's preference pairs: of each iteration's pairs, those of its `round_judge`."""
    _learner(feedback)
    pairs = store.preference_pairs(include_ties=True)
    judges = {k: round_judge(store, feedback, k) for k in sorted(set(pairs["iteration"]))}
    return pairs[pairs["annotator"] == pairs["iteration"].map(judges)].reset_index(drop=True)


def crowd_pairs(store, feedback) -> pd.DataFrame:
    """The preference pairs of everyone but the learner and their stand-in: the crowd's."""
    learner = _learner(feedback)
    pairs = store.preference_pairs(include_ties=True)
    return pairs[~pairs["annotator"].isin([learner, stand_in_name(learner)])].reset_index(drop=True)


def training_pairs(store, feedback) -> pd.DataFrame:
    """What the reward model learns: every judgment in the store; in a learner's run the learner's pairs (weight 1)
    and the crowd's (weight `crowd_weight`; left out at 0)."""
    if feedback.learner is None:
        return store.preference_pairs(include_ties=True)
    yours = learner_pairs(store, feedback)
    if yours.empty:
        raise ValueError(f"{feedback.learner!r} (or a stand-in) has not judged any pair yet: run an iteration first")
    both = pd.concat([yours, crowd_pairs(store, feedback)], ignore_index=True)
    return weight_by_annotator(both, {name: 1.0 for name in set(yours["annotator"])}, others=feedback.crowd_weight)


def stand_in_taste(store, feedback, seed: int = 0) -> SimulatedLearner | None:
    """The stand-in of a learner's run once it has judged in `store` (its taste is the truth behind its
    judgments), else None."""
    name = None if feedback.learner is None else stand_in_name(feedback.learner)
    if name is None or name not in store.annotator_kinds():
        return None
    return SimulatedLearner(feedback.stand_in, name=name, seed=seed)
