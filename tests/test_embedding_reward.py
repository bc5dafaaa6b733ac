"""rlhf_lab.reward.embedding: the fitted head is the optimum of its loss, it learns a taste from few pairs, its
ensemble spreads, and it saves and loads (safetensors and JSON, no pickle) to the same scores."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_lab.feedback.tastes import short_replies
from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel
from rlhf_lab.reward.evidence import log_evidence
from rlhf_lab.reward.text_features import FIRST_SURFACE, SURFACE_FEATURES, common_words, surface_features

WORDS = "we could talk about the weather music films books food travel games work friends and family today".split()


def replies(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 16)))).capitalize() + "." for _ in range(n)]


def taste_pairs(n: int, seed: int, taste=short_replies) -> pd.DataFrame:
    a, b = replies(n, seed), replies(n, seed + 100)
    rows = []
    for x, y in zip(a, b):
        better, worse = (x, y) if taste("hi", x) >= taste("hi", y) else (y, x)
        rows.append({"prompt": "Tell me something.", "chosen": better, "rejected": worse})
    return pd.DataFrame(rows)


def test_the_fit_is_the_optimum_of_the_penalised_loss():
    """At the L-BFGS solution the gradient computed by hand, Xᵀ(σ(Xw) − t)/n + 2λw/n, is zero."""
    config = EmbeddingRewardConfig(features=("surface",), l2=0.5, ensemble_size=1)
    rm = EmbeddingRewardModel(config).fit(taste_pairs(30, 0))
    pairs = rm.val_pairs_
    x = ((rm.featurize(pairs["prompt"], pairs["chosen"]) - rm.featurize(pairs["prompt"], pairs["rejected"]))
         / rm.std_).double().numpy()
    w = rm.weights_[0].double().numpy()
    grad = x.T @ (1 / (1 + np.exp(-x @ w)) - 1.0) / len(x) + 2 * 0.5 * w / len(x)
    assert np.abs(grad).max() < 1e-4


def test_it_learns_a_taste_from_few_pairs_and_its_members_disagree():
    rm = EmbeddingRewardModel(EmbeddingRewardConfig(ensemble_size=3, seed=0)).fit(taste_pairs(30, 1))
    fresh_a, fresh_b = replies(60, 7), replies(60, 8)
    assert rm.agreement(["Tell me something."] * 60, fresh_a, fresh_b, short_replies) >= 0.85
    assert rm.weights_.shape[0] == 3 and float(rm.spread(["hi"] * 5, fresh_a[:5]).max()) > 0
    scores = rm.score(["Tell me something."] * 60, fresh_a)
    assert scores.shape == (60,) and scores.dtype == torch.float32


def test_save_and_load_give_the_same_scores(tmp_path):
    rm = EmbeddingRewardModel().fit(taste_pairs(12, 2))
    loaded = EmbeddingRewardModel.load(rm.save(tmp_path / "rm"))
    texts = replies(5, 3)
    assert torch.equal(loaded.score(["hi"] * 5, texts), rm.score(["hi"] * 5, texts))
    assert sorted(p.name for p in (tmp_path / "rm").iterdir()) == ["embedding_reward_model.json", "weights.safetensors"]


def test_a_replace_stopped_between_its_two_renames_still_loads_the_old_model(tmp_path):
    """Saving over a model sets the old folder aside, then renames the new one in: a crash between the two leaves
    only the aside copy, which `load` must find (as a PPO checkpoint's does), not report the model missing."""
    rm = EmbeddingRewardModel().fit(taste_pairs(12, 2))
    path = rm.save(tmp_path / "rm")
    os.replace(path, tmp_path / ".rm.old-0123abcd")  # the first rename happened, the second did not
    texts = replies(5, 3)
    assert torch.equal(EmbeddingRewardModel.load(path).score(["hi"] * 5, texts), rm.score(["hi"] * 5, texts))
    with pytest.raises(FileNotFoundError, match="No embedding reward model at .*nothing"):
        EmbeddingRewardModel.load(tmp_path / "nothing")


def test_bad_config_and_data_say_how_to_fix():
    with pytest.raises(ValueError, match="features must be"):
        EmbeddingRewardConfig(features=("tone",))
    assert EmbeddingRewardConfig(features="surface").features == ("surface",)  # one block alone, not its letters
    from rlhf_lab.reward.cost import CostModelConfig

    assert (CostModelConfig(features="surface").features, CostModelConfig(flags="harmful").flags) == \
        (("surface",), ("harmful",))
    with pytest.raises(ValueError, match="l2"):
        EmbeddingRewardConfig(l2=0)
    ties = taste_pairs(4, 0).assign(tie=True)
    with pytest.raises(ValueError, match="no training pairs"):
        EmbeddingRewardModel(EmbeddingRewardConfig(include_ties=False)).fit(ties)
    features = surface_features("Why?", "Because! Isn't it?")
    assert len(features) == len(SURFACE_FEATURES) == 11


def test_surface_features_read_length_twice_and_by_name():
    values = dict(zip(SURFACE_FEATURES, surface_features("Why?", "Because it rained all day.")))
    assert values["word_count"] == 5 and values["log_words"] == pytest.approx(math.log(6))
    assert surface_features("Why?", "No.", ("word_count", "questions")) == [1.0, 0.0]
    assert surface_features("Why?", "No.", FIRST_SURFACE) == surface_features("Why?", "No.")[:10]


@pytest.mark.parametrize("format_", [1, 2])
def test_a_model_saved_in_an_older_format_loads_and_scores_as_it_did(tmp_path, format_):
    """Format 1 (before "word_count") saved no surface list: its models read the first ten features. Format 2 saved
    the list beside the config (format 3: in it)."""
    old = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), ensemble_size=1,
                                                     surface=FIRST_SURFACE)).fit(taste_pairs(12, 0))
    path = old.save(tmp_path / "rm")
    meta = json.loads((path / "embedding_reward_model.json").read_text())
    assert meta["format"] == 3 and meta["config"]["surface"] == list(FIRST_SURFACE)
    meta["format"] = format_
    del meta["config"]["surface"]
    if format_ == 2:
        meta["surface"] = list(FIRST_SURFACE)
    (path / "embedding_reward_model.json").write_text(json.dumps(meta))
    loaded = EmbeddingRewardModel.load(path)
    texts = replies(4, 1)
    assert loaded.config.surface == FIRST_SURFACE
    assert loaded.featurize(["hi"] * 4, texts).shape[1] == old.weights_.shape[1]
    assert torch.equal(loaded.score(["hi"] * 4, texts), old.score(["hi"] * 4, texts))
    meta["format"], meta["config"]["surface"] = 3, [*FIRST_SURFACE, "rhyme"]  # from a newer rlhf-lab
    (path / "embedding_reward_model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"does not know \(rhyme\); upgrade rlhf-lab"):
        EmbeddingRewardModel.load(path)
    meta["format"] = 4
    (path / "embedding_reward_model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 4.*upgrade rlhf-lab"):
        EmbeddingRewardModel.load(path)


def test_the_surface_list_chooses_the_columns_and_their_order():
    prompts, texts = ["Why?"] * 2, ["No.", "Because it rained all day, and then it rained again."]
    model = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface",), surface=("word_count", "questions")))
    assert model.featurize(prompts, texts).tolist() == [[1.0, 0.0], [10.0, 0.0]]
    assert model.block_widths() == {"surface": 2}
    with pytest.raises(ValueError, match="surface must be distinct names among log_words"):
        EmbeddingRewardConfig(surface=("word_count", "word_count"))
    with pytest.raises(ValueError, match=r"unknown: rhyme; a newer rlhf-lab"):
        EmbeddingRewardConfig(surface=("rhyme",))


def test_a_damaged_save_is_refused(tmp_path):
    pairs = pd.DataFrame({"prompt": ["hi"] * 6, "chosen": ["short"] * 6, "rejected": ["a much longer reply here"] * 6,
                          "tie": [False] * 6})
    path = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface",), ensemble_size=1)).fit(pairs).save(
        tmp_path / "rm")
    data = bytearray((path / "weights.safetensors").read_bytes())
    data[-3] ^= 0x10
    (path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="weights.safetensors does not match the checksum"):
        EmbeddingRewardModel.load(path)


