"""DPO and KTO under `accelerate launch` with the shipped configs (configs/accelerate/ddp.yaml and fsdp2.yaml, 2 CPU
processes): each process trains on its share of every batch, and the weights they end with are the ones one process
ends with, up to float rounding. The same script runs in one process and under both configs: offline DPO (a last
batch shorter than the processes' shares), iterative DPO (sampling from the whole weights under FSDP2), KTO, and
DPO with LoRA (its reference is the sharded policy with its adapters off); the offline DPO run's checkpoint (sharded
under FSDP2) resumes with the weights it saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import check_launch

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("dpo", "iterative", "kto", "lora")

SCRIPT = textwrap.dedent("""
    import json, sys
    import pandas as pd, torch
    from safetensors.torch import save_file
    from torch.distributed.tensor import DTensor
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import tiny_policy
    from rlhf_lab.train.config import LoraSettings
    from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
    from rlhf_lab.train.kto import KTOConfig, KTOTrainer

    torch.set_num_threads(1)
    out = sys.argv[1]
    prompts = ["hi", "hello there", "what is up", "tell me", "good morning", "how are you", "say something", "why",
               "ok then"]
    long = ["yes, gladly and at length", "sure thing, here it is", "all is well here today", "fine, then I will",
            "a very good morning to you", "quite well, thank you kindly", "something long and kind", "because so",
            "then we go on together"]
    short = ["no", "nope", "meh", "x", "hm", "bad", "eh", "no.", "k"]
    pairs = pd.DataFrame({"prompt": prompts, "chosen": long, "rejected": short})
    thumbs = pd.DataFrame({"prompt": prompts * 2, "completion": long + short, "label": [True] * 9 + [False] * 9})
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0)

    def whole(trainer):  # every process must call this under FSDP2 (full_tensor gathers)
        return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().float().clone()
                for n, p in trainer.policy.named_parameters() if p.requires_grad}

    def dpo(**kw):
        policy, tokenizer = tiny_policy("smollm2-135m", seed=0)
        return DPOTrainer(policy, tokenizer, DPOConfig(batch_size=4, micro_batch_size=1, mixed_precision="no",
                                                       sampling=sampling, **kw), callbacks=[])

    trainers = {"dpo": dpo(learning_rate=1e-3), "iterative": dpo(learning_rate=1e-3),
                "lora": dpo(learning_rate=1e-2, lora=LoraSettings(r=4))}
    policy, tokenizer = tiny_policy("smollm2-135m", seed=0)
    trainers["kto"] = KTOTrainer(policy, tokenizer, KTOConfig(batch_size=4, learning_rate=1e-3, mixed_precision="no",
                                                              sampling=sampling), callbacks=[])
    before = {name: whole(t) for name, t in trainers.items()}
    trainers["dpo"].fit(pairs)  # batches of 4, 4 and 1: the last leaves one process a row at weight 0
    trainers["dpo"].save(f"{out}/dpo-checkpoint")  # under FSDP2 each process writes its part
    again = DPOTrainer.resume(f"{out}/dpo-checkpoint", tiny_policy("smollm2-135m", seed=0)[0], tokenizer,
                              callbacks=[])
    resumed_gap = max(float((a - b).abs().max()) for a, b in zip(whole(again).values(),
                                                                  whole(trainers["dpo"]).values()))
    trainers["iterative"].train_iterative(prompts, lambda texts: [float(len(t)) for t in texts], rounds=2,
                                          pairs_per_round=3)
    trainers["kto"].fit(thumbs)
    trainers["lora"].fit(pairs)
    acc = trainers["dpo"].accelerator
    for name, t in trainers.items():
        after = whole(t)
        if acc.is_main_process:
            save_file(after, f"{out}/{name}.safetensors")
            save_file(before[name], f"{out}/{name}_before.safetensors")
    if acc.is_main_process:
        json.dump({"resumed": {"gap": resumed_gap, "update": again.update_, "pairs": again.pairs_seen_}},
                  open(f"{out}/resumed.json", "w"))
        json.dump({name: {"world": t.accelerator.num_processes, "losses": [r["loss"] for r in t.history.rows],
                          "sharded": any(isinstance(p, DTensor) for p in t.policy.parameters()),
                          "pairs": t.pairs_seen_ if hasattr(t, "pairs_seen_") else t.examples_seen_}
                   for name, t in trainers.items()}, open(f"{out}/runs.json", "w"))
    acc.end_training()
