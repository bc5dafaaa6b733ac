"""rlhf_lab.core.checkpoint: atomic saves (a crash never leaves a half-written checkpoint) and exact PPO resumes."""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

import rlhf_lab.core.checkpoint as checkpoint
import rlhf_lab.core.files as files
from rlhf_lab.core.checkpoint import (drop_optimizer_state, load_checkpoint, load_trainable_state_dict, rng_state,
                                      save_checkpoint, set_rng_state, trainable_state_dict)


def save_version(path, version: float):
    return save_checkpoint(path, tensors={"w": torch.full((3,), version)}, state={"version": version},
                           optimizer={"state": {}, "param_groups": [{"lr": version}]})


def hidden_leftovers(path):
    return [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


def test_save_and_load_round_trip(tmp_path):
    path = save_version(tmp_path / "ckpt", 1.0)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.tensors["w"], torch.ones(3)) and ckpt.state["version"] == 1.0
    assert ckpt.optimizer["param_groups"][0]["lr"] == 1.0 and ckpt.state["format"] == checkpoint.FORMAT_VERSION
    save_version(path, 2.0)  # replacing an existing checkpoint
    assert load_checkpoint(path).state["version"] == 2.0 and hidden_leftovers(path) == []


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_version(tmp_path / "ckpt", 1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(checkpoint.torch, "save", crash)  # model.safetensors is written, optimizer.pt is not
    with pytest.raises(KeyboardInterrupt):
        save_version(path, 2.0)
    assert load_checkpoint(path).state["version"] == 1.0
    assert torch.equal(load_checkpoint(path).tensors["w"], torch.ones(3))
    assert hidden_leftovers(path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_first_save_crashing_leaves_nothing_loadable(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_version(tmp_path / "ckpt", 1.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "ckpt")


def test_crash_between_the_two_renames_falls_back_to_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_version(tmp_path / "ckpt", 1.0)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old checkpoint is set aside; the process dies before the new one moves in
            raise SystemExit("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(SystemExit):
        save_version(path, 2.0)
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert not path.exists() and load_checkpoint(path).state["version"] == 1.0
    save_version(path, 3.0)  # the next save works and cleans the temporary directory and the copy set aside
    assert load_checkpoint(path).state["version"] == 3.0
    assert hidden_leftovers(path) == []  # a 135 M model's aside copy would keep its GB on the disk for ever


def test_each_rename_is_followed_by_a_flush_of_the_folder_that_holds_it(tmp_path, monkeypatch):
    """A rename lives in its folder's entries: until the folder is flushed a power cut can undo it."""
    events, real_replace, real_fsync = [], os.replace, os.fsync
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (events.append(("replace", os.path.dirname(dst))),
                                                               real_replace(src, dst)))
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                       real_fsync(fd)))
    save_version(tmp_path / "ckpt", 1.0)  # a new folder
    save_version(tmp_path / "ckpt", 2.0)  # replacing one: old aside, new in
    files.write_atomic(tmp_path / "notes" / "a.txt", "x")
    renames = [i for i, event in enumerate(events) if event[0] == "replace"]
    assert len(renames) == 4
    for i in renames:  # the next flush after each rename is its folder's
        assert next(e for e in events[i + 1:] if e[0] == "fsync") == ("fsync", events[i][1]), events[i:]
    assert load_checkpoint(tmp_path / "ckpt").state["version"] == 2.0


def test_stale_temporary_directories_are_never_loaded_and_get_removed(tmp_path):
    stale = tmp_path / ".ckpt.tmp-deadbeef"
    stale.mkdir()
    (stale / "state.json").write_text("{half")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "ckpt")
    save_version(tmp_path / "ckpt", 1.0)
    assert not stale.exists()


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_rng_state_survives_the_checkpoint_as_plain_json(tmp_path):
    path = save_version(tmp_path / "ckpt", 1.0)
    assert (path / "rng.json").is_file() and not (path / "rng.pt").exists()
    saved = load_checkpoint(path).rng
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(saved)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_planted_in_a_checkpoint_never_runs(tmp_path, monkeypatch):
    """A shared run directory with a crafted rng.pt (the old format) must not run code on resume."""
    monkeypatch.chdir(tmp_path)
    path = save_version(tmp_path / "ckpt", 1.0)
    (path / "rng.json").unlink()
    state = json.loads((path / "state.json").read_text())
    del state["sha256"]  # an old checkpoint (or one whose checksums were removed along with the edit)
    (path / "state.json").write_text(json.dumps(state))
    torch.save({"python": Exploit()}, path / "rng.pt")
    with pytest.warns(UserWarning, match="not loaded"):
        ckpt = load_checkpoint(path)
    assert ckpt.rng is None and not (tmp_path / "pwned").exists()
    torch.save({"state": Exploit()}, path / "optimizer.pt")
    with pytest.raises(Exception):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng.json"])