# ---- ratings and rankings --------------------------------------------------------------------------------------------
def _kinds_store(tmp_path):
    """Replies of clear lengths; a short-loving rater rates (1-7) and ranks them."""
    from rlhf_lab.feedback.store import FeedbackStore

    store = FeedbackStore(tmp_path / "kinds.db")
    words = "the weather is nice today and I like walking along the river with my dog".split()
    for i in range(12):
        texts = [" ".join(words[:n]) + "." for n in (2 + i % 2, 6, 10 + i % 3)]
        ids = store.add_responses([dict(prompt=f"Tell me about day {i}.", response=t, model="m", iteration=0)
                                   for t in texts])
        rating, ranking = store.add_item(ids, kind="rating"), store.add_item(ids, kind="ranking")
        store.record_rating(rating, "ann", [7, 4, 1])
        store.record_ranking(ranking, "ann", [ids[0], ids[1], ids[2]])
    return store


def test_ratings_and_rankings_train_the_embedding_model(tmp_path):
    from rlhf_lab.feedback.preferences import ranking_examples, rating_examples

    store = _kinds_store(tmp_path)
    ratings, rankings = rating_examples(store), ranking_examples(store)
    assert len(ratings) == 36 and ratings["score"].tolist()[:3] == [7.0, 4.0, 1.0] and (ratings["hi"] == 7).all()
    assert len(rankings) == 12 and rankings["ranked"][0][0].count(" ") < rankings["ranked"][0][2].count(" ")
    for examples in (ratings, rankings):  # where the replies came from
        assert set(examples["model"]) == {"m"} and set(examples["iteration"]) == {0}
    config = EmbeddingRewardConfig(ensemble_size=2, seed=0)
    probe = ["Nice.", "It is a nice day to walk along the river with the dog today."]
    fitted = (EmbeddingRewardModel(config).fit_ratings(ratings), EmbeddingRewardModel(config).fit_rankings(rankings))
    for model in fitted:
        short, long = model.score(["How was your day?"] * 2, probe).tolist()
        assert short > long  # both learned the rater's taste for short replies
        assert model.evaluate().accuracy == 1.0 and len(model.val_pairs_) == 36  # 3 pairs per prompt
    with pytest.raises(ValueError, match="rating_examples"):
        EmbeddingRewardModel(config).fit_ratings(rankings)
    for fit, empty in (("fit_ratings", ratings.iloc[:0]), ("fit_rankings", rankings.iloc[:0])):  # a pairs-only store
        with pytest.raises(ValueError, match=r"No (ratings|rankings) to fit: the table is empty .the store holds no"):
            getattr(EmbeddingRewardModel(config), fit)(empty)


