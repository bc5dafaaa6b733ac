"""KTO: the policy learns straight from thumbs up and thumbs down on single replies (Ethayarajh et al. 2024), no
pairs, no reward model.

    trainer = KTOTrainer(policy, tokenizer, KTOConfig(beta=0.1))
    trainer.fit(unpaired_examples(store))     # prompt, completion, label (True = thumbs up): TRL's unpaired format
    trainer.history.to_frame()

The algorithm box (one optimiser step on a batch of b examples, the reference's log-probs computed once up front):
  1. log π(y|x) of each example's reply, with gradients;
  2. the reference point z₀ from mismatched pairs: each prompt x with the reply y' of the next example in the batch
     that answers another prompt (`mismatched_partners`),
     z₀ = max(0, mean(log π(y'|x) − log π_ref(y'|x))), without gradients (`kto_losses.kto_reference_point`);
  3. the loss mean(λ_y − v(x, y)) (`kto_losses.kto_loss`), backward, clip, step.
λ_D defaults to n_U / n_D (so λ_D·n_D = λ_U·n_U: a data set with few thumbs up weighs each more, `kto_weights`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rlhf_lab.core.batching import length_grouped_batches
from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.inputs import bool_labels
from rlhf_lab.core.seeding import seed_for
from rlhf_lab.policy.generation import format_prompts
from rlhf_lab.train.callbacks import PrintLogger
from rlhf_lab.train.config import OptimConfig
from rlhf_lab.train.deepspeed_engine import backward, optimizer_step
from rlhf_lab.train.dpo_data import sequence_logps
from rlhf_lab.train.kto_losses import kto_loss, kto_reference_point, kto_weights
from rlhf_lab.train.scorer import (
    FIT_POSITION,
    ScoringTrainer,
    batch_share,
    data_fingerprint,
    gather_kept,
    reference_scores,
    scored_in_shares,
)

__all__ = ["KTOConfig", "KTOTrainer", "encode_examples", "example_logps", "mismatched_partners"]

KTO_PRINT_KEYS = (("loss", "loss"), ("kl", "z0"), ("rewards/chosen", "r_up"), ("rewards/rejected", "r_down"),
                  ("time/examples_per_s", "ex/s"))


@dataclass
class KTOConfig(OptimConfig):
    """`OptimConfig`'s fields (`batch_size` counts examples; it must be at least 2 for the mismatched pairs) and:"""

    learning_rate: float = 1e-6
    """AdamW learning rate (about DPO's)."""
    beta: float = 0.1
    """β: how sharply the value function saturates; larger stays closer to the reference."""
    desirable_weight: float | None = None
    """λ_D; None: n_undesirable / n_desirable of the data (`kto_weights` with ratio 1)."""
    undesirable_weight: float = 1.0
    """λ_U."""
    epochs: int = 1
    """Passes over the examples per `fit` call."""
    max_length: int = 128
    """Prompt plus reply, in tokens; longer replies are cut."""
    max_prompt_length: int = 96
    """A longer (formatted) prompt keeps its last this-many tokens."""
    ref_batch_size: int = 32
    """Examples per no-grad forward pass for the reference log-probs."""

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0 or self.undesirable_weight <= 0 or (self.desirable_weight is not None
                                                               and self.desirable_weight <= 0):
            raise ValueError("beta and the desirable/undesirable weights must be positive.")
        if self.batch_size < 2:
            raise ValueError(f"KTO's reference point needs batches of at least 2 examples, got {self.batch_size}.")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length "
                             f"({self.max_length}).")


