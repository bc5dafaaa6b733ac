"""The gold utility and the simulated crowd: features, choice model, seeding, and agreement that moves as it should."""

import itertools
import math

import numpy as np
import pytest

from rlhf_lab.feedback.agreement import annotator_report, panel_agreement
from rlhf_lab.feedback.crowd import SimulatedAnnotator, SimulatedCrowd
from rlhf_lab.feedback.gold import DEFAULT_WEIGHTS, GoldUtility, gold_features, gold_pairwise_labels, gold_utility
from rlhf_lab.feedback.store import FeedbackStore

TOPICS = {"How are you today?": "today", "What is your favourite food?": "food",
          "Can you recommend a good book?": "book", "Where do you like to travel?": "travel",
          "Do you like music?": "music"}


def replies(topic):
    """Six replies of clearly different gold utility: kind, flat, rude, repetitive, evasive, rambling."""
    return [f"I love {topic}, thanks for asking! It always makes me happy.",
            f"The {topic} is fine I guess.",
            "I hate this stupid question. Go away, you idiot.",
            " ".join([topic] * 8),
            "Why would you ask me that?",
            " ".join(["well", "it", "depends", "on", "many", "things", "and", "stuff"] * 8)]


def pairwise_store(store=None):
    """5 prompts x 15 pairs = 75 pairwise items, A/B order alternating (added to `store`, default a new one)."""
    store = FeedbackStore(":memory:") if store is None else store
    for prompt, topic in TOPICS.items():
        ids = store.add_responses([dict(prompt=prompt, response=t, model="m", iteration=0, sampling={})
                                   for t in replies(topic)])
        for a, b in itertools.combinations(range(6), 2):
            store.add_item([ids[a], ids[b]] if (a + b) % 2 else [ids[b], ids[a]])
    return store


_FIGURES = {}


def crowd_figures(**kwargs):
    """Panel agreement and annotator report of a seeded crowd of 5 on the 75 items (memoised across tests)."""
    key = repr(sorted(kwargs.items()))
    if key not in _FIGURES:
        store = pairwise_store()
        SimulatedCrowd(n=5, seed=0, **kwargs).annotate(store)
        _FIGURES[key] = panel_agreement(store), annotator_report(store, gold=True)
    return _FIGURES[key]


def test_gold_features():
    kind = gold_features("How are you today?", "I am great today, thanks for asking!")
    rude = gold_features("How are you today?", "I hate you. Go away.")
    assert kind["sentiment"] > 0.5 and rude["sentiment"] < -0.5
    assert kind["politeness"] == 1.0 and rude["politeness"] == 0.0
    assert kind["overlap"] == 1.0 and rude["overlap"] == 0.0  # "today" is the prompt's one content word
    assert kind["answers_question"] == 1.0 and gold_features("Hi?", "Why?")["answers_question"] == 0.0
    assert gold_features("Hi", "a b a b a b")["repetition"] == pytest.approx(1 - 2 / 5)
    assert gold_features("Hi", "one two three four")["repetition"] == 0.0
    assert kind["length_words"] == 7.0 and kind["length_fit"] == 0.0
    assert gold_features("Hi", "word " * 80)["length_fit"] == pytest.approx(-math.log(2))
    assert gold_features("Hi", "Yes")["length_fit"] == pytest.approx(-math.log(4))
    assert gold_features("Hi", "")["sentiment"] == 0.0


def test_gold_utility_is_the_weighted_sum_and_batches():
    prompt, texts = "Do you like music?", replies("music")
    u = GoldUtility()(prompt, texts)
    assert u.shape == (6,) and u.dtype == np.float64
    f = gold_features(prompt, texts[0])
    assert u[0] == pytest.approx(sum(w * f[k] for k, w in DEFAULT_WEIGHTS.items()))
    assert u[0] == pytest.approx(gold_utility(prompt, texts[0]))
    assert int(np.argmax(u)) == 0 and u[0] - u[2] > 1.5  # kind beats rude by a wide margin
    assert np.allclose(GoldUtility()([prompt] * 6, texts), u)
    only_length = GoldUtility(weights={"length_words": 1.0})
    assert only_length.utility(prompt, "one two three") == 3.0
    assert only_length.score([prompt, prompt], ["one two three", "one"]).tolist() == [3.0, 1.0]  # batched, as every
    # reward source scores
    with pytest.raises(ValueError, match="one each"):
        GoldUtility()(["a", "b"], ["x"])