def test_the_words_block_learns_a_one_word_taste_that_surface_features_miss(tmp_path):
    """A taste for the word "family" (no surface feature sees it): with the words block the model orders fresh
    pairs by it; with surface features alone it cannot. The vocabulary is the words of the fitted replies, saved
    and loaded with the model."""
    def family(prompt, reply):
        return float("family" in reply.lower())
    a, b = replies(200, 11), replies(200, 12)
    agree = {}
    for seed in (3, 4, 5):  # 40 pairs each; surface features see only that longer replies hold the word more often
        pairs = taste_pairs(40, seed, taste=family)
        for blocks in (("surface", "words"), ("surface",)):
            rm = EmbeddingRewardModel(EmbeddingRewardConfig(features=blocks, seed=0)).fit(pairs)
            agree[blocks, seed] = rm.agreement(["hi"] * 200, a, b, family)
    assert np.mean([agree[("surface", "words"), s] for s in (3, 4, 5)]) >= 0.8
    assert all(agree[("surface", "words"), s] > agree[("surface",), s] + 0.05 for s in (3, 4, 5))
    words = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), seed=0)).fit(pairs)
    assert "family" in words.vocabulary_ and set(words.vocabulary_) <= set(WORDS)
    column = len(SURFACE_FEATURES) + words.vocabulary_.index("family")
    assert words.featurize(["hi"], ["Family, family!"])[0, column] == pytest.approx(np.log(3))
    loaded = EmbeddingRewardModel.load(words.save(tmp_path / "rm"))
    assert loaded.vocabulary_ == words.vocabulary_
    assert torch.equal(loaded.score(["hi"] * 5, a[:5]), words.score(["hi"] * 5, a[:5]))


