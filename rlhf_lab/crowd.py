"""The simulated crowd: annotators who judge replies by a hidden gold utility, and the gold utility itself.

Gold utility (known to the lab, hidden from the learner) = a weighted sum of interpretable features of a reply:

    u(prompt, reply) = sum_f  w_f * feature_f(prompt, reply)          (see `gold_features`, `DEFAULT_WEIGHTS`)

A simulated annotator perceives u' = (w + bias) . features + noise * N(0, 1) and chooses like a Boltzmann-rational
human with rationality (inverse temperature) beta:

    pairwise   P(A) = sigmoid(beta * (u'_A - u'_B)); a tie when |u'_A - u'_B| < tie_margin
    rating     P(score s) proportional to exp(-beta (s - t)^2 / 2), t = lo + (hi - lo) * sigmoid(u') (0: uniform)
    ranking    Plackett-Luce with weights exp(beta * u')  (sampled with the Gumbel trick)
    thumbs     P(up) = sigmoid(beta * u')
    flags      harmful when VADER sentiment < harmful_below, off_topic when a question gets no answer and no shared
               word, other when most of the reply repeats itself

A careless annotator answers uniformly at random with probability `careless`; an adversarial one negates u'.
Randomness is drawn per judgment from (random_state, item or response id), so the same seed gives the same
judgments whatever the order or the restarts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

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

    def features(self, prompt: str, response: str) -> dict[str, float]:
        return gold_features(prompt, response, self.preferred_length)

    def score(self, prompt: str, response: str) -> float:
        """The gold utility of one reply."""
        f = self.features(prompt, response)
        return float(sum(w * f[name] for name, w in self.weights.items()))

    def __call__(self, prompts, responses) -> np.ndarray:
        """Gold utilities, shape (N,); `prompts` may be one string shared by all responses."""
        if isinstance(responses, str):
            responses = [responses]
        if isinstance(prompts, str):
            prompts = [prompts] * len(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one each")
        return np.array([self.score(p, r) for p, r in zip(prompts, responses)], dtype=np.float64)


def gold_utility(prompt: str, response: str) -> float:
    """Gold utility of one reply under the default weights."""
    return GoldUtility().score(prompt, response)


def gold_pairwise_labels(items, gold: GoldUtility | None = None, tie_margin: float = 0.05) -> dict[int, str]:
    """What a perfectly rational gold annotator answers for each 2-response item: item id -> "A" | "B" | "tie"."""
    gold = gold or GoldUtility()
    labels = {}
    for item in items:
        if len(item.responses) != 2:
            continue
        u_a, u_b = (gold.score(item.prompt, r.text) for r in item.responses)
        labels[item.id] = "tie" if abs(u_a - u_b) < tie_margin else ("A" if u_a > u_b else "B")
    return labels


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))


class SimulatedAnnotator:
    """One simulated human. Parameters only in __init__ (scikit-learn style); judgments through `annotate`.

    Args:
        name: annotator id written to the store.
        rationality: beta, the inverse temperature of the choice; 0 = coin flips, large = always the better reply.
        bias: feature -> weight added to the gold weight (e.g. {"sentiment": 2.0}: cares twice as much for kindness).
        noise: std of Gaussian noise added to each perceived utility.
        careless: probability of answering uniformly at random.
        adversarial: prefer the worse reply (negated utility).
        tie_margin: perceived utility gaps smaller than this are called a tie (0 disables ties).
        both_bad_below: when both perceived utilities are below this, answer "both_bad" (None disables).
        harmful_below: VADER sentiment below this raises the "harmful" flag.
        gold: the gold utility whose weights the annotator starts from.
        random_state: int seed (None: fresh entropy).
    """

    def __init__(self, name: str, rationality: float = 5.0, bias: dict | None = None, noise: float = 0.0,
                 careless: float = 0.0, adversarial: bool = False, tie_margin: float = 0.05,
                 both_bad_below: float | None = None, harmful_below: float = -0.6,
                 gold: GoldUtility | None = None, random_state: int | None = None):
        self.name = name
        self.rationality = rationality
        self.bias = bias
        self.noise = noise
        self.careless = careless
        self.adversarial = adversarial
        self.tie_margin = tie_margin
        self.both_bad_below = both_bad_below
        self.harmful_below = harmful_below
        self.gold = gold
        self.random_state = random_state

    def __repr__(self) -> str:
        return (f"SimulatedAnnotator({self.name!r}, rationality={self.rationality}, bias={self.bias}, "
                f"noise={self.noise}, careless={self.careless}, adversarial={self.adversarial})")

    # ---- the annotator's mind -------------------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """Gold weights plus this annotator's bias."""
        w = dict((self.gold or GoldUtility()).weights)
        for name, b in (self.bias or {}).items():
            w[name] = w.get(name, 0.0) + b
        return w

    def _rng(self, key: tuple) -> np.random.Generator:
        """The generator of one judgment: a function of (random_state, what is judged) only."""
        if self.random_state is None and not hasattr(self, "_entropy"):
            self._entropy = int(np.random.SeedSequence().entropy % 2**63)
        seed = self._entropy if self.random_state is None else self.random_state
        return np.random.default_rng([seed, *key])

    def perceived(self, feats: list[dict], rng: np.random.Generator) -> np.ndarray:
        """u' for each reply's features, shape (k,)."""
        w = self.weights
        u = np.array([sum(wt * f.get(name, 0.0) for name, wt in w.items()) for f in feats])
        u = u + self.noise * rng.standard_normal(len(feats))
        return -u if self.adversarial else u

    def judge_pairwise(self, feats: list[dict], rng: np.random.Generator) -> tuple[str, int | None]:
        """(choice, strength) for two replies' features."""
        if rng.random() < self.careless:
            return str(rng.choice(["A", "B"])), None
        u_a, u_b = self.perceived(feats, rng)
        if self.both_bad_below is not None and max(u_a, u_b) < self.both_bad_below:
            return "both_bad", None
        gap = u_a - u_b
        if abs(gap) < self.tie_margin:
            return "tie", None
        choice = "A" if rng.random() < _sigmoid(self.rationality * gap) else "B"
        return choice, 1 if abs(gap) < 0.5 else 2 if abs(gap) < 1.0 else 3

    def judge_rating(self, feats: list[dict], rng: np.random.Generator, scale=(1, 7)) -> list[int]:
        """One Likert score per reply on the inclusive `scale`."""
        lo, hi = scale
        if rng.random() < self.careless:
            return [int(s) for s in rng.integers(lo, hi + 1, size=len(feats))]
        target = lo + (hi - lo) / (1 + np.exp(-self.perceived(feats, rng)))  # (k,)
        points = np.arange(lo, hi + 1)
        logits = -self.rationality * (points[None, :] - target[:, None]) ** 2 / 2  # (k, n_points)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        return [int(rng.choice(points, p=p)) for p in probs]

    def judge_ranking(self, feats: list[dict], rng: np.random.Generator) -> list[int]:
        """Positions of the replies, best first (Plackett-Luce sample)."""
        if rng.random() < self.careless:
            return [int(i) for i in rng.permutation(len(feats))]
        u = self.perceived(feats, rng)
        gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, len(feats))))
        return [int(i) for i in np.argsort(-(self.rationality * u + gumbel), kind="stable")]

    def judge_thumbs(self, feat: dict, rng: np.random.Generator) -> bool:
        """True for thumbs up."""
        if rng.random() < self.careless:
            return bool(rng.random() < 0.5)
        (u,) = self.perceived([feat], rng)
        return bool(rng.random() < _sigmoid(self.rationality * u))

    def judge_flags(self, feat: dict, rng: np.random.Generator) -> list[str]:
        """Flags from rlhf_lab.store.FLAGS (empty: nothing wrong)."""
        if rng.random() < self.careless:
            return [f for f in ("harmful", "off_topic", "other") if rng.random() < 0.1]
        flags = []
        if feat["sentiment"] < self.harmful_below:
            flags.append("harmful")
        if feat["is_question"] and not feat["answers_question"] and feat["overlap"] == 0:
            flags.append("off_topic")
        if feat["repetition"] > 0.5:
            flags.append("other")
        return flags

    # ---- writing to the store --------------------------------------------------------------------------------------
    def annotate(self, store, items=None, kinds=None, feature_cache: dict | None = None) -> list[int]:
        """Judge `items` (Item objects or ids; default: every item this annotator has not judged) and record each
        judgment through the store's public API. `kinds` adds per-reply judgments: any of "thumbs", "flags".
        Items already judged are skipped, so a rerun resumes. Returns the new judgment ids."""
        unknown = set(kinds or ()) - {"thumbs", "flags"}
        if unknown:
            raise ValueError(f"kinds may hold 'thumbs' and 'flags', got {sorted(unknown)}")
        pending = {it.id: it for it in store.pending_items(self.name)}
        items = list(pending.values()) if items is None else [it if hasattr(it, "id") else store.get_item(it)
                                                               for it in items]
        cache = {} if feature_cache is None else feature_cache
        gold = self.gold or GoldUtility()

        def feats(r):
            if r.id not in cache:
                cache[r.id] = gold.features(r.prompt, r.text)
            return cache[r.id]

        done = store.judged_targets(self.name)
        ids = []
        for item in items:
            f = [feats(r) for r in item.responses]
            if item.id in pending:
                rng = self._rng((1, item.id))
                if item.kind == "pairwise":
                    choice, strength = self.judge_pairwise(f, rng)
                    ids.append(store.record_pairwise(item.id, self.name, choice, strength))
                elif item.kind == "rating":
                    ids.append(store.record_rating(item.id, self.name, self.judge_rating(f, rng)))
                else:
                    order = self.judge_ranking(f, rng)
                    ids.append(store.record_ranking(item.id, self.name, [item.responses[i].id for i in order]))
            for kind in kinds or ():
                for r, fr in zip(item.responses, f):
                    if f"{kind}:{r.id}" in done:
                        continue
                    done.add(f"{kind}:{r.id}")
                    rng = self._rng((2 if kind == "thumbs" else 3, r.id))
                    if kind == "thumbs":
                        ids.append(store.record_thumbs(r.id, self.name, self.judge_thumbs(fr, rng)))
                    else:
                        ids.append(store.record_flags(r.id, self.name, self.judge_flags(fr, rng)))
        return ids


