"""Preference pairs: the training signal every reward model and DPO trainer reads.

    pairs = as_preference_pairs(store)            # or a DataFrame, a list of dicts, a preference .jsonl path
    train, val = split_by_prompt(pairs, 0.2)      # no prompt on both sides
    mixed = weighted_pairs(store, {"person": 1.0, "ai": 0.3})   # a `weight` per pair, by the kind of who judged it
    mixed = weight_by_annotator(pairs, {"me": 1.0}, others=0.25)  # ... by name: you and the crowd

`judgments_to_pairs` is the conversion from the store's judgments (InstructGPT's recipe); `FeedbackStore.
preference_pairs()` is the usual way in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf_lab.core.inputs import bool_labels
from rlhf_lab.feedback.records import Item, Response
from rlhf_lab.feedback.schema import ANNOTATOR_KINDS
from rlhf_lab.feedback.validation import judgments_table

__all__ = ["PAIR_COLUMNS", "judgments_to_pairs", "as_preference_pairs", "split_by_prompt", "bootstrap_pairs",
           "without_ties", "UNPAIRED_COLUMNS", "unpaired_examples", "rating_examples", "ranking_examples",
           "weight_by_source", "weight_by_annotator", "weighted_pairs", "pair_weights", "pairs_origin",
           "judgments_origin"]

UNPAIRED_COLUMNS = ["prompt", "completion", "label", "annotator", "response_id", "judgment_id", "iteration", "model"]

PAIR_COLUMNS = ["prompt", "chosen", "rejected", "chosen_id", "rejected_id", "tie", "margin", "annotator", "iteration",
                "model", "chosen_model", "rejected_model", "source_kind", "judgment_id"]
"""`model` names both replies' models ("a,b", sorted, when they differ); chosen_model and rejected_model say which
wrote which. `iteration` is the later of the two replies'."""


def judgments_to_pairs(rows, items: dict[int, Item], include_ties: bool = True) -> pd.DataFrame:
    """Turn judgment rows into preference pairs (the InstructGPT conversion).

    - pairwise A/B: one pair; margin = strength (1..3) or NaN; tie: one pair marked tie with margin 0;
      both_bad: no pair (it still counts in `counts()`).
    - ranking of k: all k(k-1)/2 pairs, earlier in the order = chosen; margin NaN (ranks carry no strength).
    - rating: pairs between every two responses of one prompt rated by one annotator (across items; a response
      rated twice keeps the latest score); margin = score difference; equal scores make a tie.
    Thumbs and flags make no pairs.
    """
    pairs = []

    def add(a: Response, b: Response, margin: float, tie: bool, j, kind: str):
        if tie and not include_ties:
            return
        pairs.append(dict(prompt=a.prompt, chosen=a.text, rejected=b.text, chosen_id=a.id, rejected_id=b.id,
                          tie=tie, margin=float(margin), annotator=j.annotator, iteration=max(a.iteration, b.iteration),
                          model=",".join(sorted({a.model, b.model})), chosen_model=a.model, rejected_model=b.model,
                          source_kind=kind, judgment_id=j.id))

    rated: dict[tuple[str, str], dict[int, tuple[int, Response, object]]] = {}
    for j in rows:
        answer = json.loads(j.answer)
        if j.kind == "pairwise":
            a, b = items[j.item_id].responses
            choice = answer["choice"]
            if choice in ("A", "B"):
                margin = answer.get("margin", answer.get("strength"))
                first, second = (a, b) if choice == "A" else (b, a)
                add(first, second, math.nan if margin is None else margin, False, j, "pairwise")
            elif choice == "tie":
                add(a, b, 0.0, True, j, "pairwise")
        elif j.kind == "ranking":
            by_id = {r.id: r for r in items[j.item_id].responses}
            order = [by_id[i] for i in answer["order"]]
            for i in range(len(order)):
                for k in range(i + 1, len(order)):
                    add(order[i], order[k], math.nan, False, j, "ranking")
        elif j.kind == "rating":
            item = items[j.item_id]
            scores = rated.setdefault((j.annotator, item.prompt), {})
            for r, s in zip(item.responses, answer["scores"]):
                scores[r.id] = (s, r, j)
    for scores in rated.values():
        entries = sorted(scores.values(), key=lambda e: e[1].id)
        for i in range(len(entries)):
            for k in range(i + 1, len(entries)):
                (sa_, ra, ja), (sb, rb, jb) = entries[i], entries[k]
                later = ja if ja.id > jb.id else jb
                first, second = ((ra, rb) if sa_ >= sb else (rb, ra))
                add(first, second, abs(sa_ - sb), sa_ == sb, later, "rating")
    df = pd.DataFrame(pairs, columns=PAIR_COLUMNS)
    return df.astype({"tie": bool, "margin": float})


