"""The Bradley–Terry reward model: the loss by hand, padding, ties and margins, splits, seeds, save/load, ensembles,
evaluation, and the "done when" check against the simulated crowd's gold utility."""

import json
import math
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import rlhf_lab.reward.model as reward_model_module
from rlhf_lab.feedback.crowd import SimulatedCrowd
from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.preferences import as_preference_pairs, split_by_prompt
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.policy.models import gpt2_tokenizer
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.reward.ensemble import RewardEnsemble, build_reward_model
from rlhf_lab.reward.evaluation import calibration_table, cross_validate, evaluate_rewards
from rlhf_lab.reward.model import RewardConfig, RewardModel
from rlhf_lab.reward.network import (
    RewardNet,
    TokenizerMismatchError,
    bradley_terry_loss,
    last_token_index,
    one_row,
    packed_rows,
    pair_rows,
    reward_text,
    shared_prefix_length,
)

STYLES = {  # reply templates whose gold features differ: sentiment, length, repetition, overlap, politeness
    "kind": "Thanks for asking! I really like {t}, and I am glad to talk about it with you.",
    "rude": "That is a stupid question. I hate {t} and I hate talking to you.",
    "repetitive": "{t} {t} {t} is is is {t} {t} {t} is is is {t} {t} {t}",
    "short": "Ok.",
    "long": "Well, {t} is something people discuss a lot. " * 6,
    "on_topic": "Yes, {t} is great. I would say {t} is my favourite thing.",
    "dodge": "Why do you ask? What about you?",
    "gloomy": "I feel terrible and nothing about {t} matters anyway.",
}


def crowd_store(path, n_prompts, pairs_per_prompt=4, rationality=3.0, n_annotators=1, seed=0) -> FeedbackStore:
    """Pairs of styled replies to chit-chat prompts, judged by a simulated crowd (Boltzmann-rational, gold utility)."""
    rng = random.Random(seed)
    store = FeedbackStore(path)
    for prompt in load_prompts("all", max_words=16, n=n_prompts, seed=seed):
        words = [w.strip("?.,!").lower() for w in prompt.split() if len(w.strip("?.,!")) > 3] or ["that"]
        for _ in range(pairs_per_prompt):
            styles = rng.sample(sorted(STYLES), 2)
            texts = [STYLES[s].format(t=rng.choice(words)).strip() for s in styles]
            ids = store.add_responses([dict(prompt=prompt, response=t, model="synthetic", iteration=0) for t in texts])
            store.add_item(ids)
    SimulatedCrowd(n=n_annotators, rationality=rationality, seed=seed).annotate(store)
    return store


def toy_pairs(n_prompts=6, per_prompt=2):
    rows = []
    for i in range(n_prompts):
        for j in range(per_prompt):
            rows.append(dict(prompt=f"Question {i}: how was your day?", chosen=f"Lovely, thank you! ({j})",
                             rejected=f"Awful. Go away {j}.", tie=(i == 0 and j == 0), margin=float(j + 1)))
    return pd.DataFrame(rows)


def built(config: RewardConfig) -> RewardModel:
    """A reward model with its backbone loaded and a new (untrained) head: the mechanics without a fit (scoring one
    never fitted nor loaded is refused)."""
    rm = RewardModel(config)
    rm._build()
    return rm


@pytest.fixture(scope="module")
def tiny_rm():
    return built(RewardConfig(backbone="tiny", max_length=48, seed=0))


@pytest.fixture(scope="module")
def minilm_rm():
    return built(RewardConfig(backbone="minilm", max_length=48, seed=0))


# ---- the loss ------------------------------------------------------------------------------------------------------

def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def softplus(x):
    return math.log1p(math.exp(x))


def test_loss_equals_hand_computation():
    r_c, r_r = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.5, -1.0])  # d = 1, -1, 0
    expected = (softplus(-1) + softplus(1) + math.log(2)) / 3  # -log σ(d) = softplus(-d)
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx((0.313262 + 1.313262 + 0.693147) / 3, abs=1e-6)


