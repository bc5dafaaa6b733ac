"""The class's model and you: a class's pooled judgments train one reward model, and each student sees their own
taste against it (whose preferences does the class model learn?).

    class_rm = class_reward_model(store)           # every student's pairwise judgments, pooled
    mine = you_vs_class(store, "s001")             # the class model, fitted without you, on your own judgments
    print(mine["summary"])                         # "The class's model agrees with you on 31 of 40 pairs: 78 % ..."
    mine["outvoted"]                               # the items where most classmates chose the other reply

Agreement is measured honestly: the class model that judges your pairs is fitted on everyone else's judgments only,
so it cannot have learned your answers; its interval is a 95 % bootstrap over your pairs.

A student's own login (`classroom.secure_class`) reads only that student's judgments, so from it the class's model
comes from the file the instructor shares (`rlhf-lab class share`, `classroom.share_class_pairs`: every pairwise
judgment, classmates under pseudonyms):

    mine = you_vs_class(FeedbackStore(MY_URL), "s001", class_pairs="class_pairs.jsonl")
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf_lab.feedback.classroom import read_class_pairs, whoami
from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel

__all__ = ["class_reward_model", "you_vs_class", "class_model_accuracy"]


def class_reward_model(store, exclude=(), config: EmbeddingRewardConfig | None = None) -> EmbeddingRewardModel:
    """An embedding reward model fitted on every pairwise judgment in the store, but those of `exclude`."""
    pairs = store.preference_pairs(include_ties=True)
    pairs = pairs[~pairs["annotator"].isin(list(exclude))]
    if pairs.empty:
        raise ValueError("no judgments to learn from yet: the class (other than the excluded) has not rated")
    return EmbeddingRewardModel(config).fit(pairs)


def _votes(judgments: pd.DataFrame) -> pd.DataFrame:
    """One row per pairwise A/B judgment of `judgments` (`store.judgments_df()`): item_id, annotator, the chosen
    reply's response id."""
    df = judgments
    df = df[(df["kind"] == "pairwise") & df["answer"].map(lambda a: a.get("choice") in ("A", "B"))]
    chosen = [ids[0 if a["choice"] == "A" else 1] for ids, a in zip(df["response_ids"], df["answer"])]
    return pd.DataFrame({"item_id": df["item_id"].astype(int).to_numpy(), "annotator": df["annotator"].to_numpy(),
                         "chosen_id": chosen, "prompt": df["prompt"].to_numpy(),
                         "responses": df["responses"].to_numpy(), "response_ids": df["response_ids"].to_numpy()})


