"""`rlhf-lab export`: a store's judgments and a run's settings in TRL's, OpenRLHF's and verl's formats, read back.

The store holds one judgment of each kind; the runs are config.json files of a taste run and a demo run (no model is
loaded). Checks that need `datasets`, `trl` or `pyarrow` run where they are installed and are skipped elsewhere.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from rlhf_lab.cli import main
from rlhf_lab.feedback.store import FeedbackStore


def _records(prompt, texts, iteration):
    return [dict(prompt=prompt, response=t, model=f"policy-{iteration}", iteration=iteration, sampling={}, eos=True)
            for t in texts]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """Pairwise (a strength; a tie; B without strength), a rating, a ranking, thumbs and a flag, two iterations."""
    path = tmp_path_factory.mktemp("export") / "feedback.db"
    with FeedbackStore(path) as s:
        a = s.add_responses(_records("How are you?", ["Fine, thanks!", "Go away."], 0))
        b = s.add_responses(_records("Name a colour.", ["Blue.", "Seven.", "Red, like a rose."], 1))
        c = s.add_responses(_records("Say hi.", ["Hi!", "No."], 1))
        pair = s.add_item(a)
        s.record_pairwise(pair, "ann", "A", strength=2)
        s.record_pairwise(pair, "bob", "tie")
        s.record_pairwise(pair, "cat", "B")
        s.record_ranking(s.add_item(b, kind="ranking"), "bob", [b[2], b[0], b[1]])
        s.record_rating(s.add_item(b, kind="rating"), "ann", [6, 1, 4])
        s.record_thumbs(c[0], "ann", True)
        s.record_thumbs(c[1], "ann", False)
        s.record_thumbs(b[1], "bob", False)
        s.record_flags(c[1], "ann", ["harmful"])  # no pair, no example
    return path


# the non-tie pairs in the store's order: pairwise, ranking, then the rating's (prompt, chosen, rejected, margin,
# iteration, annotator, source_kind)
PAIRS = [("How are you?", "Fine, thanks!", "Go away.", 2.0, 0, "ann", "pairwise"),
         ("How are you?", "Go away.", "Fine, thanks!", 0.0, 0, "cat", "pairwise"),
         ("Name a colour.", "Red, like a rose.", "Blue.", 0.0, 1, "bob", "ranking"),
         ("Name a colour.", "Red, like a rose.", "Seven.", 0.0, 1, "bob", "ranking"),
         ("Name a colour.", "Blue.", "Seven.", 0.0, 1, "bob", "ranking"),
         ("Name a colour.", "Blue.", "Seven.", 5.0, 1, "ann", "rating"),
         ("Name a colour.", "Blue.", "Red, like a rose.", 2.0, 1, "ann", "rating"),
         ("Name a colour.", "Red, like a rose.", "Seven.", 3.0, 1, "ann", "rating")]
THUMBS = [("Say hi.", "Hi!", True, 1, "ann"), ("Say hi.", "No.", False, 1, "ann"),
          ("Name a colour.", "Seven.", False, 1, "bob")]
# each reply's id in the store (added in this order by `store_path`)
REPLY_ID = {text: i for i, text in enumerate(["Fine, thanks!", "Go away.", "Blue.", "Seven.", "Red, like a rose.",
                                              "Hi!", "No."], 1)}


def replies_origin(chosen, rejected, iteration):
    return dict(chosen_model=f"policy-{iteration}", rejected_model=f"policy-{iteration}", chosen_id=REPLY_ID[chosen],
                rejected_id=REPLY_ID[rejected])


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def export(capsys, *argv) -> int:
    code = main(["export", *map(str, argv)])
    capsys.readouterr()
    return code


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def read_yaml(path):
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def taste_run(tmp_path_factory, store_path):
    """A taste run's folder: its config.json (DPO settings of its own, no chat template) and its store."""
    from rlhf_lab.loop.taste import TasteConfig

    base = TasteConfig()
    config = replace(base, seed=3, sampling=replace(base.sampling, chat_template=False),
                     dpo=replace(base.dpo, learning_rate=7e-6, beta=0.25, batch_size=16, micro_batch_size=4, epochs=3,
                                 max_length=200, max_prompt_length=100, loss_type="ipo"))
    run = tmp_path_factory.mktemp("runs") / "taste-short-seed3"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    shutil.copy(store_path, run / "feedback.db")
    return run, config


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, store_path):
    """A demo run's folder: an ExperimentConfig with reward and PPO settings of its own."""
    from rlhf_lab.loop.experiment import ExperimentConfig
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.reward.model import RewardConfig
    from rlhf_lab.train.ppo import PPOConfig

    config = ExperimentConfig(
        iterations=3, ppo_updates=5, seed=7,
        reward=RewardConfig(batch_size=32, learning_rate=5e-5, epochs=2, max_length=96, use_margin=True,
                            lr_schedule="constant", weight_decay=0.01),
        ppo=PPOConfig(batch_size=16, mini_batch_size=8, micro_batch_size=4, ppo_epochs=3, learning_rate=7e-6,
                      kl_coef=0.05, kl_target=4.0, clip_eps=0.25, vf_clip=0.3, lam=0.9,
                      sampling=SamplingConfig(max_new_tokens=40, temperature=0.9)))
    run = tmp_path_factory.mktemp("runs") / "demo"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    shutil.copy(store_path, run / "feedback.db")
    return run, config


