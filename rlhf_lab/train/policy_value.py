"""The models an on-policy trainer trains: the policy with a value head (on its trunk or a separate one), the
reference (a frozen copy, or the LoRA policy with its adapters off), and the response-only forward pass with a
shared prompt prefix. Used by `train.on_policy` (PPO, RLOO), `train.scorer` (DPO, KTO) and the method comparison."""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref

import torch
import torch.nn as nn

from rlhf_lab.core.hf import (
    cache_argument,
    causal_lm,
    disable_dropout,
    left_padding,
    position_ids,
    shared_prefix_length,
)
from rlhf_lab.core.packed_attention import can_attend_by_segment, segment_attention, segment_layout
from rlhf_lab.train.config import LoraSettings

__all__ = ["PolicyAndValue", "response_hidden", "response_rows", "spread_rows", "response_logits",
           "shared_prefix_length", "policy_and_reference", "reference_model", "critic_from_reward", "MIN_SHARED_PREFIX"]

MIN_SHARED_PREFIX = 4
"""Shorter common prefixes are run with each row: a batch-1 pass of a few tokens saves less than it costs."""

_NO_SHARED_PREFIX: weakref.WeakSet = weakref.WeakSet()  # trunks whose forward cannot continue from a shared cache


def response_hidden(trunk: nn.Module, input_ids, attention_mask, n_prompt: int, share_prefix: bool = True,
                    pack: bool = True):
    """Last hidden states at the positions that predict each response token: (B, P+R) -> (B, R, D)
    (`response_rows` spread out by `spread_rows`).

    Position ids count real tokens only (cumsum(mask) − 1, clamped at 0), so a left-padded row is read exactly as it
    would be alone (checklist 1).

    share_prefix: when every row's prompt starts with the same tokens (a chat template's system prompt, 24 of the
    ~50 prompt tokens of SmolLM2's template), those run once, as a batch of one, and every row continues from their
    keys and values (`shared_prefix_length`). The results are the same up to float rounding, gradients included
    (autograd sums the rows' gradients through the shared keys and values); the batch's forward and backward skip
    (B − 1) × prefix tokens. Off under gradient checkpointing, which drops caches.

    pack (with a shared prefix, right-padded responses and SDPA or eager attention): the rows' own tokens, padding
    left out, run as one packed row after the prefix, each attending to the prefix and causally to itself only
    (`_packed_response_hidden`). Positions that predict no real response token (after a reply's end) get zeros; a
    caller reads them only under a zero mask. Same numbers up to float rounding at every real position, gradients
    included; the forward and backward skip the padding (short prompts' and ended replies'), more as replies shorten.
    """
    return spread_rows(*response_rows(trunk, input_ids, attention_mask, n_prompt, share_prefix, pack))


def response_rows(trunk: nn.Module, input_ids, attention_mask, n_prompt: int, share_prefix: bool = True,
                  pack: bool = True):
    """`response_hidden` before it is spread out: (rows, real). Packed, rows (M, D) are the hidden states that
    predict the M real response tokens, in row-major order, and real (B, R) says which positions they are; otherwise
    rows is the whole (B, R, D) and real None. A layer applied to the rows before `spread_rows` (the 49k-wide output
    layer, the value head) skips the positions after each reply's end."""
    n_response = input_ids.shape[1] - n_prompt
    n_shared = shared_prefix_length(input_ids, attention_mask, n_prompt) if share_prefix else 0
    if n_shared >= MIN_SHARED_PREFIX and trunk not in _NO_SHARED_PREFIX and not _checkpointing(trunk):
        if pack:
            rows = _packed_response_hidden(trunk, input_ids, attention_mask, n_prompt, n_shared)  # ((M, D), (B, R))
            if rows is not None:
                return rows
        hidden = _hidden_after_shared_prefix(trunk, input_ids, attention_mask, n_shared)  # (B, L', D), or None
        if hidden is not None:
            return hidden[:, hidden.shape[1] - n_response - 1:-1], None  # (B, R, D)
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                   use_cache=False).last_hidden_state  # (B, P+R, D)
    return hidden[:, n_prompt - 1:-1], None  # (B, R, D)


def spread_rows(rows, real):
    """(M, ...) rows of the real positions -> (B, R, ...), zeros elsewhere; rows already (B, R, ...) when real is
    None. Its backward reads the real positions' gradients back."""
    if real is None:
        return rows
    spread = rows.new_zeros(*real.shape, *rows.shape[1:])
    spread[real] = rows
    return spread


