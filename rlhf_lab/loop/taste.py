"""The taste loop: your own few dozen judgments steer the model, and the lab shows it honestly.

    result = run_taste(TasteConfig(labels=40, seed=0), learner=SimulatedLearner("short"), out="runs/taste")
    result = run_taste(TasteConfig(), store=store, annotator="me", policy=policy, tokenizer=tokenizer)  # a person
    print(result)                          # agreement, the taste's gain with its 95 % interval, win rate, KL, minutes

1. Labels: two replies to each of `labels` training prompts, sampled from the policy (one cooler, one hotter, so
   the pair differs; or, with `label_candidates` > 2, the pair of its candidates that the D-optimal design picks),
   judged by the learner: a person at the rater, or a `SimulatedLearner` through the same store.
2. Reward model: a Bradley–Terry head on frozen sentence embeddings (`EmbeddingRewardModel`), fitted on this
   learner's judgments only, in seconds.
3. Agreement: on fresh held-out pairs the learner never saw, how often the reward model orders them as the taste
   does (simulated learners only: a person's taste is not a function we can call).
4. Policy: iterative DPO from the current policy's own replies, best-vs-worst of `dpo.candidates` by the reward
   model, with the initial policy as the reference (see `bench/taste.py` for why this method); a last round that
   would likely pass `kl_target` takes only the part of its step that fits (`steer`). Or, with `method="ppo"`,
   `ppo_updates` PPO updates against the reward model (lesson 4's method and settings).
5. Evaluation: the same held-out prompts × `eval_samples` replies before and after, with the same seed; the
   taste's utility (simulated) and the reward model's score, paired by prompt with bootstrap intervals
   (`paired_gain`); the KL of the new policy to the initial one, nats per reply, on the after replies. When it is
   above `kl_target`, the last round is shrunk (its step halved, then quartered: `blend`) or else undone, and the
   after replies sampled again, so the KL reported is within the target (the check between rounds on 16 replies
   that preceded it missed 4 of 25 times in `bench/taste.py`; undoing a round whole threw away all of a round that
   overshot a little). A cheap probe of one reply per prompt screens each step down first (`loop.kl_check`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rlhf_lab.core.config import Config, as_config
from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.files import write_atomic
from rlhf_lab.core.seeding import seed_for, set_seed
from rlhf_lab.loop.evaluation import PairedResult, paired_gain, replies_with_kl, sequence_kl
from rlhf_lab.loop.kl_check import SHRINK, blend, snapshot, within_kl_target
from rlhf_lab.policy.generation import SamplingConfig, generate
from rlhf_lab.policy.models import load_policy, model_id
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel
from rlhf_lab.reward.ensemble import pessimistic_reward
from rlhf_lab.reward.pair_design import design_pairs
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

__all__ = ["TasteConfig", "TasteResult", "run_taste", "label_pairs", "simulate_labels", "taste_model", "label_prompts",
           "fresh_pairs", "blend", "SHRINK", "EVERYONE"]

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
        self.label_temperatures = tuple(self.label_temperatures)
        if min(self.labels, self.eval_prompts, self.eval_samples, self.rounds, self.pairs_per_round,
               self.ppo_updates) < 1:
            raise ValueError("labels, eval_prompts, eval_samples, rounds, pairs_per_round and ppo_updates must be at "
                             "least 1.")
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


def label_pairs(store, policy, tokenizer, prompts: list[str], config: TasteConfig, iteration: int = 0) -> list:
    """Pairwise items for the learner, stored in `store`; returns the Items. For each prompt `label_candidates`
    replies are sampled at the `label_temperatures` in turn; the two shown (A/B order by a seeded coin) are those
    two, or with more candidates the prompt's pair in the D-optimal design (`reward.pair_design.design_pairs`)."""
    temps = config.label_temperatures
    batches = [generate(policy, tokenizer, prompts, replace(config.sampling, temperature=temps[j % len(temps)]),
                        seed=seed_for(config.seed, 11, j), iteration=iteration) for j in range(config.label_candidates)]
    picks = [(0, 1)] * len(prompts) if len(batches) == 2 else design_pairs(
        prompts, [[b.responses[i] for b in batches] for i in range(len(prompts))], config.reward)
    records = [b.to_records() for b in batches]
    ids = store.add_responses([records[j][i] for i, pair in enumerate(picks) for j in pair])
    flip = np.random.default_rng(seed_for(config.seed, 12)).random(len(prompts)) < 0.5
    return [store.get_item(i) for i in store.add_items([ids[2 * i:2 * i + 2][::-1 if f else 1]
                                                         for i, f in enumerate(flip)])]


