"""rlhf_lab.train.dpo: the losses by hand and against TRL, sequence log-probs, and DPO learning on a tiny random policy."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from conftest import peaked_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.feedback.crowd import SimulatedCrowd
from rlhf_lab.policy.generation import SamplingConfig, generate
from rlhf_lab.reward.sources import Reward
from rlhf_lab.train.config import LoraSettings, OptimConfig
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.dpo_data import EncodedPair, collate, pair_logps, sequence_logps
from rlhf_lab.train.dpo_losses import dpo_loss, ipo_loss, robust_loss, sigmoid_loss

PROMPTS = ["hi there", "what is a cat?", "tell me a joke", "how are you?", "good morning", "what's up", "I like tea",
           "say something nice"]
SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)
NEWLINE = 198


pytestmark = pytest.mark.usefixtures("one_thread")


def length_reward(texts):
    return [len(t) / 40 for t in texts]


class NewlineReward(Reward):
    def __call__(self, batch):
        return ((batch.response_ids == NEWLINE) & batch.response_mask.bool()).sum(1).float() / 8


def mean_score(model, tokenizer, reward=length_reward):
    batch = generate(model, tokenizer, PROMPTS * 8, SAMPLING, seed=123)
    return float(torch.as_tensor(reward(batch.responses) if callable(reward) and not isinstance(reward, Reward)
                                 else reward(batch)).mean())


def own_pairs(model, tokenizer, n_prompts: int = 32) -> pd.DataFrame:
    """Offline pairs: two replies of the policy to each prompt, the longer one chosen (a scripted judge)."""
    batch = generate(model, tokenizer, (PROMPTS * 8)[:n_prompts], SAMPLING, n_per_prompt=2, seed=7)
    rows = []
    for i in range(0, len(batch), 2):
        a, b = batch.responses[i], batch.responses[i + 1]
        rows.append(dict(prompt=batch.prompts[i], chosen=max(a, b, key=len), rejected=min(a, b, key=len),
                         tie=len(a) == len(b)))
    return pd.DataFrame(rows)


# ---- the losses by hand -------------------------------------------------------------------------------------------
C, R, RC, RR = torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0])  # h = 2


def test_dpo_loss_matches_a_hand_computation():
    beta = 0.5  # β·h = 1
    assert dpo_loss(C, R, RC, RR, beta).item() == pytest.approx(math.log(1 + math.exp(-1)))
    cdpo = 0.9 * math.log(1 + math.exp(-1)) + 0.1 * math.log(1 + math.exp(1))
    assert dpo_loss(C, R, RC, RR, beta, label_smoothing=0.1).item() == pytest.approx(cdpo)
    robust = (0.9 * math.log(1 + math.exp(-1)) - 0.1 * math.log(1 + math.exp(1))) / 0.8
    assert dpo_loss(C, R, RC, RR, beta, "robust", 0.1).item() == pytest.approx(robust)
    # IPO: per-token log-ratios (−1+2)/4 − (−3+2)/2 = 0.75; (0.75 − 1/(2·0.5))² = 0.0625
    ipo = dpo_loss(C, R, RC, RR, beta, "ipo", chosen_lengths=torch.tensor([4.0]), rejected_lengths=torch.tensor([2.0]))
    assert ipo.item() == pytest.approx(0.0625)
    tie = dpo_loss(C, R, RC, RR, beta, tie=torch.tensor([True]))
    assert tie.item() == pytest.approx(0.5 * math.log(1 + math.exp(-1)) + 0.5 * math.log(1 + math.exp(1)))
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(C, R, RC, RR, beta, "ipo")
    with pytest.raises(ValueError, match="Unknown loss_type"):
        dpo_loss(C, R, RC, RR, beta, "hinge")


@settings(max_examples=50, deadline=None)
@given(h=st.floats(-20, 20), beta=st.floats(0.01, 2.0), eps=st.floats(0.0, 0.45))
def test_loss_properties(h, beta, eps):
    h = torch.tensor([h], dtype=torch.float64, requires_grad=True)
    loss = sigmoid_loss(h, beta)
    (grad,) = torch.autograd.grad(loss.sum(), h)
    assert loss.item() >= 0 and grad.item() <= 1e-12  # DPO: a larger margin never costs more
    # cDPO's optimum is finite: β·h* = log((1−ε)/ε), where the gradient vanishes
    if eps > 0.01:
        at = torch.tensor([math.log((1 - eps) / eps) / beta], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(sigmoid_loss(at, beta, eps).sum(), at)
        assert abs(g.item()) < 1e-9
    assert robust_loss(h.detach(), beta, 0.0).item() == pytest.approx(sigmoid_loss(h.detach(), beta).item())
    assert ipo_loss(torch.tensor([1 / (2 * beta)]), beta).item() == pytest.approx(0.0, abs=1e-9)


# ---- TRL agreement (only where TRL is installed; it is not a dependency) -------------------------------------------
def trl_loss(loss_type: str, beta: float, label_smoothing: float, logps, ref_logps, lengths) -> torch.Tensor:
    """TRL's DPOTrainer._compute_loss on fixed log-probs, without building a trainer: a stand-in `self` and a model
    whose per-token log-probs sum to the given sequence log-probs."""
    from collections import defaultdict
    from types import SimpleNamespace

    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    n, width = len(logps), int(lengths.max()) + 1
    completion_mask = (torch.arange(width) < lengths[:, None]).long()  # (2B, width)
    log_probs = torch.zeros(n, width - 1)
    log_probs[:, 0] = logps

    class Model:
        training = True

        def __call__(self, **kwargs):
            zeros = torch.zeros(n, width - 1)
            # TRL 1.12 reads logits: over two tokens, [0, log(e^-lp - 1)] gives log-softmax lp for token 0 (every
            # label is 0), and [0, -1e9] gives 0; earlier versions read log_probs
            other = torch.where(log_probs < 0, torch.log(torch.expm1(-log_probs.double())).float(),
                                torch.tensor(-1e9))
            logits = torch.stack([torch.zeros(n, width), torch.cat([other, torch.full((n, 1), -1e9)], 1)], -1)
            return SimpleNamespace(logits=logits, log_probs=log_probs, entropy=zeros, mean_logits=zeros,
                                   is_top1=zeros.bool())

    acc = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    fake = SimpleNamespace(model=Model(), accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
                           precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type],
                           loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing, use_weighting=False,
                           _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    ref_c, ref_r = ref_logps.chunk(2)
    inputs = {"input_ids": torch.zeros(n, width, dtype=torch.long), "attention_mask": torch.ones(n, width),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}
    return trl_dpo.DPOTrainer._compute_loss(fake, fake.model, inputs, return_outputs=False)


@pytest.mark.parametrize("loss_type,label_smoothing", [("sigmoid", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_dpo_loss_agrees_with_trl(loss_type, label_smoothing):
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(0)
    logps, ref_logps = -20 * torch.rand(12, generator=g), -20 * torch.rand(12, generator=g)  # 6 pairs, [chosen; rejected]
    lengths = torch.randint(1, 30, (12,), generator=g)
    ours = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), 0.2, loss_type, label_smoothing,
                    *lengths.float().chunk(2)).mean()
    theirs = trl_loss(loss_type, 0.2, label_smoothing, logps, ref_logps, lengths)
    assert ours.item() == pytest.approx(float(theirs), rel=1e-5)


# ---- sequence log-probs -------------------------------------------------------------------------------------------
def test_sequence_logps_match_a_naive_full_softmax_and_ignore_padding(tokenizer):
    model = peaked_policy(tokenizer)
    pairs = [EncodedPair([5, 6, 7], [20, 21, 2], [22, 2]), EncodedPair([8, 9], [23, 2], [24, 25, 26, 27, 2])]
    ids, mask = collate(pairs, tokenizer.pad_token_id)
    assert ids.shape == (4, 7) and mask.sum(1).tolist() == [3, 2, 2, 5]  # rows: chosen 1, chosen 2, rejected 1, 2
    with torch.no_grad():
        ours = sequence_logps(model, ids, mask)
        for row, (prompt, reply) in enumerate([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected)
                                                                                       for p in pairs]):
            alone = torch.tensor([prompt + reply])
            logp = torch.log_softmax(model(alone).logits[0, :-1], -1).gather(-1, alone[0, 1:, None])[:, 0]
            assert ours[row].item() == pytest.approx(logp[len(prompt) - 1:].sum().item(), abs=1e-4)


@pytest.mark.parametrize("packed", [True, False])
def test_pair_logps_share_the_prompt_and_match_sequence_logps_with_gradients(tokenizer, packed):
    """The prompt run once gives the same log-probs and the same gradients as each full row alone (right padded):
    packed, the batch as one row of segments (under FSDP2, `sharded`, with SDPA), or left padded with its keys and
    values reused by both replies (one process)."""
    model = peaked_policy(tokenizer).train()
    model.config._attn_implementation = "sdpa"
    pairs = [EncodedPair([5, 6, 7], [20, 21, 2], [22, 2]), EncodedPair([8, 9], [23, 2], [24, 25, 26, 27, 2]),
             EncodedPair([8, 9, 10, 11, 12], [23], [24])]
    weight = model.get_input_embeddings().weight
    ids, mask = collate(pairs, tokenizer.pad_token_id)
    full = sequence_logps(model, ids, mask)
    (full_grad,) = torch.autograd.grad(full.sum(), weight)
    embedded = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: embedded.append(args[0].shape))
    shared = pair_logps(model, pairs, tokenizer.pad_token_id, sharded=packed)
    hook.remove()
    (shared_grad,) = torch.autograd.grad(shared.sum(), weight)
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(shared_grad, full_grad, atol=1e-5, rtol=1e-4)
    # packed: one row of each prompt and its replies but their last tokens, (3 + 2 + 1) + (2 + 1 + 4) + (5 + 0 + 0)
    assert embedded == ([(1, 18)] if packed else [(3, 5), (6, 4)])


# ---- config and input checks --------------------------------------------------------------------------------------
def test_config_and_input_errors_say_how_to_fix(tokenizer):
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="Unknown loss_type"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        DPOConfig(batch_size=8, micro_batch_size=3)
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, DPOConfig(sampling=SAMPLING), callbacks=[])
    with pytest.raises(ValueError, match="no preference pairs"):
        trainer.fit(pd.DataFrame(columns=["prompt", "chosen", "rejected"]))
    with pytest.raises(ValueError, match="missing"):
        trainer.fit(pd.DataFrame({"prompt": ["a"], "response": ["b"]}))
    assert DPOConfig().to_dict()["learning_rate"] == 1e-6 and isinstance(DPOConfig(), OptimConfig)


def test_a_non_finite_loss_raises_the_one_divergence_error(tokenizer):
    """Every trainer raises TrainingDivergedError (DPO used to raise FloatingPointError)."""
    policy = peaked_policy(tokenizer)
    trainer = DPOTrainer(policy, tokenizer, DPOConfig(sampling=SAMPLING), callbacks=[])
    prepared = trainer.prepare(pd.DataFrame({"prompt": ["hi", "yo"], "chosen": ["a b", "c"], "rejected": ["d", "e f"]}))
    with torch.no_grad():
        trainer.policy.get_output_embeddings().weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="DPO step 1: the loss became non-finite"):
        trainer.fit(prepared)


# ---- learning ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_type,label_smoothing,beta", [("sigmoid", 0.0, 0.1), ("ipo", 0.0, 0.5),
                                                            ("sigmoid", 0.1, 0.1)])
def test_offline_dpo_raises_a_scripted_reward(tokenizer, loss_type, label_smoothing, beta):
    before = mean_score(peaked_policy(tokenizer), tokenizer)
    pairs = own_pairs(peaked_policy(tokenizer), tokenizer)
    config = DPOConfig(learning_rate=1e-3, sampling=SAMPLING, epochs=3, beta=beta, loss_type=loss_type,
                       label_smoothing=label_smoothing)
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, config, callbacks=[]).fit(pairs)
    rows = trainer.history.rows
    assert len(rows) == 12 and rows[0]["loss"] > rows[-1]["loss"]
    assert rows[-1]["rewards/accuracies"] > 0.8 and rows[-1]["rewards/margins"] > 0
    assert mean_score(trainer.policy, tokenizer) > before + 0.05  # replies about 2 characters longer on average


def test_iterative_dpo_raises_a_scripted_reward_with_the_sampled_tokens(tokenizer):
    before = mean_score(peaked_policy(tokenizer), tokenizer, NewlineReward())
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, DPOConfig(learning_rate=1e-3, sampling=SAMPLING),
                         callbacks=[])
    trainer.train_iterative(PROMPTS, NewlineReward(), rounds=6, pairs_per_round=16)
    assert (trainer.round_, trainer.samples_generated_, trainer.judgments_used_) == (6, 6 * 32, 6 * 16)
    assert mean_score(trainer.policy, tokenizer, NewlineReward()) > 1.4 * before


def test_best_vs_worst_of_n_candidates_by_a_reward_judge(tokenizer):
    """With candidates=4 a reward-source judge pairs each prompt's highest-scored reply with its lowest."""
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, DPOConfig(sampling=SAMPLING, candidates=4),
                         callbacks=[])
    pairs = trainer.collect_pairs(PROMPTS, NewlineReward(), round_=1, pairs_per_round=8)
    assert len(pairs) == 8 and trainer.samples_generated_ == 32 and trainer.judgments_used_ == 8
    newlines = lambda ids: sum(t == NEWLINE for t in ids)  # noqa: E731
    assert all(newlines(p.chosen) >= newlines(p.rejected) for p in pairs)
    assert any(newlines(p.chosen) > newlines(p.rejected) for p in pairs)
    with pytest.raises(ValueError, match="candidates=2"):
        trainer.collect_pairs(PROMPTS, SimulatedCrowd(n=1), round_=2, pairs_per_round=2)


