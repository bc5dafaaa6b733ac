"""Reward-model training speed: preference pairs per second and peak memory, MiniLM and SmolLM2 backbones.

Setting: CPU with 2 threads, batch 16 pairs, max length 128, chit-chat prompts with replies of 1-80 words; each trainer
in float32 and in bf16 autocast ("_bf16": rlhf_lab's default `mixed_precision="auto"` on a CPU with native bf16, and
TRL's `bf16=True`); "lab_bf16_plain" is rlhf_lab's bf16 with the maths of before 2026-12-04 (dropout on, each sequence
of a pair its own row); "lab_unpacked" is rlhf_lab's float32 path with `pack_rows=False` (MiniLM's sequences each their
own row, padded to the batch's longest, as before 2026-12-05); "lab_rows" packs them several per row under a mask
(before 2026-12-05's one row with attention sequence by sequence); "lab_sdpa" runs that attention through SDPA's CPU
kernel (before 2026-12-06's two products around a softmax, `packed_attention.attend_by_products`). Each measurement runs
in a fresh process (so peak resident memory is its own). Throughput counts the optimiser steps (collate, forward,
backward, update) after a first warm-up step, timed the same way for both trainers. Where `trl` is importable, TRL's
RewardTrainer (AutoModelForSequenceClassification, same data, batch, length, no gradient checkpointing) runs beside it,
interleaved; otherwise the comparison is skipped. Ends with one JSON line of figures.

    python bench/reward.py [--steps 6] [--repeats 1] [--threads 2] [--backbones minilm,smollm2-135m]
                           [--impls lab,trl]   (default: every one; on a CPU without native bf16, "lab" is the default
                                                path and the bf16 ones are emulated)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import resource
import statistics
import subprocess
import sys
import time

import pandas as pd
import torch

from rlhf_lab.core.machine import machine_info
from rlhf_lab.policy.prompts import load_prompts

BATCH, MAX_LENGTH = 16, 128
REPLIES = [
    "Ok.", "Sure, why not?", "Thanks for asking! I am doing well, and I hope you are too.",
    "I don't know. Maybe. It depends on the day, the weather and what my friends are doing.",
    "That is a stupid question and I hate answering it.",
    "Well, this is something people discuss a lot, and everyone has an opinion about it. " * 4,
    "Yes yes yes yes yes yes yes yes yes yes yes yes.",
    "Let me tell you a long story about my weekend: I went hiking, then cooked dinner, then read a book. " * 3,
]


def make_pairs(n: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    prompts = load_prompts("all", max_words=24, n=n, seed=seed)
    rows = [dict(zip(("chosen", "rejected"), rng.sample(REPLIES, 2)), prompt=p) for p in prompts]
    return pd.DataFrame(rows)[["prompt", "chosen", "rejected"]]


def lab_step_seconds(backbone: str, pairs: pd.DataFrame, bf16: bool = False, plain: bool = False,
                     pack: bool = True, rows: bool = False, sdpa: bool = False) -> list[float]:
    """Seconds of each optimiser step of RewardModel.fit (from its history): float32, or at the default
    `mixed_precision="auto"` (bf16 autocast on a CPU with native bf16) when `bf16`; `plain`: the maths before
    2026-12-04's defaults (the backbone's dropout on, each sequence of a pair its own row); `pack`: the encoder's
    sequences packed (`pack_rows`); `rows` ("lab_rows"): packed several per row under a mask, as before 2026-12-05's
    one row with attention sequence by sequence (`core.packed_attention`); `sdpa` ("lab_sdpa"): that attention
    through SDPA's CPU kernel, as before 2026-12-06."""
    import rlhf_lab.core.packed_attention as packed_attention
    import rlhf_lab.reward.model as reward_model
    from rlhf_lab.reward.model import RewardConfig, RewardModel

    if rows:
        reward_model.can_attend_by_segment = lambda backbone: False
    if sdpa:
        packed_attention.attend_by_products = packed_attention.attend_by_sdpa

    config = RewardConfig(backbone=backbone, batch_size=BATCH, max_length=MAX_LENGTH, val_fraction=0.0,
                          normalize_sample=1, mixed_precision="auto" if bf16 else "no", dropout=plain,
                          share_prompt=not plain, pack_rows=pack and not plain)
    return [h["perf/step_s"] for h in RewardModel(config).fit(pairs, progress=False).history_]