def test_pairwise_choice_follows_bradley_terry():
    a, b = {"sentiment": 0.3}, {"sentiment": 0.0}
    for beta in (1.0, 5.0):
        ann = SimulatedAnnotator("x", rationality=beta, gold=GoldUtility(weights={"sentiment": 1.0}), tie_margin=0)
        rng = np.random.default_rng(0)
        p_a = np.mean([ann.judge_pairwise([a, b], rng)[0] == "A" for _ in range(4000)])
        assert p_a == pytest.approx(1 / (1 + math.exp(-beta * 0.3)), abs=0.025)
    tie = SimulatedAnnotator("x", gold=GoldUtility(weights={"sentiment": 1.0}), tie_margin=0.5)
    assert tie.judge_pairwise([a, b], np.random.default_rng(0)) == ("tie", None)


def test_ranking_follows_plackett_luce():
    feats = [{"sentiment": u} for u in (1.0, 0.5, 0.0)]
    ann = SimulatedAnnotator("x", rationality=2.0, gold=GoldUtility(weights={"sentiment": 1.0}))
    rng = np.random.default_rng(1)
    firsts = np.bincount([ann.judge_ranking(feats, rng)[0] for _ in range(4000)], minlength=3) / 4000
    w = np.exp(2.0 * np.array([1.0, 0.5, 0.0]))
    assert np.allclose(firsts, w / w.sum(), atol=0.03)


def test_same_seed_same_judgments_and_order_does_not_matter():
    def answers(seed, split=False):
        store = pairwise_store()
        crowd = SimulatedCrowd(n=3, rationality=1.0, seed=seed)
        items = store.items()
        if split:  # judge the second half first, then resume: a restart
            crowd.annotate(store, items[40:])
            crowd.annotate(store)
        else:
            crowd.annotate(store)
        df = store.judgments_df()
        return df.sort_values(["annotator", "item_id"])[["annotator", "item_id", "answer"]].to_json(orient="values")

    assert answers(7) == answers(7) == answers(7, split=True)
    assert answers(7) != answers(8)


def test_keys_judge_items_as_in_a_fresh_store():
    """A crowd judging into a store that already holds other items (so the ids shift by 75) judges as it did in a
    fresh store when given the fresh store's ids as keys; without them its coins differ."""
    def answers(store, items, keys=None):
        SimulatedCrowd(n=3, rationality=1.0, seed=4).annotate(store, items, keys=keys)
        df = store.judgments_df()
        df = df[df["item_id"].isin([it.id for it in items])]
        return df.sort_values(["annotator", "item_id"])["answer"].tolist()

    fresh = pairwise_store()
    alone = answers(fresh, fresh.items())
    shared = pairwise_store(pairwise_store())  # the same 75 items again, after the first 75
    assert answers(shared, shared.items()[75:], keys=range(1, 76)) == alone
    other = pairwise_store(pairwise_store())
    assert answers(other, other.items()[75:]) != alone
    with pytest.raises(ValueError, match="one key per item"):
        SimulatedCrowd(n=1).annotate(fresh, fresh.items()[:2], keys=[1])


def test_more_rationality_more_agreement():
    low, low_report = crowd_figures(rationality=0.5)
    high, high_report = crowd_figures(rationality=20.0)
    assert low["fleiss_kappa"] < 0.35 and high["fleiss_kappa"] > 0.9
    assert high["krippendorff_alpha"] - low["krippendorff_alpha"] > 0.5
    assert high_report["gold_agreement"].min() > 0.95
    assert low_report["gold_agreement"].mean() < 0.8


def test_perception_noise_lowers_agreement():
    clean, _ = crowd_figures(rationality=5.0)
    noisy, _ = crowd_figures(rationality=5.0, noise=1.0)
    assert clean["fleiss_kappa"] - noisy["fleiss_kappa"] > 0.2


def test_a_shared_bias_agrees_with_itself_but_not_with_gold():
    fair, fair_report = crowd_figures(rationality=20.0)
    biased, biased_report = crowd_figures(rationality=20.0, bias={"sentiment": -4.0})  # the crowd likes rudeness
    assert biased["fleiss_kappa"] > 0.9  # still unanimous ...
    assert biased_report["gold_agreement"].max() < 0.7  # ... about the wrong answers
    assert fair_report["gold_agreement"].mean() - biased_report["gold_agreement"].mean() > 0.3


def test_differing_tastes_lower_agreement():
    same, _ = crowd_figures(rationality=20.0)
    spread, _ = crowd_figures(rationality=20.0, bias_spread=1.5)
    assert same["fleiss_kappa"] - spread["fleiss_kappa"] > 0.2


