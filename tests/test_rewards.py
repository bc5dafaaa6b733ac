"""rlhf_lab.reward.sources: every reward source becomes a batched scorer returning (B,) float32 scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_lab.feedback.gold import GoldUtility, gold_utility
from rlhf_lab.policy.generation import GenerationBatch
from rlhf_lab.reward.sources import CallableReward, GoldReward, ModelReward, Reward, as_reward

PROMPTS = ["What is a good hobby?", "Tell me a joke."]
RESPONSES = ["Gardening is a calm and happy hobby.", "no no no no no no"]


def fake_batch(eos=(True, False), sampling=None) -> GenerationBatch:
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    return GenerationBatch(prompts=PROMPTS, responses=RESPONSES, prompt_ids=torch.tensor([[0, 1], [2, 3]]),
                           prompt_mask=torch.ones(2, 2, dtype=torch.long), response_ids=ids,
                           response_mask=(ids != 0).long(), eos=torch.tensor(eos), model="test",
                           sampling=sampling or {})


def test_callable_on_texts_gets_the_replies():
    seen = []

    def count_o(texts):
        seen.append(texts)
        return [t.count("o") for t in texts]

    reward = as_reward(count_o)
    assert isinstance(reward, CallableReward) and not reward.takes_prompts
    scores = reward(fake_batch())
    assert seen == [RESPONSES]
    assert scores.dtype == torch.float32 and scores.tolist() == [1.0, 6.0]


def test_callable_on_prompts_and_responses():
    reward = as_reward(lambda prompts, responses: np.array([len(p) - len(r) for p, r in zip(prompts, responses)]))
    assert reward.takes_prompts
    expected = [len(p) - len(r) for p, r in zip(PROMPTS, RESPONSES)]
    assert reward(fake_batch()).tolist() == expected


def test_callable_returning_the_wrong_count_is_a_clear_error():
    with pytest.raises(ValueError, match="one number per reply"):
        as_reward(lambda texts: 1.0)(fake_batch())


@pytest.mark.parametrize("source", ["gold", GoldUtility(), gold_utility])
def test_gold_utility(source):
    reward = as_reward(source)
    assert isinstance(reward, GoldReward)
    expected = [gold_utility(p, r) for p, r in zip(PROMPTS, RESPONSES)]
    assert reward(fake_batch()).tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] > expected[1]  # the kind, on-topic reply beats the repetitive one


def test_gold_utility_with_custom_weights():
    gold = GoldUtility(weights={"length_words": 1.0})
    assert as_reward(gold).score(PROMPTS, RESPONSES).tolist() == [7.0, 6.0]


class TextOnlyRM:
    """A reward model with .score only (like an encoder model)."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses):
        self.calls.append((prompts, responses))
        return torch.tensor([float(len(r)) for r in responses], dtype=torch.float64)


class TokenRM(TextOnlyRM):
    """A causal-LM reward model that also reads token ids, and checks the tokenizer it is given."""

    def __init__(self, accepted):
        super().__init__()
        self.accepted, self.token_calls = accepted, []

    def check_tokenizer(self, tokenizer):
        if tokenizer is not self.accepted:
            raise ValueError("different tokenizer")

    def score_tokens(self, input_ids, attention_mask):
        self.token_calls.append((input_ids, attention_mask))
        return (input_ids * attention_mask).sum(1).float()


def test_reward_model_without_score_tokens_scores_text():
    rm = TextOnlyRM()
    reward = as_reward(rm, tokenizer=object())
    assert isinstance(reward, ModelReward) and not reward.reads_tokens
    assert reward(fake_batch()).tolist() == [float(len(r)) for r in RESPONSES]
    assert rm.calls == [(PROMPTS, RESPONSES)]


def test_reward_model_sharing_the_tokenizer_reads_tokens():
    tokenizer = object()
    rm = TokenRM(accepted=tokenizer)
    reward = as_reward(rm, tokenizer=tokenizer)
    assert reward.reads_tokens
    batch = fake_batch(eos=(True, True))
    scores = reward(batch)
    ids, mask = rm.token_calls[0]
    assert torch.equal(ids, batch.query_response_ids) and torch.equal(mask, batch.query_response_mask)
    assert scores.tolist() == [0 + 1 + 5 + 6 + 7, 2 + 3 + 8 + 9] and rm.calls == []


@pytest.mark.parametrize("batch", [fake_batch(eos=(True, False)), fake_batch((True, True), {"system_prompt": "Be"})])
def test_tokens_are_read_only_where_they_say_what_the_text_says(batch):
    """A reply cut before EOS (text scoring reads it followed by EOS, as in training) or a system prompt of the
    policy's own (the reward model never saw it): the text is scored, so PPO optimises what evaluations report."""
    tokenizer = object()
    rm = TokenRM(accepted=tokenizer)
    reward = as_reward(rm, tokenizer=tokenizer)
    assert reward(batch).tolist() == [float(len(r)) for r in RESPONSES] and rm.token_calls == []
    assert reward.reads_tokens  # the next batch whose replies all ended may still be read as tokens


def test_reward_model_with_another_tokenizer_scores_text():
    rm = TokenRM(accepted=object())
    reward = as_reward(rm, tokenizer=object())
    assert not reward.reads_tokens
    assert reward(fake_batch()).tolist() == [float(len(r)) for r in RESPONSES] and rm.token_calls == []


def test_score_tokens_raising_type_error_falls_back_to_text():
    tokenizer = object()
    rm = TokenRM(accepted=tokenizer)
    rm.score_tokens = lambda ids, mask: (_ for _ in ()).throw(TypeError("encoder"))
    reward = as_reward(rm, tokenizer=tokenizer)
    assert reward(fake_batch(eos=(True, True))).tolist() == [float(len(r)) for r in RESPONSES]
    assert not reward.reads_tokens


def test_a_reward_passes_through_and_junk_is_refused():
    reward = GoldReward()
    assert as_reward(reward) is reward and isinstance(reward, Reward)
    with pytest.raises(TypeError, match="Cannot use int"):
        as_reward(3)
    with pytest.raises(ValueError, match="only named reward is 'gold'"):
        as_reward("silver")
