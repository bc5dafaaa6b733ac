"""The gold utility: the simulated crowd's hidden taste, known to the lab and hidden from the learner.

    u(prompt, reply) = sum_f  w_f * feature_f(prompt, reply)          (see `gold_features`, `DEFAULT_WEIGHTS`)

    GoldUtility().score(prompts, replies)     # (N,) utilities, like every reward source
    GoldUtility().utility(prompt, reply)      # one reply
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GoldUtility", "DEFAULT_WEIGHTS", "FEATURES", "gold_features", "gold_utility", "gold_pairwise_labels",
           "check_features"]

_WORD = re.compile(r"[a-z0-9']+")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with about as is are was were be been am i you he she it we they "
    "me him her us them my your his its our their this that these those what which who whom how why when where do "
    "does did doing have has had having not no so than too very can will just would could should there here from "
    "up down out over again then once all any both each few more most other some such only own same s t don".split())
POLITE = ("please", "thank", "thanks", "sorry", "glad", "happy to", "welcome", "appreciate")
DEFAULT_WEIGHTS = {
    "sentiment": 1.0,         # VADER compound in [-1, 1]: kind replies are preferred
    "length_fit": 1.0,        # 0 inside the preferred length, -|log(words / nearest bound)| outside
    "repetition": -2.0,       # fraction of repeated word bigrams in [0, 1]: degenerate loops are disliked
    "overlap": 1.0,           # fraction of the prompt's content words the reply uses, in [0, 1]
    "answers_question": 0.5,  # 1 when the prompt asks a question and the reply makes a statement
    "politeness": 0.3,        # 1 when the reply has a polite marker (please, thanks, sorry, glad, ...)
}
_VADER = None


def _vader():
    """One VADER analyser per process, made on first use."""
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        _VADER = SentimentIntensityAnalyzer()
    return _VADER


def _content_words(text: str) -> set[str]:
    return {w.rstrip("s") or w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


FEATURES = ("sentiment", "length_words", "length_fit", "repetition", "overlap", "answers_question", "politeness",
            "is_question")
"""The names `gold_features` gives: what gold weights and simulated annotators' biases may name."""


def check_features(names, what: str) -> None:
    """Refuse, in one line, a name in `names` that is not a gold feature (a misspelt one would count for nothing)."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"{what} names {', '.join(map(repr, unknown))}, which is not a feature; the features: "
                         f"{', '.join(FEATURES)}")


def gold_features(prompt: str, response: str, preferred_length: tuple[int, int] = (4, 40)) -> dict[str, float]:
    """Interpretable features of a reply to a prompt (the gold utility's inputs, plus the raw word count)."""
    words = _WORD.findall(response.lower())
    n = len(words)
    lo, hi = preferred_length
    bigrams = list(zip(words, words[1:]))
    asked = "?" in prompt
    statements = [s for s in re.split(r"(?<=[.!?])\s+", response.strip()) if s and not s.endswith("?")]
    prompt_words = _content_words(prompt)
    return {
        "sentiment": _vader().polarity_scores(response)["compound"] if response.strip() else 0.0,
        "length_words": float(n),
        "length_fit": -abs(math.log(max(n, 0.5) / min(max(n, lo), hi))) or 0.0,
        "repetition": 1.0 - len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "overlap": len(prompt_words & _content_words(response)) / len(prompt_words) if prompt_words else 0.0,
        "answers_question": float(asked and bool(statements) and n > 0),
        "politeness": float(any(p in response.lower() for p in POLITE)),
        "is_question": float(asked),
    }


@dataclass
class GoldUtility:
    """The hidden gold reward: `GoldUtility()(prompts, responses)` scores replies in a batch."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    """feature name -> weight; features not named here do not count."""
    preferred_length: tuple[int, int] = (4, 40)
    """words; replies inside this range pay no length penalty."""

    def __post_init__(self):
        check_features(self.weights, "GoldUtility's weights")

    def features(self, prompt: str, response: str) -> dict[str, float]:
        return gold_features(prompt, response, self.preferred_length)

    def utility(self, prompt: str, response: str) -> float:
        """The gold utility of one reply."""
        f = self.features(prompt, response)
        return float(sum(w * f[name] for name, w in self.weights.items()))

    def score(self, prompts, responses) -> np.ndarray:
        """Gold utilities of a batch of replies, shape (N,); `prompts` may be one string shared by all responses.
        (Every reward source scores a batch this way; `utility` scores one reply.)"""
        if isinstance(responses, str):
            responses = [responses]
        if isinstance(prompts, str):
            prompts = [prompts] * len(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one each")
        return np.array([self.utility(p, r) for p, r in zip(prompts, responses)], dtype=np.float64)

    __call__ = score


def gold_utility(prompt: str, response: str) -> float:
    """Gold utility of one reply under the default weights."""
    return GoldUtility().utility(prompt, response)


def gold_pairwise_labels(items, gold: GoldUtility | None = None, tie_margin: float = 0.05) -> dict[int, str]:
    """What a perfectly rational gold annotator answers for each 2-response item: item id -> "A" | "B" | "tie"."""
    gold = gold or GoldUtility()
    labels = {}
    for item in items:
        if len(item.responses) != 2:
            continue
        u_a, u_b = (gold.utility(item.prompt, r.text) for r in item.responses)
        labels[item.id] = "tie" if abs(u_a - u_b) < tie_margin else ("A" if u_a > u_b else "B")
    return labels
