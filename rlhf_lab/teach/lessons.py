"""Helpers for the lessons in notebooks/: small steps the notebooks call so that no notebook holds library logic.

    table = sampling_sweep(model, tok, prompts, [SamplingConfig(temperature=t) for t in (0.3, 1.0)])   # lesson 1
    items = sample_pairs(store, model, tok, prompts, SamplingConfig(), seed=0)                          # lesson 2
    who = rate_or_simulate(store, "me", items)      # the learner's judgments, or a simulated stand-in, said aloud
    trust = held_out(yours, fit, folds=5); you_or_crowd(yours, crowd, fit)                                # lesson 3
    reward_mistakes(rm); reward_vs_features(rm, prompts, replies)
    rm, stand_in = your_reward_model("runs/lessons", policy, tokenizer)   # lesson 4: lesson 2's, or a stand-in's
    token_table(tokenizer, trainer.rollout_, row=0)
    overoptimisation_curve(trainer, rm, eval_prompts, n_updates=12, every=3)                           # lesson 6
    run = CrowdRun.create("runs/biased", config, crowd=SimulatedCrowd(bias={"politeness": 2.0}))       # lesson 7
    personal_reward_models(store, RewardConfig())
    runs = constraint_runs("smollm2-135m", reward, cost, rule, train, held_out, PPOConfig(), n_updates=8)
    judge_table(store, "me", [ConstitutionJudge(), LLMJudge(policy, tok)])
    items = sample_items(store, model, tok, prompts, SamplingConfig(), size=4, kind="ranking")          # lesson 9
    who = thumbs_or_simulate(store, "me", items)
    table, diffs = compare_reward_models({"PL": pl, "BT": bt}, held_out, [("PL", "BT")])

The helpers of lessons 7 and 9 on kinds of feedback live in `teach.every_kind`, lesson 3's on how far to trust a
reward model in `teach.trust`; both are re-exported here. Everything
here reads and writes through the public API of the other modules; nothing here imports ipywidgets.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf_lab.core.files import aside_copies
from rlhf_lab.core.inputs import prompt_list
from rlhf_lab.feedback.crowd import SimulatedAnnotator, SimulatedCrowd, stand_in_name
from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.preferences import as_preference_pairs
from rlhf_lab.feedback.records import ITEM_KINDS
from rlhf_lab.loop.evaluation import PairedResult, distinct_n, paired_gain
from rlhf_lab.loop.experiment import ExperimentConfig, RLHFRun
from rlhf_lab.policy.generation import SamplingConfig, generate
from rlhf_lab.reward.ensemble import build_reward_model
from rlhf_lab.reward.model import RewardConfig
from rlhf_lab.teach.every_kind import (ConstraintRuns, compare_reward_models, constraint_runs, judge_table,
                                       sample_items, thumbs_or_simulate)
from rlhf_lab.teach.trust import HeldOut, held_out, prompt_interval, you_or_crowd

__all__ = ["FEATURES", "sampling_sweep", "sample_pairs", "stand_in_name", "rate_or_simulate", "judgment_table",
           "flag_summary", "reward_mistakes", "reward_vs_features", "crowd_reward_model", "your_reward_model",
           "token_table", "score_replies", "before_after", "paired_change", "overoptimisation_curve", "open_run",
           "CrowdRun", "eval_features", "personal_reward_models", "personal_preferences", "crowd_table",
           "config_summary", "sample_items", "thumbs_or_simulate", "compare_reward_models", "ConstraintRuns",
           "constraint_runs", "judge_table", "HeldOut", "held_out", "prompt_interval", "you_or_crowd"]

FEATURES = ("sentiment", "length_words", "length_fit", "repetition", "overlap", "answers_question", "politeness")
"""The gold features the lessons tabulate (see `crowd.gold_features`)."""


# ----------------------------------------------------------------------------------------------------------------------
# lesson 1: sampling


def sampling_sweep(model, tokenizer, prompts: list[str], settings: list[SamplingConfig], *, n_per_prompt: int = 4,
                   seed: int = 0, gold: GoldUtility | None = None) -> pd.DataFrame:
    """One row per sampling setting: its temperature/top_p, the replies' diversity (distinct-1/2 over all replies,
    and the share of prompts whose `n_per_prompt` replies are all different) and quality (mean gold utility, the
    simulated crowd's hidden taste), length and EOS rate. The same seed is used for every setting."""
    gold = gold or GoldUtility()
    rows = []
    for sampling in settings:
        batch = generate(model, tokenizer, prompts, sampling, seed=seed, n_per_prompt=n_per_prompt)
        replies = batch.responses
        groups = [replies[i:i + n_per_prompt] for i in range(0, len(replies), n_per_prompt)]
        rows.append({"temperature": sampling.temperature, "top_p": sampling.top_p,
                     "distinct_1": distinct_n(replies, 1), "distinct_2": distinct_n(replies, 2),
                     "all_different": float(np.mean([len(set(g)) == len(g) for g in groups])),
                     "gold": float(gold(batch.prompts, replies).mean()),
                     "length": float(batch.response_lengths.float().mean()),
                     "eos_rate": float(batch.eos.float().mean()),
                     "example": replies[0]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------------
# lesson 2: feedback


def sample_pairs(store, model, tokenizer, prompts: list[str], sampling: SamplingConfig, *, seed: int = 0,
                 iteration: int = 0) -> list:
    """Two replies per prompt from `model`, stored as pairwise items (A, B in sampling order); returns the Items."""
    batch = generate(model, tokenizer, prompt_list(prompts), sampling, seed=seed, n_per_prompt=2, iteration=iteration)
    ids = store.add_responses(batch.to_records())
    return [store.get_item(i) for i in store.add_items([ids[i:i + 2] for i in range(0, len(ids), 2)])]


def rate_or_simulate(store, annotator: str, items, *, stand_in: SimulatedAnnotator | None = None,
                     minimum: int = 1) -> str:
    """Whose judgments of `items` the lesson goes on with: `annotator`'s when they judged at least `minimum` of
    them (flags and thumbs on their replies do not count), else those of a simulated stand-in (named
    "<annotator> (simulated)"), which judges every item now. Prints which, so a headless run (CI, papermill, Voila
    before anyone clicks) says that it fell back, and a learner who stopped short (a restarted kernel, the next day)
    is told how many are missing rather than meeting an error further down."""
    ids = {it.id if hasattr(it, "id") else int(it) for it in items}
    df = store.judgments_df()
    mine = df[(df["annotator"] == annotator) & df["item_id"].isin(list(ids)) & df["kind"].isin(ITEM_KINDS)]
    if len(mine) >= minimum:
        print(f"Using your {len(mine)} judgment(s) as {annotator!r} ({len(ids) - len(mine)} item(s) left unrated).")
        return annotator
    stand_in = stand_in or SimulatedAnnotator(stand_in_name(annotator), rationality=3.0, seed=0)
    theirs = (df["annotator"] == stand_in.name) & df["item_id"].isin(list(ids)) & df["kind"].isin(ITEM_KINDS)
    earlier = int(theirs.sum())  # e.g. in an earlier lesson
    new = stand_in.annotate(store, sorted(ids))
    who = (f"You judged {len(mine)} of {len(ids)} item(s) as {annotator!r}; the steps below need at least {minimum}, "
           "so a SIMULATED annotator stood in for you" if len(mine) else
           f"Nobody rated as {annotator!r}: a SIMULATED annotator stood in for you")
    print(f"⚠ {who} ({stand_in.name!r} has judged {earlier + len(new)} item(s) by the simulated crowd's taste). "
          "Everything below uses its judgments, not yours: rate in the widget above and rerun this cell to use your "
          "own.")
    return stand_in.name


def judgment_table(store, annotator: str | None = None, kind: str = "pairwise") -> pd.DataFrame:
    """Judgments as a readable table: item, annotator, prompt, the replies (A, B, ...), the answer and comment."""
    df = store.judgments_df()
    df = df[df["kind"] == kind]
    if annotator is not None:
        df = df[df["annotator"] == annotator]
    rows = []
    for j in df.itertuples():
        row = {"item": j.item_id, "annotator": j.annotator, "prompt": j.prompt}
        row.update({f"reply {chr(65 + i)}": text for i, text in enumerate(j.responses)})
        row.update(j.answer)
        row["comment"] = j.comment
        rows.append(row)
    return pd.DataFrame(rows)


def flag_summary(store) -> pd.DataFrame:
    """One row per flagged reply: the reply, how many annotators looked, and how many raised each flag."""
    df = store.judgments_df()
    df = df[df["kind"] == "flags"]
    if df.empty:
        return pd.DataFrame(columns=["response_id", "prompt", "reply", "looked"])
    rows = []
    for response_id, group in df.groupby("response_id"):
        counts: dict[str, int] = {}
        for answer in group["answer"]:
            for flag in answer["flags"]:
                counts[flag] = counts.get(flag, 0) + 1
        rows.append({"response_id": int(response_id), "prompt": group["prompt"].iloc[0],
                     "reply": group["responses"].iloc[0][0], "looked": len(group), **counts})
    table = pd.DataFrame(rows).fillna(0)
    flags = [c for c in table.columns if c not in ("response_id", "prompt", "reply", "looked")]
    table[flags] = table[flags].astype(int)
    return table[table[flags].sum(axis=1) > 0].sort_values(flags, ascending=False).reset_index(drop=True) \
        if flags else table.iloc[0:0]


# ----------------------------------------------------------------------------------------------------------------------
# lesson 3: what a reward model learned


def reward_mistakes(reward_model, pairs=None, n: int = 5) -> pd.DataFrame:
    """The held-out pairs (default: the model's `val_pairs_`, ties left out) the model gets most confidently wrong:
    prompt, chosen, rejected, their rewards and P(chosen) = σ(r_c − r_r), lowest P first."""
    pairs = as_preference_pairs(reward_model.val_pairs_ if pairs is None else pairs)
    pairs = pairs[~pairs["tie"]]
    if pairs.empty:
        return pd.DataFrame(columns=["prompt", "chosen", "rejected", "r_chosen", "r_rejected", "p_chosen"])
    r_c = reward_model.score(pairs["prompt"].tolist(), pairs["chosen"].tolist()).numpy()
    r_r = reward_model.score(pairs["prompt"].tolist(), pairs["rejected"].tolist()).numpy()
    table = pairs[["prompt", "chosen", "rejected"]].assign(r_chosen=r_c, r_rejected=r_r,
                                                           p_chosen=1 / (1 + np.exp(-(r_c - r_r))))
    return table[table["p_chosen"] < 0.5].sort_values("p_chosen").head(n).reset_index(drop=True)


def reward_vs_features(reward_model, prompts, responses, gold: GoldUtility | None = None) -> pd.DataFrame:
    """What a reward model rewards: the rank correlation (Spearman) of its scores, and of the gold utility, with each
    gold feature of the replies. A feature the gold utility ignores but the model follows is a learned shortcut."""
    gold = gold or GoldUtility()
    feats = pd.DataFrame([gold.features(p, r) for p, r in zip(prompts, responses)])[list(FEATURES)]
    scores = pd.Series(reward_model.score(list(prompts), list(responses)).numpy(), name="reward model")
    utility = pd.Series(gold(list(prompts), list(responses)), name="gold")
    with warnings.catch_warnings():  # a feature constant over these replies has no correlation (NaN), no warning
        warnings.simplefilter("ignore")
        by_model, by_gold = feats.corrwith(scores, method="spearman"), feats.corrwith(utility, method="spearman")
    table = pd.DataFrame({"reward model": by_model, "gold": by_gold,
                          "gold weight": [gold.weights.get(f, 0.0) for f in feats.columns]})
    table.index.name = "feature"
    return table


def crowd_reward_model(store, model, tokenizer, prompts: list[str], sampling: SamplingConfig, config: RewardConfig, *,
                       crowd: SimulatedCrowd | None = None, seed: int = 0):
    """A reward model fitted on a simulated crowd's judgments of fresh pairs (two replies per prompt from `model`),
    for lessons that need one without the learner's data. The pairs and judgments are added to `store`."""
    items = sample_pairs(store, model, tokenizer, prompts, sampling, seed=seed)
    (crowd or SimulatedCrowd(n=3, seed=seed)).annotate(store, items)
    return build_reward_model(config).fit(store, progress=False)


# ----------------------------------------------------------------------------------------------------------------------
# lesson 4: PPO on real tensors


def token_table(tokenizer, rollout: dict, row: int = 0) -> pd.DataFrame:
    """One reply of a PPO rollout (`PPOTrainer.rollout_`) token by token: the token, log π, log π_ref, the KL
    estimate k1 = log π − log π_ref, the shaped reward, the value, the advantage and the return."""
    mask = rollout["mask"][row].bool()
    ids = rollout["batch"].response_ids[row].to(mask.device)[mask]
    columns = {"logp": "logp", "ref_logp": "ref_logp", "reward": "rewards", "value": "values",
               "advantage": "advantages", "return": "returns"}
    table = pd.DataFrame({"token": tokenizer.convert_ids_to_tokens(ids.tolist())})
    for name, key in columns.items():
        table[name] = rollout[key][row][mask].detach().float().cpu().numpy()
    table.insert(3, "kl_k1", table["logp"] - table["ref_logp"])
    return table


def your_reward_model(run_dir, policy, tokenizer, *, taste: str = "short", labels: int = 40, seed: int = 0,
                      smoke: bool = False):
    """Lesson 4's reward model: the one lesson 2 fitted on your judgments (`run_dir`/taste/reward_model), or, when
    there is none, one fitted on `labels` judgments of a simulated learner with `taste`, who stands in for you (said
    aloud). Returns (reward model, the stand-in `SimulatedLearner` or None)."""
    from rlhf_lab.feedback.store import FeedbackStore
    from rlhf_lab.feedback.tastes import SimulatedLearner
    from rlhf_lab.loop.taste import TasteConfig, simulate_labels, taste_model
    from rlhf_lab.policy.prompts import load_prompts
    from rlhf_lab.reward.embedding import EmbeddingRewardModel

    path = Path(run_dir) / "taste" / "reward_model"
    if (path / "embedding_reward_model.json").is_file() or aside_copies(path):  # aside: a replace was interrupted
        print(f"your reward model from lesson 2: {path}")
        return EmbeddingRewardModel.load(path), None
    config = TasteConfig.smoke(labels, seed) if smoke else TasteConfig(labels=labels, seed=seed)
    learner = SimulatedLearner(taste, name=f"{taste} (simulated)", seed=seed)
    print(f"No reward model of yours in {path} (run lesson 2 to make one from your judgments): a SIMULATED learner "
          f"whose taste is {taste!r} judges {labels} pairs and stands in for you.")
    store = FeedbackStore(Path(run_dir) / "lesson4_feedback.db")
    judged = simulate_labels(store, learner, policy, tokenizer, load_prompts(config.prompt_set, split="train",
                                                                             max_words=24), config)
    pairs = store.preference_pairs(include_ties=True)
    return taste_model(pairs[pairs["judgment_id"].isin(judged)], config), learner


def score_replies(model, tokenizer, prompts: list[str], sampling: SamplingConfig, *, seed: int = 0,
                  reward_model=None, gold: GoldUtility | None = None, n_per_prompt: int = 1,
                  taste=None) -> pd.DataFrame:
    """`n_per_prompt` replies per prompt (adjacent rows) with their gold utility, (when given) reward-model score
    and (with a `SimulatedLearner` as `taste`) the learner's utility: prompt, reply, gold, reward, taste."""
    gold = gold or GoldUtility()
    batch = generate(model, tokenizer, prompt_list(prompts), sampling, seed=seed, n_per_prompt=n_per_prompt)
    table = pd.DataFrame({"prompt": batch.prompts, "reply": batch.responses,
                          "gold": gold(batch.prompts, batch.responses)})
    if reward_model is not None:
        table["reward"] = reward_model.score(batch.prompts, batch.responses).numpy()
    if taste is not None:
        table["taste"] = taste.utility(batch.prompts, batch.responses)
    return table


def before_after(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Two `score_replies` tables for the same prompts side by side (columns suffixed "before" / "after")."""
    if list(before["prompt"]) != list(after["prompt"]):
        raise ValueError("before and after must score the same prompts in the same order")
    merged = before.drop(columns="prompt").add_suffix(" before").join(after.drop(columns="prompt").add_suffix(" after"))
    merged.insert(0, "prompt", before["prompt"])
    return merged


def paired_change(before: pd.DataFrame, after: pd.DataFrame, column: str = "gold", seed: int = 0) -> PairedResult:
    """`paired_gain` of one column of two `score_replies` tables (same prompts, same replies per prompt): the change
    paired by prompt, its 95 % interval and verdict, e.g. print(paired_change(before, after, "gold"))."""
    if list(before["prompt"]) != list(after["prompt"]):
        raise ValueError("before and after must score the same prompts in the same order")
    order = list(dict.fromkeys(before["prompt"]))
    shape = (len(order), len(before) // len(order))
    return paired_gain(before[column].to_numpy().reshape(shape), after[column].to_numpy().reshape(shape), seed=seed)


# ----------------------------------------------------------------------------------------------------------------------
# lesson 6: over-optimisation


def overoptimisation_curve(trainer, reward_model, train_prompts: list[str], eval_prompts: list[str], *,
                           n_updates: int, every: int, gold: GoldUtility | None = None, seed: int = 0) -> pd.DataFrame:
    """Train `trainer` to `n_updates` updates in steps of `every`, and before and after each step score its replies to
    `eval_prompts` (same seed each time): update, kl (k1 nats per reply), proxy (the reward model), gold, beta."""
    gold = gold or GoldUtility()
    rows = []
    while True:
        batch = generate(trainer.policy, trainer.tokenizer, list(eval_prompts), trainer.config.sampling, seed=seed)
        rows.append({"update": trainer.update_, "kl": float(trainer.kl_to_reference(batch).mean()),
                     "proxy": float(reward_model.score(batch.prompts, batch.responses).mean()),
                     "gold": float(gold(batch.prompts, batch.responses).mean()), "beta": trainer.kl_ctl.value,
                     "length": float(batch.response_lengths.float().mean())})
        if trainer.update_ >= n_updates:
            return pd.DataFrame(rows)
        trainer.train(train_prompts, n_updates=min(trainer.update_ + every, n_updates))


# ----------------------------------------------------------------------------------------------------------------------
# lesson 5 and 7: runs


def open_run(path: str | Path, config: ExperimentConfig, *, fresh: bool = False, **kwargs) -> RLHFRun:
    """Reopen the run in `path` (same config) or create it; fresh=True deletes what is there first."""
    path = Path(path)
    if (path / "config.json").exists() and not fresh:
        run = RLHFRun.open(path, **kwargs)
        if run.config.to_dict() != ExperimentConfig.from_dict(config.to_dict()).to_dict():
            raise ValueError(f"{path} holds a run with another config: pass fresh=True to start it over.")
        return run
    return RLHFRun.create(path, config, overwrite=True, **kwargs)


class CrowdRun(RLHFRun):
    """An RLHFRun whose feedback comes from a given crowd (e.g. a biased one) instead of the config's neutral panel;
    evaluation still uses the true gold utility. The crowd is not saved with the run: pass it again on reopening."""

    def __init__(self, path, config: ExperimentConfig, *, crowd: SimulatedCrowd, **kwargs):
        self.crowd = crowd
        super().__init__(path, config, **kwargs)

    def collect_feedback(self, items) -> int:
        return len(self.crowd.annotate(self.store, items))


def eval_features(run: RLHFRun, gold: GoldUtility | None = None) -> pd.DataFrame:
    """Mean gold features of each evaluated iteration's eval replies (iteration 0 = the initial policy)."""
    gold = gold or GoldUtility()
    rows = []
    for path in sorted(run.path.glob("iter_*/eval_samples.jsonl")):
        samples = pd.read_json(path, lines=True)
        feats = pd.DataFrame([gold.features(p, r) for p, r in zip(samples["prompt"], samples["response"])])
        rows.append({"iteration": int(path.parent.name.split("_")[1]), **feats[list(FEATURES)].mean().to_dict(),
                     "gold": float(samples["gold"].mean())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------------
# lesson 7: personalised reward models


def personal_reward_models(store, config: RewardConfig, annotators: list[str] | None = None) -> dict:
    """One reward model per annotator, each fitted on that annotator's judgments only (same config and seed)."""
    pairs = store.preference_pairs(include_ties=True)
    names = sorted(pairs["annotator"].unique()) if annotators is None else list(annotators)
    models = {}
    for name in names:
        mine = pairs[pairs["annotator"] == name]
        if mine.empty:
            raise ValueError(f"{name!r} has no preference pairs in the store")
        models[name] = build_reward_model(replace(config, ensemble_size=1)).fit(mine, progress=False)
    return models


def personal_preferences(models: dict, prompts, responses, gold: GoldUtility | None = None) -> pd.DataFrame:
    """Each personal reward model's rank correlation with each gold feature (rows: annotators, columns: features)."""
    return pd.DataFrame({name: reward_vs_features(model, prompts, responses, gold)["reward model"]
                         for name, model in models.items()}).T.rename_axis("annotator")


def crowd_table(crowd: SimulatedCrowd) -> pd.DataFrame:
    """The crowd's members: name, rationality, careless and adversarial settings, and their feature weights."""
    rows = []
    for member in crowd.members():
        rows.append({"annotator": member.name, "rationality": member.rationality, "careless": member.careless,
                     "adversarial": member.adversarial,
                     **{f"w_{k}": round(v, 3) for k, v in member.weights.items()}})
    return pd.DataFrame(rows).set_index("annotator")


def config_summary(config) -> pd.Series:
    """A dataclass config flattened to dotted keys (e.g. "ppo.kl_coef"), for printing beside results. A section the
    config does not read (`ExperimentConfig.unused_section`: the other reward model's settings) is left out."""
    flat: dict = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    unused = getattr(config, "unused_section", None)
    walk("", {k: v for k, v in asdict(config).items() if k != unused})
    return pd.Series(flat, dtype=object)
