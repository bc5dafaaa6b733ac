"""rlhf_lab.policy.twin: sampling from a bfloat16 twin of a float32 policy (a CPU with native bf16), and when not."""

import pytest
import torch

from rlhf_lab.core import machine
from rlhf_lab.policy.generation import SamplingConfig, generate
from rlhf_lab.policy.models import tiny_policy
from rlhf_lab.policy.twin import decoding_model

PROMPTS = ["Hi!", "What is the capital of France, and why is it famous?"]


def test_auto_samples_in_bf16_only_where_the_cpu_has_it(cpu_bf16):
    model, _ = tiny_policy(seed=0)
    cpu_bf16(False)
    assert decoding_model(model, "auto") == (model, "float32")
    cpu_bf16(True)
    twin, precision = decoding_model(model, "auto")
    assert precision == "bfloat16" and twin is not model
    assert {p.dtype for p in twin.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the policy itself is untouched
    assert decoding_model(model, "model") == (model, "float32")


def test_the_twin_is_the_policy_rounded_and_follows_its_updates(cpu_bf16):
    model, _ = tiny_policy(seed=0)
    twin, _ = decoding_model(model, "bfloat16")
    for t, p in zip(twin.parameters(), model.parameters()):
        assert torch.equal(t, p.to(torch.bfloat16))
    assert all(b.dtype == torch.float32 for b in twin.buffers() if b.is_floating_point())  # rotary frequencies
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (twin.get_output_embeddings().weight is twin.get_input_embeddings().weight) == tied
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(0.5)  # a training step, say
    again, _ = decoding_model(model, "bfloat16")
    assert again is twin  # made once, refreshed
    assert torch.equal(twin.get_input_embeddings().weight, model.get_input_embeddings().weight.to(torch.bfloat16))


def test_twin_log_probabilities_are_the_policys_up_to_bf16_rounding(cpu_bf16):
    model, tok = tiny_policy(seed=0)
    twin, _ = decoding_model(model, "bfloat16")
    ids = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        exact = model(**ids).logits.float().log_softmax(-1)
        rounded = twin(**ids).logits.float().log_softmax(-1)
    mask = ids["attention_mask"].bool()
    diff = (exact - rounded).abs()[mask]
    assert diff.max() < 0.1  # bf16 keeps 8 significant bits: ~0.4 % per weight
    assert diff.mean() > 0  # and it is a different computation


def test_a_lora_model_or_a_bf16_model_samples_with_its_own_weights(cpu_bf16):
    from peft import LoraConfig, get_peft_model

    cpu_bf16(True)
    model, _ = tiny_policy(seed=0)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert decoding_model(lora, "auto") == (lora, "float32")
    half, _ = tiny_policy(seed=0)
    half.to(torch.bfloat16)
    assert decoding_model(half, "bfloat16") == (half, "bfloat16")


def test_generate_records_what_sampled_and_same_seed_same_replies(cpu_bf16):
    model, tok = tiny_policy(seed=0)
    sampling = SamplingConfig(max_new_tokens=6, decode_precision="bfloat16")
    a = generate(model, tok, PROMPTS, sampling, seed=3)
    b = generate(model, tok, PROMPTS, sampling, seed=3)
    assert a.responses == b.responses and a.sampling["decoded_in"] == "bfloat16"
    exact = generate(model, tok, PROMPTS, SamplingConfig(max_new_tokens=6, decode_precision="model"), seed=3)
    assert exact.sampling["decoded_in"] == "float32" and exact.sampling["decode_precision"] == "model"
    assert [r["sampling"]["decoded_in"] for r in a.to_records()] == ["bfloat16"] * 2


def test_bad_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="auto, model, bfloat16"):
        SamplingConfig(decode_precision="fp8")
    with pytest.raises(ValueError, match="auto, model, bfloat16"):
        decoding_model(tiny_policy(seed=0)[0], "half")


def test_the_environment_override_is_checked(cpu_bf16, monkeypatch):
    monkeypatch.setenv(machine.BF16_ENV, "yes")
    machine.native_bf16.cache_clear()
    with pytest.raises(ValueError, match="RLHF_LAB_CPU_BF16 must be 0 or 1"):
        machine.native_bf16()


def test_a_policy_switched_to_eager_attention_for_training_decodes_with_sdpa(cpu_bf16):
    model, _ = tiny_policy(seed=0)
    model.set_attn_implementation("eager")  # what a bf16 trainer on the CPU does to its policy
    twin, _ = decoding_model(model, "bfloat16")
    assert twin.config._attn_implementation == "sdpa" and model.config._attn_implementation == "eager"
