"""Every kind of feedback, measured on the simulated crowd (issue #18): what each kind teaches a reward model, how
much a crowd's careless and adversarial members cost and what Dawid–Skene wins back, and how an AI judge agrees with
gold.

    python bench/feedback_kinds.py                    # seeds 0,1,2; the judge part loads SmolLM2
    python bench/feedback_kinds.py --no-judge --seeds 0

Part 1 (kinds): replies from the chatterbot corpus (no model: the reward models are what is compared). For each seed,
N judgments of each kind by one simulated annotator (gold taste, Boltzmann-rational): N pairwise choices
(2 replies each), N Likert ratings of 2 replies, N rankings of 3 replies; an `EmbeddingRewardModel` fitted on each
(Bradley–Terry, ratings regression, Plackett–Luce; and the rankings split into pairs, the old way) and its agreement
with gold on 200 fresh corpus pairs. Part 2 (aggregation): a crowd of 7 (2 adversarial, 1 careless) judges N pairs;
majority vote vs Dawid–Skene labels vs gold. Part 3 (judges): the constitution judge and SmolLM2 as an LLM judge
(position-swapped) on 64 corpus pairs: agreement with gold, position bias, seconds per judgment.
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


def t_interval(values) -> tuple[float, float, float]:
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--judgments", type=int, default=60, help="N: judgments of each kind (parts 1 and 2)")
    parser.add_argument("--judge-pairs", type=int, default=64)
    parser.add_argument("--no-judge", action="store_true", help="skip part 3 (loads SmolLM2)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    figures: dict = {"seeds": seeds, "judgments": args.judgments}
    start = time.perf_counter()
    part1 = [kinds(s, args.judgments) for s in seeds]
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
    part2 = [aggregation(s, args.judgments) for s in seeds]
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
    if not args.no_judge:
        part3 = judges(args.judge_pairs)
        print(f"3. AI judges on {args.judge_pairs} corpus pairs")
        for key, value in part3.items():
            figures[key] = round(value, 4)
            print(f"   {key:<36} {value:.3f}")
        figures["judge_agreement_gold"] = figures["judge_agreement_gold_smollm2"]
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({"machine": machine_info(), **figures}))


if __name__ == "__main__":
    main()
