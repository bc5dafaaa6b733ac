"""How far to trust a reward model: accuracy, log-loss, calibration, agreement with a gold utility, what it rewards.

Evaluation works on plain arrays of rewards, so it serves single models, ensembles and any other scorer:

    report = evaluate_rewards(pairs, r_chosen, r_rejected, gold=GoldUtility())
    report.to_dict()        # the scalars: accuracy, log_loss, ece, gold_accuracy, agreement_with_gold, ...
    report.calibration      # DataFrame: predicted P(chosen) per bin vs the observed frequency
    report.top, report.bottom
    held_out = cross_validate(pairs, lambda train: EmbeddingRewardModel().fit(train), folds=5)   # few pairs

For a pair with rewards r_c, r_r the model predicts P(chosen) = σ(r_c − r_r). Ties are left out of accuracy,
log-loss and calibration (they are counted in `n_ties`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rlhf_lab.core.errors import not_fitted
from rlhf_lab.feedback.preferences import as_preference_pairs, without_ties

__all__ = ["RewardReport", "evaluate_rewards", "calibration_table", "expected_calibration_error", "NormalisedScores",
           "order_agreement", "cross_validate", "scored_lists"]


# ----------------------------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class RewardReport:
    """What `evaluate_rewards` finds. Scalars are floats (NaN where undefined); tables are DataFrames."""

    n_pairs: int
    """Pairs evaluated, ties included."""
    n_ties: int
    accuracy: float
    """Share of non-tie pairs where r_chosen > r_rejected."""
    log_loss: float
    """Mean −log σ(r_c − r_r) over non-tie pairs (log 2 ≈ 0.693 is a coin flip)."""
    ece: float
    """Expected calibration error: Σ_bins (count / N) · |mean predicted − observed|."""
    calibration: pd.DataFrame
    """One row per bin of predicted P: bin_lo, bin_hi, count, predicted (mean), observed (frequency)."""
    rewards: pd.DataFrame
    """One row per reply of each pair: prompt, response, role ("chosen" | "rejected"), reward."""
    top: pd.DataFrame
    """The highest-rewarded distinct replies: prompt, response, reward."""
    bottom: pd.DataFrame
    """The lowest-rewarded distinct replies."""
    gold_accuracy: float = float("nan")
    """Share of non-tie pairs where the gold utility prefers the chosen reply: the best a reward model can reach on
    these labels (equal gold utilities count ½)."""
    agreement_with_gold: float = float("nan")
    """Share of pairs with distinct gold utilities that the model orders as the gold utility does."""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The scalar figures, with namespaced keys for logging."""
        return {"eval/n_pairs": self.n_pairs, "eval/n_ties": self.n_ties, "eval/accuracy": self.accuracy,
                "eval/log_loss": self.log_loss, "eval/ece": self.ece, "eval/gold_accuracy": self.gold_accuracy,
                "eval/agreement_with_gold": self.agreement_with_gold, **self.extra}

    def __str__(self) -> str:
        lines = [f"{self.n_pairs} pairs ({self.n_ties} ties): accuracy {self.accuracy:.3f}, "
                 f"log-loss {self.log_loss:.3f}, ECE {self.ece:.3f}"]
        if not np.isnan(self.gold_accuracy):
            lines.append(f"gold utility's own accuracy {self.gold_accuracy:.3f}; "
                         f"model agrees with gold on {self.agreement_with_gold:.3f} of pairs")
        return "\n".join(lines)


