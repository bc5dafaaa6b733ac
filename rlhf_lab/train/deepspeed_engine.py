"""What the trainers do differently under DeepSpeed ZeRO: their backward and optimiser steps, and their checkpoints.

    model, optimizer = prepare(accelerator, model, optimizer, micro_batch=4, accumulation=2, max_grad_norm=1.0)
    backward(accelerator, model, loss, boundary=last_micro_batch)       # every micro-batch
    grad_norm = optimizer_step(accelerator, model, optimizer, 1.0, check)  # once per minibatch
    tensors, optimizer_state = whole_state(model)                      # every process calls (ZeRO-3 gathers)
    load_whole_state(model, named_whole_state(model, tensors, optimizer_state), optimizer_state["param_groups"])

In one process, under DDP or FSDP2 these are accelerate's `prepare` and `backward`, its `clip_grad_norm_` and the
optimiser's `step` and `zero_grad`. Under DeepSpeed the trainers drive its engine themselves: accelerate's backward
would step the optimiser inside every backward it marks as a sync boundary, and the trainers accumulate their own
micro-batches. So the engine is told which micro-batch ends a minibatch (`set_gradient_accumulation_boundary`), its
backward does not divide the loss again (the trainers already scale it), and `engine.step()` clips the gradients to
`max_grad_norm` (written into DeepSpeed's config before the engine is built), steps AdamW and zeroes the gradients.
DeepSpeed knows the gradient norm only after that step, so a non-finite norm stops the run with the step taken
(elsewhere before it); the run's last checkpoint is from before.

A checkpoint under DeepSpeed holds whole tensors, as one process's does: `whole_state` gathers every trainable weight
(float32) and its AdamW state (exp_avg, exp_avg_sq, step) in the layout of `torch.optim.AdamW.state_dict()`. The
main process writes it in the one-process format (`core.checkpoint`: weights in safetensors, the optimiser read back
with weights_only; DeepSpeed's own checkpoints are pickles), and it resumes in one process, under DDP, FSDP2 or
DeepSpeed at any stage and number of processes. All trainers use one parameter group.
"""

from __future__ import annotations

import torch
from accelerate.utils import DistributedType

BUCKETS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size")
BUCKET_ELEMENTS = 5_000_000
"""DeepSpeed's buffers for reducing gradients and gathering weights, in elements: 20 MB in float32, about DDP's 25 MB
bucket. DeepSpeed's defaults (5e8, 5e8 and 5e7 elements) are sized for billions of parameters: under ZeRO-2 the
reduce buffer alone would take 2 GB, more than SmolLM2-135M's weights, gradients and AdamW state together."""

__all__ = ["is_deepspeed", "unwrap", "prepare", "backward", "optimizer_step", "whole_state", "named_whole_state",
           "load_whole_state"]


def is_deepspeed(accelerator) -> bool:
    """Whether the trainer's model is a DeepSpeed engine."""
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def unwrap(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The trainer's own module inside what `prepare` returned: accelerate's `unwrap_model` under DeepSpeed, and
    elsewhere the same unwrapping (DDP, FSDP1 and torch.compile wrappers) without it: `unwrap_model` imports DeepSpeed
    wherever it is installed, which takes a second and prints a warning into every run on a machine without a GPU."""
    if is_deepspeed(accelerator):
        return accelerator.unwrap_model(model)
    wrappers: tuple[type, ...] = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrappers += (FullyShardedDataParallel,)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's wrapper
            model = model._orig_mod
        else:
            return model


def prepare(accelerator, model, optimizer, micro_batch: int, accumulation: int, max_grad_norm: float):
    """accelerate's `prepare(model, optimizer)`; under DeepSpeed with its config's batch sizes (rows per micro-batch
    in each process, micro-batches per optimiser step) and gradient clipping set from the trainer's config."""
    if is_deepspeed(accelerator):
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=accumulation,
                      train_batch_size=micro_batch * accumulation * accelerator.num_processes,
                      gradient_clipping=max_grad_norm, zero_allow_untested_optimizer=True)
        zero = config.setdefault("zero_optimization", {})
        zero.update({key: BUCKET_ELEMENTS for key in BUCKETS if zero.get(key, "auto") == "auto"})  # unless set
    try:
        return accelerator.prepare(model, optimizer)
    except ValueError as err:  # FSDP2's wrap plan names a layer class this model lacks: say which classes it has
        if "Could not find the transformer layer class" not in str(err):
            raise
        layers = sorted({type(layer).__name__ for module in model.modules() if isinstance(module, torch.nn.ModuleList)
                         for layer in module})
        raise ValueError(f"{err} Its repeated layers are {', '.join(layers) or 'none'}: name the decoder layer's class "
                         "in fsdp_transformer_layer_cls_to_wrap (configs/accelerate/fsdp2.yaml) or pass "
                         f"--fsdp_transformer_layer_cls_to_wrap {layers[0] if layers else 'CLASS'} to accelerate "
                         "launch.") from None


