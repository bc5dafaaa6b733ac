"""Ablations: run a grid of RLHF runs that differ in a few config fields and compare them in one table.

    df = sweep(demo_config(smoke=True), {"ppo.kl_coef": [0.02, 0.2], "feedback.rationality": [1.0, 5.0]},
               "runs/sweep", seeds=(0, 1))
    plot_sweep(df, x="ppo.kl_coef", y="gold_reward", hue="feedback.rationality")
    curves = sweep_history("runs/sweep")      # every iteration of every run: gold reward per judgment spent

Every grid point × seed is an ordinary run directory under `out` (reopened and continued, never redone, when the
sweep is run again), so a crashed sweep resumes where it stopped. `sweep.csv` in `out` holds the returned table.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pandas as pd

from rlhf_lab.core.files import write_atomic
from rlhf_lab.loop.experiment import ExperimentConfig, RLHFRun

__all__ = ["with_fields", "grid_points", "run_name", "sweep", "sweep_history"]


def with_fields(base: ExperimentConfig, values: dict) -> ExperimentConfig:
    """A copy of `base` with dotted fields replaced, e.g. {"ppo.kl_coef": 0.1, "seed": 3}.

    A "seed" value seeds the whole run: every stage whose own seed is None follows the experiment's. A field of the
    reward model the run does not fit ("reward.*" with reward_kind "embedding", "embedding.*" with "network") is
    refused: it would change nothing."""
    config = base.to_dict()
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            if not isinstance(node.get(name), dict):
                raise KeyError(f"{dotted!r}: {name!r} is not a config section; sections: "
                               f"{sorted(k for k, v in config.items() if isinstance(v, dict))}.")
            node = node[name]
        if leaf not in node:
            raise KeyError(f"{dotted!r} is not a config field; fields here: {sorted(node)}.")
        node[leaf] = value
    result = ExperimentConfig.from_dict(config)
    idle = [dotted for dotted in values if dotted.split(".")[0] == result.unused_section]
    if idle:
        used = "embedding" if result.unused_section == "reward" else "reward"
        raise ValueError(f"{', '.join(map(repr, idle))} would change nothing: with reward_kind={result.reward_kind!r} "
                         f"the reward model reads the {used!r} section; set its fields, or set 'reward_kind' too.")
    return result


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, as {dotted field: value} dicts, in a stable order."""
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not len(list(values)):
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}.")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]


def run_name(point: dict) -> str:
    """A directory name for one grid point, readable and safe on every filesystem."""
    text = ",".join(f"{key}={value}" for key, value in point.items()) or "base"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)


def sweep(base: ExperimentConfig, grid: dict[str, list], out: str | Path, *, seeds=(0,), resume: bool = True,
          callbacks=None) -> pd.DataFrame:
    """Run `base` at every grid point for every seed; one row per (grid point, seed).

    Each row holds the grid values, the seed, and the last iteration's evaluation (gold_reward, proxy_reward, kl,
    rm/val_accuracy, win rates, …, plus `judgments`, the crowd's judgments spent). With resume=True an existing run
    directory is reopened and continued; with resume=False it is started over."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for point in grid_points(grid):
        for seed in seeds:
            values = {**point, "seed": seed}
            path = out / run_name(values)
            config = with_fields(base, values)
            if resume and (path / "config.json").exists():
                saved = json.loads((path / "config.json").read_text())
                if saved != json.loads(json.dumps(config.to_dict())):
                    raise ValueError(f"{path} holds a run with another config: remove it, or pass resume=False to "
                                     "start it over.")
                run = RLHFRun.open(path, callbacks=callbacks, log=None)
            else:
                run = RLHFRun.create(path, config, overwrite=True, callbacks=callbacks, log=None)
            evaluation = run.run()
            run.store.close()
            rows.append({**values, "run": path.name, **evaluation.iloc[-1].to_dict()})
    df = pd.DataFrame(rows)
    write_atomic(out / "sweep.csv", df.to_csv(index=False))
    return df


def sweep_history(out: str | Path) -> pd.DataFrame:
    """Every evaluated iteration of every run under `out` (iteration 0 included), with the run's grid values:
    what a "gold reward per judgment spent" curve is drawn from."""
    out = Path(out)
    table = out / "sweep.csv"
    if not table.exists():
        raise FileNotFoundError(f"No sweep at {out} (no sweep.csv): run sweep(base, grid, {str(out)!r}) first.")
    final = pd.read_csv(table)
    frames = []
    for _, row in final.iterrows():
        history = pd.read_csv(out / row["run"] / "evaluation.csv")
        frames.append(history.assign(**{k: row[k] for k in final.columns if k not in history.columns}))
    return pd.concat(frames, ignore_index=True)
