"""Generation speed at the standard setting, rlhf_lab.generate vs a bare model.generate call, and model load times.

Standard setting (shared/DESIGN.md): SmolLM2-135M-Instruct, float32, CPU with 2 threads, 8 prompts of at most 24 tokens,
left padded, 32 new tokens, temperature 0.7, stop at EOS. The two paths run interleaved in one process on the same
inputs and seeds (the machine is shared and noisy). Ends with one JSON line of figures.

    python bench/generate.py [--repeats 7] [--threads 2] [--skip-first-load]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from rlhf_lab.core.machine import machine_info
from rlhf_lab.policy.generation import (
    SamplingConfig,
    eos_token_ids,
    format_prompts,
    generate,
)
from rlhf_lab.policy.models import load_policy
from rlhf_lab.policy.prompts import load_prompts

LOAD_SNIPPET = ("import time; t0=time.perf_counter(); from rlhf_lab import load_policy; t1=time.perf_counter(); "
                "load_policy('smollm2-135m', device='cpu'); print(t1-t0, time.perf_counter()-t1)")


def time_load(cache: str | None) -> tuple[float, float]:
    """(seconds importing rlhf_lab/torch/transformers, seconds in load_policy) in a fresh process, with
    RLHF_LAB_CACHE=cache if given."""
    env = dict(os.environ, **({"RLHF_LAB_CACHE": cache} if cache else {}))
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], env=env, capture_output=True, text=True, check=True)
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-first-load", action="store_true", help="skip the (20 s) GGUF conversion timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    figures = {}
    with tempfile.TemporaryDirectory() as cache:
        cache = None if args.skip_first_load else cache
        if cache:
            figures["first_load_s"] = round(time_load(cache)[1], 2)
        else:
            time_load(None)  # make sure the default cache is built
        imports, load = time_load(cache)
        figures.update(cached_load_s=round(load, 2), import_s=round(imports, 2))

    model, tokenizer = load_policy("smollm2-135m", device="cpu", dtype=torch.float32)
    tokenizer_probe = load_prompts("all", split="train", max_tokens=24, tokenizer=tokenizer, n=64, seed=0)
    prompts = tokenizer_probe[:8]
    sampling = SamplingConfig(max_new_tokens=32, temperature=0.7)

    texts, _ = format_prompts(tokenizer, prompts, sampling)
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = eos_token_ids(model, tokenizer)

    def bare(seed: int) -> int:
        torch.manual_seed(seed)
        out = model.generate(**enc, max_new_tokens=32, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                             eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        return int((out[:, enc["input_ids"].shape[1]:] != tokenizer.pad_token_id).sum())

    def lab(seed: int) -> int:
        return int(generate(model, tokenizer, prompts, sampling, seed=seed).response_mask.sum())

    lab(0), bare(0)  # warm-up
    times = {"lab": [], "bare": []}
    tokens = {"lab": 0, "bare": 0}
    for r in range(args.repeats):
        for name, fn in (("lab", lab), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("lab", lab)):
            start = time.perf_counter()
            tokens[name] += fn(seed=r)
            times[name].append(time.perf_counter() - start)

    lab_s, bare_s = statistics.median(times["lab"]), statistics.median(times["bare"])
    figures.update({
        "lab_generate_s": round(lab_s, 3),
        "bare_generate_s": round(bare_s, 3),
        "lab_over_bare_ratio": round(lab_s / bare_s, 3),
        "lab_tokens_per_s": round(tokens["lab"] / sum(times["lab"]), 1),
        "bare_tokens_per_s": round(tokens["bare"] / sum(times["bare"]), 1),
        "prompts": len(prompts), "max_new_tokens": 32, "threads": args.threads, "repeats": args.repeats,
    })
    for key, value in figures.items():
        print(f"{key:<22} {value}")
    print(json.dumps({"machine": machine_info(), **figures}))


if __name__ == "__main__":
    main()
