"""PPO speed and memory at the standard setting, full fine-tuning and LoRA (and TRL's PPOTrainer where installed).

Standard setting (shared/DESIGN.md): SmolLM2-135M-Instruct, float32, CPU with 2 threads, 8 prompts of at most 24
tokens per update (left padded), 32 new tokens, 4 PPO epochs, 1 minibatch, temperature 0.7, stop at EOS, missing-EOS
penalty 1.0, β = 0.05; reward = the simulated crowd's gold utility. Each variant runs in its own process so that its
peak resident memory is its own; the variants run one after the other (the machine is shared and noisy: compare
figures from one run only, and use --repeats to interleave several). Ends with one JSON line of figures.

    python bench/ppo.py [--updates 5] [--threads 2] [--variants full,full_auto,lora,trl] [--repeats 3]
                        (variants: full or lora, then _auto, _bf16, _eager, _mmap, _padded, _fullmask, _sdpa,
                        _allrows: see run_lab; and trl)
    python bench/ppo.py --variant full        # one variant in this process (what the driver runs)
    python bench/ppo.py --device cuda --variants full,full_auto,full_fp16 [--batch 64]   # on a GPU (issue #22):
                        # also the peak GPU memory (peak_gpu_mb); _auto is bf16 on Ampere and newer, fp16 on a T4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from rlhf_lab.core.machine import machine_info
from rlhf_lab.core.memory import MALLOC_ENV

BATCH, NEW_TOKENS, EPOCHS, TEMPERATURE, BETA, EOS_PENALTY, MAX_PROMPT_TOKENS = 8, 32, 4, 0.7, 0.05, 1.0, 24


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def standard_prompts(tokenizer, n: int) -> list[str]:
    from rlhf_lab.policy.prompts import load_prompts

    return load_prompts("all", split="train", max_tokens=MAX_PROMPT_TOKENS, tokenizer=tokenizer, n=n, seed=0)


def peak_gpu_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_lab(variant: str, updates: int, model: str, seed: int = 0, device: str = "cpu", batch: int = BATCH) -> dict:
    """rlhf_lab's PPOTrainer: "full" or "lora", in float32 throughout (the path before the CPU's bf16 was used),
    or with a suffix: "_auto" the lab's defaults (`mixed_precision="auto"` and `decode_precision="auto"`: bf16
    autocast and a bf16 sampling twin on a CPU with native bf16), "_bf16" bf16 autocast with float32 sampling,
    "_eager" (after either) the eager attention kernels instead of SDPA, "_mmap" glibc's malloc at its defaults
    (RLHF_LAB_MALLOC=0: every large block a fresh mapping, `core.memory.reuse_freed_memory` off), "_padded" the
    rows run padded to the batch's longest, as before 2026-12-05 (`pack_replies=False`), "_fullmask" the prompt prefix
    in a pass of its own and the packed rows' attention through one (T, P + T) mask, as before 2026-12-05's one pass
    with attention row by row (`packed_attention`), "_sdpa" the packed rows' attention by segment through SDPA's CPU
    kernel, as before 2026-12-06's two products around a softmax (`packed_attention.attend_by_products`), "_allrows"
    the output layer and value head on every (row, step), also after a reply's end, as before 2026-12-06
    (`policy_value.response_rows`), "_fp16" fp16 autocast with loss scaling (a GPU only).
    `device`: where the policy lives ("cuda": the trainer follows it); `batch`: prompts per update.
    Per-update and per-phase seconds from the trainer's own metrics."""
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.train.callbacks import PrintLogger
    from rlhf_lab.train.config import LoraSettings
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    base, *flags = variant.split("_")
    policy, tokenizer = load_policy(model, device=device, dtype=torch.float32)
    if "eager" in flags:
        policy.config._attn_implementation = "eager"
    if "fullmask" in flags:
        import rlhf_lab.train.policy_value as policy_value

        policy_value.can_attend_by_segment = lambda trunk: False
    if "sdpa" in flags:
        import rlhf_lab.core.packed_attention as packed_attention

        packed_attention.attend_by_products = packed_attention.attend_by_sdpa
    if "allrows" in flags:
        import rlhf_lab.train.policy_value as policy_value

        rows_of = policy_value.response_rows
        policy_value.response_rows = lambda *args: (policy_value.spread_rows(*rows_of(*args)), None)
    lora = base == "lora"
    precision = next((flag for flag in ("auto", "bf16", "fp16") if flag in flags), "no")
    config = PPOConfig(learning_rate=1e-4 if lora else 1e-5, batch_size=batch, ppo_epochs=EPOCHS, kl_coef=BETA,
                       mixed_precision=precision,
                       missing_eos_penalty=EOS_PENALTY, lora=LoraSettings() if lora else None, log_samples_every=0,
                       pack_replies="padded" not in flags,
                       seed=seed, sampling=SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE,
                                                          decode_precision="auto" if "auto" in flags else "model"))
    trainer = PPOTrainer(policy, tokenizer, "gold", config, callbacks=[PrintLogger(file=sys.stderr)])
    trainer.train(standard_prompts(tokenizer, batch * updates), updates)
    rows = trainer.history.rows[1:]  # the first update warms up
    phases = {f"{name}_s": statistics.median(r[f"time/{name}_s"] for r in rows)
              for name in ("generation", "scoring", "forward", "optimisation")}
    return {"s_per_update": statistics.median(r["time/update_s"] for r in rows), **phases,
            "tokens_per_s": sum(r["val/response_length"] * batch for r in rows) / sum(r["time/update_s"] for r in rows),
            "peak_rss_mb": peak_rss_mb(), **({"peak_gpu_mb": peak_gpu_mb()} if device != "cpu" else {}),
            "precision": trainer.accelerator.mixed_precision,
            "trainable_params_m": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) / 1e6,
            "final_score": trainer.history.rows[-1]["objective/scores"],
            "scores": [r["objective/scores"] for r in trainer.history.rows],  # every update's, the first included
            "kl": [r["objective/kl"] for r in trainer.history.rows]}


