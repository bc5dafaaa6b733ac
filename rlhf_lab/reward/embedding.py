"""A reward model for few labels: a Bradley–Terry head on frozen sentence embeddings and surface features.

    rm = EmbeddingRewardModel(EmbeddingRewardConfig(ensemble_size=4)).fit(store)   # seconds on a CPU, 10–80 pairs
    rm.score(prompts, replies)        # (N,) normalised rewards, like every reward source
    rm.spread(prompts, replies)       # (N,) disagreement of the bootstrap members: where a label helps most

Fine-tuning a transformer on a learner's few dozen judgments mostly fits noise. Here nothing deep is trained: each
reply becomes a fixed vector x(prompt, reply) — the MiniLM sentence embedding of the reply, its elementwise product
with the prompt's embedding, a few surface features a reader notices (length, questions, exclamations,
sentiment, contractions, repetition, overlap with the prompt) and the counts of the words common in the replies
fitted on (a taste for one word, e.g. "you", is blurred in a sentence embedding: with 40 judgments of a taste for
second-person words, agreement 0.52 without this block and 0.75 with it, seeds 0-1; `bench/taste.py`) — and the
reward is linear in it:

    r(x, y) = w·x(x, y),    P(y_c ≻ y_r) = σ(w·(x_c − x_r)),    loss = BCE + λ·‖w‖²

fitted full-batch with L-BFGS on standardised features (ties have target ½). `ensemble_size` members fit bootstrap
resamples; `score` is their mean and `spread` their standard deviation. A `weight` column (people's and AI judges'
pairs mixed by `preferences.weight_by_source`) makes the loss (Σ_i w_i·BCE_i + λ·‖w‖²) / Σ_i w_i: a pair of weight 2
counts exactly as two copies of it (the standardisation weighs rows alike).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from rlhf_lab.core.config import Config, Seeded
from rlhf_lab.core.files import SaveKind, atomic_directory, existing_or_aside, verify_digests, write_manifest
from rlhf_lab.feedback.preferences import bootstrap_pairs, pair_weights
from rlhf_lab.reward.encoder import SentenceEncoder, sentence_encoder
from rlhf_lab.reward.evaluation import NormalisedScores, order_agreement, scored_lists
from rlhf_lab.reward.evidence import log_evidence
from rlhf_lab.reward.linear_fits import blend_members, fit_listwise, fit_logistic, relevance_weights
from rlhf_lab.reward.text_features import FIRST_SURFACE, SURFACE_FEATURES, common_words, surface_features, \
    word_counts

__all__ = ["EmbeddingRewardConfig", "EmbeddingRewardModel", "SentenceEncoder", "sentence_encoder", "blend_members",
           "WORDS_PRIORS"]

FORMAT_VERSION = 3
"""3: the surface features it reads are a config field (2: saved beside the config; 1: `FIRST_SURFACE`)."""
BLOCKS = ("reply", "prompt_x_reply", "surface", "words")
WORDS_PRIORS = (0.3, 1.0, 3.0, 10.0, 30.0)
"""Candidates for `words_weights`: at the taste loop's 40 judgments (seeds 0-9, `bench/taste_features.py`) the
evidence's choice among these lifted a one-word taste's agreement (median 0.65 → 0.78) and moved the shipped tastes'
by −0.01 to +0.05; a finer grid of 9 did no better."""


@dataclass
class EmbeddingRewardConfig(Config, Seeded):
    """How an embedding reward model reads replies and is fitted. Saved with the model."""

    features: tuple[str, ...] = ("reply", "prompt_x_reply", "surface", "words")
    """Blocks of x: "reply" (its embedding), "prompt_x_reply" (elementwise product with the prompt's embedding: what
    the reply has in common with the question), "surface" (`SURFACE_FEATURES`), "words" (`word_counts` of the words
    common in the replies fitted on: for a taste that a sentence embedding blurs, such as one word)."""
    surface: tuple[str, ...] = SURFACE_FEATURES
    """The "surface" block's features, some of `SURFACE_FEATURES` in any order (`FIRST_SURFACE`: length as
    log_words only, as models saved before format 2 read it)."""
    l2: float = 1.0
    """λ of the L2 penalty on w (features standardised): larger is smoother; few labels want a strong prior."""
    embedding_weight: float = 0.03
    """Embedding features are multiplied by this after standardisation (a penalty 1/weight² times stronger than on
    the surface features): with few labels the few surface features explain what they can, and the embedding only
    what they cannot. 1.0 treats every feature alike."""
    words_min_replies: int = 5
    """The "words" block counts the words found in at least this many of the replies fitted on (a word seen once
    cannot be learned from)..."""
    words_most: int = 100
    """... at most this many, the most frequent first."""
    words_weight: float = 1.0
    """The "words" block's prior weight, like `embedding_weight`."""
    words_weights: tuple[float, ...] = ()
    """Pairs (`fit`) only: candidates for `words_weight`, of which the fit keeps the one whose prior best explains
    the judgments (the largest Laplace evidence of one fit on all pairs: `reward.evidence`), and records it in
    `words_weight`. Empty: `words_weight` as given."""
    words_relevance: float = 0.0
    """Pairs (`fit`) only, > 0: each word gets its own prior weight, between 0 and this, chosen by the judgments'
    evidence (automatic relevance determination, `linear_fits.relevance_weights`): a word they lean on rises to this
    weight, the rest shrink. At 40 judgments and 3.0, a taste for second-person words: agreement 0.70 → 0.85
    (median, seeds 0-4; 0.66 → 0.81 on seeds 5-9), the shipped tastes' medians 0 to 0.06 lower
    (`bench/taste_features.py`). 0: one weight for every word (`words_weight`)."""
    relevance: float = 0.0
    """Pairs (`fit`) only, > 0: every feature gets its own prior weight, between 0 and this many times its block's,
    chosen by the judgments' evidence (automatic relevance determination over all blocks,
    `linear_fits.relevance_weights`): the few features a taste rests on (a surface feature, a word, an embedding
    direction) rise, the rest shrink. At 40 judgments and 3.0, the median agreement over seeds 0-9 held or rose for
    every shipped taste (gold 0.76 → 0.83) and rose for a taste for second-person words 0.68 → 0.87
    (`bench/taste_features.py`): the taste loop's default (`TasteConfig`). 0: one prior weight per block."""
    words_blend: bool = False
    """Pairs (`fit`) only: fit the members again without the "words" block and average the two models' scores,
    each in units of its own spread on the fitted replies (one linear model: `blend_members`). The words block wins
    a taste for one word and costs a little on others (`bench/taste_features.py`)."""
    ensemble_size: int = 4
    """Bootstrap members (1: a single fit); their spread says where the model is unsure."""
    include_ties: bool = True
    """Ties train with target ½ (True) or are left out."""
    seed: int | None = None
    """Seeds the bootstrap resamples. None: 0, or the experiment's seed."""

    def __post_init__(self):
        self.features, self.surface = (((x,) if isinstance(x, str) else tuple(x))  # one name alone: not its letters
                                       for x in (self.features, self.surface))
        self.words_weights = tuple(float(a) for a in self.words_weights)
        unknown = set(self.features) - set(BLOCKS)
        if unknown or not self.features:
            raise ValueError(f"features must be some of {', '.join(map(repr, BLOCKS))}; got {self.features}.")
        unknown = sorted(set(self.surface) - set(SURFACE_FEATURES))
        if unknown or not self.surface or len(set(self.surface)) < len(self.surface):
            raise ValueError(f"surface must be distinct names among {', '.join(SURFACE_FEATURES)}; got "
                             f"{self.surface}" + (f" (unknown: {', '.join(unknown)}; a newer rlhf-lab may know them)."
                                                  if unknown else "."))
        if not min(self.l2, self.embedding_weight, self.words_weight, *self.words_weights) > 0 or min(
                self.ensemble_size, self.words_min_replies, self.words_most) < 1 or not min(
                self.words_relevance, self.relevance) >= 0:
            raise ValueError("l2, embedding_weight and words_weight(s) must be > 0, relevance and words_relevance "
                             ">= 0; ensemble_size, words_min_replies and words_most >= 1.")
        if sum(map(bool, (self.relevance, self.words_relevance, self.words_weights))) > 1:
            raise ValueError("relevance (each feature's own prior), words_relevance (each word's) and words_weights "
                             "(one for all words) choose the priors three ways: set one of them (the others to 0 or "
                             "()).")



