"""The simulated crowd: annotators who judge replies by a hidden gold utility.

The gold utility (`feedback.gold`, known to the lab, hidden from the learner) is a weighted sum of interpretable
features of a reply. A simulated annotator perceives u' = (w + bias) . features + noise * N(0, 1) and chooses like
a Boltzmann-rational human with rationality (inverse temperature) beta:

    pairwise   P(A) = sigmoid(beta * (u'_A - u'_B)); a tie when |u'_A - u'_B| < tie_margin
    rating     P(score s) proportional to exp(-beta (s - t)^2 / 2), t = lo + (hi - lo) * sigmoid(u') (0: uniform)
    ranking    Plackett-Luce with weights exp(beta * u')  (sampled with the Gumbel trick)
    thumbs     P(up) = sigmoid(beta * u')
    flags      harmful when VADER sentiment < harmful_below, off_topic when a question gets no answer and no shared
               word, other when most of the reply repeats itself

A careless annotator answers uniformly at random with probability `careless`; an adversarial one negates u'.
Randomness is drawn per judgment from (seed, item or response id), so the same seed gives the same judgments
whatever the order or the restarts.
"""

from __future__ import annotations

import math

import numpy as np

from rlhf_lab.feedback.gold import GoldUtility, check_features
from rlhf_lab.core.inputs import is_whole
from rlhf_lab.feedback.validation import kinds_of, need_store

__all__ = ["SimulatedAnnotator", "SimulatedCrowd", "stand_in_name"]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))


