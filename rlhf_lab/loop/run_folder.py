"""The layout of a run directory (`loop.experiment.RLHFRun`'s): iteration folders, the names a run writes, the policy
behind each iteration's samples, an iteration's evaluation as written, and deleting a run (only a run).

    iteration_dir("runs/demo", 2)          # runs/demo/iter_002
    policy_after("smollm2-135m", 2)        # "smollm2-135m@iter_002": its weights are in iter_002/ppo
    eval_records("runs/demo", 2)           # [{"prompt", "response", "gold", "iteration", "model", "seed"}, ...]
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from rlhf_lab.core.files import read_json
from rlhf_lab.loop.run_config import ExperimentConfig

__all__ = ["iteration_dir", "policy_after", "eval_records", "ITERATION", "RUN_ENTRIES", "delete_run"]


def iteration_dir(run_dir: str | Path, k: int) -> Path:
    """Iteration k's folder in a run directory (samples, eval samples, reward model, PPO checkpoint, DONE)."""
    return Path(run_dir) / f"iter_{k:03d}"


def policy_after(base: str, k: int) -> str:
    """The name of a run's policy after iteration k: the base model's for k = 0, else `base@iter_00k` (its weights
    are in iter_00k/ppo). Iteration k's pairs are sampled from `policy_after(base, k − 1)`, its evaluation from
    `policy_after(base, k)`."""
    return base if k <= 0 else f"{base}@iter_{k:03d}"


def eval_records(run_dir: str | Path, k: int) -> list[dict]:
    """Iteration k's evaluation as written: one record (prompt, response, gold, iteration, model, seed) per held-out
    reply."""
    path = iteration_dir(run_dir, k) / "eval_samples.jsonl"
    if not path.is_file():
        raise ValueError(f"iteration {k} has not been evaluated in {run_dir}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


ITERATION = re.compile(r"iter_(\d{3})")
RUN_ENTRIES = re.compile(r"config\.json|feedback\.db(-wal|-shm|-journal|-drafts)?|evaluation\.csv|"
                         rf"ppo_metrics\.jsonl|samples\.jsonl|report|tensorboard|{ITERATION.pattern}|"
                         r"\..+\.(tmp|old)-[0-9a-f]{8}")
"""What a run directory holds (the hidden names are atomic writes' leftovers; `feedback.db-drafts` the raters'
unsubmitted answers for its store, `feedback.drafts`): all `overwrite` may delete."""


def delete_run(path: Path) -> None:
    """Delete the run in `path`, refusing a folder that holds anything a run does not write (or whose config.json
    is not a run's): overwrite=True must never take a user's other files with it."""
    try:
        ExperimentConfig.from_dict(read_json(path / "config.json"))
    except Exception as err:  # noqa: BLE001 - any reason it is not a run's config
        raise ValueError(f"{path} is not an rlhf-lab run (its config.json does not read as one: {err}); nothing was "
                         "deleted: choose another folder.") from None
    foreign = sorted(p.name for p in path.iterdir() if not RUN_ENTRIES.fullmatch(p.name))
    if foreign:
        raise ValueError(f"{path} holds files a run does not write ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}); nothing was deleted: move them out, or choose "
                         "another folder.")
    for entry in path.iterdir():  # the folder itself stays: the lock of the kernel deleting it (`core.locks`)
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
