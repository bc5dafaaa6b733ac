"""Reward sources for PPO, each turned into one batched scorer: `reward(batch) -> scores (B,)`.

    as_reward(lambda texts: [t.count("!") for t in texts])          # any function of the reply texts
    as_reward(lambda prompts, responses: my_scores(prompts, responses))
    as_reward(GoldUtility())  or  as_reward("gold")                   # the simulated crowd's hidden gold utility
    as_reward(reward_model, tokenizer=policy_tokenizer)              # anything with .score(prompts, responses)

A reward model that also has `.score_tokens(input_ids, attention_mask)` and accepts the policy's tokenizer
(`.check_tokenizer(tokenizer)` does not raise) reads the policy's query+response tokens directly; otherwise it scores
the decoded text, re-tokenised with its own tokenizer. Every scorer returns float32 scores on the CPU, one per reply.
Replies are the texts `generate` returns: cut at the first EOS, without the prompt.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from rlhf_lab.feedback.gold import GoldUtility, gold_utility

__all__ = ["Reward", "CallableReward", "GoldReward", "ModelReward", "as_reward"]


class Reward:
    """A batched scorer. Subclasses implement `score(prompts, responses)`; `__call__` scores a GenerationBatch."""

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Scores of replies to prompts: (N,) float32 on the CPU."""
        raise NotImplementedError

    def __call__(self, batch) -> torch.Tensor:
        """Scores of a `GenerationBatch`'s replies: (B,) float32 on the CPU."""
        return self.score(batch.prompts, batch.responses)


def _as_scores(values, n: int, source) -> torch.Tensor:
    """Lists, arrays or tensors of n numbers -> (n,) float32 CPU tensor, with a clear error for anything else."""
    scores = torch.as_tensor(np.asarray(values.detach().cpu() if torch.is_tensor(values) else values,
                                        dtype=np.float32)).reshape(-1)
    if scores.numel() != n:
        raise ValueError(f"The reward {source!r} returned {scores.numel()} scores for {n} replies; it must return "
                         "one number per reply (a list, array or tensor).")
    return scores


class CallableReward(Reward):
    """Any Python function: `fn(responses)` (one argument: the reply texts) or `fn(prompts, responses)`.

    The function gets whole lists and must return one number per reply.
    """

    def __init__(self, fn):
        self.fn = fn
        self.takes_prompts = _n_positional(fn) >= 2

    def __repr__(self) -> str:
        return f"CallableReward({getattr(self.fn, '__name__', self.fn)!r})"

    def score(self, prompts, responses) -> torch.Tensor:
        values = self.fn(list(prompts), list(responses)) if self.takes_prompts else self.fn(list(responses))
        return _as_scores(values, len(responses), self.fn)


def _n_positional(fn) -> int:
    """How many positional arguments `fn` takes (2 when it takes *args)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params)


class GoldReward(Reward):
    """The simulated crowd's hidden gold utility (see `rlhf_lab.feedback.gold.GoldUtility`)."""

    def __init__(self, gold: GoldUtility | None = None):
        self.gold = gold or GoldUtility()

    def __repr__(self) -> str:
        return f"GoldReward({self.gold!r})"

    def score(self, prompts, responses) -> torch.Tensor:
        return _as_scores(self.gold(list(prompts), list(responses)), len(responses), self.gold)


class ModelReward(Reward):
    """A reward model: any object with `.score(prompts, responses)`, and optionally `.score_tokens(ids, mask)`.

    tokenizer: the policy's tokenizer. Tokens are passed directly only when the model has `score_tokens` and its
    `check_tokenizer(tokenizer)` accepts this tokenizer; a model without `check_tokenizer` is never trusted with
    the policy's ids. Otherwise (or when `score_tokens` raises TypeError, as an encoder model's does) the decoded
    replies are scored as text. Tokens are also only read for a batch where they say what the text says to the
    model: every reply ended in EOS (text scoring, like training, reads each reply followed by EOS) and the prompts
    had no system prompt of their own (the reward model was trained on the template's default). So PPO optimises
    exactly the score that `score(prompts, replies)` reports in evaluations.
    """

    def __init__(self, model, tokenizer=None):
        self.model = model
        self.reads_tokens = tokenizer is not None and _accepts_tokenizer(model, tokenizer)

    def __repr__(self) -> str:
        return f"ModelReward({type(self.model).__name__}, reads_tokens={self.reads_tokens})"

    def score(self, prompts, responses) -> torch.Tensor:
        return _as_scores(self.model.score(list(prompts), list(responses)), len(responses), self.model)

    def __call__(self, batch) -> torch.Tensor:
        sampling = getattr(batch, "sampling", None) or {}
        same_as_text = bool(batch.eos.all()) and not sampling.get("system_prompt")
        if self.reads_tokens and same_as_text:
            try:
                scores = self.model.score_tokens(batch.query_response_ids, batch.query_response_mask)  # (B,)
            except TypeError:
                self.reads_tokens = False
            else:
                return _as_scores(scores, len(batch), self.model)
        return self.score(batch.prompts, batch.responses)


def _accepts_tokenizer(model, tokenizer) -> bool:
    """True when `model` can read `tokenizer`'s ids: it has score_tokens and its check_tokenizer does not raise."""
    if not callable(getattr(model, "score_tokens", None)) or not callable(getattr(model, "check_tokenizer", None)):
        return False
    try:
        model.check_tokenizer(tokenizer)
    except (ValueError, TypeError):
        return False
    return True


def as_reward(source, tokenizer=None) -> Reward:
    """Turn a reward source into a batched `Reward` (see the module docstring for what `source` may be).

    tokenizer: the policy's tokenizer, so that a reward model sharing it can read tokens instead of text.
    """
    if isinstance(source, Reward):
        return source
    if isinstance(source, str):
        if source != "gold":
            raise ValueError(f"Unknown reward {source!r}: the only named reward is 'gold' (the crowd's gold utility).")
        return GoldReward()
    if isinstance(source, GoldUtility):
        return GoldReward(source)
    if source is gold_utility:
        return GoldReward()
    if callable(getattr(source, "score", None)):
        return ModelReward(source, tokenizer)
    if callable(source):
        return CallableReward(source)
    raise TypeError(f"Cannot use {type(source).__name__} as a reward: pass a function of the reply texts, a function "
                    "of (prompts, responses), a GoldUtility, or a reward model with .score(prompts, responses).")