def test_words_blend_scores_as_the_two_models_summed_in_units_of_their_spread(tmp_path):
    """words_blend: the blended model orders replies as the words model's score / its spread plus the no-words
    model's score / its spread, both fitted separately here on the same pairs and seed (the spread: the standard
    deviation of a model's raw score over the chosen and rejected replies it was fitted on)."""
    def family(prompt, reply):
        return float("family" in reply.lower()) - len(reply.split()) / 10
    pairs = taste_pairs(30, 6, taste=family)
    blocks = ("surface", "words")
    models = [EmbeddingRewardModel(EmbeddingRewardConfig(features=f, seed=0, ensemble_size=3, **extra)).fit(pairs)
              for f, extra in ((blocks, {"words_blend": True}), (blocks, {}), (("surface",), {}))]
    fitted = (["Tell me something."] * 60, list(pairs["chosen"]) + list(pairs["rejected"]))
    probe = (["hi"] * 40, replies(40, 13))
    blended, words, bare = (m.score_raw(*probe).double() for m in models)
    expected = sum(m.score_raw(*probe).double() / m.score_raw(*fitted).double().std() for m in models[1:])
    offset = blended - expected  # the blend's raw score is the expected sum plus a constant
    assert float(offset.std()) < 1e-4 * float(expected.std())
    assert not torch.allclose(blended / blended.std(), words / words.std(), atol=1e-3)  # the blend moved it
    assert models[0].weights_.shape == models[1].weights_.shape  # one linear model over the same features
    loaded = EmbeddingRewardModel.load(models[0].save(tmp_path / "rm"))
    assert loaded.config.words_blend and torch.equal(loaded.score(*probe), models[0].score(*probe))
    with pytest.raises(ValueError, match="words_blend=False"):
        EmbeddingRewardModel(EmbeddingRewardConfig(words_blend=True)).fit_ratings(pd.DataFrame())


def test_common_words_keeps_words_in_enough_replies_most_frequent_first():
    texts = ["You and you.", "you, me", "Me? no", "you"]
    assert common_words(texts, min_texts=2, most=10) == ["you", "me"]
    assert common_words(texts, min_texts=1, most=2) == ["you", "me"]
    assert common_words(texts, min_texts=5, most=10) == []


def test_words_weights_keep_the_words_prior_of_largest_evidence(tmp_path):
    """words_weights: the fit keeps the candidate whose single fit on all pairs has the largest Laplace evidence
    (recomputed here from models fitted at each weight alone), records it in words_weight, and is then the model
    fitted at that weight. A one-word taste gets a weaker prior on the word counts than a taste for length."""
    def family(prompt, reply):
        return 2 * float("family" in reply.lower())

    def short(prompt, reply):
        return -len(reply.split()) / 3
    candidates, chosen = (0.3, 1.0, 10.0), {}
    for name, taste in (("family", family), ("short", short)):
        pairs = taste_pairs(40, 7, taste=taste)
        evidence = {}
        for a in candidates:
            alone = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), words_weight=a,
                                                               ensemble_size=1)).fit(pairs)
            z = (alone.featurize(pairs["prompt"], pairs["chosen"])
                 - alone.featurize(pairs["prompt"], pairs["rejected"])) / alone.std_
            evidence[a] = log_evidence(z, torch.ones(len(pairs)), alone.weights_[0], 1.0)  # no ties here
        model = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), words_weights=candidates,
                                                           seed=0, ensemble_size=2)).fit(pairs)
        chosen[name] = model.config.words_weight
        assert chosen[name] == max(evidence, key=evidence.get)
        same = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), words_weight=chosen[name],
                                                          seed=0, ensemble_size=2)).fit(pairs)
        assert torch.equal(model.weights_, same.weights_)
    assert chosen["family"] > chosen["short"]
    loaded = EmbeddingRewardModel.load(model.save(tmp_path / "rm"))
    assert loaded.config.words_weight == chosen["short"] and loaded.config.words_weights == candidates
    with pytest.raises(ValueError, match="words_weights=()"):
        EmbeddingRewardModel(EmbeddingRewardConfig(words_weights=(1.0, 3.0))).fit_ratings(pd.DataFrame())


