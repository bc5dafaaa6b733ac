"""Generation speed at the standard setting: rlhf_lab.generate through model.generate (`decoder="hf"`) with the model's
own float32 weights ("lab") and at its default `decode_precision="auto"` ("lab_auto": a bf16 twin on a CPU with
native bf16), through the lean decoder of rlhf_lab.policy.decoder in float32 ("lab_lean") and at the default
precision ("lab_lean_auto", the lab's default path) vs a bare float32 model.generate call; the lab's default path with
torch.multinomial's own draw instead of `policy.multinomial.draw_one` ("lab_lean_auto_torch_draw": the same tokens,
the path before draw_one); the lean decoder's per-call weight refresh; its first pass over the prompts packed (the default: the shared chat-template start read
once) and padded, interleaved; how often its replies are the HF path's under the same seed; how far the twin's
replies are from the float32 policy (KL per reply); model load times.

Standard setting (shared/DESIGN.md): SmolLM2-135M-Instruct, float32, CPU with 2 threads, 8 prompts of at most 24 tokens,
left padded, 32 new tokens, temperature 0.7, stop at EOS. The five paths run interleaved in one process on the same
inputs and seeds (the machine is shared and noisy). Ends with one JSON line of figures.

    python bench/generate.py [--repeats 7] [--threads 2] [--skip-first-load]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from rlhf_lab.core.hf import position_ids
from rlhf_lab.core.machine import machine_info
from rlhf_lab.policy import decoder as lean_decoder
from rlhf_lab.policy.decoder import LeanDecoder
from rlhf_lab.policy.generation import (
    SamplingConfig,
    eos_token_ids,
    format_prompts,
    generate,
)
from rlhf_lab.policy.models import load_policy
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.policy.twin import decoding_dtype, decoding_model

LOAD_SNIPPET = ("import time; t0=time.perf_counter(); from rlhf_lab import load_policy; t1=time.perf_counter(); "
                "load_policy('smollm2-135m', device='cpu'); print(t1-t0, time.perf_counter()-t1)")


def time_load(cache: str | None) -> tuple[float, float]:
    """(seconds importing rlhf_lab/torch/transformers, seconds in load_policy) in a fresh process, with
    RLHF_LAB_CACHE=cache if given."""
    env = dict(os.environ, **({"RLHF_LAB_CACHE": cache} if cache else {}))
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], env=env, capture_output=True, text=True, check=True)
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


@torch.no_grad()
def twin_divergence(model, tokenizer, prompts, sampling, seeds: int = 4) -> dict:
    """How far replies sampled from the bf16 twin are from the float32 policy: KL(twin ‖ policy) per reply,
    estimated on the twin's own samples as the mean over replies of Σ_t (log p_twin − log p_policy) at the sampling
    temperature (k1, nats), and the largest per-token |Δ log p|; over `seeds` batches of the prompts."""
    twin, _ = decoding_model(model, "bfloat16")
    config = dataclasses.replace(sampling, decode_precision="bfloat16", decoder="hf")
    kl, worst = [], 0.0
    for seed in range(seeds):
        batch = generate(model, tokenizer, prompts, config, seed=seed)
        ids, mask = batch.query_response_ids, batch.query_response_mask
        n_prompt, tokens = batch.prompt_ids.shape[1], batch.response_ids

        def logp(m):
            logits = m(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
            logits = logits[:, n_prompt - 1:-1].float() / sampling.temperature
            return logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, R)

        delta = (logp(twin) - logp(model)) * batch.response_mask
        kl += delta.sum(1).tolist()
        worst = max(worst, float(delta.abs().max()))
    return {"twin_kl_nats_per_reply": round(statistics.mean(kl), 4),
            "twin_kl_sd_nats_per_reply": round(statistics.stdev(kl), 4),
            "twin_max_token_abs_dlogp": round(worst, 4)}


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

    replies = {}  # (path, seed) -> response ids

    def lab(seed: int, precision: str = "model", decoder: str = "hf", name: str = "lab") -> int:
        config = dataclasses.replace(sampling, decode_precision=precision, decoder=decoder)
        batch = generate(model, tokenizer, prompts, config, seed=seed)
        assert batch.sampling["decoded_by"] == ("lean" if decoder == "lean" else "hf")
        replies[name, seed] = batch.response_ids
        return int(batch.response_mask.sum())

    def torch_draw(seed: int) -> int:
        """The default path drawing with torch.multinomial itself (as before `draw_one`)."""
        mine = lean_decoder.draw_one
        lean_decoder.draw_one = lambda probs: torch.multinomial(probs, num_samples=1).squeeze(1)
        try:
            return lab(seed, precision="auto", decoder="lean", name="lab_lean_auto_torch_draw")
        finally:
            lean_decoder.draw_one = mine

    paths = {"lab": lab, "lab_auto": functools.partial(lab, precision="auto", name="lab_auto"),
             "lab_lean": functools.partial(lab, decoder="lean", name="lab_lean"),
             "lab_lean_auto": functools.partial(lab, precision="auto", decoder="lean", name="lab_lean_auto"),
             "lab_lean_auto_torch_draw": torch_draw, "bare": bare}
    for fn in paths.values():
        fn(0)  # warm-up (and the bf16 twin made)
    times = {name: [] for name in paths}
    tokens = {name: 0 for name in paths}
    for r in range(args.repeats):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))  # interleaved, alternating order
        for name in order:
            start = time.perf_counter()
            tokens[name] += paths[name](seed=r)
            times[name].append(time.perf_counter() - start)
    prefill = {True: [], False: []}  # the lean decoder's first pass over the prompts: packed (the default) or padded
    for r in range(args.repeats):
        for pack in ((True, False) if r % 2 == 0 else (False, True)):
            decoder = LeanDecoder(model, decoding_dtype(model, "auto"), pack_prompts=pack)
            start = time.perf_counter()
            decoder.start(enc["input_ids"], enc["attention_mask"], 32)
            prefill[pack].append(time.perf_counter() - start)
    refresh = []  # the lean decoder's per-call copy of the weights (fused, prepacked, rounded) at the default precision
    for _ in range(args.repeats):
        start = time.perf_counter()
        LeanDecoder(model, decoding_dtype(model, "auto"))
        refresh.append(time.perf_counter() - start)

    def same(a: str, b: str) -> float:
        """The fraction of replies of path a that are path b's under the same seed, token for token."""
        rows = [torch.equal(x, y) for r in range(args.repeats) for x, y in zip(replies[a, r], replies[b, r])]
        return round(sum(rows) / len(rows), 3)

    median = {name: statistics.median(t) for name, t in times.items()}
    figures.update({
        "lab_generate_s": round(median["lab"], 3),
        "lab_auto_generate_s": round(median["lab_auto"], 3),
        "bare_generate_s": round(median["bare"], 3),
        "lab_over_bare_ratio": round(median["lab"] / median["bare"], 3),
        "lab_auto_over_bare_ratio": round(median["lab_auto"] / median["bare"], 3),
        "lab_auto_over_bare_per_repeat": [round(a / b, 3) for a, b in zip(times["lab_auto"], times["bare"])],
        "lab_lean_generate_s": round(median["lab_lean"], 3),
        "lab_lean_auto_generate_s": round(median["lab_lean_auto"], 3),
        "lab_lean_over_bare_ratio": round(median["lab_lean"] / median["bare"], 3),
        "lab_lean_auto_over_bare_ratio": round(median["lab_lean_auto"] / median["bare"], 3),
        "lab_lean_auto_over_bare_per_repeat": [round(a / b, 3) for a, b in zip(times["lab_lean_auto"], times["bare"])],
        "lab_lean_auto_over_bare_median_per_repeat": round(statistics.median(
            a / b for a, b in zip(times["lab_lean_auto"], times["bare"])), 3),
        "lab_lean_auto_torch_draw_generate_s": round(median["lab_lean_auto_torch_draw"], 3),
        "draw_one_over_torch_draw_per_repeat": [round(a / b, 3) for a, b in zip(times["lab_lean_auto"],
                                                                                times["lab_lean_auto_torch_draw"])],
        "lean_refresh_s": round(statistics.median(refresh), 3),
        "lean_prefill_packed_s": round(statistics.median(prefill[True]), 3),
        "lean_prefill_padded_s": round(statistics.median(prefill[False]), 3),
        "lean_packed": LeanDecoder(model, decoding_dtype(model, "auto")).packed,
        "lean_same_replies_as_hf_float32": same("lab_lean", "lab"),
        "lean_same_replies_as_hf_auto": same("lab_lean_auto", "lab_auto"),
        "draw_one_same_replies_as_torch_draw": same("lab_lean_auto", "lab_lean_auto_torch_draw"),
        **{f"{name}_tokens_per_s": round(tokens[name] / sum(times[name]), 1) for name in paths},
        "decoded_in_auto": decoding_model(model, "auto")[1],
        **twin_divergence(model, tokenizer, prompts, sampling),
        "prompts": len(prompts), "max_new_tokens": 32, "threads": args.threads, "repeats": args.repeats,
    })
    for key, value in figures.items():
        print(f"{key:<34} {value}")
    print(json.dumps({"machine": machine_info(), "model": "smollm2-135m", **figures}))


if __name__ == "__main__":
    main()
