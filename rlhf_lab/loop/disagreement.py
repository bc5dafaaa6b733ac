"""Which pair of candidate replies to ask about (`FeedbackConfig.strategy="disagreement"`): the two whose reward
difference the reward model's members disagree on most, a cheap stand-in for the pair whose label would teach the
model most (active learning by ensemble disagreement).

    pairs = most_disputed(records, n=4, rng=rng, reward_model=run.reward_model)   # 2 of each prompt's 4 replies
"""

from __future__ import annotations

from rlhf_lab.reward.embedding import EmbeddingRewardModel

__all__ = ["most_disputed"]


def most_disputed(records: list[dict], n: int, rng, reward_model=None) -> list[dict]:
    """Of each prompt's `n` candidates (consecutive `records` with "prompt" and "response"), the two whose reward
    difference the members of `reward_model` disagree on most: the largest standard deviation over members m of
    r_m(i) − r_m(j). A random two (drawn with `rng`) while there is no model with two or more members."""
    scorer = getattr(reward_model, "member_scores", None)  # a network ensemble's or an embedding model's
    if isinstance(reward_model, EmbeddingRewardModel) and reward_model.weights_.shape[0] < 2:
        scorer = None  # one member: no disagreement to ask about
    chosen = []
    for start in range(0, len(records), n):
        group = records[start:start + n]
        if scorer is None:
            i, j = rng.choice(n, 2, replace=False)
        else:
            members = scorer([r["prompt"] for r in group], [r["response"] for r in group])  # (M, n)
            spread = (members[:, :, None] - members[:, None, :]).std(dim=0)  # (n, n)
            i, j = divmod(int(spread.argmax()), n)
            if i == j:
                i, j = 0, 1
        chosen += [group[i], group[j]]
    return chosen
