"""rlhf_lab.train.ppo on a tiny random policy: learning, the KL leash, padding, score placement, LoRA, guards, metrics."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import peaked_policy, prefix_batch

import rlhf_lab.train.on_policy as on_policy
from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.hf import disable_dropout
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.policy.models import tiny_config, tiny_policy
from rlhf_lab.reward.sources import Reward
from rlhf_lab.train.callbacks import Callback
from rlhf_lab.train.config import LoraSettings
from rlhf_lab.train.policy_value import (
    PolicyAndValue,
    response_hidden,
    response_logits,
    shared_prefix_length,
)
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer
from rlhf_lab.train.rloo import RLOOConfig

PROMPTS = ["hi there", "what is a cat?", "tell me a joke", "how are you?", "good morning", "what's up", "I like tea",
           "say something nice"]
def length_reward(texts):
    """Scripted reward with spread from the first batch on: reply length in characters / 40."""
    return [len(t) / 40 for t in texts]


NEWLINE = 198  # "\n" in SmolLM2's tokenizer: about 10 % of the peaked tiny policy's tokens
SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)
TRL_NAMES = ["objective/scores", "objective/kl", "objective/non_score_reward", "objective/rlhf_reward",
             "objective/entropy", "policy/entropy_avg", "policy/approxkl_avg", "policy/clipfrac_avg",
             "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg"]


pytestmark = pytest.mark.usefixtures("one_thread")


class NewlineReward(Reward):
    """Scripted reward: the fraction of the (8) reply tokens that are a newline."""

    def __call__(self, batch):
        return ((batch.response_ids == NEWLINE) & batch.response_mask.bool()).sum(1).float() / SAMPLING.max_new_tokens


def make_trainer(tokenizer, reward=None, callbacks=(), model=None, **overrides):
    settings = dict(learning_rate=1e-3, batch_size=8, sampling=SAMPLING, log_samples_every=0, missing_eos_penalty=None)
    config = PPOConfig(**{**settings, **overrides})
    return PPOTrainer(model if model is not None else peaked_policy(tokenizer), tokenizer, reward or NewlineReward(),
                      config, callbacks=list(callbacks))


def without_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(x == y or (math.isnan(x) and math.isnan(y))
                                        for x, y in zip(a.values(), b.values()))


# ---- config -------------------------------------------------------------------------------------------------------
def test_config_derives_and_checks_batch_sizes():
    config = PPOConfig(batch_size=16, mini_batch_size=8, micro_batch_size=2)
    assert (config.n_minibatches, config.grad_accumulation_steps) == (2, 4)
    assert PPOConfig(batch_size=8).micro_batch_size == 8
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        PPOConfig(batch_size=8, mini_batch_size=3)
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        PPOConfig(batch_size=8, mini_batch_size=4, micro_batch_size=3)
    with pytest.raises(ValueError, match="plain temperature sampling"):
        PPOConfig(sampling=SamplingConfig(top_k=50))
    with pytest.raises(ValueError, match="value_head"):
        PPOConfig(value_head="critic")


def test_the_adaptive_beta_horizon_defaults_to_ten_updates_of_replies():
    """None: 10 updates' replies over every process (K_β = 0.1 an update, Ziegler et al.'s gain); a set horizon stays."""
    assert PPOConfig(batch_size=8).adaptive_kl_horizon() == 80
    assert PPOConfig(batch_size=4).adaptive_kl_horizon(processes=2) == 80
    assert RLOOConfig(batch_size=4, rloo_k=3).adaptive_kl_horizon() == 120  # 12 replies an update
    assert PPOConfig(batch_size=8, kl_horizon=10_000).adaptive_kl_horizon(processes=4) == 10_000
    with pytest.raises(ValueError, match="kl_horizon must be positive"):
        PPOConfig(kl_horizon=0)


@pytest.mark.parametrize("field, value, words", [
    ("kl_coef", -0.5, "kl_coef .β. must be >= 0: a negative β would reward drifting"),
    ("clip_eps", 0.0, "clip_eps must be positive"), ("lam", 1.5, r"gamma and lam must lie in \[0, 1\]"),
    ("gamma", -1.0, r"gamma and lam must lie in \[0, 1\]"), ("vf_coef", -0.1, "vf_coef >= 0"),
    ("vf_clip", 0.0, "vf_clip must be positive"), ("kl_limit", -1.0, "kl_limit must be positive"),
    ("missing_eos_penalty", -1.0, "missing_eos_penalty must be >= 0"),
    ("log_samples_every", -1, "log_samples_every must be >= 0"), ("batch_size", 2.0, "batch_size must be a whole"),
    ("ppo_epochs", "4", "ppo_epochs must be a whole number, got '4'"), ("mini_batch_size", True, "mini_batch_size")])
def test_config_refuses_values_that_make_no_sense_in_one_line(field, value, words):
    with pytest.raises(ValueError, match=words):
        PPOConfig(**{field: value})


def test_config_round_trips_through_a_dict():
    config = PPOConfig(lora=LoraSettings(r=4), sampling=SamplingConfig(max_new_tokens=5), kl_target=3.0)
    again = PPOConfig.from_dict(dataclasses.asdict(config))
    assert again == config and isinstance(again.sampling, SamplingConfig) and again.lora.r == 4


# ---- the point of it all ------------------------------------------------------------------------------------------
def test_ppo_raises_a_scripted_reward_while_the_adaptive_kl_leash_holds(tokenizer):
    target = 4.0
    trainer = make_trainer(tokenizer, kl_coef=0.1, kl_target=target, kl_horizon=16)
    trainer.train(PROMPTS, n_updates=30)
    rows = trainer.history.rows
    first, last = [r["objective/scores"] for r in rows[:3]], [r["objective/scores"] for r in rows[-5:]]
    assert sum(first) / 3 < 0.25 and sum(last) / 5 > 0.6  # the newline fraction rises from about 0.1
    recent_kl = [r["objective/kl"] for r in rows[-10:]]
    assert 0.5 * target < sum(recent_kl) / 10 < 1.5 * target and max(recent_kl) < 2 * target
    assert rows[-1]["objective/beta"] != 0.1  # β moved (adaptive)


@pytest.mark.parametrize("batch_size", [4, 8])
def test_the_adaptive_beta_moves_two_percent_an_update_at_the_default_horizon(tokenizer, batch_size):
    """Far below its target the error is clipped to −0.2, so β·(1 − 0.2·0.1) an update whatever the batch (with a
    horizon of 10,000 replies it moved 0.016 % an update at 8 replies: fixed in any run the lab makes)."""
    trainer = make_trainer(tokenizer, kl_coef=0.1, kl_target=1000.0, batch_size=batch_size)
    trainer.train(PROMPTS, n_updates=3)
    betas = [r["objective/beta"] for r in trainer.history.rows]  # the β each update was paid with
    assert betas == pytest.approx([0.1, 0.1 * 0.98, 0.1 * 0.98 ** 2], rel=1e-6)


def test_same_seed_same_curve_and_another_seed_another(tokenizer):
    runs = [make_trainer(tokenizer, seed=s).train(PROMPTS, 3).history.rows for s in (7, 7, 8)]
    assert all(same(a, b) for a, b in zip(without_times(runs[0]), without_times(runs[1])))
    assert runs[0][-1]["objective/scores"] != runs[2][-1]["objective/scores"] or \
        runs[0][-1]["loss/policy_avg"] != runs[2][-1]["loss/policy_avg"]


def test_micro_batches_accumulate_to_the_same_update(tokenizer):
    whole = make_trainer(tokenizer, ppo_epochs=1)
    split = make_trainer(tokenizer, ppo_epochs=1, micro_batch_size=2)
    m_whole, m_split = whole.step(PROMPTS), split.step(PROMPTS)
    assert m_whole["loss/policy_avg"] == pytest.approx(m_split["loss/policy_avg"], abs=1e-6)
    for p, q in zip(whole.model.parameters(), split.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_the_rollout_forward_doubles_as_the_first_epochs_forward(tokenizer, monkeypatch):
    """With the whole batch in one pass, step 3's forward keeps its graph for epoch 1: one policy forward fewer per
    update, and the same updates as a separate no-grad rollout forward."""
    reused, separate = make_trainer(tokenizer, ppo_epochs=3), make_trainer(tokenizer, ppo_epochs=3)
    separate.reuse_rollout_forward = False
    calls = {id(reused): 0, id(separate): 0}
    for trainer in (reused, separate):
        trainer.model.register_forward_hook(lambda module, *_, key=id(trainer): calls.__setitem__(key, calls[key] + 1))
    for _ in range(2):
        a, b = reused.step(PROMPTS), separate.step(PROMPTS)
        for key in ("loss/policy_avg", "loss/value_avg", "objective/kl"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
        # approxkl, a mean of squared log-ratios, squares the rounding by which a no-grad forward differs from one
        # with grad (0.2 % after two updates on an Intel Xeon with AMX); old log-probs from another batch or a
        # stale policy would be off many times more
        assert a["policy/approxkl_avg"] == pytest.approx(b["policy/approxkl_avg"], rel=1e-2, abs=1e-5)
    assert calls == {id(reused): 2 * 3, id(separate): 2 * (1 + 3)}
    # Adam turns a rounding difference in a near-zero gradient into a step of up to its learning rate (1e-3): on an
    # Intel Xeon with AMX, 945 of the 3.3 M weights differed, by 2e-4 at most; a wrong update moves them all
    pairs = [(p.detach(), q.detach()) for p, q in zip(reused.model.parameters(), separate.model.parameters())]
    apart = sum(int((~torch.isclose(p, q, atol=1e-5, rtol=1e-4)).sum()) for p, q in pairs)
    assert apart < 1e-3 * sum(p.numel() for p, _ in pairs) and max(float((p - q).abs().max()) for p, q in pairs) < 5e-4


# ---- checklist details --------------------------------------------------------------------------------------------
def gpt2_style_policy(tokenizer):
    """A tiny GPT-2 (learned absolute positions: wrong position ids change its output, unlike RoPE's shift
    invariance in Llama, where only the gaps between positions count)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_left_padded_rows_get_the_same_logprobs_as_alone(tokenizer, architecture):
    model = peaked_policy(tokenizer) if architecture == "llama" else gpt2_style_policy(tokenizer)
    short, long = [5, 6, 7], [8, 9, 10, 11, 12, 13]
    response = [[20, 21, 22, 23], [24, 25, 26, 27]]
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * 3 + short + response[0], long + response[1]])  # (2, 6 + 4), left padded
    mask = (ids != pad).long()
    with torch.no_grad():
        batch_logits = response_logits(model, ids, mask, n_prompt=6)  # (2, 4, V)
        alone_logits = response_logits(model, torch.tensor([short + response[0]]), torch.ones(1, 7).long(), 3)
        counting_padding = torch.arange(10).expand(2, -1)  # the positions a naive implementation would use
        naive = model(input_ids=ids, attention_mask=mask, position_ids=counting_padding).logits[0, 5:9]
    torch.testing.assert_close(batch_logits[0], alone_logits[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch_logits[1], response_logits(model, ids[1:], mask[1:], 6)[0], atol=1e-4, rtol=1e-4)
    if architecture == "gpt2":
        assert (naive - alone_logits[0]).abs().max() > 1e-3


def response_logits_and_grads(model, ids, mask, n_prompt, share_prefix, pack=False, head_rows=None):
    """Response logits, every parameter's gradient of a log-prob loss, and the tokens the trunk embedded (and, into
    the list `head_rows`, how many positions the output layer read)."""
    embedded = []
    hooks = [model.get_input_embeddings().register_forward_hook(lambda m, args, out: embedded.append(args[0].numel())),
             model.get_output_embeddings().register_forward_hook(
                 lambda m, args, out: (head_rows if head_rows is not None else []).append(args[0].shape[:-1].numel()))]
    model.zero_grad(set_to_none=True)
    logits = response_logits(model, ids, mask, n_prompt, share_prefix=share_prefix, pack=pack)  # (B, R, V)
    (logits.log_softmax(-1)[..., 0] * mask[:, n_prompt:]).sum().backward()
    for hook in hooks:
        hook.remove()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(embedded)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_a_prompt_prefix_all_rows_share_runs_once_with_the_same_logits_and_gradients(tokenizer, architecture):
    model = peaked_policy(tokenizer) if architecture == "llama" else gpt2_style_policy(tokenizer)
    ids, mask, n_prompt = prefix_batch(tokenizer)
    assert shared_prefix_length(ids, mask, n_prompt) == 6
    plain_logits, plain_grads, plain_tokens = response_logits_and_grads(model, ids, mask, n_prompt, False)
    logits, grads, tokens = response_logits_and_grads(model, ids, mask, n_prompt, True)
    assert plain_tokens == 3 * 13
    assert tokens == 6 + 3 * (13 - 6)  # the prefix once, then each row from column 6 (the unpadded row's 7th token)
    torch.testing.assert_close(logits, plain_logits, atol=1e-4, rtol=1e-4)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert plain_grads["model.layers.0.mlp.up_proj.weight" if architecture == "llama" else
                       "transformer.h.0.mlp.c_fc.weight"].abs().sum() > 0


@pytest.mark.parametrize("architecture,attention", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa"),
                                                    ("gpt2", "eager")])
