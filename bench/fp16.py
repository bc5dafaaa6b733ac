"""SmolLM2 in fp16 autocast with loss scaling, what `mixed_precision="auto"` computes in on an older GPU (a Colab T4).

Numerics, not speed: fp16 overflows above 65504, and SmolLM2's residual stream holds a few large values (its
"massive activations"). On a GPU (`--device cuda`) accelerate builds fp16's autocast and loss scaler itself; on a CPU
this script hands accelerate the CPU's fp16 autocast and torch's CPU GradScaler (the class it uses on a GPU), so the
same arithmetic runs through the same code.

1. A forward pass over `--replies` sampled replies (T 0.7, 32 new tokens) in float32 and in fp16 autocast: the largest
   absolute value leaving any decoder layer and any linear layer (what autocast writes in fp16), whether every logit
   is finite, and the per-token log-prob difference.
2. `--updates` PPO updates at the standard setting (bench/ppo.py's: batch 8, 4 epochs, lr 1e-5, β 0.05, gold reward)
   in fp16 and in float32 from the same seed: each update's score, KL and losses, and the final loss scale (65536
   when no step overflowed; halved at each skipped step).

    python bench/fp16.py [--updates 4] [--replies 16] [--device cpu|cuda] [--threads 2]

Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from rlhf_lab.core.machine import machine_info

LINEAR_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def give_accelerate_fp16_on_cpu() -> None:
    """On a CPU, an Accelerator made with mixed_precision="fp16" gets the CPU's fp16 autocast and a GradScaler, and
    the trainers' "fp16" is let through (on a GPU both are accelerate's and the lab's own)."""
    from accelerate import Accelerator

    import rlhf_lab.core.hf as hf

    real_init, real_resolve = Accelerator.__init__, hf.resolve_precision

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self.state.mixed_precision == "fp16" and self.device.type == "cpu":
            self.native_amp, self.scaler = True, torch.amp.GradScaler("cpu")

    Accelerator.__init__ = init
    hf.resolve_precision = lambda precision, device, deepspeed=False: \
        "fp16" if precision == "fp16" else real_resolve(precision, device, deepspeed)


def forward_ranges(model: str, device: str, replies: int) -> dict:
    """Step 1: largest activations and log-prob differences, float32 against fp16 autocast."""
    from rlhf_lab.policy.generation import SamplingConfig, generate
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts

    policy, tokenizer = load_policy(model, device=device, dtype=torch.float32)
    batch = generate(policy, tokenizer, load_prompts("all", split="train", n=replies, seed=0),
                     SamplingConfig(max_new_tokens=32, temperature=0.7), seed=0)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                           tokenize=False) for p, r in zip(batch.prompts, batch.responses)]
    encoded = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    largest: dict[str, float] = {}

    def record(kind: str):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            largest[kind] = max(largest.get(kind, 0.0), float(out.detach().abs().float().max()))
        return hook

    for name, module in policy.named_modules():
        if name.startswith("model.layers.") and name.count(".") == 2:
            module.register_forward_hook(record("layer"))
        elif name.endswith(LINEAR_SUFFIXES):
            module.register_forward_hook(record("linear"))
    figures = {}
    logprobs = {}
    for precision in ("float32", "fp16"):
        largest.clear()
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.float16,
                                             enabled=precision == "fp16"):
            logits = policy(**encoded).logits
        mask = encoded.attention_mask.bool()
        figures[f"{precision}_logits_dtype"] = str(logits.dtype).removeprefix("torch.")
        figures[f"{precision}_logits_finite"] = bool(torch.isfinite(logits[mask]).all())
        figures[f"{precision}_max_abs_layer_output"] = round(largest["layer"], 1)
        figures[f"{precision}_max_abs_linear_output"] = round(largest["linear"], 1)
        ids = encoded.input_ids[:, 1:]
        token_logprobs = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, ids[..., None])[..., 0]
        logprobs[precision] = token_logprobs[mask[:, 1:]]
    diff = (logprobs["float32"] - logprobs["fp16"]).abs()
    return {**figures, "fp16_headroom_x": round(65504 / figures["fp16_max_abs_linear_output"], 2),
            "token_logprob_max_abs_diff": round(float(diff.max()), 4),
            "token_logprob_mean_abs_diff": round(float(diff.mean()), 5), "tokens": int(diff.numel())}


def ppo_updates(model: str, device: str, updates: int, precision: str) -> dict:
    """Step 2: PPO at bench/ppo.py's standard setting in `precision` ("fp16" or "no")."""
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    policy, tokenizer = load_policy(model, device=device, dtype=torch.float32)
    config = PPOConfig(learning_rate=1e-5, batch_size=8, ppo_epochs=4, kl_coef=0.05, mixed_precision=precision, seed=0,
                       log_samples_every=0, sampling=SamplingConfig(max_new_tokens=32, temperature=0.7))
    trainer = PPOTrainer(policy, tokenizer, "gold", config, callbacks=[])
    trainer.train(load_prompts("all", split="train", n=8 * updates, seed=0), updates)
    scaler = trainer.accelerator.scaler
    keys = ("objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg")
    return {"precision": trainer.accelerator.mixed_precision,
            "final_loss_scale": scaler.get_scale() if scaler is not None else None,
            **{key.split("/")[1]: [round(r[key], 4) for r in trainer.history.rows] for key in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--replies", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.exit(2, f"fp16.py: error: --device {args.device}: no CUDA GPU here; leave it out to run on the CPU.\n")
    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        give_accelerate_fp16_on_cpu()
    forward = forward_ranges(args.model, args.device, args.replies)
    print(json.dumps(forward), file=sys.stderr)
    runs = {}
    for precision in ("fp16", "no"):
        runs[precision] = ppo_updates(args.model, args.device, args.updates, precision)
        print(json.dumps(runs[precision]), file=sys.stderr)
    print(json.dumps({"machine": machine_info(), "model": args.model, "device": args.device, "updates": args.updates,
                      **forward, **{f"ppo_{name}_{k}": v for name, run in (("fp16", runs["fp16"]),
                                                                            ("float32", runs["no"]))
                                    for k, v in run.items()}}))


if __name__ == "__main__":
    main()