def test_tie_is_bce_with_one_half_and_ignores_margin():
    r_c, r_r = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])  # d = 1
    tie, margin = torch.tensor([False, True]), torch.tensor([0.5, 3.0])
    tie_loss = 0.5 * softplus(-1) + 0.5 * softplus(1)  # -½ log σ(1) - ½ log σ(-1) = 0.813262
    assert bradley_terry_loss(r_c, r_r, tie=tie).item() == pytest.approx((softplus(-1) + tie_loss) / 2, abs=1e-6)
    assert bradley_terry_loss(r_c, r_r, tie=tie, margin=margin).item() == pytest.approx(
        (softplus(-0.5) + tie_loss) / 2, abs=1e-6)
    d = torch.tensor([0.0], requires_grad=True)  # a tie's loss is smallest at equal rewards: log 2, zero gradient
    loss = bradley_terry_loss(d, torch.zeros(1), tie=torch.tensor([True]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2)) and d.grad.item() == pytest.approx(0.0)


def test_margin_is_subtracted_and_nan_margin_is_zero():
    r_c, r_r = torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0])
    loss = bradley_terry_loss(r_c, r_r, margin=torch.tensor([1.5, float("nan")]))
    assert loss.item() == pytest.approx((softplus(-0.5) + softplus(-2.0)) / 2, abs=1e-6)
    assert loss.item() > bradley_terry_loss(r_c, r_r).item()  # a margin demands a wider gap


# ---- data ----------------------------------------------------------------------------------------------------------

def test_split_by_prompt_keeps_prompts_apart_and_is_seeded():
    pairs = toy_pairs(n_prompts=10, per_prompt=3)
    train, val = split_by_prompt(pairs, 0.3, seed=1)
    assert set(train["prompt"]).isdisjoint(val["prompt"])
    assert len(train) + len(val) == len(pairs) and val["prompt"].nunique() == 3
    assert split_by_prompt(pairs, 0.3, seed=1)[1].equals(val)
    assert split_by_prompt(pairs, 0.0)[1].empty and len(split_by_prompt(pairs.head(1), 0.5)[0]) == 1