def test_packed_rows_skip_the_padding_with_the_same_logits_and_gradients(tokenizer, architecture, attention):
    model = peaked_policy(tokenizer) if architecture == "llama" else gpt2_style_policy(tokenizer)
    model.config._attn_implementation = attention
    ids, mask, n_prompt = prefix_batch(tokenizer)  # replies of 3, 2 and 3 tokens: row 2's last column is padding
    plain_rows, rows = [], []
    plain_logits, plain_grads, _ = response_logits_and_grads(model, ids, mask, n_prompt, False, head_rows=plain_rows)
    logits, grads, tokens = response_logits_and_grads(model, ids, mask, n_prompt, True, pack=True, head_rows=rows)
    # the prefix once, then each row's own prompt tokens and all but its last reply token: 6 + (1+2, 4+1, 2+2)
    assert tokens == 6 + 3 + 5 + 4
    assert plain_rows == [3 * 3] and rows == [3 + 2 + 3]  # the output layer reads the real reply positions only
    real = mask[:, n_prompt:].bool()  # (B, R)
    torch.testing.assert_close(logits[real], plain_logits[real], atol=1e-4, rtol=1e-4)
    assert torch.equal(logits[~real], torch.zeros_like(logits[~real]))  # after a reply's end: zeros, never read
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():  # a row whose tokens could see another row's would differ from the row read alone
        alone = response_logits(model, ids[2:], mask[2:], n_prompt, share_prefix=False)
    torch.testing.assert_close(logits[2], alone[0], atol=1e-4, rtol=1e-4)


