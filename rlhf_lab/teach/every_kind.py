"""Helpers for the lessons on every kind of feedback (lesson 9) and on what flags and AI judges do (lesson 7).

    likert = sample_items(store, model, tok, prompts, SamplingConfig(), size=2, kind="rating", seed=0)
    who = thumbs_or_simulate(store, "me", items)             # the learner's thumbs, or a simulated stand-in's, said
    table, differences = compare_reward_models({"BT": bt, "regression": reg}, held_out, [("regression", "BT")])
    runs = constraint_runs("smollm2-135m", reward, cost, rule, train, held_out_prompts, PPOConfig(), n_updates=8)
    judge_table(store, "me", [ConstitutionJudge(), LLMJudge(policy, tok)])

`rlhf_lab.teach.lessons` re-exports these, so the notebooks call them as `lessons.<name>`. Nothing here imports
ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rlhf_lab.feedback.agreement import cohen_kappa, gold_labels_from_df, label_matrix
from rlhf_lab.feedback.crowd import SimulatedAnnotator, stand_in_name
from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.records import Item, replies_of
from rlhf_lab.loop.evaluation import paired_gain
from rlhf_lab.policy.generation import generate
from rlhf_lab.reward.sources import as_reward

__all__ = ["sample_items", "thumbs_or_simulate", "compare_reward_models", "ConstraintRuns", "constraint_runs",
           "judge_table"]


def sample_items(store, model, tokenizer, prompts: list[str], sampling, *, size: int, kind: str, seed: int = 0,
                 iteration: int = 0) -> list[Item]:
    """`size` replies per prompt from `model`, stored as items of `kind` ("pairwise", "rating" or "ranking", the
    replies in sampling order); returns the Items."""
    batch = generate(model, tokenizer, list(prompts), sampling, seed=seed, n_per_prompt=size, iteration=iteration)
    ids = store.add_responses(batch.to_records())
    groups = [ids[i:i + size] for i in range(0, len(ids), size)]
    return [store.get_item(i) for i in store.add_items(groups, kind=kind)]


def thumbs_or_simulate(store, annotator: str, replies, *, stand_in: SimulatedAnnotator | None = None,
                       minimum: int = 1) -> str:
    """`rate_or_simulate` for thumbs: whose thumbs on `replies` (Items, Responses or response ids) the lesson goes
    on with: `annotator`'s when they gave at least `minimum`, else those of a simulated stand-in ("<annotator>
    (simulated)"), which judges every reply now. Prints which, so a headless run says that it fell back."""
    replies = replies_of(replies, store.get_response)
    done = store.judged_targets(annotator)
    mine = sum(f"thumbs:{r.id}" in done for r in replies)
    if mine >= minimum:
        print(f"Using your {mine} thumb(s) as {annotator!r} ({len(replies) - mine} reply(ies) left unjudged).")
        return annotator
    stand_in = stand_in or SimulatedAnnotator(stand_in_name(annotator), rationality=3.0, seed=0)
    new = stand_in.annotate_replies(store, replies, ("thumbs",))
    who = (f"You gave {mine} of {len(replies)} thumb(s) as {annotator!r}; the steps below need at least {minimum}, "
           "so a SIMULATED annotator stood in for you" if mine else
           f"Nobody gave thumbs as {annotator!r}: a SIMULATED annotator stood in for you")
    print(f"⚠ {who} ({stand_in.name!r} judged {len(new)} reply(ies) by the simulated crowd's taste). Everything "
          "below uses its thumbs, not yours: judge in the widget above and rerun this cell to use your own.")
    return stand_in.name


# ----------------------------------------------------------------------------------------------------------------------
# lesson 9: reward models from every kind of feedback, on the same held-out pairs


def _correct(models: dict, replies: pd.DataFrame, utility: str) -> tuple[np.ndarray, dict]:
    """Per held-out prompt, the number of pairs (two of its replies with different `utility`) (P,) and, per model,
    how many of them it orders as `utility` does, a reward tie counting ½ (P,)."""
    groups = list(replies.groupby("prompt", sort=False).indices.values())
    scores = {name: np.asarray(model.score(list(replies["prompt"]), list(replies["reply"])), dtype=float)
              for name, model in models.items()}
    truth = replies[utility].to_numpy(dtype=float)
    counts, right = np.zeros(len(groups)), {name: np.zeros(len(groups)) for name in models}
    for p, rows in enumerate(groups):
        i, j = np.triu_indices(len(rows), 1)
        a, b = rows[i], rows[j]
        keep = truth[a] != truth[b]
        a, b = a[keep], b[keep]
        counts[p] = len(a)
        for name, s in scores.items():
            agree = np.sign(s[a] - s[b]) == np.sign(truth[a] - truth[b])
            right[name][p] = (agree + 0.5 * (s[a] == s[b])).sum()
    return counts, right


