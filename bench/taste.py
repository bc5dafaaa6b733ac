"""Learning curves of the taste loop on SmolLM2 (2 CPU threads): how many judgments a reward model needs to agree
with each shipped taste, and what the whole loop gains in how many minutes.

    python bench/taste.py                                  # every taste, seeds 0-4: agreement curve + full loop
                                                           # (the shipped ones and bench/unseen_taste.py's)
    python bench/taste.py --tastes short,formal --seeds 0,1 --no-loop     # only the agreement curve
    python bench/taste.py --no-loop --features reply,prompt_x_reply,surface   # the curve without the word counts

Part 1 (labels → agreement): for each seed, 80 label pairs and 64 fresh pairs are sampled once from the initial
policy (replies do not depend on the taste); each taste's simulated learner judges the label pairs; a reward model is
fitted on the first k of them for each k in --labels and its agreement with the taste measured on the fresh pairs.
Part 2 (minutes → gain): `rlhf-lab taste` as a user runs it (model cache built), at --loop-labels judgments: the
taste's gain on held-out prompts with its paired 95 % interval, the win rate, the KL and the wall time.
The last line is one JSON object with the figures (medians over seeds per taste, and how many seeds rose).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlhf_lab.cli import PRIORS, WORDS
from rlhf_lab.core.machine import machine_info

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/unseen_taste.py, a taste given as module:function


def agreement_curves(tastes: list[str], seed: int, label_counts: list[int], policy, tokenizer,
                     features: tuple[str, ...] | None = None, candidates: int | None = None,
                     prior: str | None = None) -> dict:
    """{taste: {k: agreement}} for one seed: the label pairs and fresh pairs are sampled once and judged by each
    taste's simulated learner through one store (replies do not depend on the taste). features: the reward model's
    blocks (default: the loop's, `TasteConfig().reward`), for an ablation on the same pairs; prior: a key of
    `rlhf-lab taste --prior` (default: the loop's)."""
    from dataclasses import replace

    import numpy as np

    from rlhf_lab import FeedbackStore, load_prompts
    from rlhf_lab.core.seeding import seed_for
    from rlhf_lab.feedback.tastes import SimulatedLearner
    from rlhf_lab.loop.taste import TasteConfig, label_pairs
    from rlhf_lab.policy.generation import generate
    from rlhf_lab.reward.embedding import EmbeddingRewardModel

    config = TasteConfig(labels=max(label_counts), seed=seed)
    if candidates:
        config.label_candidates = candidates
    if features:
        config.reward = replace(config.reward, features=tuple(features))
    if prior:
        config.reward = replace(config.reward, **PRIORS[prior])
    train = load_prompts(config.prompt_set, split="train", max_words=24)
    rng = np.random.default_rng(seed_for(seed, 10))
    drawn = [train[i] for i in rng.choice(len(train), max(label_counts) + config.agreement_pairs, replace=False)]
    labelled, fresh = drawn[:max(label_counts)], drawn[max(label_counts):]
    store = FeedbackStore(":memory:")
    items = label_pairs(store, policy, tokenizer, labelled, config)
    a, b = (generate(policy, tokenizer, fresh, replace(config.sampling, temperature=t), seed=seed_for(seed, 15, j))
            for j, t in enumerate(config.label_temperatures))
    order = {p: i for i, p in enumerate(labelled)}
    out = {}
    for taste in tastes:
        learner = SimulatedLearner(taste, name=taste, seed=seed)
        learner.annotate(store, items)
        pairs = store.preference_pairs()
        pairs = pairs[pairs["annotator"] == taste]
        pairs = pairs.assign(rank=pairs["prompt"].map(order)).sort_values("rank")
        out[taste] = {k: EmbeddingRewardModel(replace(config.reward, seed=seed)).fit(pairs.head(k)).agreement(
            a.prompts, a.responses, b.responses, learner.taste) for k in label_counts}
    return out


def loop_run(taste: str, seed: int, labels: int, out: Path, method: str = "dpo", words: str | None = None,
             candidates: int | None = None, pessimism: float | None = None, prior: str | None = None) -> dict:
    """`rlhf-lab taste` in a fresh process (the minutes include loading, as a user sees them); its output is kept in
    the run's folder as log.txt."""
    started = time.perf_counter()
    folder = out / (f"{method}{'' if pessimism is None else f'-k{pessimism:g}'}{'' if prior is None else f'-{prior}'}"
                    f"-{words or 'default'}-{taste}-{seed}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "taste", "--taste", taste, "--seed", str(seed),
                           "--labels", str(labels), "--method", method, *(["--words", words] if words else []),
                           *(["--prior", prior] if prior else []),
                           *(["--candidates", str(candidates)] if candidates else []),
                           *(["--pessimism", str(pessimism)] if pessimism is not None else []),
                           "--out", str(folder), "--overwrite"], capture_output=True, text=True, env=env)  # a rerun
    if folder.is_dir():
        (folder / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["process_minutes"] = (time.perf_counter() - started) / 60
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tastes", default="short,questions,enthusiastic,formal,gold,unseen_taste:about_you")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--labels", default="10,20,40,60,80", help="label counts of the agreement curve")
    parser.add_argument("--loop-labels", type=int, default=40)
    parser.add_argument("--method", choices=("dpo", "ppo"), default="dpo",
                        help="the loop's policy step: dpo (its default) or ppo (lesson 4's method and settings)")
    parser.add_argument("--no-loop", action="store_true", help="only the agreement curve")
    parser.add_argument("--no-curve", action="store_true", help="only the full loop")
    parser.add_argument("--features", default=None,
                        help="the curve's reward-model blocks, comma-separated (an ablation, e.g. "
                             "reply,prompt_x_reply,surface without the word counts); default: the model's")
    parser.add_argument("--words", choices=tuple(WORDS), default=None,
                        help="the loop's reward-model word counts (`rlhf-lab taste --words`); default: the model's")
    parser.add_argument("--candidates", type=int, default=None,
                        help="replies per label prompt (`rlhf-lab taste --candidates`); default: the loop's")
    parser.add_argument("--prior", choices=tuple(PRIORS), default=None,
                        help="the reward model's prior, for the curve and the loop (`rlhf-lab taste --prior`); "
                             "default: the loop's (relevance)")
    parser.add_argument("--pessimism", type=float, default=None,
                        help="with --method ppo: `rlhf-lab taste --pessimism` (the score less k × its spread; default: the loop's, 1)")
    parser.add_argument("--out", default="runs/bench-taste")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    tastes, seeds = args.tastes.split(","), [int(s) for s in args.seeds.split(",")]
    counts = [int(k) for k in args.labels.split(",")]
    features = tuple(args.features.split(",")) if args.features else None
    figures: dict = {"seeds": seeds, "method": args.method, "features": features, "words": args.words,
                     "prior": args.prior, "candidates": args.candidates, "pessimism": args.pessimism}
    if not args.no_curve:
        from rlhf_lab import load_policy

        policy, tokenizer = load_policy("smollm2-135m")
        curves = [agreement_curves(tastes, seed, counts, policy, tokenizer, features, args.candidates, args.prior)
                  for seed in seeds]
        print("labels → agreement with the taste on 64 fresh pairs: median over seeds [min, max]")
        for taste in tastes:
            values = {k: [c[taste][k] for c in curves] for k in counts}
            entry = figures.setdefault(taste, {})
            entry["agreement_median"] = {k: round(statistics.median(v), 3) for k, v in values.items()}
            reach = [k for k in counts if entry["agreement_median"][k] >= 0.8]
            entry["labels_to_0.80"] = reach[0] if reach else None
            print(f"  {taste:<13} " + ", ".join(f"{k}: {statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]"
                                                 for k, v in values.items()), flush=True)
    if not args.no_loop:  # seeds outer: an interrupted bench still has every taste at the first seeds
        runs: dict = {taste: [] for taste in tastes}
        for seed in seeds:
            for taste in tastes:
                row = loop_run(taste, seed, args.loop_labels, Path(args.out), args.method, args.words, args.candidates,
                               args.pessimism, args.prior)
                runs[taste].append(row)
                print(f"  {taste} seed {seed}: agreement {row['rm_agreement']:.2f}, gain {row['gain']:+.3f} "
                      f"[{row['gain_ci_low']:+.3f}, {row['gain_ci_high']:+.3f}] {row['verdict']}, win rate "
                      f"{row['win_rate']:.2f}, KL {row['kl']:.2f}, rounds {row['rounds']}, "
                      f"{row['process_minutes']:.1f} min", flush=True)
        for taste, rows in runs.items():
            figures.setdefault(taste, {}).update(
                rose=sum(r["gain_ci_low"] > 0 for r in rows), runs=len(rows),
                gain_median=statistics.median(r["gain"] for r in rows),
                rm_agreement_median=statistics.median(r["rm_agreement"] for r in rows),
                kl_median=statistics.median(r["kl"] for r in rows), kl_max=max(r["kl"] for r in rows),
                minutes_max=round(max(r["process_minutes"] for r in rows), 2))
    from rlhf_lab.loop.taste import TasteConfig

    print(json.dumps({"machine": machine_info(), "model": TasteConfig().policy, **figures}))


if __name__ == "__main__":
    main()