def test_shared_prefix_length_leaves_each_row_a_prompt_token_and_needs_left_padding(tokenizer):
    pad = tokenizer.pad_token_id
    same = torch.tensor([[5, 6, 7, 8, 20], [5, 6, 7, 8, 21]])
    assert shared_prefix_length(same, torch.ones_like(same), 4) == 3  # identical prompts: all but the last token
    assert shared_prefix_length(same[:1], torch.ones_like(same[:1]), 4) == 0  # one row: nothing to share
    differ = torch.tensor([[5, 6, 7, 8, 20], [9, 6, 7, 8, 21]])
    assert shared_prefix_length(differ, torch.ones_like(differ), 4) == 0
    right_padded = torch.tensor([[5, 6, 7, pad, 20], [5, 6, 7, 8, 21]])
    assert shared_prefix_length(right_padded, (right_padded != pad).long(), 4) == 0


def test_gradient_checkpointing_and_cacheless_trunks_run_every_row_in_full(tokenizer):
    ids, mask, n_prompt = prefix_batch(tokenizer)
    model = peaked_policy(tokenizer)
    plain_logits, plain_grads, plain_tokens = response_logits_and_grads(model, ids, mask, n_prompt, False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    logits, grads, tokens = response_logits_and_grads(model, ids, mask, n_prompt, True)
    assert tokens == plain_tokens  # checkpointing drops caches, so nothing is shared
    torch.testing.assert_close(logits, plain_logits, atol=1e-4, rtol=1e-4)
    model.gradient_checkpointing_disable()
    model.eval()

    class Cacheless(torch.nn.Module):  # a trunk that takes cache arguments but ignores them
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, past_key_values=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    trunk = Cacheless(model.model)
    with torch.no_grad(), pytest.warns(UserWarning, match="cannot continue a forward pass"):
        hidden = response_hidden(trunk, ids, mask, n_prompt)
    torch.testing.assert_close(model.lm_head(hidden), plain_logits, atol=1e-4, rtol=1e-4)


def test_sharing_the_prompt_prefix_gives_the_same_ppo_updates(tokenizer, monkeypatch):
    # float32 compute: bf16 autocast (the default on a CPU with native bf16) rounds the two paths differently
    real_generate = on_policy.generate  # replies of several lengths, so that packing leaves padding out
    lengths, eos = [3, 8, 5, 8, 2, 8, 6, 1], [True, False, True, False, True, False, True, True]
    monkeypatch.setattr(on_policy, "generate", lambda *a, **k: force_eos(real_generate(*a, **k), tokenizer, lengths,
                                                                          eos))
    packed = make_trainer(tokenizer, mixed_precision="no")  # the default: the shared prefix once, rows packed
    shared = make_trainer(tokenizer, pack_replies=False, mixed_precision="no")
    plain = make_trainer(tokenizer, share_prompt_prefix=False, mixed_precision="no")
    keys = ("loss/policy_avg", "loss/value_avg", "policy/approxkl_avg", "policy/clipfrac_avg", "objective/kl",
            "objective/scores", "objective/entropy", "policy/entropy_avg", "val/explained_variance")
    for _ in range(2):
        a, b, c = packed.step(PROMPTS), shared.step(PROMPTS), plain.step(PROMPTS)
        assert c["val/response_length"] == 41 / 8
        for key in keys:
            assert a[key] == pytest.approx(c[key], abs=1e-5, nan_ok=True), key
            assert b[key] == pytest.approx(c[key], abs=1e-5, nan_ok=True), key
    for p, q, r in zip(packed.model.parameters(), shared.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(p, r, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(q, r, atol=1e-5, rtol=1e-4)


def force_eos(batch, tokenizer, lengths, eos):
    """Rewrite a GenerationBatch so row i has lengths[i] tokens, ending in EOS where eos[i] (else full length)."""
    ids, mask = batch.response_ids.clone(), batch.response_mask.clone()
    for i, (length, stop) in enumerate(zip(lengths, eos)):
        if stop:
            ids[i, length - 1], ids[i, length:], mask[i, length:] = tokenizer.eos_token_id, tokenizer.pad_token_id, 0
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return dataclasses.replace(batch, response_ids=ids, response_mask=mask, eos=torch.tensor(eos), responses=texts)


def test_score_lands_on_the_last_real_token_and_missing_eos_is_penalised(tokenizer, monkeypatch):
    lengths, eos = [2, 8, 5, 8, 1, 8, 7, 8], [True, False, True, False, True, False, True, False]
    real_generate = on_policy.generate
    monkeypatch.setattr(on_policy, "generate", lambda *a, **k: force_eos(real_generate(*a, **k), tokenizer, lengths, eos))
    raw = [float(i + 1) for i in range(8)]
    trainer = make_trainer(tokenizer, reward=lambda texts: raw, missing_eos_penalty=1.5)
    metrics = trainer.step(PROMPTS)
    r = trainer.rollout_
    expected = torch.tensor([s if e else s - 1.5 for s, e in zip(raw, eos)])
    assert torch.equal(r["scores"], expected)
    assert r["mask"].sum(1).tolist() == lengths
    assert torch.equal(r["logp"], r["ref_logp"])  # first update: policy = reference, so the KL part is exactly 0
    placed = torch.zeros(8, 8)
    placed[torch.arange(8), torch.tensor(lengths) - 1] = expected
    assert torch.equal(r["rewards"], placed)
    assert metrics["val/eos_rate"] == 0.5 and metrics["val/response_length"] == sum(lengths) / 8
    assert metrics["objective/scores"] == pytest.approx(expected.mean().item())


def test_value_head_starts_at_zero(tokenizer):
    model = PolicyAndValue(peaked_policy(tokenizer))
    ids = torch.randint(0, 1000, (2, 9))
    logits, values = model(ids, torch.ones_like(ids), n_prompt=5)
    assert logits.shape[:2] == values.shape == (2, 4) and torch.equal(values, torch.zeros(2, 4))


def test_separate_critic_trains_beside_the_policy(tokenizer):
    trainer = make_trainer(tokenizer, reward=length_reward, value_head="separate")
    model = trainer.model
    assert model.critic is not None and model.critic is not model.policy.model
    before = model.critic.layers[0].mlp.up_proj.weight.clone()
    trainer.step(PROMPTS)
    assert not torch.equal(before, model.critic.layers[0].mlp.up_proj.weight)


def test_separate_critic_can_start_from_a_reward_model(tokenizer):
    from types import SimpleNamespace

    head = torch.nn.Linear(64, 1)
    trunk = peaked_policy(tokenizer).model

    class CausalRM:  # duck-typed like reward_model.RewardModel with a causal-LM backbone
        net_ = SimpleNamespace(backbone=trunk, head=head)

        def score(self, prompts, responses):
            return [0.0] * len(responses)

        def score_tokens(self, input_ids, attention_mask):
            return torch.zeros(len(input_ids))

        def check_tokenizer(self, tok):
            pass

    trainer = make_trainer(tokenizer, reward=CausalRM(), value_head="separate")  # default: a copy of the policy trunk
    assert not torch.equal(trainer.model.value_head.weight, head.weight)
    trainer = PPOTrainer(peaked_policy(tokenizer), tokenizer, CausalRM(), PPOConfig(value_head="separate"),
                         critic="reward", callbacks=[])
    assert trainer.model.critic is not trunk and torch.equal(trainer.model.value_head.weight, head.weight)
    assert torch.equal(trainer.model.critic.layers[0].mlp.up_proj.weight, trunk.layers[0].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="shares the policy's tokenizer"):
        PPOTrainer(peaked_policy(tokenizer), tokenizer, length_reward, PPOConfig(value_head="separate"),
                   critic="reward", callbacks=[])


def test_dropout_is_off_even_in_train_mode(tokenizer):
    from transformers import AutoModelForCausalLM

    config = tiny_config(tokenizer)
    config.attention_dropout = 0.5
    model = AutoModelForCausalLM.from_config(config).train()
    ids = torch.randint(0, 1000, (2, 12))
    assert not torch.equal(model(ids).logits, model(ids).logits)
    disable_dropout(model)
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_lora_reference_is_the_base_model_with_adapters_disabled(tokenizer):
    base_params = sum(p.numel() for p in peaked_policy(tokenizer).parameters())
    trainer = make_trainer(tokenizer, reward=length_reward, learning_rate=1e-2, lora=LoraSettings(r=4, alpha=8))
    trainer.step(PROMPTS)
    assert trainer.ref_policy is None
    n_params = sum(p.numel() for p in trainer.model.parameters())
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert n_params == base_params + n_trainable and n_trainable < 0.1 * base_params  # one copy of the base weights
    ids = torch.randint(0, 1000, (2, 10))
    mask = torch.ones_like(ids)
    with torch.no_grad(), trainer._reference() as ref_lm:
        ref = response_logits(ref_lm, ids, mask, 6)
    with torch.no_grad():
        base = response_logits(peaked_policy(tokenizer), ids, mask, 6)
        policy = trainer.model(ids, mask, 6)[0]
    torch.testing.assert_close(ref, base, atol=1e-5, rtol=1e-5)
    assert (policy - base).abs().max() > 1e-3  # the adapters did learn something


def test_full_fine_tuning_reference_is_a_frozen_copy(tokenizer):
    trainer = make_trainer(tokenizer, reward=length_reward)
    ref_params, policy_params = list(trainer.ref_policy.parameters()), list(trainer.model.policy.parameters())
    assert not any(p.requires_grad for p in ref_params)
    assert {p.data_ptr() for p in ref_params}.isdisjoint(p.data_ptr() for p in policy_params)
    trainer.step(PROMPTS)
    assert not torch.equal(ref_params[0], policy_params[0])


# ---- guards -------------------------------------------------------------------------------------------------------
def test_nan_scores_stop_with_the_update_and_quantity(tokenizer):
    # before any step the learning rate is not to blame: the reward is
    with pytest.raises(TrainingDivergedError, match=r"PPO update 1: the reward gave 8 of 8 replies a NaN or infinite "
                                                    r"score before any training: check the reward"):
        make_trainer(tokenizer, reward=lambda texts: [float("nan")] * len(texts)).step(PROMPTS)
    calls = []

    def later_nan(texts):  # finite at update 1, NaN from update 2: training may have caused it
        calls.append(1)
        return [float("nan") if len(calls) > 1 else 0.0] * len(texts)

    trainer = make_trainer(tokenizer, reward=later_nan)
    trainer.step(PROMPTS)
    with pytest.raises(TrainingDivergedError, match=r"PPO update 2: the reward scores became non-finite .* Try a "
                                                    r"lower learning_rate"):
        trainer.step(PROMPTS)


def test_nan_loss_and_logits_stop_with_the_update_and_quantity(tokenizer):
    trainer = make_trainer(tokenizer)
    trainer.step(PROMPTS)
    with torch.no_grad():
        trainer.model.value_head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"PPO update 2: the loss became non-finite.*learning_rate"):
        trainer.step(PROMPTS)
    broken_ref = peaked_policy(tokenizer)
    with torch.no_grad():
        broken_ref.model.norm.weight.fill_(float("nan"))
    trainer = PPOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), PPOConfig(sampling=SAMPLING),
                         ref_policy=broken_ref, callbacks=[])
    with pytest.raises(TrainingDivergedError, match=r"PPO update 1: the reference logits became non-finite"):
        trainer.step(PROMPTS)


