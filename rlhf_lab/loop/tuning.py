"""A fair method comparison: every method gets the same small tuning budget, is tuned on one set of prompts and
reported on another.

    result = compare_tuned({
        "ppo": vary(PPO(PPOConfig(lora=LoraSettings())), learning_rate=[3e-5, 1e-4, 3e-4]),
        "dpo": vary(DPO(DPOConfig(lora=LoraSettings())), learning_rate=[5e-6, 2e-5, 8e-5]),
        "best_of_n": [BestOfN(n=(1, 2, 4)), BestOfN(n=(1, 2, 4, 8)), BestOfN(n=(1, 2, 4, 8, 16))],
    }, policy, tokenizer, prompts, eval_prompts, tune_prompts=tune_prompts, reward=reward_model,
       budget=Budget(samples=96), pairs=pairs)
    result.table      # one row per method: its chosen setting, then `compare_methods`' columns on the eval prompts
    result.tuning     # every candidate on the tuning prompts, and which one each method chose

1. Every candidate of every method runs through `compare_methods` (same initial policy, prompts, seed and budget),
   evaluated on `tune_prompts`.
2. Each method keeps the candidate with the highest `select` (default: mean gold) on the tuning prompts; a candidate
   that diverged is kept only if all of its method's did. Ties go to the first listed.
3. The chosen candidates run again, from the same initial policy and seed, evaluated on `eval_prompts`. These are
   disjoint from the tuning prompts, so picking the best of k does not inflate the reported gain or its interval.

Fair means equal: every method must bring the same number of candidates (a method with one setting against
another with five would compare tuning budgets, not methods).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import pandas as pd

from rlhf_lab.loop.compare import Comparison, Method, compare_methods

__all__ = ["SELECTABLE", "TunedComparison", "vary", "compare_tuned"]

SELECTABLE = ("gold_reward", "gold_gain", "proxy_reward", "win_rate_vs_initial")
"""What a method's candidates may be chosen by (each: higher is better)."""


def vary(method: Method, **values: list) -> list[Method]:
    """Copies of `method`, one per value of one config field, each named "<name> <field>=<value>".

        vary(PPO(PPOConfig(lora=LoraSettings())), learning_rate=[3e-5, 1e-4, 3e-4])  # three PPO candidates
    """
    if len(values) != 1:
        raise ValueError(f"vary takes one config field and its values, e.g. vary(method, learning_rate=[1e-5, 1e-4]); "
                         f"got {sorted(values) or 'none'}.")
    (field, options), = values.items()
    config = getattr(method, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TypeError(f"vary: {method.name} has no config to vary; list its candidates yourself.")
    known = {f.name for f in dataclasses.fields(config)}
    if field not in known:
        raise ValueError(f"vary: {type(config).__name__} has no field {field!r}; its fields: {sorted(known)}.")
    options = [] if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__") else list(options)
    if not options:
        raise ValueError(f"vary: give a list of values for {field}, e.g. {field}=[a, b, c].")
    candidates = []
    for value in options:
        candidate = copy.copy(method)
        candidate.config = dataclasses.replace(config, **{field: value})
        candidate.name = f"{method.name} {field}={value:g}" if isinstance(value, float) else \
            f"{method.name} {field}={value}"
        candidates.append(candidate)
    return candidates


@dataclass
class TunedComparison:
    """The result of `compare_tuned`: `table` (one row per method, on the eval prompts, with the chosen `setting`),
    `tuning` (one row per candidate, on the tuning prompts) and `final` (the eval run's `Comparison`: its frontier
    and plots)."""

    table: pd.DataFrame
    tuning: pd.DataFrame
    final: Comparison

    @property
    def frontier(self) -> pd.DataFrame:
        return self.final.frontier

    def plot_frontier(self):
        return self.final.plot_frontier()

    def plot_costs(self):
        return self.final.plot_costs()


def compare_tuned(candidates: dict[str, list[Method]], policy, tokenizer, prompts: list[str], eval_prompts: list[str],
                  *, tune_prompts: list[str], select: str = "gold_reward", **compare) -> TunedComparison:
    """Tune each method on `tune_prompts` among its candidates, then compare the chosen ones on `eval_prompts`.

    candidates: method name → its candidates (equal counts; `vary` builds them). Every other keyword (reward,
    budget, gold, pairs, judge, sampling, seed, eval_every, eval_samples) goes to both `compare_methods` calls.
    """
    candidates = {family: list(options) for family, options in candidates.items()}  # a generator is read once
    counts = {family: len(options) for family, options in candidates.items()}
    if not counts or min(counts.values()) < 1:
        raise ValueError("compare_tuned needs at least one method with candidates, e.g. "
                         "{'ppo': vary(PPO(cfg), learning_rate=[3e-5, 1e-4])}.")
    if len(set(counts.values())) > 1:
        raise ValueError(f"Every method needs the same number of candidates for a fair tuning budget, got {counts}: "
                         f"give each method as many settings.")
    if select not in SELECTABLE:
        raise ValueError(f"select must be one of {SELECTABLE}, got {select!r}.")
    overlap = set(tune_prompts) & set(eval_prompts)
    if overlap:
        raise ValueError(f"tune_prompts and eval_prompts share {len(overlap)} prompt(s), e.g. {sorted(overlap)[0]!r}: "
                         f"the reported gains must come from prompts the tuning never saw.")
    family_of = {}
    for family, options in candidates.items():
        for method in options:
            if not isinstance(method, Method):
                raise TypeError(f"{family}: unknown candidate {method!r}; use PPO, RLOO, DPO or BestOfN (and vary).")
            family_of[method.name] = family
    every = [method for options in candidates.values() for method in options]  # compare_methods refuses twin names

    tuned = compare_methods(every, policy, tokenizer, prompts, tune_prompts, **compare).table
    tuned.insert(0, "family", tuned["method"].map(family_of))
    chosen = {family: _choose(rows, select) for family, rows in tuned.groupby("family", sort=False)}
    tuned["chosen"] = [chosen[f] == m for f, m in zip(tuned["family"], tuned["method"])]

    by_name = {method.name: method for method in every}
    final = compare_methods([by_name[name] for name in chosen.values()], policy, tokenizer, prompts, eval_prompts,
                            **compare)
    table = final.table.copy()
    settings = table["method"]
    table["method"] = settings.map(family_of)
    table.insert(1, "setting", settings)
    table.insert(2, "candidates", table["method"].map(counts))
    table.insert(3, f"tune_{select}", settings.map(tuned.set_index("method")[select]).astype(float))
    return TunedComparison(table, tuned, final)


def _choose(rows: pd.DataFrame, select: str) -> str:
    """The name of the candidate with the highest `select`; diverged ones only when none is left; ties: first."""
    healthy = rows[~rows["stopped"].astype(str).str.startswith("diverged")]
    pool = healthy if len(healthy) else rows
    return str(pool.loc[pool[select].astype(float).idxmax(), "method"])