def test_trl_rows_and_recipes_with_the_labs_defaults(store_path, tmp_path, capsys):
    from rlhf_lab.loop.taste import TasteConfig
    from rlhf_lab.reward.model import RewardConfig
    from rlhf_lab.train.kto import KTOConfig

    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path) == 0
    # the default policy (SmolLM2-135M-Instruct) reads a chat template: conversational rows
    assert read_jsonl(tmp_path / "preference.jsonl") == [
        dict(prompt=user(p), chosen=assistant(c), rejected=assistant(r), margin=m, iteration=i, model=f"policy-{i}",
             annotator=a, **replies_origin(c, r, i), source_kind=k) for p, c, r, m, i, a, k in PAIRS]
    assert read_jsonl(tmp_path / "unpaired.jsonl") == [
        dict(prompt=user(p), completion=assistant(c), label=up, iteration=i, model=f"policy-{i}", annotator=a,
             response_id=REPLY_ID[c]) for p, c, up, i, a in THUMBS]
    base, kto, reward = TasteConfig(), KTOConfig(), RewardConfig()
    dpo = read_yaml(tmp_path / "dpo.yaml")
    assert dpo["model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert dpo["datasets"] == [{"path": "json", "data_files": "preference.jsonl", "split": "train",
                                "columns": ["prompt", "chosen", "rejected"]}]
    assert (dpo["learning_rate"], dpo["beta"], dpo["loss_type"], dpo["num_train_epochs"], dpo["max_length"]) == \
        (base.dpo.learning_rate, base.dpo.beta, [base.dpo.loss_type], base.dpo.epochs, base.dpo.max_length)
    assert dpo["per_device_train_batch_size"] * dpo["gradient_accumulation_steps"] == base.dpo.batch_size
    assert (dpo["lr_scheduler_type"], dpo["weight_decay"], dpo["adam_epsilon"]) == ("constant", 0.0, 1e-5)
    rm = read_yaml(tmp_path / "reward.yaml")
    assert (rm["learning_rate"], rm["per_device_train_batch_size"], rm["num_train_epochs"], rm["max_length"]) == \
        (reward.learning_rate, reward.batch_size, reward.epochs, reward.max_length)
    assert rm["datasets"][0]["columns"] == ["prompt", "chosen", "rejected"]  # use_margin is off by default
    assert rm["disable_dropout"] is (not reward.dropout) is True
    k = read_yaml(tmp_path / "kto.yaml")
    assert k["datasets"][0]["columns"] == ["prompt", "completion", "label"]
    assert (k["learning_rate"], k["beta"], k["undesirable_weight"]) == (kto.learning_rate, kto.beta, 1.0)
    assert k["desirable_weight"] == 2.0  # KTOConfig leaves it to the data: 2 thumbs down / 1 up
    summary = json.loads((tmp_path / "export.json").read_text())
    assert summary["files"] == {"preference.jsonl": 8, "unpaired.jsonl": 3, "dpo.yaml": None, "reward.yaml": None,
                                "kto.yaml": None}
    assert summary["ties_left_out"] == 1 and summary["format"] == "conversational"
    assert set(summary["settings"].values()) == {"default: TasteConfig().policy", "default: TasteConfig().dpo",
                                                 "default: TasteConfig().ppo (lesson 4's)", "default: RewardConfig()",
                                                 "default: KTOConfig()"}