class EmbeddingRewardModel(NormalisedScores):
    """See the module docstring. Learned state: weights_ (k, F), mean_ and std_ (F,) of the features (std_ divided
    by each feature's prior weight),
    norm_mean_/norm_std_ (score normalisation), val_pairs_ (pairs fitted on, for `evaluate`)."""

    fitted_attribute = "weights_"  # set by fit, fit_ratings, fit_rankings (and by load)

    def __init__(self, config: EmbeddingRewardConfig | None = None):
        self.config = config or EmbeddingRewardConfig()

    def __repr__(self) -> str:
        return f"EmbeddingRewardModel({self.config})"

    def featurize(self, prompts, responses) -> torch.Tensor:
        """x(prompt, reply) for each pair: (N, F) float32, unstandardised."""
        prompts, responses = list(prompts), list(responses)
        blocks = []
        if {"reply", "prompt_x_reply"} & set(self.config.features):
            reply_emb = sentence_encoder().encode(responses)
            if "reply" in self.config.features:
                blocks.append(reply_emb)
            if "prompt_x_reply" in self.config.features:
                blocks.append(sentence_encoder().encode(prompts) * reply_emb * math.sqrt(reply_emb.shape[1]))
        if "surface" in self.config.features:
            names = self.config.surface
            blocks.append(torch.tensor([surface_features(p, r, names) for p, r in zip(prompts, responses)]))
        if "words" in self.config.features:
            index = {w: i for i, w in enumerate(self.vocabulary_)}
            blocks.append(torch.tensor([word_counts(r, index) for r in responses], dtype=torch.float32)
                          .reshape(len(responses), len(index)))
        return torch.cat(blocks, dim=1).float()

    def standardised_features(self, prompts, responses) -> torch.Tensor:
        """Learn the vocabulary and the standardisation from these replies, and return their standardised x: (N, F),
        each column in units of its prior (a unit of column f moves the reward by w_f, w ~ N(0, (2λ)⁻¹·I)). What
        `fit_ratings` and `fit_rankings` regress on, and what `reward.pair_design` chooses unlabelled pairs by."""
        self._learn_vocabulary(list(responses))
        x = self.featurize(prompts, responses)
        self._standardise(x)
        return (x - self.mean_) / self.std_

    def fit(self, data, progress: bool = False) -> "EmbeddingRewardModel":
        """Fit on preference pairs (a FeedbackStore, a DataFrame, a list of dicts or a .jsonl path). Returns self.
        A `weight` column (`preferences.weight_by_source`) weighs each pair's loss; pairs of weight 0 are left out."""
        cfg = self.config
        pairs, weights = pair_weights(self.usable_pairs(data))
        if len(pairs) == 0:
            raise ValueError("no training pairs left (all were ties with include_ties=False, or had weight 0?)")
        weight = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        self._learn_vocabulary(list(pairs["chosen"]) + list(pairs["rejected"]))
        x_c = self.featurize(pairs["prompt"], pairs["chosen"])
        x_r = self.featurize(pairs["prompt"], pairs["rejected"])
        target = torch.where(torch.tensor(pairs["tie"].to_numpy()), 0.5, 1.0).float()
        if "target" in pairs:  # soft labels (P(chosen is better), e.g. `aggregation.aggregated_pairs`)
            target = torch.tensor(pairs["target"].fillna(1.0).to_numpy(dtype=float), dtype=torch.float32)
        both, rows_weight = torch.cat([x_c, x_r]), None if weight is None else torch.cat([weight, weight])
        if cfg.words_weights and self.vocabulary_:  # the words prior the judgments make most probable
            evidence = {}
            for a in cfg.words_weights:
                self.config = replace(cfg, words_weight=a)
                self._standardise(both, rows_weight)
                z = (x_c - x_r) / self.std_
                evidence[a] = log_evidence(z, target, fit_logistic(z, target, cfg.l2, weight), cfg.l2, weight)
            self.config = cfg = replace(cfg, words_weight=max(evidence, key=evidence.get))
        self._standardise(both, rows_weight)
        diff = (x_c - x_r) / self.std_  # (N, F): the mean cancels in a difference
        if cfg.relevance or (cfg.words_relevance and self.vocabulary_):  # each one's own prior weight: in std_
            width = diff.shape[1] if cfg.relevance else len(self.vocabulary_)  # the words block's columns come last
            columns = torch.arange(diff.shape[1]) >= diff.shape[1] - width
            cap = cfg.relevance or cfg.words_relevance / cfg.words_weight
            scale = relevance_weights(diff, target, cfg.l2, columns, cap, weight)
            self.std_ = self.std_ / scale
            diff = diff * scale
        rows = [np.arange(len(pairs)) if cfg.ensemble_size == 1 else np.array(
                bootstrap_pairs(pairs.assign(_row=np.arange(len(pairs))), cfg.seed_value + k)["_row"])
                for k in range(cfg.ensemble_size)]  # each member's pairs

        def members(columns: int) -> torch.Tensor:  # (k, columns): the members fitted on the first `columns`
            return torch.stack([fit_logistic(diff[idx, :columns], target[idx], cfg.l2,
                                             None if weight is None else weight[idx]) for idx in rows])

        fitted = members(diff.shape[1])
        if cfg.words_blend and self.vocabulary_:  # the words block's columns come last
            fitted = blend_members(fitted, members(diff.shape[1] - len(self.vocabulary_)),
                                   (both - self.mean_) / self.std_)
        return self._finish(list(fitted), pairs)

    def fit_ratings(self, ratings) -> "EmbeddingRewardModel":
        """Fit on Likert ratings instead of pairs (`preferences.rating_examples(store)`, or a DataFrame with prompt,
        response, score, lo, hi): the reward regresses on t = (s − lo)/(hi − lo) − ½ (`reward.losses.rating_targets`),

            w = argmin mean((w·x − (t − t̄))²)/2 + λ‖w‖²/n    (ridge, closed form; features standardised)

        an absolute signal where pairs give only differences. Members fit bootstrap resamples of the rated replies.
        Returns self (normalised on the rated replies)."""
        df = _columns(ratings, {"prompt", "response", "score", "lo", "hi"}, "ratings", "rating_examples(store)",
                      self.config)
        z = self.standardised_features(df["prompt"], df["response"])  # (N, F)
        t = torch.tensor(((df["score"] - df["lo"]) / (df["hi"] - df["lo"]) - 0.5).to_numpy(), dtype=torch.float32)
        members = []
        for idx in self._resamples(len(df)):
            zi, ti = z[idx], t[idx] - t[idx].mean()
            eye = torch.eye(z.shape[1])
            members.append(torch.linalg.solve(zi.T @ zi / len(idx) + 2 * self.config.l2 * eye / len(idx),
                                              zi.T @ ti / len(idx)))
        pairs = _pairs_within(df.assign(key=df["prompt"] + "\x00" + df["annotator"].astype(str)
                                        if "annotator" in df else df["prompt"]), "score")
        return self._finish(members, pairs, extra=(df["prompt"], df["response"]))

    def fit_rankings(self, rankings) -> "EmbeddingRewardModel":
        """Fit on k-way rankings (`preferences.ranking_examples(store)`, or a DataFrame with prompt and ranked: the
        replies best first) by Plackett–Luce (`reward.losses.plackett_luce_loss`) on r = w·x, L-BFGS, L2 as in
        `fit`: a ranking counts once, not as k(k−1)/2 independent pairs. Members fit bootstrap resamples of the
        rankings. Returns self."""
        df = _columns(rankings, {"prompt", "ranked"}, "rankings", "ranking_examples(store)",
                      self.config)
        df = df[df["ranked"].map(len) >= 2].reset_index(drop=True)
        if df.empty:
            raise ValueError("no ranking of 2 or more replies to learn from")
        width = max(map(len, df["ranked"]))
        prompts = [p for p, ranked in zip(df["prompt"], df["ranked"]) for _ in ranked]
        z = self.standardised_features(prompts, [r for ranked in df["ranked"] for r in ranked])
        feats = torch.zeros(len(df), width, z.shape[1])
        mask = torch.zeros(len(df), width, dtype=torch.bool)
        row = 0
        for i, ranked in enumerate(df["ranked"]):
            feats[i, :len(ranked)], mask[i, :len(ranked)] = z[row:row + len(ranked)], True
            row += len(ranked)
        members = [fit_listwise(feats[idx], mask[idx], self.config.l2) for idx in self._resamples(len(df))]
        pairs = pd.DataFrame([dict(prompt=p, chosen=a, rejected=b, tie=False, margin=float("nan"))
                              for p, ranked in zip(df["prompt"], df["ranked"])
                              for i, a in enumerate(ranked) for b in ranked[i + 1:]])
        return self._finish(members, pairs)

    # ---- shared by the three fits ----------------------------------------------------------------------------------
    def _standardise(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """mean_, std_ of the features, std_ divided by each block's prior weight (`embedding_weight`, 1 for the
        surface features, `words_weight`); word counts are centred, not scaled. `rows` (N,): frequency weights of
        the rows (a row of weight 2 counts as two; the variance divides by Σ rows − 1, at least 1)."""
        cfg, width = self.config, self.block_widths()
        weight = {"reply": cfg.embedding_weight, "prompt_x_reply": cfg.embedding_weight, "surface": 1.0,
                  "words": cfg.words_weight}
        prior = torch.cat([torch.full((n,), weight[b]) for b, n in width.items()])
        if rows is None or bool((rows == 1).all()):
            mean, std = x.mean(0), x.std(0)
        else:
            total = rows.sum()
            mean = (rows[:, None] * x).sum(0) / total
            std = ((rows[:, None] * (x - mean) ** 2).sum(0) / (total - 1).clamp(min=1.0)).sqrt()
        std = std.clamp(min=1e-6)
        if "words" in cfg.features:  # counts keep their scale: a word in 5 replies is no cheaper than a common one
            std[x.shape[1] - width["words"]:] = 1.0
        self.mean_, self.std_ = mean, std / prior  # standardise, then weigh

    def block_widths(self) -> dict[str, int]:
        """{block: its columns in x}, in x's order."""
        width = {"reply": 384, "prompt_x_reply": 384, "surface": len(self.config.surface)}
        if "words" in self.config.features:  # known once fitted
            width["words"] = len(self.vocabulary_)
        return {b: width[b] for b in BLOCKS if b in self.config.features}

    def _learn_vocabulary(self, replies) -> None:
        """vocabulary_: the words of the "words" block, from the replies fitted on (empty without that block)."""
        cfg = self.config
        self.vocabulary_ = (common_words(list(dict.fromkeys(replies)), cfg.words_min_replies, cfg.words_most)
                            if "words" in cfg.features else [])

    def words_prior(self) -> dict[str, float]:
        """{word: its prior weight} in the "words" block, largest first: `words_weight` for every word, or each
        word's own with `relevance` or `words_relevance` (read from std_: a word count's std is 1 before the prior
        divides it)."""
        if not self.vocabulary_:
            return {}
        weights = (1.0 / self.std_[-len(self.vocabulary_):]).tolist()
        return dict(sorted(zip(self.vocabulary_, weights), key=lambda kv: -kv[1]))

    def _resamples(self, n: int) -> list:
        """Row indices of each ensemble member: all rows (one member) or seeded bootstrap resamples."""
        k = self.config.ensemble_size
        if k == 1:
            return [np.arange(n)]
        return [np.random.default_rng(self.config.seed_value + i).integers(0, n, n) for i in range(k)]

    def _finish(self, members, pairs: pd.DataFrame, extra=None) -> "EmbeddingRewardModel":
        """Stack the members' weights, keep the pairs for `evaluate`, normalise on the replies seen."""
        self.weights_ = torch.stack(members)  # (k, F)
        self.val_pairs_ = pairs
        self.norm_mean_, self.norm_std_ = 0.0, 1.0
        replies = list(dict.fromkeys(zip(pairs["prompt"], pairs["chosen"])).keys()) + \
            list(dict.fromkeys(zip(pairs["prompt"], pairs["rejected"])).keys())
        if extra is not None:  # ratings: every rated reply once
            replies = list(dict.fromkeys(replies + list(zip(*extra))))
        return self.normalize([p for p, _ in replies], [r for _, r in replies])

    def member_scores_raw(self, prompts, responses) -> torch.Tensor:
        """Unnormalised rewards of every member: (k, N). `prompts` may be one string shared by all."""
        self.check_fitted()
        prompts, responses = scored_lists(prompts, responses)
        if not responses:
            return torch.empty(len(self.weights_), 0)
        x = (self.featurize(prompts, responses) - self.mean_) / self.std_  # (N, F)
        return self.weights_ @ x.T

    def member_scores(self, prompts, responses) -> torch.Tensor:
        """Normalised rewards of every member (k, N): `score` is their mean and `spread` their standard deviation, as
        for `RewardEnsemble.member_scores`."""
        return (self.member_scores_raw(prompts, responses) - self.norm_mean_) / self.norm_std_

    def score_raw(self, prompts, responses) -> torch.Tensor:
        return self.member_scores_raw(prompts, responses).mean(0)

    def score(self, prompts, responses) -> torch.Tensor:
        """Normalised rewards (N,): the members' mean, (r − mean) / std on the normalisation sample. `prompts` may be
        one string shared by all; no replies give an empty tensor."""
        return (self.score_raw(prompts, responses) - self.norm_mean_) / self.norm_std_

    def spread(self, prompts, responses) -> torch.Tensor:
        """The members' standard deviation of the normalised reward (N,)."""
        return self.member_scores_raw(prompts, responses).std(0, correction=0) / self.norm_std_

    def agreement(self, prompts, replies_a, replies_b, utility) -> float:
        """Share of pairs with distinct utilities that this model orders as `utility(prompt, reply)` does
        (`reward.evaluation.order_agreement`)."""
        return order_agreement(lambda p, r: self.score(p, r).numpy(), prompts, replies_a, replies_b, utility)

    def save(self, path) -> Path:
        """weights.safetensors and embedding_reward_model.json (with the weights' SHA-256), atomically (no
        pickle)."""
        self.check_fitted()
        path = Path(path)
        meta = {"format": FORMAT_VERSION, "config": self.config.to_dict(), "norm_mean": self.norm_mean_,
                "norm_std": self.norm_std_, "vocabulary": self.vocabulary_}
        kind = SaveKind("embedding_reward_model.json", "an embedding reward model", "reward_model")
        with atomic_directory(path, kind=kind) as tmp:
            save_file({"weights": self.weights_.contiguous(), "mean": self.mean_.contiguous(),
                       "std": self.std_.contiguous()}, str(tmp / "weights.safetensors"))
            write_manifest(tmp, "embedding_reward_model.json", meta)  # its checksums are checked by `load`
        return path

    @classmethod
    def load(cls, path) -> "EmbeddingRewardModel":
        path = existing_or_aside(path, "embedding_reward_model.json", "embedding reward model")
        meta = json.loads((path / "embedding_reward_model.json").read_text())
        if meta.get("format") not in (1, 2, FORMAT_VERSION):
            raise ValueError(f"{path} holds embedding reward model format {meta.get('format')}; this rlhf-lab reads "
                             f"formats 1 to {FORMAT_VERSION}: upgrade rlhf-lab.")
        if "sha256" in meta:  # saved before checksums: loaded unverified
            verify_digests(path, meta["sha256"], "reward model")
        config = dict(meta["config"])
        config.setdefault("surface", meta.get("surface", FIRST_SURFACE))  # formats 2 and 1
        unknown = sorted(set(config["surface"]) - set(SURFACE_FEATURES))
        if unknown:
            raise ValueError(f"{path} reads surface features this rlhf-lab does not know ({', '.join(unknown)}); "
                             "upgrade rlhf-lab.")
        model = cls(EmbeddingRewardConfig.from_dict(config))
        tensors = load_file(str(path / "weights.safetensors"))
        # fresh copies: a safetensors buffer may be aligned differently, and some CPUs' matrix kernels then round
        # the last bit differently (seen on an AMD EPYC: 1.2e-7); copies score exactly as the saved model did
        model.weights_, model.mean_, model.std_ = (tensors[k].clone() for k in ("weights", "mean", "std"))
        model.norm_mean_, model.norm_std_ = meta["norm_mean"], meta["norm_std"]
        model.vocabulary_ = list(meta.get("vocabulary", []))
        if len(model.mean_) != sum(model.block_widths().values()):
            raise ValueError(f"{path}: its vocabulary does not match its weights; save the reward model again.")
        return model


def _columns(data, need: set, what: str, hint: str, config: EmbeddingRewardConfig) -> pd.DataFrame:
    if config.words_blend or config.words_weights or config.words_relevance or config.relevance:  # never in silence
        raise ValueError(f"{what} are fitted with one model and prior: set words_blend=False, words_weights=(), "
                         "words_relevance=0 and relevance=0 (only `fit` on pairs blends or chooses the priors)")
    df = pd.DataFrame(data).reset_index(drop=True)
    if "weight" in df:  # never ignored in silence
        raise ValueError(f"{what} are fitted unweighted: drop the 'weight' column (only `fit` on pairs weighs them)")
    missing = need - set(df.columns)
    if df.empty and not missing:  # the right table, but nobody has given this kind of feedback yet
        raise ValueError(f"No {what} to fit: the table is empty (the store holds no {what} yet); record some first "
                         f"(lesson 9's raters), then pass {hint}")
    if missing or df.empty:
        raise ValueError(f"{what} need rows with columns {sorted(need)} (missing {sorted(missing)}): pass {hint}")
    return df


def _pairs_within(df: pd.DataFrame, score: str) -> pd.DataFrame:
    """Preference pairs between replies of one `key` group (a prompt and annotator) with different scores."""
    rows = []
    for _, group in df.groupby("key", sort=False):
        items = list(zip(group["response"], group[score]))
        for i, (a, sa) in enumerate(items):
            for b, sb in items[i + 1:]:
                if sa != sb:
                    chosen, rejected = (a, b) if sa > sb else (b, a)
                    rows.append(dict(prompt=group["prompt"].iloc[0], chosen=chosen, rejected=rejected, tie=False,
                                     margin=abs(sa - sb)))
    return pd.DataFrame(rows, columns=["prompt", "chosen", "rejected", "tie", "margin"])
