"""DPO speed and memory on SmolLM2, rlhf_lab's DPOTrainer side by side with TRL's DPOTrainer in the same run.

Setting: SmolLM2-135M-Instruct, float32, CPU with 2 threads, full fine-tuning, batch 8 pairs, max length 128, β 0.1,
sigmoid loss. Pairs: chit-chat prompts with two replies sampled from the policy (32 new tokens, temperature 0.7),
made once and shared by every variant (or read from --pairs). Each variant runs in its own process (its peak resident
memory is its own); with --repeats the variants alternate (lab, trl, lab, trl, ...) and medians are reported, with the
1-minute load average (the machine is shared and noisy: compare figures from one run only).

What each figure includes:
- `*_pairs_per_s`: 8 / median seconds per optimiser step after the first (warm-up). rlhf_lab: policy forward and
  backward, gradient clipping, AdamW step, collation (its reference log-probs are precomputed, so not in it). TRL
  (default, precompute_ref_log_probs=False): end-to-end step intervals, including its reference forward, which runs
  inside every step, and its data loading and logging. `trl_precompute` precomputes like rlhf_lab.
- `*_pairs_per_s_with_ref`: all pairs / (wall time of the whole run): rlhf_lab: tokenising + reference pass + every
  step (the first included); TRL: `trainer.train()` (the first step included, the reference inside every step).
- `lab_ref_s`: rlhf_lab's up-front reference pass (and tokenising). `*_peak_rss_mb`: peak resident memory of the
  variant's process (model, reference copy, AdamW state, activations).
Ends with one JSON line.

    python bench/dpo.py [--steps 6] [--repeats 1] [--threads 2] [--variants lab,trl] [--pairs pairs.jsonl]
                        [--trl-python /tmp/trlenv/bin/python]
    python bench/dpo.py --variant lab --pairs pairs.jsonl    # one variant in this process (what the driver runs)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from rlhf_lab.core.machine import machine_info

BATCH, MAX_LENGTH, BETA, NEW_TOKENS, TEMPERATURE, MAX_PROMPT_TOKENS = 8, 128, 0.1, 32, 0.7, 24


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_pairs(path: str, n: int, model: str) -> None:
    """n pairs: two sampled replies per chit-chat prompt, the longer one chosen (the speed does not care)."""
    from rlhf_lab.policy.generation import SamplingConfig, generate
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts

    policy, tokenizer = load_policy(model, device="cpu", dtype=torch.float32)
    prompts = load_prompts("all", split="train", max_tokens=MAX_PROMPT_TOKENS, tokenizer=tokenizer, n=n, seed=0)
    batch = generate(policy, tokenizer, prompts, SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE),
                     n_per_prompt=2, seed=0, batch_size=32)
    with open(path, "w") as f:
        for i in range(0, len(batch), 2):
            a, b = batch.responses[i], batch.responses[i + 1]
            f.write(json.dumps({"prompt": batch.prompts[i], "chosen": max(a, b, key=len),
                                "rejected": min(a, b, key=len)}) + "\n")


def read_pairs(path: str):
    import pandas as pd

    return pd.read_json(path, lines=True)


def run_lab(pairs_path: str, steps: int, model: str, unpacked: bool = False) -> dict:
    """rlhf_lab's DPOTrainer; `unpacked` ("lab_unpacked"): each prompt's pass padded, its replies continuing from its
    cache, as before 2026-12-05's packed pass (`dpo_data.packed_pair_logps`)."""
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.train.dpo import DPOConfig, DPOTrainer

    if unpacked:
        import rlhf_lab.train.dpo_data as dpo_data

        dpo_data.can_attend_by_segment = lambda trunk: False

    policy, tokenizer = load_policy(model, device="cpu", dtype=torch.float32)
    pairs = read_pairs(pairs_path).head(BATCH * steps)
    trainer = DPOTrainer(policy, tokenizer, DPOConfig(beta=BETA, batch_size=BATCH, max_length=MAX_LENGTH,
                                                      learning_rate=1e-6, mixed_precision="no"), callbacks=[])
    start = time.perf_counter()
    data = trainer.prepare(pairs)
    ref_s = time.perf_counter() - start
    trainer.fit(data)
    rates = [r["time/pairs_per_s"] for r in trainer.history.rows[1:]]
    total = ref_s + sum(r["time/update_s"] for r in trainer.history.rows)
    return {"pairs_per_s": statistics.median(rates), "pairs_per_s_with_ref": len(pairs) / total, "ref_s": ref_s,
            "peak_rss_mb": peak_rss_mb(), "final_loss": trainer.history.rows[-1]["loss"]}


