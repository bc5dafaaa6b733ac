"""Saving a model or a checkpoint replaces only a previous save of the same kind (or an empty folder): a folder that
holds anything else (a learner's feedback.db and notes), or a file, is refused in one line before anything is
written, and stays byte for byte as it was."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rlhf_lab.core.checkpoint import load_checkpoint, save_checkpoint
from rlhf_lab.core.files import SaveKind, atomic_directory
from rlhf_lab.core.sharded_checkpoint import open_sharded_checkpoint, save_sharded_checkpoint
from rlhf_lab.reward.cost import CostModel
from rlhf_lab.reward.embedding import EmbeddingRewardModel
from rlhf_lab.reward.model import RewardConfig, RewardModel

PAIRS = pd.DataFrame({"prompt": [f"How do I make tea {i}?" for i in range(6)],
                      "chosen": ["Boil water and steep the tea."] * 6, "rejected": ["I hate tea."] * 6})
FLAGS = [dict(prompt="Tell me about your day.", response=r, flagged=f)
         for r, f in [("It was lovely and fun.", False), ("I hate this awful day.", True),
                      ("We talked about books.", False), ("Stupid horrible weather.", True)] * 3]


def lesson_folder(tmp_path):
    """A folder holding what a learner keeps there: judgments and notes."""
    folder = tmp_path / "lessons"
    folder.mkdir()
    (folder / "feedback.db").write_bytes(b"SQLite format 3\x00 the learner's judgments")
    (folder / "my_notes.txt").write_text("my notes")
    return folder


def snapshot(folder):
    """Every file under `folder`'s parent (hidden leftovers included), with its bytes."""
    root = folder.parent
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(save, tmp_path, what, folder_name):
    folder = lesson_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(ValueError) as refused:
        save(folder)
    assert str(refused.value) == (f"{folder} holds files {what} does not write (feedback.db, my_notes.txt): nothing "
                                  f"was replaced; save it to a folder of its own, e.g. {folder / folder_name}")
    assert snapshot(folder) == before  # nothing written, nothing set aside
    file = tmp_path / "notes.txt"
    file.write_text("a file")
    with pytest.raises(ValueError, match=rf"^{file} is a file, not a folder {what} wrote: nothing was replaced"):
        save(file)
    assert snapshot(folder) == {**before, "notes.txt": b"a file"}  # the file, not moved aside
    file.unlink()


def test_embedding_reward_model(tmp_path):
    model = EmbeddingRewardModel().fit(PAIRS)
    assert_refused(model.save, tmp_path, "an embedding reward model", "reward_model")
    path = model.save(tmp_path / "rm")
    model.save(path)  # over its own previous save
    (tmp_path / "empty").mkdir()
    model.save(tmp_path / "empty")  # an empty folder
    for folder in (path, tmp_path / "empty"):
        assert torch.equal(EmbeddingRewardModel.load(folder).weights_, model.weights_)


def test_reward_model(tmp_path):
    model = RewardModel(RewardConfig(backbone="tiny", batch_size=4, epochs=1)).fit(PAIRS, progress=False)
    assert_refused(model.save, tmp_path, "a reward model", "reward_model")
    model.save(tmp_path / "rm")
    model.save(tmp_path / "rm")
    assert RewardModel.load(tmp_path / "rm").norm_mean_ == model.norm_mean_


def test_cost_model(tmp_path):
    model = CostModel().fit(FLAGS)
    assert_refused(model.save, tmp_path, "a cost model", "cost_model")
    model.save(tmp_path / "cost")
    model.save(tmp_path / "cost")
    assert torch.equal(CostModel.load(tmp_path / "cost").weights_, model.weights_)


def test_ppo_checkpoint(tiny, tmp_path):
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    policy, tokenizer = tiny
    trainer = PPOTrainer(policy, tokenizer, reward="gold", callbacks=[],
                         config=PPOConfig(batch_size=2, ppo_epochs=1, sampling=SamplingConfig(max_new_tokens=3),
                                          log_samples_every=0))
    assert_refused(trainer.save, tmp_path, "a checkpoint", "checkpoint")
    with pytest.raises(ValueError, match="holds files a checkpoint does not write"):  # train(checkpoint_dir=...) too
        trainer.train(["Hi"] * 2, n_updates=1, checkpoint_dir=tmp_path / "lessons")
    assert trainer.update_ == 0  # refused before any training, not at the first save
    trainer.save(tmp_path / "ppo")
    trainer.save(tmp_path / "ppo")
    assert load_checkpoint(tmp_path / "ppo").state["update"] == trainer.update_


def test_a_checkpoint_replaces_a_checkpoint_and_refuses_a_model(tmp_path):
    def save(path, version):
        return save_checkpoint(path, tensors={"w": torch.full((2,), version)}, state={"version": version})

    assert_refused(lambda p: save(p, 1.0), tmp_path, "a checkpoint", "checkpoint")
    save(tmp_path / "ckpt", 1.0)
    save(tmp_path / "ckpt", 2.0)
    assert load_checkpoint(tmp_path / "ckpt").state["version"] == 2.0
    model = tmp_path / "rm"
    EmbeddingRewardModel().fit(PAIRS).save(model)
    before = snapshot(model)
    with pytest.raises(ValueError, match="holds files a checkpoint does not write"):  # another kind's save
        save(model, 3.0)
    assert snapshot(model) == before