def test_pairs_from_jsonl_store_and_frame_agree(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    ids = store.add_responses([dict(prompt="Hi?", response=t, model="m", iteration=0) for t in ("Hello!", "No.")])
    store.record_pairwise(store.add_item(ids), "ann", "A", strength=2)
    store.record_pairwise(store.add_item(ids), "ann", "tie")
    store.export_jsonl(tmp_path / "p.jsonl", include_ties=True)
    from_store, from_file = as_preference_pairs(store), as_preference_pairs(tmp_path / "p.jsonl")
    cols = ["prompt", "chosen", "rejected", "tie", "margin"]
    assert from_store[cols].equals(from_file[cols])
    assert from_file["tie"].tolist() == [False, True] and from_file["margin"].tolist() == [2.0, 0.0]
    plain = as_preference_pairs([{"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}])
    assert plain["tie"].tolist() == [False] and math.isnan(plain["margin"][0])
    with pytest.raises(ValueError, match="missing"):
        as_preference_pairs([{"prompt": "Hi?", "chosen": "Hello!"}])


def test_config_checks():
    for bad in (dict(val_fraction=1.0), dict(learning_rate=0), dict(lr_schedule="cosine"),
                dict(max_length=2), dict(ensemble_size=0), dict(mixed_precision="fp16")):
        with pytest.raises(ValueError):
            RewardConfig(**bad)
    with pytest.raises(ValueError, match="RewardEnsemble"):
        RewardModel(RewardConfig(ensemble_size=3))
    assert isinstance(build_reward_model(RewardConfig(ensemble_size=2)), RewardEnsemble)
    assert RewardConfig().kind == "encoder" and RewardConfig(backbone="tiny").kind == "causal"


# ---- padding, truncation and the PPO interface --------------------------------------------------------------------

def test_last_token_index_from_mask():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [3, 2, 2, 3]


@pytest.mark.parametrize("which", ["tiny_rm", "minilm_rm"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_reward_is_the_same_alone_and_in_a_padded_batch(request, which, side):
    rm = request.getfixturevalue(which)
    rm._build()
    rm.tokenizer_.padding_side = side
    prompts = ["How are you?", "What do you like to do on weekends with your friends and family?", "Hi"]
    replies = ["Fine, thanks!", "I like hiking, cooking and reading long novels. " * 8, "Hello there."]  # 2nd > max_length
    batched = rm.score_raw(prompts, replies, batch_size=3)
    alone = torch.cat([rm.score_raw(p, r, batch_size=1) for p, r in zip(prompts, replies)])
    assert torch.allclose(batched, alone, atol=1e-5), (side, batched, alone)
    assert len(rm._encode(prompts[1:2], replies[1:2])[0]["input_ids"]) == 48  # truncated to max_length
    assert batched.std() > 0


def test_shared_prefix_length_leaves_each_sequence_a_token():
    assert shared_prefix_length([1, 2, 3, 4], [1, 2, 5]) == 2
    assert shared_prefix_length([1, 2, 3], [1, 2, 3]) == 2  # identical: the last token still runs per sequence
    assert shared_prefix_length([1, 2], [1, 2, 3, 4]) == 1
    assert shared_prefix_length([7, 1], [8, 1]) == 0


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_pairs_packed_with_their_prompt_once_give_the_rewards_and_gradients_of_whole_rows(tiny_rm, attention):
    tiny_rm._build()
    net = tiny_rm.net_
    net.backbone.set_attn_implementation(attention)
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(5, 200, (n,), generator=g).tolist()  # noqa: E731
    prefixes, chosen, rejected = [ids(7), ids(3), []], [ids(4), ids(1), ids(5)], [ids(6), ids(5), ids(2)]
    rows = [p + c for p, c in zip(prefixes, chosen)] + [p + r for p, r in zip(prefixes, rejected)]
    width = max(map(len, rows))  # the whole rows, left padded: [chosen_1..3, rejected_1..3]
    whole_ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    whole_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.7, -1.1])
    results = []
    for run in ("whole", "packed"):
        net.zero_grad()
        r = net(whole_ids, whole_mask) if run == "whole" else net.forward_tree(
            *pair_rows(prefixes, chosen, rejected, pad_id=0))
        (r * weights).sum().backward()
        results.append((r.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (whole, whole_grads), (packed, packed_grads) = results
    assert torch.allclose(whole, packed, atol=1e-5) and whole.std() > 0
    assert whole_grads.keys() == packed_grads.keys() and len(whole_grads) > 10
    for name, grad in whole_grads.items():  # the prompt's tokens get both replies' gradients, summed
        assert torch.allclose(grad, packed_grads[name], atol=1e-5, rtol=1e-4), name
    net.zero_grad()
    net.backbone.set_attn_implementation("sdpa")


def test_pair_rows_mask_and_positions_by_hand():
    ids, allowed, positions, ends = pair_rows([[5, 6]], [[7]], [[8, 9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 9]] and positions.tolist() == [[0, 1, 2, 2, 3]] and ends.tolist() == [[2, 4]]
    assert allowed[0, 0].int().tolist() == [[1, 0, 0, 0, 0],   # prefix: causal
                                            [1, 1, 0, 0, 0],
                                            [1, 1, 1, 0, 0],   # chosen: prefix and itself
                                            [1, 1, 0, 1, 0],   # rejected: prefix and itself, never the chosen reply
                                            [1, 1, 0, 1, 1]]
    ids, allowed, positions, ends = pair_rows([[5], []], [[7], [1]], [[8], [2]], pad_id=0)
    assert ids.tolist() == [[5, 7, 8], [1, 2, 0]] and ends.tolist() == [[1, 2], [0, 1]]
    assert allowed[1, 0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # no prefix; padding reads itself


def fit_both_ways(monkeypatch, backbone: str, method: str, flag: str, learning_rate: float, pairs):
    """Two fits on `pairs`, with `flag` on then off, counting the rows of each call of `RewardNet.<method>`."""
    torch.set_num_threads(1)
    calls, original = [], getattr(RewardNet, method)
    monkeypatch.setattr(RewardNet, method, lambda self, *rows: calls.append(len(rows[0])) or original(self, *rows))
    fits = [RewardModel(RewardConfig(backbone=backbone, max_length=40, batch_size=4, learning_rate=learning_rate,
                                     mixed_precision="no", val_fraction=0, **{flag: on})).fit(pairs, progress=False)
            for on in (True, False)]
    return calls, fits


def test_fit_packs_each_pair_with_its_prompt_once_and_trains_the_model_of_whole_rows(monkeypatch):
    pairs = toy_pairs()
    pairs.loc[3, "rejected"] = "No. " * 40  # longer than max_length: cut at the start, so it shares no prefix
    calls, fits = fit_both_ways(monkeypatch, "tiny", "forward_tree", "share_prompt", 1e-3, pairs)
    assert len(calls) == len(fits[0].history_) == 3 and sum(calls) == len(pairs)  # no call with share_prompt=False
    for packed, whole in zip(*(m.history_ for m in fits)):
        assert abs(packed["train/loss"] - whole["train/loss"]) < 1e-3  # Adam's first steps amplify rounding
    assert torch.allclose(*[m.score_raw(pairs["prompt"], pairs["rejected"]) for m in fits], atol=2e-3)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_encoder_sequences_packed_several_per_row_give_the_rewards_and_gradients_of_padded_rows(minilm_rm, attention):
    minilm_rm._build()
    net = minilm_rm.net_.eval()  # no dropout: both runs see the same network
    net.backbone.set_attn_implementation(attention)
    prompts = ["How was your day?", "Hi", "What do you think of the weather where you live these days?"] * 2
    replies = ["Lovely!", "A long and winding story about my weekend, the hike and the dinner after it.", "Ok.",
               "Why do you ask?", "Fine, thanks. And you?", "Rain, rain and more rain. I love it though."]
    seqs = minilm_rm._encode(prompts, replies)
    assert "token_type_ids" in seqs[0] and len({len(s["input_ids"]) for s in seqs}) > 3
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.7, -1.1])
    results = []
    for run in ("padded", "packed", "one row") if attention == "sdpa" else ("padded", "packed"):
        net.zero_grad()
        if run == "padded":
            r = net(**minilm_rm._collate(seqs))
        elif run == "packed":  # several sequences per row under a mask
            r = net.forward_packed(*packed_rows(seqs, pad_id=0))
        else:  # all in one row, attention sequence by sequence
            r = net.forward_segments(*one_row(seqs))
        (r * weights).sum().backward()
        results.append((r.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (padded, padded_grads), *others = results
    for packed, packed_grads in others:
        assert torch.allclose(padded, packed, atol=1e-5) and padded.std() > 0
        assert padded_grads.keys() == packed_grads.keys() and len(padded_grads) > 50
        for name, grad in padded_grads.items():  # token types and positions included: each sequence restarts at 0
            # float32 rounding: up to 3.4e-6 on gradients of size 1-2.6 on an Intel Xeon with AMX (1e-6 passed on
            # the AVX2 and AVX-512 kinds); a sequence that saw another's tokens or positions is off by 1e-2 or more
            assert torch.allclose(grad, packed_grads[name], atol=1e-5, rtol=1e-4), name
    net.zero_grad()
    net.backbone.set_attn_implementation("sdpa")


def test_packed_rows_first_fit_decreasing_by_hand():
    seqs = [{"input_ids": [5, 6], "token_type_ids": [0, 1]}, {"input_ids": [7, 8, 9, 10]},
            {"input_ids": [11]}, {"input_ids": [12, 13, 14]}]
    ids, types, allowed, positions, owner = packed_rows(seqs, pad_id=0)
    assert ids.tolist() == [[7, 8, 9, 10], [12, 13, 14, 11], [5, 6, 0, 0]]  # rows as wide as the longest sequence
    assert owner.tolist() == [[1, 1, 1, 1], [3, 3, 3, 2], [0, 0, -1, -1]]
    assert positions.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 0]]
    assert types.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert allowed[1, 0].int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert allowed[2, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # padding: itself


@pytest.mark.parametrize("one_row_by_segment", [True, False])
def test_fit_packs_encoder_rows_and_trains_the_model_of_padded_rows(monkeypatch, one_row_by_segment):
    pairs = toy_pairs()
    pairs.loc[3, "rejected"] = "No, and that is all I will say about it today. " * 3
    if not one_row_by_segment:  # several sequences per row under a mask (eager attention, or no segment attention)
        monkeypatch.setattr(reward_model_module, "can_attend_by_segment", lambda backbone: False)
    method = "forward_segments" if one_row_by_segment else "forward_packed"
    calls, fits = fit_both_ways(monkeypatch, "minilm", method, "pack_rows", 1e-4, pairs)
    assert len(calls) == len(fits[0].history_) == 3  # every step packed (none with pack_rows=False)
    assert calls == [1] * 3 if one_row_by_segment else sum(calls) < 2 * len(pairs)  # fewer rows than sequences
    for packed, padded in zip(*(m.history_ for m in fits)):
        assert abs(packed["train/loss"] - padded["train/loss"]) < 1e-4
    assert torch.allclose(*[m.score_raw(pairs["prompt"], pairs["rejected"]) for m in fits], atol=1e-3)


def test_dropout_is_off_unless_asked_and_bf16_training_leaves_sdpa_attention(monkeypatch):
    switches, original = [], reward_model_module.switch_attention
    monkeypatch.setattr(reward_model_module, "switch_attention", lambda model, old, new: switches.append((old, new))
                        or original(model, old, new))
    for dropout in (False, True):
        rm = RewardModel(RewardConfig(backbone="minilm", max_length=32, batch_size=6, dropout=dropout,
                                      mixed_precision="bf16", val_fraction=0)).fit(toy_pairs(), progress=False)
        assert {m.p for m in rm.net_.modules() if isinstance(m, torch.nn.Dropout)} == ({0.1} if dropout else {0.0})
        assert rm.net_.backbone.config._attn_implementation == "sdpa"  # scoring runs SDPA again
    assert switches == [("sdpa", "eager"), ("eager", "sdpa")] * 2  # eager kernels for bf16 training on the CPU


def test_score_tokens_matches_text_scoring_on_policy_tokens(tiny_rm):
    tok = tiny_rm.tokenizer_
    prompts, replies = ["How are you?", "Tell me about your favourite food please."], ["Fine!", "Pizza, with olives."]
    queries = [reward_text(tok, p, "")[: -len(tok.eos_token)] for p in prompts]  # what generation feeds the policy
    tok.padding_side = "left"
    q = tok(queries, return_tensors="pt", padding=True, add_special_tokens=False)
    tok.padding_side = "right"
    r = tok([x + tok.eos_token for x in replies], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = torch.cat([q.input_ids, r.input_ids], 1), torch.cat([q.attention_mask, r.attention_mask], 1)
    assert torch.allclose(tiny_rm.score_tokens(ids, mask), tiny_rm.score(prompts, replies), atol=1e-5)
    long = ["I like hiking, cooking and reading long novels. " * 8] * 2  # over max_length: the end is read
    r = tok([x + tok.eos_token for x in long], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = torch.cat([q.input_ids, r.input_ids], 1), torch.cat([q.attention_mask, r.attention_mask], 1)
    assert mask.sum(1).min() > tiny_rm.config.max_length
    assert torch.allclose(tiny_rm.score_tokens(ids, mask), tiny_rm.score(prompts, long), atol=1e-5)


def test_wrong_tokenizer_fails_clearly(tiny_rm, minilm_rm, tmp_path):
    tiny_rm.check_tokenizer(tiny_rm.tokenizer_)
    with pytest.raises(TokenizerMismatchError, match="different tokenizer"):
        tiny_rm.check_tokenizer(gpt2_tokenizer())
    path = tiny_rm.save(tmp_path / "rm")
    with pytest.raises(TokenizerMismatchError, match="score text"):
        RewardModel.load(path, tokenizer=gpt2_tokenizer())
    with pytest.raises(TypeError, match="causal"):
        minilm_rm.score_tokens(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


# ---- training, seeds, save/load, ensembles ---------------------------------------------------------------------------

def test_fit_history_schedule_and_normalisation():
    torch.set_num_threads(1)
    pairs = toy_pairs(n_prompts=10, per_prompt=3)
    rm = RewardModel(RewardConfig(backbone="tiny", batch_size=4, epochs=2, learning_rate=1e-3, val_fraction=0.2,
                                  use_margin=True, seed=3)).fit(pairs, progress=False)
    n_train = len(rm.history_) // 2
    assert n_train == math.ceil(24 / 4) and rm.val_pairs_["prompt"].nunique() == 2
    assert [h["step"] for h in rm.history_] == list(range(1, 2 * n_train + 1))
    lrs = [h["lr"] for h in rm.history_]
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3 / 2 / n_train + 1e-12
    assert [h["epoch"] for h in rm.history_ if "val/loss" in h] == [1.0, 2.0]
    assert all(0 <= h["train/accuracy"] <= 1 for h in rm.history_ if not math.isnan(h["train/accuracy"]))
    train_replies = pd.concat([pairs["chosen"], pairs["rejected"]])
    assert rm.history_[-1]["train/loss"] < rm.history_[0]["train/loss"]  # this toy task is learnable
    s = rm.score(pairs["prompt"].tolist() * 2, train_replies.tolist())  # normalised on the training replies
    assert abs(s.mean().item()) < 0.5
    rm.normalize(pairs["prompt"], pairs["chosen"])
    s = rm.score(pairs["prompt"], pairs["chosen"])
    assert s.mean().item() == pytest.approx(0, abs=1e-5) and s.std().item() == pytest.approx(1, abs=1e-4)


def test_same_seed_same_rewards_and_ties_dropped():
    torch.set_num_threads(1)
    pairs = toy_pairs()
    fits = [RewardModel(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, seed=s)).fit(pairs, progress=False)
            for s in (0, 0, 1)]
    scores = [m.score_raw(pairs["prompt"], pairs["chosen"]) for m in fits]
    assert torch.equal(scores[0], scores[1]) and not torch.allclose(scores[0], scores[2])
    dropped = RewardModel(RewardConfig(backbone="tiny", include_ties=False, val_fraction=0, seed=0)).fit(pairs, progress=False)
    assert len(dropped.history_) == 1 and dropped.evaluate(pairs).n_ties == 0  # 11 pairs, batch 16


def test_gradient_checkpointing_trains_the_same_model():
    torch.set_num_threads(1)
    pairs = toy_pairs()
    fits = [RewardModel(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, gradient_checkpointing=g,
                                     mixed_precision="no", share_prompt=False)).fit(pairs, progress=False)
            for g in (False, True)]
    assert fits[1].net_.backbone.gradient_checkpointing and not fits[0].net_.backbone.gradient_checkpointing
    assert torch.allclose(*[m.score_raw(pairs["prompt"], pairs["chosen"]) for m in fits], atol=1e-4)


def test_bf16_autocast_is_used_when_asked_and_trains_close_to_float32():
    pairs = toy_pairs()
    fits = {mp: RewardModel(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, mixed_precision=mp)).fit(
        pairs, progress=False) for mp in ("no", "bf16")}
    float32, bf16 = (fits[mp].history_[0]["train/loss"] for mp in ("no", "bf16"))
    assert float32 != bf16 and abs(float32 - bf16) < 0.02  # the same step, rounded differently
    assert {p.dtype for p in fits["bf16"].net_.parameters()} == {torch.float32}  # the weights stay float32
    scores = [fits[mp].score_raw(pairs["prompt"], pairs["chosen"]) for mp in ("no", "bf16")]
    assert scores[1].dtype == torch.float32 and torch.allclose(*scores, atol=0.05)


def test_save_load_round_trip_identical_rewards(tmp_path):
    pairs = toy_pairs()
    rm = RewardModel(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, seed=0)).fit(pairs, progress=False)
    loaded = RewardModel.load(rm.save(tmp_path / "rm"), tokenizer=rm.tokenizer_)
    assert torch.equal(loaded.score(pairs["prompt"], pairs["chosen"]), rm.score(pairs["prompt"], pairs["chosen"]))
    assert (loaded.norm_mean_, loaded.norm_std_) == (rm.norm_mean_, rm.norm_std_) and loaded.history_ == rm.history_
    assert loaded.config == rm.config
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.bin"))
    assert json.loads((tmp_path / "rm" / "reward_model.json").read_text())["config"]["backbone"] == "tiny"
    # saving is atomic: a save that fails half-way (disk full) leaves the earlier model whole and no debris
    rm.norm_mean_ += 1.0

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reward_model_module, "save_model", disk_full)
        with pytest.raises(OSError, match="No space"):
            rm.save(tmp_path / "rm")
    assert RewardModel.load(tmp_path / "rm").norm_mean_ == loaded.norm_mean_
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]
    # a disk without room for the weights is refused before any write, with what to do
    usage, weights = shutil.disk_usage(tmp_path), (tmp_path / "rm" / "model.safetensors").stat().st_size
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=weights // 2))
        with pytest.raises(OSError, match="Not enough disk space for the reward model .*rm: it needs about"):
            rm.save(tmp_path / "rm")
    assert RewardModel.load(tmp_path / "rm").norm_mean_ == loaded.norm_mean_


def test_flipped_bytes_in_a_saved_reward_model_are_refused(tmp_path):
    rm = RewardModel(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, seed=0)).fit(toy_pairs(),
                                                                                                    progress=False)
    path = rm.save(tmp_path / "rm")
    assert "model.safetensors" in json.loads((path / "reward_model.json").read_text())["sha256"]
    weights = bytearray((path / "model.safetensors").read_bytes())
    weights[-5] ^= 0x40  # a bit flipped in the last weights: safetensors itself would load it
    (path / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="model.safetensors does not match the checksum.*reward model is damaged"):
        RewardModel.load(path)


def test_minilm_save_load_round_trip(minilm_rm, tmp_path):
    minilm_rm.tokenizer_.padding_side = "right"
    minilm_rm.norm_mean_, minilm_rm.norm_std_ = 0.25, 2.0
    loaded = RewardModel.load(minilm_rm.save(tmp_path / "rm"))
    prompts, replies = ["Hi?", "How are you doing today?"], ["Hello!", "Great, thanks for asking."]
    assert torch.equal(loaded.score(prompts, replies), minilm_rm.score(prompts, replies))
    with pytest.raises(TokenizerMismatchError):
        loaded.check_tokenizer(gpt2_tokenizer())


def test_ensemble_mean_and_spread(tmp_path):
    torch.set_num_threads(1)
    pairs = toy_pairs()
    ens = RewardEnsemble(RewardConfig(backbone="tiny", batch_size=4, learning_rate=1e-3, ensemble_size=3, bootstrap=True,
                                      seed=0)).fit(pairs, progress=False)
    prompts, replies = pairs["prompt"], pairs["chosen"]
    members = torch.stack([m.score(prompts, replies) for m in ens.members_])  # (3, N)
    assert torch.allclose(ens.score(prompts, replies), members.mean(0), atol=1e-6)
    assert torch.allclose(ens.spread(prompts, replies), members.std(0, correction=0), atol=1e-6)
    assert (ens.spread(prompts, replies) > 0).all()
    assert {m.config.seed for m in ens.members_} == {0, 1, 2}
    assert all(m.val_pairs_.equals(ens.val_pairs_) for m in ens.members_)  # one split for all members
    loaded = RewardEnsemble.load(ens.save(tmp_path / "ens"))
    assert torch.equal(loaded.score(prompts, replies), ens.score(prompts, replies))
    assert ens.evaluate(pairs).n_pairs == len(pairs)


# ---- evaluation --------------------------------------------------------------------------------------------------------

def test_evaluate_rewards_by_hand():
    pairs = pd.DataFrame({"prompt": ["p"] * 4, "chosen": ["a", "b", "c", "d"], "rejected": ["w", "x", "y", "z"],
                          "tie": [False, False, False, True]})
    r_c, r_r = np.array([2.0, 0.0, 1.0, 5.0]), np.array([0.0, 1.0, 1.0, 0.0])  # d = 2, -1, 0 (+ a tie)
    gold = lambda prompts, replies: np.array([{"a": 1, "b": 1, "c": 0, "d": 0}.get(r, 0.5) for r in replies])
    report = evaluate_rewards(pairs, r_c, r_r, gold=gold, n_bins=4)
    assert report.n_ties == 1 and report.accuracy == pytest.approx(1 / 3)
    assert report.log_loss == pytest.approx((softplus(-2) + softplus(1) + math.log(2)) / 3)
    assert report.gold_accuracy == pytest.approx(2 / 3)  # a > w, b > x; c < y
    assert report.agreement_with_gold == pytest.approx(1 / 4)  # only a-w: the model ties c-y and flips b-x, d-z
    assert report.top["response"].iloc[0] == "d" and report.bottom["reward"].iloc[0] == 0.0
    assert set(report.to_dict()) >= {"eval/accuracy", "eval/log_loss", "eval/ece", "eval/gold_accuracy"}
    table = report.calibration  # each non-tie pair twice: σ(d) observed 1, and 1 − σ(d) observed 0
    assert table["count"].tolist() == [1, 1, 3, 1]
    assert np.allclose(table["observed"], [0, 1, 1 / 3, 1])
    assert np.allclose(table["predicted"], [1 - sigmoid(2), sigmoid(-1), (0.5 + 0.5 + sigmoid(1)) / 3, sigmoid(2)])
    gaps = [sigmoid(-2), 1 - sigmoid(-1), abs(1 / 3 - (1 + sigmoid(1)) / 3), 1 - sigmoid(2)]  # |observed − predicted|
    assert report.ece == pytest.approx((gaps[0] + gaps[1] + 3 * gaps[2] + gaps[3]) / 6)  # Σ count·gap / Σ count
    with pytest.raises(ValueError, match="1 of 8 rewards are NaN: the reward model has diverged"):
        evaluate_rewards(pairs, np.array([2.0, np.nan, 1.0, 5.0]), r_r)


def test_calibration_of_a_calibrated_predictor_is_small():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    chosen_first = rng.uniform(size=p.size) < p  # the outcome really happens with probability p
    p_chosen = np.where(chosen_first, p, 1 - p)  # orient every pair so its chosen reply comes first
    table = calibration_table(p_chosen, n_bins=5)
    assert np.allclose(table["predicted"], table["observed"], atol=0.02)



def test_cross_validation_scores_each_prompt_with_a_model_that_never_saw_it():
    fitted_on = []

    class ByLength:  # rewards a reply's length; remembers which prompts it was fitted on
        def fit(self, pairs):
            self.prompts = set(pairs["prompt"])
            fitted_on.append(self.prompts)
            return self

        def score_raw(self, prompts, replies):
            assert not set(prompts) & self.prompts, "scored a prompt it was fitted on"
            return torch.tensor([float(len(r)) for r in replies])

    pairs = pd.DataFrame({"prompt": [f"p{i // 2}" for i in range(12)], "chosen": ["aaa", "a"] * 6,
                          "rejected": ["a", "aa"] * 6, "annotator": ["me", "crowd"] * 6})
    extra = pd.DataFrame({"prompt": ["elsewhere"], "chosen": ["x"], "rejected": ["y"], "annotator": ["crowd"]})
    out = cross_validate(pairs, lambda train: ByLength().fit(train), folds=4, seed=0,
                         train=pd.concat([pairs[pairs["annotator"] == "me"], extra]))
    assert len(fitted_on) == 4 and all("elsewhere" in seen for seen in fitted_on)  # extra pairs always train
    assert sorted(out["fold"].value_counts().tolist()) == [2, 2, 4, 4]  # 6 prompts dealt into 4 folds, by prompt
    assert out.groupby("prompt")["fold"].nunique().eq(1).all()
    assert out["r_chosen"].tolist() == [3.0, 1.0] * 6 and out["r_rejected"].tolist() == [1.0, 2.0] * 6
    assert np.allclose(out["p_chosen"], [sigmoid(2), sigmoid(-1)] * 6) and out["annotator"].tolist() == pairs[
        "annotator"].tolist()
    again = cross_validate(pairs, lambda train: ByLength().fit(train), folds=4, seed=0)
    assert again["fold"].tolist() == out["fold"].tolist()  # seeded
    assert cross_validate(pairs, lambda train: ByLength().fit(train), folds=50)["fold"].nunique() == 6  # capped
    with pytest.raises(ValueError, match="at least 2 prompts") as info:
        cross_validate(pairs[pairs["prompt"] == "p0"], lambda train: ByLength().fit(train))
    assert "\n" not in str(info.value)


def test_loading_minilm_shows_no_progress_bar_and_leaves_the_setting_as_it_was(capsys):
    from transformers.utils import logging as hf_logging

    from rlhf_lab.reward.network import load_backbone

    hf_logging.enable_progress_bar()
    load_backbone("minilm")
    assert "Loading weights" not in capsys.readouterr().err  # one bar per fold's fit in lesson 3 was clutter
    assert hf_logging.is_progress_bar_enabled()

# ---- done when: the fitted model approaches the gold utility's own accuracy -------------------------------------------

def test_minilm_validation_accuracy_approaches_gold(tmp_path):
    """On 200 crowd-labelled pairs (rationality 3, so labels are noisy), the MiniLM model's held-out accuracy after
    one epoch is within 0.10 of the gold utility's own accuracy on the same held-out pairs. One thread: on a shared
    2-core machine two threads can collide with other processes' threads and run many times slower."""
    torch.set_num_threads(1)
    store = crowd_store(tmp_path / "crowd.db", n_prompts=50, pairs_per_prompt=4)
    config = RewardConfig(backbone="minilm", max_length=64, learning_rate=2e-4, val_fraction=0.25, normalize_sample=64, seed=0)
    rm = RewardModel(config).fit(store, progress=False)
    report = rm.evaluate(gold=GoldUtility())
    assert report.n_pairs - report.n_ties >= 40
    assert report.gold_accuracy > 0.7  # the labels carry signal...
    assert report.accuracy >= report.gold_accuracy - 0.10, str(report)  # ...and the model learns most of it
    assert report.agreement_with_gold > 0.8
    assert rm.history_[-1]["val/accuracy"] == pytest.approx(report.accuracy, abs=1e-6)


def test_order_agreement_counts_only_pairs_the_utility_tells_apart():
    from rlhf_lab.reward.evaluation import order_agreement

    scores = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 2.0}
    utility = {"a": 1.0, "b": 0.0, "c": 5.0, "d": 5.0}
    score = lambda prompts, replies: [scores[r] for r in replies]  # noqa: E731
    # pairs (a,b): utilities differ, scores agree; (b,a): differ, agree; (c,d): tie in utility, left out;
    # (b,c): differ, scores say b < c as the utility does; (a,c): differ, scores disagree
    value = order_agreement(score, ["p"] * 5, ["a", "b", "c", "b", "a"], ["b", "a", "d", "c", "c"],
                            lambda p, r: utility[r])
    assert value == 3 / 4
    assert np.isnan(order_agreement(score, ["p"], ["c"], ["d"], lambda p, r: utility[r]))