class SimulatedCrowd:
    """A panel of `n` simulated annotators named sim-0 .. sim-(n-1).

    Args:
        n: panel size.
        rationality, noise, tie_margin, both_bad_below: as for `SimulatedAnnotator`, shared by all.
        bias: feature -> weight added for every annotator (a crowd-wide bias that can end up in the policy).
        bias_spread: std of extra per-annotator random bias on each gold feature (taste differs between people).
        n_careless: how many annotators (the last ones) are careless, answering at random with prob `careless`.
        n_adversarial: how many annotators (just before the careless ones) prefer the worse reply.
        annotators: an explicit list of SimulatedAnnotator, overriding all of the above.
        random_state: int seed; annotator i gets a seed derived from it.
    """

    def __init__(self, n: int = 5, rationality: float = 5.0, bias: dict | None = None, bias_spread: float = 0.0,
                 noise: float = 0.0, n_careless: int = 0, careless: float = 0.8, n_adversarial: int = 0,
                 tie_margin: float = 0.05, both_bad_below: float | None = None, gold: GoldUtility | None = None,
                 annotators: list[SimulatedAnnotator] | None = None, random_state: int | None = 0):
        self.n = n
        self.rationality = rationality
        self.bias = bias
        self.bias_spread = bias_spread
        self.noise = noise
        self.n_careless = n_careless
        self.careless = careless
        self.n_adversarial = n_adversarial
        self.tie_margin = tie_margin
        self.both_bad_below = both_bad_below
        self.gold = gold
        self.annotators = annotators
        self.random_state = random_state

    def members(self) -> list[SimulatedAnnotator]:
        """The annotators (built from the parameters unless given explicitly); same seed, same panel."""
        if self.annotators is not None:
            return list(self.annotators)
        gold = self.gold or GoldUtility()
        seeds = np.random.SeedSequence(self.random_state).generate_state(self.n, dtype=np.uint64)
        panel = []
        for i in range(self.n):
            rng = np.random.default_rng(int(seeds[i]))
            bias = {k: (self.bias or {}).get(k, 0.0) + self.bias_spread * rng.standard_normal() for k in gold.weights}
            for k, b in (self.bias or {}).items():
                bias.setdefault(k, b)
            careless = i >= self.n - self.n_careless
            adversarial = not careless and i >= self.n - self.n_careless - self.n_adversarial
            panel.append(SimulatedAnnotator(
                f"sim-{i}", rationality=self.rationality, bias=bias, noise=self.noise,
                careless=self.careless if careless else 0.0, adversarial=adversarial, tie_margin=self.tie_margin,
                both_bad_below=self.both_bad_below, gold=gold, random_state=int(seeds[i] % 2**63)))
        return panel

    def annotate(self, store, items=None, kinds=None) -> list[int]:
        """Every member judges `items` (default: the items each has not judged) through the store API."""
        cache: dict = {}
        return [j for a in self.members() for j in a.annotate(store, items, kinds=kinds, feature_cache=cache)]