def stand_in_name(annotator: str) -> str:
    """The annotator id of the simulated stand-in for a learner who did not rate (a lesson's headless fallback)."""
    return f"{annotator} (simulated)"


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
        seed: int seed (None: fresh entropy).
    """

    def __init__(self, name: str, rationality: float = 5.0, bias: dict | None = None, noise: float = 0.0,
                 careless: float = 0.0, adversarial: bool = False, tie_margin: float = 0.05,
                 both_bad_below: float | None = None, harmful_below: float = -0.6,
                 gold: GoldUtility | None = None, seed: int | None = None):
        check_features(bias or {}, "bias")
        if not (rationality >= 0 and noise >= 0 and 0 <= careless <= 1):
            raise ValueError(f"rationality and noise must be >= 0 and careless a probability in [0, 1]; got "
                             f"{rationality}, {noise} and {careless}")
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
        self.seed = seed

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
        """The generator of one judgment: a function of (seed, what is judged) only."""
        if self.seed is None and not hasattr(self, "_entropy"):
            self._entropy = int(np.random.SeedSequence().entropy % 2**63)
        seed = self._entropy if self.seed is None else self.seed
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
        """Flags from `feedback.records.FLAGS` (empty: nothing wrong)."""
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
    def annotate(self, store, items=None, kinds=None, feature_cache: dict | None = None, keys=None) -> list[int]:
        """Judge `items` (Item objects or ids; default: every item this annotator has not judged) and record each
        judgment through the store's public API. `kinds` adds per-reply judgments: any of "thumbs", "flags".
        Items already judged are skipped, so a rerun resumes. Returns the new judgment ids.

        keys: the coin's key for each of `items` (default: the item ids), so that items judged into a store that
        already holds others can be judged as in a fresh one. Per-reply judgments are keyed by the reply's id."""
        need_store(store, "annotate")
        kinds = kinds_of(kinds, ("thumbs", "flags"))
        store.register_annotator(self.name, "simulated", repr(self))
        pending = {it.id: it for it in store.pending_items(self.name)}
        items = list(pending.values()) if items is None else [it if hasattr(it, "id") else store.get_item(it)
                                                               for it in items]
        keys = [item.id for item in items] if keys is None else [int(k) for k in keys]
        if len(keys) != len(items):
            raise ValueError(f"annotate got {len(keys)} keys for {len(items)} items: give one key per item.")
        cache = {} if feature_cache is None else feature_cache
        done = store.judged_targets(self.name)
        ids = []
        for item, key in zip(items, keys):
            f = self._features(item.responses, cache)
            if item.id in pending:
                rng = self._rng((1, key))
                if item.kind == "pairwise":
                    choice, strength = self.judge_pairwise(f, rng)
                    ids.append(store.record_pairwise(item.id, self.name, choice, strength))
                elif item.kind == "rating":
                    ids.append(store.record_rating(item.id, self.name, self.judge_rating(f, rng)))
                else:
                    order = self.judge_ranking(f, rng)
                    ids.append(store.record_ranking(item.id, self.name, [item.responses[i].id for i in order]))
            ids += self._judge_replies(store, item.responses, f, kinds or (), done)
        return ids

    def annotate_replies(self, store, responses, kinds=("thumbs",), feature_cache: dict | None = None) -> list[int]:
        """Per-reply judgments only (any of "thumbs", "flags") of `responses` (Response objects or ids), without
        judging the items they belong to; replies this annotator judged so before are skipped. The same judgments
        as `annotate(..., kinds=kinds)` would record. Returns the new judgment ids."""
        need_store(store, "annotate_replies")
        kinds = kinds_of(kinds, ("thumbs", "flags"))
        if not kinds:
            raise ValueError("kinds may hold 'thumbs' and 'flags', got none")
        store.register_annotator(self.name, "simulated", repr(self))
        responses = [r if hasattr(r, "text") else store.get_response(r) for r in responses]
        feats = self._features(responses, {} if feature_cache is None else feature_cache)
        return self._judge_replies(store, responses, feats, kinds, store.judged_targets(self.name))

    def _features(self, responses, cache: dict) -> list[dict]:
        """The gold features of each reply, computed once per reply id (`cache` may be shared across a crowd)."""
        gold = self.gold or GoldUtility()
        for r in responses:
            if r.id not in cache:
                cache[r.id] = gold.features(r.prompt, r.text)
        return [cache[r.id] for r in responses]

    def _judge_replies(self, store, responses, feats: list[dict], kinds, done: set) -> list[int]:
        """Record each of `kinds` on each reply not in `done` (target keys, updated); returns the judgment ids."""
        ids = []
        for kind in kinds:
            for r, fr in zip(responses, feats):
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
        seed: int seed; annotator i gets a seed derived from it.
    """

    def __init__(self, n: int = 5, rationality: float = 5.0, bias: dict | None = None, bias_spread: float = 0.0,
                 noise: float = 0.0, n_careless: int = 0, careless: float = 0.8, n_adversarial: int = 0,
                 tie_margin: float = 0.05, both_bad_below: float | None = None, gold: GoldUtility | None = None,
                 annotators: list[SimulatedAnnotator] | None = None, seed: int | None = 0):
        check_features(bias or {}, "bias")
        if annotators is None:
            counts = (n, n_careless, n_adversarial)
            if not all(map(is_whole, counts)) or n < 1 or min(n_careless, n_adversarial) < 0 or \
                    n_careless + n_adversarial > n:
                raise ValueError(f"n must be a whole number >= 1, and n_careless + n_adversarial (>= 0 each) at most "
                                 f"n; got n={n!r}, n_careless={n_careless!r}, n_adversarial={n_adversarial!r}")
            if not (rationality >= 0 and noise >= 0 and bias_spread >= 0 and 0 <= careless <= 1):
                raise ValueError(f"rationality, noise and bias_spread must be >= 0 and careless a probability in "
                                 f"[0, 1]; got {rationality}, {noise}, {bias_spread} and {careless}")
            if seed is not None and (not is_whole(seed) or seed < 0):
                raise ValueError(f"seed must be a whole number >= 0 or None, got {seed!r}")
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
        self.seed = seed

    def members(self) -> list[SimulatedAnnotator]:
        """The annotators (built from the parameters unless given explicitly); same seed, same panel."""
        if self.annotators is not None:
            return list(self.annotators)
        gold = self.gold or GoldUtility()
        seeds = np.random.SeedSequence(self.seed).generate_state(self.n, dtype=np.uint64)
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
                both_bad_below=self.both_bad_below, gold=gold, seed=int(seeds[i] % 2**63)))
        return panel

    def annotate(self, store, items=None, kinds=None, keys=None) -> list[int]:
        """Every member judges `items` (default: the items each has not judged) through the store API; `keys` as in
        `SimulatedAnnotator.annotate` (with `items`)."""
        cache: dict = {}
        return [j for a in self.members() for j in a.annotate(store, items, kinds=kinds, feature_cache=cache,
                                                               keys=keys)]

    def annotate_replies(self, store, responses, kinds=("thumbs",)) -> list[int]:
        """Every member gives per-reply judgments (thumbs, flags) of `responses`, judging no item."""
        cache: dict = {}
        return [j for a in self.members() for j in a.annotate_replies(store, responses, kinds, feature_cache=cache)]
