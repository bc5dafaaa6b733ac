"""Which pairs to show a learner (issue #17): the taste loop's D-optimal choice among `label_candidates` replies per
prompt, against the one pair of 2 (one reply at each temperature, as before the design), at 40 labels.

    PYTHONPATH=bench python bench/taste_design.py                      # seeds 0-9, every shipped taste + the unseen one
    PYTHONPATH=bench python bench/taste_design.py --seeds 0 --candidates 2,4,6 --tastes gold

For each seed: the loop's own label prompts and fresh pairs (stages 1-3 of `run_taste` exactly); for each
candidate count, `label_pairs` into a new store (the first two candidates of every prompt are the same replies at
every count, and the items get the same ids, so each learner's coin for item k is the same: a paired comparison);
then each taste's simulated learner judges, a reward model is fitted on those judgments, and its agreement with the
taste on the fresh pairs is measured. Prints per-seed agreements, the median per taste and count, the mean paired
difference to the first count with wins/losses, the seconds `label_pairs` took, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rlhf_lab.core.machine import machine_info
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.feedback.tastes import SimulatedLearner
from rlhf_lab.loop.taste import TasteConfig, fresh_pairs, label_pairs, label_prompts, taste_model
from rlhf_lab.policy.models import load_policy
from rlhf_lab.policy.prompts import load_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/unseen_taste.py


def one_seed(seed: int, tastes: list[str], counts: list[int], policy, tokenizer) -> dict:
    """{"seconds": {count: s}, taste: {count: agreement}} for this seed."""
    config = TasteConfig(seed=seed)
    train = load_prompts(config.prompt_set, split="train", max_words=24)
    drawn = label_prompts(train, config)
    a, b = fresh_pairs(policy, tokenizer, train, drawn, config)
    out: dict = {"seconds": {}}
    for count in counts:
        store, started = FeedbackStore(":memory:"), time.perf_counter()
        items = label_pairs(store, policy, tokenizer, drawn, replace(config, label_candidates=count))
        out["seconds"][count] = time.perf_counter() - started
        for taste in tastes:
            learner = SimulatedLearner(taste, name=taste, seed=seed)
            ids = learner.annotate(store, items)
            pairs = store.preference_pairs(include_ties=True)
            out.setdefault(taste, {})[count] = taste_model(pairs[pairs["judgment_id"].isin(ids)], config).agreement(
                a.prompts, a.responses, b.responses, learner.taste)
    for taste in tastes:
        print(f"  seed {seed} {taste}: " + ", ".join(f"{c} candidates {out[taste][c]:.2f}" for c in counts),
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tastes", default="short,questions,enthusiastic,formal,gold,unseen_taste:about_you")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--candidates", default="2,4", help="label_candidates to compare; the first is the baseline")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tastes, seeds = args.tastes.split(","), [int(s) for s in args.seeds.split(",")]
    counts = [int(c) for c in args.candidates.split(",")]
    policy, tokenizer = load_policy("smollm2-135m")
    runs = [one_seed(seed, tastes, counts, policy, tokenizer) for seed in seeds]
    figures: dict = {"seeds": seeds, "labels": TasteConfig().labels, "candidates": counts,
                     "label_pairs_s_median": {c: round(statistics.median(r["seconds"][c] for r in runs), 1)
                                              for c in counts}}
    print(f"agreement with the taste at {TasteConfig().labels} labels, median over {len(seeds)} seeds; "
          f"paired difference to {counts[0]} candidates: mean [seeds better/worse]")
    for taste in tastes:
        values = {c: np.array([r[taste][c] for r in runs]) for c in counts}
        figures[taste] = {f"agreement_median_{c}": round(float(np.median(values[c])), 3) for c in counts}
        for c in counts[1:]:
            diff = values[c] - values[counts[0]]
            figures[taste][f"paired_diff_mean_{c}"] = round(float(diff.mean()), 3)
            figures[taste][f"better_worse_{c}"] = [int((diff > 0).sum()), int((diff < 0).sum())]
        print(f"  {taste:<24} " + ", ".join(f"{c}: {np.median(values[c]):.2f}" for c in counts) + "   " + ", ".join(
            f"{c}−{counts[0]}: {figures[taste][f'paired_diff_mean_{c}']:+.3f} {figures[taste][f'better_worse_{c}']}"
            for c in counts[1:]))
    print("label_pairs seconds, median: " + ", ".join(f"{c}: {figures['label_pairs_s_median'][c]}" for c in counts))
    print(json.dumps({"machine": machine_info(), "model": "smollm2-135m", **figures}))


if __name__ == "__main__":
    main()