def test_trl_recipes_carry_a_taste_runs_settings(taste_run, tmp_path, capsys):
    run, config = taste_run
    assert export(capsys, "--run", run, "--to", "trl", "--out", tmp_path) == 0  # the run's own feedback.db
    rows = read_jsonl(tmp_path / "preference.jsonl")  # chat_template=False in the run: standard rows
    assert rows[0] == dict(prompt="How are you?", chosen="Fine, thanks!", rejected="Go away.", margin=2.0,
                           iteration=0, model="policy-0", annotator="ann",
                           **replies_origin("Fine, thanks!", "Go away.", 0), source_kind="pairwise")
    assert read_jsonl(tmp_path / "unpaired.jsonl")[0]["completion"] == "Hi!"
    dpo = read_yaml(tmp_path / "dpo.yaml")
    assert (dpo["learning_rate"], dpo["beta"], dpo["loss_type"], dpo["per_device_train_batch_size"],
            dpo["gradient_accumulation_steps"], dpo["num_train_epochs"], dpo["max_length"], dpo["seed"]) == \
        (7e-6, 0.25, ["ipo"], 4, 4, 3, 200, 3)
    text = (tmp_path / "dpo.yaml").read_text()
    assert f"# settings from {run / 'config.json'}: policy, dpo, ppo" in text and "trl dpo --config dpo.yaml" in text
    summary = json.loads((tmp_path / "export.json").read_text())
    assert summary["format"] == "standard" and summary["settings"]["dpo"] == str(run / "config.json")


def test_an_embedding_demo_runs_reward_recipe_has_the_defaults_and_says_why(demo_run, tmp_path, capsys):
    """The demo fits the embedding reward model, which TRL's RewardTrainer does not train: the run's (unused)
    network section must not pass for its reward settings."""
    from rlhf_lab.reward.model import RewardConfig

    run, config = demo_run
    other = tmp_path / "embedding_run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(replace(config, reward_kind="embedding").to_dict()))
    shutil.copy(run / "feedback.db", other / "feedback.db")
    assert export(capsys, "--run", other, "--to", "trl", "--out", tmp_path / "out") == 0
    rm, reward = read_yaml(tmp_path / "out" / "reward.yaml"), RewardConfig()
    assert config.reward.learning_rate != reward.learning_rate  # the run's network section differs from the default
    assert (rm["learning_rate"], rm["per_device_train_batch_size"], rm["num_train_epochs"]) == \
        (reward.learning_rate, reward.batch_size, reward.epochs)
    summary = json.loads((tmp_path / "out" / "export.json").read_text())
    assert summary["settings"]["reward"] == "default: RewardConfig()"
    assert summary["settings"]["ppo"] == str(other / "config.json")
    assert any("embedding one" in note and "RewardConfig()'s defaults" in note for note in summary["notes"])


def flags_of(script: str) -> dict[str, dict[str, list[str]]]:
    """The script's cases as {case: {flag: [values]}} (a bare flag has no values)."""
    cases = {}
    for name, body in re.findall(r"^  (\w+)\)\n(.*?) ;;", script, re.M | re.S):
        words = shlex.split(body.replace("\\\n", " "))
        flags, current = {"program": []}, "program"
        for w in words:
            if w.startswith("--"):
                current = w[2:]
                flags[current] = []
            else:
                flags[current].append(w)
        cases[name] = flags
    return cases