def trl_step_seconds(backbone: str, pairs: pd.DataFrame, bf16: bool = False) -> list[float]:
    """Seconds of each optimiser step of TRL's RewardTrainer.train(), timed by a callback; float32, or its
    `bf16=True` (autocast, on the CPU too) when `bf16`."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl import RewardConfig, RewardTrainer

    from rlhf_lab.policy.models import cache_dir, load_policy, prepare_tokenizer
    from rlhf_lab.reward.network import MINILM, minilm_dir

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    if backbone == MINILM:
        path = minilm_dir()
    else:
        load_policy(backbone, device="cpu")  # makes sure the safetensors copy is in the cache
        path = cache_dir() / "models" / backbone
    tokenizer = AutoTokenizer.from_pretrained(path)
    if backbone == MINILM:
        tokenizer.eos_token = tokenizer.sep_token  # TRL appends EOS to every reply; BERT's closing token is [SEP]
    else:
        tokenizer = prepare_tokenizer(tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(output_dir="/tmp/rlhf_lab_bench_trl", per_device_train_batch_size=BATCH,
                        max_length=MAX_LENGTH, num_train_epochs=1, learning_rate=1e-4, lr_scheduler_type="linear",
                        gradient_checkpointing=False, bf16=bf16, fp16=False, use_cpu=True, report_to=[],
                        save_strategy="no", logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    timer = StepTimer()
    if backbone != MINILM:  # conversational rows: TRL applies the chat template, as rlhf_lab's causal reward model does
        pairs = pd.DataFrame({"prompt": [[{"role": "user", "content": p}] for p in pairs["prompt"]],
                              "chosen": [[{"role": "assistant", "content": c}] for c in pairs["chosen"]],
                              "rejected": [[{"role": "assistant", "content": r}] for r in pairs["rejected"]]})
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_pandas(pairs),
                            processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    return timer.seconds


def child(impl: str, backbone: str, steps: int, threads: int) -> None:
    """Measure one implementation on one backbone and print {"pairs_per_s", "peak_rss_mb"} as JSON.

    pairs/s = 16 · steps / (time of steps 2 .. steps + 1): the first step (warm-up) is left out."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pairs, bf16 = make_pairs(BATCH * (1 + steps)), "bf16" in impl
    step_seconds = (lab_step_seconds(backbone, pairs, bf16, plain=impl.endswith("plain"),
                                     pack=not impl.endswith("unpacked"), rows=impl.endswith("rows"),
                                     sdpa=impl.endswith("sdpa"))
                    if impl.startswith("lab")
                    else trl_step_seconds(backbone, pairs, bf16))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps({"pairs_per_s": BATCH * steps / sum(step_seconds[1:]), "peak_rss_mb": peak_mb}))


def run_child(impl: str, backbone: str, steps: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", f"{impl}:{backbone}", "--steps", str(steps),
                          "--threads", str(threads)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} on {backbone} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimiser steps per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats (figures: medians)")
    parser.add_argument("--backbones", default="minilm,smollm2-135m")
    parser.add_argument("--impls", default="lab,lab_bf16,lab_bf16_plain,trl,trl_bf16",
                        help="trainers to run (trl ones only where trl is installed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, backbone = args.child.split(":", 1)
        return child(impl, backbone, args.steps, args.threads)

    asked = args.impls.split(",")
    impls = [impl for impl in asked if not impl.startswith("trl")]
    if importlib.util.find_spec("trl") is not None:
        impls += [impl for impl in asked if impl.startswith("trl")]
    else:
        print("TRL comparison skipped: trl is not installed in this environment "
              "(install trl and datasets in a separate environment to compare).")
    figures = {"batch_pairs": BATCH, "max_length_tokens": MAX_LENGTH, "threads": args.threads,
               "timed_steps": args.steps, "repeats": args.repeats}
    for backbone in args.backbones.split(","):
        key = "smollm2" if backbone.startswith("smollm2") else backbone.replace("-", "_")
        runs = {impl: [] for impl in impls}
        for repeat in range(args.repeats):
            for impl in impls:  # interleaved per backbone and repeat: the machine is shared and noisy
                result = run_child(impl, backbone, args.steps, args.threads)
                runs[impl].append(result)
                print(f"{impl:<14} {backbone:<14} {result['pairs_per_s']:8.2f} pairs/s   "
                      f"peak RSS {result['peak_rss_mb']:8.1f} MB   (repeat {repeat + 1})")
        for impl, results in runs.items():
            prefix = {"lab": key, "lab_bf16": f"{key}_bf16", "lab_bf16_plain": f"{key}_bf16_plain", "trl": f"trl_{key}",
                      "trl_bf16": f"trl_{key}_bf16", "lab_unpacked": f"{key}_unpacked",
                      "lab_rows": f"{key}_rows", "lab_sdpa": f"{key}_sdpa"}[impl]
            figures[f"{prefix}_pairs_per_s"] = round(statistics.median(r["pairs_per_s"] for r in results), 2)
            figures[f"{prefix}_peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in results), 1)
        if {"lab", "trl"} <= set(impls):
            figures[f"{key}_lab_over_trl_speed"] = round(figures[f"{key}_pairs_per_s"] /
                                                         figures[f"trl_{key}_pairs_per_s"], 3)
            figures[f"{key}_lab_over_trl_each_repeat"] = [round(runs["lab"][i]["pairs_per_s"] /
                                                                runs["trl"][i]["pairs_per_s"], 3)
                                                          for i in range(args.repeats)]
        if {"lab_bf16", "trl", "trl_bf16"} <= set(impls):
            best_trl = max(figures[f"trl_{key}_pairs_per_s"], figures[f"trl_{key}_bf16_pairs_per_s"])
            figures[f"{key}_lab_bf16_over_best_trl_speed"] = round(figures[f"{key}_bf16_pairs_per_s"] / best_trl, 3)
            figures[f"{key}_lab_bf16_over_best_trl_each_repeat"] = [  # the same repeat's runs, side by side
                round(runs["lab_bf16"][i]["pairs_per_s"] / max(runs["trl"][i]["pairs_per_s"],
                                                              runs["trl_bf16"][i]["pairs_per_s"]), 3)
                for i in range(args.repeats)]
    print(json.dumps({"machine": machine_info(), "models": args.backbones.split(","), **figures}))


if __name__ == "__main__":
    main()
