"""The configs of one RLHF run (`loop.experiment.RLHFRun`): which replies are judged and by whom, and every stage.

    ExperimentConfig(iterations=2, feedback=FeedbackConfig(annotators=3))            # the simulated crowd judges
    ExperimentConfig(reward_kind="embedding",                                          # a learner's own judgments
                     feedback=FeedbackConfig(learner="me", crowd_weight=0.0, stand_in="short"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from rlhf_lab.core.config import Config, as_config
from rlhf_lab.feedback.tastes import check_taste
from rlhf_lab.reward.embedding import EmbeddingRewardConfig
from rlhf_lab.reward.model import RewardConfig
from rlhf_lab.train.ppo import PPOConfig

__all__ = ["STRATEGIES", "REWARD_KINDS", "FeedbackConfig", "ExperimentConfig"]

STRATEGIES = ("random", "temperatures", "disagreement")
REWARD_KINDS = ("network", "embedding")


@dataclass
class FeedbackConfig(Config):
    """Which replies annotators are asked about, and who answers."""

    pairs_per_iteration: int = 48
    """Pairwise items created each iteration (each judged by every simulated annotator)."""
    annotators: int = 3
    """Simulated annotators in the crowd (0: only people rating in the notebook)."""
    rationality: float = 5.0
    """The crowd's inverse temperature: higher means choices follow the gold utility more closely."""
    strategy: str = "random"
    """"random": two samples at the policy's temperature; "temperatures": one cool, one hot sample;
    "disagreement": of `candidates` samples, the pair the reward-model ensemble is least sure about (active
    learning)."""
    temperatures: tuple[float, float] = (0.4, 1.2)
    """The two temperatures of the "temperatures" strategy."""
    candidates: int = 4
    """Samples per prompt from which "disagreement" picks its pair."""
    learner: str | None = None
    """Whose judgments the reward model learns. None: every judgment alike (the crowd's and anyone's at a rater).
    A name (e.g. "me"): that person's judgments of each iteration's pairs, the crowd's only as `crowd_weight` says;
    an iteration of whose pairs they judged fewer than `learner_minimum` is judged instead by a simulated learner,
    "<name> (simulated)", with the taste `stand_in`, and the run says so."""
    crowd_weight: float = 0.0
    """With a `learner`: how much one crowd judgment counts against one of the learner's (0: the crowd does not
    judge; 1: as much)."""
    stand_in: str = "gold"
    """With a `learner`: the taste (`feedback.tastes.load_taste`: "gold", "short", "questions", ...) of the
    simulated learner who judges an iteration nobody rated. A "module:function" of your own is imported when that
    learner judges or its run is evaluated, never when a config is read."""
    learner_minimum: int = 4
    """With a `learner`: the fewest of an iteration's pairs they must judge for their judgments to be used."""

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if self.pairs_per_iteration < 1 or self.annotators < 0 or self.candidates < 2:
            raise ValueError("pairs_per_iteration >= 1, annotators >= 0 and candidates >= 2 are needed.")
        self.temperatures = tuple(self.temperatures)
        if not (isinstance(self.crowd_weight, (int, float)) and 0 <= self.crowd_weight < math.inf):
            raise ValueError(f"crowd_weight must be a finite number >= 0 (0: no crowd), got {self.crowd_weight!r}.")
        if self.learner is not None:
            if not isinstance(self.learner, str) or not self.learner:
                raise ValueError(f"learner must be an annotator's name (or None: everyone), got {self.learner!r}.")
            if self.crowd_weight > 0 and self.annotators == 0:
                raise ValueError("crowd_weight > 0 needs a crowd: set annotators >= 1 (or crowd_weight=0).")
            if self.learner_minimum < 1 or self.learner_minimum > self.pairs_per_iteration:
                raise ValueError(f"learner_minimum must be between 1 and pairs_per_iteration "
                                 f"({self.pairs_per_iteration}), got {self.learner_minimum}.")
            check_taste(self.stand_in)  # an unknown taste fails here, in one line; nothing is imported


