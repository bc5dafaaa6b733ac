"""A single prompt string passed where a list of prompts belongs is refused in one line at every entry point (it was
read as its characters, one "prompt" each), and an empty prompt list is refused before training starts."""

from __future__ import annotations

import pytest

from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.loop.compare import BestOfN, Budget, compare_methods
from rlhf_lab.policy.generation import SamplingConfig, format_prompts
from rlhf_lab.teach import lessons
from rlhf_lab.train.best_of_n import best_of_n
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer
from rlhf_lab.train.rloo import RLOOConfig, RLOOTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

S = SamplingConfig(max_new_tokens=3)
ONE = r"got one string \('How do I make tea\?'\): wrap a single prompt in a list: \['How do I make tea\?'\]"


def refuses(what, call):
    with pytest.raises(TypeError, match=rf"{what} must be a list of prompts, {ONE}"):
        call()


def test_sampling_helpers_refuse_one_prompt_string(tiny):
    pol, tok = tiny
    refuses("prompts", lambda: format_prompts(tok, "How do I make tea?", S))
    refuses("prompts", lambda: best_of_n(pol, tok, "How do I make tea?", "gold", n=2, sampling=S))
    refuses("prompts", lambda: lessons.sample_pairs(FeedbackStore(":memory:"), pol, tok, "How do I make tea?", S))
    refuses("prompts", lambda: lessons.score_replies(pol, tok, "How do I make tea?", S))
    assert format_prompts(tok, ("a", "b"), SamplingConfig(chat_template=False)) == (["a", "b"], False)


def test_trainers_refuse_one_prompt_string_and_an_empty_list(tiny):
    pol, tok = tiny
    ppo = PPOTrainer(pol, tok, "gold", PPOConfig(batch_size=2, ppo_epochs=1, sampling=S, log_samples_every=0),
                     callbacks=[])
    refuses("prompt_source", lambda: ppo.train("How do I make tea?", 1))
    with pytest.raises(TypeError, match=r"step\(\) prompts must be a list of prompts, got one string \('Hi'\)"):
        ppo.step("Hi")  # two characters: as many as batch_size
    with pytest.raises(ValueError, match=r"prompt_source is an empty list: pass at least one prompt"):
        ppo.train([], 1)
    with pytest.raises(TypeError, match=r"prompt_source\(1\) must be strings; item 0 is int 3"):
        ppo.train(lambda update: [3, 4], 1)
    assert ppo.update_ == 0
    rloo = RLOOTrainer(pol, tok, "gold", RLOOConfig(batch_size=2, rloo_k=2, sampling=S, log_samples_every=0),
                       callbacks=[])
    refuses("prompt_source", lambda: rloo.train("How do I make tea?", 1))
    dpo = DPOTrainer(pol, tok, DPOConfig(batch_size=2, sampling=S), callbacks=[])
    refuses("prompts", lambda: dpo.train_iterative("How do I make tea?", "gold", rounds=1, pairs_per_round=2))
    assert dpo.round_ == 0


def test_compare_methods_refuses_one_prompt_string(tiny):
    pol, tok = tiny
    run = lambda prompts, eval_prompts: compare_methods(  # noqa: E731
        [BestOfN(n=(1,))], pol, tok, prompts, eval_prompts, reward="gold", budget=Budget(samples=2), sampling=S)
    refuses("prompts", lambda: run("How do I make tea?", ["a"]))
    refuses("eval_prompts", lambda: run(["a"], "How do I make tea?"))