def run_trl(updates: int, model: str) -> dict:
    """TRL 1.12's PPOTrainer (trl.experimental.ppo) on the same model and settings: policy, reference, value and
    reward models (value and reward: the policy's weights with a scalar head, the only reward kind TRL takes)."""
    import tempfile

    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf_lab.policy.models import load_policy

    policy, tokenizer = load_policy(model, device="cpu", dtype=torch.float32)
    ref, _ = load_policy(model, device="cpu", dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        policy.save_pretrained(tmp)
        value, reward = (AutoModelForSequenceClassification.from_pretrained(tmp, num_labels=1, dtype=torch.float32)
                         for _ in range(2))
    for m in (value, reward):
        m.config.pad_token_id = tokenizer.pad_token_id
    prompts = standard_prompts(tokenizer, BATCH * updates)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})
    args = PPOConfig(output_dir=tempfile.mkdtemp(prefix="bench_trl_ppo"), per_device_train_batch_size=BATCH,
                     gradient_accumulation_steps=1, num_ppo_epochs=EPOCHS, num_mini_batches=1,
                     total_episodes=BATCH * updates, response_length=NEW_TOKENS, temperature=TEMPERATURE, kl_coef=BETA,
                     missing_eos_penalty=EOS_PENALTY, stop_token="eos", learning_rate=1e-5, report_to=[],
                     save_strategy="no", logging_steps=1, num_sample_generations=0, use_cpu=True, bf16=False, seed=0)
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset, callbacks=[Stamp()])
    start = time.perf_counter()
    trainer.train()
    per_update = [b - a for a, b in zip([start] + stamps, stamps)][1:]
    s = statistics.median(per_update)
    return {"s_per_update": s, "tokens_per_s": BATCH * NEW_TOKENS / s, "peak_rss_mb": peak_rss_mb()}


def run_variant(variant: str, args) -> dict:
    """One variant in its own process (so that its peak resident memory is its own); its JSON figures."""
    env = {**os.environ, MALLOC_ENV: "0"} if "mmap" in variant.split("_") else None  # glibc's own malloc settings
    out = subprocess.run([sys.executable, __file__, "--variant", variant, "--updates", str(args.updates),
                          "--threads", str(args.threads), "--model", args.model, "--seed", str(args.seed),
                          "--device", args.device, "--batch", str(args.batch)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"variant {variant} failed")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{variant:>5}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in result.items() if not isinstance(v, list)),
          file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=5, help="updates per variant (the first is not counted)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="full,full_auto,lora,lora_auto,trl",
                        help="comma-separated: full or lora with optional _auto, _bf16, _eager, _mmap suffixes (see "
                             "run_lab), and trl")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the variants this many times, interleaved (full, lora, trl, full, ...), and report "
                             "medians: this machine's speed drifts by ±7 %% over minutes")
    parser.add_argument("--variant", help="run this one variant in this process and print its JSON")
    parser.add_argument("--model", default="smollm2-135m", help="policy (\"tiny\" for a smoke run of this script)")
    parser.add_argument("--seed", type=int, default=0, help="the lab's trainers' seed (sampling, shuffling)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the lab's variants only; TRL's runs on the CPU)")
    parser.add_argument("--batch", type=int, default=BATCH, help="prompts per update (the standard setting: 8)")
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.exit(2, f"ppo.py: error: --device {args.device}: no CUDA GPU here; leave it out to run on the CPU.\n")
    torch.set_num_threads(args.threads)
    if args.variant:
        result = (run_trl(args.updates, args.model) if args.variant == "trl" else
                  run_lab(args.variant, args.updates, args.model, args.seed, args.device, args.batch))
        print(json.dumps(result))
        return
    variants = args.variants.split(",")
    if "trl" in variants and importlib.util.find_spec("trl") is None:
        print("trl is not installed here: skipping the TRL side-by-side", file=sys.stderr)
        variants.remove("trl")
    runs = {variant: [] for variant in variants}
    for _ in range(args.repeats):
        for variant in variants:
            runs[variant].append(run_variant(variant, args))
    figures = {}
    for variant, results in runs.items():  # medians over the repeats
        figures.update({f"{variant}_{k}": round(statistics.median(r[k] for r in results), 3) for k in results[0]
                        if isinstance(results[0][k], (int, float))})
        figures.update({f"{variant}_{k}": results[0][k] for k in results[0] if isinstance(results[0][k], str)})
    if "trl" in runs:
        for variant in (v for v in variants if v != "trl"):
            figures[f"{variant}_speedup_vs_trl"] = round(figures["trl_s_per_update"] /
                                                         figures[f"{variant}_s_per_update"], 2)
            figures[f"{variant}_memory_ratio_vs_trl"] = round(figures[f"{variant}_peak_rss_mb"] /
                                                              figures["trl_peak_rss_mb"], 2)
            if args.repeats > 1:  # each repeat's time ratio (its variant run beside that repeat's TRL run)
                figures[f"{variant}_time_ratio_vs_trl_per_repeat"] = [
                    round(a["s_per_update"] / b["s_per_update"], 3) for a, b in zip(runs[variant], runs["trl"])]
    print(json.dumps({"machine": machine_info(), "model": args.model, "device": args.device, "batch": args.batch,
                      "threads": args.threads, "updates": args.updates,
                      "repeats": args.repeats, **figures}))


if __name__ == "__main__":
    main()
