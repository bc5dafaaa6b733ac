"""How far to trust a reward model fitted on one person's few judgments, and what the crowd's judgments do to it
(lesson 3; lesson 5 asks the same of a run's judgments). `rlhf_lab.teach.lessons` re-exports these.

    fit = lambda pairs: EmbeddingRewardModel().fit(pairs)
    trust = held_out(yours, fit, folds=5, gold=GoldUtility())
    print(trust)               # accuracy on your judgments of prompts it never saw, 95 % interval over prompts
    trust.report.calibration; trust.mistakes()
    you_or_crowd(yours, crowd, fit, weights=(0.0, 0.25, 1.0))   # closer to your taste or to the crowd's?

With a few dozen judgments a held-out fifth is a handful of pairs; cross-validation by prompt (`cross_validate`)
scores every judgment with a model that never saw its prompt, so all of them measure the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlhf_lab.feedback.preferences import weight_by_annotator
from rlhf_lab.reward.evaluation import RewardReport, cross_validate, evaluate_rewards

__all__ = ["HeldOut", "held_out", "prompt_interval", "you_or_crowd"]


def prompt_interval(correct, prompts, *, seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """(share, low, high): the share of `correct` (0/1 per pair) and its 95 % bootstrap interval, resampling prompts
    with all their pairs (pairs of one prompt are not independent). NaN for no pairs."""
    correct = np.asarray(correct, dtype=float)
    if len(correct) == 0:
        return float("nan"), float("nan"), float("nan")
    groups = pd.Series(correct).groupby(np.asarray(prompts, dtype=object), sort=True, dropna=False)  # None: a group
    hits, counts = groups.sum().to_numpy(), groups.size().to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(hits), size=(n_boot, len(hits)))  # (n_boot, P)
    low, high = np.percentile(hits[idx].sum(1) / counts[idx].sum(1), [2.5, 97.5])
    return float(hits.sum() / counts.sum()), float(low), float(high)


@dataclass
class HeldOut:
    """A reward model judged on pairs whose prompts it never saw (`held_out`)."""

    pairs: pd.DataFrame
    """The pairs with fold, r_chosen, r_rejected and p_chosen = σ(r_chosen − r_rejected) out of fold."""
    report: RewardReport
    """Accuracy, log-loss, calibration (and agreement with gold) of the out-of-fold rewards."""
    ci_low: float
    ci_high: float
    """95 % interval of the accuracy, over prompts."""

    @property
    def accuracy(self) -> float:
        return self.report.accuracy

    def mistakes(self, n: int = 5) -> pd.DataFrame:
        """The n judgments it got most confidently wrong (ties left out): prompt, chosen, rejected, p_chosen."""
        wrong = self.pairs[~self.pairs["tie"] & (self.pairs["p_chosen"] < 0.5)]
        return wrong.sort_values("p_chosen")[["prompt", "chosen", "rejected", "p_chosen"]].head(n).reset_index(
            drop=True)

    def __str__(self) -> str:
        r = self.report
        n = r.n_pairs - r.n_ties
        if n == 0:
            return f"{r.n_pairs} judgments, all ties: no order to check."
        prompts = self.pairs.loc[~self.pairs["tie"], "prompt"].nunique()
        text = (f"{round(r.accuracy * n)} of {n} judgments (ties left out) ordered as judged by a model that never "
                f"saw their prompt: accuracy {r.accuracy:.0%} (95 % interval {self.ci_low:.0%} to {self.ci_high:.0%}, "
                f"{prompts} prompts); log-loss {r.log_loss:.3f} (a coin flip: 0.693), calibration error {r.ece:.3f}")
        if self.ci_low <= 0.5 <= self.ci_high:
            text += ". The interval holds 50 %: not distinguishable from a coin flip"
        elif self.ci_high < 0.5:
            text += ". The interval lies below 50 %: it orders judgments it never saw the other way"
        if not np.isnan(r.gold_accuracy):
            text += f". The gold utility (the crowd's hidden taste) orders {r.gold_accuracy:.0%} of them the same way"
        return text + "."


def held_out(pairs, fit, *, folds: int = 5, seed: int = 0, gold=None, train=None, n_bins: int = 5) -> HeldOut:
    """How far to trust the reward model that `fit(pairs)` makes: `cross_validate` by prompt (`folds` groups), then
    accuracy with its interval over prompts, log-loss and calibration in `n_bins` bins (few pairs: few bins) of
    the out-of-fold rewards, and, with `gold`, how often the gold utility agrees with the labels."""
    table = cross_validate(pairs, fit, folds=folds, seed=seed, train=train)
    report = evaluate_rewards(table, table["r_chosen"].to_numpy(), table["r_rejected"].to_numpy(), gold=gold,
                              n_bins=n_bins)
    kept = table[~table["tie"]]
    _, low, high = prompt_interval(kept["r_chosen"] > kept["r_rejected"], kept["prompt"], seed=seed)
    return HeldOut(table, report, low, high)


def you_or_crowd(yours: pd.DataFrame, crowd: pd.DataFrame, fit, *, weights=(0.0, 0.25, 1.0), folds: int = 5,
                 seed: int = 0) -> pd.DataFrame:
    """Does adding the crowd's judgments bring a reward model closer to your taste or to the crowd's? For each crowd
    weight w (each crowd judgment counts w of yours: `weight_by_annotator`) and for the crowd alone, a model fitted
    by `fit` is cross-validated by prompt (the same folds for every row), and its out-of-fold rewards are compared
    with your held-out judgments and with the crowd's (ties left out), each with a 95 % interval over prompts.

    yours, crowd: preference pairs with an `annotator` column (yours may hold several names, e.g. a round judged
    by you and one by a stand-in). One row per model: crowd weight (inf: the crowd alone), agrees with you (low,
    high), agrees with the crowd (low, high)."""
    yours, crowd = pd.DataFrame(yours), pd.DataFrame(crowd)
    if yours.empty or crowd.empty:
        raise ValueError(f"you_or_crowd needs your pairs and the crowd's; got {len(yours)} and {len(crowd)}")
    names = set(yours["annotator"])
    if names & set(crowd["annotator"]):
        raise ValueError(f"{sorted(names & set(crowd['annotator']))} judged on both sides: yours and the crowd's "
                         "pairs must come from different annotators")
    everyone = pd.concat([yours.assign(side="you"), crowd.assign(side="crowd")], ignore_index=True)
    settings = [(f"yours + crowd × {w:g}" if w else "yours only", 1.0, float(w)) for w in weights]
    rows = []
    for label, mine, theirs in [*settings, ("crowd only", 0.0, 1.0)]:
        train = weight_by_annotator(everyone, {name: mine for name in names}, others=theirs)
        table = cross_validate(everyone, fit, folds=folds, seed=seed, train=train)
        table = table[~table["tie"]]
        right = table["r_chosen"] > table["r_rejected"]
        row = {"model": label, "crowd weight": theirs / mine if mine else float("inf")}
        for side, column in (("you", "agrees with you"), ("crowd", "agrees with the crowd")):
            on = table["side"] == side
            row[column], row[f"{column} low"], row[f"{column} high"] = prompt_interval(right[on],
                                                                                       table.loc[on, "prompt"],
                                                                                       seed=seed)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