def _hidden_after_shared_prefix(trunk, input_ids, attention_mask, n_shared: int):
    """The trunk's last hidden states (B, L', D) of the columns after the shared prefix (those a row needs; the
    prefix itself runs once), or None (noted for this trunk) when its forward cannot continue from a cache."""
    batch, length = input_ids.shape
    device = input_ids.device
    pads = left_padding(attention_mask)  # (B,)
    cache_arg = cache_argument(trunk)
    cache = _prefix_cache(trunk, input_ids, int(pads[0]), n_shared)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return _cannot_share(trunk)
    cache.batch_repeat_interleave(batch)  # (1, ...) -> (B, ...) keys and values; gradients flow back summed
    start = int(pads.min()) + n_shared  # the first column some row needs after its prefix
    mask = attention_mask[:, start:].clone()  # (B, L')
    mask[torch.arange(start, length, device=device)[None, :] < (pads[:, None] + n_shared)] = 0  # prefix: cached
    full_mask = torch.cat([mask.new_ones(batch, n_shared), mask], dim=1)  # (B, n_shared + L')
    positions = position_ids(full_mask)[:, n_shared:]  # real tokens counted, as above
    hidden = trunk(input_ids=input_ids[:, start:], attention_mask=full_mask, position_ids=positions,
                   use_cache=True, **{cache_arg: cache}).last_hidden_state  # (B, L', D)
    if cache.get_seq_length() != length - start + n_shared:  # the forward did not read the cache
        return _cannot_share(trunk)
    return hidden


def _prefix_cache(trunk, input_ids, first: int, n_shared: int):
    """The shared prefix (row 0's columns first .. first + n_shared − 1) run once, as a batch of one: its key/value
    cache, or None when the trunk returns none."""
    out = trunk(input_ids=input_ids[:1, first:first + n_shared], use_cache=True,
                position_ids=torch.arange(n_shared, device=input_ids.device)[None])
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _packed_response_hidden(trunk, input_ids, attention_mask, n_prompt: int, n_shared: int):
    """`response_rows` with the rows packed: ((M, D), (B, R)), or None when this batch or trunk cannot be packed.

    Row b keeps its columns from its first token after the shared prefix to the one before its last response token
    (the last predicts nothing); the kept tokens of all rows form one row of T tokens at positions n_shared + their
    index in their own row. Token i may see key j when j is in the prefix, or when j ≤ i in the same row.

    SDPA attention (`can_attend_by_segment`): the prefix's tokens and the packed row run as one row of n_shared + T
    tokens, attention row by row (`core.packed_attention`, the prefix each row's parent segment): the same result as
    the mask's without scoring every token against the other rows' keys, which the mask would throw away, and
    without a separate pass for the prefix. Otherwise the prefix runs first, as a batch of one, and the packed row
    continues from its keys and values under a (1, 1, T, n_shared + T) mask, boolean for SDPA, additive for eager
    attention (0 or the float minimum).
    """
    attention = getattr(getattr(trunk, "config", None), "_attn_implementation", None)
    reply = attention_mask[:, n_prompt:].bool()  # (B, R)
    lengths = reply.sum(dim=1)  # (B,) real response tokens
    if attention not in ("sdpa", "eager") or int(lengths.min()) < 1 or not torch.equal(reply.cummin(dim=1).values,
                                                                                         reply):
        return None
    batch, length = input_ids.shape
    device = input_ids.device
    pads = left_padding(attention_mask)  # (B,)
    starts, ends = pads + n_shared, n_prompt - 1 + lengths  # (B,) each: the kept columns are [start, end)
    columns = torch.arange(length, device=device)
    keep = (columns >= starts[:, None]) & (columns < ends[:, None])  # (B, L)
    positions = (n_shared + columns[None, :] - starts[:, None])[keep]  # (T,)
    n_packed, first = len(positions), int(pads[0])
    if can_attend_by_segment(trunk):  # one pass: the prefix's tokens, then the rows', attention by segment
        layout = segment_layout([n_shared, *(ends - starts).tolist()], [-1] + [0] * batch)
        tokens = torch.cat([input_ids[0, first:first + n_shared], input_ids[keep]])  # (n_shared + T,)
        at = torch.cat([torch.arange(n_shared, device=device), positions])  # (n_shared + T,)
        with segment_attention(trunk, layout) as by_segment:
            hidden = trunk(input_ids=tokens[None], position_ids=at[None], use_cache=False,
                           **by_segment).last_hidden_state[0, n_shared:]  # (T, D)
    else:  # the prefix first, as a batch of one; the rows continue from its keys and values under a mask
        row_of = torch.arange(batch, device=device)[:, None].expand(batch, length)[keep]  # (T,)
        causal = torch.ones(n_packed, n_packed, dtype=torch.bool, device=device).tril()
        allowed = torch.cat([causal.new_ones(n_packed, n_shared), causal & (row_of[:, None] == row_of[None, :])],
                            dim=1)  # (T, n_shared + T)
        if attention == "eager":
            dtype = trunk.get_input_embeddings().weight.dtype
            allowed = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed,
                                                                                         torch.finfo(dtype).min)
        cache = _prefix_cache(trunk, input_ids, first, n_shared)
        if cache is None or not hasattr(cache, "get_seq_length"):
            return None
        hidden = trunk(input_ids=input_ids[keep][None], attention_mask=allowed[None, None],
                       position_ids=positions[None], use_cache=True,
                       **{cache_argument(trunk): cache}).last_hidden_state[0]  # (T, D)
        if cache.get_seq_length() != n_shared + n_packed:  # the forward did not read the cache
            return None
    steps = torch.arange(input_ids.shape[1] - n_prompt, device=device)  # (R,)
    first_predicting = (ends - starts).cumsum(dim=0) - lengths  # (B,) packed index that predicts response token 0
    real = steps[None, :] < lengths[:, None]  # (B, R)
    return hidden.index_select(0, (first_predicting[:, None] + steps[None, :])[real]), real  # (M, D), (B, R)


