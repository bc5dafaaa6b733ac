"""What a trainer saves to resume its run, and how it reads it back (`OnPolicyTrainer.save`, `load_state`,
`resume`; DPO's and KTO's the same, `train.scorer.ScoringTrainer`).

In one process or under DDP (every process holds the same weights) the main process writes one checkpoint
(`core.checkpoint`). Under FSDP2 every process writes its own part (`core.sharded_checkpoint`): the local shards of
the trainable weights and of the optimiser state in safetensors, its random generators in JSON. A sharded checkpoint
resumes with the same number of processes part by part; with another number, in one process or under DDP, each
process gathers the whole tensors and takes its own part (`train.sharding.load_parts`). A one-process checkpoint
resumes under FSDP2 the same way. Under DeepSpeed the processes gather the whole tensors and the main process writes
a one-process checkpoint (`train.deepspeed_engine.whole_state`); any checkpoint resumes under DeepSpeed from whole
tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhf_lab.core.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_trainable_state_dict,
    rng_from_json,
    rng_state,
    rng_to_json,
    save_checkpoint,
    set_rng_state,
    trainable_state_dict,
)
from rlhf_lab.core.files import aside_copies, read_json
from rlhf_lab.core.sharded_checkpoint import (
    STATE_FILE,
    is_sharded_checkpoint,
    open_sharded_checkpoint,
    save_sharded_checkpoint,
)
from rlhf_lab.train.deepspeed_engine import (
    is_deepspeed,
    load_whole_state,
    named_whole_state,
    unwrap,
    whole_state,
)
from rlhf_lab.train.sharding import load_parts, local_parts, named_parts

__all__ = ["save_trainer", "load_trainer", "check_resumable", "saved_state"]


def _run_state(trainer) -> dict:
    state = {"config": trainer.config.to_dict(), "update": trainer.update_, "history": trainer.history.state_dict(),
             "counters": {name: getattr(trainer, name) for name in getattr(trainer, "counters", ())}}
    if hasattr(trainer, "kl_ctl"):  # an on-policy trainer (PPO, RLOO)
        state.update(kl_coef=trainer.kl_ctl.value, cost_lambda=trainer.constraint.value)
    if hasattr(trainer, "model_id"):  # every trainer: the base policy it started from (its reference)
        state["model_id"] = trainer.model_id
    if getattr(trainer, "provenance", None):  # e.g. an RLHFRun's iteration, start policy and reward model
        state["provenance"] = dict(trainer.provenance)
    return state


def _agree(accelerator, ok: bool) -> bool:
    """True on every process when `ok` is True on every process (a collective)."""
    if accelerator.num_processes == 1:
        return ok
    votes = accelerator.reduce(torch.tensor([float(ok)], device=accelerator.device), reduction="sum")
    return int(votes.item()) == accelerator.num_processes


def save_trainer(trainer, path) -> None:
    """Write `trainer`'s checkpoint atomically at `path` (every process calls this): trainable weights (LoRA adapters
    and value head with LoRA; the adapters also under adapter/ in peft's format), optimiser, RNG states, config, β,
    update count, counters and metrics history; sharded under FSDP2."""
    acc = trainer.accelerator
    acc.wait_for_everyone()
    model = unwrap(acc, trainer.model)
    if trainer.sharded and not is_deepspeed(acc):  # FSDP2
        tensors, layout, groups = local_parts(model, trainer.optimizer)
        full = trainer.full_policy.refresh(trainer.policy) if trainer.config.lora else None  # every process gathers
        save_sharded_checkpoint(path, tensors=tensors, layout=layout, rank_state={"rng": rng_to_json(rng_state())},
                                state={**_run_state(trainer), "optimizer_groups": groups}, rank=acc.process_index,
                                world_size=acc.num_processes, agree=lambda ok: _agree(acc, ok),
                                extra=(lambda directory: full.save_pretrained(directory / "adapter")) if full else None)
        return
    if is_deepspeed(acc):
        tensors, optimizer = whole_state(trainer.model)  # every process gathers
    else:
        tensors, optimizer = trainable_state_dict(model), trainer.optimizer.state_dict()
    # the adapters' peft export reads whole weights: under ZeRO-3 every process gathers the copy
    policy = (trainer.full_policy.refresh(trainer.policy) if trainer.sharded else trainer.policy) \
        if trainer.config.lora else None
    if not acc.is_main_process:
        return
    adapter = (lambda directory: policy.save_pretrained(directory / "adapter")) if policy is not None else None
    save_checkpoint(path, tensors=tensors, state=_run_state(trainer), optimizer=optimizer, rng=rng_state(),
                    extra=adapter)


def saved_state(path) -> dict:
    """The state.json of the checkpoint at `path`, of either kind (config, update, ...), without its digests."""
    path = Path(path)
    for folder in (path, *reversed(aside_copies(path))):
        if (folder / STATE_FILE).is_file():
            return {k: v for k, v in read_json(folder / STATE_FILE).items() if k != "sha256"}
    raise FileNotFoundError(f"No checkpoint at {path} (expected a directory with {STATE_FILE}).")


def check_resumable(trainer, state: dict, where) -> None:
    """Refuse, in one line, to resume `trainer` from a checkpoint's `state` saved with another base policy or another
    config: the weights, optimiser (its learning rate included) and β would be the saved run's while the reference
    and the settings were this trainer's, a mix no run ever had."""
    saved_id, mine = state.get("model_id", "unknown"), getattr(trainer, "model_id", "unknown")
    if "unknown" not in (saved_id, mine) and saved_id != mine:
        raise ValueError(f"{where} was saved from the policy {saved_id!r}, not {mine!r}: resume with the model it "
                         "started from (its reference is that model).")
    saved, current = state.get("config"), json.loads(json.dumps(trainer.config.to_dict()))
    if saved is not None and saved != current:
        fields = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise ValueError(f"{where} was saved with another config ({', '.join(fields)} differ): resume with the saved "
                         "one (config=None), or start a new run from its weights.")


