"""Ablations: run a grid of RLHF runs that differ in a few config fields and compare them in one table.

    df = sweep(demo_config(smoke=True), {"ppo.kl_coef": [0.02, 0.2], "feedback.rationality": [1.0, 5.0]},
               "runs/sweep", seeds=(0, 1))
    plot_sweep(df, x="ppo.kl_coef", y="gold_reward", hue="feedback.rationality")
    curves = sweep_history("runs/sweep")      # every iteration of every run: gold reward per judgment spent
    contrasts("runs/sweep", "ppo.kl_coef")     # each value against the first, paired by seed: a difference or not?

Every grid point × seed is an ordinary run directory under `out` (reopened and continued, never redone, when the
sweep is run again), so a crashed sweep resumes where it stopped. `sweep.csv` in `out` holds the returned table.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pandas as pd

from rlhf_lab.core.files import write_atomic
from rlhf_lab.loop.evaluation import paired_gain, t_interval, verdict
from rlhf_lab.loop.experiment import ExperimentConfig, RLHFRun
from rlhf_lab.loop.run_folder import eval_records

__all__ = ["with_fields", "grid_points", "run_name", "sweep", "sweep_history", "contrasts"]


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
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or not (seeds := list(seeds)):
        raise ValueError(f"seeds must be a non-empty list of seeds, e.g. seeds=(0, 1), got {seeds!r} (no seed: no "
                         "run, and sweep.csv would be replaced by an empty table).")
    out = Path(out)
    runs = [{**point, "seed": seed} for point in grid_points(grid) for seed in seeds]
    configs = [with_fields(base, values) for values in runs]  # a bad value is refused now, not after hours of runs
    saved = [out / run_name(values) / "config.json" for values in runs]
    for path, config in zip(saved, configs):  # and a changed config, before any run goes on
        if resume and path.exists() and json.loads(path.read_text()) != json.loads(json.dumps(config.to_dict())):
            raise ValueError(f"{path.parent} holds a run with another config: remove it, or pass resume=False to "
                             "start it over.")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for values, config, path in zip(runs, configs, saved):
        if resume and path.exists():
            run = RLHFRun.open(path.parent, callbacks=callbacks, log=None)
        else:
            run = RLHFRun.create(path.parent, config, overwrite=True, callbacks=callbacks, log=None)
        evaluation = run.run()
        run.close()  # its store, and its folder for other kernels
        rows.append({**values, "run": path.parent.name, **evaluation.iloc[-1].to_dict()})
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


def contrasts(out: str | Path, field: str, *, y: str = "gold_reward", baseline=None, seeds=None) -> pd.DataFrame:
    """Is a grid field's effect on a run's final `y` real (default the gold reward; any column of the sweep table,
    e.g. "kl")? Each value of `field` against `baseline` (default: its first value), at every combination of the
    other grid fields, paired by seed.

    With n ≥ 2 seeds in common, the per-seed differences d_s = y(value, s) − y(baseline, s) give
    mean ± t_{n−1, 0.975}·sd/√n (`t_interval`): the spread of training from seed to seed is in the interval.
    With one seed, the gold reward pairs the two runs' replies to the same held-out prompts (`paired_gain`'s
    bootstrap): that interval holds only the eval replies' noise, not the training's, and the `interval` column
    says so ("seed 0's 32 eval prompts only"); another `y` has no interval with one seed. `verdict` is "higher",
    "lower" or "no detectable difference" (the interval holds 0), or "one seed: no interval", or "same difference at
    every seed: no interval" (no spread to measure: a zero-width interval would claim certainty).
    `seeds`: only these seeds (default: all in the sweep)."""
    out = Path(out)
    if not (out / "sweep.csv").is_file():
        raise FileNotFoundError(f"No sweep at {out} (no sweep.csv): run sweep(base, grid, {str(out)!r}) first.")
    table = final = pd.read_csv(out / "sweep.csv")  # one row per run: its last iteration's evaluation
    fields = list(final.columns[:list(final.columns).index("seed")])  # sweep() writes the grid's fields first
    if field not in fields:
        raise KeyError(f"{field!r} is not a field of the sweep at {out}; its grid fields: {fields}.")
    if y not in final or not pd.api.types.is_numeric_dtype(final[y]):
        raise KeyError(f"{y!r} is not a figure of the sweep table; its numeric columns: "
                       f"{[c for c in final if pd.api.types.is_numeric_dtype(final[c]) and c not in fields]}.")
    if seeds is not None:
        table = table[table["seed"].isin(list(seeds))]
    values = list(dict.fromkeys(final[field]))
    baseline = values[0] if baseline is None else baseline
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not a value of {field!r} in the sweep; its values: {values}.")
    others = [f for f in fields if f != field]
    rows = []
    for key, group in (table.groupby(others, sort=False, dropna=False) if others else [((), table)]):
        base = group[group[field] == baseline].set_index("seed")
        for value in (v for v in values if v != baseline):
            runs = group[group[field] == value].set_index("seed")
            common = sorted(set(base.index) & set(runs.index))
            if not common:
                continue
            ended = base.loc[common, "iteration"].to_numpy() != runs.loc[common, "iteration"].to_numpy()
            if field != "iterations" and ended.any():  # a run extended by hand: its figures are from later on
                s = common[int(ended.argmax())]
                raise ValueError(f"{base.loc[s, 'run']} ended at iteration {base.loc[s, 'iteration']} and "
                                 f"{runs.loc[s, 'run']} at {runs.loc[s, 'iteration']}: they cannot be paired; "
                                 "run every run of the sweep to the same iteration (sweep again) first.")
            seed = common[0]
            if len(common) >= 2:
                diff = runs.loc[common, y] - base.loc[common, y]
                mean, low, high = t_interval(diff.to_numpy())
                over = f"{len(common)} seeds (t)"
            elif y != "gold_reward":  # no per-prompt values to pair: the difference alone, said to be bare
                mean, low, high = float(runs.loc[seed, y] - base.loc[seed, y]), float("nan"), float("nan")
                over = f"seed {seed} only"
            else:
                before, after = _prompt_gold(out, base.loc[seed]), _prompt_gold(out, runs.loc[seed])
                if not before.index.equals(after.index):
                    raise ValueError(f"{base.loc[seed, 'run']} and {runs.loc[seed, 'run']} were evaluated on different "
                                     "prompts; they cannot be paired.")
                result = paired_gain(before.to_numpy(), after.to_numpy())
                mean, low, high = result.gain, result.ci_low, result.ci_high
                over = f"seed {seed}'s {result.n_prompts} eval prompts only"
            if math.isnan(mean):  # a run's figure is missing (NaN): no difference to speak of
                word = "undefined: a run's figure is NaN"
            elif math.isnan(low):
                word = "one seed: no interval" if len(common) < 2 else "same difference at every seed: no interval"
            else:
                word = {"rose": "higher", "fell": "lower"}.get(verdict(low, high), "no detectable difference")
            rows.append({**dict(zip(others, key if isinstance(key, tuple) else (key,))), field: value,
                         "baseline": baseline, "seeds": len(common), "difference": mean, "ci_low": low,
                         "ci_high": high, "interval": over, "verdict": word})
    return pd.DataFrame(rows)


def _prompt_gold(out: Path, row: pd.Series) -> pd.Series:
    """Mean gold reward of a run's final eval replies to each held-out prompt, indexed by the sorted prompts."""
    replies = pd.DataFrame(eval_records(out / row["run"], int(row["iteration"])))
    return replies.groupby("prompt", sort=True)["gold"].mean()
