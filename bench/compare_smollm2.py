"""Best-of-n, PPO, RLOO and DPO on SmolLM2 with the simulated crowd, at one fixed budget (issue #9's comparison).

1. Feedback: `--pairs` pairs of replies from the initial policy (T 0.7, 32 new tokens), judged by 3 simulated
   annotators.
2. The shared proxy: a MiniLM reward model fitted on those judgments (2 epochs), normalised on the same replies.
3. `compare_methods` runs each method from its own copy of the initial policy, with the same prompts and seed:
   best-of-n (n = 1..16, no training), PPO (LoRA, lr 1e-4, batch 8), RLOO (LoRA, k 4 × 2 prompts) and offline DPO
   (LoRA, lr 2e-5) on the same pairs, within `--samples` sampled training replies and 2 × pairs judgments.
   Every method's held-out evaluation is `--eval-samples` replies per eval prompt, scored by gold and proxy, with KL
   to the initial policy; RL methods are evaluated every 4 updates (their frontier).

With `--tune K` the comparison is fair in its settings too (`loop.tuning.compare_tuned`): every training method
brings K learning rates (PPO and RLOO: 3e-5 … 3e-4; DPO: 5e-6 … 8e-5, log-spaced) and best-of-n K largest n (4 … 16);
each keeps the one with the highest gold on `--tune-prompts` held-out prompts, and the chosen ones are reported on
the `--eval-prompts` others, so choosing the best of K does not inflate the reported gain. tuning.csv lists every
candidate.

Writes table.csv, frontier.csv, frontier.png and costs.png under `--out`, prints the table, and ends with one JSON line.

    python bench/compare_smollm2.py [--out runs/compare_smollm2] [--eval-prompts 32] [--eval-samples 1] [--samples 96]
        [--tune 3 --tune-prompts 32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rlhf_lab.core.machine import machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/compare_smollm2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32 (default, on every device) or bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=96, help="judged pairs behind the proxy and offline DPO")
    parser.add_argument("--samples", type=int, default=96, help="the budget: replies sampled for training")
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=1, help="replies per eval prompt in every evaluation")
    parser.add_argument("--tune", type=int, default=0, help="candidates per method (0: one fixed setting each)")
    parser.add_argument("--tune-prompts", type=int, default=32, help="held-out prompts the tuning chooses on")
    parser.add_argument("--eval-every", type=int, default=4, help="RL updates between frontier evaluations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rlhf_lab.feedback.crowd import SimulatedCrowd
    from rlhf_lab.feedback.store import FeedbackStore
    from rlhf_lab.loop.compare import DPO, PPO, RLOO, BestOfN, Budget, compare_methods
    from rlhf_lab.loop.tuning import compare_tuned, vary
    from rlhf_lab.policy.generation import SamplingConfig, generate
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts
    from rlhf_lab.reward.ensemble import build_reward_model
    from rlhf_lab.reward.model import RewardConfig
    from rlhf_lab.train.config import LoraSettings
    from rlhf_lab.train.dpo import DPOConfig
    from rlhf_lab.train.ppo import PPOConfig
    from rlhf_lab.train.rloo import RLOOConfig

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy, tokenizer = load_policy(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    prompts = load_prompts("all", split="train", max_tokens=24, tokenizer=tokenizer, n=max(128, args.pairs),
                           seed=args.seed)
    held_out = load_prompts("all", split="eval", max_tokens=24, tokenizer=tokenizer,
                            n=args.eval_prompts + (args.tune_prompts if args.tune else 0), seed=args.seed)
    eval_prompts, tune_prompts = held_out[:args.eval_prompts], held_out[args.eval_prompts:]
    sampling = SamplingConfig(max_new_tokens=32, temperature=0.7)

    # 1. feedback on the initial policy's replies
    store = FeedbackStore(":memory:")
    batch = generate(policy, tokenizer, prompts[:args.pairs], sampling, n_per_prompt=2, seed=args.seed, batch_size=32)
    ids = store.add_responses(batch.to_records())
    items = [store.get_item(store.add_item(ids[i:i + 2])) for i in range(0, len(ids), 2)]
    SimulatedCrowd(n=3, seed=args.seed).annotate(store, items)
    pairs = store.preference_pairs()
    # 2. the proxy every method optimises or picks by
    reward_model = build_reward_model(RewardConfig(epochs=2, seed=args.seed, device=args.device)).fit(pairs,
                                                                                                      progress=False)
    reward_model.normalize(batch.prompts, batch.responses)
    # 3. the four methods, one budget
    lora = LoraSettings()
    rl = dict(learning_rate=1e-4, batch_size=8, sampling=sampling, lora=lora, log_samples_every=0)
    ppo = PPO(PPOConfig(**rl), reward_judgments=len(pairs))
    rloo = RLOO(RLOOConfig(rloo_k=4, **{**rl, "batch_size": 2}), reward_judgments=len(pairs))
    dpo = DPO(DPOConfig(learning_rate=2e-5, lora=lora, sampling=sampling, epochs=2), pairs_per_round=32)
    budget = Budget(samples=args.samples, judgments=len(pairs) * 2)
    common = dict(reward=reward_model, pairs=pairs, budget=budget, sampling=sampling, seed=args.seed,
                  eval_every=args.eval_every, eval_samples=args.eval_samples)
    if args.tune:
        k = args.tune
        if not 1 <= k <= 5:
            parser.error(f"--tune takes 1 to 5 candidates per method (best-of-n: n up to 1 … 16), got {k}")
        candidates = {"best_of_n": [BestOfN(n=tuple(2 ** i for i in range(big + 1)), pool=args.eval_samples * 2 ** big,
                                            reward_judgments=len(pairs), name=f"best_of_{2 ** big}")
                                    for big in range(5 - k, 5)],  # the k largest of n = 1, 2, 4, 8, 16
                      "ppo": vary(ppo, learning_rate=_spread(3e-5, 3e-4, k)),
                      "rloo": vary(rloo, learning_rate=_spread(3e-5, 3e-4, k)),
                      "dpo": vary(dpo, learning_rate=_spread(5e-6, 8e-5, k))}
        tuned = compare_tuned(candidates, policy, tokenizer, prompts, eval_prompts, tune_prompts=tune_prompts,
                              **common)
        tuned.tuning.to_csv(out / "tuning.csv", index=False)
        print(tuned.tuning[["family", "method", "stopped", "gold_reward", "gold_gain", "kl", "chosen"]].round(3)
              .to_string(index=False))
        result = tuned
    else:
        result = compare_methods([BestOfN(n=(1, 2, 4, 8, 16), reward_judgments=len(pairs)), ppo, rloo, dpo], policy,
                                 tokenizer, prompts, eval_prompts, **common)

    result.table.to_csv(out / "table.csv", index=False)
    result.frontier.to_csv(out / "frontier.csv", index=False)
    result.plot_frontier().savefig(out / "frontier.png", dpi=120)
    result.plot_costs().savefig(out / "costs.png", dpi=120)
    print(result.table.round(3).to_string(index=False))
    figures = {"device": args.device, "dtype": args.dtype, "judged_pairs": args.pairs, "judgments": len(pairs),
               "budget_samples": args.samples,
               "eval_prompts": len(eval_prompts), "eval_samples": args.eval_samples,
               "tune_candidates": args.tune, "tune_prompts": len(tune_prompts),
               "total_s": round(time.perf_counter() - start, 1)}
    for row in result.table.itertuples():
        if args.tune:
            figures[f"{row.method}_setting"] = row.setting
        figures[f"{row.method}_gold"] = round(row.gold_reward, 4)
        figures[f"{row.method}_gold_gain"] = round(row.gold_gain, 4)
        figures[f"{row.method}_gold_gain_ci"] = [round(row.gold_gain_ci_low, 4), round(row.gold_gain_ci_high, 4)]
        figures[f"{row.method}_kl_nats"] = round(row.kl, 3)
        figures[f"{row.method}_wall_s"] = round(row.wall_time_s, 1)
    print(json.dumps({"machine": machine_info(), "model": args.model, **figures}))


def _spread(low: float, high: float, k: int) -> list[float]:
    """k values from low to high, evenly spaced on a log scale, two significant digits (k = 1: their geometric mean)."""
    if k == 1:
        return [float(f"{(low * high) ** 0.5:.2g}")]
    return [float(f"{low * (high / low) ** (i / (k - 1)):.2g}") for i in range(k)]


if __name__ == "__main__":
    main()
