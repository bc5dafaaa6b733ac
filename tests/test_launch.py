"""The shipped `accelerate launch` configs parse as accelerate 1.16's launcher reads them (config file -> launch
arguments -> environment -> plugin dataclasses, without launching anything), `core.launch` refuses the engines the
trainers do not run under (and a DeepSpeed launch without DeepSpeed) in one line, and examples/train_ppo.py refuses bad
options in one line (exit 2). Launching the configs for real: tests/test_distributed.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from rlhf_lab.core.errors import SetupError
from rlhf_lab.core.hf import make_accelerator
from rlhf_lab.core.launch import honour_launch, launched_deepspeed

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
KINDS = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp2.yaml": DistributedType.FSDP,
         "deepspeed_zero2.yaml": DistributedType.DEEPSPEED, "deepspeed_zero3.yaml": DistributedType.DEEPSPEED}


def launcher_view(name: str, monkeypatch) -> tuple:
    """(the config's dataclass, the launch arguments, the environment the launcher gives each process), as
    `accelerate launch --config_file configs/accelerate/<name> --num_processes 2 x.py` computes them."""
    config = load_config_from_file(str(CONFIGS / name))  # refuses unknown top-level keys
    parser = launch_command_parser()
    known = set(vars(parser.parse_args(["x.py"])))
    nested = {**config.fsdp_config, **config.deepspeed_config}
    unknown = [key for key in nested if key not in known]  # the launcher would set and then ignore these
    assert not unknown, f"{name}: keys accelerate launch does not know: {unknown}"
    args, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(CONFIGS / name),
                                                                    "--num_processes", "2", "x.py"]))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return config, args, env


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_shipped_config_parses_into_accelerates_dataclasses(name, monkeypatch):
    text = (CONFIGS / name).read_text()
    assert text.startswith("#") and f"--config_file configs/accelerate/{name}" in text  # says how to launch it
    assert all(len(line) <= 120 for line in text.splitlines())
    config, args, env = launcher_view(name, monkeypatch)
    assert config.distributed_type == KINDS[name] and config.num_machines == 1
    assert args.num_processes == 2 and env["ACCELERATE_MIXED_PRECISION"] == "no"
    if name == "fsdp2.yaml":
        plugin = FullyShardedDataParallelPlugin()  # built from the launcher's FSDP_* variables, as in each process
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
        assert plugin.state_dict_type.name == "SHARDED_STATE_DICT" and plugin.cpu_ram_efficient_loading is False
        assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
        assert env["FSDP_OFFLOAD_PARAMS"] == "false"
    elif name.startswith("deepspeed"):
        plugin = DeepSpeedPlugin()
        stage = int(name[-6])
        assert plugin.deepspeed_config["zero_optimization"]["stage"] == stage and plugin.zero3_init_flag is False
        assert plugin.deepspeed_config["gradient_clipping"] == 1.0
        assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
    else:
        assert args.multi_gpu and not (args.use_fsdp or args.use_deepspeed)


def test_the_fsdp2_config_wraps_a_class_the_tiny_model_has():
    from accelerate.utils.dataclasses import get_module_class_from_name

    from rlhf_lab.policy.models import tiny_policy
    from rlhf_lab.train.policy_value import PolicyAndValue

    model, _ = tiny_policy("smollm2-135m")
    assert get_module_class_from_name(PolicyAndValue(model), "LlamaDecoderLayer") is not None


def test_the_readme_names_every_config():
    readme = (ROOT / "README.md").read_text()
    assert "configs/accelerate/" in readme and "examples/train_ppo.py" in readme
    assert all(f"`{name}`" in readme for name in KINDS)


@pytest.mark.parametrize("env, words", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp_version: 2"),
    ({"WORLD_SIZE": "2"}, "2 processes were launched but accelerate runs 1"),
])
def test_an_engine_the_trainers_cannot_run_under_is_refused_in_one_line(env, words, monkeypatch):
    accelerator = Accelerator(cpu=True)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SetupError, match=words) as err:
        honour_launch(accelerator)
    assert "\n" not in str(err.value)


def test_a_deepspeed_launch_without_deepspeed_installed_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(SetupError, match="asks for DeepSpeed, which is not installed: pip install") as err:
        make_accelerator("no")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert launched_deepspeed()


def test_one_process_is_left_as_it_is():
    accelerator = Accelerator(cpu=True)
    assert honour_launch(accelerator) is accelerator and accelerator.distributed_type == DistributedType.NO


@pytest.mark.parametrize("args, words", [
    (["--resume"], "no checkpoint in"),
    (["--updates", "0"], "--updates must be at least 1"),
    (["--resume", "--resume-from", "x"], "not both"),
    (["--updates", "x"], "train_ppo.py: error: argument --updates: invalid int value: 'x' (see: train_ppo.py --help)"),
])
def test_the_script_refuses_bad_options_in_one_line(args, words, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), *args, "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 2 and words in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_script_will_not_overwrite_a_run(tmp_path):
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 2 and "already holds a run: pass --resume" in result.stderr
    metrics = tmp_path / "old" / "metrics.jsonl"  # an earlier run's, its checkpoint removed: rows were appended
    metrics.parent.mkdir()
    metrics.write_text('{"update": 1}\n')
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "state.json").write_text("{}")
    for extra in ([], ["--resume-from", str(tmp_path / "ckpt")]):  # --resume-from rewrote the file from its checkpoint
        result = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--out", str(metrics.parent),
                                 *extra], capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert result.returncode == 2 and f"{metrics} holds an earlier run's metrics: choose another --out" \
            in result.stderr
    assert metrics.read_text() == '{"update": 1}\n'


def test_a_resumed_run_keeps_its_reward_and_prompts(tmp_path):
    """--reward and --prompts are not in a trainer checkpoint: --resume --reward short on a run trained on gold
    switched its reward in silence, though the docstring says the options that shape training are then ignored."""
    def script(*args):
        return subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--model", "tiny",
                               "--batch-size", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "run"), *args],
                              capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    first = script("--updates", "1", "--reward", "short")
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "script.json").read_text()) == {"reward": "short", "prompts": "curated"}
    elsewhere = ["--resume-from", str(tmp_path / "run" / "checkpoint"), "--out", str(tmp_path / "new")]
    for args in (["--reward", "gold"], ["--prompts", "chitchat"], [*elsewhere, "--reward", "gold"]):
        refused = script("--updates", "2", *(["--resume"] if "--resume-from" not in args else []), *args)
        flag = args[-2]
        assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
            f"train_ppo.py: error: the run in {tmp_path / 'run'} trained with {flag} ")
    again = script("--updates", "2", "--resume")
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["update"] == 2


def test_one_process_launched_with_the_fsdp2_config_runs_without_it(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    accelerator = Accelerator(cpu=True)
    assert honour_launch(accelerator).distributed_type == DistributedType.NO