def label_prompts(train: list[str], config: TasteConfig) -> list[str]:
    """The `config.labels` training prompts a simulated learner judges pairs for (seeded by `config.seed`)."""
    return [train[i] for i in np.random.default_rng(seed_for(config.seed, 10)).choice(
        len(train), config.labels, replace=False)]


def simulate_labels(store, learner, policy, tokenizer, train: list[str], config: TasteConfig) -> list[int]:
    """Step 1 for a simulated learner: `label_pairs` on `label_prompts`, judged by the learner through the store.
    Returns the new judgment ids. The learner's coins are keyed by each pair's number in this run (1, 2, …), not by
    its id in the store: a run into a folder that holds an earlier run's store judges as a first run would."""
    items = label_pairs(store, policy, tokenizer, label_prompts(train, config), config)
    return learner.annotate(store, items, keys=range(1, len(items) + 1))


def fresh_pairs(policy, tokenizer, train: list[str], labelled, config: TasteConfig):
    """Step 3's held-out pairs: up to `config.agreement_pairs` training prompts not in `labelled`, one reply at each
    of `label_temperatures` from `policy` (seeded). Returns the two batches (a, b)."""
    unseen = [p for p in train if p not in set(labelled)]
    fresh = [unseen[i] for i in np.random.default_rng(seed_for(config.seed, 14)).choice(
        len(unseen), min(config.agreement_pairs, len(unseen)), replace=False)]
    return tuple(generate(policy, tokenizer, fresh, replace(config.sampling, temperature=t),
                          seed=seed_for(config.seed, 15, j)) for j, t in enumerate(config.label_temperatures))


def taste_model(pairs, config: TasteConfig) -> EmbeddingRewardModel:
    """Step 2: the learner's reward model, fitted on their preference pairs (seeded by `config.seed`)."""
    return EmbeddingRewardModel(replace(config.reward, seed=config.reward.seed_value + config.seed)).fit(pairs)


def steer(trainer, initial, prompts: list[str], rm, config: TasteConfig, say=print):
    """Iterative DPO rounds within the KL target. Before each round after the first, the KL of the policy to the
    initial one is measured on the round's candidates (sampled anyway): above `config.kl_target` the loop stops
    (`run_taste` then shrinks or undoes the last round). When a whole round more would likely pass the target (the
    KL so far k plus the mean rise per round so far r), the last round takes only the part of its step that fits,
    α = (target − k) / r (`blend`; KL is about convex along the step, so about k + α·r = target at most), or none
    when α < the smallest of SHRINK; the check on the held-out replies undoes it whole if it overshot (KL does not
    always rise as predicted). Stopping there instead left a sparse taste's learner one round of 10 pairs (unseen
    taste, seed 0: KL 6.3 of 10, no detectable change).

    Returns (snapshots, partial): the weights before each kept round (on the CPU), which `run_taste` uses to shrink
    and undo rounds while the KL on the held-out replies is above the target, the check that counts; and, when the
    last round was partial, its α, else None."""
    snapshots: list[dict] = []
    for round_ in range(1, config.rounds + 1):
        pairs = trainer.collect_pairs(prompts, rm, round_, config.pairs_per_round)
        part = 1.0
        if round_ > 1 and config.kl_target:
            kl = float(sequence_kl(trainer.policy, initial, trainer.last_batch_,
                                   config.dpo.sampling.temperature).mean())
            if kl > config.kl_target:
                say(f"      KL {kl:.1f} > target {config.kl_target:g} after round {round_ - 1}: stopping (the check "
                    "on the held-out replies shrinks or undoes that round)")
                return snapshots, None
            rise = kl / (round_ - 1)
            part = min(1.0, (config.kl_target - kl) / rise) if rise > 0 else 1.0
            if part < SHRINK[-1]:
                say(f"      KL {kl:.1f} after {round_ - 1} rounds: even {SHRINK[-1]:g} of one more would likely pass "
                    f"the target {config.kl_target:g}; stopping")
                return snapshots, None
            if part < 1.0:
                say(f"      KL {kl:.1f} after {round_ - 1} rounds: a whole round more would likely pass the target "
                    f"{config.kl_target:g}; round {round_} takes {part:.2f} of its step")
        snapshots.append(snapshot(trainer.policy))
        if pairs:
            trainer.fit(pairs)
        trainer.round_ = round_
        if part < 1.0:
            full = snapshot(trainer.policy)  # on the CPU, as the snapshots are
            trainer.policy.load_state_dict(blend(snapshots[-1], full, part))
            return snapshots, part
    return snapshots, None


