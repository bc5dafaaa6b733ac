"""The trainers' tensors under FSDP2, where each process holds a part (a DTensor shard) of every parameter (and
sampling's whole copy under DeepSpeed ZeRO-3, whose parameters are partitioned too).

    copy = FullWeights(policy, device)                  # taken before accelerate shards the policy
    generate(copy.refresh(sharded_policy), ...)          # every process gathers the whole weights, then samples alone
    tensors, layout, groups = local_parts(model, optimizer)         # this process's parts, for a checkpoint
    load_parts(model, optimizer, tensors, groups, whole=False)      # ... and back (whole=True: from whole tensors)

Sampling reads a plain copy of the policy: under FSDP2 every forward of a layer gathers its parameters from all
processes, and each process decodes its own number of tokens (its replies end at other lengths), so sampling from
the sharded policy would put the processes' gathers out of step. The copy costs one policy's weights per process,
refreshed at every rollout by one all-gather per tensor; with LoRA it also serves as the reference (its adapters
switched off). The same functions work on a model that is not sharded (every part is the whole tensor).

Checkpoint names: "model/<parameter>" for each trainable parameter, "optimizer/<parameter>/<state>" (exp_avg, step,
...) for its optimiser state; optimiser hyperparameters (param_groups) are JSON.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, Replicate, Shard

from rlhf_lab.core.sharded_checkpoint import local_chunk

__all__ = ["FullWeights", "local_parts", "load_parts", "named_parts"]


class FullWeights:
    """A plain (unsharded) copy of a module, on `device`, refreshed from the module's shards by `refresh`."""

    def __init__(self, module: nn.Module, device):
        self.module = copy.deepcopy(module).to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def refresh(self, sharded: nn.Module) -> nn.Module:
        """Copy `sharded`'s current weights in (every process must call this: each DTensor is gathered) and return
        the copy."""
        mine, theirs = dict(self.module.named_parameters()), dict(sharded.named_parameters())
        if mine.keys() != theirs.keys():
            raise RuntimeError("The policy's parameters changed names since its copy for sampling was taken.")
        if any(hasattr(param, "ds_id") for param in theirs.values()):  # DeepSpeed ZeRO-3's partitioned weights
            from deepspeed import zero

            with zero.GatheredParameters(list(theirs.values())):
                for name, param in theirs.items():
                    mine[name].copy_(param)
            return self.module
        for name, param in theirs.items():
            mine[name].copy_(param.full_tensor() if isinstance(param, DTensor) else param)
        return self.module


def _split(tensor) -> str:
    """How a tensor's parts make the whole (`core.sharded_checkpoint.SPLITS`)."""
    if not isinstance(tensor, DTensor) or all(isinstance(p, Replicate) for p in tensor.placements):
        return "none"
    return "dim0" if tuple(tensor.placements) == (Shard(0),) else "other"


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _ordered_names(model: nn.Module, optimizer) -> list[str]:
    """The parameter names in the optimiser's order (the indices of its state_dict)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def local_parts(model: nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict[str, dict], list[dict]]:
    """(tensors, layout, param_groups): this process's part of every trainable parameter and of its optimiser
    state, how each part makes the whole ({name: {"split", "shape"}}), and the optimiser's hyperparameters."""
    tensors, layout = {}, {}

    def add(name, tensor):
        tensors[name] = _local(tensor).detach()
        layout[name] = {"split": _split(tensor), "shape": list(tensor.shape)}

    for name, param in _trainable(model).items():
        add(f"model/{name}", param)
    state = optimizer.state_dict()
    for index, name in enumerate(_ordered_names(model, optimizer)):
        for key, value in state["state"].get(index, {}).items():
            if not torch.is_tensor(value):
                raise TypeError(f"The optimiser keeps a non-tensor {key!r} for {name}; only tensors are saved.")
            add(f"optimizer/{name}/{key}", value)
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, layout, groups


def named_parts(model: nn.Module, optimizer, tensors: dict[str, torch.Tensor], optimizer_state: dict) -> dict:
    """A one-process checkpoint's trainable `tensors` ({parameter: tensor}) and optimiser state dict (keyed by
    index) under `local_parts`' names, for `load_parts(..., whole=True)`."""
    out = {f"model/{name}": t for name, t in tensors.items()}
    for index, name in enumerate(_ordered_names(model, optimizer)):
        out.update({f"optimizer/{name}/{key}": v for key, v in optimizer_state["state"].get(index, {}).items()})
    return out


def _placed(value: torch.Tensor, like: torch.Tensor, whole: bool) -> torch.Tensor:
    """`value` (a part, or with `whole` the whole tensor) as a tensor shaped and placed like `like`."""
    if not isinstance(like, DTensor):
        if tuple(value.shape) != tuple(like.shape):
            raise ValueError(f"shape {tuple(value.shape)} where this model has {tuple(like.shape)}")
        return value
    part = local_chunk(value, like.device_mesh.size(), like.device_mesh.get_local_rank()) \
        if whole and _split(like) == "dim0" else value
    if tuple(part.shape) != tuple(like.to_local().shape):
        raise ValueError(f"a part of shape {tuple(part.shape)} where this process holds {tuple(like.to_local().shape)}")
    return DTensor.from_local(part.to(like.device, like.dtype), like.device_mesh, like.placements, shape=like.shape,
                              stride=like.stride(), run_check=False)


def load_parts(model: nn.Module, optimizer, tensors: dict[str, torch.Tensor], groups: list[dict],
               whole: bool) -> None:
    """Put what `local_parts` returned back into `model` and `optimizer` (built as when it was saved); `whole`:
    `tensors` hold whole tensors (gathered from another number of processes), this process takes its part."""
    params = _trainable(model)
    missing = [n for n in params if f"model/{n}" not in tensors]
    unknown = [n for n in tensors if n.startswith("model/") and n.removeprefix("model/") not in params]
    if missing or unknown:
        raise KeyError(f"The checkpoint does not fit this model: missing {missing[:5]}, unexpected {unknown[:5]} "
                       "(was it saved with another model, LoRA setting or value head?).")
    with torch.no_grad():
        for name, param in params.items():
            try:
                value = _placed(tensors[f"model/{name}"], param, whole)
            except ValueError as err:
                raise ValueError(f"The checkpoint's {name} does not fit this model: {err}.") from None
            _local(param).copy_(_local(value))
    state, everything = {}, dict(model.named_parameters())
    for index, name in enumerate(_ordered_names(model, optimizer)):
        prefix, param = f"optimizer/{name}/", everything[name]
        shaped_like = tuple(param.shape if whole else _local(param).shape)  # moments; "step" is a scalar
        entries = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if entries:
            state[index] = {key: _placed(v, param, whole) if tuple(v.shape) == shaped_like else v
                            for key, v in entries.items()}
    optimizer.load_state_dict({"state": state, "param_groups": groups})