def test_min_margin_keeps_only_prompts_whose_best_and_worst_differ_enough(tokenizer):
    """Scores are newlines / 8: a margin of 2/8 needs the best candidate to have two more newlines than the worst."""
    config = DPOConfig(sampling=SAMPLING, candidates=4, min_margin=2 / 8)
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, config, callbacks=[])
    pairs = trainer.collect_pairs(PROMPTS, NewlineReward(), round_=1, pairs_per_round=8)
    scores = NewlineReward()(trainer.last_batch_).view(8, 4)
    wide = int(((scores.max(1).values - scores.min(1).values) >= 2 / 8).sum())
    assert len(pairs) == wide and trainer.pairs_below_margin_ == 8 - wide and 0 < wide < 8
    newlines = lambda ids: sum(t == NEWLINE for t in ids)  # noqa: E731
    assert all(newlines(p.chosen) >= newlines(p.rejected) + 2 for p in pairs)
    with pytest.raises(ValueError, match="min_margin"):
        DPOConfig(min_margin=-1)


def test_iterative_dpo_with_the_simulated_crowd_records_judgments(tokenizer):
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, DPOConfig(learning_rate=1e-3, sampling=SAMPLING),
                         callbacks=[])
    trainer.train_iterative(PROMPTS, SimulatedCrowd(n=2), rounds=1, pairs_per_round=8)
    assert trainer.judgments_used_ == 16 and len(trainer.store_.preference_pairs()) == 16 - 0
    assert trainer.update_ >= 1


