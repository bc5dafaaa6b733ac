"""Hugging Face plumbing every trainer shares: the causal LM inside a wrapper, the KV-cache argument, position ids
under left padding, dropout off, the accelerator and the optimiser."""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn as nn
from accelerate import Accelerator

from rlhf_lab.core.launch import honour_launch, launched_deepspeed, launched_on_cpu
from rlhf_lab.core.machine import gpu_native_bf16, native_bf16
from rlhf_lab.core.memory import reuse_freed_memory

__all__ = ["causal_lm", "cache_argument", "position_ids", "left_padding", "shared_prefix_length", "disable_dropout",
           "bf16_compute", "resolve_precision", "eager_attention_for_cpu_bf16", "switch_attention", "make_accelerator",
           "adamw"]


def causal_lm(model: nn.Module) -> nn.Module:
    """The Hugging Face causal LM inside a (possibly peft-wrapped) policy."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _cache_argument(trunk_type: type) -> str:
    return "cache" if "cache" in inspect.signature(trunk_type.forward).parameters else "past_key_values"


def cache_argument(trunk: nn.Module) -> str:
    """The name a trunk's forward takes its KV cache under: "cache" (transformers ≥ 5.2x) or "past_key_values"
    (looked up once per model class)."""
    return _cache_argument(type(trunk))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: cumsum(mask) − 1, clamped at 0. (B, T) -> (B, T).

    With these a left- or right-padded row is read exactly as it would be alone (PPO checklist 1)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def left_padding(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) how many masked columns each row starts with."""
    return (attention_mask.long().cumsum(dim=1) == 0).sum(dim=1)


def shared_prefix_length(input_ids, attention_mask, n_prompt: int) -> int:
    """How many leading prompt tokens (after each row's left padding) all rows have in common, leaving every row at
    least one prompt token of its own; 0 for a single row or prompts that are not left padded."""
    prompt_mask = attention_mask[:, :n_prompt].bool()  # (B, P)
    if len(input_ids) < 2 or not torch.equal(prompt_mask.cummax(dim=1).values, prompt_mask):
        return 0
    pads = left_padding(attention_mask)  # (B,)
    longest = int((n_prompt - pads).min()) - 1
    if longest < 1:
        return 0
    columns = pads[:, None] + torch.arange(longest, device=input_ids.device)  # (B, longest)
    tokens = input_ids.gather(1, columns)
    return int((tokens == tokens[:1]).all(dim=0).long().cumprod(dim=0).sum())


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability to 0, in modules and configs, so train mode samples no masks (checklist 6)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout", "hidden_dropout", "attn_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
        config = getattr(module, "config", None)
        for name, value in (vars(config).items() if config is not None and hasattr(config, "__dict__") else []):
            if "dropout" in name and isinstance(value, float):
                setattr(config, name, 0.0)
    return model


def bf16_compute(mixed_precision: str, device: torch.device | str) -> bool:
    """Whether `mixed_precision` ("no", "bf16", "auto") means bf16 autocast on `device`: "auto" is bf16 on a GPU
    that multiplies bf16 in hardware (`gpu_native_bf16`: Ampere and newer) or on a CPU that does (`native_bf16`),
    float32 elsewhere."""
    if mixed_precision != "auto":
        return mixed_precision == "bf16"
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_native_bf16()
    return device.type == "cpu" and native_bf16()


def resolve_precision(mixed_precision: str, device: torch.device | str, deepspeed: bool = False) -> str:
    """The trainers' compute precision for accelerate, "no", "bf16" or "fp16", from a config's "auto", "no", "bf16"
    or "fp16". "auto": bf16 where `bf16_compute` says so (not under DeepSpeed on a CPU, whose bf16 is slower there);
    on an older GPU (a Colab T4: bf16 only emulated) fp16 autocast with dynamic loss scaling, not under DeepSpeed
    (float32 there); float32 elsewhere. "fp16" needs a CUDA GPU and no DeepSpeed: refused in one line otherwise
    (accelerate would silently compute in float32 on a CPU)."""
    device = torch.device(device)
    if mixed_precision == "fp16" and (device.type != "cuda" or deepspeed):
        raise ValueError("mixed_precision='fp16' (float16 autocast with loss scaling) needs a CUDA GPU and no "
                         f"DeepSpeed; here ({device.type}{', DeepSpeed' if deepspeed else ''}) use 'auto', 'bf16' "
                         "or 'no'.")
    if mixed_precision != "auto":
        return mixed_precision
    if bf16_compute("auto", device) and not (deepspeed and device.type == "cpu"):
        return "bf16"
    return "fp16" if device.type == "cuda" and not deepspeed else "no"


