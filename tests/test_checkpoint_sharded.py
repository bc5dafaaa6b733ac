"""Sharded checkpoints (`core.sharded_checkpoint`), written by two "processes" (threads meeting at a barrier, as the
trainers' processes meet at a collective): each writes its part, the whole is published complete or not at all, the
parts are checked on load and regather into the whole tensors."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from rlhf_lab.core import sharded_checkpoint
from rlhf_lab.core.checkpoint import load_checkpoint
from rlhf_lab.core.sharded_checkpoint import local_chunk, open_sharded_checkpoint, save_sharded_checkpoint

WHOLE = torch.arange(15, dtype=torch.float32).reshape(5, 3)  # 5 rows: parts of 3 and 2 rows


class Barrier:
    """`agree(ok)` for n threads: True on every thread when every thread passed True."""

    def __init__(self, n: int):
        self.n, self.votes, self.barrier, self.lock = n, [], threading.Barrier(n), threading.Lock()

    def agree(self, ok: bool) -> bool:
        with self.lock:
            self.votes.append(ok)
        self.barrier.wait()
        verdict = all(self.votes[-self.n:])
        self.barrier.wait()  # everyone has read the verdict before the next stage votes
        return verdict


def save_two_parts(path, step: float = 0.0, fail_rank: int | None = None, monkeypatch=None) -> list:
    """Save WHOLE + step split along dim 0 between ranks 0 and 1 (and a scalar both hold); return each thread's
    exception or None."""
    barrier, errors = Barrier(2), [None, None]

    def work(rank):
        tensors = {"w": local_chunk(WHOLE + step, 2, rank), "step": torch.tensor(7.0 + step)}
        layout = {"w": {"split": "dim0", "shape": [5, 3]}, "step": {"split": "none", "shape": []}}
        try:
            save_sharded_checkpoint(path, tensors=tensors, layout=layout, rank_state={"rng": [rank]},
                                    state={"update": int(step)}, rank=rank, world_size=2, agree=barrier.agree)
        except OSError as err:
            errors[rank] = err

    if fail_rank is not None:
        real = sharded_checkpoint.save_file

        def failing(tensors, filename, *args, **kwargs):
            if f"rank{fail_rank:05d}" in str(filename):
                raise OSError(28, "No space left on device")
            return real(tensors, filename, *args, **kwargs)

        monkeypatch.setattr(sharded_checkpoint, "save_file", failing)
    threads = [threading.Thread(target=work, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_each_rank_writes_its_part_and_the_parts_regather(tmp_path):
    path = tmp_path / "ckpt"
    assert save_two_parts(path) == [None, None]
    assert sorted(p.name for p in path.iterdir()) == ["rank00000.json", "rank00000.safetensors", "rank00001.json",
                                                      "rank00001.safetensors", "state.json"]
    ckpt = open_sharded_checkpoint(path)
    assert ckpt.world_size == 2 and ckpt.state["update"] == 0
    assert ckpt.state["tensors"] == {"step": {"shape": [], "split": "none"}, "w": {"shape": [5, 3], "split": "dim0"}}
    assert torch.equal(ckpt.part(0)["w"], WHOLE[:3]) and torch.equal(ckpt.part(1)["w"], WHOLE[3:])
    assert ckpt.rank_state(1) == {"rng": [1]}
    whole = ckpt.full_tensors()
    assert torch.equal(whole["w"], WHOLE) and float(whole["step"]) == 7.0
    assert not list(tmp_path.glob(".ckpt.*"))  # no temporary directory left behind


def test_local_chunk_splits_as_fsdp2_does():
    assert [local_chunk(WHOLE, 2, r).shape[0] for r in (0, 1)] == [3, 2]
    assert [local_chunk(WHOLE[:1], 2, r).shape for r in (0, 1)] == [torch.Size([1, 3]), torch.Size([0, 3])]
    assert torch.equal(torch.cat([local_chunk(WHOLE, 4, r) for r in range(4)]), WHOLE)


def test_a_rank_that_cannot_write_publishes_nothing_and_the_old_checkpoint_stays(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save_two_parts(path, step=1.0)
    errors = save_two_parts(path, step=2.0, fail_rank=1, monkeypatch=monkeypatch)
    assert all(isinstance(err, OSError) for err in errors)  # both ranks raise, not just the one that failed
    assert "nothing was published" in str(errors[0]) and "another process" in str(errors[0])
    assert "No space left" in str(errors[1])
    ckpt = open_sharded_checkpoint(path)
    assert ckpt.state["update"] == 1 and torch.equal(ckpt.full_tensors()["w"], WHOLE + 1)
    assert not list(tmp_path.glob(".ckpt.*"))


def test_flipped_bytes_in_a_part_do_not_load(tmp_path):
    path = tmp_path / "ckpt"
    save_two_parts(path)
    data = bytearray((path / "rank00001.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "rank00001.safetensors").write_bytes(data)
    ckpt = open_sharded_checkpoint(path)
    assert torch.equal(ckpt.part(0)["w"], WHOLE[:3])  # rank 0's part is intact
    for read in (lambda: ckpt.part(1), ckpt.full_tensors):
        with pytest.raises(ValueError, match="rank00001.safetensors does not match the checksum"):
            read()


def test_parts_split_another_way_are_not_regathered(tmp_path):
    path = tmp_path / "ckpt"
    save_two_parts(path)
    manifest = json.loads((path / "state.json").read_text())
    manifest["tensors"]["w"]["split"] = "other"
    (path / "state.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="resume it with 2 processes"):
        open_sharded_checkpoint(path).full_tensors()


def test_a_bad_layout_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="split"):
        save_sharded_checkpoint(tmp_path / "ckpt", tensors={"w": WHOLE}, layout={"w": {"split": "rows"}},
                                rank_state={}, state={}, rank=0, world_size=1, agree=lambda ok: ok)
    assert not list(tmp_path.iterdir())


def test_the_one_process_loader_points_to_resume(tmp_path):
    save_two_parts(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="sharded checkpoint .* resume"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        open_sharded_checkpoint(tmp_path / "missing")
