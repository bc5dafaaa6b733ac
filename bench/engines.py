"""PPO under each engine of configs/accelerate: seconds per update and each process's peak memory, side by side.

    python bench/engines.py                                   # SmolLM2-135M, 2 processes x 1 thread, 3 updates
    python bench/engines.py --configs ddp,deepspeed_zero3 --repeats 2 --updates 4 --model tiny

Launches `examples/train_ppo.py` with `accelerate launch --config_file configs/accelerate/<config>.yaml
--num_processes N` for every config in turn, repeats interleaved (config A, B, C, then A, B, C again), full
fine-tuning in float32 (--mixed-precision no, the same on every engine). Per run: the median of the updates'
`time/update_s` after the first (update 1 includes warm-up), the last update's generation and optimisation seconds, and
the peak resident memory of the largest launched process (`ru_maxrss` of a fresh wrapper's children: the launcher and
its workers). Each process holds a frozen reference copy, and under FSDP2 and ZeRO-3 a whole copy to sample from, so
sharding saves the gradients' and AdamW's memory (12 of 16 bytes a parameter), not the weights'.
Prints a line per run; the last line is one JSON object (machine, and per config: update_s, generation_s,
optimisation_s, peak_rss_gib).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rlhf_lab.core.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = """import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)"""  # a fresh process per launch, so that ru_maxrss is this launch's largest process (KiB)


def launch(config: str, args, out: Path) -> dict:
    """One launch of examples/train_ppo.py under `config`; its figures."""
    config_file = ROOT / "configs" / "accelerate" / f"{config}.yaml"
    out.mkdir(parents=True)  # the wrapper writes peak_kib here even when the launch fails before the script runs
    command = [sys.executable, "-c", WRAPPER, str(out / "peak_kib"), sys.executable, "-m",
               "accelerate.commands.launch", "--config_file", str(config_file), "--num_processes", str(args.processes),
               str(ROOT / "examples" / "train_ppo.py"), "--model", args.model, "--reward", "short", "--updates",
               str(args.updates), "--batch-size", str(args.batch_size), "--mixed-precision", "no", "--threads",
               str(args.threads), "--seed", "0", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    if result.returncode != 0 or not (out / "metrics.jsonl").exists():
        raise SystemExit(f"{config} failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"update_s": statistics.median(r["time/update_s"] for r in rows[1:] or rows),
            "generation_s": rows[-1]["time/generation_s"], "optimisation_s": rows[-1]["time/optimisation_s"],
            "peak_rss_gib": int((out / "peak_kib").read_text()) / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="ddp,fsdp2,deepspeed_zero2,deepspeed_zero3")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per update in each process")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    configs = args.configs.split(",")
    unknown = [c for c in configs if not (ROOT / "configs" / "accelerate" / f"{c}.yaml").is_file()]
    if unknown:
        parser.error(f"no config {unknown} in configs/accelerate/; choose among "
                     f"{sorted(p.stem for p in (ROOT / 'configs' / 'accelerate').glob('*.yaml'))}")
    if any(c.startswith("deepspeed") for c in configs) and importlib.util.find_spec("deepspeed") is None:
        parser.error("DeepSpeed is not installed (pip install --no-build-isolation deepspeed), so the deepspeed "
                     "configs cannot run: pass --configs ddp,fsdp2")  # before minutes of the other engines' runs
    figures: dict[str, list[dict]] = {config: [] for config in configs}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for config in configs:
                run = launch(config, args, Path(scratch) / f"{config}-{repeat}")
                figures[config].append(run)
                print(f"repeat {repeat + 1} {config:>16}: {run['update_s']:.2f} s/update (generation "
                      f"{run['generation_s']:.2f}, optimisation {run['optimisation_s']:.2f}), peak process "
                      f"{run['peak_rss_gib']:.2f} GiB",
                      flush=True)
    summary = {config: {key: [run[key] for run in runs] for key in runs[0]} for config, runs in figures.items()}
    print(json.dumps({"machine": machine_info(), "model": args.model, "processes": args.processes,
                      "threads_per_process": args.threads, "updates": args.updates, "batch_size": args.batch_size,
                      "engines": summary}))


if __name__ == "__main__":
    main()
