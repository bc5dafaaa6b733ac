"""DPO and its variants, trained straight from preference pairs: no reward model, no sampling (offline), or new
pairs from the current policy judged each round (iterative).

    trainer = DPOTrainer(policy, tokenizer, DPOConfig(beta=0.1, loss_type="sigmoid"))
    trainer.fit(store.preference_pairs())            # offline: a DataFrame with prompt, chosen, rejected (, tie)
    trainer.train_iterative(prompts, SimulatedCrowd(), rounds=3, pairs_per_round=32)   # iterative (online) DPO
    trainer.history.to_frame()                        # metrics of every optimiser step, TRL's names

The losses are pure functions of sequence log-probs (`dpo_losses`, with their equations); tokenising and
the log-prob passes are `dpo_data`'s. Speed comes from three choices:
the reference log-probs are computed once per pair, up front, without gradients (with LoRA by switching the adapters
off), so training runs only the policy; the prompt of a pair goes through the model once and both replies read it
(`pair_logps`: chosen and rejected share the prompt's compute, about a quarter of the tokens of a step on chit-chat
pairs; under FSDP2 the batch runs as one packed row, padding left out, with SDPA attention); and batches are
grouped by length, with the 49k-wide output layer applied to reply tokens only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rlhf_lab.core.batching import length_grouped_batches
from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.inputs import bool_labels, prompt_list
from rlhf_lab.core.seeding import seed_for
from rlhf_lab.feedback.preferences import as_preference_pairs
from rlhf_lab.policy.generation import generate
from rlhf_lab.reward.sources import as_reward
from rlhf_lab.train.callbacks import LiveView, PrintLogger, in_notebook
from rlhf_lab.train.config import OptimConfig
from rlhf_lab.train.deepspeed_engine import backward, optimizer_step
from rlhf_lab.train.dpo_data import EncodedPair, PreparedPairs, encode_pairs, pair_logps
from rlhf_lab.train.dpo_losses import LOSS_TYPES, dpo_loss
from rlhf_lab.train.scorer import (
    FIT_POSITION,
    ScoringTrainer,
    batch_share,
    data_fingerprint,
    gather_kept,
    reference_scores,
    scored_in_shares,
)

__all__ = ["DPOConfig", "DPOTrainer"]

DPO_PRINT_KEYS = (("loss", "loss"), ("rewards/accuracies", "acc"), ("rewards/margins", "margin"),
                  ("logps/chosen", "logp_c"), ("logps/rejected", "logp_r"), ("time/pairs_per_s", "pairs/s"))
DPO_PLOT_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
                 "logps/chosen")


@dataclass
class DPOConfig(OptimConfig):
    """Everything a DPO run needs besides the model and the pairs: `OptimConfig`'s fields (`batch_size` and
    `micro_batch_size` count pairs; `sampling` formats prompts and, in iterative mode, samples new replies) plus
    these."""

    learning_rate: float = 1e-6
    """AdamW learning rate (about 1e-6 for full fine-tuning of a 135M model, 1e-5 to 1e-4 with LoRA)."""
    beta: float = 0.1
    """β: strength of the implicit KL leash to the reference (larger stays closer); IPO's τ."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO; with label_smoothing > 0 conservative DPO), "ipo" or "robust" (see `dpo_losses`)."""
    label_smoothing: float = 0.0
    """ε: the assumed probability that a label is flipped (cDPO and robust DPO); must be in [0, ½)."""
    include_ties: bool = True
    """Train on tied pairs with target ½ (margin 0); False drops them (the number dropped is logged)."""
    epochs: int = 1
    """Passes over the pairs per `fit` call (iterative mode: per round)."""
    max_length: int = 128
    """Prompt plus reply, in tokens; longer replies are cut."""
    max_prompt_length: int = 96
    """A longer (formatted) prompt keeps its last this-many tokens."""
    group_by_length: bool = True
    """Batch pairs of similar length together (shuffled within chunks of 16 batches): far less padding."""
    ref_batch_size: int = 32
    """Pairs per no-grad forward pass when the reference log-probs are computed up front."""
    candidates: int = 2
    """Iterative mode: replies sampled per prompt each round. A reward-source judge pairs the best of them with the
    worst (best-vs-worst of n, a stronger signal per pair); people and simulated crowds judge pairs (2)."""
    min_margin: float = 0.0
    """Iterative mode with a reward-source judge: a prompt gives a pair only if its best and worst candidates' scores
    differ by at least this (in the judge's units; normalised reward models: standard deviations). Where the judge
    sees no clear difference, its ordering is mostly noise that the policy would learn as if it were taste."""

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"Unknown loss_type {self.loss_type!r}: use one of {', '.join(LOSS_TYPES)}.")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}.")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}.")
        if self.min_margin < 0:
            raise ValueError(f"min_margin must be >= 0, got {self.min_margin}.")
        if self.epochs < 1 or self.candidates < 2:
            raise ValueError(f"epochs must be at least 1 and candidates at least 2, got {self.epochs} and "
                             f"{self.candidates}.")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length "
                             f"({self.max_length}) to leave room for the reply.")


