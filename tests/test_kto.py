"""KTO from thumbs: the store's thumbs become TRL's unpaired examples, the trainer's reference point and loss match
their definitions on its own log-probs, and training on thumbs (longer replies up) raises a scripted reward."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import peaked_policy

from rlhf_lab.feedback.exchange import export_unpaired_jsonl
from rlhf_lab.feedback.preferences import unpaired_examples
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.policy.generation import SamplingConfig, generate
from rlhf_lab.train.kto import KTOConfig, KTOTrainer, encode_examples, example_logps, mismatched_partners
from rlhf_lab.train.kto_losses import kto_loss, kto_reference_point

PROMPTS = ["hi there", "what is a cat?", "tell me a joke", "how are you?", "good morning", "what's up", "I like tea",
           "say something nice"]
SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)

pytestmark = pytest.mark.usefixtures("one_thread")


def mean_length(model, tokenizer) -> float:
    batch = generate(model, tokenizer, PROMPTS * 8, SAMPLING, seed=123)
    return float(np.mean([len(t) for t in batch.responses]))


def thumbs_data(model, tokenizer) -> pd.DataFrame:
    """Replies of the policy; the longer half gets a thumbs up (a scripted judge)."""
    batch = generate(model, tokenizer, PROMPTS * 6, SAMPLING, seed=7)
    median = np.median([len(t) for t in batch.responses])
    return pd.DataFrame({"prompt": batch.prompts, "completion": batch.responses,
                         "label": [len(t) > median for t in batch.responses]})


def test_thumbs_in_the_store_become_trl_unpaired_examples(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    ids = store.add_responses([dict(prompt="p", response=t, model="m", iteration=1) for t in ("good", "bad")])
    store.record_thumbs(ids[0], "ann", True)
    store.record_thumbs(ids[1], "ann", False)
    store.record_flags(ids[1], "ann", ["harmful"])  # not thumbs: no example
    examples = unpaired_examples(store)
    assert examples[["prompt", "completion", "label"]].to_dict("records") == [
        {"prompt": "p", "completion": "good", "label": True}, {"prompt": "p", "completion": "bad", "label": False}]
    assert export_unpaired_jsonl(store, tmp_path / "kto.jsonl") == 2
    lines = [json.loads(s) for s in (tmp_path / "kto.jsonl").read_text().splitlines()]
    assert lines[0] == {"prompt": "p", "completion": "good", "label": True, "annotator": "ann", "iteration": 1,
                        "model": "m", "response_id": ids[0]}


def test_a_step_computes_the_loss_of_its_definition(tokenizer):
    config = KTOConfig(sampling=SAMPLING, batch_size=4, beta=0.5, mixed_precision="no")  # float32: exact losses
    trainer = KTOTrainer(peaked_policy(tokenizer), tokenizer, config, callbacks=[])
    rows = encode_examples(tokenizer, PROMPTS[:4], ["yes", "no no", "maybe so", "fine"], SAMPLING, 128, 96)
    mismatched = [(rows[i][0], rows[(i + 1) % 4][1]) for i in range(4)]
    with torch.no_grad():
        policy_logps = example_logps(trainer.policy, rows, tokenizer.pad_token_id)
        policy_mm = example_logps(trainer.policy, mismatched, tokenizer.pad_token_id)
    ref, ref_mm = policy_logps - 0.3, policy_mm - 0.8  # a reference the policy has moved away from
    up = torch.tensor([True, False, True, False])
    metrics = trainer.step(rows, ref, up, mismatched, ref_mm, 1.5, 1.0)
    z0 = kto_reference_point(policy_mm, ref_mm)
    assert z0.item() == pytest.approx(0.8, abs=1e-4) and metrics["kl"] == pytest.approx(0.8, abs=1e-4)
    want = kto_loss(policy_logps, ref, up, z0, 0.5, 1.5, 1.0).mean().item()
    by_hand = np.mean([1.5 - 1.5 / (1 + np.exp(-0.5 * (0.3 - 0.8))), 1.0 - 1.0 / (1 + np.exp(-0.5 * (0.8 - 0.3)))])
    assert metrics["loss"] == pytest.approx(want, abs=1e-5) == pytest.approx(by_hand, abs=1e-5)
    assert metrics["rewards/chosen"] == pytest.approx(0.5 * 0.3, abs=1e-4)


def test_mismatched_partners_answer_another_prompt():
    assert mismatched_partners(["a", "a", "b", "c", "a"]) == [2, 2, 3, 4, 2]
    assert mismatched_partners(["a", "b"]) == [1, 0]
    assert mismatched_partners(["a", "a", "a"]) == [1, 2, 0]  # no other prompt: the next example


def test_kto_on_thumbs_raises_a_scripted_reward(tokenizer, monkeypatch):
    import rlhf_lab.train.kto as kto

    partners, real = [], kto.mismatched_partners
    monkeypatch.setattr(kto, "mismatched_partners", lambda prompts: partners.append((prompts, real(prompts))) or
                        partners[-1][1])
    before = mean_length(peaked_policy(tokenizer), tokenizer)
    data = thumbs_data(peaked_policy(tokenizer), tokenizer)
    config = KTOConfig(learning_rate=1e-3, sampling=SAMPLING, batch_size=8, epochs=3, beta=0.1)
    trainer = KTOTrainer(peaked_policy(tokenizer), tokenizer, config, callbacks=[]).fit(data)
    assert len(partners) == 3 * 6  # every step's y' answers another prompt (each batch of 8 holds several)
    assert all(prompts[j] != prompts[i] for prompts, js in partners for i, j in enumerate(js))
    rows = trainer.history.rows
    assert len(rows) == 3 * 6 and rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["rewards/chosen"] > rows[-1]["rewards/rejected"]
    assert mean_length(trainer.policy, tokenizer) > before + 2  # longer replies after thumbs up on the longer half


def test_bad_input_says_how_to_fix_it(tokenizer):
    with pytest.raises(ValueError, match="at least 2 examples"):
        KTOConfig(batch_size=1)
    trainer = KTOTrainer(peaked_policy(tokenizer), tokenizer, KTOConfig(sampling=SAMPLING), callbacks=[])
    with pytest.raises(ValueError, match="prompt, completion, label"):
        trainer.fit(pd.DataFrame({"prompt": ["a"], "chosen": ["b"]}))
    with pytest.raises(ValueError, match="both kinds"):
        trainer.fit(pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"], "label": [True, True]}))
