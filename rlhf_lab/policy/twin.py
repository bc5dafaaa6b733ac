"""Sampling from a bfloat16 twin of a float32 policy, on a CPU that multiplies bfloat16 in hardware.

    model, precision = decoding_model(policy, "auto")   # policy's bf16 twin on an AMX/AVX-512-BF16 CPU, else policy

Token-by-token decoding streams every weight once per token; bfloat16 halves those bytes. The gain measured is small:
8 × 32 tokens from SmolLM2-135M in 2.98 s against 3.00 s in float32 (`bench/generate.py`, 2026-12), and 3.94 s
against 4.47 s for a policy a bf16 trainer switched to eager attention (the twin decodes with SDPA): the thin products
of decoding stay far from the memory bandwidth, in either precision. The twin is the same network with its weights
rounded to bfloat16 (8 significant bits), copied from the policy at every call (~0.06 s), so it follows training;
the policy itself, its optimiser and everything that computes log-probabilities stay as they were. Replies are
therefore sampled from the policy rounded to bf16: `bench/generate.py` measures how far that is from the float32
policy (KL on the twin's own replies: −0.025 ± 0.246 nats per reply, inside its noise; largest per-token
|Δ log p| 0.35). Buffers (the rotary frequencies) keep their float32 values.
"""

from __future__ import annotations

import copy
import weakref

import torch
import torch.nn as nn

from rlhf_lab.core.machine import native_bf16

__all__ = ["PRECISIONS", "decoding_dtype", "decoding_model"]

PRECISIONS = ("auto", "model", "bfloat16")
"""auto: a bfloat16 twin where it is faster (float32 model on a CPU with native bf16), else the model itself;
model: always the model's own weights; bfloat16: always a bfloat16 twin of a float32 model."""

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its bf16 twin


def decoding_dtype(model: nn.Module, precision: str = "auto") -> torch.dtype:
    """The dtype `decoding_model` samples `model` in, for `precision` in PRECISIONS, without making a twin:
    bfloat16 for a float32 model on a CPU (always for "bfloat16", where the CPU has native bf16 for "auto") unless
    it is a peft (LoRA) model; else the model's own dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"decode_precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    param = next(model.parameters())
    wanted = precision == "bfloat16" or (precision == "auto" and native_bf16())
    if not (wanted and param.dtype == torch.float32 and param.device.type == "cpu"):
        return param.dtype
    if hasattr(model, "peft_config") or any("lora_" in name for name, _ in model.named_parameters()):
        return param.dtype
    return torch.bfloat16


def decoding_model(model: nn.Module, precision: str = "auto") -> tuple[nn.Module, str]:
    """The module to sample from, and the precision it samples in ("float32", "bfloat16", ...), for `precision`
    in PRECISIONS. A twin is made once per model and refreshed from its weights at each call (~0.06 s for 135 M
    parameters); a peft (LoRA) model, a model on a GPU or one already in 16 bits samples with its own weights."""
    dtype = decoding_dtype(model, precision)
    if dtype == next(model.parameters()).dtype:
        return model, str(dtype).removeprefix("torch.")
    names = tuple(name for name, _ in model.named_parameters())
    twin = _TWINS.get(model)
    if twin is None or twin.parameter_names != names:  # new, or the model's layers changed since
        twin = _TWINS[model] = _make_twin(model)
        twin.parameter_names = names
    _refresh(twin, model)
    return twin, "bfloat16"


def _make_twin(model: nn.Module) -> nn.Module:
    """A deep copy with its parameters (not buffers) in bfloat16; tied weights stay tied (one Parameter)."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(False)
        p.data = p.data.to(torch.bfloat16)
    if getattr(getattr(twin, "config", None), "_attn_implementation", None) == "eager":
        try:  # a bf16 trainer switched the policy to eager attention for its backward; decoding has none
            twin.set_attn_implementation("sdpa")
        except (AttributeError, ValueError, ImportError):
            pass
    return twin.eval()


@torch.no_grad()
def _refresh(twin: nn.Module, model: nn.Module) -> None:
    """Copy the model's current weights (rounded to bfloat16) and generation settings into the twin."""
    for t, p in zip(twin.parameters(), model.parameters(), strict=True):
        t.copy_(p)
    if hasattr(model, "generation_config"):
        twin.generation_config = model.generation_config
