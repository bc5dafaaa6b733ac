"""fp16 autocast with dynamic loss scaling, what `mixed_precision="auto"` picks on an older GPU (a Colab T4).

accelerate turns on fp16's autocast and makes its loss scaler only on a GPU. These CPU tests hand it the same pieces
on the CPU (torch's CPU autocast in float16 and its CPU GradScaler, the class accelerate uses), so the trainers' fp16
path runs here through accelerate's own wrappers: its scaled backward, its unscaling clip and its skipping step."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

import rlhf_lab.core.hf as hf

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Accelerators made with mixed_precision="fp16" on this CPU get fp16 autocast and a GradScaler, as on a GPU; the
    trainers' "fp16" is let through on the CPU. accelerate's process-wide state is reset before and after."""
    real_init, real_resolve = Accelerator.__init__, hf.resolve_precision

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self.state.mixed_precision == "fp16" and self.device.type == "cpu":
            self.native_amp, self.scaler = True, torch.amp.GradScaler("cpu", init_scale=4.0)

    monkeypatch.setattr(Accelerator, "__init__", init)
    monkeypatch.setattr(hf, "resolve_precision", lambda precision, device, deepspeed=False:
                        "fp16" if precision == "fp16" else real_resolve(precision, device, deepspeed))
    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_fp16_overflow_skips_the_step_and_halves_the_scale_and_a_real_divergence_still_stops(fp16_on_cpu):
    """`optimizer_step` under fp16 loss scaling: a finite step is checked and taken (the gradient unscaled); an
    overflow is skipped, unchecked, and halves the scale; below a scale of 1 a non-finite norm is a divergence."""
    from rlhf_lab.train.deepspeed_engine import optimizer_step

    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    model = torch.nn.Linear(4, 1)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    checked = []

    def check(norm):
        checked.append(float(norm))
        if not torch.isfinite(norm):
            raise RuntimeError("diverged")

    def step(scale_of_loss: float):
        before = model.weight.detach().clone()
        accelerator.backward(model(torch.ones(2, 4)).float().sum() * scale_of_loss)
        norm = optimizer_step(accelerator, model, optimizer, max_grad_norm=1e9, check=check)
        return norm, not torch.equal(before, model.weight)

    norm, moved = step(1.0)  # the loss's own gradient: 2 for each of 4 weights and the bias, unscaled
    assert moved and checked == [pytest.approx(float(norm))] and float(norm) == pytest.approx(2 * 5 ** 0.5, rel=1e-3)
    norm, moved = step(float("inf"))  # an overflow: skipped, not checked, the scale halved
    assert not torch.isfinite(norm) and not moved and len(checked) == 1 and accelerator.scaler.get_scale() == 2.0
    accelerator.scaler.update(0.5)  # the scale fallen below 1: a non-finite norm now is a divergence
    with pytest.raises(RuntimeError, match="diverged"):
        step(float("inf"))


def test_ppo_and_dpo_train_in_fp16_with_float32_weights(fp16_on_cpu, tiny):
    """A few PPO updates and DPO steps under fp16 autocast: finite figures, weights and optimiser state in float32,
    the loss scaler in use, and figures that differ from float32 compute's (fp16 did the arithmetic)."""
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import tiny_policy
    from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    tokenizer = tiny[1]
    prompts = ["hi there", "what is a cat?", "tell me a joke", "good morning"]

    def ppo(precision):
        config = PPOConfig(learning_rate=3e-3, batch_size=4, mini_batch_size=2, ppo_epochs=2, log_samples_every=0,
                           sampling=SamplingConfig(max_new_tokens=6), mixed_precision=precision)
        trainer = PPOTrainer(tiny_policy(tokenizer, seed=0)[0], tokenizer, lambda texts: [len(t) / 30 for t in texts],
                             config, callbacks=[])
        return trainer.train(prompts, 3)

    half = ppo("fp16")  # (accelerate's state is process-wide: read it before the next trainer resets it)
    assert half.accelerator.mixed_precision == "fp16" and half.accelerator.scaler.get_scale() >= 1.0
    assert {p.dtype for p in half.policy.parameters()} == {torch.float32}
    assert all(t.dtype == torch.float32 for s in half.optimizer.state_dict()["state"].values() for t in s.values()
               if t.dim())
    figures = [(r["objective/kl"], r["loss/policy_avg"], r["loss/value_avg"]) for r in half.history.rows]
    assert len(figures) == 3 and all(map(torch.isfinite, torch.tensor(figures).flatten()))
    full = ppo("no")
    assert figures != [(r["objective/kl"], r["loss/policy_avg"], r["loss/value_avg"]) for r in full.history.rows]

    pairs = pd.DataFrame({"prompt": ["hi", "hello", "what", "yo"], "chosen": ["well hello there friend"] * 4,
                          "rejected": ["no"] * 4})
    losses = {}
    for precision in ("fp16", "no"):
        dpo = DPOTrainer(tiny_policy(tokenizer, seed=0)[0], tokenizer,
                         DPOConfig(batch_size=2, learning_rate=1e-3, mixed_precision=precision), callbacks=[])
        losses[precision] = [r["loss"] for r in dpo.fit(pairs).history.rows]
    assert len(losses["fp16"]) == 2 and all(map(torch.isfinite, torch.tensor(losses["fp16"])))
    assert losses["fp16"] != losses["no"] and losses["fp16"] == pytest.approx(losses["no"], abs=0.05)
