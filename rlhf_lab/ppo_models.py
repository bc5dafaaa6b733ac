"""The models PPO trains: the policy with a value head (on its trunk or a separate one), LoRA, dropout off, and the
accelerate/optimiser plumbing around them. Used by `ppo.PPOTrainer`."""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator

if TYPE_CHECKING:
    from .ppo import LoraSettings

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


def _causal_lm(policy: nn.Module) -> nn.Module:
    """The Hugging Face causal LM inside a (possibly peft-wrapped) policy."""
    return policy.get_base_model() if hasattr(policy, "get_base_model") else policy


def response_hidden(trunk: nn.Module, input_ids, attention_mask, n_prompt: int) -> torch.Tensor:
    """Last hidden states at the positions that predict each response token: (B, P+R) -> (B, R, D).

    Position ids count real tokens only (cumsum(mask) − 1, clamped at 0), so a left-padded row is read exactly as it
    would be alone (checklist 1).
    """
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, P+R)
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).last_hidden_state  # (B, P+R, D)
    return hidden[:, n_prompt - 1:-1]  # (B, R, D)


def response_logits(lm: nn.Module, input_ids, attention_mask, n_prompt: int) -> torch.Tensor:
    """Logits of the response tokens only (the 49k-wide output layer skips the prompt): (B, P+R) -> (B, R, V)."""
    return lm.get_output_embeddings()(response_hidden(lm.base_model, input_ids, attention_mask, n_prompt))


class PolicyAndValue(nn.Module):
    """The policy and its value function in one module (what the optimiser and accelerate see).

    forward(input_ids (B, P+R), attention_mask (B, P+R), n_prompt) -> (logits (B, R, V), values (B, R)), where
    values[:, t] estimates the return from the state before response token t.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None, value_head: nn.Linear | None = None):
        super().__init__()
        self.policy, self.critic = policy, critic
        lm = _causal_lm(policy)
        self.value_head = nn.Linear(lm.config.hidden_size, 1, dtype=torch.float32,
                                    device=lm.get_output_embeddings().weight.device)
        nn.init.zeros_(self.value_head.weight)  # V ≡ 0 at the start (checklist 6), unless a head is given
        nn.init.zeros_(self.value_head.bias)
        if value_head is not None:
            self.value_head.load_state_dict(value_head.state_dict())

    def forward(self, input_ids, attention_mask, n_prompt: int):
        lm = _causal_lm(self.policy)
        hidden = response_hidden(lm.base_model, input_ids, attention_mask, n_prompt)  # (B, R, D)
        logits = lm.get_output_embeddings()(hidden)  # (B, R, V)
        if self.critic is not None:
            hidden = response_hidden(self.critic, input_ids, attention_mask, n_prompt)
        values = self.value_head(hidden.float()).squeeze(-1)  # (B, R)
        return logits, values


def _apply_lora(policy: nn.Module, lora: LoraSettings) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(policy, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))


def policy_and_reference(policy: nn.Module, lora: LoraSettings | None, ref_policy: nn.Module | None, device):
    """(policy, reference) for a trainer that keeps its policy near a reference (PPO, RLOO, DPO).

    Full fine-tuning: the reference is `ref_policy` or a frozen copy of `policy` taken now, dropout off, on `device`.
    LoRA: `policy` is wrapped in place with peft adapters and the reference is None: it is the policy with its
    adapters disabled (`reference_model`), so one copy of the weights serves both.
    """
    if lora is None:
        ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
        return _trainable_in_float32(policy), disable_dropout(ref_policy).eval().requires_grad_(False).to(device)
    if ref_policy is not None:
        raise ValueError("With LoRA the reference is the policy with its adapters disabled: do not pass ref_policy.")
    return _trainable_in_float32(_apply_lora(policy, lora)), None


def _trainable_in_float32(model: nn.Module) -> nn.Module:
    """Keep every trainable weight in float32 (bfloat16 compute comes from autocast, `mixed_precision`).

    A policy loaded in bfloat16 (the GPU default) would otherwise lose its updates to rounding: bfloat16 keeps ~3
    significant digits, so a step of lr = 1e-5 on a weight of 0.05 (a relative change of 2e-4) rounds away."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
    return model


@contextlib.contextmanager
def reference_model(policy: nn.Module, ref_policy: nn.Module | None):
    """The reference causal LM: `ref_policy`, or (LoRA, ref_policy None) `policy` with its adapters disabled."""
    if ref_policy is not None:
        yield _causal_lm(ref_policy)
        return
    with policy.disable_adapter():
        yield _causal_lm(policy)


def _accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator; in a single process a trainer may change the mixed precision that an earlier one set
    (accelerate keeps it in a process-wide state, which would otherwise refuse: a notebook rerun with a new config).
    "auto": bf16 on a GPU that supports it, else "no"."""
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    try:
        return Accelerator(mixed_precision=mixed_precision)
    except ValueError:
        from accelerate.state import AcceleratorState, PartialState

        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(mixed_precision=mixed_precision)


def _adamw(params, lr: float) -> torch.optim.AdamW:
    """AdamW (ε = 1e-5, no weight decay), fused where the device supports it (about 5× faster steps on CPU)."""
    try:
        return torch.optim.AdamW(params, lr=lr, eps=1e-5, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, eps=1e-5, weight_decay=0.0)


def _seed_for(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. run seed, update, process): stateless, so resumes match."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
