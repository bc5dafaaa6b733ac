"""The class's model: pooled judgments on a class store (PostgreSQL) train one reward model and one policy; a
student whose taste differs from the class's is told so, with the items where they were out-voted."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_lab.feedback.classroom import assign_items, enroll
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.feedback.tastes import SimulatedLearner, short_replies
from rlhf_lab.loop.class_model import class_reward_model, you_vs_class
from rlhf_lab.loop.taste import EVERYONE, TasteConfig, run_taste
from rlhf_lab.policy.models import tiny_policy

WORDS = "the weather is nice today and I like walking along the river with my dog in the park".split()


def _class_store(url, n_items=24):
    """Items whose two replies differ in length; 4 students prefer short replies, one ('odd') long ones."""
    store = FeedbackStore(url)
    rng = np.random.default_rng(0)
    records = []
    for i in range(n_items):
        short, long = rng.integers(2, 5), rng.integers(9, 16)
        texts = [" ".join(WORDS[:short]) + ".", " ".join(WORDS[:long]) + "."]
        records += [dict(prompt=f"Tell me about day {i}.", response=t, model="m", iteration=0)
                    for t in (texts if i % 2 else texts[::-1])]
    ids = store.add_responses(records)
    store.add_items([ids[2 * i:2 * i + 2] for i in range(n_items)])
    students = ["s1", "s2", "s3", "s4", "odd"]
    enroll(store, students)
    assign_items(store, k=4, seed=0)
    for sid in students:
        taste = (lambda p, r: -short_replies(p, r)) if sid == "odd" else short_replies
        SimulatedLearner(taste, name=sid, rationality=20.0, seed=1).annotate(store, store.pending_items(sid))
    return store


def test_a_student_sees_their_taste_against_the_class(store_url):
    store = _class_store(store_url)
    odd, usual = you_vs_class(store, "odd"), you_vs_class(store, "s1")
    assert usual["agreement"] > 0.9 and usual["ci_low"] > 0.5 and len(usual["outvoted"]) == 0
    assert odd["agreement"] < 0.1 and odd["ci_high"] < 0.5  # the class model orders the odd one's pairs the other way
    assert len(odd["outvoted"]) == odd["items_shared"] > 0 and (odd["outvoted"]["against_you"] >= 2).all()
    row = odd["outvoted"].iloc[0]
    assert len(row["you_chose"].split()) > len(row["class_chose"].split())  # they chose the long reply, the class not
    assert f"on {round(odd['agreement'] * odd['pairs'])} of {odd['pairs']}" in odd["summary"]
    # the class model that judged "odd" never saw their judgments
    assert class_reward_model(store, exclude=["odd"]).val_pairs_["annotator"].ne("odd").all()
    with pytest.raises(ValueError, match="rate some pairs first"):
        you_vs_class(store, "nobody")
    store.close()


def test_the_class_model_trains_a_policy_from_everyones_judgments(postgres, tmp_path):
    url = postgres.create_database("class_policy")
    store = _class_store(url, n_items=12)
    config = TasteConfig.smoke(seed=0)
    policy, tokenizer = tiny_policy(seed=0)
    result = run_taste(config, store=url, annotator=EVERYONE, policy=policy, tokenizer=tokenizer,
                       out=tmp_path / "class", log=lambda *a: None)
    assert result.labels == len(store.preference_pairs()) == 12 * 4  # every student's judgments, pooled
    mine = run_taste(config, store=url, annotator=["s1", "s2"], policy=tiny_policy(seed=0)[0], tokenizer=tokenizer,
                     log=lambda *a: None)
    two = int(store.preference_pairs()["annotator"].isin(["s1", "s2"]).sum())
    assert mine.labels == two and 0 < two < result.labels  # only those two students' judgments
    assert "48 judgments" in (tmp_path / "class" / "summary.md").read_text()
    store.close()


def test_a_student_login_is_told_it_cannot_fit_the_class_model(postgres):
    """Lesson 7, section 6, with class_url set to a student's login: the server shows that login only its own
    judgments, so there is no class to fit; the error says so (it used to say the class had not rated)."""
    from rlhf_lab.feedback.classroom import secure_class

    store = _class_store(postgres.create_database("class_model_student"))
    logins = secure_class(store)
    with FeedbackStore(logins["s1"]) as mine:
        with pytest.raises(ValueError, match="only its own student.s judgments.*instructor.*class share.*class_pairs="):
            you_vs_class(mine, "s1")
    assert you_vs_class(store, "s1")["pairs"] > 0  # the instructor's URL sees the class
    store.close()


CROWD = [("ada-7731", "Ada Lovelace"), ("bob-4419", "Bob Marley"), ("cyd-9902", "Cyd Charisse")]
CHOICES = {"ada-7731": "AAB", "bob-4419": "BA=", "cyd-9902": "BBA"}  # per item: A, B or = (a tie)


def _judged_class(url):
    """3 items, each judged through each student's own login (row-level security on): ada, bob (one tie), cyd."""
    from rlhf_lab.feedback.classroom import secure_class

    store = FeedbackStore(url)
    ids = store.add_responses([dict(prompt=f"Tell me about day {i}.", response=" ".join(WORDS[:n]) + ".", model="m",
                                    iteration=0) for i in range(3) for n in (3, 12)])
    items = store.add_items([ids[2 * i:2 * i + 2] for i in range(3)])
    enroll(store, CROWD)
    assign_items(store, k=3, seed=0)
    logins = secure_class(store)
    for sid, _ in CROWD:
        with FeedbackStore(logins[sid]) as mine:
            for item, choice in zip(items, CHOICES[sid]):
                mine.record_pairwise(item, sid, "tie" if choice == "=" else choice)
    return store, logins, items