def test_a_flipped_byte_in_any_file_is_refused_by_name(tmp_path, name):
    path = save_version(tmp_path / "ckpt", 1.0)
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{name} does not match the checksum.*damaged"):
        load_checkpoint(path)
    (path / name).unlink()
    with pytest.raises(ValueError, match=f"{name} is missing"):
        load_checkpoint(path)


def test_a_checkpoint_from_before_checksums_still_loads(tmp_path):
    path = save_version(tmp_path / "ckpt", 1.0)
    state = json.loads((path / "state.json").read_text())
    assert set(state.pop("sha256")) == {"model.safetensors", "optimizer.pt", "rng.json"}
    (path / "state.json").write_text(json.dumps(state))
    assert load_checkpoint(path).state["version"] == 1.0


def test_dropping_the_optimizer_state_keeps_the_weights_and_their_checksums(tmp_path):
    path = save_version(tmp_path / "ckpt", 1.0)
    size = (path / "optimizer.pt").stat().st_size
    assert drop_optimizer_state(path) == size > 0
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "rng.json", "state.json"]
    ckpt = load_checkpoint(path)
    assert ckpt.optimizer is None and torch.equal(ckpt.tensors["w"], torch.ones(3)) and ckpt.state["version"] == 1.0
    assert ckpt.state["optimizer_dropped"] is True and hidden_leftovers(path) == []
    assert drop_optimizer_state(path) == 0  # nothing left to drop
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors does not match the checksum"):  # still verified
        load_checkpoint(path)


def test_a_crash_between_the_manifest_and_the_delete_leaves_a_checkpoint_that_loads(tmp_path, monkeypatch):
    path = save_version(tmp_path / "ckpt", 1.0)
    real_unlink = type(path).unlink
    monkeypatch.setattr(type(path), "unlink", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        drop_optimizer_state(path)
    assert (path / "optimizer.pt").is_file()  # still there, no longer in the manifest: never loaded
    assert load_checkpoint(path).optimizer is None
    monkeypatch.setattr(type(path), "unlink", real_unlink)
    assert drop_optimizer_state(path) > 0 and not (path / "optimizer.pt").exists()


def test_a_full_disk_is_refused_before_writing_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno
    import shutil

    path = save_version(tmp_path / "ckpt", 1.0)
    usage = shutil.disk_usage(tmp_path)
    needed = 3 * 4  # "w": 3 float32; the optimizer state holds no tensor
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=needed - 1))
    with pytest.raises(OSError, match="Not enough disk space for the checkpoint .*ckpt") as caught:
        save_version(path, 2.0)
    assert caught.value.errno == errno.ENOSPC
    assert load_checkpoint(path).state["version"] == 1.0 and hidden_leftovers(path) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=needed))
    assert load_checkpoint(save_version(path, 2.0)).state["version"] == 2.0


def test_tensor_bytes_counts_every_tensor_in_a_nest():
    tree = {"a": torch.zeros(3), "b": [torch.zeros(2, dtype=torch.float16), (torch.zeros(1, dtype=torch.int64),)],
            "c": 5, "d": "x"}
    assert checkpoint.tensor_bytes(tree) == 3 * 4 + 2 * 2 + 8