def test_report_spots_the_careless_and_the_adversarial():
    _, report = crowd_figures(rationality=5.0, n_careless=1)
    assert report.index[report["suspect"]].tolist() == ["sim-4"]
    assert report["gold_agreement"].idxmin() == "sim-4" and report.loc["sim-4", "gold_agreement"] < 0.7
    _, report = crowd_figures(rationality=5.0, n_adversarial=1)
    assert report.index[report["suspect"]].tolist() == ["sim-4"] and report.loc["sim-4", "gold_agreement"] < 0.2


def test_gold_pairwise_labels():
    store = pairwise_store()
    labels = gold_pairwise_labels(store.items())
    first, second = store.items()[:2]  # kind vs flat shown as [kind, flat]; kind vs rude shown as [rude, kind]
    assert first.responses[0].text.startswith("I love") and labels[first.id] == "A"
    assert second.responses[1].text.startswith("I love") and labels[second.id] == "B"
    assert set(labels.values()) <= {"A", "B", "tie"} and len(labels) == 75


def test_ratings_rankings_thumbs_and_flags_through_the_store():
    store = FeedbackStore(":memory:")
    texts = replies("music")
    ids = store.add_responses([dict(prompt="Do you like music?", response=t, model="m", iteration=1, sampling={})
                               for t in texts])
    rating = store.add_item(ids, kind="rating")
    ranking = store.add_item(ids, kind="ranking")
    crowd = SimulatedCrowd(n=2, rationality=50.0, seed=0)
    written = crowd.annotate(store, kinds=("thumbs", "flags"))
    assert len(written) == 2 * (2 + 6 + 6)
    assert crowd.annotate(store, kinds=("thumbs", "flags")) == []  # nothing left to judge
    df = store.judgments_df()
    gold = GoldUtility()("Do you like music?", texts)
    for ann in ("sim-0", "sim-1"):
        mine = df[df["annotator"] == ann].set_index("kind")
        scores = mine.loc["rating", "answer"]["scores"]
        assert scores[0] >= 6 and scores[2] <= 3 and all(1 <= s <= 7 for s in scores)
        assert mine.loc["ranking", "answer"]["order"] == [ids[i] for i in np.argsort(-gold)]
        flags = df[(df["annotator"] == ann) & (df["kind"] == "flags")].set_index("response_id")["answer"]
        assert flags[ids[2]] == {"flags": ["harmful"]} and flags[ids[0]] == {"flags": []}
        assert flags[ids[3]] == {"flags": ["other"]}  # the repetitive one
        thumbs = df[(df["annotator"] == ann) & (df["kind"] == "thumbs")].set_index("response_id")["answer"]
        assert thumbs[ids[0]] == {"up": True} and thumbs[ids[2]] == {"up": False}
    assert len(store.preference_pairs(include_ties=False)) >= 2 * 15  # rankings alone give 15 pairs each
    assert rating != ranking


def test_replies_judged_without_their_items_as_annotate_would():
    """`annotate_replies` gives the thumbs and flags `annotate(kinds=...)` gives, judges no item, and resumes."""
    texts = replies("food")

    def fresh():
        store = FeedbackStore(":memory:")
        ids = store.add_responses([dict(prompt="What is your favourite food?", response=t, model="m", iteration=0)
                                   for t in texts])
        store.add_item(ids[:2])
        store.add_item(ids[2:4])
        return store, ids

    def per_reply(store):
        df = store.judgments_df()
        return sorted(zip(df["annotator"], df["kind"], df["response_id"], map(str, df["answer"])))

    both, _ = fresh()
    crowd = SimulatedCrowd(n=2, seed=4)
    crowd.annotate(both, kinds=("thumbs", "flags"))
    alone, ids = fresh()
    written = crowd.annotate_replies(alone, [r for it in alone.items() for r in it.responses], ("thumbs", "flags"))
    assert len(written) == 2 * 4 * 2 and set(alone.judgments_df()["kind"]) == {"thumbs", "flags"}
    assert per_reply(alone) == [row for row in per_reply(both) if row[1] in ("thumbs", "flags")]
    assert crowd.annotate_replies(alone, ids[:4], ("thumbs",)) == []  # judged already: nothing new
    assert len(SimulatedAnnotator("x", seed=0).annotate_replies(alone, ids[4:])) == 2  # by id, thumbs by default
    with pytest.raises(ValueError, match="thumbs"):
        crowd.annotate_replies(alone, ids, ("pairwise",))