def test_openrlhf_rows_and_script_carry_a_demo_runs_settings(demo_run, tmp_path, capsys):
    run, config = demo_run
    assert export(capsys, "--run", run, "--to", "openrlhf", "--out", tmp_path) == 0
    rows = read_jsonl(tmp_path / "preference.jsonl")
    assert [(r["prompt"], r["chosen"], r["rejected"], r["margin"]) for r in rows] == \
        [(user(p), assistant(c), assistant(r), m) for p, c, r, m, *_ in PAIRS]
    assert [(r["label"], r["iteration"], r["model"]) for r in read_jsonl(tmp_path / "unpaired.jsonl")] == \
        [(1, 1, "policy-1"), (0, 1, "policy-1"), (0, 1, "policy-1")]  # OpenRLHF's labels are 1 / 0
    assert read_jsonl(tmp_path / "prompts.jsonl") == [
        dict(prompt=user(p), datasource="rlhf-lab", iteration=i, model=f"policy-{i}")
        for p, i in (("How are you?", 0), ("Name a colour.", 1), ("Say hi.", 1))]
    script = (tmp_path / "openrlhf.sh").read_text()
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(tmp_path / "openrlhf.sh")]).returncode == 0
    cases = flags_of(script)
    assert list(cases) == ["rm", "dpo", "kto", "ppo"]
    rm, ppo, r, p = cases["rm"], cases["ppo"], config.reward, config.ppo
    assert rm["program"] == ["deepspeed"] and rm["module"] == ["openrlhf.cli.train_rm"]
    assert (rm["dataset"], rm["prompt_key"], rm["chosen_key"], rm["rejected_key"]) == \
        (["preference.jsonl"], ["prompt"], ["chosen"], ["rejected"])
    assert rm["apply_chat_template"] == [] and rm["margin_loss"] == []  # chat policy; the run used margins
    assert [float(rm[k][0]) for k in ("learning_rate", "train_batch_size", "max_epochs", "max_len", "l2")] == \
        [r.learning_rate, r.batch_size, r.epochs, r.max_length, r.weight_decay]
    assert rm["lr_scheduler"] == ["constant"] and rm["seed"] == ["7"]  # the reward's seed follows the run's
    assert [float(ppo[k][0]) for k in ("actor_learning_rate", "critic_learning_rate", "init_kl_coef", "eps_clip",
                                       "value_clip", "lambd", "gamma", "temperature")] == \
        [p.learning_rate, p.learning_rate, p.kl_coef, p.clip_eps, p.vf_clip, p.lam, p.gamma, p.sampling.temperature]
    assert [int(ppo[k][0]) for k in ("rollout_batch_size", "train_batch_size", "micro_train_batch_size",
                                     "max_epochs", "generate_max_len", "num_episodes")] == \
        [p.batch_size, p.mini_batch_size, p.micro_batch_size, p.ppo_epochs, p.sampling.max_new_tokens, 15]
    assert float(ppo["kl_target"][0]) == pytest.approx(4.0 / 40)  # nats per reply -> per token
    assert int(ppo["kl_horizon"][0]) == 10 * p.batch_size  # replies: the same β step an update as the lab's
    assert (ppo["prompt_data"], ppo["input_key"], ppo["reward_pretrain"]) == \
        (["prompts.jsonl"], ["prompt"], ["ckpt/rm"])
    kto = cases["kto"]
    assert (kto["input_key"], kto["output_key"], kto["label_key"]) == (["prompt"], ["completion"], ["label"])
    assert cases["dpo"]["adam_betas"] == ["0.9", "0.999"] and "ipo" not in cases["dpo"]


