"""Bradley–Terry reward models: fit a scalar reward to preference pairs, score replies, save and load.

    rm = RewardModel(RewardConfig(backbone="minilm")).fit(store)   # a FeedbackStore, a DataFrame of pairs or a .jsonl
    rm.history_                                      # train/val loss and accuracy per step
    rm.evaluate(gold=GoldUtility())                  # held-out accuracy, log-loss, calibration, ... (reward.evaluation)
    rm.normalize(prompts, reference_replies)         # mean 0, std 1 on reference-policy samples (PPO checklist 5)
    rm.score(prompts, responses)                     # (N,) normalised rewards
    rm.save("runs/rm");  RewardModel.load("runs/rm", tokenizer=policy_tokenizer)

The model reads a prompt x and a reply y and returns r(x, y) = w·h(x, y) + b, where h is the backbone's hidden state
at the last real token (causal LM) or its mean-pooled token embeddings (sentence encoder), never a padding position.
The Bradley–Terry model says a person prefers y_c over y_r with probability

    P(y_c ≻ y_r | x) = σ(r(x, y_c) − r(x, y_r)),

and `fit` maximises that likelihood on the training pairs (see `bradley_terry_loss`). Ensembles (`RewardEnsemble`)
give a mean reward and a spread, the uncertainty that active learning and over-optimisation warnings use.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from rlhf_lab.core.batching import length_grouped_batches
from rlhf_lab.core.config import Config, Seeded
from rlhf_lab.core.checkpoint import tensor_bytes
from rlhf_lab.core.files import (SaveKind, atomic_directory, ensure_free_space, existing_or_aside, verify_digests,
                                 write_manifest)
from rlhf_lab.core.hf import adamw, bf16_compute, disable_dropout, switch_attention
from rlhf_lab.core.memory import reuse_freed_memory
from rlhf_lab.core.packed_attention import can_attend_by_segment
from rlhf_lab.core.seeding import seeded, set_seed
from rlhf_lab.feedback.preferences import pair_weights, split_by_prompt
from rlhf_lab.reward.evaluation import NormalisedScores, scored_lists
from rlhf_lab.reward.network import (
    MINILM,
    RewardNet,
    TokenizerMismatchError,
    backbone_kind,
    bradley_terry_loss,
    load_backbone,
    one_row,
    packed_rows,
    pair_rows,
    reward_text,
    shared_prefix_length,
    tokenizer_fingerprint,
)

__all__ = ["RewardConfig", "RewardModel", "FORMAT_VERSION"]

FORMAT_VERSION = 1
LR_SCHEDULES = ("linear", "constant")


@dataclass
class RewardConfig(Config, Seeded):
    """How a reward model is built and trained. Saved inside every reward model directory."""

    backbone: str = MINILM
    """"minilm" (the all-MiniLM-L6-v2 sentence encoder, fast on CPU) or a causal LM: an alias ("tiny",
    "smollm2-135m"), a hub id or a local directory. Only a causal LM can read a policy's tokens directly."""
    max_length: int = 128
    """Tokens per prompt+reply. A causal LM keeps the last max_length tokens (the reward is read at the end); the
    encoder shortens the longer of prompt and reply."""
    batch_size: int = 16
    """Preference pairs per optimiser step (each step runs 2 x batch_size sequences)."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (high-ish for full fine-tuning: a learner's data makes only a few steps)."""
    epochs: int = 1
    """Passes over the training pairs; one is the usual choice (reward models overfit quickly)."""
    lr_schedule: str = "linear"
    """"linear": decay from learning_rate to 0 over training; "constant": keep it."""
    weight_decay: float = 0.0
    """AdamW weight decay, applied to matrices only (not biases or norms)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this."""
    val_fraction: float = 0.2
    """Share of *prompts* held out for validation: no prompt is in both train and val."""
    include_ties: bool = True
    """True: a tie is a pair with target P = 1/2 (binary cross-entropy with 0.5, which pulls the two rewards
    together); False: ties are left out of training and evaluation."""
    use_margin: bool = False
    """Subtract each pair's margin m (the store's strength or rating gap; NaN = 0) inside the sigmoid:
    −log σ(r_c − r_r − m), as in Llama 2, so strongly preferred pairs must be separated by more."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory (SmolLM2 at batch 16: most of its ~10 GB peak
    is activations) for about a third more time."""
    dropout: bool = False
    """Keep the backbone's dropout in training. Off by default, as in TRL's RewardTrainer (`disable_dropout`) and
    PPO checklist 6; off, a MiniLM step in bf16 on a CPU runs about 1.25× faster (29.5 against 23.5 pairs/s with the
    eager kernels, `bench/results/speed_cpu`)."""
    share_prompt: bool = True
    """Causal backbones: pack each pair into one row, the tokens its two sequences start with in common (chat
    template and prompt) run once and each reply masked from the other (`RewardNet.forward_tree`): the same rewards
    and gradients, rounded differently, for fewer tokens and less padding."""
    pack_rows: bool = True
    """The encoder: pack the batch's sequences, each reading only itself: into one row with SDPA attention, attention
    sequence by sequence (`RewardNet.forward_segments`), else several per row under a mask (`forward_packed`). The
    same rewards and gradients, rounded differently, without the padding up to the batch's longest sequence."""
    group_by_length: bool = True
    """Batch pairs of similar length together (shuffled in chunks), which removes most of the padding."""
    eval_every: int = 0
    """Also evaluate on the validation pairs every this many steps (0: at the end of each epoch only)."""
    normalize_sample: int = 256
    """After fit, normalise rewards on up to this many training replies (call `normalize` again on
    reference-policy samples before PPO)."""
    seed: int | None = None
    """Seeds the head, the data order, dropout and the train/val split. None: 0, or the experiment's seed inside an
    `ExperimentConfig`."""
    ensemble_size: int = 1
    """k > 1 makes `build_reward_model` return a `RewardEnsemble` of k members with seeds seed, seed+1, ..."""
    bootstrap: bool = True
    """Ensembles only: each member trains on a bootstrap resample of the training pairs."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CPU (reward models here are small: the GPU goes to the policy)."""
    mixed_precision: str = "auto"
    """Training compute: "bf16" autocast (weights, gradients and optimiser state stay float32), "no" (float32), or
    "auto": bf16 on a CPU or GPU that multiplies bf16 in hardware (AVX-512 BF16 / AMX; Ampere and newer), float32 on
    older GPUs (a T4). Scoring after training is float32 either way."""

    def __post_init__(self):
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}.")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be >= 1, got {self.batch_size} and {self.epochs}.")
        if not self.learning_rate > 0 or self.weight_decay < 0 or not self.max_grad_norm > 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0 and weight_decay >= 0.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if self.eval_every < 0 or self.normalize_sample < 1:
            raise ValueError("eval_every must be >= 0 and normalize_sample >= 1.")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}.")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'auto', got {self.mixed_precision!r}.")

    @property
    def kind(self) -> str:
        """"encoder" (mean-pooled sentence encoder) or "causal" (reward at the last real token)."""
        return backbone_kind(self.backbone)