def run_trl(pairs_path: str, steps: int, model: str, precompute: bool) -> dict:
    """TRL's DPOTrainer at the same settings: full fine-tuning, a reference copy, float32 on the CPU."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from rlhf_lab.policy.models import load_policy

    policy, tokenizer = load_policy(model, device="cpu", dtype=torch.float32)
    tokenizer.padding_side = "right"
    pairs = read_pairs(pairs_path).head(BATCH * steps)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in pairs["prompt"]],
                                 "chosen": [[{"role": "assistant", "content": c}] for c in pairs["chosen"]],
                                 "rejected": [[{"role": "assistant", "content": r}] for r in pairs["rejected"]]})
    args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="bench_trl_dpo"), per_device_train_batch_size=BATCH,
                     gradient_accumulation_steps=1, max_length=MAX_LENGTH, beta=BETA, learning_rate=1e-6,
                     num_train_epochs=1, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, bf16=False,
                     seed=0, precompute_ref_log_probs=precompute, dataloader_num_workers=0)
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, *_, **__):
            stamps.append(["begin", time.perf_counter()])

        def on_step_end(self, *_, **__):
            stamps.append(["end", time.perf_counter()])

    trainer = DPOTrainer(model=policy, args=args, processing_class=tokenizer, train_dataset=dataset,
                         callbacks=[Stamp()])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    ends = [t for kind, t in stamps if kind == "end"]
    per_step = [b - a for a, b in zip(ends, ends[1:])]  # end to end: data loading included, as for rlhf_lab
    return {"pairs_per_s": BATCH / statistics.median(per_step), "pairs_per_s_with_ref": len(pairs) / total,
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per variant (the first not counted)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="lab,trl", help="comma-separated: lab, lab_unpacked, trl, trl_precompute")
    parser.add_argument("--trl-python", default=os.environ.get("TRL_PYTHON", "/tmp/trlenv/bin/python"),
                        help="a Python with trl and rlhf_lab installed (TRL is not a dependency of rlhf_lab)")
    parser.add_argument("--model", default="smollm2-135m", help="policy (\"tiny\" for a smoke run of this script)")
    parser.add_argument("--variant", help="run this one variant in this process and print its JSON")
    parser.add_argument("--pairs", help="JSONL of pairs (default: the driver samples them from the policy once)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the variants this many times, interleaved (lab, trl, lab, trl, ...); medians reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.variant:
        result = (run_lab(args.pairs, args.steps, args.model, args.variant == "lab_unpacked")
                  if args.variant.startswith("lab") else
                  run_trl(args.pairs, args.steps, args.model, precompute=args.variant == "trl_precompute"))
        print(json.dumps(result))
        return
    figures, runs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = args.pairs
        if pairs is None:
            pairs = os.path.join(tmp, "pairs.jsonl")
            make_pairs(pairs, BATCH * args.steps, args.model)
        loads = [os.getloadavg()[0]]
        for repeat in range(args.repeats):
            for variant in args.variants.split(","):
                python = sys.executable if variant.startswith("lab") else args.trl_python
                if not os.path.exists(python):
                    print(f"no TRL Python at {python}: skipping {variant}", file=sys.stderr)
                    continue
                out = subprocess.run([python, __file__, "--variant", variant, "--pairs", pairs, "--steps",
                                      str(args.steps), "--threads", str(args.threads), "--model", args.model],
                                     capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"variant {variant} failed")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                loads.append(os.getloadavg()[0])
                print(f"{variant:>14} #{repeat}: " + ", ".join(f"{k} {v:.3g}" for k, v in result.items())
                      + f" (load {loads[-1]:.1f})", file=sys.stderr)
                runs.setdefault(variant, []).append(result)
    for variant, results in runs.items():
        figures.update({f"{variant}_{k}": round(statistics.median(r[k] for r in results), 3) for k in results[0]})
    figures["load_avg_1min_median"] = round(statistics.median(loads), 2)
    for trl in ("trl", "trl_precompute"):
        if f"{trl}_pairs_per_s" in figures and "lab_pairs_per_s" in figures:
            figures[f"speedup_vs_{trl}"] = round(figures["lab_pairs_per_s"] / figures[f"{trl}_pairs_per_s"], 2)
            figures[f"speedup_with_ref_vs_{trl}"] = round(figures["lab_pairs_per_s_with_ref"] /
                                                          figures[f"{trl}_pairs_per_s_with_ref"], 2)
            figures[f"memory_ratio_vs_{trl}"] = round(figures["lab_peak_rss_mb"] / figures[f"{trl}_peak_rss_mb"], 2)
    print(json.dumps({"machine": machine_info(), "model": args.model, "threads": args.threads, "steps": args.steps,
                      "repeats": args.repeats,
                      "batch": BATCH,
                      "max_length": MAX_LENGTH, **figures}))


if __name__ == "__main__":
    main()