def _checkpointing(trunk) -> bool:
    """Whether gradient checkpointing is on in `trunk` (any of its modules)."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in trunk.modules())


def _cannot_share(trunk) -> None:
    _NO_SHARED_PREFIX.add(trunk)
    warnings.warn(f"{type(trunk).__name__} cannot continue a forward pass from a shared prompt prefix's cache; its "
                  "rows run their whole prompts (same results, more time).", stacklevel=3)
    return None


def response_logits(lm: nn.Module, input_ids, attention_mask, n_prompt: int, share_prefix: bool = True,
                    pack: bool = True):
    """Logits of the response tokens only (the 49k-wide output layer skips the prompt, and packed rows the positions
    after each reply's end, whose logits are zeros): (B, P+R) -> (B, R, V)."""
    rows, real = response_rows(lm.base_model, input_ids, attention_mask, n_prompt, share_prefix, pack)
    return spread_rows(lm.get_output_embeddings()(rows), real)


class PolicyAndValue(nn.Module):
    """The policy and its value function in one module (what the optimiser and accelerate see).

    forward(input_ids (B, P+R), attention_mask (B, P+R), n_prompt) -> (logits (B, R, V), values (B, R)), where
    values[:, t] estimates the return from the state before response token t.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None, value_head: nn.Linear | None = None,
                 share_prefix: bool = True, pack: bool = True):
        super().__init__()
        self.policy, self.critic, self.share_prefix, self.pack = policy, critic, share_prefix, pack
        lm = causal_lm(policy)
        self.value_head = nn.Linear(lm.config.hidden_size, 1, dtype=torch.float32,
                                    device=lm.get_output_embeddings().weight.device)
        nn.init.zeros_(self.value_head.weight)  # V ≡ 0 at the start (checklist 6), unless a head is given
        nn.init.zeros_(self.value_head.bias)
        if value_head is not None:
            self.value_head.load_state_dict(value_head.state_dict())

    def forward(self, input_ids, attention_mask, n_prompt: int):
        lm = causal_lm(self.policy)
        rows, real = response_rows(lm.base_model, input_ids, attention_mask, n_prompt, self.share_prefix,
                                   self.pack)  # (M, D) and (B, R), or (B, R, D) and None
        logits = spread_rows(lm.get_output_embeddings()(rows), real)  # (B, R, V)
        if self.critic is not None:
            rows, real = response_rows(self.critic, input_ids, attention_mask, n_prompt, self.share_prefix, self.pack)
        values = spread_rows(self.value_head(rows.float()).squeeze(-1), real)
        values = values.to(torch.float32, copy=True)  # (B, R) float32, not a view (FSDP2 warns of views; accelerate
        # turns a DDP model's outputs to float32, but not under FSDP2)
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
        yield causal_lm(ref_policy)
        return
    with policy.disable_adapter():
        yield causal_lm(policy)


def critic_from_reward(reward):
    """(trunk, head): copies of a causal-LM reward model's backbone and scalar head, to start a separate PPO critic
    from (InstructGPT's choice). The reward model must read the policy's tokens (`reads_tokens`) and expose its
    network as `net_` with `backbone` and `head`, as `reward.model.RewardModel` does."""
    net = getattr(getattr(reward, "model", None), "net_", None)
    if not getattr(reward, "reads_tokens", False) or not hasattr(net, "backbone") or not hasattr(net, "head"):
        raise ValueError("critic='reward' needs a causal-LM reward model that shares the policy's tokenizer "
                         "(with .net_.backbone and .net_.head); otherwise leave critic=None to copy the policy's "
                         "trunk.")
    return copy.deepcopy(net.backbone), copy.deepcopy(net.head)