def test_lora_reference_is_the_policy_with_adapters_disabled(tokenizer):
    pairs = own_pairs(peaked_policy(tokenizer), tokenizer, n_prompts=8)
    config = DPOConfig(learning_rate=1e-2, sampling=SAMPLING, lora=LoraSettings(r=4, alpha=8))
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, config, callbacks=[])
    data = trainer.prepare(pairs)
    trainer.fit(data, epochs=2)
    assert trainer.ref_policy is None
    again = trainer.prepare(pairs)  # after training, the reference must be unchanged
    torch.testing.assert_close(again.ref_chosen, data.ref_chosen, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ids, mask = collate(data.pairs, tokenizer.pad_token_id)
        policy_logps = sequence_logps(trainer.policy.get_base_model(), ids, mask)
    assert not torch.allclose(policy_logps[:len(data)], data.ref_chosen, atol=1e-3)  # the adapters did learn


def test_pairs_as_dicts_or_a_jsonl_file_are_read_as_a_reward_models_fit_reads_them(tokenizer, tmp_path):
    import json

    rows = [dict(prompt="Hi?", chosen="Hello there.", rejected="Go."), dict(prompt="Tea?", chosen="Yes.", rejected="")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = DPOTrainer(peaked_policy(tokenizer), tokenizer, DPOConfig(batch_size=2), callbacks=[])
    expected = trainer.prepare(pd.DataFrame(rows))
    for source in (rows, str(path), path):
        prepared = trainer.prepare(source)
        assert prepared.pairs == expected.pairs and torch.equal(prepared.ref_chosen, expected.ref_chosen)
