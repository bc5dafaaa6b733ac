"""Which reward-model blocks learn a taste from the taste loop's own 40 judgments (issue #17's ablation).

    PYTHONPATH=bench python bench/taste_features.py                  # seeds 0-4, every shipped taste + the unseen one
    PYTHONPATH=bench python bench/taste_features.py --seeds 0 --tastes questions,unseen_taste:about_you

For each seed, stages 1-3 of `run_taste` exactly as the loop runs them (the same 40 label pairs from SmolLM2, the
same 64 fresh pairs; replies do not depend on the taste), each taste's simulated learner judging the same pairs;
then a reward model per block setting fitted on the same judgments (those the loop's learner makes: its coins keyed
by each pair's number), and its agreement with the taste on the fresh pairs that the taste tells apart
(`EmbeddingRewardModel.agreement`). Settings: "all_relevance", the loop's default since 2026-12-06: every feature's
own prior weight, up to 3 times its block's, by the judgments' evidence (`relevance`); every other setting has one
prior weight per block: "words" (the default before), no word counts, word counts at prior weight 0.3, "cv": the one
of those three with the lowest 5-fold cross-validated log-loss on the learner's own judgments (what a learner's data
alone would choose), "evidence": the words prior among `WORDS_PRIORS` whose Laplace evidence on the learner's
judgments is largest (`words_weights`; its choice is printed as "chosen"), "relevance": each word's own prior weight,
up to 3, by the evidence (`words_relevance`), "words_3"/"words_10": the words block at those prior weights, "blend":
the sum of the words and no-words models' normalised scores (a two-model average), and "log_length": "words" with
the surface features before "word_count" (`FIRST_SURFACE`: length as log_words only). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlhf_lab.cli import PRIORS
from rlhf_lab.core.machine import machine_info
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.feedback.tastes import SimulatedLearner
from rlhf_lab.loop.taste import TasteConfig, fresh_pairs, label_pairs, label_prompts, taste_model
from rlhf_lab.policy.models import load_policy
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.reward.embedding import WORDS_PRIORS, EmbeddingRewardModel
from rlhf_lab.reward.evaluation import order_agreement
from rlhf_lab.reward.text_features import FIRST_SURFACE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/unseen_taste.py
SHARED = PRIORS["shared"]  # one prior weight per block: the loop's default before 2026-12-06
SETTINGS = {"words": SHARED, "no_words": {**SHARED, "features": ("reply", "prompt_x_reply", "surface")},
            "words_0.3": {**SHARED, "words_weight": 0.3}, "log_length": {**SHARED, "surface": FIRST_SURFACE},
            "words_3": {**SHARED, "words_weight": 3.0}, "words_10": {**SHARED, "words_weight": 10.0},
            "evidence": {**SHARED, "words_weights": WORDS_PRIORS},
            "relevance": {**SHARED, "words_relevance": 3.0}, "all_relevance": PRIORS["relevance"]}


def cv_loss(pairs, reward_config, seed: int, folds: int = 5) -> float:
    """Mean held-out −log σ(r_c − r_r) over `folds` folds of the learner's pairs (one member per fit)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    config, total = replace(reward_config, ensemble_size=1), 0.0
    for f in range(folds):
        test = order[f::folds]
        rm = EmbeddingRewardModel(config).fit(pairs.iloc[np.setdiff1d(order, test)])
        held = pairs.iloc[test]
        total += float(F.softplus(-(rm.score_raw(held["prompt"], held["chosen"])
                                    - rm.score_raw(held["prompt"], held["rejected"]))).sum())
    return total / len(pairs)


def blend_agreement(models, a, b, utility) -> float:
    """`order_agreement` of the sum of the models' normalised scores (`score`: each in standard deviations of its
    fitted replies): the agreement of an average of models."""
    return order_agreement(lambda p, r: sum(m.score(p, r).numpy() for m in models), a.prompts, a.responses,
                           b.responses, utility)


def one_seed(seed: int, tastes: list[str], policy, tokenizer, settings: list[str]) -> dict:
    """{taste: {setting: agreement}} at the loop's own labels and fresh pairs for this seed ("cv", "blend" and
    "chosen" where the settings they need are among `settings`)."""
    config = TasteConfig(seed=seed)
    train = load_prompts(config.prompt_set, split="train", max_words=24)
    drawn = label_prompts(train, config)
    store = FeedbackStore(":memory:")
    items = label_pairs(store, policy, tokenizer, drawn, config)
    a, b = fresh_pairs(policy, tokenizer, train, drawn, config)
    out = {}
    for taste in tastes:
        learner = SimulatedLearner(taste, name=taste, seed=seed)
        ids = learner.annotate(store, items, keys=range(1, len(items) + 1))  # as `simulate_labels`
        pairs = store.preference_pairs(include_ties=True)
        pairs = pairs[pairs["judgment_id"].isin(ids)]
        configs = {name: replace(config.reward, **SETTINGS[name]) for name in settings}
        models = {name: taste_model(pairs, replace(config, reward=c)) for name, c in configs.items()}
        out[taste] = {name: m.agreement(a.prompts, a.responses, b.responses, learner.taste)
                      for name, m in models.items()}
        if "evidence" in models:
            out[taste]["chosen"] = models["evidence"].config.words_weight
        if {"words", "no_words", "words_0.3"} <= set(models):
            losses = {name: cv_loss(pairs, configs[name], seed) for name in ("words", "no_words", "words_0.3")}
            out[taste]["cv"] = out[taste][min(losses, key=losses.get)]
        if {"words", "no_words"} <= set(models):
            out[taste]["blend"] = blend_agreement([models["words"], models["no_words"]], a, b, learner.taste)
        print(f"  seed {seed} {taste}: " + ", ".join(f"{k} {v:.2f}" for k, v in out[taste].items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tastes", default="short,questions,enthusiastic,formal,gold,unseen_taste:about_you")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which of: " + ", ".join(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not all(s.strip().isdigit() for s in args.seeds.split(",")):
        parser.error(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2,3,4; got {args.seeds!r}")
    tastes, seeds = args.tastes.split(","), [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    if set(settings) - set(SETTINGS):
        parser.error(f"unknown settings {sorted(set(settings) - set(SETTINGS))}; choose among {', '.join(SETTINGS)}")
    policy, tokenizer = load_policy("smollm2-135m")
    runs = [one_seed(seed, tastes, policy, tokenizer, settings) for seed in seeds]
    names = [name for name in [*settings, "cv", "blend"] if name in runs[0][tastes[0]]]
    figures: dict = {"seeds": seeds, "labels": TasteConfig().labels}
    print("agreement with the taste at 40 labels, median over seeds [min, max]")
    for taste in tastes:
        figures[taste] = {}
        for name in names:
            values = [r[taste][name] for r in runs]
            figures[taste][f"{name}_median"] = round(statistics.median(values), 3)
        print(f"  {taste:<24} " + ", ".join(
            f"{name} {statistics.median([r[taste][name] for r in runs]):.2f} "
            f"[{min(r[taste][name] for r in runs):.2f}, {max(r[taste][name] for r in runs):.2f}]"
            for name in names))
    print(json.dumps({"machine": machine_info(), "model": "smollm2-135m", **figures}))


if __name__ == "__main__":
    main()