class DPOTrainer(ScoringTrainer):
    """DPO (or IPO, cDPO, robust DPO) on a causal LM policy (see the module docstring).

    policy, tokenizer: a Hugging Face causal LM and its tokenizer (`models.load_policy`). With `config.lora` the
        policy is wrapped in place with peft adapters; otherwise `ref_policy` (default: a frozen copy of `policy`
        taken now) is the reference.
    Counters for budgets: `update_` (optimiser steps), `pairs_seen_`, `samples_generated_`, `tokens_generated_`,
    `judgments_used_` (new judgments asked for in iterative mode), `round_`. `save`, `resume`: checkpoints.
    """

    config_class = DPOConfig
    counters = ("pairs_seen_", "samples_generated_", "tokens_generated_", "judgments_used_", "round_",
                "pairs_below_margin_", *FIT_POSITION)

    def __init__(self, policy, tokenizer, config: DPOConfig | None = None, *, ref_policy=None, callbacks=None,
                 metrics_path=None):
        super().__init__(policy, tokenizer, DPOConfig() if config is None else config, ref_policy, pair_logps,
                         metrics_path)
        self.callbacks = ([LiveView(keys=DPO_PLOT_KEYS)] if in_notebook() else [PrintLogger(keys=DPO_PRINT_KEYS)]
                          ) if callbacks is None else list(callbacks)
        self.pairs_seen_ = self.samples_generated_ = self.tokens_generated_ = 0
        self.judgments_used_ = self.round_ = self.pairs_below_margin_ = 0
        self.last_batch_ = None  # the candidates of the latest round (a GenerationBatch)
        self.store_ = None

    # ---- offline -------------------------------------------------------------------------------------------------
    def prepare(self, pairs) -> PreparedPairs:
        """Tokenise pairs (a DataFrame with prompt, chosen, rejected and optional tie, e.g.
        `store.preference_pairs()`; a FeedbackStore; a list of such rows as dicts or a preference JSONL file's path,
        as a reward model's fit reads them; or a list of EncodedPair) and compute their reference log-probs, once."""
        encoded = self._encoded(pairs)
        return PreparedPairs(encoded, *self.reference_logps(encoded))

    def _encoded(self, pairs) -> list[EncodedPair]:
        cfg = self.config
        if isinstance(pairs, list) and pairs and all(isinstance(p, EncodedPair) for p in pairs):
            return pairs
        return encode_pairs(self.tokenizer, self._check_pairs(pairs), cfg.sampling, cfg.max_length,
                            cfg.max_prompt_length)

    def fit(self, pairs, epochs: int | None = None, checkpoint_dir=None, checkpoint_every: int = 0) -> "DPOTrainer":
        """Train on preference pairs (anything `prepare` takes, or its result): reference log-probs computed once,
        then `epochs` (default config.epochs) shuffled passes of optimiser steps. checkpoint_dir: saved there
        (atomically) every `checkpoint_every` steps; a trainer resumed from it goes on with the same pairs where it
        stopped (other pairs are refused). Returns self."""
        cfg, epochs = self.config, self.fit_epochs(epochs)
        encoded = pairs.pairs if isinstance(pairs, PreparedPairs) else self._encoded(pairs)
        self.claim_fit_data(data_fingerprint(encoded))
        data = pairs if isinstance(pairs, PreparedPairs) else self.prepare(encoded)  # the reference, once claimed
        lengths = [p.length for p in data.pairs]

        def batches(start: int):  # (epoch, pair indices) of a fit begun at update `start`
            rng = np.random.default_rng(seed_for(self.seed, start, 3))
            for epoch in range(epochs):
                for idx in length_grouped_batches(lengths, cfg.batch_size, rng, cfg.group_by_length):
                    yield epoch, idx

        for epoch, idx in self.fit_steps(batches, checkpoint_dir, checkpoint_every):
            self.step([data.pairs[i] for i in idx], data.ref_chosen[idx], data.ref_rejected[idx], epoch=epoch)
        return self

    def _check_pairs(self, pairs) -> pd.DataFrame:
        if hasattr(pairs, "preference_pairs"):
            pairs = pairs.preference_pairs(include_ties=self.config.include_ties)
        elif isinstance(pairs, (list, str, Path)):  # rows as dicts, or a preference JSONL file: as reward models read
            pairs = as_preference_pairs(pairs)
        missing = {"prompt", "chosen", "rejected"} - set(getattr(pairs, "columns", ()))
        if missing:
            raise ValueError(f"DPO needs a DataFrame of pairs with columns prompt, chosen, rejected (missing "
                             f"{sorted(missing)}): pass store.preference_pairs() or build one with those columns.")
        if "weight" in pairs:  # never ignored in silence
            raise ValueError("DPO does not weigh pairs: drop the 'weight' column (reward models' fit weighs them)")
        if "tie" in pairs:  # "false" or "no" refused, never read as True
            pairs = pairs.assign(tie=bool_labels(pairs["tie"], "tie"))
        if "tie" in pairs and not self.config.include_ties:
            self.ties_dropped_ = int(pairs["tie"].sum())
            pairs = pairs[~pairs["tie"]]
        if len(pairs) == 0:
            raise ValueError("There are no preference pairs to train on: collect some judgments first (rate replies "
                             "or let a SimulatedCrowd annotate the store), or set include_ties=True if all are ties.")
        return pairs.reset_index(drop=True)

    @torch.no_grad()
    def reference_logps(self, encoded: list[EncodedPair]) -> tuple[Tensor, Tensor]:
        """Reference log-probs of every pair's chosen and rejected reply: (N,), (N,), without gradients, in
        length-sorted batches of `config.ref_batch_size` (with LoRA: the policy with adapters off; several processes:
        each its share of every batch, gathered)."""
        order = sorted(range(len(encoded)), key=lambda i: encoded[i].length)

        def score(rows: list[int]) -> Tensor:  # rows: places in `order` -> (len(rows), 2) chosen, rejected
            logps = reference_scores(self.model, self.policy, self.ref_policy, pair_logps,
                                     [encoded[order[r]] for r in rows], self.tokenizer.pad_token_id)
            return logps.float().view(2, len(rows)).T

        self.model.eval()
        with self.accelerator.autocast():  # several processes: each scores its share of every batch
            by_length = scored_in_shares(self.accelerator, len(order), self.config.ref_batch_size, score).cpu()
        out = torch.zeros(2, len(encoded))
        out[:, order] = by_length.T
        return out[0], out[1]

    # ---- the algorithm box ---------------------------------------------------------------------------------------
    def step(self, pairs: list[EncodedPair], ref_chosen: Tensor, ref_rejected: Tensor, epoch: int = 0) -> dict:
        """One optimiser step on a batch of encoded pairs and their reference log-probs (b,); returns metrics."""
        cfg, acc, device = self.config, self.accelerator, self.accelerator.device
        start = time.perf_counter()
        self.model.train()
        # Micro-batches of similar length (sorted inside the batch), each trimmed to its own longest row; several
        # processes: each takes its share of the batch (`batch_share`: a row at weight 0 where a share is short).
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
        stats, kept = [], []
        shares = batch_share(len(order), acc.process_index, acc.num_processes, cfg.micro_batch_size)
        for position, (rows, weights) in enumerate(shares, 1):
            micro, weights = [order[r] for r in rows], torch.tensor(weights, device=device)
            # 1. Sequence log-probs of chosen and rejected under the policy: the prompt once, both replies from it.
            batch = [pairs[i] for i in micro]
            with acc.autocast():
                logps = self.model(batch, self.tokenizer.pad_token_id)  # (2b,) `pair_logps`
            chosen_logps, rejected_logps = logps.chunk(2)  # (b,) each
            lengths = torch.tensor([len(p.chosen) for p in batch] + [len(p.rejected) for p in batch],
                                   device=device, dtype=torch.float)
            # 2. The preference loss against the precomputed reference log-probs; summed so micro-batches (and the
            # processes' shares, whose gradients are averaged) add up to the batch's mean.
            ref_c, ref_r = ref_chosen[micro].to(device), ref_rejected[micro].to(device)
            tie = torch.tensor([pairs[i].tie for i in micro], device=device)
            losses = dpo_loss(chosen_logps, rejected_logps, ref_c, ref_r, cfg.beta, cfg.loss_type,
                              cfg.label_smoothing, *lengths.chunk(2), tie=tie)  # (b,)
            if acc.reduce((~torch.isfinite(losses)).sum().float(), "sum") > 0:  # every process stops together
                raise TrainingDivergedError(f"DPO step {self.update_ + 1}: the loss became non-finite; lower the "
                                            f"learning_rate (now {cfg.learning_rate}) or use float32.")
            backward(acc, self.model, (losses * weights).sum() / len(pairs) * acc.num_processes, position == len(shares))
            with torch.no_grad():
                chosen_rewards, rejected_rewards = cfg.beta * (chosen_logps - ref_c), cfg.beta * (rejected_logps - ref_r)
                stats.append(torch.stack([losses, chosen_rewards, rejected_rewards,
                                          (chosen_rewards > rejected_rewards).float(), chosen_logps, rejected_logps],
                                         dim=1))
            kept.append(weights)
        # 3. Clip the gradient norm and step.
        grad_norm = optimizer_step(acc, self.model, self.optimizer, cfg.max_grad_norm)
        self.model.eval()
        self.update_ += 1
        self.pairs_seen_ += len(pairs)
        loss, chosen_r, rejected_r, accuracy, logp_c, logp_r = gather_kept(acc, torch.cat(stats),
                                                                           torch.cat(kept)).mean(0).tolist()
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
        """New pairs from the current policy: `config.candidates` replies to each of `pairs_per_round` prompts (drawn
        from `prompts` with the run's seed), judged by `judge`:
          - anything with `.annotate(store, items)` (a SimulatedCrowd or SimulatedAnnotator; 2 candidates): the
            judgments are recorded in `store` (default: an in-memory FeedbackStore kept as `store_`) and converted;
          - any reward source `as_reward` takes: the highest-scored reply is chosen and the lowest rejected (all
            equal: a tie).
        The pairs keep the sampled tokens (no round trip through text, which would merge or strip some tokens).
        """
        cfg = self.config
        rng = np.random.default_rng(seed_for(self.seed, round_, 4))
        drawn = [prompts[i] for i in rng.choice(len(prompts), pairs_per_round, replace=len(prompts) < pairs_per_round)]
        n = cfg.candidates
        if n != 2 and callable(getattr(judge, "annotate", None)):
            raise ValueError(f"A judge who annotates (a person, a crowd) compares pairs: set candidates=2 (now {n}).")
        batch = generate(self.whole_policy(), self.tokenizer, drawn, cfg.sampling, n_per_prompt=n, iteration=round_,
                         seed=seed_for(self.seed, round_, 5))  # rows n·i … n·i + n − 1 answer prompt i (every process
        # draws the same replies: the same seed)
        self.samples_generated_ += len(batch)
        self.last_batch_ = batch
        self.tokens_generated_ += int(batch.response_mask.sum())
        if callable(getattr(judge, "annotate", None)):
            from rlhf_lab.feedback.store import FeedbackStore

            self.store_ = store = store or self.store_ or FeedbackStore(":memory:")
            ids = store.add_responses(batch.to_records())
            row_of = {response_id: row for row, response_id in enumerate(ids)}
            items = [store.get_item(i) for i in store.add_items([ids[i:i + 2] for i in range(0, len(ids), 2)])]
            judgment_ids = judge.annotate(store, items)
            self.judgments_used_ += len(judgment_ids)
            pairs = store.preference_pairs(include_ties=cfg.include_ties)
            pairs = pairs[pairs["judgment_id"].isin(judgment_ids)]
            rows = [(row_of[c], row_of[r], bool(t)) for c, r, t in zip(pairs["chosen_id"], pairs["rejected_id"],
                                                                        pairs["tie"])]
        else:
            scores = as_reward(judge, self.tokenizer)(batch).view(-1, n)  # (P, n)
            self.judgments_used_ += len(scores)
            order = torch.argsort(-scores, dim=1, stable=True)  # (P, n), best first; ties keep sampling order
            margin = scores.max(dim=1).values - scores.min(dim=1).values  # (P,)
            rows = [(n * i + int(o[0]), n * i + int(o[-1]), bool(m == 0)) for i, (o, m) in enumerate(zip(order, margin))
                    if m >= cfg.min_margin and (cfg.include_ties or m > 0)]
            self.pairs_below_margin_ += int((margin < cfg.min_margin).sum())
        prompt = lambda i: batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()  # noqa: E731
        reply = lambda i: batch.response_ids[i][batch.response_mask[i].bool()].tolist()  # noqa: E731
        return [EncodedPair(prompt(c), reply(c), reply(r), tie) for c, r, tie in rows]

    def train_iterative(self, prompts: list[str], judge, rounds: int, pairs_per_round: int = 32,
                        store=None, checkpoint_dir=None) -> "DPOTrainer":
        """Iterative DPO: each round, `collect_pairs` from the current policy, then `fit` on them (the reference
        stays the initial policy). Runs until `round_ == rounds`; checkpoint_dir: saved there after every round (a
        resumed trainer goes on with the next). Returns self."""
        prompts = prompt_list(prompts)
        if not prompts:
            raise ValueError("train_iterative needs prompts to sample replies for.")
        while self.round_ < rounds:
            pairs = self.collect_pairs(prompts, judge, self.round_ + 1, pairs_per_round, store)
            if pairs:
                self.fit(pairs)
            self.round_ += 1
            if checkpoint_dir:
                self.save(checkpoint_dir)
        return self
