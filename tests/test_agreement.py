"""Agreement statistics against scikit-learn and textbook examples, and the per-annotator report."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from rlhf_lab.feedback.agreement import (annotator_report, category_counts, cohen_kappa, fleiss_kappa, gold_agreement,
                                         krippendorff_alpha, label_matrix, majority_agreement, pairwise_kappas,
                                         panel_agreement)
from rlhf_lab.feedback.store import FeedbackStore

nan = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders x 12 units, missing data.
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
]).T  # units x coders
# Wikipedia, "Krippendorff's alpha", computational example: 3 coders x 15 units.
WIKIPEDIA_ALPHA = np.array([
    [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
    [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
    [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
]).T
# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_WIKIPEDIA = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


@pytest.mark.parametrize("level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849),
                                             ("ratio", 0.797)])
def test_krippendorff_worked_example(level, expected):
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(expected, abs=5e-4)


def test_krippendorff_wikipedia_example():
    assert krippendorff_alpha(WIKIPEDIA_ALPHA, "nominal") == pytest.approx(0.691, abs=5e-4)
    assert krippendorff_alpha(WIKIPEDIA_ALPHA, "interval") == pytest.approx(0.811, abs=5e-4)


def alpha_by_pairs(units, delta2) -> float:
    """Krippendorff's alpha from its definition, pair by pair (no coincidence matrix): D_o averages δ² over the
    ordered pairs of values within each unit (weight 1/(m_u − 1)), D_e over all ordered pairs of pairable values."""
    units = [[float(v) for v in unit if not math.isnan(v)] for unit in np.asarray(units, dtype=float)]
    units = [u for u in units if len(u) >= 2]
    pooled = [v for u in units for v in u]
    n = len(pooled)
    d_o = sum(delta2(a, b) / (len(u) - 1) for u in units for i, a in enumerate(u) for j, b in enumerate(u) if i != j) / n
    d_e = sum(delta2(a, b) for i, a in enumerate(pooled) for j, b in enumerate(pooled) if i != j) / (n * (n - 1))
    return 1 - d_o / d_e


def test_krippendorff_ratio_level_with_zero_labels_follows_the_definition():
    units = [[0, 0, 1], [0, 2, 2], [3, 3, nan], [0, 1, 0], [4, 4, 3]]
    ratio = lambda a, b: 0.0 if a + b == 0 else ((a - b) / (a + b)) ** 2  # noqa: E731
    assert krippendorff_alpha(units, "ratio") == pytest.approx(alpha_by_pairs(units, ratio))
    assert krippendorff_alpha(units, "interval") == pytest.approx(alpha_by_pairs(units, lambda a, b: (a - b) ** 2))


def test_krippendorff_ordinal_does_not_depend_on_column_dtypes():
    """An int column beside a float column (a store's labels often come out so) gives the all-float value."""
    floats = pd.DataFrame(KRIPPENDORFF_2011)
    mixed = floats.astype(object)
    mixed[0] = [None if math.isnan(v) else int(v) for v in floats[0]]
    for level in ("ordinal", "interval", "ratio", "nominal"):
        assert krippendorff_alpha(mixed, level) == pytest.approx(krippendorff_alpha(floats, level)), level
    assert krippendorff_alpha(mixed, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_krippendorff_edge_cases():
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3]]) == 1.0
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1]]))  # one value only: no expected disagreement
    letters = pd.DataFrame({"a": ["x", "y", "x", None], "b": ["x", "y", "y", "y"]})
    assert krippendorff_alpha(letters) == krippendorff_alpha([[0, 0], [1, 1], [0, 1], [nan, 1]])
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([[1, 2], [2, 1]], "cosine")


def test_fleiss_wikipedia_example():
    assert fleiss_kappa(FLEISS_WIKIPEDIA) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == 1.0


def test_fleiss_from_a_label_matrix_by_hand():
    labels = pd.DataFrame({"r1": list("AABBAB"), "r2": list("AABABB"), "r3": list("ABBBAB")})
    counts = category_counts(labels)
    assert counts.to_numpy().tolist() == [[3, 0], [2, 1], [0, 3], [1, 2], [2, 1], [0, 3]]
    p_i = [1, 1 / 3, 1, 1 / 3, 1 / 3, 1]  # (sum_c n_ic^2 - 3) / (3 * 2) per unit
    p_e = (8 / 18) ** 2 + (10 / 18) ** 2  # 8 As and 10 Bs among 18 labels
    assert fleiss_kappa(counts) == pytest.approx((np.mean(p_i) - p_e) / (1 - p_e))


@pytest.mark.parametrize("seed", range(5))
def test_cohen_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 80)
    b = np.where(rng.random(80) < 0.5, a, rng.integers(0, 4, 80))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    labels_a, labels_b = np.array(list("ABtx"))[a], np.array(list("ABtx"))[b]
    assert cohen_kappa(labels_a, labels_b) == pytest.approx(cohen_kappa_score(labels_a, labels_b), abs=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns when only one label occurs
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from("ABCD")), min_size=2, max_size=40))
def test_cohen_matches_sklearn_property(pairs):
    a, b = zip(*pairs)
    ours, theirs = cohen_kappa(a, b), cohen_kappa_score(list(a), list(b))
    assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-9)


def test_a_numpy_nan_is_a_missing_label_not_a_category():
    a, b = np.array([1, 2, np.nan, 1], dtype=np.float32), [1, 2, 2, 1]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa([1, 2, 1], [1, 2, 1])) == pytest.approx(1.0)