def test_trainable_state_dict_skips_frozen_and_checks_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    tensors = {k: v.clone() + 1 for k, v in trainable_state_dict(model).items()}
    assert sorted(tensors) == ["1.bias", "1.weight"]
    load_trainable_state_dict(model, tensors)
    assert torch.equal(model[1].bias, tensors["1.bias"])
    with pytest.raises(KeyError, match="does not fit"):
        load_trainable_state_dict(model, {"2.weight": torch.zeros(1)})


# ---- exact resume of a PPO run ------------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_metrics(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.parametrize("lora", [False, True])
def test_resumed_run_matches_an_uninterrupted_one(tiny, tmp_path, one_thread, lora):
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import tiny_policy
    from rlhf_lab.train.config import LoraSettings
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    tokenizer = tiny[1]
    prompts = ["hi there", "what is a cat?", "tell me a joke", "how are you?", "good morning", "what's up"]
    config = PPOConfig(learning_rate=3e-3, batch_size=4, mini_batch_size=2, ppo_epochs=2, kl_target=1.0,
                       kl_horizon=8, sampling=SamplingConfig(max_new_tokens=6, temperature=1.0),
                       lora=LoraSettings(r=2) if lora else None, log_samples_every=0)

    def reward(texts):
        return [len(t) / 30 for t in texts]

    def fresh():
        return tiny_policy(tokenizer, seed=0)[0]

    straight = PPOTrainer(fresh(), tokenizer, reward, config, callbacks=[]).train(prompts, 4)
    interrupted = PPOTrainer(fresh(), tokenizer, reward, config, callbacks=[])
    interrupted.train(prompts, 2, checkpoint_dir=tmp_path / "c")
    torch.manual_seed(12345)  # disturb the global RNG: the checkpoint must restore it
    resumed = PPOTrainer.resume(tmp_path / "c", fresh(), tokenizer, reward, callbacks=[])
    assert resumed.config == config and resumed.update_ == 2 and len(resumed.history.rows) == 2
    resumed.train(prompts, 4)
    a, b = run_metrics(straight.history.rows), run_metrics(resumed.history.rows)
    assert [r["update"] for r in b] == [1, 2, 3, 4]
    for row_a, row_b in zip(a, b):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            assert row_a[key] == row_b[key] or (math.isnan(row_a[key]) and math.isnan(row_b[key])), key
    assert a[-1]["objective/beta"] != config.kl_coef  # the adaptive β was restored, not restarted
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    saved = load_checkpoint(tmp_path / "c").tensors
    n_trainable = sum(p.numel() for p in straight.model.parameters() if p.requires_grad)
    assert sum(t.numel() for t in saved.values()) == n_trainable  # LoRA: adapters and value head only
    assert (tmp_path / "c" / "adapter" / "adapter_model.safetensors").is_file() == lora  # peft's own format too
    # another config or another base policy would mix the saved optimiser, weights and β with this trainer's
    with pytest.raises(ValueError, match=r"saved with another config \(learning_rate differ\): resume with the saved"):
        PPOTrainer.resume(tmp_path / "c", fresh(), tokenizer, reward, replace(config, learning_rate=1e-4), callbacks=[])
    other = fresh()
    other.rlhf_lab_id = "someone/else"
    with pytest.raises(ValueError, match=r"saved from the policy '.+', not 'someone/else'"):
        PPOTrainer.resume(tmp_path / "c", other, tokenizer, reward, callbacks=[])
    drop_optimizer_state(tmp_path / "c")  # what an RLHFRun does to its earlier iterations: weights only
    with pytest.raises(ValueError, match="without the optimizer state.*RLHFRun.open"):
        PPOTrainer.resume(tmp_path / "c", fresh(), tokenizer, reward, callbacks=[])


@pytest.mark.parametrize("name", ["state.json", "rng.json"])
def test_a_checkpoint_file_that_is_not_json_is_named(tmp_path, name):
    path = save_version(tmp_path / "ckpt", 1.0)
    state = json.loads((path / "state.json").read_text())
    del state["sha256"]  # so that the JSON error, not the checksum, is what rng.json meets
    (path / "state.json").write_text(json.dumps(state))
    (path / name).write_text('{"format": 1, "upd')
    with pytest.raises(ValueError, match=f"{name} is not valid JSON"):
        load_checkpoint(path)
