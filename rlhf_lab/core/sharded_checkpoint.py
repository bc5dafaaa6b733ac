"""Sharded checkpoints: every process writes its own part of the tensors; the directory is complete or absent and
holds no pickle.

    save_sharded_checkpoint(path, tensors=mine, layout={name: {"split": "dim0", "shape": whole_shape}, ...},
                            rank_state={...}, state={...}, rank=r, world_size=w, agree=all_ok)   # every process
    ckpt = open_sharded_checkpoint(path)
    tensors = ckpt.part(r)                  # process r's own part (same world size); ckpt.rank_state(r) its JSON
    tensors = ckpt.full_tensors()           # every tensor whole, gathered from the parts (another world size)

Files: rank00000.safetensors, rank00001.safetensors, ... (each process's local part of every tensor),
rank00000.json, ... (that process's own state, e.g. its random generators, and the local shape of each of its
tensors), state.json (written last, by process 0: `{"shards": world size, "tensors": {name: {"shape": global
shape, "split": "dim0" | "none" | "other"}}, ...state, "sha256": {file: digest}}`).

A tensor's "split" says how its parts make the whole: "dim0", FSDP2's layout, is the whole cut along dimension 0 in
rank order as `torch.chunk` cuts it (the last parts may be short or empty); "none", every process holds it whole;
"other" (a 2-D mesh, say) can only be read back by the same number of processes.

Atomicity: process 0 makes a hidden temporary sibling, every process writes its files into it, and process 0
writes the manifest and renames the directory into place (`core.files.publish_directory`); `agree` (a collective
that ANDs every process's success) separates the stages, so a process that fails to write makes every process raise
and nothing is published. The processes must share the file system (one machine, or a shared disk).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlhf_lab.core.checkpoint import CHECKPOINT, tensor_bytes
from rlhf_lab.core.files import (check_replaceable, ensure_free_space, existing_or_aside, publish_directory,
                                 read_json, verify_digests, write_manifest)

__all__ = ["ShardedCheckpoint", "save_sharded_checkpoint", "open_sharded_checkpoint", "is_sharded_checkpoint",
           "local_chunk", "SPLITS"]

STATE_FILE = "state.json"
SPLITS = ("dim0", "none", "other")
FORMAT_VERSION = 1


def _stem(rank: int) -> str:
    return f"rank{rank:05d}"


def is_sharded_checkpoint(state: dict) -> bool:
    """Whether a checkpoint's state.json (as a dict) describes a sharded checkpoint."""
    return "shards" in state