class RewardModel(NormalisedScores):
    """A Bradley–Terry reward model (scikit-learn conventions: `fit` returns self, learned state ends in `_`).

    Learned state: net_ (RewardNet), tokenizer_, history_ (list of dicts: step, epoch, lr, train/loss,
    train/accuracy, perf/step_s, and val/loss, val/accuracy where evaluated), norm_mean_, norm_std_, val_pairs_ (held out).
    """

    fitted_attribute = "net_"  # set by fit (and by load)

    def __init__(self, config: RewardConfig | None = None):
        self.config = config or RewardConfig()
        if self.config.ensemble_size > 1:
            raise ValueError("ensemble_size > 1: use RewardEnsemble(config) or build_reward_model(config).")

    def __repr__(self) -> str:
        return f"RewardModel({self.config})"

    # ---- building ------------------------------------------------------------------------------------------------
    def _build(self, fresh: bool = False) -> None:
        """Load the backbone and make a new head (once; `fresh` rebuilds, as every `fit` does)."""
        if hasattr(self, "net_") and not fresh:
            return
        backbone, self.tokenizer_ = load_backbone(self.config.backbone, self.config.seed_value)
        with seeded(self.config.seed_value):
            self.net_ = RewardNet(backbone, self.config.kind).float()
        self.net_.to(self.device)
        self.norm_mean_, self.norm_std_ = 0.0, 1.0
        self.history_ = []

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device or "cpu")

    def _encode(self, prompts, responses) -> list[dict]:
        """Tokenise (prompt, reply) pairs without padding: one dict of id lists per reply."""
        tok, n = self.tokenizer_, self.config.max_length
        if self.config.kind == "encoder":  # [CLS] prompt [SEP] reply [SEP], the longer part shortened first
            enc = tok(list(prompts), list(responses), truncation="longest_first", max_length=n)
            return [{k: enc[k][i] for k in enc} for i in range(len(enc["input_ids"]))]
        has_template = bool(getattr(tok, "chat_template", None))
        texts = [reward_text(tok, p, r) for p, r in zip(prompts, responses)]
        enc = tok(texts, add_special_tokens=not has_template)
        return [{"input_ids": ids[-n:], "attention_mask": mask[-n:]}  # keep the end, where the reward is read
                for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]

    def _collate(self, features: list[dict]) -> dict:
        """Pad a list of encodings on the tokenizer's padding side: tensors (B, T) on the model's device."""
        batch = self.tokenizer_.pad(features, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    # ---- training ------------------------------------------------------------------------------------------------
    def fit(self, data, val=None, progress: bool = True) -> "RewardModel":
        """Train a fresh model (backbone as loaded, new head) on preference pairs (see `as_preference_pairs`).

        val: held-out pairs; None splits `data` by prompt with `config.val_fraction`.
        progress: show a tqdm progress bar.
        A `weight` column (`preferences.weight_by_source`) weighs each pair's loss by w / (mean w of the training
        pairs): each batch estimates Σ w ℓ / Σ w. Pairs of weight 0 are left out.
        """
        cfg, seed = self.config, self.config.seed_value
        set_seed(seed)
        pairs = pair_weights(self.usable_pairs(data))[0]
        train, val = (split_by_prompt(pairs, cfg.val_fraction, seed) if val is None
                      else (pairs, pair_weights(self.usable_pairs(val))[0]))
        if len(train) == 0:
            raise ValueError("no training pairs left (all were ties with include_ties=False?)")
        self._build(fresh=True)
        if self.device.type == "cpu":
            reuse_freed_memory()  # large gradient and activation blocks reused, not faulted in afresh
        if cfg.gradient_checkpointing:
            _enable_checkpointing(self.net_.backbone)
        if not cfg.dropout:
            disable_dropout(self.net_)
        self.net_.train()
        chosen = self._encode(train["prompt"], train["chosen"])
        rejected = self._encode(train["prompt"], train["rejected"])
        shared = [shared_prefix_length(c["input_ids"], r["input_ids"]) for c, r in zip(chosen, rejected)]
        tie = torch.tensor(train["tie"].to_numpy(), dtype=torch.bool)
        margin = torch.tensor(train["margin"].to_numpy(), dtype=torch.float32) if cfg.use_margin else None
        weight = _relative_weights(train)
        lengths = [len(c["input_ids"]) + len(r["input_ids"]) - n  # the tokens a pair runs packed (share_prompt)
                   for c, r, n in zip(chosen, rejected, shared)]

        rng = np.random.default_rng(seed)
        epoch_batches = [length_grouped_batches(lengths, cfg.batch_size, rng, cfg.group_by_length)
                         for _ in range(cfg.epochs)]
        total = sum(len(b) for b in epoch_batches)
        optimizer = adamw(_param_groups(self.net_, cfg.weight_decay), cfg.learning_rate, eps=1e-8)  # torch's ε
        decay = (lambda s: 1 - s / total) if cfg.lr_schedule == "linear" else (lambda s: 1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)

        bar = tqdm(total=total, desc="reward model", disable=not progress, leave=False)
        bf16 = bf16_compute(cfg.mixed_precision, self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        # SDPA's bf16 backward is slow on a CPU (core.hf.eager_attention_for_cpu_bf16): eager kernels while training
        eager = bf16 and self.device.type == "cpu" and switch_attention(self.net_.backbone, "sdpa", "eager")
        step = 0
        for epoch, batches in enumerate(epoch_batches):
            for i, idx in enumerate(batches):
                start = time.perf_counter()
                B = len(idx)
                with autocast:
                    r = self._pair_rewards(chosen, rejected, shared, idx)  # (2B,)
                r_chosen, r_rejected = r[:B], r[B:]
                loss = bradley_terry_loss(r_chosen, r_rejected, tie[idx].to(self.device),
                                          None if margin is None else margin[idx].to(self.device),
                                          None if weight is None else weight[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net_.parameters(), cfg.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                step += 1
                record = {"step": step, "epoch": epoch + (i + 1) / len(batches), "lr": lr, "train/loss": loss.item(),
                          "train/accuracy": _accuracy(r_chosen, r_rejected, tie[idx]),
                          "perf/step_s": time.perf_counter() - start}
                if len(val) and ((cfg.eval_every and step % cfg.eval_every == 0) or i + 1 == len(batches)):
                    record.update(self._validate(val))
                self.history_.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['train/loss']:.3f}")
        bar.close()
        if eager:
            switch_attention(self.net_.backbone, "eager", "sdpa")
        self.net_.eval()
        self.val_pairs_ = val
        replies = pd.concat([train[["prompt", "chosen"]].set_axis(["prompt", "response"], axis=1),
                             train[["prompt", "rejected"]].set_axis(["prompt", "response"], axis=1)])
        replies = replies.drop_duplicates().sample(frac=1.0, random_state=seed).head(cfg.normalize_sample)
        self.normalize(replies["prompt"].tolist(), replies["response"].tolist())
        return self

    def _pair_rewards(self, chosen: list[dict], rejected: list[dict], shared: list[int],
                      idx: list[int]) -> torch.Tensor:
        """Raw rewards (2B,) [chosen_1..B, rejected_1..B] of the pairs `idx`: with `config.share_prompt` (a causal
        model on eager or SDPA attention) each pair j is one row whose first `shared[j]` tokens run once
        (`RewardNet.forward_tree`); with `config.pack_rows` (the encoder) the sequences share one row, attention
        sequence by sequence (SDPA: `RewardNet.forward_segments`), or several share each row under a mask
        (`RewardNet.forward_packed`); otherwise each sequence is its own row."""
        if self.config.share_prompt and self.config.kind == "causal" and \
                self.net_.backbone.config._attn_implementation in ("eager", "sdpa"):
            seqs = [(chosen[j]["input_ids"], rejected[j]["input_ids"], shared[j]) for j in idx]
            rows = pair_rows([c[:n] for c, _, n in seqs], [c[n:] for c, _, n in seqs], [r[n:] for _, r, n in seqs],
                             self.tokenizer_.pad_token_id or 0)
            return self.net_.forward_tree(*(t.to(self.device) for t in rows)).float()
        if self.config.pack_rows and self.config.kind == "encoder" and can_attend_by_segment(self.net_.backbone):
            *row, layout = one_row([chosen[j] for j in idx] + [rejected[j] for j in idx])
            return self.net_.forward_segments(*(t.to(self.device) for t in row), layout).float()
        if self.config.pack_rows and self.config.kind == "encoder":
            rows = packed_rows([chosen[j] for j in idx] + [rejected[j] for j in idx], self.tokenizer_.pad_token_id or 0)
            return self.net_.forward_packed(*(t.to(self.device) for t in rows)).float()
        return self.net_(**self._collate([chosen[j] for j in idx] + [rejected[j] for j in idx])).float()

    def _validate(self, val: pd.DataFrame) -> dict:
        r_c, r_r = self.score_raw(val["prompt"], val["chosen"]), self.score_raw(val["prompt"], val["rejected"])
        tie = torch.tensor(val["tie"].to_numpy(), dtype=torch.bool)
        margin = torch.tensor(val["margin"].to_numpy(), dtype=torch.float32) if self.config.use_margin else None
        return {"val/loss": bradley_terry_loss(r_c, r_r, tie, margin, _relative_weights(val)).item(),
                "val/accuracy": _accuracy(r_c, r_r, tie)}

    # ---- scoring -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_raw(self, prompts, responses, batch_size: int | None = None) -> torch.Tensor:
        """Unnormalised rewards r(x, y), shape (N,), on the CPU. `prompts` may be one string shared by all; no
        replies give an empty tensor."""
        self.check_fitted()
        prompts, responses = scored_lists(prompts, responses)
        if not responses:
            return torch.empty(0)
        features = self._encode(prompts, responses)
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))  # little padding
        out = torch.empty(len(features))
        was_training = self.net_.training
        self.net_.eval()
        size = batch_size or 2 * self.config.batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            out[idx] = self.net_(**self._collate([features[i] for i in idx])).float().cpu()
        self.net_.train(was_training)
        return out

    def score(self, prompts, responses, batch_size: int | None = None) -> torch.Tensor:
        """Normalised rewards (r − mean) / std, shape (N,) (see `normalize`); no replies give an empty tensor."""
        return (self.score_raw(prompts, responses, batch_size) - self.norm_mean_) / self.norm_std_

    @torch.no_grad()
    def score_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised rewards of token sequences (B, T) -> (B,), for a causal LM whose tokenizer the policy shares.

        The ids must be the policy's query + response ending in EOS (as `reward_text` writes them), padded anywhere
        the mask says; like text scoring, only the last `max_length` real tokens are read. Call
        `check_tokenizer(policy_tokenizer)` once first. `reward.sources.ModelReward` uses this only where it agrees
        with `score` (every reply ended in EOS, no custom system prompt) and scores the text otherwise.
        """
        self.check_fitted()
        if self.config.kind != "causal":
            raise TypeError("score_tokens needs a causal-LM backbone; an encoder reward model scores text: "
                            "use score(prompts, responses).")
        was_training = self.net_.training
        self.net_.eval()
        kept = attention_mask.flip(1).cumsum(1).flip(1) <= self.config.max_length  # the last max_length real tokens
        attention_mask = attention_mask * kept.to(attention_mask.dtype)
        raw = self.net_(input_ids.to(self.device), attention_mask.to(self.device)).float()
        self.net_.train(was_training)
        return (raw - self.norm_mean_) / self.norm_std_

    # ---- tokenizers, saving and loading --------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer) -> None:
        """Raise TokenizerMismatchError unless `tokenizer` maps text to the same ids as this model's tokenizer."""
        self.check_fitted()
        if tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(self.tokenizer_):
            raise TokenizerMismatchError(
                f"This reward model ({self.config.backbone}) was trained with a different tokenizer "
                f"(vocabulary of {len(self.tokenizer_)} vs {len(tokenizer)} tokens, or other ids). Its token ids "
                "would be read wrongly: score text with score(prompts, responses) instead of score_tokens, or use "
                "a reward model built on the policy's own tokenizer.")

    def save(self, path: str | Path) -> Path:
        """Write model.safetensors, config.json (backbone), the tokenizer files and reward_model.json, atomically:
        the directory is complete or absent (an older one stays until the new one is whole)."""
        self.check_fitted()
        path = Path(path)
        meta = {"format": FORMAT_VERSION, "config": asdict(self.config), "norm_mean": self.norm_mean_,
                "norm_std": self.norm_std_, "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer_),
                "history": self.history_}
        ensure_free_space(path.parent, tensor_bytes(self.net_.state_dict()), f"the reward model {path}")
        with atomic_directory(path, kind=SaveKind("reward_model.json", "a reward model", "reward_model")) as tmp:
            save_model(self.net_, str(tmp / "model.safetensors"))
            self.net_.backbone.config.save_pretrained(tmp)
            self.tokenizer_.save_pretrained(tmp)
            write_manifest(tmp, "reward_model.json", meta)  # its checksums are checked by `load`
        return path

    @classmethod
    def load(cls, path: str | Path, tokenizer=None, device: str | None = None) -> "RewardModel":
        """Read a saved reward model. With `tokenizer` (e.g. the policy's), fail clearly unless it matches."""
        path = existing_or_aside(path, "reward_model.json", "reward model")
        meta = json.loads((path / "reward_model.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} holds reward model format {meta.get('format')}; this rlhf-lab reads "
                             f"format {FORMAT_VERSION}.")
        if "sha256" in meta:  # saved before checksums: loaded unverified
            verify_digests(path, meta["sha256"], "reward model")
        model = cls(RewardConfig.from_dict(dict(meta["config"], device=device or meta["config"]["device"])))
        model.tokenizer_ = AutoTokenizer.from_pretrained(path)
        if tokenizer_fingerprint(model.tokenizer_) != meta["tokenizer_fingerprint"]:
            raise TokenizerMismatchError(f"The tokenizer files in {path} do not match the ones the model was saved "
                                         "with: the directory was changed after saving.")
        backbone_config = AutoConfig.from_pretrained(path)
        extra = {"add_pooling_layer": False} if model.config.kind == "encoder" else {}
        model.net_ = RewardNet(AutoModel.from_config(backbone_config, **extra), model.config.kind).float()
        load_model(model.net_, str(path / "model.safetensors"))
        model.net_.to(model.device).eval()
        model.norm_mean_, model.norm_std_ = meta["norm_mean"], meta["norm_std"]
        model.history_ = meta["history"]
        if tokenizer is not None:
            model.check_tokenizer(tokenizer)
        return model


def _enable_checkpointing(backbone: nn.Module) -> None:
    """Activation checkpointing under its transformers 5 name, or its older one."""
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable({"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    params = [p for p in net.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _relative_weights(pairs: pd.DataFrame) -> torch.Tensor | None:
    """The `weight` column divided by its mean (None without one): batches then estimate Σ w ℓ / Σ w."""
    if "weight" not in pairs or len(pairs) == 0:
        return None
    w = torch.tensor(pairs["weight"].to_numpy(dtype=float), dtype=torch.float32)
    return w / w.mean()


def _accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: torch.Tensor) -> float:
    """Share of non-tie pairs with r_chosen > r_rejected (NaN when all are ties)."""
    keep = ~tie.to(r_chosen.device)
    return (r_chosen[keep] > r_rejected[keep]).float().mean().item() if keep.any() else math.nan