""")


def run(tmp_path: Path, config: str | None) -> Path:
    """SCRIPT in one process (config None) or under `accelerate launch --config_file configs/accelerate/<config>` with
    2 CPU processes, 1 thread each; returns the folder it wrote to."""
    out, script = tmp_path / (config or "one"), tmp_path / "train.py"
    out.mkdir()
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if config is None:
        env.pop("WORLD_SIZE", None)
        result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600,
                                env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                 str(ROOT / "configs" / "accelerate" / config), "--num_processes", "2", "--log_dir",
                                 str(out / "logs"), "--tee", "3", str(script), str(out)],
                                capture_output=True, text=True, timeout=600, env=env)
        check_launch(result, out / "logs", [] if (out / "runs.json").exists() else ["runs.json"])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("scoring")
    return {config: run(base, config) for config in (None, "ddp.yaml", "fsdp2.yaml")}


def weights(out: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / f"{name}.safetensors"))


@pytest.mark.parametrize("name", RUNS)
def test_ddp_and_fsdp2_train_as_one_process_does(runs, name):
    one, ddp, fsdp = (json.loads((runs[c] / "runs.json").read_text())[name] for c in (None, "ddp.yaml", "fsdp2.yaml"))
    assert (one["world"], ddp["world"], fsdp["world"]) == (1, 2, 2)
    assert (one["sharded"], ddp["sharded"], fsdp["sharded"]) == (False, False, True)
    assert one["pairs"] == ddp["pairs"] == fsdp["pairs"] > 0  # every process counts the whole batches
    assert len(one["losses"]) == len(ddp["losses"]) == len(fsdp["losses"]) >= 2
    # the metrics are the whole batch's, gathered from both processes' shares
    assert ddp["losses"] == pytest.approx(one["losses"], abs=1e-5)
    assert fsdp["losses"] == pytest.approx(one["losses"], abs=1e-5)
    start, alone = weights(runs[None], f"{name}_before"), weights(runs[None], name)
    assert max(float((alone[n] - start[n]).abs().max()) for n in alone) > 1e-3  # training moved the weights
    if name == "lora":
        assert alone and all("lora_" in n for n in alone)  # only the adapters train
    for config in ("ddp.yaml", "fsdp2.yaml"):
        theirs = weights(runs[config], name)
        assert theirs.keys() == alone.keys()
        for n, value in alone.items():
            torch.testing.assert_close(theirs[n], value, rtol=0, atol=1e-5, msg=f"{config} {name}: {n}")


def test_batch_shares_by_hand():
    from rlhf_lab.train.scorer import batch_share

    assert batch_share(5, 0, 1, 2) == [([0, 1], [1.0, 1.0]), ([2, 3], [1.0, 1.0]), ([4], [1.0])]  # one process
    assert batch_share(5, 0, 2, 2) == [([0, 2], [1.0, 1.0]), ([4], [1.0])]
    assert batch_share(5, 1, 2, 2) == [([1, 3], [1.0, 1.0]), ([0], [0.0])]  # row 0 fills in, counting for nothing
    assert batch_share(1, 1, 2, 4) == [([0], [0.0])]  # a batch smaller than the processes


@pytest.mark.parametrize("config", [None, "ddp.yaml", "fsdp2.yaml"])
def test_a_dpo_checkpoint_resumes_the_weights_it_saved(runs, config):
    """Saved after the offline fit (under FSDP2 a part per process) and resumed in a new trainer: the same weights
    and counters."""
    resumed = json.loads((runs[config] / "resumed.json").read_text())["resumed"]
    runs_json = json.loads((runs[config] / "runs.json").read_text())["dpo"]
    assert resumed["gap"] == 0 and resumed["update"] == len(runs_json["losses"]) and resumed["pairs"] == 9
    parts = sorted(p.name for p in (runs[config] / "dpo-checkpoint").iterdir())
    assert ("rank00001.safetensors" in parts) == (config == "fsdp2.yaml")
