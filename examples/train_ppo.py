"""Train a policy with PPO: the same script in one process, under torchrun, or under `accelerate launch`.

    python examples/train_ppo.py --model tiny --updates 4 --out runs/ppo-tiny
    torchrun --nproc_per_node 2 examples/train_ppo.py --model tiny --updates 4 --out runs/ppo-tiny
    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2 \\
        examples/train_ppo.py --model tiny --updates 4 --out runs/ppo-tiny
    ... --updates 8 --resume          # continue the run saved in --out/checkpoint, to 8 updates in all
    ... --resume-from runs/ppo-tiny/checkpoint-2 --out runs/ppo-again    # a new run from a kept checkpoint

Each process samples its own replies to its own prompts (`--batch-size` per process) and the gradients are averaged
(DDP) or reduce-scattered (FSDP2, DeepSpeed ZeRO-2/3: deepspeed_zero2.yaml, deepspeed_zero3.yaml); on a machine
without a GPU the processes run on the CPU over gloo. The run saves
its checkpoint in --out/checkpoint at the end, keeps one in --out/checkpoint-<update> every --checkpoint-every
updates (a directory each; under FSDP2 each process writes its own part into it), and the main process appends each
update's metrics to --out/metrics.jsonl. `--resume` and `--resume-from` continue with the saved settings (the options
that shape training are then ignored; --reward and --prompts, kept in --out/script.json, are the run's own and
another is refused); `--updates` is the run's total. Configs for `accelerate launch` are in configs/accelerate/
(README: "Several processes").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROG = "train_ppo.py"
SCRIPT_SETTINGS, SCRIPT_DEFAULTS = "script.json", {"reward": "gold", "prompts": "curated"}


def build_parser() -> argparse.ArgumentParser:
    from rlhf_lab.core.script import OneLineParser  # one line for a bad option, not argparse's usage block

    parser = OneLineParser(prog=PROG, description="PPO on a causal LM, in one process or several.")
    parser.add_argument("--model", default="smollm2-135m",
                        help="alias (smollm2-135m; tiny: a random 2-layer test model), hub id or directory")
    parser.add_argument("--reward", default=None,
                        help="gold (the default), short, questions, enthusiastic, formal, or module:function "
                             "(prompt, reply) -> float; a resumed run: its own")
    parser.add_argument("--prompts", default=None,
                        help="prompt set (curated: the default, chitchat, chatterbot, all) or a .jsonl file; its "
                             "train split; a resumed run: its own")
    parser.add_argument("--updates", type=int, default=20, help="PPO updates in the whole run (a resumed run too)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per update in each process")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: PPOConfig's")
    parser.add_argument("--kl-coef", type=float, default=None, help="β of the KL penalty; default: PPOConfig's")
    parser.add_argument("--kl-target", type=float, default=None, help="adapt β towards this KL per reply (nats)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    parser.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/ppo", help="run directory: checkpoint/ and metrics.jsonl")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="also keep a checkpoint every this many updates, in --out/checkpoint-<update>")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out/checkpoint")
    parser.add_argument("--resume-from", default=None,
                        help="continue from this checkpoint directory (e.g. a kept checkpoint-<update>) into --out")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    return parser


def check(args) -> None:
    """Refuse bad option values before any model loads (ValueError: one line, exit 2)."""
    for name in ("updates", "batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.checkpoint_every < 0 or args.lora < 0:
        raise ValueError("--checkpoint-every and --lora must be 0 or more.")
    checkpoint = Path(args.out) / "checkpoint"
    if args.resume and args.resume_from:
        raise ValueError("Give --resume (the run in --out) or --resume-from DIR, not both.")
    if args.resume and not (checkpoint / "state.json").is_file():
        raise ValueError(f"--resume: no checkpoint in {checkpoint}; run once without --resume first.")
    if args.resume_from and not (Path(args.resume_from) / "state.json").is_file():
        raise ValueError(f"--resume-from: {args.resume_from} is not a checkpoint (no state.json in it).")
    if not args.resume and checkpoint.exists():
        raise ValueError(f"{checkpoint} already holds a run: pass --resume to continue it, or choose another --out.")
    resumed = Path(args.resume_from).parent if args.resume_from else checkpoint.parent if args.resume else None
    saved = json.loads((resumed / SCRIPT_SETTINGS).read_text()) if resumed and (resumed / SCRIPT_SETTINGS).is_file() \
        else {}  # the reward and prompts a run trained on (a trainer checkpoint holds neither)
    for name, default in SCRIPT_DEFAULTS.items():
        given, kept = getattr(args, name), saved.get(name)
        if given is not None and kept is not None and given != kept:
            raise ValueError(f"the run in {resumed} trained with --{name} {kept}: resume it with that (or leave "
                             f"--{name} out); for --{name} {given} start a new run (no --resume or --resume-from).")
        setattr(args, name, given or kept or default)
    if not args.resume and (Path(args.out) / "metrics.jsonl").exists():  # appended to, or (--resume-from) replaced
        raise ValueError(f"{Path(args.out) / 'metrics.jsonl'} holds an earlier run's metrics: choose another --out "
                         "(or move the file away).")


class KeepCheckpoints:
    """A callback (on every process: saving is collective) that keeps a checkpoint every `every` updates."""

    def __init__(self, out: Path, every: int):
        self.out, self.every = out, every

    def on_step_end(self, trainer, metrics) -> None:
        if self.every and trainer.update_ % self.every == 0:
            trainer.save(self.out / f"checkpoint-{trainer.update_}")


def train(args) -> dict:
    import torch

    from rlhf_lab.core.files import write_atomic
    from rlhf_lab.feedback.tastes import load_taste
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts
    from rlhf_lab.train.callbacks import PrintLogger
    from rlhf_lab.train.config import LoraSettings
    from rlhf_lab.train.ppo import PPOConfig, PPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    is_main, out, taste = int(os.environ.get("RANK", "0")) == 0, Path(args.out), load_taste(args.reward)

    def each(prompts, replies):  # a taste scores one (prompt, reply); the trainer scores lists
        return [taste(prompt, reply) for prompt, reply in zip(prompts, replies)]

    reward = "gold" if args.reward == "gold" else each  # "gold": the gold utility's batched scorer
    policy, tokenizer = load_policy(args.model, device="cpu")  # accelerate moves it to this process's device
    prompts = load_prompts(args.prompts, split="train", max_words=24)
    callbacks = [KeepCheckpoints(out, args.checkpoint_every), *([PrintLogger()] if is_main else [])]
    if is_main:  # what --resume goes on with
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / SCRIPT_SETTINGS, json.dumps({name: getattr(args, name) for name in SCRIPT_DEFAULTS}))
    options = dict(callbacks=callbacks, metrics_path=out / "metrics.jsonl" if is_main else None)
    if args.resume or args.resume_from:
        trainer = PPOTrainer.resume(args.resume_from or out / "checkpoint", policy, tokenizer, reward, **options)
        if is_main:
            trainer.history.rewrite()  # metrics.jsonl as the checkpoint knows it
    else:
        settings = {k: v for k, v in vars(args).items()
                    if k in ("learning_rate", "kl_coef", "kl_target") and v is not None}
        config = PPOConfig(batch_size=args.batch_size, seed=args.seed, mixed_precision=args.mixed_precision,
                           lora=LoraSettings(r=args.lora) if args.lora else None, log_samples_every=0,
                           sampling=SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0), **settings)
        trainer = PPOTrainer(policy, tokenizer, reward, config, **options)
    trainer.train(prompts, n_updates=args.updates, checkpoint_dir=out / "checkpoint")
    acc = trainer.accelerator
    summary = {"update": trainer.update_, "kl_coef": trainer.kl_ctl.value, "processes": acc.num_processes,
               "engine": str(acc.distributed_type).split(".")[-1], "sharded": trainer.sharded,
               "checkpoint": str(out / "checkpoint")}
    acc.end_training()
    return summary


def main(argv=None) -> int:
    from rlhf_lab.core.script import run_script

    return run_script(PROG, build_parser(), check, train, argv)


if __name__ == "__main__":
    sys.exit(main())
