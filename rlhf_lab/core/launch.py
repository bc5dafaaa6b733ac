"""The engine a launcher asked for (`accelerate launch --config_file configs/accelerate/<x>.yaml`, or torchrun),
honoured on every machine, or refused in one line.

`core.hf.make_accelerator` builds every trainer's Accelerator with `cpu=launched_on_cpu()` and passes it through
`honour_launch`:

* Several processes on a machine without a GPU run on the CPU over gloo. Without `cpu=True` accelerate 1.16 would
  run each process alone (DistributedType.NO) unless the launch also set ACCELERATE_USE_CPU=true.
* FSDP on the CPU: accelerate turns a launch's FSDP settings into DistributedType.FSDP only on accelerator devices
  (`AcceleratorState` converts MULTI_GPU, MULTI_XPU, ... but never MULTI_CPU) and otherwise trains with DDP, saying
  nothing. torch's `fully_shard` (FSDP2) runs on the CPU over gloo, so here the launcher's FSDP2 plugin (its FSDP_*
  variables) is switched on: the same sharding, wrapping and state-dict settings as on GPUs, with 2 CPU processes in
  the tests.
* Mixed precision under FSDP2 is what it is in every rlhf-lab trainer: float32 weights, gradients (reduced in
  float32) and optimiser state, bf16 autocast compute. accelerate would give FSDP2 a MixedPrecisionPolicy instead
  (weights gathered and computed in bf16, gradients reduced in bf16) and no autocast, which the trainers' float32
  value head does not run under; it is switched off here, so FSDP2 computes the same numbers as DDP.
* DeepSpeed ZeRO (stages 2 and 3) on the CPU: DeepSpeed sets up gloo across the launched processes, but accelerate
  1.16 counts one process there (its device probe finds no accelerator, so its backend stays None) and every
  process would believe itself the main one; the counts are set from torch.distributed here. The trainers drive
  DeepSpeed's engine themselves (`train.deepspeed_engine`).
* FSDP version 1 is refused with a line that names the config to use instead.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from rlhf_lab.core.errors import SetupError

__all__ = ["launched_processes", "launched_on_cpu", "launched_deepspeed", "honour_launch", "is_sharded"]

CONFIGS = "configs/accelerate"


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 in a notebook or under plain `python`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_on_cpu() -> bool:
    """Whether this is one of several launched processes on a machine with no GPU (or other accelerator)."""
    if launched_processes() < 2:
        return False
    probe = getattr(torch, "accelerator", None)
    return not (probe.is_available() if probe is not None else torch.cuda.is_available())


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def launched_deepspeed() -> bool:
    """Whether the launch asked for DeepSpeed (`accelerate launch` with a deepspeed_*.yaml config); raises SetupError
    when DeepSpeed is not installed. (Then accelerate must not be told `cpu=True`: it would quietly drop DeepSpeed.)"""
    if not _flag("ACCELERATE_USE_DEEPSPEED"):
        return False
    if importlib.util.find_spec("deepspeed") is None:
        raise SetupError("This launch asks for DeepSpeed, which is not installed: pip install --no-build-isolation "
                         f"deepspeed (it builds against the torch you have), or launch with {CONFIGS}/fsdp2.yaml.")
    return True


def honour_launch(accelerator: Accelerator) -> Accelerator:
    """`accelerator`, running the engine the launch described (see the module docstring); raises SetupError for an
    engine the trainers do not run under, and when accelerate would train each launched process alone."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        if accelerator.num_processes == 1 and torch.distributed.is_initialized():
            for state in (PartialState(), accelerator.state):  # accelerate's counts on a CPU (module docstring)
                state.num_processes = torch.distributed.get_world_size()
                state.process_index = torch.distributed.get_rank()
                state.local_process_index = int(os.environ.get("LOCAL_RANK", "0"))
                state.backend = torch.distributed.get_backend()
    if _flag("ACCELERATE_USE_FSDP") or accelerator.distributed_type == DistributedType.FSDP:
        version = accelerator.state.fsdp_plugin.fsdp_version if accelerator.distributed_type == DistributedType.FSDP \
            else int(os.environ.get("FSDP_VERSION", "1"))
        if version != 2:
            raise SetupError(f"FSDP version {version} is not supported (the trainers read FSDP2's sharded "
                             f"parameters): set fsdp_version: 2 in the config, as {CONFIGS}/fsdp2.yaml does.")
        if accelerator.distributed_type == DistributedType.MULTI_CPU:
            accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
            accelerator.state.distributed_type = DistributedType.FSDP
            PartialState().distributed_type = DistributedType.FSDP
        if accelerator.distributed_type == DistributedType.FSDP:  # (one launched process runs without FSDP)
            accelerator.state.fsdp_plugin.mixed_precision_policy = None  # bf16 is autocast, as everywhere
    if launched_processes() > 1 and accelerator.num_processes == 1:
        raise SetupError(f"{launched_processes()} processes were launched but accelerate runs "
                         f"{accelerator.num_processes} (each would train alone): on a machine without a GPU set "
                         "ACCELERATE_USE_CPU=true, or launch one process.")
    return accelerator


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether each process holds a part of every prepared weight: FSDP2's shards (DTensors) or DeepSpeed ZeRO-3's
    partitions. Then sampling reads a gathered whole copy (`train.sharding.FullWeights`)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        zero = accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
        return int(zero.get("stage", 0)) == 3
    return bool(getattr(accelerator, "is_fsdp2", False))
