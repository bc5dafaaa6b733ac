"""SamplingConfig and generate refuse a wrong value in one line that names the field (never a comparison error or a
failure deep in torch, never a string read as True)."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_lab.policy.generation import SamplingConfig, generate


@pytest.mark.parametrize("field,value,message", [
    ("max_new_tokens", "32", "max_new_tokens must be a whole number, got '32'"),
    ("max_new_tokens", 2.5, "max_new_tokens must be a whole number, got 2.5"),
    ("max_new_tokens", True, "max_new_tokens must be a whole number, got True"),
    ("top_k", 2.5, r"top_k \(0 = off\) must be a whole number, got 2.5"),
    ("top_k", -1, r"top_k \(0 = off\) must be at least 0, got -1"),
    ("max_prompt_tokens", 0, r"max_prompt_tokens \(None keeps all\) must be at least 1, got 0"),
    ("max_prompt_tokens", -3, r"max_prompt_tokens \(None keeps all\) must be at least 1, got -3"),
    ("max_prompt_tokens", 8.0, r"max_prompt_tokens \(None keeps all\) must be a whole number, got 8.0"),
    ("chat_template", "no", r"chat_template must be True, False or None .*, got 'no'"),
    ("temperature", "0.7", "temperature must be a number, got '0.7'"),
    ("system_prompt", 3, "system_prompt must be a string or None, got 3"),
])
def test_sampling_config_refuses_a_wrong_value_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{field: value})
    with pytest.raises(ValueError, match=message):  # read back from JSON: the same line
        SamplingConfig.from_dict({field: value})


def test_sampling_config_keeps_whole_numbers_as_ints():
    cfg = SamplingConfig(max_new_tokens=np.int64(5), top_k=np.int32(3), max_prompt_tokens=7, chat_template=False)
    assert (cfg.max_new_tokens, cfg.top_k, cfg.max_prompt_tokens) == (5, 3, 7)
    assert type(cfg.max_new_tokens) is int and type(cfg.top_k) is int


def test_generate_refuses_a_dict_for_the_config_and_no_replies_per_prompt(tiny):
    pol, tok = tiny
    with pytest.raises(TypeError, match=r"got a dict: pass SamplingConfig\(max_new_tokens=8\)"):
        generate(pol, tok, ["hi"], {"max_new_tokens": 8})
    with pytest.raises(TypeError, match="sampling must be a SamplingConfig .or None for the defaults., got int 8"):
        generate(pol, tok, ["hi"], 8)
    with pytest.raises(ValueError, match=r"n_per_prompt \(replies per prompt\) must be at least 1, got 0"):
        generate(pol, tok, ["hi"], SamplingConfig(max_new_tokens=2), n_per_prompt=0)
    with pytest.raises(ValueError, match=r"batch_size \(replies generated at once; None: all\) must be a whole number"):
        generate(pol, tok, ["hi"], SamplingConfig(max_new_tokens=2), batch_size=1.5)
    batch = generate(pol, tok, ["hi"], SamplingConfig(max_new_tokens=2, max_prompt_tokens=1), n_per_prompt=2, seed=0)
    assert len(batch) == 2 and batch.prompt_ids.shape[1] == 1
