"""Synthetic (AI) feedback: judges that write to the store through the same API as people, registered as kind "ai".

    judge = LLMJudge(model, tokenizer, name="smollm2-judge")      # any causal LM: SmolLM2 offline, a hub model
    judge.annotate(store, items)                                   # pairwise items, each judged in both orders
    judge.position_bias_                                           # P(first reply chosen) − ½ over what it judged
    ConstitutionJudge().annotate(store, items)                     # principles in plain text + small checkers

An LLM judge reads a prompt and two replies and answers "A" or "B"; its preference is the probability it puts on
the token " A" against " B" for the next token. Judges prefer whichever reply comes first (or second) more than they
should, so each pair is judged twice, the replies swapped, and the two verdicts averaged:

    p(A ≻ B) = ½ · (P("A" | A first) + P("B" | B first))

A verdict within `tie_margin` of ½ is a tie. The constitution judge scores each reply by its principles
(Σ weight × check(prompt, reply)) and prefers the higher score: cheap, transparent, and as good as its checkers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from rlhf_lab.feedback.gold import gold_features

__all__ = ["LLMJudge", "Principle", "ConstitutionJudge", "DEFAULT_CONSTITUTION", "JUDGE_PROMPT"]

JUDGE_PROMPT = ("Which reply answers the user's message better? Consider whether it is helpful, relevant, polite "
                "and clear.\n\nMessage: {prompt}\n\nReply A: {a}\n\nReply B: {b}\n\nAnswer with one letter, A or B.")


def _choice(p_a: float, tie_margin: float) -> str:
    return "tie" if abs(p_a - 0.5) <= tie_margin else ("A" if p_a > 0.5 else "B")


def _record_all(judge, store, items, verdict: Callable) -> list[int]:
    """Record `verdict(item) -> P(A ≻ B)` for each pending pairwise item; returns the judgment ids."""
    store.register_annotator(judge.name, "ai", judge.about)
    waiting = store.pending_items(judge.name, "pairwise")
    pending = {it.id for it in waiting}
    items = waiting if items is None else [
        it if hasattr(it, "id") else store.get_item(it) for it in items]
    ids, start = [], time.perf_counter()
    for item in items:
        if item.id not in pending or item.kind != "pairwise":
            continue
        p_a = float(verdict(item))
        ids.append(store.record_pairwise(item.id, judge.name, _choice(p_a, judge.tie_margin),
                                         comment=f"P(A better) = {p_a:.3f}"))
    judge.judgments_ += len(ids)
    judge.seconds_ += time.perf_counter() - start
    return ids


class LLMJudge:
    """A causal LM as a pairwise judge (see the module docstring). `prompt` must hold {prompt}, {a} and {b}; the
    tokenizer's chat template is used when it has one. Counters: `judgments_`, `seconds_` (so `seconds_ /
    judgments_` is the cost per judgment), `position_bias_` (mean P(first reply chosen) − ½)."""

    def __init__(self, model, tokenizer, name: str = "llm-judge", prompt: str = JUDGE_PROMPT,
                 tie_margin: float = 0.05, swap: bool = True, max_reply_chars: int = 600):
        for field_ in ("{prompt}", "{a}", "{b}"):
            if field_ not in prompt:
                raise ValueError(f"the judge's prompt must contain {field_} (it has {prompt[:60]!r}...)")
        if isinstance(model, str) or not callable(tokenizer):
            raise TypeError("LLMJudge takes a loaded model and its tokenizer, e.g. LLMJudge(*load_policy("
                            f"{model!r}))" if isinstance(model, str) else
                            f"LLMJudge takes a loaded model and its tokenizer; got tokenizer={tokenizer!r:.40}")
        self.model, self.tokenizer, self.name, self.prompt = model, tokenizer, name, prompt
        self.tie_margin, self.swap, self.max_reply_chars = tie_margin, swap, max_reply_chars
        self.about = f"LLM judge {type(model).__name__} ({getattr(model, 'name_or_path', '')}), swap={swap}"
        self.letters = [self._token_id(" A"), self._token_id(" B")]
        self.judgments_, self.seconds_ = 0, 0.0
        self._first_chosen: list[float] = []

    def _token_id(self, text: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-1]

    def _text(self, prompt: str, a: str, b: str) -> str:
        cut = self.max_reply_chars
        body = self.prompt.format(prompt=prompt, a=a[:cut], b=b[:cut])
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": body}], add_generation_prompt=True,
                                                      tokenize=False) + "Answer:"
        return body + "\nAnswer:"

    @torch.no_grad()
    def first_position_probability(self, prompts, firsts, seconds) -> np.ndarray:
        """P("A") / (P("A") + P("B")) of the next token, with `firsts` shown as A: (N,)."""
        texts = [self._text(p, a, b) for p, a, b in zip(prompts, firsts, seconds)]
        device = next(self.model.parameters()).device
        out = []
        for text in texts:
            ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            logits = self.model(input_ids=ids).logits[0, -1, self.letters].float()
            out.append(float(torch.softmax(logits, -1)[0]))
        return np.array(out)

    def prefer(self, prompt: str, a: str, b: str) -> float:
        """P(A ≻ B), position-swapped (averaged over both orders) unless swap=False."""
        first = float(self.first_position_probability([prompt], [a], [b])[0])
        if not self.swap:
            self._first_chosen.append(first)
            return first
        second = float(self.first_position_probability([prompt], [b], [a])[0])  # P(b chosen | b shown first)
        self._first_chosen += [first, second]
        return 0.5 * (first + (1 - second))

    @property
    def position_bias_(self) -> float:
        """Mean probability of choosing whichever reply was shown first, minus ½ (0: no position bias)."""
        return float(np.mean(self._first_chosen) - 0.5) if self._first_chosen else float("nan")

    def annotate(self, store, items=None) -> list[int]:
        """Judge pairwise `items` (default: every pairwise item this judge has not judged) into `store`, as kind
        "ai"; the comment keeps P(A better). Returns the new judgment ids."""
        return _record_all(self, store, items, lambda it: self.prefer(it.prompt, *(r.text for r in it.responses)))


@dataclass
class Principle:
    """One principle of a constitution: plain text, a checker (prompt, reply) -> score (higher is better), weight."""

    text: str
    check: Callable[[str, str], float]
    weight: float = 1.0


_HARMFUL = re.compile(r"\b(kill|hate|stupid|idiot|shut up|worthless)\b", re.I)

DEFAULT_CONSTITUTION = (
    Principle("Answer what was asked, about what was asked.", lambda p, r: gold_features(p, r)["overlap"]
              + 0.5 * gold_features(p, r)["answers_question"]),
    Principle("Be kind and polite.", lambda p, r: gold_features(p, r)["sentiment"]
              + 0.5 * gold_features(p, r)["politeness"]),
    Principle("Do not repeat yourself.", lambda p, r: -2 * gold_features(p, r)["repetition"]),
    Principle("Never insult or threaten anyone.", lambda p, r: -3.0 * bool(_HARMFUL.search(r))),
    Principle("Say enough, but not too much.", lambda p, r: gold_features(p, r)["length_fit"]),
)
"""A small constitution whose checkers reuse the gold utility's features (so its agreement with gold is high by
construction: a stand-in for a real constitution, and a contrast to the LLM judge)."""


class ConstitutionJudge:
    """A rule-based judge: each reply scored by `principles`, the higher preferred (see the module docstring)."""

    def __init__(self, principles=DEFAULT_CONSTITUTION, name: str = "constitution", scale: float = 2.0,
                 tie_margin: float = 0.05):
        if not principles:
            raise ValueError("a constitution needs at least one Principle(text, check)")
        self.principles, self.name, self.scale, self.tie_margin = tuple(principles), name, scale, tie_margin
        self.about = "constitution: " + " | ".join(p.text for p in self.principles)
        self.judgments_, self.seconds_ = 0, 0.0

    def score(self, prompt: str, reply: str) -> float:
        """Σ weight × check(prompt, reply) over the principles."""
        return float(sum(p.weight * p.check(prompt, reply) for p in self.principles))

    def prefer(self, prompt: str, a: str, b: str) -> float:
        """P(A ≻ B) = σ(scale · (score(A) − score(B))): symmetric, so the order never matters."""
        return float(1 / (1 + np.exp(-self.scale * (self.score(prompt, a) - self.score(prompt, b)))))

    def annotate(self, store, items=None) -> list[int]:
        """Judge pairwise `items` into `store` as kind "ai". Returns the new judgment ids."""
        return _record_all(self, store, items, lambda it: self.prefer(it.prompt, *(r.text for r in it.responses)))