def you_vs_class(store, student_id: str, config: EmbeddingRewardConfig | None = None, seed: int = 0,
                 class_pairs=None) -> dict:
    """How the class's taste compares with `student_id`'s: the agreement (with a 95 % bootstrap interval) of a class
    reward model fitted without them on their own pairwise judgments, and the items where they were out-voted
    (most of the classmates who judged the item chose the other reply). Returns a dict with `summary` (a sentence),
    `agreement`, `ci_low`, `ci_high`, `pairs`, `outvoted` (a DataFrame) and `items_shared`.

    `class_pairs`: the file the instructor shares (`rlhf-lab class share`), or a DataFrame of its rows, for a
    student's own login, which reads only their own judgments. The student's pairs still come from `store`; the
    class's model is fitted on all the file's pairwise judgments but the student's own (their judgment ids in `store`),
    and the out-voting classmates are the file's other judgments of the same items. Without it, `store` must show
    the whole class (the instructor's URL, or a SQLite store)."""
    pairs = store.preference_pairs(include_ties=False)
    yours = pairs[pairs["annotator"] == student_id]
    if yours.empty:
        raise ValueError(f"{student_id!r} has no pairwise A/B judgments yet: rate some pairs first")
    judgments = store.judgments_df()
    votes = _votes(judgments)
    mine = votes[votes["annotator"] == student_id]
    if class_pairs is not None:
        shared = read_class_pairs(class_pairs)
        own = set(judgments.loc[judgments["annotator"] == student_id, "judgment_id"].astype(int))
        theirs = shared[~shared["judgment_id"].isin(own)]
        if theirs.empty:
            raise ValueError("no judgments to learn from in class_pairs: the class (other than you) had not rated "
                             "when it was shared; ask your instructor for a newer one")
        class_rm = EmbeddingRewardModel(config).fit(theirs.reset_index(drop=True))
        others = theirs.loc[~theirs["tie"], ["item_id", "chosen_id"]]
    else:
        if (pairs["annotator"] == student_id).all() and whoami(store) is not None:
            raise ValueError("this is a student's login, which reads only its own student's judgments, so it cannot "
                             "fit the class's model: ask your instructor to run you_vs_class with the class's own "
                             "URL, or ask them for the class's shared pairs (rlhf-lab class share) and pass "
                             "class_pairs=")
        class_rm = class_reward_model(store, exclude=[student_id], config=config)
        others = votes[votes["annotator"] != student_id]
    chosen = class_rm.score(list(yours["prompt"]), list(yours["chosen"])).numpy()
    rejected = class_rm.score(list(yours["prompt"]), list(yours["rejected"])).numpy()
    agree = (chosen > rejected).astype(float)
    rng = np.random.default_rng(seed)
    boots = agree[rng.integers(0, len(agree), size=(2000, len(agree)))].mean(1)
    low, high = np.percentile(boots, [2.5, 97.5])

    shared = _against(mine, others)
    outvoted = shared[shared["against_you"] > shared["with_you"]].reset_index(drop=True)
    share = float(agree.mean())
    summary = (f"The class's model (fitted on your classmates' judgments only) agrees with you on {int(agree.sum())} "
               f"of {len(agree)} of your pairs: {share:.0%} [95 % interval {low:.0%} to {high:.0%}]. "
               f"On {len(outvoted)} of the {len(shared)} items classmates also judged, most of them chose the other "
               "reply.")
    if low <= 0.5 <= high:
        summary += " Its agreement is not distinguishable from a coin flip: your taste and the class's differ, or " \
                   "there are too few judgments to tell."
    return dict(summary=summary, agreement=share, ci_low=float(low), ci_high=float(high), pairs=len(agree),
                outvoted=outvoted, items_shared=len(shared))


def _against(mine: pd.DataFrame, others: pd.DataFrame) -> pd.DataFrame:
    """Per item of `mine` (`_votes` rows) that `others` (item_id, chosen_id: the classmates' A/B choices) also
    judged: the reply you chose, the other one, and how many classmates chose as you did and how many did not."""
    rows = []
    for _, v in mine.iterrows():
        theirs = others[others["item_id"] == v["item_id"]]
        if theirs.empty:
            continue
        against = int((theirs["chosen_id"] != v["chosen_id"]).sum())
        other_reply = v["responses"][1 - v["response_ids"].index(v["chosen_id"])]
        rows.append(dict(item_id=int(v["item_id"]), prompt=v["prompt"],
                         you_chose=v["responses"][v["response_ids"].index(v["chosen_id"])], class_chose=other_reply,
                         with_you=len(theirs) - against, against_you=against))
    return pd.DataFrame(rows, columns=["item_id", "prompt", "you_chose", "class_chose", "with_you", "against_you"])


def class_model_accuracy(store, val_fraction: float = 0.25, config: EmbeddingRewardConfig | None = None,
                         seed: int = 0) -> dict:
    """How well the class's pooled judgments train a reward model: fitted on the pairs of (1 − val_fraction) of the
    prompts, its accuracy on the held-out prompts' A/B pairs, with a 95 % bootstrap interval over those pairs.
    NaN figures while there are fewer than 8 pairs or no held-out pair."""
    from rlhf_lab.feedback.preferences import split_by_prompt, without_ties

    pairs = without_ties(store.preference_pairs(include_ties=False))
    empty = dict(accuracy=float("nan"), ci_low=float("nan"), ci_high=float("nan"), train_pairs=0, val_pairs=0)
    if len(pairs) < 8:
        return empty
    train, val = split_by_prompt(pairs, val_fraction, seed=seed)
    if train.empty or val.empty:
        return empty
    rm = EmbeddingRewardModel(config).fit(train)
    right = (rm.score(list(val["prompt"]), list(val["chosen"])) >
             rm.score(list(val["prompt"]), list(val["rejected"]))).numpy().astype(float)
    boots = right[np.random.default_rng(seed).integers(0, len(right), size=(2000, len(right)))].mean(1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return dict(accuracy=float(right.mean()), ci_low=float(low), ci_high=float(high), train_pairs=len(train),
                val_pairs=len(val))