def load_trainer(trainer, path_or_checkpoint):
    """Restore what `save_trainer` wrote into `trainer` (built with the same base policy and config: `check_resumable`);
    returns it."""
    acc, model = trainer.accelerator, unwrap(trainer.accelerator, trainer.model)
    if isinstance(path_or_checkpoint, Checkpoint) or not is_sharded_checkpoint(saved_state(path_or_checkpoint)):
        ckpt = path_or_checkpoint if isinstance(path_or_checkpoint, Checkpoint) else load_checkpoint(path_or_checkpoint)
        check_resumable(trainer, ckpt.state, ckpt.path)
        if ckpt.optimizer is None:
            raise ValueError(f"{ckpt.path} holds weights without the optimizer state, so a run cannot resume from it "
                             "(an RLHFRun keeps that state for its last completed iteration only: reopen the run with "
                             "RLHFRun.open). To start from these weights: load_trainable_state_dict(policy, "
                             "load_checkpoint(path).tensors), from rlhf_lab.core.checkpoint.")
        if is_deepspeed(acc):
            load_whole_state(trainer.model, named_whole_state(trainer.model, ckpt.tensors, ckpt.optimizer),
                             ckpt.optimizer["param_groups"])
        elif trainer.sharded:  # a one-process (or DDP) checkpoint: each process takes its part of every tensor
            load_parts(model, trainer.optimizer, named_parts(model, trainer.optimizer, ckpt.tensors, ckpt.optimizer),
                       ckpt.optimizer["param_groups"], whole=True)
        else:
            load_trainable_state_dict(model, ckpt.tensors)
            trainer.optimizer.load_state_dict(ckpt.optimizer)
        state, rng = ckpt.state, ckpt.rng
    else:
        ckpt = open_sharded_checkpoint(path_or_checkpoint)
        check_resumable(trainer, ckpt.state, path_or_checkpoint)
        same = trainer.sharded and not is_deepspeed(acc) and ckpt.world_size == acc.num_processes
        tensors = ckpt.part(acc.process_index) if same else ckpt.full_tensors()
        if is_deepspeed(acc):
            load_whole_state(trainer.model, tensors, ckpt.state["optimizer_groups"])
        else:
            load_parts(model, trainer.optimizer, tensors, ckpt.state["optimizer_groups"], whole=not same)
        state, rng = ckpt.state, rng_from_json(ckpt.rank_state(acc.process_index if same else 0)["rng"])
    if hasattr(trainer, "kl_ctl"):
        trainer.kl_ctl.value = state["kl_coef"]
        trainer.constraint.value = state.get("cost_lambda", trainer.constraint.value)
    for name, value in state.get("counters", {}).items():
        setattr(trainer, name, value)
    trainer.update_ = state["update"]
    trainer.history.load_state_dict(state["history"])
    if hasattr(trainer, "provenance"):
        trainer.provenance = dict(state.get("provenance", {}))
    if rng is not None:
        set_rng_state(rng)
    return trainer
