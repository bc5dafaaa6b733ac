"""Reward-model ensembles: k members with their own seeds (and bootstrap resamples); the spread of their scores is
the uncertainty that active learning and over-optimisation warnings use.

    ensemble = build_reward_model(RewardConfig(ensemble_size=4)).fit(store)
    ensemble.score(prompts, replies); ensemble.spread(prompts, replies)
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rlhf_lab.core.errors import not_fitted
from rlhf_lab.core.files import SaveKind, atomic_directory, existing_or_aside
from rlhf_lab.feedback.preferences import (
    as_preference_pairs,
    bootstrap_pairs,
    split_by_prompt,
)
from rlhf_lab.reward.evaluation import RewardReport, evaluate_rewards
from rlhf_lab.reward.model import FORMAT_VERSION, RewardConfig, RewardModel

__all__ = ["RewardEnsemble", "build_reward_model", "pessimistic_reward"]


class RewardEnsemble:
    """k reward models with seeds seed, seed+1, ... (and bootstrap resamples of the training pairs if
    `config.bootstrap`): `score` is the members' mean normalised reward, `spread` their standard deviation."""

    def __init__(self, config: RewardConfig | None = None):
        self.config = config or RewardConfig(ensemble_size=2)

    def fit(self, data, val=None, progress: bool = True) -> "RewardEnsemble":
        """Split once by prompt (so every member is validated on the same pairs), then fit each member."""
        cfg, seed = self.config, self.config.seed_value
        pairs = as_preference_pairs(data)
        train, val = split_by_prompt(pairs, cfg.val_fraction, seed) if val is None else (
            pairs, as_preference_pairs(val))
        self.members_ = []
        for i in range(cfg.ensemble_size):
            member_cfg = replace(cfg, seed=seed + i, ensemble_size=1)
            sample = bootstrap_pairs(train, seed + i) if cfg.bootstrap else train
            self.members_.append(RewardModel(member_cfg).fit(sample, val=val, progress=progress))
        self.val_pairs_ = self.members_[0].val_pairs_
        return self

    @property
    def members(self) -> list[RewardModel]:
        """The fitted (or loaded) members; NotFittedError (one line: fit or load it) before."""
        if not hasattr(self, "members_"):
            raise not_fitted(self)
        return self.members_

    def member_scores(self, prompts, responses) -> torch.Tensor:
        """Normalised rewards of every member, shape (k, N)."""
        return torch.stack([m.score(prompts, responses) for m in self.members])

    def score(self, prompts, responses) -> torch.Tensor:
        """Mean normalised reward over members, shape (N,)."""
        return self.member_scores(prompts, responses).mean(dim=0)

    def spread(self, prompts, responses) -> torch.Tensor:
        """Standard deviation of the members' normalised rewards, shape (N,): the ensemble's uncertainty."""
        return self.member_scores(prompts, responses).std(dim=0, correction=0)

    def score_raw(self, prompts, responses) -> torch.Tensor:
        """Mean raw reward over members, shape (N,)."""
        return torch.stack([m.score_raw(prompts, responses) for m in self.members]).mean(dim=0)

    def score_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean normalised reward of token sequences (causal-LM members), shape (B,)."""
        return torch.stack([m.score_tokens(input_ids, attention_mask) for m in self.members]).mean(dim=0)

    def normalize(self, prompts, responses) -> "RewardEnsemble":
        """Normalise every member on the same reference sample."""
        for m in self.members:
            m.normalize(prompts, responses)
        return self

    def check_tokenizer(self, tokenizer) -> None:
        self.members[0].check_tokenizer(tokenizer)

    def evaluate(self, pairs=None, gold=None, n_bins: int = 10, top_k: int = 5) -> RewardReport:
        """As `RewardModel.evaluate`, with P(chosen) = σ(mean raw reward difference) and mean normalised rewards."""
        self.members  # noqa: B018 (NotFittedError before fit or load)
        if pairs is None and len(getattr(self, "val_pairs_", ())) == 0:
            raise ValueError("this model holds out no pairs to evaluate on (fitted with val_fraction=0, or loaded "
                             "from a file): pass the pairs to evaluate on: evaluate(pairs)")
        pairs = self.members[0].usable_pairs(self.val_pairs_ if pairs is None else pairs)
        r = [torch.stack([m.score_raw(pairs["prompt"], pairs[c]) for m in self.members]) for c in ("chosen", "rejected")]
        shown = [torch.stack([m.score(pairs["prompt"], pairs[c]) for m in self.members]).mean(0)
                 for c in ("chosen", "rejected")]
        return evaluate_rewards(pairs, r[0].mean(0).numpy(), r[1].mean(0).numpy(), gold=gold, n_bins=n_bins,
                                top_k=top_k, shown=(shown[0].numpy(), shown[1].numpy()))

    def save(self, path: str | Path) -> Path:
        """Every member under member-i/ and ensemble.json, atomically (complete or absent)."""
        path = Path(path)
        kind = SaveKind("ensemble.json", "a reward-model ensemble", "reward_ensemble")
        with atomic_directory(path, kind=kind) as tmp:
            for i, m in enumerate(self.members_):
                m.save(tmp / f"member-{i}")
            (tmp / "ensemble.json").write_text(json.dumps({"format": FORMAT_VERSION, "config": asdict(self.config)}))
        return path

    @classmethod
    def load(cls, path: str | Path, tokenizer=None, device: str | None = None) -> "RewardEnsemble":
        path = existing_or_aside(path, "ensemble.json", "reward-model ensemble")
        meta = json.loads((path / "ensemble.json").read_text())
        ensemble = cls(RewardConfig.from_dict(meta["config"]))
        ensemble.members_ = [RewardModel.load(path / f"member-{i}", tokenizer=tokenizer, device=device)
                             for i in range(ensemble.config.ensemble_size)]
        return ensemble


def build_reward_model(config: RewardConfig) -> RewardModel | RewardEnsemble:
    """A RewardModel, or a RewardEnsemble when config.ensemble_size > 1: one field switches between them."""
    return RewardEnsemble(config) if config.ensemble_size > 1 else RewardModel(config)


def pessimistic_reward(model, k: float):
    """The reward `model`'s score less k times its members' spread (uncertainty-weighted optimisation, Coste et al.
    2024, "Reward model ensembles help mitigate overoptimization"):

        r(x) = mean_m r_m(x) − k · std_m r_m(x)        (population std over the members, normalised units)

    A reply the members disagree about (one the judgments say little about) scores less, so the policy is paid less
    for exploiting where the model is unsure. `model`: anything with `member_scores(prompts, responses)` (k, N),
    normalised, whose mean is its score and whose standard deviation is its spread: an `EmbeddingRewardModel`
    (bootstrap members) or a `RewardEnsemble`. The replies are scored once. Returns a function (prompts, responses)
    -> (N,), a reward the trainers take."""
    def reward(prompts, responses) -> torch.Tensor:
        members = model.member_scores(list(prompts), list(responses))  # (k, N)
        return members.mean(0) - k * members.std(0, correction=0)
    return reward
