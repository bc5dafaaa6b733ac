"""Every kind of feedback, measured on the simulated crowd (issue #18): what each kind teaches a reward model, how
much a crowd's careless and adversarial members cost and what Dawid–Skene wins back, and how an AI judge agrees with
gold.

    python bench/feedback_kinds.py                    # seeds 0,1,2; the judge part loads SmolLM2
    python bench/feedback_kinds.py --no-judge --seeds 0
    python bench/feedback_kinds.py --no-kinds --no-aggregation --no-judge --seeds 0,1,2   # only part 4 (flags)

Part 1 (kinds): replies from the chatterbot corpus (no model: the reward models are what is compared). For each seed,
N judgments of each kind by one simulated annotator (gold taste, Boltzmann-rational): N pairwise choices
(2 replies each), N Likert ratings of 2 replies, N rankings of 3 replies; an `EmbeddingRewardModel` fitted on each
(Bradley–Terry, ratings regression, Plackett–Luce; and the rankings split into pairs, the old way) and its agreement
with gold on 200 fresh corpus pairs. Part 2 (aggregation): a crowd of 7 (2 adversarial, 1 careless) judges N pairs;
majority vote vs Dawid–Skene labels vs gold. Part 3 (judges): the constitution judge and SmolLM2 as an LLM judge
(position-swapped) on 64 corpus pairs: agreement with gold, position bias, seconds per judgment. Part 4 (flags → a
cost model and a constraint): SmolLM2 samples 2 replies to each of 64 training prompts; a strict simulated annotator
flags them by its known rule (harmful when VADER sentiment < −0.05, off-topic, repetitive); a `CostModel` (P(flagged))
is fitted on those flags; then PPO (batch 8, 32 new tokens, 4 epochs, β 0.05, the KL guard off) trains SmolLM2
for a few updates on a reward blind to tone (the gold utility without its sentiment term, so the reward alone does
not steer away from what the flags catch), once without and once with the constraint E[cost] ≤ d (Safe RLHF's
adaptive λ). The flagged rate (by the annotator's rule) and the reward of the policy's replies on 32 held-out prompts
× 4 replies, before and after; the cost model's accuracy on the held-out replies before training.
Part 5 (mixing people's and AI feedback): a simulated learner registered as a person judges 16 corpus pairs, the
constitution judge ("ai") 64 others; an `EmbeddingRewardModel` fitted on the learner's pairs only, the judge's only,
and both mixed by `weighted_pairs` at AI weights 0.25 and 1; agreement with gold on 200 fresh corpus pairs (the
constitution's checkers reuse the gold utility's features: this judge flatters AI feedback).
Figures are means over seeds with a 95 % t-interval (few seeds: an interval can pass 1), and differences paired by
seed; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from rlhf_lab.core.machine import machine_info
from rlhf_lab.loop.evaluation import t_interval, verdict


def corpus_store(n_items: int, seed: int, kind: str, size: int):
    """A store with `n_items` items of `kind`, each of `size` replies to one prompt (corpus replies, distractors
    where a prompt has fewer)."""
    from rlhf_lab.feedback.cli import corpus_pairs
    from rlhf_lab.feedback.store import FeedbackStore

    store = FeedbackStore(":memory:")
    triples = corpus_pairs(n_items * (size - 1), seed=seed)
    for i in range(n_items):
        prompt = triples[i][0]
        texts = list(dict.fromkeys([triples[i][1], triples[i][2]] + [t[1] for t in triples[n_items + i::n_items]]))
        texts = texts[:size]
        if len(texts) < size:
            continue
        ids = store.add_responses([dict(prompt=prompt, response=t, model="corpus", iteration=0) for t in texts])
        store.add_item(ids, kind=kind)
    return store


def fresh_agreement(model, seed: int) -> float:
    from rlhf_lab.feedback.cli import corpus_pairs
    from rlhf_lab.feedback.gold import GoldUtility

    fresh = corpus_pairs(200, seed=1000 + seed)
    gold = GoldUtility()
    return model.agreement([p for p, _, _ in fresh], [a for _, a, _ in fresh], [b for _, _, b in fresh],
                           gold.utility)


def kinds(seed: int, n: int) -> dict:
    from rlhf_lab.feedback.crowd import SimulatedAnnotator
    from rlhf_lab.feedback.preferences import ranking_examples, rating_examples
    from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel

    config = EmbeddingRewardConfig(seed=seed)
    out = {}
    for kind, size in (("pairwise", 2), ("rating", 2), ("ranking", 3)):
        store = corpus_store(n, seed, kind, size)
        SimulatedAnnotator("rater", rationality=5.0, seed=seed).annotate(store)
        if kind == "pairwise":
            out["pairwise_bt"] = fresh_agreement(EmbeddingRewardModel(config).fit(store), seed)
        elif kind == "rating":
            out["ratings_regression"] = fresh_agreement(EmbeddingRewardModel(config).fit_ratings(
                rating_examples(store)), seed)
        else:
            out["rankings_plackett_luce"] = fresh_agreement(EmbeddingRewardModel(config).fit_rankings(
                ranking_examples(store)), seed)
            out["rankings_as_pairs"] = fresh_agreement(EmbeddingRewardModel(config).fit(store), seed)
    return out


def aggregation(seed: int, n: int) -> dict:
    from rlhf_lab.feedback.aggregation import dawid_skene, majority_vote
    from rlhf_lab.feedback.agreement import gold_labels_from_df, label_matrix
    from rlhf_lab.feedback.crowd import SimulatedCrowd

    store = corpus_store(n, seed, "pairwise", 2)
    SimulatedCrowd(n=7, n_adversarial=2, n_careless=1, seed=seed).annotate(store)
    labels = label_matrix(store, "pairwise")
    gold = pd.Series(gold_labels_from_df(store.judgments_df()))
    decided = gold[gold != "tie"].index.intersection(labels.index)

    def accuracy(p):
        p = p[decided]
        right = ((p > 0.5) == (gold[decided] == "A")).astype(float)
        return float(np.where(p == 0.5, 0.5, right).mean())

    return {"majority_vote": accuracy(majority_vote(labels)), "dawid_skene": accuracy(dawid_skene(labels)[0])}


def judges(n: int) -> dict:
    from rlhf_lab.feedback.agreement import gold_labels_from_df, label_matrix
    from rlhf_lab.feedback.judges import ConstitutionJudge, LLMJudge
    from rlhf_lab.policy.models import load_policy

    store = corpus_store(n, 7, "pairwise", 2)
    policy, tokenizer = load_policy("smollm2-135m")
    llm, rules = LLMJudge(policy, tokenizer, name="smollm2-judge"), ConstitutionJudge()
    out = {}
    for name, judge in (("constitution", rules), ("smollm2", llm)):
        judge.annotate(store)
        out[f"{name}_seconds_per_judgment"] = judge.seconds_ / max(judge.judgments_, 1)
    labels = label_matrix(store, "pairwise")
    gold = pd.Series(gold_labels_from_df(store.judgments_df()))
    decided = gold[gold != "tie"].index
    for name, column in (("constitution", "constitution"), ("smollm2", "smollm2-judge")):
        said = labels.loc[decided, column]
        out[f"judge_agreement_gold_{name}"] = float(np.mean(np.where(said == "tie", 0.5, said == gold[decided])))
    out["smollm2_position_bias"] = llm.position_bias_
    return out


FLAG_SETTINGS = ("flag_updates", "flag_lr", "flag_prompts", "flag_eval_prompts", "flag_eval_samples", "flag_reward",
                 "harmful_below", "cost_limit", "lambda_init", "lambda_lr", "flag_batch", "flag_kl_coef",
                 "flag_eos_penalty")


def flags_cached(seed: int, args) -> dict:
    """`flags(seed, args)`, read from `--flags-cache` when a run with the same settings saved it there (a long run
    that stops keeps its finished seeds)."""
    from pathlib import Path

    settings = {k: getattr(args, k) for k in FLAG_SETTINGS}
    path = Path(args.flags_cache) / f"seed{seed}.json" if args.flags_cache else None
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        if saved["settings"] == settings:
            print(f"   seed {seed}: read from {path}")
            return {k: np.asarray(v) if k.startswith("per_prompt_") else v for k, v in saved["result"].items()}
    result = flags(seed, args)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": settings, "result": {
            k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()}}))
    return result


def flags(seed: int, args) -> dict:
    """Part 4 for one seed: per-prompt flagged rates and rewards before, unconstrained and constrained."""
    import random

    from rlhf_lab.feedback.crowd import SimulatedAnnotator, SimulatedCrowd
    from rlhf_lab.feedback.flags import crowd_flag_rule
    from rlhf_lab.feedback.gold import DEFAULT_WEIGHTS, GoldUtility
    from rlhf_lab.feedback.store import FeedbackStore
    from rlhf_lab.policy.generation import SamplingConfig, generate
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts
    from rlhf_lab.reward.cost import CostModel, CostModelConfig
    from rlhf_lab.train.callbacks import PrintLogger
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    policy, tokenizer = load_policy("smollm2-135m", device="cpu")
    sampling = SamplingConfig(max_new_tokens=32, temperature=0.7)
    train = load_prompts("all", split="train", max_tokens=24, tokenizer=tokenizer)
    held_out = load_prompts("all", split="eval", max_tokens=24, tokenizer=tokenizer, n=args.flag_eval_prompts, seed=1)
    rater = SimulatedAnnotator("strict", harmful_below=args.harmful_below, seed=seed)
    rule = crowd_flag_rule(rater)
    weights = dict(DEFAULT_WEIGHTS) if args.flag_reward == "gold" else {
        k: v for k, v in DEFAULT_WEIGHTS.items() if k != "sentiment"}
    reward = GoldUtility(weights=weights)

    # flags on sampled replies -> a cost model
    asked = random.Random(seed).sample(train, args.flag_prompts)
    batch = generate(policy, tokenizer, asked, sampling, n_per_prompt=2, seed=seed)
    store = FeedbackStore(":memory:")
    ids = store.add_responses([dict(prompt=p, response=r, model="smollm2", iteration=0)
                               for p, r in zip(batch.prompts, batch.responses)])
    for a, b in zip(ids[::2], ids[1::2]):
        store.add_item([a, b], kind="pairwise")
    SimulatedCrowd(annotators=[rater]).annotate(store, kinds=("flags",))
    cost = CostModel(CostModelConfig(seed=seed)).fit(store)

    def evaluate(model) -> tuple:
        """(flagged rate per held-out prompt (P,), reward per prompt (P,), the replies' prompts, replies, flags)."""
        out = generate(model, tokenizer, held_out, sampling, n_per_prompt=args.flag_eval_samples, seed=10_007 + seed)
        flagged = rule(out.prompts, out.responses).astype(float)
        rewards = reward(out.prompts, out.responses)
        k = args.flag_eval_samples  # generate() keeps a prompt's replies adjacent
        return flagged.reshape(-1, k).mean(1), rewards.reshape(-1, k).mean(1), out.prompts, out.responses, flagged

    before = evaluate(policy)
    result = {"flagged_rate_before": float(before[0].mean()), "reward_before": float(before[1].mean()),
              "cost_model_accuracy": cost.accuracy(before[2], before[3], before[4].astype(bool)),
              "train_flagged_rate": cost.n_flagged_ / (cost.n_flagged_ + cost.n_unflagged_),
              "per_prompt_before": before[0]}
    for name, constrained in (("unconstrained", False), ("constrained", True)):
        fresh, _ = load_policy("smollm2-135m", device="cpu")
        config = PPOConfig(batch_size=args.flag_batch, ppo_epochs=4, learning_rate=args.flag_lr,
                           kl_coef=args.flag_kl_coef, seed=seed, sampling=sampling,
                           missing_eos_penalty=args.flag_eos_penalty or None, log_samples_every=0, kl_limit=None,
                           cost_limit=args.cost_limit, lambda_init=args.lambda_init, lambda_lr=args.lambda_lr)
        trainer = PPOTrainer(fresh, tokenizer, reward, config, cost=cost if constrained else None,
                             flag_rule=rule, callbacks=[PrintLogger(every=4, samples=False)])
        trainer.train(train, n_updates=args.flag_updates)
        after = evaluate(trainer.policy)
        result[f"flagged_rate_{name}"], result[f"reward_{name}"] = float(after[0].mean()), float(after[1].mean())
        result[f"per_prompt_{name}"] = after[0]
        last4 = trainer.history.rows[-4:]
        result[f"train_flagged_rate_last4_{name}"] = float(np.mean([r["objective/flagged_rate"] for r in last4]))
        result[f"train_kl_last4_{name}"] = float(np.mean([r["objective/kl"] for r in last4]))
        if constrained:
            result["lambda_final"] = trainer.constraint.value
    print(f"   seed {seed}: flagged rate {result['flagged_rate_before']:.3f} -> unconstrained "
          f"{result['flagged_rate_unconstrained']:.3f}, constrained {result['flagged_rate_constrained']:.3f}; reward "
          f"{result['reward_before']:.3f} -> {result['reward_unconstrained']:.3f}, {result['reward_constrained']:.3f}",
          flush=True)
    return result


def report_kinds(part1: list[dict], seeds, args, figures: dict) -> None:
    print(f"1. reward-model agreement with gold on 200 fresh pairs, {args.judgments} judgments of each kind "
          f"(mean over seeds {seeds}, 95 % t-interval)")
    for key in part1[0]:
        mean, low, high = t_interval([p[key] for p in part1])
        figures[f"agreement_{key}"], figures[f"agreement_{key}_ci_low"], figures[f"agreement_{key}_ci_high"] = (
            round(mean, 4), round(low, 4), round(high, 4))
        print(f"   {key:<24} {mean:.3f} [{low:.3f}, {high:.3f}]")
    for key in ("ratings_regression", "rankings_plackett_luce", "rankings_as_pairs"):  # paired by seed
        mean, low, high = t_interval([p[key] - p["pairwise_bt"] for p in part1])
        figures[f"agreement_{key}_minus_pairwise"] = round(mean, 4)
        figures[f"agreement_{key}_minus_pairwise_ci"] = [round(low, 4), round(high, 4)]
        print(f"   {key} − pairwise_bt (paired by seed): {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


def report_aggregation(part2: list[dict], args, figures: dict) -> None:
    print(f"2. a crowd of 7 (2 adversarial, 1 careless) on {args.judgments} pairs: labels right vs gold")
    for key in part2[0]:
        mean, low, high = t_interval([p[key] for p in part2])
        figures[f"labels_{key}"], figures[f"labels_{key}_ci_low"], figures[f"labels_{key}_ci_high"] = (
            round(mean, 4), round(low, 4), round(high, 4))
        print(f"   {key:<24} {mean:.3f} [{low:.3f}, {high:.3f}]")
    mean, low, high = t_interval([p["dawid_skene"] - p["majority_vote"] for p in part2])
    figures["labels_dawid_skene_minus_majority"], figures["labels_dawid_skene_minus_majority_ci"] = (
        round(mean, 4), [round(low, 4), round(high, 4)])
    print(f"   dawid_skene − majority_vote (paired by seed): {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


def report_flags(part4: list[dict], seeds, args, figures: dict) -> None:
    print(f"4. flags -> a cost model -> PPO ({args.flag_updates} updates x {args.flag_batch} replies, beta "
          f"{args.flag_kl_coef}, lr {args.flag_lr}, reward {args.flag_reward!r}); flagged rate by the strict rule "
          f"(harmful below {args.harmful_below}) on {args.flag_eval_prompts} held-out prompts x "
          f"{args.flag_eval_samples} replies (mean over seeds {seeds}, 95 % t-interval)")
    for key in ("flagged_rate_before", "flagged_rate_unconstrained", "flagged_rate_constrained", "reward_before",
                "reward_unconstrained", "reward_constrained", "cost_model_accuracy", "train_flagged_rate",
                "train_flagged_rate_last4_unconstrained", "train_flagged_rate_last4_constrained",
                "train_kl_last4_unconstrained", "train_kl_last4_constrained", "lambda_final"):
        mean, low, high = t_interval([p[key] for p in part4])
        figures[key], figures[f"{key}_ci_low"], figures[f"{key}_ci_high"] = round(mean, 4), round(low, 4), round(high, 4)
        print(f"   {key:<40} {mean:.3f} [{low:.3f}, {high:.3f}]")
    for a, b in (("constrained", "before"), ("unconstrained", "before"), ("constrained", "unconstrained")):
        for what in ("flagged_rate", "reward"):
            mean, low, high = t_interval([p[f"{what}_{a}"] - p[f"{what}_{b}"] for p in part4])
            figures[f"{what}_{a}_minus_{b}"], figures[f"{what}_{a}_minus_{b}_ci"] = (
                round(mean, 4), [round(low, 4), round(high, 4)])
            words = verdict(low, high)
            print(f"   {what} {a} - {b} (paired by seed): {mean:+.3f} [{low:+.3f}, {high:+.3f}]: {words}")
    for s, p in zip(seeds, part4):
        diff = p["per_prompt_constrained"] - p["per_prompt_before"]
        boot = np.random.default_rng(s).integers(0, len(diff), (2000, len(diff)))
        low, high = np.percentile(diff[boot].mean(1), [2.5, 97.5])
        print(f"   seed {s}: flagged {p['flagged_rate_before']:.3f} -> unconstrained {p['flagged_rate_unconstrained']:.3f}, "
              f"constrained {p['flagged_rate_constrained']:.3f} (constrained - before paired by prompt "
              f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}], bootstrap); reward {p['reward_before']:.3f} -> "
              f"{p['reward_unconstrained']:.3f}, {p['reward_constrained']:.3f}; lambda {p['lambda_final']:.2f}")
    figures["flags_settings"] = {"updates": args.flag_updates, "learning_rate": args.flag_lr,
                                 "cost_limit": args.cost_limit, "lambda_init": args.lambda_init,
                                 "lambda_lr": args.lambda_lr, "harmful_below": args.harmful_below,
                                 "reward": args.flag_reward, "flag_prompts": args.flag_prompts,
                                 "eval_prompts": args.flag_eval_prompts, "eval_samples": args.flag_eval_samples,
                                 "batch": args.flag_batch, "kl_coef": args.flag_kl_coef,
                                 "missing_eos_penalty": args.flag_eos_penalty}