def test_words_relevance_gives_the_word_of_a_one_word_taste_the_largest_prior(tmp_path):
    """words_relevance: each word's own prior weight by the evidence. On a taste for "family" the word gets the
    cap and most others shrink; fresh pairs are ordered better than with one shared prior (0.82, 0.95, 0.79 against
    0.98, 0.99, 0.95 when written); the weights live in std_, so a saved model scores the same; ratings and a second
    way of choosing the prior are refused."""
    def family(prompt, reply):
        return float("family" in reply.lower())
    a, b = replies(200, 11), replies(200, 12)
    agree = {}
    for seed in (3, 4, 5):
        pairs = taste_pairs(40, seed, taste=family)
        shared = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), seed=0)).fit(pairs)
        own = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), words_relevance=3.0,
                                                         seed=0)).fit(pairs)
        prior = own.words_prior()
        assert prior["family"] == pytest.approx(3.0) == max(prior.values())
        assert sum(v < 0.5 for v in prior.values()) > len(prior) / 2
        assert set(shared.words_prior().values()) == {1.0}
        agree[seed] = [m.agreement(["hi"] * 200, a, b, family) for m in (shared, own)]
    assert min(own for _, own in agree.values()) >= 0.9
    assert np.mean([own - shared for shared, own in agree.values()]) >= 0.08
    loaded = EmbeddingRewardModel.load(own.save(tmp_path / "rm"))
    assert loaded.words_prior() == prior and torch.equal(loaded.score(["hi"] * 5, a[:5]), own.score(["hi"] * 5, a[:5]))
    with pytest.raises(ValueError, match="words_relevance=0"):
        EmbeddingRewardModel(EmbeddingRewardConfig(words_relevance=3.0)).fit_ratings(pd.DataFrame())
    with pytest.raises(ValueError, match="set one of them"):
        EmbeddingRewardConfig(words_relevance=3.0, words_weights=(1.0, 3.0))
    with pytest.raises(ValueError, match="words_relevance >= 0"):
        EmbeddingRewardConfig(words_relevance=-1.0)


def test_relevance_gives_every_feature_its_own_prior_and_the_length_features_of_a_taste_for_short_replies_the_cap(
        tmp_path):
    """relevance: every column's own prior weight by the evidence, up to `relevance` times its block's. On a taste for
    short replies a length feature gets the cap and most columns shrink; the scale is the ratio of std_ to a shared
    prior's on the same replies; the fit orders fresh pairs at least as well as one shared prior; a saved model
    scores the same; ratings, a second way of choosing priors and a negative cap are refused."""
    a, b = replies(200, 11), replies(200, 12)
    names = [*SURFACE_FEATURES]
    for seed in (3, 4):
        pairs = taste_pairs(40, seed)
        shared = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), seed=0)).fit(pairs)
        own = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), relevance=3.0,
                                                         seed=0)).fit(pairs)
        assert own.vocabulary_ == shared.vocabulary_ and torch.equal(own.mean_, shared.mean_)
        scale = shared.std_ / own.std_  # (F,): surface features first, then the words
        assert float(scale.max()) == pytest.approx(3.0, rel=1e-4) and float(scale.min()) >= 1e-3 - 1e-9
        surface = dict(zip(names, scale[:len(names)].tolist()))
        assert max(surface, key=surface.get) in ("log_words", "word_count")
        assert max(surface.values()) == pytest.approx(3.0, rel=1e-4)
        assert sum(v < 0.5 for v in scale.tolist()) > len(scale) / 2
        assert own.words_prior() == dict(sorted(zip(own.vocabulary_, scale[len(names):].tolist()),
                                                key=lambda kv: -kv[1]))
        assert own.agreement(["hi"] * 200, a, b, short_replies) >= shared.agreement(["hi"] * 200, a, b,
                                                                                     short_replies) - 0.02
    loaded = EmbeddingRewardModel.load(own.save(tmp_path / "rm"))
    assert torch.equal(loaded.score(["hi"] * 5, a[:5]), own.score(["hi"] * 5, a[:5]))
    with pytest.raises(ValueError, match="relevance=0"):
        EmbeddingRewardModel(EmbeddingRewardConfig(relevance=3.0)).fit_rankings(pd.DataFrame())
    with pytest.raises(ValueError, match="set one of them"):
        EmbeddingRewardConfig(relevance=3.0, words_relevance=3.0)
    with pytest.raises(ValueError, match="set one of them"):
        EmbeddingRewardConfig(relevance=3.0, words_weights=(1.0, 3.0))
    with pytest.raises(ValueError, match="relevance and words_relevance >= 0"):
        EmbeddingRewardConfig(relevance=-1.0)