def encode_examples(tokenizer, prompts: list[str], completions: list[str], sampling, max_length: int,
                    max_prompt_length: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids + EOS) per example, the prompt formatted as `generate` feeds it; a long prompt keeps its
    end, a long reply is cut to fit `max_length`."""
    texts, used_chat = format_prompts(tokenizer, list(prompts), sampling)
    prompt_ids = tokenizer(texts, add_special_tokens=not used_chat)["input_ids"]
    reply_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    out = []
    for prompt, reply in zip(prompt_ids, reply_ids):
        prompt = prompt[-max_prompt_length:]
        out.append((prompt, (reply + [tokenizer.eos_token_id])[:max(max_length - len(prompt), 1)]))
    return out


def example_logps(lm, rows: list[tuple[list[int], list[int]]], pad_id: int, sharded: bool = False) -> Tensor:
    """Σ log π(reply | prompt) of (prompt ids, reply ids) rows: right padded, (N,); one trunk pass (as FSDP2 needs,
    `sharded` or not)."""
    width = max(len(p) + len(r) for p, r in rows)
    device = next(lm.parameters()).device
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, (p, r) in enumerate(rows):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r, device=device)
        mask[i, len(p):len(p) + len(r)] = 1
    return sequence_logps(lm, ids, mask)


def mismatched_partners(prompts: list) -> list[int]:
    """For each position i of a batch, the position j of the first example after it (cyclically) whose prompt
    differs from prompt i: its reply y'_j is a reply written for another prompt, as KTO's reference point needs.
    When every prompt in the batch is the same, j = i + 1 (cyclically). (TRL takes the next example whatever its
    prompt, so a batch holding several replies to one prompt pairs some prompts with their own replies.)"""
    n = len(prompts)
    return [next((k % n for k in range(i + 1, i + n) if prompts[k % n] != prompts[i]), (i + 1) % n)
            for i in range(n)]


class KTOTrainer(ScoringTrainer):
    """KTO on a causal LM policy (see the module docstring); `ref_policy`, LoRA and callbacks as in `DPOTrainer`.
    Counters: `update_`, `examples_seen_`. `save`, `resume`: checkpoints."""

    config_class = KTOConfig
    counters = ("examples_seen_", *FIT_POSITION)

    def __init__(self, policy, tokenizer, config: KTOConfig | None = None, *, ref_policy=None, callbacks=None,
                 metrics_path=None):
        super().__init__(policy, tokenizer, KTOConfig() if config is None else config, ref_policy, example_logps,
                         metrics_path)
        self.callbacks = [PrintLogger(keys=KTO_PRINT_KEYS)] if callbacks is None else list(callbacks)
        self.examples_seen_ = 0

    def _check(self, data) -> pd.DataFrame:
        if hasattr(data, "judgments_df"):
            from rlhf_lab.feedback.preferences import unpaired_examples

            data = unpaired_examples(data)
        missing = {"prompt", "completion", "label"} - set(getattr(data, "columns", ()))
        if missing:
            raise ValueError(f"KTO needs examples with columns prompt, completion, label (missing {sorted(missing)}): "
                             "pass unpaired_examples(store) or a DataFrame in TRL's unpaired format.")
        if len(data) < 2:
            raise ValueError(f"KTO needs at least 2 examples (thumbs up or down on replies), got {len(data)}.")
        return data.reset_index(drop=True)

    @torch.no_grad()
    def _reference(self, rows) -> Tensor:
        """The reference's log-probs of (prompt, reply) rows (N,), `config.ref_batch_size` at a time (several
        processes: each its share of every batch, gathered)."""
        def score(idx: list[int]) -> Tensor:
            return reference_scores(self.model, self.policy, self.ref_policy, example_logps, [rows[i] for i in idx],
                                    self.tokenizer.pad_token_id).float()

        self.model.eval()
        with self.accelerator.autocast():
            return scored_in_shares(self.accelerator, len(rows), self.config.ref_batch_size, score).cpu()

    def fit(self, data, epochs: int | None = None, checkpoint_dir=None, checkpoint_every: int = 0) -> "KTOTrainer":
        """Train on thumbs (a FeedbackStore, or a DataFrame with prompt, completion, label): reference log-probs
        computed once (also for each batch's mismatched pairs), then `epochs` shuffled passes. checkpoint_dir: saved
        there (atomically) every `checkpoint_every` steps; a trainer resumed from it goes on with the same data where
        it stopped (other data is refused). Returns self."""
        cfg, epochs = self.config, self.fit_epochs(epochs)
        data = self._check(data)
        labels = torch.tensor(bool_labels(data["label"], "label (True = thumbs up)"))  # "no" or NaN refused
        n_up, n_down = int(labels.sum()), int((~labels).sum())
        lam_d, lam_u = (kto_weights(n_up, n_down)[0] if cfg.desirable_weight is None else cfg.desirable_weight,
                        cfg.undesirable_weight)
        rows = encode_examples(self.tokenizer, data["prompt"], data["completion"], cfg.sampling, cfg.max_length,
                               cfg.max_prompt_length)
        self.claim_fit_data(data_fingerprint(rows, labels.tolist()))
        ref = self._reference(rows)
        lengths = [len(p) + len(r) for p, r in rows]
        prompts = data["prompt"].tolist()

        def batches(start: int):  # (epoch, example indices) of a fit begun at update `start`
            rng = np.random.default_rng(seed_for(self.seed, start, 6))
            for epoch in range(epochs):
                for idx in length_grouped_batches(lengths, cfg.batch_size, rng, True):
                    if len(idx) > 1:  # a lone example has no mismatched partner
                        yield epoch, idx

        for epoch, idx in self.fit_steps(batches, checkpoint_dir, checkpoint_every):
            partners = mismatched_partners([prompts[i] for i in idx])
            mismatched = [(rows[i][0], rows[idx[j]][1]) for i, j in zip(idx, partners)]
            ref_mismatched = self._reference(mismatched)
            self.step([rows[i] for i in idx], ref[idx], labels[idx], mismatched, ref_mismatched, lam_d, lam_u, epoch)
        return self

    # ---- the algorithm box ---------------------------------------------------------------------------------------
    def step(self, rows, ref_logps: Tensor, desirable: Tensor, mismatched, ref_mismatched: Tensor, lam_d: float,
             lam_u: float, epoch: int = 0) -> dict:
        """One optimiser step on b examples (see the module docstring); returns the metrics."""
        cfg, acc, device = self.config, self.accelerator, self.accelerator.device
        start = time.perf_counter()
        self.model.train()
        pad_id = self.tokenizer.pad_token_id
        # Several processes: each takes its share of the batch (`batch_share`: a row at weight 0 where it is short).
        [(share, weights)] = batch_share(len(rows), acc.process_index, acc.num_processes, len(rows))
        weights, ref_logps, desirable = (torch.tensor(weights, device=device), ref_logps[share].to(device),
                                         desirable[share].to(device))
        # 2. the reference point from mismatched pairs, without gradients (over the batch: every process's share)
        with torch.no_grad(), acc.autocast():
            mismatched_logps = self.model([mismatched[i] for i in share], pad_id).float()  # `example_logps`
        z0 = kto_reference_point(gather_kept(acc, mismatched_logps, weights),
                                 gather_kept(acc, ref_mismatched[share].to(device), weights))
        # 1. log-probs of the examples' replies, with gradients; 3. the loss (the processes' gradients are averaged)
        with acc.autocast():
            logps = self.model([rows[i] for i in share], pad_id).float()  # (b,)
        losses = kto_loss(logps, ref_logps, desirable, z0, cfg.beta, lam_d, lam_u)
        if acc.reduce((~torch.isfinite(losses)).sum().float(), "sum") > 0:  # every process stops together
            raise TrainingDivergedError(f"KTO step {self.update_ + 1}: the loss became non-finite; lower the "
                                        f"learning_rate (now {cfg.learning_rate}).")
        backward(acc, self.model, (losses * weights).sum() / len(rows) * acc.num_processes)
        grad_norm = optimizer_step(acc, self.model, self.optimizer, cfg.max_grad_norm)
        self.model.eval()
        self.update_ += 1
        self.examples_seen_ += len(rows)
        with torch.no_grad():  # the batch's figures, every process's share
            logps, ref_logps, losses, up = (gather_kept(acc, t, weights) for t in (
                logps.detach(), ref_logps, losses.detach(), desirable.float()))
            rewards, up = cfg.beta * (logps - ref_logps), up > 0
            down = ~up
        seconds = time.perf_counter() - start
        metrics = {"update": self.update_, "epoch": epoch, "examples": self.examples_seen_,
                   "loss": float(losses.mean()), "kl": float(z0),
                   "rewards/chosen": float(rewards[up].mean()) if up.any() else float("nan"),
                   "rewards/rejected": float(rewards[down].mean()) if down.any() else float("nan"),
                   "logps/chosen": float(logps[up].mean()) if up.any() else float("nan"),
                   "logps/rejected": float(logps[down].mean()) if down.any() else float("nan"),
                   "grad_norm": float(grad_norm), "time/update_s": seconds,
                   "time/examples_per_s": len(rows) / seconds}
        for target in (self.history, *self.callbacks):
            if hasattr(target, "on_step_end"):
                target.on_step_end(self, metrics)
        return metrics