@pytest.mark.parametrize("limits", [dict(kl_limit=5.0), dict(kl_target=1.0)])  # a hard limit, or 5 × target
def test_exploding_kl_stops_with_advice(tokenizer, limits):
    trainer = PPOTrainer(peaked_policy(tokenizer), tokenizer, NewlineReward(), PPOConfig(sampling=SAMPLING, **limits),
                         ref_policy=peaked_policy(tokenizer, seed=1), callbacks=[])  # about 10 nats from the start
    message = r"update 1: the KL .*exploded.*limit 5\.00.*learning_rate.*raise β"
    with pytest.raises(TrainingDivergedError, match=message):
        trainer.step(PROMPTS)


# ---- metrics, callbacks, prompt batches ---------------------------------------------------------------------------
class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("begin")

    def on_step_end(self, trainer, metrics):
        self.events.append(("step", metrics["update"]))

    def on_samples(self, trainer, samples):
        self.events.append(("samples", len(samples), sorted(samples[0])))

    def on_train_end(self, trainer):
        self.events.append("end")


def test_metrics_have_trl_names_and_callbacks_fire(tokenizer, tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tokenizer, callbacks=[recorder], log_samples_every=2)
    trainer.history.path = tmp_path / "metrics.jsonl"
    trainer.train(PROMPTS, 2)
    m = trainer.history.rows[-1]
    for name in TRL_NAMES + ["objective/kl_k3", "objective/beta", "policy/ratio_mean", "policy/ratio_std",
                             "val/explained_variance", "val/eos_rate", "val/response_length", "time/generation_s",
                             "time/scoring_s", "time/optimisation_s", "time/tokens_per_s"]:
        assert name in m and (math.isfinite(m[name]) or name == "val/explained_variance"), name
    r = trainer.rollout_
    kl = ((r["logp"] - r["ref_logp"]) * r["mask"]).sum(1).mean().item()
    assert m["objective/kl"] == pytest.approx(kl, abs=1e-6)
    assert m["objective/rlhf_reward"] == pytest.approx(m["objective/scores"] + m["objective/non_score_reward"])
    assert m["time/tokens_per_s"] == pytest.approx(64 / m["time/update_s"], rel=1e-6)
    assert 0 <= m["policy/clipfrac_avg"] <= 1 and m["objective/beta"] == 0.05 and m["episode"] == 16
    assert recorder.events == ["begin", ("step", 1), ("step", 2),
                               ("samples", 8, ["eos", "prompt", "response", "score", "update"]), "end"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_prompt_batches_cover_every_prompt_once_per_epoch(tokenizer):
    trainer = make_trainer(tokenizer, batch_size=4, mini_batch_size=4)
    prompts = [f"prompt {i}" for i in range(10)]
    drawn = [p for u in range(1, 6) for p in trainer.prompt_batch(prompts, u)]
    assert sorted(drawn[:10]) == sorted(prompts) == sorted(drawn[10:])
    assert trainer.prompt_batch(prompts, 3) == drawn[8:12]  # stateless: the same batch for the same update
    assert trainer.prompt_batch(lambda u: [f"u{u}"] * 4, 2) == ["u2"] * 4


def test_bf16_mixed_precision_runs_and_a_later_float32_trainer_still_works(tokenizer):
    metrics = make_trainer(tokenizer, reward=length_reward, mixed_precision="bf16", ppo_epochs=1).step(PROMPTS)
    assert math.isfinite(metrics["loss/policy_avg"]) and abs(metrics["policy/ratio_mean"] - 1) < 0.1
    trainer = make_trainer(tokenizer, ppo_epochs=1, mixed_precision="no")
    assert trainer.accelerator.mixed_precision == "no" and math.isfinite(trainer.step(PROMPTS)["loss/value_avg"])


def test_bf16_on_the_cpu_switches_sdpa_attention_to_eager_and_float32_leaves_it():
    tok = tiny_policy(seed=0)[1]
    for precision, want in (("bf16", "eager"), ("no", "sdpa")):
        model = tiny_policy(seed=0)[0]
        assert model.config._attn_implementation == "sdpa"
        trainer = make_trainer(tok, reward=length_reward, model=model, mixed_precision=precision, ppo_epochs=1)
        assert trainer.model.policy.config._attn_implementation == want
        assert trainer.ref_policy.config._attn_implementation == want
        assert math.isfinite(trainer.step(PROMPTS)["loss/policy_avg"])


def test_a_bfloat16_policy_trains_in_float32_and_small_steps_are_not_rounded_away(tokenizer):
    """The GPU default loads policies in bfloat16; a 1e-5 Adam step on such weights would round to nothing."""
    model = tiny_policy(seed=0)[0].to(torch.bfloat16)
    trainer = make_trainer(tokenizer, reward=length_reward, model=model, ppo_epochs=1, learning_rate=1e-5)
    policy = trainer.model.policy
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    assert {p.dtype for p in trainer.ref_policy.parameters()} == {torch.bfloat16}
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.step(PROMPTS)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert changed == len(before)


ONE_PROCESS_RUN = """
import json, sys, tempfile
import pandas as pd
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.policy.models import tiny_policy
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer
sampling = SamplingConfig(max_new_tokens=4)
model, tokenizer = tiny_policy("smollm2-135m", seed=0)
ppo = PPOTrainer(model, tokenizer, lambda texts: [len(t) / 40 for t in texts],
                 PPOConfig(batch_size=2, sampling=sampling, log_samples_every=0), callbacks=[])
ppo.step(["hi there", "good morning"])
path = tempfile.mkdtemp() + "/ckpt"
ppo.save(path)
ppo.load_state(path)
assert ppo.policy is model
dpo = DPOTrainer(tiny_policy("smollm2-135m", seed=1)[0], tokenizer, DPOConfig(batch_size=2, sampling=sampling),
                 callbacks=[])
dpo.fit(pd.DataFrame({"prompt": ["hi", "yo"], "chosen": ["a b", "c"], "rejected": ["d", "e f"]}))
dpo.policy
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "deepspeed")))
"""


def test_a_run_in_one_process_leaves_deepspeed_unimported():
    """accelerate's `unwrap_model` imports DeepSpeed wherever it is installed (about a second, and a warning in the
    output of every run on a machine without a GPU): PPO's and DPO's trainers, their policies and PPO's checkpoint
    unwrap the model without it outside DeepSpeed (`deepspeed_engine.unwrap`)."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed here, so nothing could import it")
    out = subprocess.run([sys.executable, "-c", ONE_PROCESS_RUN], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert "Setting accelerator to CPU" not in out.stderr + out.stdout
