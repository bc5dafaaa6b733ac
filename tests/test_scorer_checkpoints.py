"""DPO's and KTO's checkpoints (`train.scorer.ScoringTrainer`): a fit stopped between checkpoints and resumed in a
new trainer from the last one ends where the uninterrupted fit ends: the same weights, counters and metrics; other
data is refused."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.policy.models import tiny_policy
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.kto import KTOConfig, KTOTrainer

PROMPTS = ["hi", "hello there", "what is up", "tell me", "good morning", "how are you", "why", "ok then"]
SAMPLING = SamplingConfig(max_new_tokens=6, temperature=1.0)


class Stop(Exception):
    """The crash: raised after update `n`."""


class StopAfter:
    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.update_ == self.n:
            raise Stop


def weights(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_a_stopped_fit_resumed_from_its_checkpoint_ends_as_the_uninterrupted_fit(method, tmp_path):
    if method == "dpo":
        trainer_class, data = DPOTrainer, pd.DataFrame({"prompt": PROMPTS, "chosen": [p + ", gladly and at length"
                                                                                         for p in PROMPTS],
                                                         "rejected": ["no"] * len(PROMPTS)})
        config = DPOConfig(batch_size=2, epochs=2, learning_rate=1e-3, mixed_precision="no", sampling=SAMPLING)
    else:
        trainer_class, data = KTOTrainer, pd.DataFrame({"prompt": PROMPTS * 2, "completion": ["yes, gladly"] * 8
                                                        + ["no"] * 8, "label": [True] * 8 + [False] * 8})
        config = KTOConfig(batch_size=4, epochs=2, learning_rate=1e-3, mixed_precision="no", sampling=SAMPLING)
    straight = trainer_class(tiny_policy("smollm2-135m", seed=0)[0], tiny_policy("smollm2-135m")[1], config,
                             callbacks=[]).fit(data)
    policy, tokenizer = tiny_policy("smollm2-135m", seed=0)
    stopped = trainer_class(policy, tokenizer, config, callbacks=[StopAfter(5)])
    with pytest.raises(Stop):
        stopped.fit(data, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=2)  # saved at updates 2 and 4
    assert stopped.fit_start_ is None  # the stopped fit's position is its checkpoint's, not the next fit's
    other_base = tiny_policy("smollm2-135m", seed=0)[0]
    other_base.rlhf_lab_id = "someone/else"  # another base model: its reference would not be the run's
    with pytest.raises(ValueError, match=r"saved from the policy 'tiny.*', not 'someone/else'"):
        trainer_class.resume(tmp_path / "ckpt", other_base, tokenizer, callbacks=[])
    resumed = trainer_class.resume(tmp_path / "ckpt", tiny_policy("smollm2-135m", seed=0)[0], tokenizer, callbacks=[])
    assert (resumed.update_, resumed.fit_start_) == (4, 0) and resumed.config == config
    other = data.copy()
    other.iloc[1, 2] = not other.iloc[1, 2] if method == "kto" else "nope"  # one label / one reply differs
    with pytest.raises(ValueError, match="resumes a fit on other data"):
        resumed.fit(other)  # its position counts the batches of the data it began with
    assert (resumed.update_, resumed.fit_start_) == (4, 0)  # refused before any work: the position is kept
    resumed.fit(data)
    assert resumed.update_ == straight.update_ == 8 and resumed.fit_start_ is None
    mine, theirs = weights(resumed), weights(straight)
    assert max(float((mine[n] - weights(trainer_class(tiny_policy("smollm2-135m", seed=0)[0], tokenizer, config,
                                                      callbacks=[]))[n]).abs().max()) for n in mine) > 1e-3
    for name, value in theirs.items():
        torch.testing.assert_close(mine[name], value, rtol=0, atol=1e-6, msg=name)
    assert [r["loss"] for r in resumed.history.rows] == pytest.approx([r["loss"] for r in straight.history.rows],
                                                                       abs=1e-6)
    seen = "pairs_seen_" if method == "dpo" else "examples_seen_"
    assert getattr(resumed, seen) == getattr(straight, seen) > 0
