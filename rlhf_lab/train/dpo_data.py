"""Preference pairs as tokens for DPO: encoding, collation, and sequence log-probs with the prompt run once.

    encoded = encode_pairs(tokenizer, pairs, sampling, max_length=128, max_prompt_length=96)
    logps = pair_logps(lm, encoded[:8], tokenizer.pad_token_id)      # (16,): [chosen_1..8, rejected_1..8]
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rlhf_lab.core.hf import cache_argument, position_ids
from rlhf_lab.core.packed_attention import can_attend_by_segment, segment_attention, segment_layout
from rlhf_lab.policy.generation import SamplingConfig, format_prompts

__all__ = ["EncodedPair", "PreparedPairs", "encode_pairs", "collate", "collate_shared", "sequence_logps",
           "pair_logps", "packed_pair_logps"]


def sequence_logps(lm, input_ids: Tensor, completion_mask: Tensor) -> Tensor:
    """Σ log π(reply token | everything before it) per row: (N, L) right-padded ids, (N, L) 0/1 mask of reply tokens
    -> (N,) float32.

    Rows are right padded, so no attention mask is needed (causal attention never looks at the padding after a
    token) and positions are 0, 1, ... as in a row alone. The output layer runs only where the next token is a reply
    token (M of the N·L positions): (M, D) -> (M, V) logits, never (N, L, V).
    """
    hidden = lm.base_model(input_ids=input_ids, use_cache=False).last_hidden_state  # (N, L, D)
    targets = completion_mask[:, 1:].bool()  # (N, L−1): position t predicts token t+1
    rows = targets.nonzero()[:, 0]  # (M,) the row of each predicted reply token
    logits = lm.get_output_embeddings()(hidden[:, :-1][targets]).float()  # (M, V)
    token_logps = logits.gather(-1, input_ids[:, 1:][targets].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return torch.zeros(len(input_ids), device=logits.device).index_add(0, rows, token_logps)  # (N,)


@dataclass
class EncodedPair:
    """One preference pair as token ids: the formatted prompt, and each reply followed by EOS."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    tie: bool = False

    @property
    def length(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


def encode_pairs(tokenizer, pairs: pd.DataFrame, sampling: SamplingConfig, max_length: int,
                 max_prompt_length: int) -> list[EncodedPair]:
    """Tokenise pairs the way `generate` feeds prompts (chat template when the tokenizer has one); a long prompt keeps
    its last `max_prompt_length` tokens and a long reply is cut to fit `max_length` in all."""
    texts, used_chat = format_prompts(tokenizer, pairs["prompt"].tolist(), sampling)
    prompt_ids = tokenizer(texts, add_special_tokens=not used_chat)["input_ids"]
    replies = tokenizer(pairs["chosen"].tolist() + pairs["rejected"].tolist(), add_special_tokens=False)["input_ids"]
    ties = pairs["tie"].astype(bool).tolist() if "tie" in pairs else [False] * len(pairs)
    encoded = []
    for i, prompt in enumerate(prompt_ids):
        prompt = prompt[-max_prompt_length:]
        room = max(max_length - len(prompt), 1)
        chosen, rejected = replies[i], replies[len(pairs) + i]
        encoded.append(EncodedPair(prompt, (chosen + [tokenizer.eos_token_id])[:room],
                                   (rejected + [tokenizer.eos_token_id])[:room], ties[i]))
    return encoded


@dataclass
class PreparedPairs:
    """Encoded pairs with their reference log-probs (N,), ready for training (`DPOTrainer.prepare`)."""

    pairs: list[EncodedPair]
    ref_chosen: Tensor
    ref_rejected: Tensor

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, idx: list[int]) -> "PreparedPairs":
        return PreparedPairs([self.pairs[i] for i in idx], self.ref_chosen[idx], self.ref_rejected[idx])


def collate(pairs: list[EncodedPair], pad_id: int) -> tuple[Tensor, Tensor]:
    """Rows [chosen_1..chosen_b, rejected_1..rejected_b] (one forward for both), right padded to the longest real
    row: input_ids (2b, L) and completion_mask (2b, L), 1 on reply tokens."""
    rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    width = max(len(a) + len(b) for a, b in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, reply) in enumerate(rows):
        ids[i, :len(prompt) + len(reply)] = torch.tensor(prompt + reply)
        mask[i, len(prompt):len(prompt) + len(reply)] = 1
    return ids, mask