def backward(accelerator, model, loss: torch.Tensor, boundary: bool = True) -> None:
    """Backpropagate one micro-batch's `loss` (already scaled by the trainer); `boundary`: the last micro-batch before
    an optimiser step (DeepSpeed reduces the gradients there)."""
    if is_deepspeed(accelerator):
        model.set_gradient_accumulation_boundary(boundary)
        model.backward(loss, scale_wrt_gas=False)
    else:
        accelerator.backward(loss)


def optimizer_step(accelerator, model, optimizer, max_grad_norm: float, check=None) -> torch.Tensor:
    """Clip the accumulated gradients to `max_grad_norm`, step and zero them; `check(norm)`, if given, sees the
    gradient norm (before the step; under DeepSpeed after it) and may raise. Returns the norm. Under fp16 with loss
    scaling, gradients that overflowed (a non-finite norm) are the scaler's business, not a divergence: the step is
    skipped, the scale halved and `check` not called, until the scale falls below 1."""
    check = check or (lambda norm: None)
    if is_deepspeed(accelerator):
        model.step()
        norm = torch.as_tensor(model.get_global_grad_norm(), dtype=torch.float32)
        check(norm)
        return norm
    scaler = getattr(accelerator, "scaler", None)  # fp16's loss scaler (accelerate makes one on a GPU)
    scale = scaler.get_scale() if scaler is not None else None
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)  # unscales fp16's gradients first
    if scale is None or scale < 1.0 or torch.isfinite(norm).all():
        check(norm)  # a non-finite norm at a loss scale below 1 is no overflow: the run diverged
    optimizer.step()  # under fp16, skipped when the gradients overflowed (the scaler then halves its scale)
    optimizer.zero_grad(set_to_none=True)
    return norm


def _trainable(engine) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in engine.module.named_parameters() if p.requires_grad]