def test_verl_rows_and_recipe(demo_run, tmp_path, capsys):
    import importlib.util

    run, config = demo_run
    assert export(capsys, "--run", run, "--to", "verl", "--out", tmp_path) == 0
    expected = [dict(data_source="rlhf-lab", prompt=user(p), ability="alignment",
                     reward_model={"style": "model", "ground_truth": ""},
                     extra_info={"split": "train", "index": n, "iteration": i, "model": f"policy-{i}"})
                for n, (p, i) in enumerate((("How are you?", 0), ("Name a colour.", 1), ("Say hi.", 1)))]
    if importlib.util.find_spec("pyarrow"):
        import pandas as pd

        df = pd.read_parquet(tmp_path / "rl.parquet")
        rows = [{**r, "prompt": [dict(m) for m in r["prompt"]]} for r in df.to_dict("records")]
        assert rows == expected and not (tmp_path / "rl.json").exists()
        data = "rl.parquet"
    else:  # verl reads .json files as JSON lines too
        assert read_jsonl(tmp_path / "rl.json") == expected
        data = "rl.json"
    cfg, p = read_yaml(tmp_path / "verl.yaml"), config.ppo
    actor = cfg["actor_rollout_ref"]["actor"]
    assert (cfg["data"]["train_files"], cfg["data"]["train_batch_size"], cfg["data"]["max_response_length"]) == \
        (data, p.batch_size, p.sampling.max_new_tokens)
    assert (actor["optim"]["lr"], actor["ppo_mini_batch_size"], actor["ppo_micro_batch_size_per_gpu"],
            actor["ppo_epochs"], actor["clip_ratio"]) == (p.learning_rate, p.mini_batch_size, p.micro_batch_size,
                                                          p.ppo_epochs, p.clip_eps)
    assert cfg["algorithm"]["kl_ctrl"] == {"type": "adaptive", "kl_coef": 0.05, "target_kl": 0.1,
                                         "horizon": 10 * p.batch_size}  # the lab's default: 10 updates' replies
    assert (cfg["algorithm"]["lam"], cfg["critic"]["cliprange_value"], cfg["trainer"]["total_training_steps"],
            cfg["trainer"]["experiment_name"]) == (0.9, 0.3, 15, "demo")
    assert cfg["actor_rollout_ref"]["model"]["path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # verl.sh passes the same keys and values as overrides
    script = (tmp_path / "verl.sh").read_text()
    overrides = [w for w in shlex.split(script.split("main_ppo", 1)[1].replace("\\\n", " ")) if "=" in w]

    def flat(tree, prefix=""):
        for key, value in tree.items():
            yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    from_sh = {k: yaml.safe_load(v) for k, v in (w.split("=", 1) for w in overrides)}
    assert from_sh.pop("reward_model.model.path") == "$REWARD_MODEL"  # the shell fills it in
    assert from_sh == {k: v for k, v in flat(cfg) if k != "reward_model.model.path"}


def test_filters_by_annotator_and_iteration(store_path, tmp_path, capsys):
    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path, "--annotator", "ann",
                  "--iteration", "1", "--chat", "no") == 0
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in read_jsonl(tmp_path / "preference.jsonl")] == \
        [(c, r, m) for p, c, r, m, i, a, k in PAIRS if a == "ann" and i == 1]
    assert [r["completion"] for r in read_jsonl(tmp_path / "unpaired.jsonl")] == ["Hi!", "No."]
    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path / "b", "--annotator", "bob") == 0
    rows = read_jsonl(tmp_path / "b" / "preference.jsonl")
    assert len(rows) == 3 and "margin" not in rows[0]  # rankings carry no margin: no column at all


def test_existing_files_are_refused_then_replaced_with_force(store_path, tmp_path, capsys):
    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path) == 0
    before = (tmp_path / "preference.jsonl").read_text()
    argv = ["export", "--store", str(store_path), "--to", "trl", "--out", str(tmp_path), "--annotator", "ann"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds preference.jsonl" in err and "--force" in err
    assert (tmp_path / "preference.jsonl").read_text() == before
    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path, "--annotator", "ann",
                  "--force") == 0
    assert (tmp_path / "preference.jsonl").read_text() != before
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary file left behind


