"""Does the lab's default precision train like float32? PPO's first updates at the standard setting, float32
throughout ("full") beside the defaults ("full_auto": bf16 autocast and a bf16 sampling twin on a CPU with native
bf16), for several seeds, run one after the other and interleaved (`bench/ppo.py --variant`).

Per seed and path: the gold score and KL of every update. The question is whether the two paths' curves differ by
more than one path's curves differ between seeds (run-to-run noise). Figures: each path's mean score over updates
2..N per seed; the paired difference auto − float32 per seed, its mean and a t interval over seeds; the seed-to-seed
standard deviation of the float32 path's mean score; and each path's seconds per update. Ends with one JSON line.

    python bench/ppo_precision.py [--seeds 3] [--updates 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from rlhf_lab.core.machine import machine_info

PATHS = ("full", "full_auto")
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student t, 97.5 %


def run(variant: str, seed: int, args) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("ppo.py")), "--variant", variant, "--updates",
                          str(args.updates), "--threads", str(args.threads), "--seed", str(seed), "--model", args.model],
                         capture_output=True, text=True)
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{variant} seed {seed} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m", help="policy (\"tiny\" for a smoke run of this script)")
    args = parser.parse_args()
    runs = {path: {} for path in PATHS}
    for seed in range(args.seeds):
        for path in (PATHS if seed % 2 == 0 else reversed(PATHS)):  # alternate which path goes first
            result = runs[path][seed] = run(path, seed, args)
            print(f"seed {seed} {path:>9}: scores " + " ".join(f"{x:.3f}" for x in result["scores"]) +
                  " | kl " + " ".join(f"{x:.2f}" for x in result["kl"]) + f" | {result['s_per_update']:.1f} s/update",
                  file=sys.stderr)
    mean_score = {path: [statistics.mean(runs[path][s]["scores"][1:]) for s in range(args.seeds)] for path in PATHS}
    diffs = [a - b for a, b in zip(mean_score["full_auto"], mean_score["full"])]
    figures = {f"{path}_mean_score_by_seed": [round(x, 4) for x in mean_score[path]] for path in PATHS}
    figures["auto_minus_float32_by_seed"] = [round(d, 4) for d in diffs]
    figures["auto_minus_float32_mean"] = round(statistics.mean(diffs), 4)
    if args.seeds > 1:
        half = T975.get(args.seeds - 1, 1.96) * statistics.stdev(diffs) / args.seeds ** 0.5
        figures["auto_minus_float32_ci"] = [round(statistics.mean(diffs) - half, 4),
                                            round(statistics.mean(diffs) + half, 4)]
        figures["float32_seed_sd"] = round(statistics.stdev(mean_score["full"]), 4)
    for path in PATHS:
        figures[f"{path}_final_kl_by_seed"] = [round(runs[path][s]["kl"][-1], 3) for s in range(args.seeds)]
        figures[f"{path}_s_per_update"] = round(statistics.median(runs[path][s]["s_per_update"]
                                                                 for s in range(args.seeds)), 2)
    figures["curves"] = {path: {str(s): [round(x, 4) for x in runs[path][s]["scores"]] for s in range(args.seeds)}
                         for path in PATHS}
    print(json.dumps({"machine": machine_info(), "model": args.model, "updates": args.updates,
                      "seeds": args.seeds, **figures}))


if __name__ == "__main__":
    main()