def ppo_rounds(trainer, prompts: list[str], config: TasteConfig, say=print) -> list[dict]:
    """`config.ppo_updates` PPO updates against the reward model in `config.rounds` equal rounds, stopping early if
    a guard stops PPO. Returns the weights before each round (on the CPU), for `run_taste`'s KL check."""
    snapshots: list[dict] = []
    for round_ in range(1, config.rounds + 1):
        snapshots.append(snapshot(trainer.policy))
        try:
            trainer.train(prompts, n_updates=round(config.ppo_updates * round_ / config.rounds))
        except TrainingDivergedError as error:  # the guards fire before a bad step is taken
            say(f"      PPO stopped early: {error} The policy so far is kept and measured.")
            break
        metrics = trainer.history.to_frame().iloc[-1]
        what = "reward-model score" + (f" less {config.ppo_pessimism:g} × spread" if config.ppo_pessimism else "")
        say(f"      PPO update {trainer.update_}/{config.ppo_updates}: {what} "
            f"{metrics.get('objective/scores', float('nan')):+.2f}, KL {metrics.get('objective/kl', float('nan')):.2f}")
    return snapshots


def _held_out_draw(config: TasteConfig) -> dict:
    """How the held-out replies are drawn, before and after alike: `generate`'s seed and replies per prompt."""
    return {"seed": seed_for(config.seed, 13), "n_per_prompt": config.eval_samples}


def _eval_batch(policy, tokenizer, prompts, config: TasteConfig):
    return generate(policy, tokenizer, prompts, config.sampling, **_held_out_draw(config))


def _measure(policy, initial, tokenizer, held_out, config: TasteConfig):
    """The held-out replies (drawn as `_eval_batch` draws them) and their mean KL to the initial policy on the
    models' own weights (`replies_with_kl`: measured while sampling where the sampler runs those weights)."""
    batch, kl = replies_with_kl(policy, initial, tokenizer, held_out, config.sampling, **_held_out_draw(config))
    return batch, float(kl.mean())


def _probe(policy, initial, tokenizer, held_out, config: TasteConfig):
    """The KL check's cheap sample: the KL per reply of one reply per held-out prompt (a quarter of `_measure`'s
    replies at the defaults)."""
    return replies_with_kl(policy, initial, tokenizer, held_out, config.sampling, seed=seed_for(config.seed, 16))[1]


