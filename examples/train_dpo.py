"""Train a policy with DPO (or KTO) on judgments: the same script in one process, under torchrun, or under
`accelerate launch`.

    rlhf-lab export --store feedback.db --to trl --out exported          # preference.jsonl, unpaired.jsonl
    python examples/train_dpo.py --data exported/preference.jsonl --model tiny --out runs/dpo-tiny
    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2 \\
        examples/train_dpo.py --data exported/preference.jsonl --model tiny --out runs/dpo-tiny
    ... --method kto --data exported/unpaired.jsonl                           # KTO on thumbs up / down
    ... --data feedback.db                                                    # straight from a feedback store
    ... --checkpoint-every 50          # keep the run's checkpoint in --out/checkpoint, replaced every 50 updates
    ... --checkpoint-every 50 --resume # after a stop: go on from it, on the same --data

--data: TRL's rows as `rlhf-lab export` writes them, JSON Lines with prompt, chosen, rejected (DPO) or prompt,
completion, label (KTO), as text or as conversations (the last user turn is the prompt, the last turn of each reply
the reply: the trainer applies the model's chat template itself); or a feedback store (.db). Each process scores
its share of every batch and the gradients are averaged (DDP) or reduce-scattered (FSDP2, DeepSpeed ZeRO); on a
machine without a GPU the processes run on the CPU over gloo. The main process writes --out/model (the trained policy, or with --lora its
adapter, in safetensors; under FSDP2 gathered from every process's shards) and --out/metrics.jsonl, and prints one
JSON line. `--resume` continues a stopped run from its checkpoint with the saved settings (the options that shape
training are then ignored, except --epochs: the run's total) on the data it began with (other data is refused), in
any number of processes (under FSDP2 each process writes its part of the checkpoint). Configs for `accelerate
launch` are in configs/accelerate/ (README: "Several processes").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROG = "train_dpo.py"
COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}


def build_parser() -> argparse.ArgumentParser:
    from rlhf_lab.core.script import OneLineParser  # one line for a bad option, not argparse's usage block

    parser = OneLineParser(prog=PROG, description="DPO or KTO on a causal LM, in one process or several.")
    parser.add_argument("--data", required=True, help="TRL's rows in a .jsonl file (rlhf-lab export), or a store .db")
    parser.add_argument("--method", choices=tuple(COLUMNS), default="dpo")
    parser.add_argument("--model", default="smollm2-135m",
                        help="alias (smollm2-135m; tiny: a random 2-layer test model), hub id or directory")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the data (default 1; a resumed run: "
                                                                   "its own)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs (DPO) or examples (KTO) per optimiser step, "
                                                                  "shared among the processes")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: DPOConfig's / KTOConfig's")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    parser.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/dpo", help="run directory: model/ and metrics.jsonl")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="save the run's checkpoint in --out/checkpoint every this many updates (replacing it)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out/checkpoint")
    return parser


def check(args) -> None:
    """Refuse bad option values before any model loads (ValueError: one line, exit 2)."""
    epochs = 1 if args.epochs is None else args.epochs  # None: the default, or a resumed run's own
    if min(epochs, args.batch_size) < 1 or min(args.lora, args.checkpoint_every) < 0:
        raise ValueError("--epochs and --batch-size must be at least 1, --lora and --checkpoint-every 0 or more.")
    if args.method == "kto" and args.batch_size < 2:
        raise ValueError("KTO's reference point needs --batch-size of at least 2.")
    if not Path(args.data).is_file():
        raise ValueError(f"--data: no file {args.data}; write one with `rlhf-lab export --to trl`.")
    model, checkpoint = Path(args.out, "model"), Path(args.out, "checkpoint")
    if model.exists():
        raise ValueError(f"the run in {args.out} has finished (its model is in {model}): start a new --out."
                         if args.resume else f"{model} already holds a model: choose another --out.")
    if args.resume and not (checkpoint / "state.json").is_file():
        raise ValueError(f"--resume: no checkpoint in {checkpoint}; a run keeps one with --checkpoint-every N.")
    if not args.resume and checkpoint.exists():
        raise ValueError(f"{checkpoint} holds a stopped run: pass --resume to continue it, or choose another --out.")
    if not args.resume and Path(args.out, "metrics.jsonl").exists():  # the new run's rows would follow its rows
        raise ValueError(f"{Path(args.out, 'metrics.jsonl')} holds an earlier run's metrics: choose another --out "
                         "(or move the file away).")


def _text(value, role_wanted: str) -> str:
    """A row's prompt or reply as text: a string as it is; a conversation's last `role_wanted` turn."""
    if isinstance(value, str):
        return value
    turns = [m for m in value if isinstance(m, dict) and m.get("role") == role_wanted]
    if not turns:
        raise ValueError(f"--data: a conversation without a {role_wanted} turn: {str(value)[:80]}")
    return str(turns[-1].get("content", ""))


def read_rows(path: Path, method: str):
    """The judgments as the trainer takes them: a FeedbackStore for a .db, else a DataFrame of TRL's rows."""
    import pandas as pd

    if path.suffix == ".db":
        from rlhf_lab.feedback.store import FeedbackStore

        return FeedbackStore(path)
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"--data: {path} is not JSON Lines ({err.msg} on line {err.lineno})") from None
    missing = set(COLUMNS[method]) - set().union(*(row.keys() for row in rows)) if rows else set(COLUMNS[method])
    if missing:
        written = "preference" if method == "dpo" else "unpaired"
        raise ValueError(f"--data: {method} needs rows with {', '.join(COLUMNS[method])} (missing {sorted(missing)}); "
                         f"`rlhf-lab export --to trl` writes them ({written}.jsonl).")
    frame = pd.DataFrame({"prompt": [_text(r["prompt"], "user") for r in rows]})
    for column in COLUMNS[method][1:]:
        frame[column] = [r[column] if column == "label" else _text(r[column], "assistant") for r in rows]
    return frame