def test_a_disk_that_fills_during_a_forced_export_leaves_the_old_export_whole(store_path, tmp_path, capsys,
                                                                                 monkeypatch):
    from conftest import fill_disk_at_flush

    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fill_disk_at_flush(monkeypatch, 3)  # the disk fills while the third file is flushed
    assert main(["export", "--store", str(store_path), "--to", "trl", "--out", str(tmp_path), "--annotator", "ann",
                 "--force"]) == 2
    err = capsys.readouterr().err
    assert err == "rlhf-lab export: error: the disk is full (no space left on the device): free some space and run " \
        "the command again\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # every file old, no temporary left


def test_a_ppo_checkpoint_gives_the_ppo_settings(store_path, tmp_path, capsys):
    from rlhf_lab.train.ppo import PPOConfig

    ckpt = tmp_path / "iter_001" / "ppo"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"config": PPOConfig(learning_rate=3e-6, kl_coef=0.2).to_dict(),
                                                 "model_id": "smollm2-135m", "update": 4}))
    assert export(capsys, "--run", ckpt, "--store", store_path, "--to", "verl", "--out", tmp_path / "out") == 0
    cfg = read_yaml(tmp_path / "out" / "verl.yaml")
    assert cfg["actor_rollout_ref"]["actor"]["optim"]["lr"] == 3e-6
    assert cfg["algorithm"]["kl_ctrl"] == {"type": "fixed", "kl_coef": 0.2}


def test_a_dpo_or_kto_checkpoint_gives_its_settings(store_path, tmp_path, capsys):
    """examples/train_dpo.py keeps its trainer checkpoint in --out/checkpoint; --run on it said 'holds no PPO
    trainer config' though the help offers 'a trainer checkpoint (state.json)'."""
    from rlhf_lab.train.dpo import DPOConfig
    from rlhf_lab.train.kto import KTOConfig

    for name, config in (("dpo", DPOConfig(learning_rate=4e-6, beta=0.3, epochs=3)),
                         ("kto", KTOConfig(learning_rate=5e-6, beta=0.2))):
        ckpt = tmp_path / name / "checkpoint"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text(json.dumps({"config": config.to_dict(), "model_id": "tiny", "update": 2}))
        out = tmp_path / name / "out"
        assert export(capsys, "--run", ckpt, "--store", store_path, "--to", "trl", "--out", out) == 0
        recipe = read_yaml(out / f"{name}.yaml")
        assert (recipe["learning_rate"], recipe["beta"]) == (config.learning_rate, config.beta)
        assert json.loads((out / "export.json").read_text())["settings"][name] == str(ckpt / "state.json")
    assert read_yaml(tmp_path / "dpo" / "out" / "dpo.yaml")["num_train_epochs"] == 3
    assert main(["export", "--run", str(tmp_path / "dpo"), "--store", str(store_path), "--to", "trl", "--out",
                 str(tmp_path / "x")]) == 2  # the script's --out, not its checkpoint
    assert f"give --run {tmp_path / 'dpo' / 'checkpoint'}, its trainer checkpoint" in capsys.readouterr().err


def bad_inputs(tmp: Path, store: Path):
    (tmp / "not-a-db.db").write_text("hello")
    (tmp / "a-file").write_text("x")
    for name, text in (("broken", "{not json"), ("odd", json.dumps({"policy": "tiny"}))):
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(text)
    (tmp / "empty-run").mkdir()
    with FeedbackStore(tmp / "only-ties.db") as s:
        s.record_pairwise(s.add_item(s.add_responses(_records("q", ["x", "y"], 0))), "ann", "tie")
    out = str(tmp / "out")
    return [
        (["--store", str(tmp / "missing.db"), "--to", "trl", "--out", out], "no store at"),
        (["--store", str(tmp / "not-a-db.db"), "--to", "trl", "--out", out], "not a SQLite database"),
        (["--store", str(store), "--to", "trl", "--out", out, "--annotator", "zed"], "annotators: ann, bob, cat"),
        (["--store", str(store), "--to", "trl", "--out", out, "--iteration", "7"], "iterations: 0, 1"),
        (["--store", str(store), "--to", "trl", "--out", str(tmp / "a-file")], "is a file"),
        (["--to", "trl", "--out", out], "give --store"),
        (["--run", str(tmp / "nowhere"), "--to", "trl", "--out", out], "no such folder"),
        (["--run", str(tmp / "empty-run"), "--store", str(store), "--to", "trl", "--out", out], "holds no run"),
        (["--run", str(tmp / "broken"), "--store", str(store), "--to", "trl", "--out", out], "is not valid JSON"),
        (["--run", str(tmp / "odd"), "--store", str(store), "--to", "trl", "--out", out], "neither a demo run"),
        (["--store", str(tmp / "only-ties.db"), "--to", "verl", "--out", out], "nothing to export"),
    ]