def order_agreement(score, prompts, replies_a, replies_b, utility) -> float:
    """Share of pairs with distinct utilities that `score(prompts, replies) -> (N,)` orders as `utility(prompt,
    reply)` does: mean over {i : u_a,i ≠ u_b,i} of [sign(r_a,i − r_b,i) = sign(u_a,i − u_b,i)]; NaN when no pair's
    utilities differ. Any scorer: one reward model's `score`, or the sum of several models' normalised scores."""
    r_a, r_b = (np.asarray(score(prompts, replies), dtype=float) for replies in (replies_a, replies_b))
    u_a = np.array([utility(p, r) for p, r in zip(prompts, replies_a)])
    u_b = np.array([utility(p, r) for p, r in zip(prompts, replies_b)])
    distinct = u_a != u_b
    return float(np.mean(np.sign(r_a - r_b)[distinct] == np.sign(u_a - u_b)[distinct])) if distinct.any() \
        else float("nan")


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def calibration_table(p_chosen: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table of predicted P(chosen) for pairs whose chosen reply is known.

    Every pair is counted in both orders, (p, observed 1) and (1 − p, observed 0), so the table covers [0, 1]
    and is symmetric; a calibrated model has observed ≈ predicted in every bin.
    """
    pred = np.concatenate([p_chosen, 1 - p_chosen])
    outcome = np.concatenate([np.ones_like(p_chosen), np.zeros_like(p_chosen)])
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(pred, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = which == b
        rows.append({"bin_lo": edges[b], "bin_hi": edges[b + 1], "count": int(sel.sum()),
                     "predicted": pred[sel].mean() if sel.any() else np.nan,
                     "observed": outcome[sel].mean() if sel.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Σ_bins (count / N) · |predicted − observed| over a `calibration_table`."""
    used = table[table["count"] > 0]
    if used.empty:
        return float("nan")
    return float((used["count"] * (used["predicted"] - used["observed"]).abs()).sum() / used["count"].sum())


def evaluate_rewards(pairs: pd.DataFrame, r_chosen: np.ndarray, r_rejected: np.ndarray, gold=None,
                     shown: tuple[np.ndarray, np.ndarray] | None = None, n_bins: int = 10,
                     top_k: int = 5) -> RewardReport:
    """Evaluate raw rewards r_chosen, r_rejected (each shape (N,)) of `pairs` (prompt, chosen, rejected, tie).

    gold: a callable gold(prompts, responses) -> (N,) utilities (e.g. `GoldUtility()`).
    shown: the rewards to report in distributions and top/bottom lists (e.g. normalised); default: the raw ones.
    A NaN reward is refused (ValueError).
    """
    r_chosen, r_rejected = np.asarray(r_chosen, dtype=float), np.asarray(r_rejected, dtype=float)
    missing = int(np.isnan(r_chosen).sum() + np.isnan(r_rejected).sum())
    if missing:  # a NaN would count as a wrong pair in the accuracy, vanish from calibration and make log-loss NaN
        raise ValueError(f"{missing} of {r_chosen.size + r_rejected.size} rewards are NaN: the reward model has "
                         "diverged (fit it again, e.g. with a lower learning rate)")
    tie = pairs["tie"].to_numpy(dtype=bool) if "tie" in pairs else np.zeros(len(pairs), dtype=bool)
    keep = ~tie
    d = (r_chosen - r_rejected)[keep]  # (N',)
    p_chosen = 1 / (1 + np.exp(-d))
    table = calibration_table(p_chosen, n_bins)
    s_c, s_r = shown if shown is not None else (r_chosen, r_rejected)
    prompts = pairs["prompt"].tolist()
    rewards = pd.DataFrame({"prompt": prompts * 2, "response": pairs["chosen"].tolist() + pairs["rejected"].tolist(),
                            "role": ["chosen"] * len(pairs) + ["rejected"] * len(pairs),
                            "reward": np.concatenate([s_c, s_r])})
    distinct = rewards.drop_duplicates(["prompt", "response"])[["prompt", "response", "reward"]]
    ranked = distinct.sort_values("reward", ascending=False, kind="stable").reset_index(drop=True)
    report = RewardReport(
        n_pairs=len(pairs), n_ties=int(tie.sum()),
        accuracy=float((d > 0).mean()) if len(d) else float("nan"),
        log_loss=float(-_log_sigmoid(d).mean()) if len(d) else float("nan"),
        ece=expected_calibration_error(table), calibration=table, rewards=rewards,
        top=ranked.head(top_k), bottom=ranked.tail(top_k).iloc[::-1].reset_index(drop=True))
    if gold is not None:
        g_c = np.asarray(gold(prompts, pairs["chosen"].tolist()), dtype=float)
        g_r = np.asarray(gold(prompts, pairs["rejected"].tolist()), dtype=float)
        g_d = (g_c - g_r)[keep]
        report.gold_accuracy = float(np.mean(np.where(g_d == 0, 0.5, g_d > 0))) if len(g_d) else float("nan")
        distinct_gold = g_c != g_r
        model_d = r_chosen - r_rejected
        report.agreement_with_gold = (float(np.mean(np.sign(model_d[distinct_gold]) == np.sign((g_c - g_r)[distinct_gold])))
                                      if distinct_gold.any() else float("nan"))
    return report


def cross_validate(pairs, fit, *, folds: int = 5, seed: int = 0, train=None) -> pd.DataFrame:
    """Out-of-fold rewards, for judging a reward model fitted on few pairs without setting a fifth of them aside.

    The prompts of `pairs` are dealt into `folds` seeded groups (at most one per prompt). For each group, `fit(p)`
    (a function that fits a new model on the pairs p and returns it) fits the rows of `train` (default `pairs`; e.g.
    a weighted mix with other people's pairs) whose prompts are *not* in the group, and scores the rows of `pairs`
    whose prompts are. Returns `pairs` with fold, r_chosen, r_rejected (raw rewards: `score_raw` where the model
    has it) and p_chosen = σ(r_chosen − r_rejected), each row scored by a model that never saw its prompt."""
    pairs = as_preference_pairs(pairs)
    train = pairs if train is None else as_preference_pairs(train)
    prompts = np.array(sorted(pairs["prompt"].unique()))
    folds = min(int(folds), len(prompts))
    if folds < 2:
        raise ValueError(f"cross-validation needs pairs on at least 2 prompts (and folds >= 2); got {len(prompts)} "
                         f"prompt(s) and folds={folds}")
    fold_of = dict(zip(np.random.default_rng(seed).permutation(prompts), np.arange(len(prompts)) % folds))
    out = pairs.assign(fold=pairs["prompt"].map(fold_of).astype(int), r_chosen=np.nan, r_rejected=np.nan)
    for k in range(folds):
        held = out["fold"] == k
        rest = train[~train["prompt"].map(lambda p: fold_of.get(p) == k)]
        if rest.empty:
            raise ValueError(f"fold {k} leaves no pair to fit on: use fewer folds or more pairs")
        model = fit(rest)
        score = model.score_raw if hasattr(model, "score_raw") else model.score
        for column, replies in (("r_chosen", "chosen"), ("r_rejected", "rejected")):
            out.loc[held, column] = np.asarray(score(list(out.loc[held, "prompt"]), list(out.loc[held, replies])),
                                               dtype=float)
    return out.assign(p_chosen=1 / (1 + np.exp(-(out["r_chosen"] - out["r_rejected"]))))


class NormalisedScores:
    """Pairs, normalisation and evaluation for a reward model that has `score_raw(prompts, responses)` (N,),
    `config.include_ties` and `val_pairs_` (RewardModel, EmbeddingRewardModel), and whose `fitted_attribute` is set
    once it is fitted or loaded."""

    fitted_attribute = "val_pairs_"

    def check_fitted(self) -> None:
        """Raise NotFittedError (one line: fit or load it) unless the model was fitted or loaded."""
        if not hasattr(self, self.fitted_attribute):
            raise not_fitted(self)

    def usable_pairs(self, data) -> pd.DataFrame:
        """`data` as preference pairs (`as_preference_pairs`), ties left out unless `config.include_ties`."""
        pairs = as_preference_pairs(data)
        return pairs if self.config.include_ties else without_ties(pairs)

    def normalize(self, prompts, responses):
        """Set norm_mean_, norm_std_ so that `score` has mean 0 and std 1 on this reference sample. Returns self."""
        self.check_fitted()
        raw = self.score_raw(prompts, responses)
        self.norm_mean_ = raw.mean().item()
        self.norm_std_ = max(raw.std().item(), 1e-6) if len(raw) > 1 else 1.0
        return self

    def evaluate(self, pairs=None, gold=None, n_bins: int = 10, top_k: int = 5) -> RewardReport:
        """Accuracy, log-loss and calibration on `pairs` (default: `val_pairs_`), agreement with a
        `gold(prompts, responses)` utility where given; see `evaluate_rewards`."""
        self.check_fitted()
        if pairs is None and len(getattr(self, "val_pairs_", ())) == 0:
            raise ValueError("this model holds out no pairs to evaluate on (fitted with val_fraction=0, or loaded "
                             "from a file): pass the pairs to evaluate on: evaluate(pairs)")
        pairs = self.usable_pairs(self.val_pairs_ if pairs is None else pairs)
        r_c, r_r = self.score_raw(pairs["prompt"], pairs["chosen"]), self.score_raw(pairs["prompt"], pairs["rejected"])
        shown = ((r_c - self.norm_mean_) / self.norm_std_, (r_r - self.norm_mean_) / self.norm_std_)
        return evaluate_rewards(pairs, r_c.numpy(), r_r.numpy(), gold=gold, shown=(shown[0].numpy(), shown[1].numpy()),
                                n_bins=n_bins, top_k=top_k)


def scored_lists(prompts, responses) -> tuple[list[str], list[str]]:
    """(prompts, responses) as two lists of one length for scoring: one reply string is a list of one, and one
    prompt string is shared by every reply; lists of different lengths are refused in one line."""
    responses = [responses] if isinstance(responses, str) else list(responses)
    prompts = [prompts] * len(responses) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one each")
    return prompts, responses
