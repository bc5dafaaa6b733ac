"""Does PPO raise the gold reward on held-out prompts? SmolLM2 trained on the simulated crowd's gold utility.

The #5 acceptance run: `--updates` PPO updates (32 new tokens, 4 epochs, temperature 0.7; batch 32, lr 3e-5, β 0.1
nearly fixed, KL target 10, no missing-EOS penalty) with the gold utility as the reward, then the mean gold reward of
the initial and the trained policy on held-out prompts (the eval split: never seen in training), several replies per
prompt, and the trained policy's KL to the reference on those replies. The gain is also reported paired by prompt
(mean over each prompt's replies after minus before, then mean and standard error over prompts): which prompt is asked
moves the gold reward more than training does, so pairing removes that variance. Ends with one JSON line of figures.

    python bench/ppo_gold.py [--updates 30] [--batch-size 32] [--lr 3e-5] [--kl-target 10] [--eval-prompts 64]
                             [--seed 0] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rlhf_lab.core.machine import machine_info


def held_out_gold(trainer, prompts: list[str], samples: int, seed: int) -> tuple[np.ndarray, float]:
    """(gold reward per prompt averaged over its `samples` replies (P,), mean KL to the reference per reply)."""
    from rlhf_lab.policy.generation import generate

    policy = trainer.policy
    batch = generate(policy, trainer.tokenizer, prompts, trainer.config.sampling, seed=seed, n_per_prompt=samples)
    gold = np.asarray(trainer.reward(batch).float().cpu())  # the raw gold utility (no missing-EOS penalty)
    kl = float(trainer.kl_to_reference(batch).mean())
    return gold.reshape(len(prompts), samples).mean(1), kl  # generate() keeps a prompt's replies adjacent


def mean_se(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean."""
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--kl-coef", type=float, default=0.1)
    parser.add_argument("--kl-target", type=float, default=10.0)
    parser.add_argument("--kl-horizon", type=float, default=10000,
                        help="adaptive β's horizon in replies (16: β can change by up to 10%% per update of 8)")
    parser.add_argument("--batch-size", type=int, default=32, help="rollouts per update (8 drifts mostly by noise)")
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missing-eos-penalty", type=float, default=0.0, help="0: none")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts
    from rlhf_lab.train.callbacks import PrintLogger
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    policy, tokenizer = load_policy(args.model, device=args.device)
    train = load_prompts("all", split="train", max_tokens=24, tokenizer=tokenizer)
    held_out = load_prompts("all", split="eval", max_tokens=24, tokenizer=tokenizer, n=args.eval_prompts, seed=1)
    config = PPOConfig(batch_size=args.batch_size, ppo_epochs=4, learning_rate=args.lr, kl_coef=args.kl_coef,
                       kl_target=args.kl_target, kl_horizon=args.kl_horizon, missing_eos_penalty=args.missing_eos_penalty or None,
                       seed=args.seed, sampling=SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.7))
    trainer = PPOTrainer(policy, tokenizer, "gold", config, callbacks=[PrintLogger(every=5, samples=False)])
    gold_before, _ = held_out_gold(trainer, held_out, args.eval_samples, seed=10_007)
    start = time.perf_counter()
    trainer.train(train, n_updates=args.updates)
    seconds = time.perf_counter() - start
    gold_after, kl = held_out_gold(trainer, held_out, args.eval_samples, seed=10_007)
    (before, before_se), (after, after_se) = mean_se(gold_before), mean_se(gold_after)
    gain, gain_se = mean_se(gold_after - gold_before)
    z = gain / gain_se if gain_se > 0 else float("nan")
    print(f"held-out gold reward {before:.3f} ± {before_se:.3f} -> {after:.3f} ± {after_se:.3f} "
          f"after {args.updates} updates; paired gain {gain:+.3f} ± {gain_se:.3f} ({z:.1f} SE), "
          f"{(gold_after > gold_before).mean():.0%} of {len(held_out)} prompts improved; "
          f"KL {kl:.2f} nats per reply (target {args.kl_target})")
    print(json.dumps({"machine": machine_info(), "model": args.model, "device": str(trainer.accelerator.device),
                      "updates": args.updates,
                      "gold_before": round(before, 4), "gold_before_se": round(before_se, 4),
                      "gold_after": round(after, 4), "gold_after_se": round(after_se, 4),
                      "gold_gain_paired": round(gain, 4), "gold_gain_paired_se": round(gain_se, 4),
                      "prompts_improved_frac": round(float((gold_after > gold_before).mean()), 3),
                      "eval_prompts": len(held_out), "eval_samples": args.eval_samples, "seed": args.seed,
                      "batch_size": args.batch_size,
                      "kl_nats": round(kl, 3), "kl_target_nats": args.kl_target,
                      "beta_final": round(trainer.kl_ctl.value, 4), "learning_rate": args.lr,
                      "s_per_update": round(seconds / args.updates, 2)}))


if __name__ == "__main__":
    main()
