"""examples/train_dpo.py: DPO (and KTO) on exported judgments, the same script in one process and under
`accelerate launch` with the FSDP2 config (2 CPU processes): the model it writes is the same; bad input is refused in
one line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import check_launch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_dpo.py"
ARGS = ["--model", "tiny", "--threads", "1", "--batch-size", "4", "--learning-rate", "1e-3", "--mixed-precision", "no"]


def preference_rows() -> list[dict]:
    prompts = ["hi", "hello there", "what is up", "tell me", "good morning", "how are you"]
    rows = [{"prompt": p, "chosen": f"well, {p}, gladly and at length", "rejected": "no"} for p in prompts]
    for row in rows[::2]:  # TRL's conversational form, as `rlhf-lab export` writes it for chat models
        row.update(prompt=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": row["prompt"]}],
                   chosen=[{"role": "assistant", "content": row["chosen"]}],
                   rejected=[{"role": "assistant", "content": row["rejected"]}])
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(*args: str, launch: str | None = None, logs: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if launch is None:
        env.pop("WORLD_SIZE", None)
        command = [sys.executable, str(SCRIPT), *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "configs" / "accelerate" / launch), "--num_processes", "2", "--log_dir", str(logs),
                   "--tee", "3", str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_bad_data_is_refused_in_one_line(tmp_path):
    missing = run("--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "a"), *ARGS)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"train_dpo.py: error: --data: no file {tmp_path / 'nope.jsonl'}; "
                                                   "write one with `rlhf-lab export --to trl`."]
    thumbs = write_jsonl(tmp_path / "unpaired.jsonl", [{"prompt": "hi", "completion": "yo", "label": True}])
    wrong = run("--data", str(thumbs), "--out", str(tmp_path / "b"), *ARGS)  # KTO's rows given to DPO
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "dpo needs rows with prompt, chosen, rejected (missing ['chosen', 'rejected'])" in wrong.stderr
    if not torch.cuda.is_available():  # fp16 with loss scaling needs a GPU: refused here, not run in float32
        data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows())
        fp16 = run("--data", str(data), "--out", str(tmp_path / "c"), *ARGS[:-1], "fp16")
        assert fp16.returncode == 2 and "Traceback" not in fp16.stderr
        [line] = fp16.stderr.strip().splitlines()
        assert line.startswith("train_dpo.py: error: mixed_precision='fp16'") and "needs a CUDA GPU" in line


def test_an_earlier_runs_metrics_are_not_appended_to(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows())
    metrics = tmp_path / "old" / "metrics.jsonl"  # an earlier run's, its model moved away
    metrics.parent.mkdir()
    metrics.write_text('{"update": 1}\n')
    result = run("--data", str(data), "--out", str(metrics.parent), *ARGS)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"train_dpo.py: error: {metrics} holds an earlier run's metrics: choose another --out (or move the file away)."]
    assert metrics.read_text() == '{"update": 1}\n'


def one_process_run(base: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """examples/train_dpo.py in one process on `preference_rows()` into base/one: (its data file, its finished run)."""
    data = write_jsonl(base / "preference.jsonl", preference_rows())
    one = run("--data", str(data), "--out", str(base / "one"), *ARGS)
    assert one.returncode == 0, one.stderr[-3000:]
    return data, one


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("train_dpo")
    data, one = one_process_run(base)
    fsdp = run("--data", str(data), "--out", str(base / "fsdp"), *ARGS, launch="fsdp2.yaml", logs=base / "logs")
    model = base / "fsdp" / "model" / "model.safetensors"
    check_launch(fsdp, base / "logs", [] if model.exists() else [str(model)])
    return base, summary(one.stdout), summary(fsdp.stdout)


def summary(stdout: str) -> dict:
    """The script's JSON line (under `accelerate launch --tee` prefixed with the process's name)."""
    line = [line for line in stdout.splitlines() if '{"method"' in line][-1]
    return json.loads(line[line.index("{"):])


def test_one_process_and_fsdp2_write_the_same_model(runs):
    from rlhf_lab.policy.models import load_policy

    base, one, fsdp = runs
    assert (one["processes"], fsdp["processes"], fsdp["engine"]) == (1, 2, "FSDP")
    assert one["updates"] == fsdp["updates"] == 2  # 6 pairs in batches of 4: 4 and 2
    assert fsdp["loss"] == pytest.approx(one["loss"], abs=1e-5)
    mine, theirs = (load_file(str(base / run / "model" / "model.safetensors")) for run in ("one", "fsdp"))
    assert mine.keys() == theirs.keys()
    for name, value in mine.items():
        torch.testing.assert_close(theirs[name], value, rtol=0, atol=1e-5, msg=name)
    start = load_policy("tiny", device="cpu")[0].state_dict()
    assert max(float((mine[n] - start[n]).abs().max()) for n in mine) > 1e-3  # training moved the weights
    reloaded, _ = load_policy(str(base / "one" / "model"), device="cpu")  # the written model loads as a policy
    torch.testing.assert_close(reloaded.state_dict()["lm_head.weight"], mine.get("lm_head.weight",
                                                                                 mine["model.embed_tokens.weight"]))
    metrics = [json.loads(line) for line in (base / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [m["update"] for m in metrics] == [1, 2]


def test_kto_on_thumbs_writes_a_trained_model(tmp_path):
    rows = [{"prompt": p, "completion": c, "label": label} for p in ("hi", "tell me", "why", "ok then")
            for c, label in (("gladly, and at some length", True), ("no", False))]
    data = write_jsonl(tmp_path / "unpaired.jsonl", rows)
    result = run("--method", "kto", "--data", str(data), "--out", str(tmp_path / "kto"), *ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(result.stdout)["updates"] == 2  # 8 examples in batches of 4
    trained = load_file(str(tmp_path / "kto" / "model" / "model.safetensors"))
    from rlhf_lab.policy.models import load_policy

    start = load_policy("tiny", device="cpu")[0].state_dict()
    assert max(float((trained[n] - start[n]).abs().max()) for n in trained) > 1e-3


def script():
    """examples/train_dpo.py as a module, to run in this process (a test can then stop it mid-run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_dpo_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Stop(Exception):
    """The crash: raised in the optimiser step after update `n`."""


def test_a_stopped_run_resumes_from_its_checkpoint_in_one_process_or_two(tmp_path, monkeypatch, capsys):
    from rlhf_lab.train.dpo import DPOTrainer

    data = write_jsonl(tmp_path / "preference.jsonl", preference_rows())  # 6 pairs in batches of 2: 3 per epoch
    args = ["--data", str(data), "--model", "tiny", "--batch-size", "2", "--learning-rate", "1e-3",
            "--mixed-precision", "no", "--epochs", "2", "--checkpoint-every", "2"]
    train_dpo = script()
    assert train_dpo.main([*args, "--out", str(tmp_path / "straight")]) == 0
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    step = DPOTrainer.step

    def crashing(self, *a, **k):
        if self.update_ == 5:
            raise Stop
        return step(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(DPOTrainer, "step", crashing)
        for out in ("one", "two"):
            with pytest.raises(Stop):
                train_dpo.main([*args, "--out", str(tmp_path / out)])  # checkpoints at updates 2 and 4
    capsys.readouterr()
    metrics = tmp_path / "one" / "metrics.jsonl"
    assert [json.loads(line)["update"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5]
    # a new run into a stopped run's directory, a resume of nothing, a resume with other data or as another method
    refusals = [([*args, "--out", str(tmp_path / "one")], "holds a stopped run: pass --resume to continue it"),
                ([*args, "--out", str(tmp_path / "new"), "--resume"], "--resume: no checkpoint in"),
                ([*args, "--out", str(tmp_path / "one"), "--resume", "--method", "kto"], "is not a kto run"),
                ([*args, "--out", str(tmp_path / "straight"), "--resume"], "has finished (its model is in")]
    other = write_jsonl(tmp_path / "other.jsonl", preference_rows()[::-1])  # the same pairs in another order
    refusals.append(([*args, "--out", str(tmp_path / "one"), "--resume", "--data", str(other)],
                     "resumes a fit on other data"))
    for argv, message in refusals:
        assert train_dpo.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    # resumed in this process, and (the other stopped run) in two under FSDP2: each takes its part of the checkpoint
    assert train_dpo.main([*args, "--out", str(tmp_path / "one"), "--resume"]) == 0
    assert [json.loads(line)["update"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    two = run(*args, "--out", str(tmp_path / "two"), "--resume", "--threads", "1", launch="fsdp2.yaml",
              logs=tmp_path / "logs")
    model = tmp_path / "two" / "model" / "model.safetensors"
    check_launch(two, tmp_path / "logs", [] if model.exists() else [str(model)])
    assert summary(two.stdout)["updates"] == 6
    for run_dir in ("one", "two"):
        resumed = load_file(str(tmp_path / run_dir / "model" / "model.safetensors"))
        assert resumed.keys() == straight.keys()
        for name, value in straight.items():
            torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-5, msg=f"{run_dir}: {name}")