def run_taste(config: TasteConfig | None = None, *, learner=None, store=None, annotator: str | None = None,
              policy=None, tokenizer=None, out=None, log=print) -> TasteResult:
    """Run the taste loop (see the module docstring) and return what it measured; with `out`, also write
    config.json, result.json, the store, the reward model and a report (summary.md, before_after.png).

    learner: a `SimulatedLearner` (labels are sampled and it judges them), or None with `annotator`: a person whose
    judgments are already in `store` (only theirs train the reward model), a list of names, or `EVERYONE` ("*"):
    every judgment in the store (a class's pooled model). store: a FeedbackStore, a path or a URL.
    policy/tokenizer: default `load_policy(config.policy)`; the policy is trained in place (pass a copy to keep the
    original).
    """
    from rlhf_lab.feedback.store import FeedbackStore

    config, start = config or TasteConfig(), time.perf_counter()
    stages: dict[str, float] = {}  # seconds per stage, in the result: where a learner's minutes go
    mark = [start]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        stages[stage], mark[0] = round(now - mark[0], 1), now

    def say(text: str) -> None:
        log(f"{text}  ({time.perf_counter() - start:.0f} s)")
    if learner is None and (store is None or not annotator):
        raise ValueError("run_taste needs a learner (SimulatedLearner) or a store with a person's judgments and their "
                         "annotator name.")
    set_seed(config.seed)
    if policy is None:
        policy, tokenizer = load_policy(config.policy)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", json.dumps(config.to_dict(), indent=2))
    if isinstance(store, (str, Path)):  # a path or URL: e.g. a class store on PostgreSQL
        store = FeedbackStore(store)
    store = store or FeedbackStore(out / "feedback.db" if out is not None else ":memory:")
    train = load_prompts(config.prompt_set, split="train", max_words=24)
    held_out = load_prompts(config.prompt_set, split="eval", max_words=24, n=config.eval_prompts, seed=config.seed)
    initial = copy.deepcopy(policy).eval().requires_grad_(False)
    lap("load")

    if learner is not None:  # 1. labels
        annotator = learner.name
        say(f"[1/5] sampling {config.labels} pairs; the simulated learner judges them")
        judged = simulate_labels(store, learner, policy, tokenizer, train, config)
        lap("labels")
    pairs = store.preference_pairs(include_ties=True)
    names = [annotator] if isinstance(annotator, str) else list(annotator)
    if names != [EVERYONE]:  # "*": everyone's judgments pooled (a class's model)
        pairs = pairs[pairs["annotator"].isin(names)]
    annotator = "everyone" if names == [EVERYONE] else ", ".join(names)
    if learner is not None:  # this run's labels only (a store reused from an earlier run keeps its own)
        pairs = pairs[pairs["judgment_id"].isin(judged)]
    if len(pairs) < 4:
        raise ValueError(f"{annotator!r} has {len(pairs)} preference pairs in the store; judge at least 4 pairs first.")
    say(f"[2/5] fitting a reward model on {len(pairs)} judgments by {annotator!r}")
    rm = taste_model(pairs, config)
    if config.reward.words_weights and rm.vocabulary_:
        say(f"      the word counts' prior weight: {rm.config.words_weight:g} (of "
            f"{', '.join(f'{a:g}' for a in config.reward.words_weights)}: the one the judgments make most probable)")
    if (config.reward.relevance or config.reward.words_relevance) and rm.vocabulary_:
        prior = rm.words_prior()
        top = [f"{w!r} {a:.2g}" for w, a in list(prior.items())[:5]]
        say(f"      the words your judgments lean on (each word's prior weight, by their evidence): {', '.join(top)}; "
            f"{sum(a < 0.1 for a in prior.values())} of {len(prior)} words under 0.1")
    lap("reward_model")

    agreement = float("nan")
    if learner is not None:  # 3. agreement on fresh pairs
        a, b = fresh_pairs(initial, tokenizer, train, pairs["prompt"], config)
        agreement = rm.agreement(a.prompts, a.responses, b.responses, learner.taste)
        lap("agreement")
        say(f"[3/5] the reward model agrees with the taste on {agreement:.0%} of {len(a.prompts)} fresh pairs")

    before = _eval_batch(initial, tokenizer, held_out, config)
    lap("eval_before")
    if config.method == "ppo":
        say(f"[4/5] PPO: {config.ppo_updates} updates × {config.ppo.batch_size} replies, in {config.rounds} rounds")
        reward = pessimistic_reward(rm, config.ppo_pessimism) if config.ppo_pessimism else rm
        trainer = PPOTrainer(policy, tokenizer, reward, replace(config.ppo, seed=config.seed), ref_policy=initial,
                             callbacks=[])
        snapshots, partial = ppo_rounds(trainer, train, config, say), None
    else:
        say(f"[4/5] iterative DPO: {config.rounds} rounds × {config.pairs_per_round} best-vs-worst pairs")
        trainer = DPOTrainer(policy, tokenizer, replace(config.dpo, seed=config.seed), ref_policy=initial,
                             callbacks=[])
        snapshots, partial = steer(trainer, initial, train, rm, config, say)
    lap("policy")

    say("[5/5] evaluating on held-out prompts, before and after")  # 5. evaluation
    after, kl, scale = within_kl_target(  # the KL on the held-out replies is the one reported: within the target
        trainer.policy, snapshots, lambda model: _measure(model, initial, tokenizer, held_out, config),
        (lambda model: _probe(model, initial, tokenizer, held_out, config)) if config.eval_samples > 1 else None,
        config.kl_target or None, say, partial)
    lap("eval_after")
    shape = (len(held_out), config.eval_samples)
    r_before, r_after = (rm.score(b.prompts, b.responses).numpy().reshape(shape) for b in (before, after))
    taste = None
    if learner is not None:
        u_before, u_after = (learner.utility(b.prompts, b.responses).reshape(shape) for b in (before, after))
        taste = paired_gain(u_before, u_after, seed=config.seed)
    samples = [{"prompt": held_out[i], "before": before.responses[i * shape[1]], "after": after.responses[i * shape[1]],
                "reward_before": float(r_before[i].mean()), "reward_after": float(r_after[i].mean()),
                **({"taste_before": float(u_before[i].mean()), "taste_after": float(u_after[i].mean())}
                   if learner is not None else {})} for i in range(len(held_out))]
    result = TasteResult(len(pairs), agreement, taste, paired_gain(r_before, r_after, seed=config.seed), kl,
                         (time.perf_counter() - start) / 60, samples, stages, len(snapshots),
                         getattr(trainer, "pairs_seen_", 0) // config.dpo.epochs,
                         trainer.update_ * config.ppo.batch_size if config.method == "ppo" else 0, scale)
    if out is not None:
        from rlhf_lab.loop.report import write_taste_report
        rm.save(out / "reward_model")
        write_taste_report(result, out, origin={"policy": model_id(initial), "annotator": annotator,
                                                "store": store.display_url, "seed": config.seed})
    return result
