"""The frozen sentence encoder that embedding reward models (`reward.embedding`, `reward.cost`) read replies with.

    vectors = sentence_encoder().encode(["Hi!", "Hello there."])     # (2, 384), unit length, cached by text
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_lab.reward.network import MINILM, load_backbone

__all__ = ["SentenceEncoder", "sentence_encoder"]


class SentenceEncoder:
    """The all-MiniLM-L6-v2 sentence encoder (mean-pooled, unit length), with a cache of texts already encoded."""

    def __init__(self, batch_size: int = 64):
        model, self.tokenizer = load_backbone(MINILM)
        self.model, self.batch_size, self.cache = model.eval(), batch_size, {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, 384) unit-length embeddings."""
        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state  # (b, T, D)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1)
            self.cache.update(zip(chunk, pooled))
        return torch.stack([self.cache[t] for t in texts]) if texts else torch.zeros(0, 384)


_ENCODER: SentenceEncoder | None = None


def sentence_encoder() -> SentenceEncoder:
    """The process's shared encoder, made on first use: models that read embeddings (`reward.embedding`,
    `reward.cost`) share its cache."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = SentenceEncoder()
    return _ENCODER