def _adamw_state(engine) -> torch.optim.Optimizer:
    """The AdamW that ZeRO steps on its flat float32 partitions, with its state made where it has none yet (what
    AdamW's first step would make: step 0, zero moments) and linked to each parameter's part of it."""
    zero = engine.optimizer
    adamw = zero.optimizer
    group = adamw.param_groups[0]
    flats = getattr(zero, "fp32_partitioned_groups_flat", None) or [p for g in adamw.param_groups for p in g["params"]]
    for flat in flats:  # (ZeRO-3 puts its sub-groups into AdamW's param group one at a time, as it steps them)
        if "exp_avg" not in adamw.state[flat]:
            step_device = flat.device if group.get("fused") or group.get("capturable") else "cpu"
            adamw.state[flat] = {"step": torch.zeros((), dtype=torch.float32, device=step_device),
                                 "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
    if hasattr(zero, "single_partition_of_fp32_groups"):  # ZeRO 1 and 2: each parameter's view of the flat state
        from deepspeed.utils import lazy_init_hp_params_optimizer_state

        for lp_params, flat in zip(zero.bit16_groups, zero.single_partition_of_fp32_groups):
            lazy_init_hp_params_optimizer_state(lp_params, flat, adamw.state)
    return adamw


def whole_state(engine) -> tuple[dict[str, torch.Tensor], dict]:
    """({name: whole float32 weight}, AdamW state_dict over the same parameters in that order) of a DeepSpeed engine's
    trainable parameters, on the CPU. Every process must call this (the parts are gathered)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    adamw = _adamw_state(engine)
    step = next(iter(adamw.state.values()))["step"].detach().cpu().clone()
    tensors, state = {}, {}
    for index, (name, param) in enumerate(_trainable(engine)):
        tensors[name] = safe_get_full_fp32_param(param).detach().cpu().clone()
        state[index] = {"step": step.clone(), **{key: safe_get_full_optimizer_state(param, key).detach().cpu().clone()
                                                  for key in ("exp_avg", "exp_avg_sq")}}
    hyper = {key: value for key, value in adamw.param_groups[0].items() if key != "params"}
    return tensors, {"state": state, "param_groups": [{**hyper, "params": list(state)}]}


def named_whole_state(engine, tensors: dict[str, torch.Tensor], optimizer_state: dict) -> dict[str, torch.Tensor]:
    """A one-process checkpoint's `tensors` and AdamW state_dict (keyed by the index of each trainable parameter in
    the model's order) as {"model/<name>": weight, "optimizer/<name>/<key>": state}, `load_whole_state`'s input (a
    sharded checkpoint's `full_tensors()` is already in this form)."""
    named, moments = {f"model/{name}": tensor for name, tensor in tensors.items()}, optimizer_state["state"]
    for index, (name, _) in enumerate(_trainable(engine)):
        saved = moments.get(index, moments.get(str(index), {}))
        named.update({f"optimizer/{name}/{key}": value for key, value in saved.items()})
    return named


def _set_whole(param, value: torch.Tensor, key: str | None = None) -> None:
    """Set a parameter's float32 master weight (key None; and the weight the model computes with) or its AdamW state
    `key` from the whole tensor `value`. ZeRO-3 holds each process's slice of the flattened tensor, padded to a
    multiple of the processes (DeepSpeed 0.19's own setter of whole tensors fails where there is padding)."""
    from deepspeed.utils import (
        safe_set_full_fp32_param,
        safe_set_full_optimizer_state,
        safe_set_local_fp32_param,
        safe_set_local_optimizer_state,
    )

    if not hasattr(param, "ds_id"):  # ZeRO 1 and 2: whole weights in every process
        if key is None:
            safe_set_full_fp32_param(param, value)
            param.data.copy_(value.to(param.dtype))
        else:
            safe_set_full_optimizer_state(param, value, key)
        return
    size, rank = param.ds_tensor.numel(), torch.distributed.get_rank()
    padded = value.new_zeros(size * torch.distributed.get_world_size())
    padded[:value.numel()] = value.flatten()
    local = padded[rank * size:(rank + 1) * size]
    if key is None:
        safe_set_local_fp32_param(param, local)
        param.ds_tensor.data.copy_(local.to(param.ds_tensor.dtype))
    else:
        safe_set_local_optimizer_state(param, local, key)


@torch.no_grad()
def load_whole_state(engine, named: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    """Put whole tensors ({"model/<name>": weight, "optimizer/<name>/<key>": AdamW state}, see `named_whole_state`)
    back into a DeepSpeed engine built with the same trainable parameters: the weights (ZeRO's float32 master copy
    and the weights the model computes with), AdamW's moments, step and hyper-parameters. Every process must call
    this."""
    trainable = _trainable(engine)
    missing = [name for name, _ in trainable if f"model/{name}" not in named]
    unknown = [key for key in named if key.startswith("model/") and key[6:] not in dict(trainable)]
    if missing or unknown:
        raise KeyError(f"The checkpoint does not fit this model: missing {missing[:5]}, unexpected {unknown[:5]} "
                       "(was it saved with another model, LoRA setting or value head?).")
    adamw = _adamw_state(engine)
    for name, param in trainable:
        value = named[f"model/{name}"].to(param.device, torch.float32)
        _set_whole(param, value)
        for key in ("exp_avg", "exp_avg_sq"):
            if f"optimizer/{name}/{key}" in named:  # absent before the first step
                _set_whole(param, named[f"optimizer/{name}/{key}"].to(param.device, torch.float32), key)
    steps = [named[key] for key in named if key.startswith("optimizer/") and key.endswith("/step")]
    for flat_state in adamw.state.values():
        flat_state["step"].fill_(float(steps[0]) if steps else 0.0)
    hyper = {key: value for key, value in param_groups[0].items() if key in ("lr", "betas", "eps", "weight_decay")}
    for group in adamw.param_groups:
        group.update(hyper)