def test_bad_input_is_one_line_and_exit_2(store_path, tmp_path, capsys):
    for argv, words in bad_inputs(tmp_path, store_path):
        assert main(["export", *argv]) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("rlhf-lab export: error: ") and captured.err.count("\n") == 1, captured.err
        assert words in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_the_files_load_as_trl_reads_them(store_path, tmp_path, capsys):
    """`datasets.load_dataset("json")` reads the rows with the columns TRL's trainers expect; with TRL installed,
    its CLI parser takes every recipe and its helpers see the conversational format."""
    datasets = pytest.importorskip("datasets")
    assert export(capsys, "--store", store_path, "--to", "trl", "--out", tmp_path) == 0
    pref = datasets.load_dataset("json", data_files=str(tmp_path / "preference.jsonl"), split="train")
    assert pref.num_rows == 8 and pref.column_names[:4] == ["prompt", "chosen", "rejected", "margin"]
    assert [float(m) for m in pref["margin"]] == [p[3] for p in PAIRS]
    kto = datasets.load_dataset("json", data_files=str(tmp_path / "unpaired.jsonl"), split="train")
    assert kto.column_names[:3] == ["prompt", "completion", "label"] and kto["label"] == [True, False, False]
    trl = pytest.importorskip("trl")
    from trl.data_utils import is_conversational

    assert is_conversational(pref[0]) and is_conversational(kto[0])
    configs = {"dpo": trl.DPOConfig, "reward": trl.RewardConfig, "kto": trl.KTOConfig}
    for name, config_class in configs.items():
        parser = trl.TrlParser((trl.ScriptArguments, config_class, trl.ModelConfig, trl.DatasetMixtureConfig))
        _, args, model, data = parser.parse_args_and_config(
            ["--config", str(tmp_path / f"{name}.yaml"), "--bf16", "false", "--use_cpu", "true"])
        recipe = read_yaml(tmp_path / f"{name}.yaml")
        assert args.learning_rate == recipe["learning_rate"]
        assert model.model_name_or_path == recipe["model_name_or_path"]
        assert data.datasets[0].columns == recipe["datasets"][0]["columns"]


def test_a_run_whose_config_holds_a_line_break_never_writes_a_command_into_a_script(demo_run, tmp_path, capsys):
    """A shared run's config.json is data: a policy name with a line break in it must stay inside the scripts'
    comments (before, `# note: ...` ended at the break and the next line ran as a command)."""
    run, config = demo_run
    evil = tmp_path / "evil"
    shutil.copytree(run, evil)
    (evil / "config.json").write_text(json.dumps({**config.to_dict(), "policy": "x\ntouch PWNED\r\n"}))
    for to in ("openrlhf", "verl"):
        assert export(capsys, "--run", evil, "--to", to, "--out", tmp_path / to) == 0
        script = (tmp_path / to / f"{to}.sh").read_bytes().decode()  # as bash reads it: a \r stays a \r
        comments = [line for line in script.splitlines() if line.startswith("#") and "PWNED" in line]
        assert comments and all("x\\ntouch PWNED\\r\\n" in line for line in comments)  # escaped in comments
        words = shlex.split(script, comments=True)  # as the shell splits it: comments dropped, quotes kept whole
        assert "touch" not in words and not any(w.startswith("PWNED") for w in words)  # never a command of its own
        assert any("x\ntouch PWNED\r\n" in w or "x\\ntouch PWNED" in w for w in words)  # a quoted value
