"""The training scripts under `accelerate launch` with the DeepSpeed configs (configs/accelerate/deepspeed_zero2.yaml
and deepspeed_zero3.yaml; 2 CPU processes over gloo). PPO trains as DDP does; a run stopped and resumed from its
checkpoint (whole tensors, the one-process format) ends where the uninterrupted run ends; DDP's and FSDP2's
checkpoints resume under DeepSpeed and DeepSpeed's in one process; LoRA trains as under DDP; DPO writes the model
that one process writes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import EMBEDDING, SETTINGS, TINY, accelerate_launch, straight_and_resumed
from test_train_dpo_script import ARGS, check_launch, one_process_run, run, summary

from rlhf_lab.core.checkpoint import load_checkpoint

STAGES = ("deepspeed_zero2.yaml", "deepspeed_zero3.yaml")
NAME = EMBEDDING.removeprefix("model/")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """DDP's run of 3 updates, keeping its checkpoint of update 2."""
    base = tmp_path_factory.mktemp("ddp")
    accelerate_launch(base / "logs", "ddp.yaml", base / "run", *TINY, *SETTINGS, "--updates", "3",
                      "--checkpoint-every", "2")
    return base / "run"


@pytest.fixture(scope="module", params=STAGES)
def zero_runs(request, tmp_path_factory):
    """(config, straight run, resumed run) under each ZeRO stage (`test_distributed.straight_and_resumed`)."""
    return request.param, *straight_and_resumed(tmp_path_factory.mktemp(request.param[:-5]), request.param)


def assert_same(mine, theirs, atol: float) -> None:
    """Two one-process checkpoints hold the same weights and AdamW state (moments and step) within `atol`."""
    assert mine.tensors.keys() == theirs.tensors.keys()
    for name, value in theirs.tensors.items():
        torch.testing.assert_close(mine.tensors[name], value, rtol=0, atol=atol, msg=name)
    assert mine.optimizer["state"].keys() == theirs.optimizer["state"].keys()
    for index, moments in theirs.optimizer["state"].items():
        assert mine.optimizer["state"][index].keys() == moments.keys()
        for key, value in moments.items():
            torch.testing.assert_close(torch.as_tensor(mine.optimizer["state"][index][key]), torch.as_tensor(value),
                                       rtol=0, atol=atol, msg=f"{index}/{key}")


def test_zero_trains_as_ddp_does(zero_runs, ddp_run):
    """Same seeds, prompts and replies: after 3 updates DeepSpeed's gathered weights and AdamW state are DDP's up to
    float rounding (the updates moved the weights by ~1e-2), with the same adaptive β."""
    config, straight, _ = zero_runs
    zero, ddp = load_checkpoint(straight / "checkpoint"), load_checkpoint(ddp_run / "checkpoint")
    assert "shards" not in zero.state and zero.state["update"] == ddp.state["update"] == 3
    assert zero.state["kl_coef"] == pytest.approx(ddp.state["kl_coef"], abs=1e-7) and zero.state["kl_coef"] != 0.05
    assert_same(zero, ddp, atol=1e-5)
    start = load_checkpoint(straight / "checkpoint-2").tensors[NAME]
    assert (zero.tensors[NAME] - start).abs().max() > 1e-4  # update 3 moved the weights
    assert int(zero.optimizer["state"][0]["step"]) == 12  # 3 updates × 2 epochs × 2 minibatches


def test_zero_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run(zero_runs):
    config, straight, resumed = zero_runs
    a, b = load_checkpoint(straight / "checkpoint"), load_checkpoint(resumed / "checkpoint")
    assert b.state["update"] == 3 and a.state["kl_coef"] == b.state["kl_coef"]
    assert_same(b, a, atol=1e-6)


@pytest.mark.parametrize("source", ["ddp", "fsdp2"])
def test_ddp_and_fsdp2_checkpoints_resume_under_zero3(source, ddp_run, tmp_path):
    """DDP's checkpoint of update 2 (whole tensors) and FSDP2's (each process's shards), resumed under ZeRO-3: each
    process takes its partition, and update 3 ends where DDP's own update 3 does."""
    start = ddp_run / "checkpoint-2"
    if source == "fsdp2":
        accelerate_launch(tmp_path / "logs0", "fsdp2.yaml", tmp_path / "fsdp", *TINY, *SETTINGS, "--updates", "2")
        start = tmp_path / "fsdp" / "checkpoint"
    accelerate_launch(tmp_path / "logs", "deepspeed_zero3.yaml", tmp_path / "run", *TINY, "--updates", "3",
                      "--resume-from", str(start))
    assert_same(load_checkpoint(tmp_path / "run" / "checkpoint"), load_checkpoint(ddp_run / "checkpoint"), atol=1e-5)


