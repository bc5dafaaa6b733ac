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
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from rlhf_lab.core.config import as_config
from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.files import write_atomic
from rlhf_lab.core.seeding import seed_for, set_seed
from rlhf_lab.feedback.preferences import pairs_origin
from rlhf_lab.loop.evaluation import paired_gain, replies_with_kl, sequence_kl
from rlhf_lab.loop.kl_check import SHRINK, blend, snapshot, within_kl_target
from rlhf_lab.loop.taste_config import EVERYONE, TasteConfig, TasteResult
from rlhf_lab.policy.generation import generate
from rlhf_lab.policy.models import load_policy, model_id
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.reward.embedding import EmbeddingRewardModel
from rlhf_lab.reward.ensemble import pessimistic_reward
from rlhf_lab.reward.pair_design import design_pairs
from rlhf_lab.train.dpo import DPOTrainer
from rlhf_lab.train.ppo import PPOTrainer

__all__ = ["TasteConfig", "TasteResult", "run_taste", "label_pairs", "simulate_labels", "taste_model", "label_prompts",
           "fresh_pairs", "blend", "SHRINK", "EVERYONE"]

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

    config = as_config(config, TasteConfig) or TasteConfig()  # a dict of its fields too
    if learner is not None and not hasattr(learner, "taste"):
        raise TypeError(f"learner must be a SimulatedLearner, e.g. SimulatedLearner({learner!r}), got "
                        f"{type(learner).__name__}" if isinstance(learner, str) else
                        f"learner must be a SimulatedLearner, got {type(learner).__name__}")
    if (policy is None) != (tokenizer is None):
        raise ValueError("pass policy and tokenizer together (as load_policy returns them), or neither for "
                         "config.policy's")
    log = log or (lambda *_: None)  # None: silent, as RLHFRun
    start = time.perf_counter()
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
        write_atomic(out / "reward_model_data.json", json.dumps(pairs_origin(pairs), indent=1))  # what it was fitted on
        write_taste_report(result, out, origin={"policy": model_id(initial), "annotator": annotator,
                                                "store": store.display_url, "seed": config.seed})
    return result