def train(args) -> dict:
    import torch

    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.train.config import LoraSettings
    from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
    from rlhf_lab.train.kto import KTOConfig, KTOTrainer
    from rlhf_lab.train.trainer_checkpoint import saved_state

    if args.threads:
        torch.set_num_threads(args.threads)
    is_main, out = int(os.environ.get("RANK", "0")) == 0, Path(args.out)
    checkpoint = out / "checkpoint"
    config_class, trainer_class = (DPOConfig, DPOTrainer) if args.method == "dpo" else (KTOConfig, KTOTrainer)
    if args.resume:
        try:
            config = config_class.from_dict(saved_state(checkpoint)["config"])
        except ValueError:
            raise ValueError(f"--resume: the run in {args.out} is not a {args.method} run: pass the --method it "
                             "began with.") from None
    else:
        settings = {"learning_rate": args.learning_rate} if args.learning_rate is not None else {}
        config = config_class(batch_size=args.batch_size, beta=args.beta, epochs=args.epochs or 1, seed=args.seed,
                              mixed_precision=args.mixed_precision,
                              lora=LoraSettings(r=args.lora) if args.lora else None, **settings)
    data = read_rows(Path(args.data), args.method)
    policy, tokenizer = load_policy(args.model, device="cpu")  # accelerate moves it to this process's device
    trainer = trainer_class(policy, tokenizer, config, callbacks=None if is_main else [],  # None: its printed log
                            metrics_path=out / "metrics.jsonl" if is_main else None)
    if args.resume:
        trainer.load_state(checkpoint)
        if is_main:
            trainer.history.rewrite()  # metrics.jsonl as the checkpoint knows it
    trainer.fit(data, epochs=args.epochs, checkpoint_dir=checkpoint if args.checkpoint_every else None,
                checkpoint_every=args.checkpoint_every)
    whole = trainer.whole_policy()  # every process calls it: under FSDP2 it gathers the shards
    acc = trainer.accelerator
    if acc.is_main_process:
        whole.save_pretrained(out / "model", safe_serialization=True)
        tokenizer.save_pretrained(out / "model")
    acc.wait_for_everyone()
    summary = {"method": args.method, "updates": trainer.update_, "processes": acc.num_processes,
               "engine": str(acc.distributed_type).split(".")[-1], "loss": trainer.history.rows[-1]["loss"],
               "model": str(out / "model")}
    acc.end_training()
    return summary


def main(argv=None) -> int:
    from rlhf_lab.core.script import run_script

    return run_script(PROG, build_parser(), check, train, argv)


if __name__ == "__main__":
    sys.exit(main())
