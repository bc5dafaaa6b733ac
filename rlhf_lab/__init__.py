"""rlhf-lab: a workbench for learning and researching RLHF.

The package is laid out as the loop runs (prompts → samples → judgments → reward model → policy → next iteration):

    core/      seeding, atomic files and checkpoints, configs, errors, Hugging Face plumbing
    policy/    models and tokenizers, prompt sets, sampling
    feedback/  records, the judgment store, preference pairs, the gold utility and the simulated crowd, agreement
    reward/    the reward network and loss, reward models and ensembles, their evaluation, reward sources
    train/     PPO maths, the policy with its value head, the on-policy base (PPO, RLOO), DPO, best-of-n, callbacks
    loop/      runs iteration after iteration, ablations, method comparisons, evaluation, reports, plots
    teach/     lesson helpers and graded assignments
    ui/        the notebook raters (ipywidgets); the core never imports it

Lessons, the README and assignments import from here, so a module can move without breaking them:

    from rlhf_lab import load_policy, generate, FeedbackStore, SimulatedCrowd, RewardModel, PPOTrainer
    from rlhf_lab import lessons, plots      # lesson helpers and plots, used as namespaces

Names are imported on first use, so `import rlhf_lab` stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # policy
    "load_policy": "rlhf_lab.policy.models",
    "tiny_policy": "rlhf_lab.policy.models", "load_prompts": "rlhf_lab.policy.prompts",
    "SamplingConfig": "rlhf_lab.policy.generation", "generate": "rlhf_lab.policy.generation",
    # feedback
    "FeedbackStore": "rlhf_lab.feedback.store", "GoldUtility": "rlhf_lab.feedback.gold",
    "SimulatedAnnotator": "rlhf_lab.feedback.crowd", "SimulatedCrowd": "rlhf_lab.feedback.crowd",
    "as_preference_pairs": "rlhf_lab.feedback.preferences",
    # reward
    "RewardConfig": "rlhf_lab.reward.model", "RewardModel": "rlhf_lab.reward.model",
    "RewardEnsemble": "rlhf_lab.reward.ensemble", "build_reward_model": "rlhf_lab.reward.ensemble",
    "as_reward": "rlhf_lab.reward.sources", "pessimistic_reward": "rlhf_lab.reward.ensemble",
    # train
    "LoraSettings": "rlhf_lab.train.config", "PPOConfig": "rlhf_lab.train.ppo", "PPOTrainer": "rlhf_lab.train.ppo",
    "RLOOConfig": "rlhf_lab.train.rloo", "RLOOTrainer": "rlhf_lab.train.rloo", "DPOConfig": "rlhf_lab.train.dpo",
    "DPOTrainer": "rlhf_lab.train.dpo", "best_of_n": "rlhf_lab.train.best_of_n", "LiveView": "rlhf_lab.train.callbacks",
    "TrainingDivergedError": "rlhf_lab.core.errors", "set_seed": "rlhf_lab.core.seeding",
    "bradley_terry_loss": "rlhf_lab.reward.network", "format_prompts": "rlhf_lab.policy.generation",
    # the loop
    "ExperimentConfig": "rlhf_lab.loop.experiment", "FeedbackConfig": "rlhf_lab.loop.experiment",
    "RLHFRun": "rlhf_lab.loop.experiment", "write_report": "rlhf_lab.loop.report", "sweep": "rlhf_lab.loop.ablation",
    "compare_methods": "rlhf_lab.loop.compare", "Budget": "rlhf_lab.loop.compare",
    "compare_tuned": "rlhf_lab.loop.tuning",
    "sample_table": "rlhf_lab.loop.report", "demo_config": "rlhf_lab.cli",
    # the taste loop
    "TasteConfig": "rlhf_lab.loop.taste", "run_taste": "rlhf_lab.loop.taste", "paired_gain": "rlhf_lab.loop.evaluation",
    "SimulatedLearner": "rlhf_lab.feedback.tastes", "load_taste": "rlhf_lab.feedback.tastes",
    "EmbeddingRewardModel": "rlhf_lab.reward.embedding",
    # the class
    "you_vs_class": "rlhf_lab.loop.class_model",
    # feedback of every kind: ratings, rankings, thumbs, flags, AI judges (lessons 7 and 9)
    "rating_examples": "rlhf_lab.feedback.preferences", "ranking_examples": "rlhf_lab.feedback.preferences",
    "unpaired_examples": "rlhf_lab.feedback.preferences", "export_unpaired_jsonl": "rlhf_lab.feedback.exchange",
    "weighted_pairs": "rlhf_lab.feedback.preferences",
    "KTOConfig": "rlhf_lab.train.kto", "KTOTrainer": "rlhf_lab.train.kto", "CostModel": "rlhf_lab.reward.cost",
    "crowd_flag_rule": "rlhf_lab.feedback.flags", "ConstitutionJudge": "rlhf_lab.feedback.judges",
    "LLMJudge": "rlhf_lab.feedback.judges",
}
_MODULES = {
    "lessons": "rlhf_lab.teach.lessons", "plots": "rlhf_lab.loop.plots", "ppo_math": "rlhf_lab.train.ppo_math",
    "agreement": "rlhf_lab.feedback.agreement", "ablation": "rlhf_lab.loop.ablation",
    "classroom": "rlhf_lab.feedback.classroom",
}
"""Modules the lessons use as namespaces (`from rlhf_lab import lessons, plots`; `plots.plot_ppo_curves(...)`)."""

__all__ = sorted([*_API, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    else:
        raise AttributeError(f"module 'rlhf_lab' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