def test_a_zero_checkpoint_resumes_in_one_process(zero_runs):
    config, straight, _ = zero_runs
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.train.ppo import PPOTrainer

    checkpoint = load_checkpoint(straight / "checkpoint-2")
    policy, tokenizer = load_policy("tiny", device="cpu")
    trainer = PPOTrainer.resume(straight / "checkpoint-2", policy, tokenizer, lambda replies: [0.0] * len(replies),
                                callbacks=[])
    assert trainer.update_ == 2 and trainer.kl_ctl.value == checkpoint.state["kl_coef"]
    torch.testing.assert_close(dict(trainer.model.named_parameters())[NAME].detach(), checkpoint.tensors[NAME],
                               rtol=0, atol=0)
    trainer.step(["hi", "hello there", "what is up", "tell me"])
    assert trainer.update_ == 3


def test_lora_under_zero3_trains_as_under_ddp(tmp_path):
    """With LoRA the reference is the policy with its adapters off; under ZeRO-3 that is the whole copy sampling
    reads. Two updates under each config: the same adapters and value head."""
    args = [*TINY, *SETTINGS, "--updates", "2", "--lora", "4"]
    accelerate_launch(tmp_path / "logs1", "deepspeed_zero3.yaml", tmp_path / "zero3", *args)
    accelerate_launch(tmp_path / "logs2", "ddp.yaml", tmp_path / "ddp", *args)
    zero, ddp = (load_checkpoint(tmp_path / run / "checkpoint") for run in ("zero3", "ddp"))
    assert ddp.tensors and all("lora_" in name or "value_head" in name for name in ddp.tensors)
    assert max(float(v.abs().max()) for name, v in ddp.tensors.items() if "lora_B" in name) > 0
    assert_same(zero, ddp, atol=1e-5)
    exported = load_file(str(tmp_path / "zero3" / "checkpoint" / "adapter" / "adapter_model.safetensors"))
    assert exported and all("lora_" in name for name in exported)


@pytest.fixture(scope="module")
def dpo_alone(tmp_path_factory):
    """(its data, its summary, its trained model) of examples/train_dpo.py in one process: 6 pairs in batches of 4."""
    base = tmp_path_factory.mktemp("dpo")
    data, one = one_process_run(base)
    return data, summary(one.stdout), load_file(str(base / "one" / "model" / "model.safetensors"))


@pytest.mark.parametrize("config", STAGES)
def test_dpo_under_zero_writes_the_model_one_process_writes(config, dpo_alone, tmp_path):
    """examples/train_dpo.py: 6 pairs in batches of 4, in one process and under DeepSpeed (each process scores its
    share of every batch): the same loss and the same trained weights."""
    data, theirs, alone = dpo_alone
    zero = run("--data", str(data), "--out", str(tmp_path / "zero"), *ARGS, launch=config, logs=tmp_path / "logs")
    model = tmp_path / "zero" / "model" / "model.safetensors"
    check_launch(zero, tmp_path / "logs", [] if model.exists() else [str(model)])
    mine = summary(zero.stdout)
    assert (mine["processes"], mine["engine"]) == (2, "DEEPSPEED") and mine["updates"] == theirs["updates"] == 2
    assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
    trained = load_file(str(model))
    from rlhf_lab.policy.models import load_policy

    start = load_policy("tiny", device="cpu")[0].state_dict()
    assert max(float((alone[n] - start[n]).abs().max()) for n in alone) > 1e-3  # DPO moved the weights
    for name, value in alone.items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=1e-5, msg=name)


def test_prepare_writes_the_trainers_batch_clipping_and_bucket_sizes_into_deepspeeds_config():
    """Under DeepSpeed `prepare` sets the batch figures and clipping from the trainer's config and 20 MB buckets where
    the config leaves them unset or "auto"; a size the user chose stays."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from rlhf_lab.train.deepspeed_engine import BUCKET_ELEMENTS, prepare

    config = {"zero_optimization": {"stage": 3, "reduce_bucket_size": 123, "allgather_bucket_size": "auto"}}
    accelerator = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=4,
                                  state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)),
                                  prepare=lambda *objects: objects)
    assert prepare(accelerator, "model", "optimizer", micro_batch=2, accumulation=3, max_grad_norm=0.5) == (
        "model", "optimizer")
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["train_batch_size"], config["gradient_clipping"]) == (2, 3, 24, 0.5)
    assert config["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 123,
                                           "allgather_bucket_size": BUCKET_ELEMENTS,
                                           "stage3_prefetch_bucket_size": BUCKET_ELEMENTS}
    assert BUCKET_ELEMENTS * 4 == 20_000_000
