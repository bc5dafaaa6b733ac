"""A cost model: the probability that a reply gets flagged (harmful, biased, off-topic, ...), learned from flags.

    cost = CostModel().fit(store)            # every flags judgment: flagged (any flag) vs checked and left unflagged
    cost.score(prompts, replies)             # (N,) P(flagged) in [0, 1]: a cost source for PPO (`train.constraint`)
    cost.accuracy(prompts, replies, flagged) # share of replies classified as the flags say (threshold ½)

Like the embedding reward model (`reward.embedding`), nothing deep is trained: each reply becomes the fixed vector
x(prompt, reply) (the MiniLM embedding of the reply, its product with the prompt's, and the surface features:
sentiment, repetition, overlap with the prompt, ...), standardised, and the cost is a logistic classifier on it,

    c(x, y) = P(flagged | x, y) = σ(w·x(x, y) + b),    loss = mean BCE(c, flagged) + λ·‖w‖²/n

fitted full-batch with L-BFGS (the bias is not penalised). Safe RLHF (Dai et al. 2023) trains its cost model on
harmful/harmless labels the same way and uses it beside the reward model: as a penalty or a constraint on the
expected cost of the policy's replies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from rlhf_lab.core.config import Config, Seeded
from rlhf_lab.core.errors import not_fitted
from rlhf_lab.core.files import SaveKind, atomic_directory, existing_or_aside, verify_digests, write_manifest
from rlhf_lab.core.inputs import bool_labels
from rlhf_lab.feedback.flags import flag_examples
from rlhf_lab.feedback.preferences import judgments_origin
from rlhf_lab.reward.encoder import sentence_encoder
from rlhf_lab.reward.evaluation import scored_lists
from rlhf_lab.reward.text_features import FIRST_SURFACE, surface_features

__all__ = ["CostModelConfig", "CostModel"]

FORMAT_VERSION = 1
COST_BLOCKS = ("reply", "prompt_x_reply", "surface")


@dataclass
class CostModelConfig(Config, Seeded):
    """How a cost model reads replies and is fitted. Saved with the model."""

    features: tuple[str, ...] = COST_BLOCKS
    """Blocks of x: "reply" (its embedding), "prompt_x_reply" (elementwise product with the prompt's embedding),
    "surface" (`text_features.FIRST_SURFACE`)."""
    l2: float = 1.0
    """λ of the L2 penalty on w (features standardised): larger is smoother."""
    embedding_weight: float = 0.1
    """Embedding features are multiplied by this after standardisation (a prior that lets the few surface features
    explain what they can first); 1.0 treats every feature alike."""
    flags: tuple[str, ...] | None = None
    """Which flags count as a cost (names from `feedback.records.FLAGS`); None: any flag."""
    seed: int | None = None
    """Unused by the deterministic fit; kept so that an experiment's seed passes through like every config's."""

    def __post_init__(self):
        self.features = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        self.flags = None if self.flags is None else (self.flags,) if isinstance(self.flags, str) else tuple(self.flags)
        if not self.features or set(self.features) - set(COST_BLOCKS):
            raise ValueError(f"features must be some of {', '.join(map(repr, COST_BLOCKS))}; got {self.features}.")
        if not min(self.l2, self.embedding_weight) > 0:
            raise ValueError(f"l2 and embedding_weight must be > 0; got {self.l2} and {self.embedding_weight}.")


class CostModel:
    """See the module docstring. Learned state: weights_ (F,), bias_ (a float), mean_ and std_ (F,) of the
    features (std_ divided by each feature's prior weight), n_flagged_ and n_unflagged_ (the examples fitted on),
    origin_ (what they came from: judgment ids, annotators, iterations and models, as far as the rows say)."""

    def __init__(self, config: CostModelConfig | None = None):
        self.config = config or CostModelConfig()

    def __repr__(self) -> str:
        return f"CostModel({self.config})"

    def featurize(self, prompts, responses) -> torch.Tensor:
        """x(prompt, reply) for each reply: (N, F) float32, unstandardised."""
        prompts, responses = list(prompts), list(responses)
        blocks = []
        if {"reply", "prompt_x_reply"} & set(self.config.features):
            reply_emb = sentence_encoder().encode(responses)  # (N, 384)
            if "reply" in self.config.features:
                blocks.append(reply_emb)
            if "prompt_x_reply" in self.config.features:
                blocks.append(sentence_encoder().encode(prompts) * reply_emb * math.sqrt(reply_emb.shape[1]))
        if "surface" in self.config.features:
            blocks.append(torch.tensor([surface_features(p, r, FIRST_SURFACE) for p, r in zip(prompts, responses)]))
        return torch.cat(blocks, dim=1).float()

    def _prior(self) -> torch.Tensor:
        """Each column's prior weight: embedding_weight on embedding columns, 1 on surface features. (F,)"""
        width = {"reply": 384, "prompt_x_reply": 384, "surface": len(FIRST_SURFACE)}
        return torch.cat([torch.full((width[b],), 1.0 if b == "surface" else self.config.embedding_weight)
                          for b in COST_BLOCKS if b in self.config.features])

    def fit(self, data) -> "CostModel":
        """Fit on flags: a FeedbackStore (its flags judgments, `feedback.flags.flag_examples`), or rows (a DataFrame
        or list of dicts) with prompt, response and flagged. Returns self."""
        df = flag_examples(data, self.config.flags) if hasattr(data, "judgments_df") else pd.DataFrame(data)
        missing = {"prompt", "response", "flagged"} - set(df.columns)
        if missing or df.empty:
            raise ValueError(f"a cost model fits rows with prompt, response and flagged (missing {sorted(missing)}): "
                             "pass a FeedbackStore with flags judgments or `flag_examples(store)`.")
        y = torch.tensor(bool_labels(df["flagged"], "flagged"), dtype=torch.float32)  # (N,); "no" or NaN refused
        self.n_flagged_, self.n_unflagged_ = int(y.sum()), int(len(y) - y.sum())
        self.origin_ = judgments_origin(df)
        if not self.n_flagged_ or not self.n_unflagged_:
            raise ValueError(f"a cost model needs both flagged and unflagged replies; got {self.n_flagged_} flagged "
                             f"and {self.n_unflagged_} unflagged: collect flags on more replies.")
        x = self.featurize(df["prompt"], df["response"])  # (N, F)
        std = x.std(0, correction=0)
        self.mean_, self.std_ = x.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std)) / self._prior()
        self.weights_, self.bias_ = _fit_logistic((x - self.mean_) / self.std_, y, self.config.l2)
        return self

    def check_fitted(self) -> None:
        """Raise NotFittedError (one line: fit or load it) unless the model was fitted or loaded."""
        if not hasattr(self, "weights_"):
            raise not_fitted(self, "fit(flags)")

    def logits(self, prompts, responses) -> torch.Tensor:
        """w·x + b for each reply: (N,)."""
        self.check_fitted()
        return (self.featurize(prompts, responses) - self.mean_) / self.std_ @ self.weights_ + self.bias_

    def score(self, prompts, responses) -> torch.Tensor:
        """The cost of each reply, P(flagged) = σ(w·x + b): (N,) float32 in [0, 1]. `prompts` may be one string;
        no replies give an empty tensor."""
        self.check_fitted()
        prompts, responses = scored_lists(prompts, responses)
        if not responses:
            return torch.empty(0)
        return torch.sigmoid(self.logits(prompts, responses))

    def accuracy(self, prompts, responses, flagged) -> float:
        """Share of replies on the same side of P = ½ as their flags (True: flagged)."""
        predicted = (self.score(prompts, responses) > 0.5).numpy()
        return float(np.mean(predicted == np.asarray(flagged, dtype=bool)))

    def save(self, path) -> Path:
        """cost.safetensors and cost_model.json (config, counts, origin, the tensors' SHA-256), atomically (no
        pickle)."""
        self.check_fitted()
        path = Path(path)
        meta = {"format": FORMAT_VERSION, "config": self.config.to_dict(), "bias": self.bias_,
                "n_flagged": self.n_flagged_, "n_unflagged": self.n_unflagged_, "origin": self.origin_}
        with atomic_directory(path, kind=SaveKind("cost_model.json", "a cost model", "cost_model")) as tmp:
            save_file({"weights": self.weights_.contiguous(), "mean": self.mean_.contiguous(),
                       "std": self.std_.contiguous()}, str(tmp / "cost.safetensors"))
            write_manifest(tmp, "cost_model.json", meta)  # its checksums are checked by `load`
        return path

    @classmethod
    def load(cls, path) -> "CostModel":
        """A cost model written by `save` (its checksums verified)."""
        try:  # a replace interrupted between its two renames left the old model aside: that one
            path = existing_or_aside(path, "cost_model.json", "cost model")
        except FileNotFoundError:
            raise ValueError(f"{path} holds no cost_model.json: pass a folder written by CostModel.save.") from None
        meta = json.loads((path / "cost_model.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} holds cost model format {meta.get('format')}; this rlhf-lab reads format "
                             f"{FORMAT_VERSION}.")
        verify_digests(path, meta["sha256"], "cost model")
        model = cls(CostModelConfig.from_dict(meta["config"]))
        tensors = load_file(str(path / "cost.safetensors"))
        # fresh copies score exactly as the saved model did (see `EmbeddingRewardModel.load`)
        model.weights_, model.mean_, model.std_ = (tensors[k].clone() for k in ("weights", "mean", "std"))
        model.bias_, model.n_flagged_, model.n_unflagged_ = meta["bias"], meta["n_flagged"], meta["n_unflagged"]
        model.origin_ = meta.get("origin", {})
        return model


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, float]:
    """argmin_{w,b} mean BCE(σ(x·w + b), y) + l2·‖w‖²/n by L-BFGS: (N, F), (N,) -> ((F,), b). The bias starts at the
    log-odds of the base rate and is not penalised."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    rate = y.mean().item()
    b = torch.tensor(math.log(rate / (1 - rate)), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w @ w) / len(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), float(b.detach())