def save_sharded_checkpoint(path: str | Path, *, tensors: dict[str, torch.Tensor], layout: dict[str, dict],
                            rank_state: dict, state: dict, rank: int, world_size: int, agree, extra=None) -> Path:
    """Write this process's part of a sharded checkpoint at `path`; every process calls it with its own `tensors`
    (local parts, the same names everywhere) and `layout` ({name: {"split": one of SPLITS, "shape": the whole
    tensor's shape}}, see the module docstring). `state` is
    JSON (process 0's is kept), `rank_state` this process's JSON; `agree(ok) -> bool` must return True on every
    process when all passed True. `extra(directory)`, on process 0, writes more files before the manifest."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-shards"
    unknown = sorted(name for name, meta in layout.items() if meta.get("split") not in SPLITS)
    if unknown or set(layout) != set(tensors):
        raise ValueError(f"layout must give every tensor a split, one of {SPLITS}; check "
                         f"{unknown or sorted(set(layout) ^ set(tensors))}.")

    def stage(what: str, work) -> None:
        error = None
        try:
            work()
        except Exception as err:  # any failure: the other processes must not wait for this one at the next stage
            error = err
        if not agree(error is None):
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(f"Checkpoint {path}: {'this process' if error else 'another process'} could not {what} "
                          f"({error or 'see its log'}); nothing was published, the previous checkpoint is intact.") \
                from error

    def prepare():
        if rank == 0:
            check_replaceable(path, CHECKPOINT)  # a folder with the user's files in it, or a file: refused here
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f".{path.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()

    def write_part():
        ensure_free_space(tmp, tensor_bytes(tensors), f"process {rank}'s part of the checkpoint {path}")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  str(tmp / f"{_stem(rank)}.safetensors"))
        local = {name: list(t.shape) for name, t in tensors.items()}
        (tmp / f"{_stem(rank)}.json").write_text(json.dumps({"rank": rank, "local_shapes": local, **rank_state}))

    def publish():
        if rank != 0:
            return
        if extra is not None:
            extra(tmp)
        missing = [r for r in range(world_size) if not (tmp / f"{_stem(r)}.safetensors").is_file()]
        if missing:
            raise OSError(f"the parts of processes {missing} are missing (do the processes share this disk?)")
        tensors_meta = {name: {"shape": list(layout[name]["shape"]), "split": layout[name]["split"]}
                        for name in sorted(layout)}
        write_manifest(tmp, STATE_FILE, {"format": FORMAT_VERSION, "shards": world_size, "tensors": tensors_meta,
                                         **state})
        publish_directory(tmp, path, kind=CHECKPOINT)

    stage("prepare the directory", prepare)
    stage("write its part", write_part)
    stage("publish the checkpoint", publish)
    return path


@dataclass
class ShardedCheckpoint:
    """A sharded checkpoint on disk (`open_sharded_checkpoint`); its parts are read, and verified, on demand."""

    path: Path
    state: dict  # the manifest: "shards", "tensors" and the trainer's state, without the digests
    digests: dict[str, str]

    @property
    def world_size(self) -> int:
        return int(self.state["shards"])

    def _file(self, rank: int, suffix: str) -> Path:
        """Process `rank`'s file, checked against its SHA-256."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"{self.path} has parts for ranks 0-{self.world_size - 1}, not {rank}.")
        name = f"{_stem(rank)}{suffix}"
        verify_digests(self.path, {name: self.digests.get(name, "not recorded")}, "checkpoint")
        return self.path / name

    def part(self, rank: int) -> dict[str, torch.Tensor]:
        """The tensors process `rank` wrote (its parts)."""
        return load_file(str(self._file(rank, ".safetensors")))

    def rank_state(self, rank: int) -> dict:
        """The JSON state process `rank` wrote (`rank_state` of `save_sharded_checkpoint`)."""
        state = read_json(self._file(rank, ".json"))
        return {k: v for k, v in state.items() if k not in ("rank", "local_shapes")}

    def full_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor whole, gathered from all parts (for another number of processes, or one)."""
        parts = [self.part(rank) for rank in range(self.world_size)]
        out = {}
        for name, meta in self.state["tensors"].items():
            if meta["split"] == "none":
                out[name] = parts[0][name]
            elif meta["split"] == "dim0":
                out[name] = torch.cat([part[name] for part in parts]) if parts[0][name].dim() else parts[0][name]
            else:
                raise ValueError(f"{self.path} was saved by {self.world_size} processes with {name!r} split in a way "
                                 f"that cannot be regathered: resume it with {self.world_size} processes.")
            if list(out[name].shape) != meta["shape"]:
                raise ValueError(f"{self.path}: the parts of {name!r} make shape {list(out[name].shape)}, not "
                                 f"{meta['shape']}: the checkpoint is damaged; use another copy.")
        return out


def open_sharded_checkpoint(path: str | Path) -> ShardedCheckpoint:
    """The sharded checkpoint at `path` (or the copy an interrupted replace set aside); its manifest is read, the
    parts are not."""
    path = existing_or_aside(path, STATE_FILE)
    state = read_json(path / STATE_FILE)
    if not is_sharded_checkpoint(state):
        raise ValueError(f"{path} is not a sharded checkpoint (it was written by one process or under DDP).")
    return ShardedCheckpoint(path=path, digests=state.pop("sha256", {}), state=state)


def local_chunk(whole: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
    """Process `rank`'s part of `whole` split along dimension 0 the way FSDP2 splits it: `torch.chunk` into
    `world_size` parts, the missing last ones empty."""
    chunks = list(torch.chunk(whole, world_size, dim=0))
    chunks += [whole[:0]] * (world_size - len(chunks))
    return chunks[rank]