@dataclass
class ExperimentConfig(Config):
    """Everything one RLHF run needs; saved as config.json in the run directory."""

    policy: str = "smollm2-135m"
    """The initial policy: an alias, hub id or directory (`models.load_policy`)."""
    iterations: int = 2
    """Rounds of feedback → reward model → PPO."""
    ppo_updates: int = 10
    """PPO updates per iteration."""
    prompt_set: str = "curated"
    """Prompts for sampling and PPO (`prompts.load_prompts`); the eval prompts come from its eval split."""
    max_prompt_words: int = 24
    eval_prompts: int = 12
    """Fixed eval prompts scored after every iteration."""
    eval_samples: int = 1
    """Replies per eval prompt: more replies make the evaluation's means less noisy (its error falls as 1/√n)."""
    warm_start_reward: bool = False
    """Start each iteration's reward model from the previous one (False: fit afresh on all judgments so far)."""
    seed: int = 0
    """Seeds every stage: the prompts drawn, sampling, the simulated crowd, the reward model and PPO (a stage whose
    own `seed` is set keeps it; a stage seed of None follows this one)."""
    report_to: tuple[str, ...] = ()
    """Optional experiment trackers besides the built-in metrics log (always written): ("tensorboard",) writes
    TensorBoard scalars of every PPO update and every evaluation to <run>/tensorboard."""
    reward_kind: str = "network"
    """The reward model: "network" (`reward`: a transformer with a scalar head, fine-tuned: for hundreds of
    judgments) or "embedding" (`embedding`: a Bradley–Terry head on frozen sentence embeddings, fitted in seconds:
    for a learner's few dozen; its held-out accuracy is cross-validated by prompt)."""
    ppo_pessimism: float = 0.0
    """PPO's reward is the reward model's score less this many times its members' spread (`reward.ensemble.
    pessimistic_reward`: a reply the judgments say little about pays less); it needs members (the reward-model
    section's ensemble_size > 1; the embedding model's default has 4). 0: the score itself."""
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    embedding: EmbeddingRewardConfig = field(default_factory=EmbeddingRewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self):
        if min(self.iterations, self.ppo_updates, self.eval_prompts, self.eval_samples) < 1:
            raise ValueError("iterations, ppo_updates, eval_prompts and eval_samples must all be at least 1.")
        if self.eval_prompts < 2:  # refused now, not after every iteration's training
            raise ValueError(f"eval_prompts must be at least 2 (a gain paired by prompt needs 2 or more), got "
                             f"{self.eval_prompts}.")
        self.report_to = (self.report_to,) if isinstance(self.report_to, str) else tuple(self.report_to)
        self.feedback = as_config(self.feedback, FeedbackConfig)
        self.reward = as_config(self.reward, RewardConfig)
        self.embedding = as_config(self.embedding, EmbeddingRewardConfig)
        self.ppo = as_config(self.ppo, PPOConfig)
        if self.reward_kind not in REWARD_KINDS:
            raise ValueError(f"reward_kind must be one of {REWARD_KINDS}, got {self.reward_kind!r}.")
        if not (self.ppo_pessimism >= 0 and math.isfinite(self.ppo_pessimism)):
            raise ValueError(f"ppo_pessimism must be a number >= 0 (0: the score itself), got {self.ppo_pessimism}.")
        section = "embedding" if self.reward_kind == "embedding" else "reward"
        if self.ppo_pessimism and getattr(self, section).ensemble_size < 2:
            raise ValueError(f"ppo_pessimism weighs the reward model's members' spread: set {section}.ensemble_size "
                             "to 2 or more.")
        if self.warm_start_reward and self.reward_kind != "network":
            raise ValueError("warm_start_reward needs reward_kind='network' (an embedding model is refitted in "
                             "seconds on every judgment).")

    @property
    def unused_section(self) -> str:
        """The reward-model section this run does not read: "reward" when `reward_kind` is "embedding", else
        "embedding" (a sweep refuses its fields; a config summary leaves them out)."""
        return "reward" if self.reward_kind == "embedding" else "embedding"

    def seeded(self, stage):
        """A stage's config (`self.reward`, `self.embedding` or `self.ppo`) with its seed resolved: its own when set,
        else the experiment's `seed` (so two experiment seeds differ in every stage)."""
        return stage if stage.seed is not None else replace(stage, seed=self.seed)