def compare_reward_models(models: dict, replies: pd.DataFrame, differences=(), *, utility: str = "gold",
                          confidence: float = 0.95, n_boot: int = 2000, seed: int = 0):
    """Reward models on the same held-out pairs: every two replies to one prompt in `replies` (a `score_replies`
    table: prompt, reply and the `utility` column, a prompt's replies adjacent) whose utilities differ.

    Returns (table, diffs). table: one row per model, the share of those pairs it orders as the utility does
    (a reward tie ½) with a percentile bootstrap interval over prompts (pairs of one prompt are not independent);
    diffs: one row per (first, second) in `differences`, first's agreement minus second's on the same pairs,
    its interval from the same resamples, and a verdict: "first better", "second better" or "no detectable
    difference" when the interval contains 0."""
    counts, right = _correct(models, replies, utility)
    if counts.sum() == 0:
        raise ValueError(f"no held-out pair has two replies of different {utility!r}: sample more replies")
    idx = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))  # prompts resampled
    n = counts[idx].sum(1)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2

    def share(values):
        return values.sum() / counts.sum(), np.percentile(values[idx].sum(1) / np.maximum(n, 1), [lo, hi])

    rows = []
    for name in models:
        value, (low, high) = share(right[name])
        rows.append({"model": name, "agreement": value, "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows).set_index("model").assign(pairs=int(counts.sum()), prompts=len(counts))
    rows = []
    for first, second in differences:
        value, (low, high) = share(right[first] - right[second])
        words = (f"{first} better" if low > 0 else f"{second} better" if high < 0 else "no detectable difference")
        rows.append({"first": first, "second": second, "difference": value, "ci_low": low, "ci_high": high,
                     "verdict": words})
    return table, pd.DataFrame(rows, columns=["first", "second", "difference", "ci_low", "ci_high", "verdict"])


# ----------------------------------------------------------------------------------------------------------------------
# lesson 7: flags change the policy


@dataclass
class ConstraintRuns:
    """What `constraint_runs` measured. summary: one row per policy (before, PPO, PPO + cost constraint) with the
    flagged-reply rate and the reward on the held-out replies, each with a 95 % bootstrap interval over prompts, the
    KL to the initial policy (nats per reply) and λ; changes: each trained policy against the initial one, paired by
    prompt (`loop.evaluation.PairedResult` as rows); replies: every held-out reply, its flag and reward; history:
    each run's training metrics (`MetricsHistory.to_frame()`); cost_accuracy: the cost model's accuracy against the
    flag rule on the initial policy's held-out replies."""

    summary: pd.DataFrame
    changes: pd.DataFrame
    replies: pd.DataFrame
    history: dict = field(default_factory=dict)
    cost_accuracy: float = float("nan")

    def __str__(self) -> str:
        lines = [f"cost model: {self.cost_accuracy:.0%} of the initial policy's held-out replies classified as the "
                 "flag rule says"]
        for row in self.changes.itertuples():
            lines.append(f"{row.run}: {row.measure} {row.before:.3f} → {row.after:.3f}, change {row.gain:+.3f} "
                         f"(95 % interval {row.ci_low:+.3f} to {row.ci_high:+.3f}): {row.verdict}")
        return "\n".join(lines)


def _interval(per_prompt: np.ndarray, seed: int, n_boot: int = 2000) -> tuple[float, float]:
    idx = np.random.default_rng(seed).integers(0, len(per_prompt), size=(n_boot, len(per_prompt)))
    low, high = np.percentile(per_prompt[idx].mean(1), [2.5, 97.5])
    return float(low), float(high)


def constraint_runs(model: str, reward, cost, flag_rule, train_prompts: list[str], eval_prompts: list[str], config,
                    *, n_updates: int, n_per_prompt: int = 4, seed: int = 0, callbacks=None) -> ConstraintRuns:
    """Two short PPO runs from the same initial policy (`load_policy(model)`, loaded afresh for each), identical but
    for the cost: without it, and with the constraint E[cost] ≤ config.cost_limit (`train.constraint`, Safe RLHF's
    adaptive λ). Before and after, `n_per_prompt` replies to each of `eval_prompts` (same seed each time) are
    flagged by `flag_rule(prompts, replies)` and scored by `reward` (anything `as_reward` takes, as PPO does); see
    `ConstraintRuns` for what comes back. `callbacks` default: a line every 4 updates with the flagged rate, the cost
    and λ."""
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.train.callbacks import DEFAULT_PRINT_KEYS, PrintLogger
    from rlhf_lab.train.ppo import PPOTrainer

    if callbacks is None:
        keys = (*DEFAULT_PRINT_KEYS[:2], ("objective/flagged_rate", "flagged"), ("objective/cost", "cost"),
                ("objective/lambda", "λ"))
        callbacks = [PrintLogger(every=4, keys=keys, samples=False)]

    eval_prompts = list(eval_prompts)
    sampling, shape, scorer = config.sampling, (len(eval_prompts), n_per_prompt), as_reward(reward)

    def evaluate(policy, tokenizer, name, trainer=None):
        batch = generate(policy, tokenizer, eval_prompts, sampling, seed=10_007 + seed, n_per_prompt=n_per_prompt)
        flagged = np.asarray(flag_rule(batch.prompts, batch.responses), dtype=float)
        scores = scorer.score(batch.prompts, batch.responses).numpy().astype(float)
        kl = 0.0 if trainer is None else float(trainer.kl_to_reference(batch).mean())
        table = pd.DataFrame({"run": name, "prompt": batch.prompts, "reply": batch.responses,
                              "flagged": flagged.astype(bool), "reward": scores})
        return flagged.reshape(shape).mean(1), scores.reshape(shape).mean(1), kl, table

    policy, tokenizer = load_policy(model)
    before = evaluate(policy, tokenizer, "before")
    accuracy = cost.accuracy(before[3]["prompt"], before[3]["reply"], before[3]["flagged"])
    del policy
    results, history, lambdas = {"before": before}, {}, {"before": float("nan")}
    for name, constrained in (("PPO", False), ("PPO + cost constraint", True)):
        if callbacks:
            print(f"{name}: {n_updates} updates")
        policy, tokenizer = load_policy(model)
        trainer = PPOTrainer(policy, tokenizer, reward, config, cost=cost if constrained else None,
                             flag_rule=flag_rule, callbacks=callbacks)
        trainer.train(train_prompts, n_updates=n_updates)
        results[name] = evaluate(trainer.policy, tokenizer, name, trainer)
        history[name] = trainer.history.to_frame()
        lambdas[name] = trainer.constraint.value if constrained else float("nan")
        del trainer, policy
    summary, changes = [], []
    for name, (flagged, scores, kl, _) in results.items():
        summary.append({"run": name, "flagged_rate": flagged.mean(), **dict(zip(
            ("flagged_ci_low", "flagged_ci_high"), _interval(flagged, seed))), "reward": scores.mean(),
            **dict(zip(("reward_ci_low", "reward_ci_high"), _interval(scores, seed))), "kl": kl,
            "lambda": lambdas[name]})
        if name != "before":
            for measure, column in (("flagged rate", 0), ("reward", 1)):
                change = paired_gain(before[column], results[name][column], seed=seed)
                changes.append({"run": name, "measure": measure, **change.to_dict()})
    return ConstraintRuns(pd.DataFrame(summary).set_index("run"), pd.DataFrame(changes),
                          pd.concat([r[3] for r in results.values()], ignore_index=True), history, accuracy)


# ----------------------------------------------------------------------------------------------------------------------
# lesson 7: an AI judge beside the learner


def judge_table(store, annotator: str, judges, gold: GoldUtility | None = None) -> pd.DataFrame:
    """How AI judges that judged the store's pairwise items compare with `annotator` and with gold: one row for the
    annotator, then one per judge (objects with a `name`, as `feedback.judges` makes them):

    - judged: pairwise items it judged; with_you: of those, items `annotator` judged too;
    - agrees_with_you and kappa_with_you: the share of those common items with the same label (A, B, tie) and
      Cohen's κ on them (chance-corrected; NaN without common items);
    - gold_agreement: on the items it judged whose gold utilities differ, the share where it chose the reply with
      the higher gold utility (a tie ½);
    - position_bias: how much more often than ½ it chose the reply shown first, measured by the judge itself on
      both orders (`LLMJudge.position_bias_`); NaN for a judge that does not measure it;
    - seconds_per_judgment: the judge's own timing (NaN for the annotator).
    """
    df = store.judgments_df()
    labels = label_matrix(df, "pairwise")
    truth = pd.Series(gold_labels_from_df(df, gold))
    truth = truth[truth != "tie"]
    if annotator not in labels:
        raise ValueError(f"{annotator!r} has judged no pairwise item in this store: judge some pairs first")
    rows = []
    for who in [annotator, *judges]:
        name = who if isinstance(who, str) else who.name
        if name not in labels:
            raise ValueError(f"{name!r} has judged no pairwise item in this store: call its annotate(store) first")
        said = labels[name].dropna()
        common = said.index.intersection(labels[annotator].dropna().index)
        decided = said.index.intersection(truth.index)
        graded = np.where(said[decided] == "tie", 0.5, said[decided] == truth[decided])
        mine = name == annotator
        rows.append({"annotator": name, "judged": len(said), "with_you": len(common),
                     "agrees_with_you": float("nan") if mine or not len(common) else float(
                         (said[common] == labels.loc[common, annotator]).mean()),
                     "kappa_with_you": float("nan") if mine or not len(common) else cohen_kappa(
                         said[common], labels.loc[common, annotator]),
                     "gold_agreement": float(graded.mean()) if len(decided) else float("nan"),
                     "position_bias": float(getattr(who, "position_bias_", float("nan"))),
                     "seconds_per_judgment": float("nan") if mine else who.seconds_ / max(who.judgments_, 1)})
    return pd.DataFrame(rows).set_index("annotator")