def eager_attention_for_cpu_bf16(accelerator: Accelerator, *models: nn.Module | None) -> None:
    """Under bf16 autocast on a CPU, switch each model from PyTorch's SDPA attention to transformers' eager kernels.

    SDPA's CPU backward in bf16 is slow (12 ms a layer for 8 × 56 tokens in SmolLM2, against 2 ms in float32); with
    the eager kernels a PPO update at the standard setting took 12.7 s instead of 15.3 s (optimisation 7.7 s instead
    of 10.0 s; `bench/ppo.py`, variants full_auto_eager and full_auto, 2026-12). The same maths, rounded differently.
    Models without a choice of attention (or not on SDPA) are left as they are."""
    if accelerator.mixed_precision != "bf16" or accelerator.device.type != "cpu":
        return
    for model in models:
        if model is not None:
            switch_attention(causal_lm(model), "sdpa", "eager")


def switch_attention(model: nn.Module, old: str, new: str) -> bool:
    """Switch a transformers model's attention kernels from `old` to `new` ("sdpa", "eager"); False (nothing done)
    when it runs other kernels or has no choice."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != old or not hasattr(model, "set_attn_implementation"):
        return False
    model.set_attn_implementation(new)
    return True


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator; in a single process a trainer may change the mixed precision that an earlier one set
    (accelerate keeps it in a process-wide state, which would otherwise refuse: a notebook rerun with a new config).
    "auto" (`resolve_precision`): bf16 on a GPU or CPU that multiplies bf16 in hardware (on a CPU `native_bf16`:
    AVX-512 BF16 or AMX, where a PPO update's training runs about 1.35× faster: bench/results/speed_cpu; not under
    DeepSpeed on a CPU), fp16 with loss scaling on an older GPU (a T4), else "no". Weights, gradients and optimiser
    state stay float32 either way; bf16 or fp16 is the autocast compute (under DeepSpeed: DeepSpeed's bf16, its
    weights in bf16 and its optimiser's master copy in float32). Under fp16 a step whose gradients overflowed is
    skipped and the loss scale lowered (`train.deepspeed_engine.optimizer_step`).

    Under a launcher (torchrun, `accelerate launch --config_file configs/accelerate/<x>.yaml`) it runs the engine the
    launch describes, on a CPU too (gloo; FSDP2 included), or refuses in one line (`core.launch.honour_launch`).
    On a CPU, glibc's malloc is set to reuse freed large blocks (`core.memory.reuse_freed_memory`)."""
    deepspeed = launched_deepspeed()
    cpu = launched_on_cpu() and not deepspeed
    device = "cpu" if cpu else "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() \
        else "cpu"
    mixed_precision = resolve_precision(mixed_precision, device, deepspeed)
    try:
        accelerator = honour_launch(Accelerator(mixed_precision=mixed_precision, cpu=cpu))
    except ValueError:
        from accelerate.state import AcceleratorState, PartialState

        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        accelerator = honour_launch(Accelerator(mixed_precision=mixed_precision, cpu=cpu))
    if accelerator.device.type == "cpu":
        reuse_freed_memory()
    return accelerator


def adamw(params, learning_rate: float, eps: float = 1e-5, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW (defaults: ε = 1e-5, no weight decay; `params` may be parameter groups with their own weight decay),
    fused where the device supports it (about 5× faster steps on CPU)."""
    try:
        return torch.optim.AdamW(params, lr=learning_rate, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=learning_rate, eps=eps, weight_decay=weight_decay)
