import pytest
import torch

from rlhf_lab.policy.generation import SamplingConfig, format_prompts, generate, truncate_at_eos
from rlhf_lab.policy.models import gpt2_tokenizer, tiny_policy

GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)
PROMPTS = ["Hi!", "What is the capital of France, and why is it famous?", "Tell me a joke."]


def test_truncate_at_eos_keeps_the_first_eos_and_pads_after_it():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 5, 5, 5, 5]])
    out, mask, eos = truncate_at_eos(ids, eos_ids=[2], pad_id=0)
    assert out.tolist() == [[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert eos.tolist() == [True, False, True]


def test_truncate_at_eos_handles_several_eos_ids():
    out, mask, eos = truncate_at_eos(torch.tensor([[4, 9, 4], [4, 4, 3]]), eos_ids=[3, 9], pad_id=0)
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]] and eos.tolist() == [True, True]


def test_a_reply_is_the_same_alone_and_in_a_left_padded_batch(tiny):
    model, tok = tiny
    batch = generate(model, tok, PROMPTS, GREEDY)
    assert (batch.prompt_mask == 0).any(), "prompts of different lengths must be left padded"
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, tok, [prompt], GREEDY)
        n = int(alone.response_mask.sum())
        assert batch.response_ids[i, :n].tolist() == alone.response_ids[0, :n].tolist()
        assert batch.responses[i] == alone.responses[0]


def test_chunked_generation_equals_one_batch_under_greedy(tiny):
    model, tok = tiny
    whole = generate(model, tok, PROMPTS, GREEDY)
    chunked = generate(model, tok, PROMPTS, GREEDY, batch_size=2)
    assert chunked.responses == whole.responses
    assert torch.equal(chunked.response_mask, whole.response_mask)


def test_chat_template_wraps_each_prompt_as_a_user_turn(tiny):
    model, tok = tiny
    texts, used = format_prompts(tok, ["Why is the sky blue?"], SamplingConfig())
    assert used
    assert "<|im_start|>user\nWhy is the sky blue?<|im_end|>" in texts[0]
    assert texts[0].endswith("<|im_start|>assistant\n")
    batch = generate(model, tok, ["Why is the sky blue?"], GREEDY)
    assert tok.decode(batch.prompt_ids[0][batch.prompt_mask[0].bool()]) == texts[0]
    assert batch.sampling["chat_template"] is True


def test_system_prompt_and_no_template_for_plain_tokenizers():
    texts, used = format_prompts(gpt2_tokenizer(), ["Hello"], SamplingConfig())
    assert (texts, used) == (["Hello"], False)
    with pytest.raises(ValueError, match="no chat template"):
        format_prompts(gpt2_tokenizer(), ["Hello"], SamplingConfig(chat_template=True))
    model, tok = tiny_policy()
    texts, _ = format_prompts(tok, ["Hello"], SamplingConfig(system_prompt="Be brief."))
    assert "<|im_start|>system\nBe brief.<|im_end|>" in texts[0]


def test_response_text_never_contains_the_prompt_or_padding(tiny):
    model, tok = tiny
    batch = generate(model, tok, PROMPTS, SamplingConfig(max_new_tokens=12), seed=3)
    for i, text in enumerate(batch.responses):
        ids = batch.response_ids[i][batch.response_mask[i].bool()].tolist()
        ids = [t for t in ids if t != tok.eos_token_id]
        assert text == tok.decode(ids, skip_special_tokens=True).strip()
        assert tok.pad_token not in text and "<|im_start|>" not in text
    assert (batch.response_ids[batch.response_mask == 0] == tok.pad_token_id).all()
    assert batch.response_lengths.max() <= 12


def test_same_seed_same_replies_and_the_global_rng_is_untouched(tiny):
    model, tok = tiny
    sampling = SamplingConfig(max_new_tokens=10, temperature=1.0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate(model, tok, PROMPTS, sampling, seed=7)
    after = torch.rand(1)
    b = generate(model, tok, PROMPTS, sampling, seed=7)
    c = generate(model, tok, PROMPTS, sampling, seed=8)
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids, c.response_ids)
    assert torch.equal(before, after)


def test_n_per_prompt_repeats_each_prompt_adjacently_and_records_everything(tiny):
    model, tok = tiny
    batch = generate(model, tok, ["A?", "B?"], SamplingConfig(max_new_tokens=4, temperature=1.0), seed=0,
                     n_per_prompt=2, iteration=3)
    assert batch.prompts == ["A?", "A?", "B?", "B?"]
    records = batch.to_records()
    assert len(records) == 4
    assert records[0]["model"] == "tiny" and records[0]["iteration"] == 3
    assert records[0]["sampling"]["temperature"] == 1.0 and records[0]["sampling"]["seed"] == 0
    assert records[0]["sampling"]["top_k"] == 0 and records[0]["sampling"]["top_p"] == 1.0
    assert set(records[0]) == {"prompt", "response", "model", "iteration", "sampling", "eos"}
    assert batch.query_response_ids.shape[1] == batch.prompt_ids.shape[1] + batch.response_ids.shape[1]


def test_max_prompt_tokens_keeps_the_end_of_long_prompts(tiny):
    model, tok = tiny
    batch = generate(model, tok, ["word " * 200], SamplingConfig(max_new_tokens=2, max_prompt_tokens=16))
    assert batch.prompt_ids.shape[1] == 16


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=-1), "temperature"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(top_k=-2), "top_k"), (dict(top_p=0), "top_p"), (dict(top_p=float("nan")), "top_p"),
])
def test_bad_sampling_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


def test_bad_calls_are_refused_with_a_fix(tiny):
    model, tok = tiny
    with pytest.raises(TypeError, match="list"):
        generate(model, tok, "just a string")
    with pytest.raises(ValueError, match="at least one"):
        generate(model, tok, [])
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(tok.name_or_path)
    raw.pad_token = raw.eos_token
    with pytest.raises(ValueError, match="pad token must differ from EOS"):
        generate(model, raw, ["Hi"])


@pytest.mark.integration
def test_smollm2_replies_in_english_without_repeating_the_prompt(smollm2):
    model, tok = smollm2
    prompts = ["What is a good way to start learning to cook?", "Why do cats purr?"]
    batch = generate(model, tok, prompts, SamplingConfig(max_new_tokens=32, temperature=0.7), seed=0)
    for prompt, reply in zip(prompts, batch.responses):
        words = reply.split()
        assert len(words) >= 5
        assert not reply.startswith(prompt) and prompt not in reply
        ascii_letters = sum(ch.isascii() and ch.isalpha() for ch in reply)
        assert ascii_letters / max(1, sum(ch.isalpha() for ch in reply)) > 0.95
        common = {"the", "a", "to", "and", "of", "is", "you", "it", "can", "in", "i", "that", "for", "your", "are"}
        assert common & {w.lower().strip(".,!?") for w in words}


@pytest.mark.integration
def test_smollm2_left_padding_under_greedy(smollm2):
    model, tok = smollm2
    prompts = ["Hi!", "Can you explain in simple words how a rainbow forms after the rain?"]
    greedy = SamplingConfig(max_new_tokens=12, temperature=0)
    batch = generate(model, tok, prompts, greedy)
    for i, p in enumerate(prompts):
        assert batch.responses[i] == generate(model, tok, [p], greedy).responses[0]
