"""DPO and its variants, trained straight from preference pairs: no reward model, no sampling (offline), or new
pairs from the current policy judged each round (iterative).

    trainer = DPOTrainer(policy, tokenizer, DPOConfig(beta=0.1, loss_type="sigmoid"))
    trainer.fit(store.preference_pairs())            # offline: a DataFrame with prompt, chosen, rejected (, tie)
    trainer.train_iterative(prompts, SimulatedCrowd(), rounds=3, pairs_per_round=32)   # iterative (online) DPO
    trainer.history.to_frame()                        # metrics of every optimiser step, TRL's names

The losses are pure functions of sequence log-probs (below, with their equations). Speed comes from three choices:
the reference log-probs are computed once per pair, up front, without gradients (with LoRA by switching the adapters
off), so training runs only the policy; the prompt of a pair goes through the model once and both replies continue
from its keys and values (`pair_logps`: chosen and rejected share the prompt's compute, about a quarter of the tokens
of a step on chit-chat pairs); and batches are grouped by length and trimmed to their longest real row, with the
49k-wide output layer applied to reply tokens only.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from .callbacks import LiveView, MetricsHistory, PrintLogger, in_notebook
from .generation import SamplingConfig, format_prompts, generate
from .ppo import LoraSettings
from .ppo_models import (_accelerator, _adamw, _causal_lm, _seed_for, disable_dropout, policy_and_reference,
                         reference_model)
from .reward_model import _batches
from .rewards import as_reward
from .seeding import set_seed

LOSS_TYPES = ("sigmoid", "ipo", "robust")
DPO_PRINT_KEYS = (("loss", "loss"), ("rewards/accuracies", "acc"), ("rewards/margins", "margin"),
                  ("logps/chosen", "logp_c"), ("logps/rejected", "logp_r"), ("time/pairs_per_s", "pairs/s"))
DPO_PLOT_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
                 "logps/chosen")


# ---- losses (pure) ------------------------------------------------------------------------------------------------
# h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)): how much more the policy than the reference
# prefers the chosen reply y_w over the rejected y_l. All take (B,) tensors and return per-pair losses (B,).
def sigmoid_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO (Rafailov et al. 2023): L = −log σ(β·h). With label smoothing ε (conservative DPO, cDPO: each label is
    wrong with probability ε) L = −(1−ε)·log σ(β·h) − ε·log σ(−β·h), minimised at β·h = log((1−ε)/ε), not at ∞."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def robust_loss(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024), an unbiased loss under labels flipped with probability ε < ½:
    L = (−(1−ε)·log σ(β·h) + ε·log σ(−β·h)) / (1 − 2ε)."""
    return (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) / (
        1 - 2 * label_smoothing)


def ipo_loss(h_per_token: Tensor, beta: float) -> Tensor:
    """IPO (Azar et al. 2023): L = (h̄ − 1/(2β))², a squared loss that keeps the margin finite (β is the paper's τ).
    h̄ uses log-ratios averaged per reply token (TRL's normalisation, confirmed by the IPO authors)."""
    return (h_per_token - 1 / (2 * beta)) ** 2


def dpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
             beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_lengths: Tensor | None = None, rejected_lengths: Tensor | None = None,
             tie: Tensor | None = None) -> Tensor:
    """Per-pair preference loss (B,) from sequence log-probs (B,) of the policy and the reference.

    loss_type: "sigmoid" (DPO; cDPO with label_smoothing > 0), "ipo" (needs the reply lengths in tokens) or "robust".
    tie (B,) bool: a tied pair has no preferred side. Its target is ½, L = −½·log σ(β·h) − ½·log σ(−β·h), minimised
    at h = 0 (sigmoid and robust); for IPO its target margin is 0, L = h̄².
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}: use one of {', '.join(LOSS_TYPES)}.")
    chosen_logratios, rejected_logratios = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios  # (B,)
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("The IPO loss averages log-ratios per token: pass chosen_lengths and rejected_lengths.")
        h = chosen_logratios / chosen_lengths.clamp_min(1) - rejected_logratios / rejected_lengths.clamp_min(1)
        losses, tied = ipo_loss(h, beta), h ** 2
    else:
        loss_fn = sigmoid_loss if loss_type == "sigmoid" else robust_loss
        losses = loss_fn(h, beta, label_smoothing)
        tied = sigmoid_loss(h, beta, 0.5)
    return losses if tie is None else torch.where(tie.bool(), tied, losses)


# ---- sequence log-probabilities -----------------------------------------------------------------------------------
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


def _CACHE_KWARG(trunk) -> str:
    """The name under which the trunk's forward takes a key/value cache (transformers ≥ 5.2x: `cache`)."""
    return "cache" if "cache" in inspect.signature(trunk.forward).parameters else "past_key_values"


