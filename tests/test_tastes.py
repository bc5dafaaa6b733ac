"""rlhf_lab.feedback.tastes: the shipped tastes order obvious replies, a taste of your own loads as module:function,
and the simulated learner is Boltzmann-rational, seeded and resumable through the store."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.feedback.tastes import TASTES, SimulatedLearner, check_taste, load_taste

PROMPT = "What do you like to do on weekends?"


@pytest.mark.parametrize("name,better,worse", [
    ("short", "Hiking.", "I like to go hiking in the mountains with my friends and family every single weekend."),
    ("questions", "I hike. What about you?", "I hike."),
    ("enthusiastic", "I love hiking, it is wonderful!", "Hiking, I guess. It is boring."),
    ("formal", "I enjoy hiking in the mountains.", "Yeah, I'm gonna go hiking lol!"),
    ("gold", "I enjoy hiking on weekends, thank you for asking.", "no no no no no no no no"),
])
def test_each_shipped_taste_orders_an_obvious_pair(name, better, worse):
    taste = load_taste(name)
    assert taste(PROMPT, better) > taste(PROMPT, worse) + 0.4


def test_a_taste_of_your_own_loads_as_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_tastes.py").write_text("def likes_tea(prompt, reply):\n    return float('tea' in reply.lower())\n")
    monkeypatch.chdir(tmp_path)
    taste = load_taste("my_tastes:likes_tea")
    assert taste("hi", "Tea, please") == 1.0 and taste("hi", "Coffee") == 0.0
    with pytest.raises(ValueError, match="Unknown taste 'salty'"):
        load_taste("salty")
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_taste("my_tastes:nope")
    with pytest.raises(ValueError, match="Cannot import 'not_a_module'"):
        load_taste("not_a_module:f")
    (tmp_path / "my_tastes2.py").write_text("def one(prompt):\n    return 0.0\n")
    with pytest.raises(ValueError, match=r"'my_tastes2:one' must take \(prompt, reply\) .*one takes \(prompt\)"):
        load_taste("my_tastes2:one")  # refused before any reply is sampled, not a TypeError at the first judgment
    assert set(TASTES) == {"short", "questions", "enthusiastic", "formal", "gold"}


def test_reading_a_config_that_names_a_module_taste_imports_nothing(tmp_path, monkeypatch):
    """A shared run's config.json may name a module inside the run folder: reading the config (opening, exporting,
    reporting the run) must not import it; only a stand-in that judges loads it."""
    from rlhf_lab.loop.experiment import ExperimentConfig, FeedbackConfig

    (tmp_path / "payload_taste.py").write_text("import pathlib\npathlib.Path('ran.txt').write_text('imported')\n"
                                               "def taste(prompt, reply):\n    return 0.0\n")
    monkeypatch.chdir(tmp_path)
    saved = ExperimentConfig(feedback=FeedbackConfig(learner="me", stand_in="payload_taste:taste")).to_dict()
    config = ExperimentConfig.from_dict(saved)
    assert config.feedback.stand_in == "payload_taste:taste"
    assert not (tmp_path / "ran.txt").exists() and "payload_taste" not in sys.modules
    with pytest.raises(ValueError, match="Unknown taste 'payload_taste'"):
        FeedbackConfig(learner="me", stand_in="payload_taste")  # no ':function': refused in one line, not imported
    with pytest.raises(ValueError, match="Unknown taste 'os.system\\(1\\):x'"):
        check_taste("os.system(1):x")
    assert load_taste("payload_taste:taste")("hi", "there") == 0.0  # used: imported now, as asked
    assert (tmp_path / "ran.txt").read_text() == "imported"
    monkeypatch.delitem(sys.modules, "payload_taste")


@pytest.mark.parametrize("spec,why", [("shutil:rmtree", "standard library"), ("os:rename", "standard library"),
                                      ("rlhf_lab.core.files:write_atomic", "rlhf-lab itself"),
                                      ("numpy:save", "installed package")])
def test_a_taste_from_python_or_an_installed_package_is_refused(tmp_path, monkeypatch, spec, why):
    """A shared run's config names its stand-in's taste; a two-parameter function of Python or a package (shutil:rmtree
    deletes the folder its prompt names) would be called on the run's own prompts and replies by reading its gains
    (`RLHFRun.changes`): refused in one line, before anything is imported or called."""
    from rlhf_lab.feedback.crowd import stand_in_name
    from rlhf_lab.loop.experiment import ExperimentConfig, FeedbackConfig
    from rlhf_lab.loop.learner import stand_in_taste

    victim = tmp_path / "thesis"
    victim.mkdir()
    (victim / "chapter1.tex").write_text("years of work")
    monkeypatch.chdir(tmp_path)
    saved = ExperimentConfig(feedback=FeedbackConfig(learner="me", stand_in=spec)).to_dict()
    feedback = ExperimentConfig.from_dict(saved).feedback
    with FeedbackStore(tmp_path / "feedback.db") as store:
        store.register_annotator(stand_in_name("me"), "simulated")
        with pytest.raises(ValueError, match=f"The taste '{spec}' is refused: .* {why}.*, not a taste of your own"):
            stand_in_taste(store, feedback).utility([str(victim)], [str(tmp_path / "moved")])
    assert (victim / "chapter1.tex").read_text() == "years of work"


def test_the_learner_chooses_like_bradley_terry():
    learner = SimulatedLearner("short", rationality=1.0, seed=0)
    a, b = "One.", "One two three four five."  # utilities −0.2 and −1.0: gap 0.8
    gap = learner.utility([PROMPT], [a])[0] - learner.utility([PROMPT], [b])[0]
    share = np.mean([learner.choose(PROMPT, a, b, key) == "A" for key in range(4000)])
    assert share == pytest.approx(1 / (1 + np.exp(-gap)), abs=0.03)
    assert SimulatedLearner("short", rationality=0.0).choose(PROMPT, a, b, 1) in "AB"
    with pytest.raises(ValueError, match="rationality"):
        SimulatedLearner("short", rationality=float("nan"))


def test_the_learner_writes_through_the_store_and_resumes():
    store = FeedbackStore(":memory:")
    ids = store.add_responses([{"prompt": PROMPT, "response": text, "model": "m", "iteration": 0}
                               for text in ("Yes.", "Well, it depends on many things really.", "No.", "Hm, ok.")])
    items = [store.add_item(ids[:2]), store.add_item(ids[2:])]
    learner = SimulatedLearner("short", rationality=50.0, seed=3)
    assert len(learner.annotate(store, items)) == 2 and learner.annotate(store) == []  # judged once
    choices = store.judgments_df().set_index("item_id")["answer"].map(lambda a: a["choice"])
    assert choices[items[0]] == "A"  # "Yes." is shorter
    again = FeedbackStore(":memory:")
    ids = again.add_responses(store.judgments_df()["responses"].explode().map(
        lambda t: {"prompt": PROMPT, "response": t, "model": "m", "iteration": 0}).tolist())
    SimulatedLearner("short", rationality=50.0, seed=3).annotate(again, [again.add_item(ids[:2]), again.add_item(ids[2:])])
    assert again.judgments_df()["answer"].tolist() == store.judgments_df()["answer"].tolist()


def test_the_learners_coins_follow_the_keys_given_not_the_store_ids():
    """annotate(keys=...): the same pair judged in two stores where its id differs gets the same coin when given the
    same key; one key per item, or one clear error."""
    a, b = "One.", "One two three four five."
    answers = []
    for padding in (0, 5):  # the pair is item 1 in one store and item 6 in the other
        store = FeedbackStore(":memory:")
        for _ in range(padding):
            store.add_item(store.add_responses([{"prompt": PROMPT, "response": t, "model": "m", "iteration": 0}
                                                for t in ("x", "y")]))
        ids = store.add_responses([{"prompt": PROMPT, "response": t, "model": "m", "iteration": 0} for t in (a, b)])
        item = store.add_item(ids)
        flips = SimulatedLearner("short", rationality=0.0, seed=0)  # keys 1 and 6 flip apart
        answers.append([flips.choose(PROMPT, a, b, key) for key in (1, item)])
        flips.annotate(store, [item], keys=[1])
        answers[-1].append(store.judgments_df()["answer"].iloc[-1]["choice"])
    assert answers[0][2] == answers[1][2] == answers[0][0]  # keyed by 1 in both stores: the same coin
    assert answers[1][1] != answers[1][0]  # the store id's coin (key 6) would have differed
    with pytest.raises(ValueError, match="one key per item"):
        SimulatedLearner("short").annotate(FeedbackStore(":memory:"), [], keys=[1])