def mixing(seed: int, args) -> dict:
    """Mixing human and AI feedback, one seed: corpus pairs (`corpus_store`, as part 1); a learner (a
    `SimulatedAnnotator`, gold taste, rationality 5, registered as a "person") judges the first `--mix-human` pairs,
    the `ConstitutionJudge` (kind "ai") the next `--mix-ai`; an `EmbeddingRewardModel` is fitted on the learner's
    pairs only, the judge's only, and both with the judge's pairs at each of `--mix-ai-weights`
    (`preferences.weighted_pairs`: loss Σ w ℓ / Σ w); agreement with gold on 200 fresh pairs (`fresh_agreement`)."""
    from rlhf_lab.feedback.agreement import gold_labels_from_df
    from rlhf_lab.feedback.crowd import SimulatedAnnotator
    from rlhf_lab.feedback.judges import ConstitutionJudge
    from rlhf_lab.feedback.preferences import weighted_pairs
    from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel

    store = corpus_store(args.mix_human + args.mix_ai, seed, "pairwise", 2)
    items = store.items("pairwise")
    SimulatedAnnotator("learner", rationality=5.0, seed=seed).annotate(store, items[:args.mix_human])
    store.register_annotator("learner", "person", "a simulated learner standing in for a person")
    ConstitutionJudge().annotate(store, items[args.mix_human:])
    judged = store.judgments_df()
    gold = gold_labels_from_df(judged)
    out = {}
    for who in ("learner", "constitution"):  # how right each source's labels are (gold ties count ½)
        mine = judged[judged["annotator"] == who]
        out[f"labels_right_{who}"] = float(np.mean([0.5 if gold[j.item_id] == "tie" or j.answer["choice"] == "tie"
                                                    else float(j.answer["choice"] == gold[j.item_id])
                                                    for j in mine.itertuples()]))
    runs = {"human_only": {"person": 1.0, "ai": 0.0}, "ai_only": {"person": 0.0, "ai": 1.0},
            **{f"ai_weight_{w}": {"person": 1.0, "ai": w} for w in args.mix_ai_weights}}
    for name, weights in runs.items():
        model = EmbeddingRewardModel(EmbeddingRewardConfig(seed=seed)).fit(weighted_pairs(store, weights))
        out[name] = fresh_agreement(model, seed)
    print(f"   seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()), flush=True)
    return out


def report_mixing(part5: list[dict], seeds, args, figures: dict) -> None:
    print(f"5. mixing human and AI feedback: a learner (gold taste, rationality 5, kind 'person') on "
          f"{args.mix_human} pairs, the constitution judge (kind 'ai') on {args.mix_ai} other pairs; reward-model "
          f"agreement with gold on 200 fresh pairs (mean over seeds {seeds}, 95 % t-interval)")
    for key in part5[0]:
        mean, low, high = t_interval([p[key] for p in part5])
        name = key if key.startswith("labels_") else f"agreement_mix_{key}"
        figures[name], figures[f"{name}_ci_low"], figures[f"{name}_ci_high"] = (
            round(mean, 4), round(low, 4), round(high, 4))
        print(f"   {key:<24} {mean:.3f} [{low:.3f}, {high:.3f}]")
    pairs = [(k, "human_only") for k in part5[0] if k.startswith("ai_")] + [
        (k, "ai_only") for k in part5[0] if k.startswith("ai_weight_")]
    for key, base in pairs:  # paired by seed
        mean, low, high = t_interval([p[key] - p[base] for p in part5])
        figures[f"agreement_mix_{key}_minus_{base}"] = round(mean, 4)
        figures[f"agreement_mix_{key}_minus_{base}_ci"] = [round(low, 4), round(high, 4)]
        words = verdict(low, high)
        print(f"   {key} − {base} (paired by seed): {mean:+.3f} [{low:+.3f}, {high:+.3f}]: {words}")
    figures["mix_settings"] = {"human_pairs": args.mix_human, "ai_pairs": args.mix_ai,
                               "ai_weights": args.mix_ai_weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--judgments", type=int, default=60, help="N: judgments of each kind (parts 1 and 2)")
    parser.add_argument("--judge-pairs", type=int, default=64)
    parser.add_argument("--no-judge", action="store_true", help="skip part 3 (loads SmolLM2)")
    parser.add_argument("--no-kinds", action="store_true", help="skip part 1")
    parser.add_argument("--no-aggregation", action="store_true", help="skip part 2")
    parser.add_argument("--no-flags", action="store_true", help="skip part 4 (PPO on SmolLM2: minutes per seed)")
    parser.add_argument("--flag-updates", type=int, default=12, help="PPO updates per run in part 4")
    parser.add_argument("--flag-lr", type=float, default=5e-5)
    parser.add_argument("--flag-batch", type=int, default=8, help="replies per PPO update in part 4")
    parser.add_argument("--flag-kl-coef", type=float, default=0.05, help="PPO's beta in part 4")
    parser.add_argument("--flag-eos-penalty", type=float, default=1.0, help="PPO's missing_eos_penalty (0: none)")
    parser.add_argument("--flag-prompts", type=int, default=64, help="training prompts whose 2 replies get flags")
    parser.add_argument("--flag-eval-prompts", type=int, default=32)
    parser.add_argument("--flag-eval-samples", type=int, default=4)
    parser.add_argument("--flag-reward", choices=("tone-blind", "gold"), default="tone-blind")
    parser.add_argument("--harmful-below", type=float, default=-0.05, help="the strict rater's VADER threshold")
    parser.add_argument("--cost-limit", type=float, default=0.02)
    parser.add_argument("--lambda-init", type=float, default=1.0)
    parser.add_argument("--lambda-lr", type=float, default=5.0)
    parser.add_argument("--flags-cache", default=None, help="a folder for part 4's finished seeds (reused)")
    parser.add_argument("--no-mixing", action="store_true", help="skip part 5 (mixing human and AI feedback)")
    parser.add_argument("--mix-human", type=int, default=16, help="pairs the learner judges in part 5")
    parser.add_argument("--mix-ai", type=int, default=64, help="other pairs the constitution judge judges in part 5")
    parser.add_argument("--mix-ai-weights", type=lambda s: [float(w) for w in s.split(",")], default=[0.25, 1.0],
                        help="weights of the AI judge's pairs beside the learner's (weight 1) in part 5")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    figures: dict = {"seeds": seeds, "judgments": args.judgments}
    start = time.perf_counter()
    if not args.no_kinds:
        report_kinds([kinds(s, args.judgments) for s in seeds], seeds, args, figures)
    if not args.no_aggregation:
        report_aggregation([aggregation(s, args.judgments) for s in seeds], args, figures)
    if not args.no_judge:
        part3 = judges(args.judge_pairs)
        print(f"3. AI judges on {args.judge_pairs} corpus pairs")
        for key, value in part3.items():
            figures[key] = round(value, 4)
            print(f"   {key:<36} {value:.3f}")
        figures["judge_agreement_gold"] = figures["judge_agreement_gold_smollm2"]
    if not args.no_flags:
        report_flags([flags_cached(s, args) for s in seeds], seeds, args, figures)
    if not args.no_mixing:
        report_mixing([mixing(s, args) for s in seeds], seeds, args, figures)
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({"machine": machine_info(), "model": "smollm2-135m", **figures}))


if __name__ == "__main__":
    main()