def test_cohen_drops_missing_and_textbook_value():
    # 50 items: both yes 20, both no 15, yes/no 5, no/yes 10: p_o = .7, p_e = .5, kappa = .4 (Wikipedia example)
    a = ["yes"] * 20 + ["no"] * 15 + ["yes"] * 5 + ["no"] * 10
    b = ["yes"] * 20 + ["no"] * 15 + ["no"] * 5 + ["yes"] * 10
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a + [None, "yes"], b + ["no", nan]) == pytest.approx(0.4)
    assert math.isnan(cohen_kappa([None], ["x"]))


def test_majority_and_gold_agreement_by_hand():
    labels = pd.DataFrame({"a": ["A", "A", "B", "A"], "b": ["A", "B", "B", "A"], "c": ["A", "A", "B", "B"],
                           "d": ["B", "B", "A", None]}, index=[1, 2, 3, 4])
    major = majority_agreement(labels)
    # a: item1 others A,A,B -> A hit; item2 B,A,B -> B miss; item3 B,B,A -> B hit; item4 A,B -> tie, skipped
    assert major["a"] == pytest.approx(2 / 3)
    # d: item1 others A,A,A -> miss; item2 A,B,A -> A miss; item3 B,B,B -> miss; item4 unlabelled
    assert major["d"] == 0.0
    # b: item1 A,A,B -> A hit; item2 A,A,B -> A miss; item3 B,B,A -> B hit; item4 A,B -> tie, skipped
    assert major["b"] == pytest.approx(2 / 3)
    gold = gold_agreement(labels, {1: "A", 2: "A", 3: "B", 4: "A"})
    assert gold.to_dict() == {"a": 1.0, "b": 0.75, "c": 0.75, "d": 0.0}
    kappas = pairwise_kappas(labels)
    assert kappas.loc["a", "b"] == kappas.loc["b", "a"] == pytest.approx(cohen_kappa(labels["a"], labels["b"]))
    assert math.isnan(kappas.loc["a", "a"])


def pairwise_panel(answers: dict[str, str]):
    """A store where each annotator (key) judged items 1..n with the letters of the value."""
    store = FeedbackStore(":memory:")
    n = len(next(iter(answers.values())))
    ids = store.add_responses([dict(prompt=f"p{i}", response=f"r{i}{x}", model="m", iteration=0, sampling={})
                               for i in range(n) for x in "ab"])
    items = [store.add_item(ids[2 * i:2 * i + 2]) for i in range(n)]
    code = {"A": "A", "B": "B", "t": "tie", "x": "both_bad"}
    for annotator, letters in answers.items():
        for item, letter in zip(items, letters):
            store.record_pairwise(item, annotator, code[letter])
    return store


def test_label_matrix_and_report_from_a_store():
    store = pairwise_panel({"ann": "AABBtAB", "bob": "AABBtAA", "cat": "AABBxAB", "dan": "BBAAABA"})
    labels = label_matrix(store)
    assert labels.shape == (7, 4) and labels.loc[5, "ann"] == "tie" and labels.loc[5, "cat"] == "both_bad"
    report = annotator_report(store.judgments_df(), gold={i: "A" for i in range(1, 8)})
    assert report.index[report["suspect"]].tolist() == ["dan"]
    assert report.loc["ann", "n_judgments"] == 7 and report.loc["ann", "tie_rate"] == pytest.approx(1 / 7)
    assert report.loc["dan", "gold_agreement"] == pytest.approx(4 / 7)
    assert report.loc["ann", "mean_kappa"] > report.loc["dan", "mean_kappa"]
    panel = panel_agreement(store)
    assert panel["units"] == 7 and panel["annotators"] == 4
    assert panel["fleiss_kappa"] == pytest.approx(fleiss_kappa(category_counts(labels)))
    assert panel["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(labels))


def test_label_matrix_other_kinds():
    store = FeedbackStore(":memory:")
    ids = store.add_responses([dict(prompt="p", response=t, model="m", iteration=0, sampling={}) for t in "xyz"])
    rating, ranking = store.add_item(ids, kind="rating"), store.add_item(ids, kind="ranking")
    for ann, scores in (("ann", [7, 1, 4]), ("bob", [6, 1, 4])):
        store.record_rating(rating, ann, scores)
        store.record_ranking(ranking, ann, [ids[0], ids[2], ids[1]])
        store.record_thumbs(ids[0], ann, True)
    ratings = label_matrix(store, "rating")
    assert ratings.shape == (3, 2) and ratings["ann"].tolist() == [7, 1, 4]
    assert krippendorff_alpha(ratings, "interval") > 0.9
    assert label_matrix(store, "ranking").to_numpy().tolist() == [[ids[0], ids[0]]]
    assert label_matrix(store, "thumbs").to_numpy().tolist() == [["up", "up"]]
    assert label_matrix(store, "flags").empty
    assert panel_agreement(store)["units"] == 0
    with pytest.raises(ValueError, match="unknown kind"):
        label_matrix(store, "vibes")


def test_cohen_kappa_refuses_lists_of_different_lengths_instead_of_cutting_one():
    with pytest.raises(ValueError, match="one label per unit from each rater: got 3 and 2 labels"):
        cohen_kappa(["A", "B", "A"], ["A", "B"])  # zip cut it to 2 units and said 1.0
