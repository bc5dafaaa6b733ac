"""The taste loop's settings and its result (`loop.taste.run_taste` runs it): `TasteConfig` holds every stage's
settings (labels, the reward model, DPO or lesson 4's PPO, the KL target, evaluation), `TasteResult` what a run
measured, and `EVERYONE` names a class's pooled judgments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from rlhf_lab.core.config import Config, as_config
from rlhf_lab.core.inputs import is_number
from rlhf_lab.loop.evaluation import PairedResult
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.reward.embedding import EmbeddingRewardConfig
from rlhf_lab.train.dpo import DPOConfig
from rlhf_lab.train.ppo import PPOConfig

__all__ = ["EVERYONE", "TasteConfig", "TasteResult"]

EVERYONE = "*"
"""`run_taste(annotator=EVERYONE)`: every judgment in the store trains the reward model (a class's pooled model)."""


def _default_dpo() -> DPOConfig:
    return DPOConfig(learning_rate=3e-5, beta=0.1, batch_size=8, epochs=2, candidates=4, min_margin=1.0,
                     sampling=SamplingConfig(max_new_tokens=32, temperature=0.7))


def _default_ppo() -> PPOConfig:  # lesson 4's settings (tests/test_taste.py holds them to its parameters cell)
    return PPOConfig(batch_size=8, ppo_epochs=4, learning_rate=1.5e-5, kl_coef=0.1, missing_eos_penalty=None,
                     sampling=SamplingConfig(max_new_tokens=32, temperature=0.7), lam=1.0)


@dataclass
class TasteConfig(Config):
    """Everything the taste loop needs besides the learner. Saved as config.json in the output folder."""

    policy: str = "smollm2-135m"
    """The policy to steer: an alias, hub id or directory (`load_policy`), unless a policy is passed in."""
    prompt_set: str = "all"
    """Prompts for labels and training (its train split) and evaluation (its eval split)."""
    labels: int = 40
    """Pairs the learner judges."""
    label_temperatures: tuple[float, float] = (0.7, 1.1)
    """Label replies are sampled at these temperatures in turn (contrast makes a judgment more informative)."""
    label_candidates: int = 2
    """Replies sampled per label prompt. 2: one at each temperature, shown as they are. More: the two shown are
    chosen among them by D-optimal design for the reward model (`reward.pair_design`). 4 against 2 made no
    detectable difference to agreement at 40 labels, seeds 0-9 (mean paired difference −0.02 to +0.04 per taste, signs
    mixed), for twice the sampling time (`bench/taste_design.py`, `bench/results/taste_cpu.txt`), so the default
    stays 2."""
    eval_prompts: int = 32
    """Held-out prompts for before/after."""
    eval_samples: int = 4
    """Replies per held-out prompt (the interval narrows as prompts × replies grow)."""
    agreement_pairs: int = 64
    """Fresh held-out pairs on which the reward model's agreement with a simulated taste is measured."""
    method: str = "dpo"
    """The policy step: "dpo" (iterative DPO rounds, this loop's default) or "ppo" (`ppo_updates` PPO updates in
    `rounds` equal rounds: the method lesson 4 teaches)."""
    rounds: int = 3
    """Iterative DPO rounds (each: sample, judge by the reward model, two passes over the new pairs), or the rounds
    PPO's updates are split into (the KL check can undo a round)."""
    kl_target: float | None = 10.0
    """Most KL to the initial policy, nats per reply: a round that takes the policy past it is shrunk or undone (see
    `steer`), so the KL reported (on the held-out replies) is within it. None: no limit."""
    pairs_per_round: int = 16
    """Prompts per round (each gives one best-vs-worst pair)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=32, temperature=0.7))
    """Label and evaluation sampling (temperature overridden per label reply by `label_temperatures`)."""
    reward: EmbeddingRewardConfig = field(default_factory=lambda: EmbeddingRewardConfig(relevance=3.0))
    """The learner's reward model. By default every feature's prior weight is chosen by the learner's judgments
    (`EmbeddingRewardConfig.relevance`): at 40 labels it agreed better with every shipped taste and the unseen one
    than one prior per block (`bench/taste_features.py`, `bench/results/taste_cpu.txt`)."""
    dpo: DPOConfig = field(default_factory=_default_dpo)
    ppo: PPOConfig = field(default_factory=_default_ppo)
    ppo_updates: int = 16
    """PPO updates (method "ppo"), each on `ppo.batch_size` fresh replies."""
    ppo_pessimism: float = 1.0
    """Method "ppo" (DPO does not read it): PPO maximises the reward model's score less this many times its members'
    spread (`reward.ensemble.pessimistic_reward`), so a reply the learner's judgments say little about pays less. 0:
    the score itself. At 1, PPO rose in at least 4 of 5 seeds for every shipped taste, where the score alone rose in 3
    of 5 for enthusiastic and 4 of 5 for gold, at the cost of smaller gains on the tastes it already raised
    (`bench/README.md`, "PPO against a pessimistic reward"; measured while the loop's PPO still docked replies cut
    without EOS, which lesson 4 does not; re-measured without it on gold only: 3 of 5 at 1, 2 of 5 at 0)."""
    seed: int = 0
    """Seeds every stage: prompts drawn, sampling, the learner, the reward model's bootstrap, DPO."""

    def __post_init__(self):
        self.sampling = as_config(self.sampling, SamplingConfig)
        self.reward = as_config(self.reward, EmbeddingRewardConfig)
        self.dpo = as_config(self.dpo, DPOConfig)
        self.ppo = as_config(self.ppo, PPOConfig)
        if self.method not in ("dpo", "ppo"):
            raise ValueError(f"method must be 'dpo' or 'ppo', got {self.method!r}.")
        if not 0 <= self.ppo_pessimism < math.inf:  # NaN too
            raise ValueError(f"ppo_pessimism must be >= 0 (0: PPO maximises the score itself), got "
                             f"{self.ppo_pessimism:g}.")
        temps = self.label_temperatures
        if isinstance(temps, (str, bytes)) or not hasattr(temps, "__len__") or len(temps) != 2 or \
                not all(is_number(t) and t > 0 for t in temps):
            raise ValueError(f"label_temperatures must be two temperatures > 0 (the two replies of a pair), e.g. "
                             f"(0.7, 1.1); got {temps!r}.")
        self.label_temperatures = tuple(temps)
        if self.kl_target is not None and not self.kl_target > 0:
            raise ValueError(f"kl_target must be positive (nats per reply), or None for no limit; got "
                             f"{self.kl_target}.")
        if self.agreement_pairs < 1:
            raise ValueError(f"agreement_pairs must be at least 1, got {self.agreement_pairs}.")
        if min(self.labels, self.eval_prompts, self.eval_samples, self.rounds, self.pairs_per_round,
               self.ppo_updates) < 1:
            raise ValueError("labels, eval_prompts, eval_samples, rounds, pairs_per_round and ppo_updates must be at "
                             "least 1.")
        if self.eval_prompts < 2:  # refused now, not after the training
            raise ValueError(f"eval_prompts must be at least 2 (a gain paired by prompt needs 2 or more), got "
                             f"{self.eval_prompts}.")
        if self.label_candidates < 2:
            raise ValueError(f"label_candidates must be at least 2 (a pair), got {self.label_candidates}.")
        if self.labels < 4:
            raise ValueError(f"labels must be at least 4 (a reward model needs a few pairs), got {self.labels}.")

    @classmethod
    def smoke(cls, labels: int = 8, seed: int = 0, method: str = "dpo") -> "TasteConfig":
        """The tiny random model and small counts: a check that the loop runs (CI, tests, a lesson's smoke run). DPO
        takes every best-vs-worst pair (no `min_margin`): a reward model fitted on a few judgments of random tokens
        with each feature's own prior scores fresh random tokens less than a spread apart, and would leave DPO
        nothing to learn from."""
        sampling = SamplingConfig(max_new_tokens=8, temperature=1.0)
        dpo = replace(_default_dpo(), sampling=sampling, min_margin=0.0)
        ppo = replace(_default_ppo(), batch_size=4, mini_batch_size=None, micro_batch_size=None, ppo_epochs=2,
                      learning_rate=1e-4, sampling=sampling)  # None: derived again from batch_size
        return cls(policy="tiny", labels=labels, seed=seed, eval_prompts=6, eval_samples=2, agreement_pairs=8,
                   rounds=2, pairs_per_round=4, sampling=sampling, dpo=dpo, method=method, ppo_updates=4, ppo=ppo)


@dataclass
class TasteResult:
    """What the taste loop measured; `to_json()` is the CLI's last line."""

    labels: int
    rm_agreement: float
    """Agreement of the reward model with the taste on fresh held-out pairs (NaN for a person)."""
    taste: PairedResult | None
    """The taste's utility before → after, paired by prompt (None for a person)."""
    reward: PairedResult
    """The learner's own reward model's score before → after (what a person's run shows)."""
    kl: float
    """KL of the new policy to the initial one, nats per reply (exact over next tokens, on the after replies)."""
    minutes: float
    samples: list[dict] = field(default_factory=list)
    """Per held-out prompt: prompt, first reply before and after, utilities and rewards (means)."""
    stages: dict = field(default_factory=dict)
    """Seconds per stage (load, labels, reward_model, agreement, eval_before, policy, eval_after)."""
    rounds: int = 0
    """Policy rounds kept (fewer than configured when one was undone for passing the KL target)."""
    policy_pairs: int = 0
    """Best-vs-worst pairs the policy trained on, over the kept and undone rounds (DPO)."""
    rollouts: int = 0
    """Replies the policy was updated on, over the kept and undone rounds (PPO)."""
    last_round_scale: float = 1.0
    """How much of the last kept round's step was kept: 1, the part a last DPO round took to fit the KL target
    (`steer`), or ½ or ¼ when the KL check shrank it (`blend`)."""

    def to_json(self) -> dict:
        main = self.taste or self.reward
        return {"labels": self.labels, "rm_agreement": round(self.rm_agreement, 4), "gain": round(main.gain, 4),
                "gain_ci_low": round(main.ci_low, 4), "gain_ci_high": round(main.ci_high, 4),
                "win_rate": round(main.win_rate, 4), "verdict": main.verdict,
                "reward_gain": round(self.reward.gain, 4), "kl": round(self.kl, 4), "minutes": round(self.minutes, 3),
                "rounds": self.rounds, "last_round_scale": self.last_round_scale, "policy_pairs": self.policy_pairs,
                "rollouts": self.rollouts,
                "seconds": self.stages}

    def __str__(self) -> str:
        lines = [f"{self.labels} judgments → reward model"
                 + (f" agreeing with the taste on {self.rm_agreement:.0%} of fresh pairs" if self.taste else "")]
        if self.taste:
            lines.append(f"the taste: {self.taste}")
        lines.append(f"your reward model's score: {self.reward}")
        lines.append(f"KL to the initial policy {self.kl:.2f} nats per reply; {self.minutes:.1f} min")
        return "\n".join(lines)