def test_crowd_members_are_configured_as_asked():
    members = SimulatedCrowd(n=5, n_careless=1, n_adversarial=1, bias={"politeness": 1.0}, seed=3).members()
    assert [m.name for m in members] == [f"sim-{i}" for i in range(5)]
    assert [m.careless > 0 for m in members] == [False] * 4 + [True]
    assert [m.adversarial for m in members] == [False] * 3 + [True, False]
    assert all(m.weights["politeness"] == DEFAULT_WEIGHTS["politeness"] + 1.0 for m in members)
    again = SimulatedCrowd(n=5, n_careless=1, n_adversarial=1, bias={"politeness": 1.0}, seed=3).members()
    assert [m.seed for m in members] == [m.seed for m in again]
    custom = [SimulatedAnnotator("alice"), SimulatedAnnotator("bob", careless=1.0)]
    assert SimulatedCrowd(annotators=custom).members() == custom


def test_rating_noise_shrinks_with_rationality():
    feats = [{"sentiment": 0.0}] * 2000  # target score: the middle of the scale
    gold = GoldUtility(weights={"sentiment": 1.0})
    rng = np.random.default_rng(0)
    random_rater = np.array(SimulatedAnnotator("x", rationality=0.0, gold=gold).judge_rating(feats, rng))
    careful_rater = np.array(SimulatedAnnotator("y", rationality=20.0, gold=gold).judge_rating(feats, rng))
    assert np.allclose(np.bincount(random_rater, minlength=8)[1:] / 2000, 1 / 7, atol=0.03)  # uniform on 1..7
    assert (careful_rater == 4).mean() > 0.95


def test_annotate_refuses_unknown_kinds():
    store = pairwise_store()
    with pytest.raises(ValueError, match="thumbs"):
        SimulatedCrowd(n=1).annotate(store, kinds=("vibes",))
    assert store.counts()["total"] == 0


def test_a_misspelt_feature_or_a_senseless_setting_is_refused_in_one_line():
    from rlhf_lab.feedback.gold import FEATURES, gold_features

    assert FEATURES == tuple(gold_features("Why?", "Because."))  # the names checked are the names computed
    with pytest.raises(ValueError, match="bias names 'sentimnt', which is not a feature; the features: sentiment"):
        SimulatedAnnotator("x", bias={"sentimnt": -50})  # it counted for nothing: the same choices as no bias
    with pytest.raises(ValueError, match="bias names 'tone'"):
        SimulatedCrowd(bias={"tone": 1.0})
    with pytest.raises(ValueError, match="GoldUtility's weights names 'sentimnt'"):
        GoldUtility(weights={"sentimnt": 1.0})
    for kwargs in ({"careless": 1.5}, {"rationality": -5.0}, {"noise": -1.0}):
        with pytest.raises(ValueError, match="careless a probability in"):
            SimulatedAnnotator("x", **kwargs)
    for kwargs, words in (({"n": 0}, "n must be a whole number >= 1"), ({"n": 2, "n_careless": 3}, "at most n"),
                          ({"n": 2.0}, "got n=2.0"), ({"seed": -1}, "seed must be a whole number >= 0"),
                          ({"bias_spread": -0.1}, "bias_spread must be >= 0")):
        with pytest.raises(ValueError, match=words):
            SimulatedCrowd(**kwargs)


def test_a_path_for_a_store_and_one_kind_as_a_string_are_read_as_meant(tmp_path):
    from rlhf_lab.feedback.agreement import fleiss_kappa, krippendorff_alpha, label_matrix

    path = str(tmp_path / "f.db")
    with pytest.raises(TypeError, match=r"annotate needs a FeedbackStore, got str .*: open it first: FeedbackStore\("):
        SimulatedCrowd(n=2).annotate(path)
    with pytest.raises(TypeError, match="label_matrix needs a FeedbackStore"):
        label_matrix(path)
    store = FeedbackStore(":memory:")
    ids = store.add_responses([dict(prompt="Hi?", response=r, model="m", iteration=0) for r in ("Hello!", "Go.")])
    store.add_item(ids)
    SimulatedCrowd(n=2).annotate(store, kinds="thumbs")  # one kind alone: not the letters t, h, u, m, b, s
    assert store.counts()["by_kind"] == {"pairwise": 2, "thumbs": 4}
    with pytest.raises(ValueError, match=r"kinds may hold 'thumbs' and 'flags', got \['thumb'\]"):
        SimulatedCrowd(n=2).annotate(store, kinds=("thumb",))
    with pytest.raises(ValueError, match="level must be nominal, ordinal, interval or ratio, got 'Nominal'"):
        krippendorff_alpha([["A", "B"], ["A", "A"]], level="Nominal")  # said before reading "A" as a number
    with pytest.raises(ValueError, match="fleiss_kappa needs a units x categories table"):
        fleiss_kappa([])