def test_a_sharded_checkpoint_refuses_a_foreign_folder(tmp_path):
    def save(path):
        layout = {"w": {"split": "none", "shape": [2]}}
        return save_sharded_checkpoint(path, tensors={"w": torch.ones(2)}, layout=layout,
                                       rank_state={}, state={"update": 1}, rank=0, world_size=1,
                                       agree=lambda ok: ok)

    folder = lesson_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(OSError, match="holds files a checkpoint does not write .*nothing was published"):
        save(folder)
    assert snapshot(folder) == before
    save(tmp_path / "ckpt")
    save(tmp_path / "ckpt")
    assert open_sharded_checkpoint(tmp_path / "ckpt").state["update"] == 1


def test_files_that_appear_while_a_save_is_written_are_not_replaced(tmp_path):
    kind = SaveKind("made.json", "a test save", "saved")
    folder = tmp_path / "out"
    with pytest.raises(ValueError, match="holds files a test save does not write \\(notes.txt\\)"):
        with atomic_directory(folder, kind=kind) as tmp:
            (tmp / "made.json").write_text("{}")
            folder.mkdir()
            (folder / "notes.txt").write_text("written meanwhile")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (folder / "notes.txt").read_text() == "written meanwhile"


def test_an_assignment_build_refuses_a_folder_it_did_not_build(tmp_path):
    from rlhf_lab.teach.assignments import build, find_masters

    first = find_masters(None)[0].name
    folder = lesson_folder(tmp_path)
    (folder / first).mkdir()
    (folder / first / "my_answers.ipynb").write_text("{}")
    before = snapshot(folder)
    with pytest.raises(ValueError, match=rf"^{folder / first} holds files an assignment build does not write "
                                         r"\(my_answers.ipynb\): nothing was replaced"):
        build(out=folder, check=False)
    assert snapshot(folder) == before


def test_a_dpo_fit_refuses_a_foreign_checkpoint_folder_before_its_first_step(tiny, tmp_path):
    import pandas as pd

    from rlhf_lab.train.dpo import DPOConfig, DPOTrainer

    policy, tokenizer = tiny
    trainer = DPOTrainer(policy, tokenizer, DPOConfig(batch_size=2), callbacks=[])
    pairs = pd.DataFrame([dict(prompt="Hi?", chosen="Hello there.", rejected="Go.")] * 2)
    folder = lesson_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(ValueError, match="holds files a checkpoint does not write"):
        trainer.fit(pairs, checkpoint_dir=folder, checkpoint_every=1)
    assert trainer.update_ == 0 and snapshot(folder) == before


def test_a_file_put_into_a_save_later_is_kept_when_the_save_is_replaced(tmp_path):
    """Notes someone put into a checkpoint's folder after it was saved are not in its manifest: the next save of that
    folder copies them over (a stale file the earlier save wrote is not); a kept file the new save would overwrite is
    refused before anything is replaced; a copy an interrupted replace left aside gives its files too."""
    def save(path, version, extra=None):
        return save_checkpoint(path, tensors={"w": torch.full((2,), version)}, state={"version": version},
                               extra=extra)

    ckpt = tmp_path / "ckpt"
    save(ckpt, 1.0, extra=lambda tmp: (tmp / "old_only.json").write_text("{}"))  # the first save's own file
    (ckpt / "notes.txt").write_text("lr 1e-5 looked best")
    (ckpt / "plots").mkdir()
    (ckpt / "plots" / "curve.png").write_bytes(b"png")
    save(ckpt, 2.0)
    assert load_checkpoint(ckpt).state["version"] == 2.0  # its checksums still hold
    assert (ckpt / "notes.txt").read_text() == "lr 1e-5 looked best" and (ckpt / "plots" / "curve.png").exists()
    assert not (ckpt / "old_only.json").exists(), "a file the earlier save wrote itself is not carried over"
    save(ckpt, 3.0)  # kept again: the new manifest does not list them either
    assert (ckpt / "notes.txt").is_file() and load_checkpoint(ckpt).state["version"] == 3.0

    (ckpt / "clash.json").write_text("mine")
    before = snapshot(ckpt)
    with pytest.raises(ValueError, match=r"holds clash.json, which the earlier save did not write and this one would "
                                         r"overwrite: nothing was replaced; move it out"):
        save(ckpt, 4.0, extra=lambda tmp: (tmp / "clash.json").write_text("theirs"))
    assert snapshot(ckpt) == before and not list(tmp_path.glob(".ckpt.*"))

    (ckpt / "clash.json").unlink()
    ckpt.rename(tmp_path / ".ckpt.old-12345678")  # a crash between the two renames of a replace
    save(ckpt, 5.0)
    assert (ckpt / "notes.txt").read_text() == "lr 1e-5 looked best" and not list(tmp_path.glob(".ckpt.*"))