def test_a_student_login_fits_the_class_model_from_the_shared_pairs(postgres, tmp_path, monkeypatch):
    """Lesson 7, section 6, for a student: the instructor shares the class's pairs under pseudonyms, and the
    student's own login plus that file gives what the instructor's URL gives, without the student's judgments."""
    import json

    from rlhf_lab.feedback.classroom import share_class_pairs
    from rlhf_lab.reward.embedding import EmbeddingRewardModel

    store, logins, items = _judged_class(postgres.create_database("class_share"))
    path, again = tmp_path / "class_pairs.jsonl", tmp_path / "again.jsonl"
    assert share_class_pairs(store, path) == 9 and share_class_pairs(store, again) == 9  # the tie included
    data = path.read_bytes()
    for sid, name in CROWD:
        for secret in (sid, name, sid.split("-")[0], name.split()[0]):
            assert secret.encode() not in data and secret.lower().encode() not in data.lower()
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "chosen_id", "rejected_id", "item_id", "tie",
                            "judgment_id", "annotator"}
    who = store.judgments_df().set_index("judgment_id")["annotator"].to_dict()
    alias = {}
    for r in rows:
        assert r["annotator"].startswith("classmate-") and len(r["annotator"]) == len("classmate-") + 8
        assert alias.setdefault(who[r["judgment_id"]], r["annotator"]) == r["annotator"]  # one per classmate
    assert len(set(alias.values())) == 3 and sum(r["tie"] for r in rows) == 1
    assert not set(alias.values()) & {json.loads(line)["annotator"] for line in again.read_text().splitlines()}

    fitted = []
    original = EmbeddingRewardModel.fit

    def fit(self, data, *args, **kwargs):
        fitted.append(set(data["judgment_id"]))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(EmbeddingRewardModel, "fit", fit)
    ada_ids = {j for j, a in who.items() if a == "ada-7731"}
    with FeedbackStore(logins["ada-7731"]) as mine:
        result = you_vs_class(mine, "ada-7731", class_pairs=path)
        assert you_vs_class(mine, "ada-7731", class_pairs=path)["agreement"] == result["agreement"]
    assert fitted[0] == set(who) - ada_ids and len(fitted[0]) == 6  # bob's and cyd's, never ada's
    assert result["pairs"] == 3  # ada's own A/B pairs, from her login
    # by hand: item 0 bob B, cyd B against ada's A; item 1 bob A with, cyd B against (1-1, not out-voted);
    # item 2 bob's tie counts neither way, cyd A against ada's B
    assert result["items_shared"] == 3
    assert list(result["outvoted"]["item_id"]) == [items[0], items[2]]
    assert list(result["outvoted"]["against_you"]) == [2, 1] and list(result["outvoted"]["with_you"]) == [0, 0]
    teacher = you_vs_class(store, "ada-7731")  # the instructor's URL sees the class: the same figures
    assert teacher["agreement"] == result["agreement"] and teacher["outvoted"].equals(result["outvoted"])
    store.close()