def as_preference_pairs(data) -> pd.DataFrame:
    """Pairs as a DataFrame with prompt, chosen, rejected, tie (bool), margin (float, NaN = none).

    `data`: a FeedbackStore (anything with `preference_pairs()`), a DataFrame, a list of dicts, or the path of a
    preference JSONL file (lines of {"prompt", "chosen", "rejected", optional "margin", "tie"}).
    """
    if hasattr(data, "preference_pairs"):
        df = data.preference_pairs(include_ties=True)
    elif isinstance(data, (str, Path)):
        with open(data, "rb") as f:
            if f.read(16) == b"SQLite format 3\x00":
                raise ValueError(f"{data} is a feedback store, not a preference file: pass "
                                 f"FeedbackStore({str(data)!r})")
        rows = []
        with open(data, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    rows += [json.loads(line)] if line.strip() else []
                except json.JSONDecodeError as err:
                    raise ValueError(f"{data} line {n} is not JSON ({err.msg}); a preference file has one JSON object "
                                     'per line: {"prompt": ..., "chosen": ..., "rejected": ...}') from None
        df = pd.DataFrame(rows)
    else:
        df = pd.DataFrame(data).copy()
    missing = {"prompt", "chosen", "rejected"} - set(df.columns)
    if missing:
        raise ValueError(f"preference pairs need columns prompt, chosen, rejected; missing {sorted(missing)}")
    if len(df) == 0:
        raise ValueError("no preference pairs: judge some pairs first (or load a preference file)")
    df = df.reset_index(drop=True)
    # a missing tie is no tie; "false" or "no" is refused (bool("false") is True: every pair would be a tie)
    df["tie"] = bool_labels(df["tie"].where(df["tie"].notna(), False), "tie") if "tie" in df else False
    df["margin"] = pd.to_numeric(df["margin"], errors="coerce").astype(float) if "margin" in df else math.nan
    return df


def unpaired_examples(data) -> pd.DataFrame:
    """Thumbs judgments as unpaired examples, TRL's unpaired format: prompt, completion, label (True = thumbs up),
    with who judged, the reply's id, the judgment's id, its iteration and model. `data`: a FeedbackStore or its
    `judgments_df()`. Each person's thumbs on a reply is one example (KTO's training signal)."""
    df = judgments_table(data, "unpaired_examples")
    thumbs = df[df["kind"] == "thumbs"]
    rows = [dict(prompt=j.prompt, completion=j.responses[0], label=bool(j.answer["up"]), annotator=j.annotator,
                 response_id=int(j.response_id), judgment_id=int(j.judgment_id), iteration=int(j.iteration),
                 model=j.model) for j in thumbs.itertuples()]
    return pd.DataFrame(rows, columns=UNPAIRED_COLUMNS)


def rating_examples(data) -> pd.DataFrame:
    """Likert ratings as one row per rated reply: prompt, response, score, lo, hi (the scale), annotator,
    judgment_id, and the iteration and model that wrote the replies. `data`: a FeedbackStore or its
    `judgments_df()`. A supervised reward model regresses on these (`EmbeddingRewardModel.fit_ratings`)."""
    df = judgments_table(data, "rating_examples")
    rows = [dict(prompt=j.prompt, response=text, score=float(score), lo=int(j.answer["scale"][0]),
                 hi=int(j.answer["scale"][1]), annotator=j.annotator, judgment_id=int(j.judgment_id),
                 iteration=int(j.iteration), model=j.model)
            for j in df[df["kind"] == "rating"].itertuples() for text, score in zip(j.responses, j.answer["scores"])]
    return pd.DataFrame(rows, columns=["prompt", "response", "score", "lo", "hi", "annotator", "judgment_id",
                                       "iteration", "model"])


def ranking_examples(data) -> pd.DataFrame:
    """Rankings as one row per ranking: prompt, ranked (the reply texts, best first), annotator, judgment_id,
    iteration and model (of the replies). A listwise reward model fits these (`EmbeddingRewardModel.fit_rankings`,
    Plackett–Luce)."""
    df = judgments_table(data, "ranking_examples")
    rows = []
    for j in df[df["kind"] == "ranking"].itertuples():
        text = dict(zip(j.response_ids, j.responses))
        rows.append(dict(prompt=j.prompt, ranked=[text[i] for i in j.answer["order"]], annotator=j.annotator,
                         judgment_id=int(j.judgment_id), iteration=int(j.iteration), model=j.model))
    return pd.DataFrame(rows, columns=["prompt", "ranked", "annotator", "judgment_id", "iteration", "model"])


def split_by_prompt(pairs: pd.DataFrame, val_fraction: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val): a seeded ceil(val_fraction · #prompts) of the prompts and all their pairs go to val.

    At least one prompt stays in train; with val_fraction = 0 (or a single prompt) val is empty.
    """
    prompts = np.array(sorted(pairs["prompt"].unique()))
    n_val = min(math.ceil(val_fraction * len(prompts)), len(prompts) - 1)
    val_prompts = set(np.random.default_rng(seed).permutation(prompts)[:n_val])
    in_val = pairs["prompt"].isin(val_prompts)
    return pairs[~in_val].reset_index(drop=True), pairs[in_val].reset_index(drop=True)


def bootstrap_pairs(pairs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A resample of len(pairs) pairs drawn with replacement (seeded)."""
    idx = np.random.default_rng(seed).integers(0, len(pairs), size=len(pairs))
    return pairs.iloc[idx].reset_index(drop=True)


def without_ties(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs that are not ties."""
    return pairs[~pairs["tie"].astype(bool)].reset_index(drop=True)


def weight_by_source(pairs: pd.DataFrame, kinds: dict[str, str], weights: dict[str, float]) -> pd.DataFrame:
    """Mix feedback from people and AI judges: the pairs with a `weight` column, each pair weighing
    `weights[kind]` for the kind of its annotator. `kinds`: annotator name -> kind (`store.annotator_kinds()`); an
    annotator not in it is a "person". Kinds are "person", "simulated" (a scripted crowd or learner) and "ai" (an AI
    judge). Pairs of weight 0 are left out; an existing `weight` column is multiplied. A reward model fitted on
    the result (`EmbeddingRewardModel.fit`, `RewardModel.fit`) minimises the weighted loss

        L = Σ_i w_i ℓ_i / Σ_i w_i          (ℓ_i: pair i's Bradley–Terry log-loss)

    so a pair of weight 2 counts as two copies of it, and {"person": 1, "ai": 0.3} makes ten AI judgments count
    as three of a person's. Every kind among the pairs needs a weight (none is guessed)."""
    df = pd.DataFrame(pairs).reset_index(drop=True)
    unknown = sorted(set(weights) - set(ANNOTATOR_KINDS))
    if unknown:
        raise ValueError(f"weights are per annotator kind, one of {', '.join(map(repr, ANNOTATOR_KINDS))} (a person "
                         f"is 'person'); got {', '.join(map(repr, unknown))}")
    bad = {k: w for k, w in weights.items() if not _non_negative(w)}
    if bad:
        raise ValueError(f"weights must be finite numbers >= 0 (0 leaves a kind out), got {bad}")
    if "annotator" not in df:
        raise ValueError("pairs need an 'annotator' column to be weighted by who judged them: pass "
                         "as_preference_pairs(store), or weighted_pairs(store, weights)")
    kind = df["annotator"].map(lambda name: kinds.get(name, "person"))
    missing = sorted(set(kind) - set(weights))
    if missing:
        who = {k: df["annotator"][kind == k].iloc[0] for k in missing}
        raise ValueError(f"pairs by annotators of kind {', '.join(f'{k!r} (e.g. {n!r})' for k, n in who.items())} "
                         f"have no weight: add {' and '.join(map(repr, missing))} to weights (0 leaves them out)")
    return _weighted(df, kind.map(lambda k: float(weights[k])).to_numpy(dtype=float), f"kinds {sorted(set(kind))}")


def weight_by_annotator(pairs: pd.DataFrame, weights: dict[str, float], *, others: float) -> pd.DataFrame:
    """The pairs with a `weight` column by the *name* of who judged each: `weights[name]` for the annotators named,
    `others` for everyone else. Kinds cannot tell a learner from a crowd when a simulated stand-in judged for the
    learner (both are "simulated"); names can: weight_by_annotator(pairs, {"me": 1}, others=0.25) makes four of
    the crowd's judgments count as one of yours, others=0 leaves the crowd out, {"me": 0} with others=1 leaves
    you out. Same rules as `weight_by_source`: pairs of weight 0 are left out, an existing `weight` is multiplied,
    and the reward models' fits minimise Σ_i w_i ℓ_i / Σ_i w_i."""
    df = pd.DataFrame(pairs).reset_index(drop=True)
    bad = {k: w for k, w in {**weights, "others": others}.items() if not _non_negative(w)}
    if bad:
        raise ValueError(f"weights must be finite numbers >= 0 (0 leaves an annotator out), got {bad}")
    if "annotator" not in df:
        raise ValueError("pairs need an 'annotator' column to be weighted by who judged them: pass "
                         "store.preference_pairs() or as_preference_pairs(store)")
    w = df["annotator"].map(lambda name: float(weights.get(name, others))).to_numpy(dtype=float)
    return _weighted(df, w, f"annotators {sorted(set(df['annotator']))}")


def _weighted(df: pd.DataFrame, w: np.ndarray, who: str) -> pd.DataFrame:
    """`df` with weight = w (times an existing weight), rows of weight 0 left out; all 0 raises, naming `who`."""
    df["weight"] = w * pd.to_numeric(df["weight"]).to_numpy(dtype=float) if "weight" in df else w
    if len(df) and not (df["weight"] > 0).any():
        raise ValueError(f"every pair has weight 0 ({who}): give one of them a weight > 0")
    return df[df["weight"] > 0].reset_index(drop=True)


def _non_negative(w) -> bool:
    try:
        return 0 <= float(w) < math.inf
    except (TypeError, ValueError):
        return False


def weighted_pairs(store, weights: dict[str, float]) -> pd.DataFrame:
    """The store's preference pairs weighted by the kind of their annotator: `weight_by_source(as_preference_pairs(
    store), store.annotator_kinds(), weights)`, e.g. weights={"person": 1.0, "ai": 0.3}."""
    return weight_by_source(as_preference_pairs(store), store.annotator_kinds(), weights)


def pair_weights(pairs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
    """(the pairs of weight > 0, their weights) from a `weight` column (`weight_by_source`); (pairs, None) without
    one. Negative, missing or infinite weights raise ValueError."""
    if "weight" not in pairs:
        return pairs, None
    w = pd.to_numeric(pairs["weight"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("the weight column must hold finite numbers >= 0 for every pair (0 leaves a pair out); "
                         "weight_by_source(pairs, kinds, weights) makes one")
    keep = w > 0
    return pairs[keep].reset_index(drop=True), w[keep]


def pairs_origin(pairs: pd.DataFrame) -> dict:
    """What a set of preference pairs came from, for a model fitted on them to keep beside its weights: the number
    of pairs, the judgments (their ids), the annotators, and the iterations and models of the replies."""
    return judgments_origin(pairs, "pairs")


def judgments_origin(table: pd.DataFrame, unit: str = "examples") -> dict:
    """What a table of training examples (pairs, flags, thumbs, ...) came from: {unit: its length} and, from the
    columns it has, the judgment ids, annotators, iterations and models (chosen_model and rejected_model, else
    `model`, whose "a,b" names two)."""
    origin: dict = {unit: len(table)}
    if "judgment_id" in table:
        origin["judgment_ids"] = sorted(int(j) for j in table["judgment_id"].unique())
    if "annotator" in table:
        origin["annotators"] = sorted(map(str, table["annotator"].unique()))
    if "iteration" in table:
        origin["iterations"] = sorted(int(i) for i in table["iteration"].unique())
    if "chosen_model" in table:
        origin["models"] = sorted({*map(str, table["chosen_model"]), *map(str, table["rejected_model"])})
    elif "model" in table:
        origin["models"] = sorted({m for joined in table["model"] for m in str(joined).split(",")})
    return origin
