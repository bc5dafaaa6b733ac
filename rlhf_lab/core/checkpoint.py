"""Checkpoints written atomically: a checkpoint directory is either complete or absent, never half written.

    save_checkpoint("runs/ppo/last", tensors=..., optimizer=opt.state_dict(), state={...})
    ckpt = load_checkpoint("runs/ppo/last")       # .tensors, .optimizer, .rng, .state

A checkpoint is written with `core.files.atomic_directory`: complete or absent. A crash in the middle of replacing
an older checkpoint leaves the old one aside under a hidden name, and `load_checkpoint` falls back to it.

Files: model.safetensors (the trainable tensors only: all weights for full fine-tuning, the LoRA adapters and value
head with LoRA), optimizer.pt (read with `weights_only=True`), rng.json (Python, NumPy, torch CPU and CUDA
generator states as plain numbers: a checkpoint someone else made cannot run code when loaded), state.json (config,
update count, KL coefficient, metrics history: everything else needed to resume exactly; and the SHA-256 of every
other file, verified on load, so flipped bytes never load silently). A PPO run with LoRA also
writes adapter/ in peft's own format (`PeftModel.from_pretrained(base, ckpt / "adapter")`).

`drop_optimizer_state` deletes optimizer.pt and keeps the weights (an `RLHFRun` does it for every iteration but its
last completed one: AdamW's state is twice the weights); such a checkpoint loads with `optimizer` None.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhf_lab.core.files import (SaveKind, atomic_directory, ensure_free_space, existing_or_aside, read_json,
                                 verify_digests, write_atomic, write_manifest)

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "rng_to_json",
           "rng_from_json", "trainable_state_dict", "load_trainable_state_dict", "drop_optimizer_state", "tensor_bytes"]

MODEL_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE = "model.safetensors", "optimizer.pt", "rng.json", "state.json"
FORMAT_VERSION = 1
CHECKPOINT = SaveKind(STATE_FILE, "a checkpoint", "checkpoint")  # what `save_checkpoint` replaces: only its own kind
OPTIMIZER_DROPPED = "optimizer_dropped"


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns."""

    path: Path
    tensors: dict[str, torch.Tensor]
    optimizer: dict | None
    rng: dict | None
    state: dict


def rng_state() -> dict:
    """The global generators' states: Python, NumPy, torch CPU and (when initialised) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_to_json(state: dict) -> dict:
    """`rng_state()` as JSON-able numbers (no pickle: loading it can never run code)."""
    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    out = {"python": [version, list(internal), gauss], "numpy": [kind, np.asarray(keys).tolist(), int(pos),
                                                                  int(has_gauss), float(cached)],
           "torch": state["torch"].tolist()}
    if "cuda" in state:
        out["cuda"] = [s.tolist() for s in state["cuda"]]
    return out


def rng_from_json(data: dict) -> dict:
    """The inverse of `rng_to_json`."""
    version, internal, gauss = data["python"]
    kind, keys, pos, has_gauss, cached = data["numpy"]
    state = {"python": (version, tuple(internal), gauss),
             "numpy": (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
             "torch": torch.tensor(data["torch"], dtype=torch.uint8)}
    if "cuda" in data:
        state["cuda"] = [torch.tensor(s, dtype=torch.uint8) for s in data["cuda"]]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, tensors: dict[str, torch.Tensor], state: dict,
                    optimizer: dict | None = None, rng: dict | None = None, extra=None) -> Path:
    """Write a checkpoint atomically to `path` (a directory: a previous checkpoint there is replaced; a folder with
    other files in it, or a file, is refused before anything is written). `state` must be JSON-able;
    `extra(directory)`, when given, writes more files into the checkpoint before it is published."""
    path = Path(path)
    ensure_free_space(path.parent, tensor_bytes(tensors) + tensor_bytes(optimizer), f"the checkpoint {path}")
    with atomic_directory(path, kind=CHECKPOINT) as tmp:
        if extra is not None:
            extra(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / MODEL_FILE))
        if optimizer is not None:
            torch.save(optimizer, tmp / OPTIMIZER_FILE)
        (tmp / RNG_FILE).write_text(json.dumps(rng_to_json(rng if rng is not None else rng_state())))
        write_manifest(tmp, STATE_FILE, {"format": FORMAT_VERSION, **state})
    return path


def tensor_bytes(tree) -> int:
    """Bytes of every tensor in a nest of dicts, lists and tuples (a state dict, an optimizer's state)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (falling back to one set aside by an interrupted replace)."""
    path = existing_or_aside(path, STATE_FILE)
    state = read_json(path / STATE_FILE)
    if "shards" in state:
        raise ValueError(f"{path} is a sharded checkpoint (each of {state['shards']} processes wrote its part, under "
                         "FSDP): resume it with the trainer's resume(), which reads the parts, or gathers them for "
                         "another number of processes.")
    if "sha256" in state:  # checkpoints from before checksums load unverified
        verify_digests(path, state.pop("sha256"), "checkpoint")
    kept = (path / OPTIMIZER_FILE).is_file() and not state.get(OPTIMIZER_DROPPED)
    optimizer = torch.load(path / OPTIMIZER_FILE, weights_only=True) if kept else None
    rng = rng_from_json(read_json(path / RNG_FILE)) if (path / RNG_FILE).is_file() else None
    if rng is None and (path / "rng.pt").is_file():  # the older format: a pickle, never unpickled
        warnings.warn(f"{path / 'rng.pt'} is a pickle (written by an older rlhf-lab) and is not loaded (a pickle can "
                      "run code): the run resumes with fresh random generators, so its next samples differ from an "
                      "uninterrupted run's.", stacklevel=2)
    return Checkpoint(path=path, tensors=load_file(str(path / MODEL_FILE)), optimizer=optimizer, rng=rng, state=state)


def drop_optimizer_state(path: str | Path) -> int:
    """Delete the optimizer state (optimizer.pt) of the checkpoint at `path`, keeping its weights, and mark the
    checkpoint so (state.json's "optimizer_dropped", and its checksums without optimizer.pt). Returns the bytes freed:
    0 when there is none (already dropped, or a sharded checkpoint, whose parts hold the moments beside the weights).
    state.json is replaced before the file goes, so a crash between the two leaves a checkpoint that loads."""
    path = Path(path)
    file = path / OPTIMIZER_FILE
    if not file.is_file() or not (path / STATE_FILE).is_file():
        return 0
    state = read_json(path / STATE_FILE)
    if "shards" in state:
        return 0
    if not state.get(OPTIMIZER_DROPPED):
        if "sha256" in state:
            state["sha256"] = {name: digest for name, digest in state["sha256"].items() if name != OPTIMIZER_FILE}
        write_atomic(path / STATE_FILE, json.dumps({**state, OPTIMIZER_DROPPED: True}, indent=1))
    size = file.stat().st_size
    file.unlink()
    return size


def trainable_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name (tied weights once): what training changes."""
    return {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state_dict(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `tensors` into the module's parameters of the same names; every trainable parameter must be there."""
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise KeyError(f"The checkpoint does not fit this model: missing {missing[:5]}, unexpected {unknown[:5]} "
                       "(was it saved with another model, LoRA setting or value head?).")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