def collate_shared(pairs: list[EncodedPair], pad_id: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The prompts once, left padded: prompt_ids and prompt_mask (b, P); and the replies interleaved [chosen_1,
    rejected_1, chosen_2, ...], right padded: reply_ids and reply_mask (2b, R)."""
    width = max(len(p.prompt) for p in pairs)
    prompt_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, p in enumerate(pairs):
        prompt_ids[i, width - len(p.prompt):] = torch.tensor(p.prompt)
        prompt_mask[i, width - len(p.prompt):] = 1
    replies = [reply for p in pairs for reply in (p.chosen, p.rejected)]
    width = max(len(r) for r in replies)
    reply_ids = torch.full((len(replies), width), pad_id, dtype=torch.long)
    reply_mask = torch.zeros((len(replies), width), dtype=torch.long)
    for i, reply in enumerate(replies):
        reply_ids[i, :len(reply)] = torch.tensor(reply)
        reply_mask[i, :len(reply)] = 1
    return prompt_ids, prompt_mask, reply_ids, reply_mask


def pair_logps(lm, pairs: list[EncodedPair], pad_id: int, sharded: bool = False) -> Tensor:
    """Sequence log-probs of b pairs' chosen and rejected replies, (2b,) ordered [chosen_1..b, rejected_1..b] as
    `sequence_logps` on `collate`'s rows, with the shared prompt run once per pair instead of twice.

    `sharded` (FSDP2 needs one trunk pass whatever the replies: `train.scorer`): the batch packed in one pass, each
    prompt read once (`packed_pair_logps`, SDPA attention), else `sequence_logps` on whole rows. In one process the
    packed pass measured no faster than the following (bench/results/speed_cpu/dpo_avx2_2026-12-05.txt):

    The prompts (left padded, positions counting real tokens) go through the trunk once, keeping their keys and
    values; both replies then continue from them (the cache repeated per reply, gradients flowing back into the
    prompt's pass). On chit-chat pairs the prompt (chat template included) is about half of each row, so this
    removes about a quarter of the tokens of a step. The output layer runs on reply tokens only.
    """
    device = lm.get_output_embeddings().weight.device
    if sharded and can_attend_by_segment(lm.base_model):
        return packed_pair_logps(lm, pairs)
    if sharded:
        return sequence_logps(lm, *(t.to(device) for t in collate(pairs, pad_id)))
    prompt_ids, prompt_mask, reply_ids, reply_mask = (t.to(device) for t in collate_shared(pairs, pad_id))
    trunk, n = lm.base_model, len(pairs)
    positions = position_ids(prompt_mask)
    out = trunk(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    hidden = out.last_hidden_state[:, -1:].repeat_interleave(2, dim=0)  # (2b, 1, D): predicts each reply's 1st token
    if reply_ids.shape[1] > 1:
        cache.batch_repeat_interleave(2)
        prompt_mask = prompt_mask.repeat_interleave(2, dim=0)  # (2b, P)
        steps = reply_ids.shape[1] - 1  # the last reply token predicts nothing
        positions = prompt_mask.sum(1, keepdim=True) + torch.arange(steps, device=device)  # (2b, R−1)
        attention_mask = torch.cat([prompt_mask, torch.ones_like(reply_ids[:, :-1])], dim=1)
        hidden = torch.cat([hidden, trunk(input_ids=reply_ids[:, :-1], attention_mask=attention_mask,
                                          position_ids=positions, use_cache=True,
                                          **{cache_argument(trunk): cache}).last_hidden_state], dim=1)  # (2b, R, D)
    targets = reply_mask.bool()
    logits = lm.get_output_embeddings()(hidden[targets]).float()  # (M, V), reply tokens only
    token_logps = logits.gather(-1, reply_ids[targets].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    logps = torch.zeros(2 * n, device=device).index_add(0, targets.nonzero()[:, 0], token_logps)
    return logps.view(n, 2).T.reshape(-1)  # [chosen..., rejected...]


def packed_pair_logps(lm, pairs: list[EncodedPair]) -> Tensor:
    """`pair_logps` in one trunk pass over the batch packed as one row, padding left out: each pair's prompt, then
    its chosen and its rejected reply (without their last token, which predicts nothing), each reply attending to its
    prompt and to itself (`packed_attention`: segments, a reply's parent its prompt). Positions count from each
    prompt's first token, as in a row alone. One pass whatever the replies, so FSDP2 can run it too.

    The output layer runs on the M places that predict a reply token: a prompt's last token (each reply's first) and
    the replies' own. -> (2b,) [chosen_1..b, rejected_1..b]
    """
    device = lm.get_output_embeddings().weight.device
    lengths, parents, tokens, positions, predicting, targets = [], [], [], [], [], []
    for pair in pairs:
        prompt_segment, prompt_end = len(lengths), len(tokens) + len(pair.prompt)  # the prompt's segment, its end
        lengths.append(len(pair.prompt))
        parents.append(-1)
        tokens += pair.prompt
        positions += range(len(pair.prompt))
        for reply in (pair.chosen, pair.rejected):
            predicting.append([prompt_end - 1, *range(len(tokens), len(tokens) + len(reply) - 1)])
            targets += reply
            if len(reply) > 1:
                lengths.append(len(reply) - 1)
                parents.append(prompt_segment)
                tokens += reply[:-1]
                positions += range(len(pair.prompt), len(pair.prompt) + len(reply) - 1)
    trunk = lm.base_model
    with segment_attention(trunk, segment_layout(lengths, parents)) as by_segment:
        hidden = trunk(input_ids=torch.tensor([tokens], device=device),
                       position_ids=torch.tensor([positions], device=device), use_cache=False,
                       **by_segment).last_hidden_state[0]  # (N, D)
    places = torch.tensor([place for row in predicting for place in row], device=device)  # (M,)
    owner = torch.tensor([k for k, row in enumerate(predicting) for _ in row], device=device)  # (M,) 2i: chosen_i
    logits = lm.get_output_embeddings()(hidden[places]).float()  # (M, V)
    token_logps = logits.gather(-1, torch.tensor(targets, device=device)[:, None]).squeeze(-1) - logits.logsumexp(-1)
    logps = torch.zeros(len(predicting), device=device).index_add(0, owner, token_logps)  # [c_1, r_1, c_2, ...]
    return logps.view(len(pairs), 2).T.reshape(-1)  # [chosen..., rejected...]