def pair_logps(lm, pairs: list[EncodedPair], pad_id: int) -> Tensor:
    """Sequence log-probs of b pairs' chosen and rejected replies, (2b,) ordered [chosen_1..b, rejected_1..b] as
    `sequence_logps` on `collate`'s rows, with the shared prompt run once per pair instead of twice.

    The prompts (left padded, positions counting real tokens) go through the trunk once, keeping their keys and
    values; both replies then continue from them (the cache repeated per reply, gradients flowing back into the
    prompt's pass). On chit-chat pairs the prompt (chat template included) is about half of each row, so this
    removes about a quarter of the tokens of a step. The output layer runs on reply tokens only.
    """
    device = lm.get_output_embeddings().weight.device
    prompt_ids, prompt_mask, reply_ids, reply_mask = (t.to(device) for t in collate_shared(pairs, pad_id))
    trunk, n = lm.base_model, len(pairs)
    positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
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
                                          **{_CACHE_KWARG(trunk): cache}).last_hidden_state], dim=1)  # (2b, R, D)
    targets = reply_mask.bool()
    logits = lm.get_output_embeddings()(hidden[targets]).float()  # (M, V), reply tokens only
    token_logps = logits.gather(-1, reply_ids[targets].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    logps = torch.zeros(2 * n, device=device).index_add(0, targets.nonzero()[:, 0], token_logps)
    return logps.view(n, 2).T.reshape(-1)  # [chosen..., rejected...]


# ---- the trainer --------------------------------------------------------------------------------------------------
@dataclass
class DPOConfig:
    """Everything a DPO run needs besides the model and the pairs."""

    beta: float = 0.1
    """β: strength of the implicit KL leash to the reference (larger stays closer); IPO's τ."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO; with label_smoothing > 0 conservative DPO), "ipo" or "robust" (see the loss functions)."""
    label_smoothing: float = 0.0
    """ε: the assumed probability that a label is flipped (cDPO and robust DPO); must be in [0, ½)."""
    include_ties: bool = True
    """Train on tied pairs with target ½ (margin 0); False drops them (the number dropped is logged)."""
    learning_rate: float = 1e-6
    """AdamW learning rate (about 1e-6 for full fine-tuning of a 135M model, 1e-5 to 1e-4 with LoRA)."""
    batch_size: int = 8
    """Pairs per optimiser step."""
    micro_batch_size: int | None = None
    """Pairs per forward/backward pass (gradients accumulate over the batch); None: batch_size."""
    epochs: int = 1
    """Passes over the pairs per `fit` call (iterative mode: per round)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimiser step."""
    max_length: int = 128
    """Prompt plus reply, in tokens; longer replies are cut."""
    max_prompt_length: int = 96
    """A longer (formatted) prompt keeps its last this-many tokens."""
    group_by_length: bool = True
    """Batch pairs of similar length together (shuffled within chunks of 16 batches): far less padding."""
    ref_batch_size: int = 32
    """Pairs per no-grad forward pass when the reference log-probs are computed up front."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Prompt formatting (chat template, system prompt) and, in iterative mode, how new replies are sampled."""
    lora: LoraSettings | None = None
    """LoRA settings (the reference is then the policy with adapters off), or None for full fine-tuning."""
    mixed_precision: str = "auto"
    """"no", "bf16" or "auto" (bf16 on a GPU that supports it, float32 elsewhere), via accelerate."""
    seed: int = 0
    """Seeds shuffling, sampling and initialisation: same seed, same curves (on CPU)."""

    def __post_init__(self):
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        self.micro_batch_size = self.micro_batch_size or self.batch_size
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"Unknown loss_type {self.loss_type!r}: use one of {', '.join(LOSS_TYPES)}.")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}.")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}.")
        if min(self.batch_size, self.micro_batch_size, self.epochs) < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of micro_batch_size "
                             f"({self.micro_batch_size}), and epochs at least 1.")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length "
                             f"({self.max_length}) to leave room for the reply.")


class DPOTrainer:
    """DPO (or IPO, cDPO, robust DPO) on a causal LM policy (see the module docstring).

    policy, tokenizer: a Hugging Face causal LM and its tokenizer (`models.load_policy`). With `config.lora` the
        policy is wrapped in place with peft adapters; otherwise `ref_policy` (default: a frozen copy of `policy`
        taken now) is the reference.
    Counters for budgets: `update_` (optimiser steps), `pairs_seen_`, `samples_generated_`, `tokens_generated_`,
    `judgments_used_` (new judgments asked for in iterative mode), `round_`.
    """

    def __init__(self, policy, tokenizer, config: DPOConfig | None = None, *, ref_policy=None, callbacks=None,
                 metrics_path=None):
        self.config = config = config or DPOConfig()
        set_seed(config.seed)
        self.accelerator = _accelerator(config.mixed_precision)
        self.tokenizer = tokenizer
        policy, self.ref_policy = policy_and_reference(disable_dropout(policy), config.lora, ref_policy,
                                                       self.accelerator.device)
        optimizer = _adamw([p for p in policy.parameters() if p.requires_grad], config.learning_rate)
        self.model, self.optimizer = self.accelerator.prepare(policy, optimizer)
        self.history = MetricsHistory(metrics_path)
        self.callbacks = ([LiveView(keys=DPO_PLOT_KEYS)] if in_notebook() else [PrintLogger(keys=DPO_PRINT_KEYS)]
                          ) if callbacks is None else list(callbacks)
        self.update_ = self.pairs_seen_ = self.samples_generated_ = self.tokens_generated_ = 0
        self.judgments_used_ = self.round_ = 0
        self.n_updates_ = None
        self.store_ = None

    @property
    def policy(self):
        """The policy being trained (peft-wrapped with LoRA), unwrapped from accelerate."""
        return self.accelerator.unwrap_model(self.model)

    # ---- offline -------------------------------------------------------------------------------------------------
    def prepare(self, pairs) -> PreparedPairs:
        """Tokenise pairs (a DataFrame with prompt, chosen, rejected and optional tie, e.g.
        `store.preference_pairs()`; a FeedbackStore; or a list of EncodedPair) and compute their reference
        log-probs, once."""
        cfg = self.config
        if isinstance(pairs, list) and pairs and all(isinstance(p, EncodedPair) for p in pairs):
            encoded = pairs
        else:
            encoded = encode_pairs(self.tokenizer, self._check_pairs(pairs), cfg.sampling, cfg.max_length,
                                   cfg.max_prompt_length)
        return PreparedPairs(encoded, *self.reference_logps(encoded))

    def fit(self, pairs, epochs: int | None = None) -> "DPOTrainer":
        """Train on preference pairs (anything `prepare` takes, or its result): reference log-probs computed once,
        then `epochs` (default config.epochs) shuffled passes of optimiser steps. Returns self."""
        cfg = self.config
        data = pairs if isinstance(pairs, PreparedPairs) else self.prepare(pairs)
        rng = np.random.default_rng(_seed_for(cfg.seed, self.update_, 3))
        lengths = [p.length for p in data.pairs]
        for epoch in range(epochs or cfg.epochs):
            for idx in _batches(lengths, cfg.batch_size, rng, cfg.group_by_length):
                self.step([data.pairs[i] for i in idx], data.ref_chosen[idx], data.ref_rejected[idx], epoch=epoch)
        return self

    def _check_pairs(self, pairs) -> pd.DataFrame:
        if hasattr(pairs, "preference_pairs"):
            pairs = pairs.preference_pairs(include_ties=self.config.include_ties)
        missing = {"prompt", "chosen", "rejected"} - set(getattr(pairs, "columns", ()))
        if missing:
            raise ValueError(f"DPO needs a DataFrame of pairs with columns prompt, chosen, rejected (missing "
                             f"{sorted(missing)}): pass store.preference_pairs() or build one with those columns.")
        if "tie" in pairs and not self.config.include_ties:
            self.ties_dropped_ = int(pairs["tie"].sum())
            pairs = pairs[~pairs["tie"].astype(bool)]
        if len(pairs) == 0:
            raise ValueError("There are no preference pairs to train on: collect some judgments first (rate replies "
                             "or let a SimulatedCrowd annotate the store), or set include_ties=True if all are ties.")
        return pairs.reset_index(drop=True)

    @torch.no_grad()
    def reference_logps(self, encoded: list[EncodedPair]) -> tuple[Tensor, Tensor]:
        """Reference log-probs of every pair's chosen and rejected reply: (N,), (N,), without gradients, in
        length-sorted batches of `config.ref_batch_size` (with LoRA: the policy with adapters off)."""
        order = sorted(range(len(encoded)), key=lambda i: encoded[i].length)
        out = torch.zeros(2, len(encoded))
        self.model.eval()
        with reference_model(self.policy, self.ref_policy) as ref_lm, self.accelerator.autocast():
            for start in range(0, len(order), self.config.ref_batch_size):
                idx = order[start:start + self.config.ref_batch_size]
                logps = pair_logps(ref_lm, [encoded[i] for i in idx], self.tokenizer.pad_token_id)
                out[:, idx] = logps.float().cpu().view(2, len(idx))
        return out[0], out[1]

    # ---- the algorithm box ---------------------------------------------------------------------------------------
    def step(self, pairs: list[EncodedPair], ref_chosen: Tensor, ref_rejected: Tensor, epoch: int = 0) -> dict:
        """One optimiser step on a batch of encoded pairs and their reference log-probs (b,); returns metrics."""
        cfg, acc, device = self.config, self.accelerator, self.accelerator.device
        start = time.perf_counter()
        self.model.train()
        # Micro-batches of similar length (sorted inside the batch), each trimmed to its own longest row.
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
        stats = []
        for micro in (order[s:s + cfg.micro_batch_size] for s in range(0, len(order), cfg.micro_batch_size)):
            # 1. Sequence log-probs of chosen and rejected under the policy: the prompt once, both replies from it.
            batch = [pairs[i] for i in micro]
            with acc.autocast():
                logps = pair_logps(_causal_lm(self.model), batch, self.tokenizer.pad_token_id)  # (2b,)
            chosen_logps, rejected_logps = logps.chunk(2)  # (b,) each
            lengths = torch.tensor([len(p.chosen) for p in batch] + [len(p.rejected) for p in batch],
                                   device=device, dtype=torch.float)
            # 2. The preference loss against the precomputed reference log-probs; summed so micro-batches add up.
            ref_c, ref_r = ref_chosen[micro].to(device), ref_rejected[micro].to(device)
            tie = torch.tensor([pairs[i].tie for i in micro], device=device)
            losses = dpo_loss(chosen_logps, rejected_logps, ref_c, ref_r, cfg.beta, cfg.loss_type,
                              cfg.label_smoothing, *lengths.chunk(2), tie=tie)  # (b,)
            if not torch.isfinite(losses).all():
                raise FloatingPointError(f"DPO step {self.update_ + 1}: the loss became non-finite; lower the "
                                         f"learning_rate (now {cfg.learning_rate}) or use float32.")
            acc.backward(losses.sum() / len(pairs))
            with torch.no_grad():
                chosen_rewards, rejected_rewards = cfg.beta * (chosen_logps - ref_c), cfg.beta * (rejected_logps - ref_r)
                stats.append(torch.stack([losses, chosen_rewards, rejected_rewards,
                                          (chosen_rewards > rejected_rewards).float(), chosen_logps, rejected_logps],
                                         dim=1).cpu())
        # 3. Clip the gradient norm and step.
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        self.update_ += 1
        self.pairs_seen_ += len(pairs)
        loss, chosen_r, rejected_r, accuracy, logp_c, logp_r = torch.cat(stats).mean(0).tolist()
        seconds = time.perf_counter() - start
        metrics = {"update": self.update_, "epoch": epoch, "pairs": self.pairs_seen_, "loss": loss,
                   "rewards/chosen": chosen_r, "rewards/rejected": rejected_r, "rewards/accuracies": accuracy,
                   "rewards/margins": chosen_r - rejected_r, "logps/chosen": logp_c, "logps/rejected": logp_r,
                   "grad_norm": float(grad_norm), "lr": self.optimizer.param_groups[0]["lr"],
                   "time/update_s": seconds, "time/pairs_per_s": len(pairs) / seconds}
        for target in (self.history, *self.callbacks):
            if hasattr(target, "on_step_end"):
                target.on_step_end(self, metrics)
        return metrics

    # ---- iterative (online) --------------------------------------------------------------------------------------
    def collect_pairs(self, prompts: list[str], judge, round_: int, pairs_per_round: int,
                      store=None) -> list[EncodedPair]:
        """New pairs from the current policy: two replies to each of `pairs_per_round` prompts (drawn from `prompts`
        with the run's seed), judged by `judge`:
          - anything with `.annotate(store, items)` (a SimulatedCrowd or SimulatedAnnotator): the judgments are
            recorded in `store` (default: an in-memory FeedbackStore kept as `store_`) and converted to pairs;
          - any reward source `rewards.as_reward` takes: the higher-scored reply is chosen (equal scores: a tie).
        The pairs keep the sampled tokens (no round trip through text, which would merge or strip some tokens).
        """
        cfg = self.config
        rng = np.random.default_rng(_seed_for(cfg.seed, round_, 4))
        drawn = [prompts[i] for i in rng.choice(len(prompts), pairs_per_round, replace=len(prompts) < pairs_per_round)]
        batch = generate(self.policy, self.tokenizer, drawn, cfg.sampling, n_per_prompt=2, iteration=round_,
                         seed=_seed_for(cfg.seed, round_, 5))  # rows 2i and 2i+1 answer prompt i
        self.samples_generated_ += len(batch)
        self.tokens_generated_ += int(batch.response_mask.sum())
        if callable(getattr(judge, "annotate", None)):
            from .store import FeedbackStore

            self.store_ = store = store or self.store_ or FeedbackStore(":memory:")
            ids = store.add_responses(batch.to_records())
            row_of = {response_id: row for row, response_id in enumerate(ids)}
            items = [store.get_item(store.add_item(ids[i:i + 2])) for i in range(0, len(ids), 2)]
            judgment_ids = judge.annotate(store, items)
            self.judgments_used_ += len(judgment_ids)
            pairs = store.preference_pairs(include_ties=cfg.include_ties)
            pairs = pairs[pairs["judgment_id"].isin(judgment_ids)]
            rows = [(row_of[c], row_of[r], bool(t)) for c, r, t in zip(pairs["chosen_id"], pairs["rejected_id"],
                                                                        pairs["tie"])]
        else:
            scores = as_reward(judge, self.tokenizer)(batch).view(-1, 2)  # (P, 2)
            self.judgments_used_ += len(scores)
            rows = [(2 * i + int(b > a), 2 * i + int(b <= a), bool(a == b)) for i, (a, b) in enumerate(scores.tolist())]
            rows = [r for r in rows if cfg.include_ties or not r[2]]
        prompt = lambda i: batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()  # noqa: E731
        reply = lambda i: batch.response_ids[i][batch.response_mask[i].bool()].tolist()  # noqa: E731
        return [EncodedPair(prompt(c), reply(c), reply(r), tie) for c, r, tie in rows]

    def train_iterative(self, prompts: list[str], judge, rounds: int, pairs_per_round: int = 32,
                        store=None) -> "DPOTrainer":
        """Iterative DPO: each round, `collect_pairs` from the current policy, then `fit` on them (the reference
        stays the initial policy). Runs until `round_ == rounds`. Returns self."""
        if not prompts:
            raise ValueError("train_iterative needs prompts to sample replies for.")
        while self.round_ < rounds:
            pairs = self.collect_pairs(list(prompts), judge, self.round_ + 1, pairs_per_round, store)
            if pairs:
                self.fit(pairs)
            self.round_ += 1
        return self
