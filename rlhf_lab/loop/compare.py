"""Compare RLHF methods fairly: the same initial policy, prompts, seeds, reward model, feedback and budget.

    comparison = compare_methods(
        [BestOfN(n=(1, 2, 4, 8, 16)), PPO(PPOConfig(...)), RLOO(RLOOConfig(...)), DPO(DPOConfig(...))],
        policy, tokenizer, prompts, eval_prompts, reward=reward_model, pairs=store.preference_pairs(),
        budget=Budget(samples=256))
    comparison.table             # one row per method: why it stopped, gold, proxy, KL, win rate, tokens, judgments,
                                 # time, memory
    comparison.frontier          # one row per evaluation: the reward-vs-KL frontier
    plot_frontier(comparison.frontier);  plot_costs(comparison.table)

Every method starts from its own copy of `policy`; the untouched policy is the reference for KL and the opponent
for win rates. Evaluation is the same for all: `eval_samples` replies per eval prompt (best-of-n: as many picks,
each among its own n candidates) sampled with one seed, scored by the gold utility and by the proxy reward; KL is
the reply's KL to the initial policy (at the sampling temperature), for best-of-n measured on a pool of candidates
(and log n − (n−1)/n beside it). A win is a prompt whose mean gold beats the initial policy's.

Each method runs with the one setting it is given. To give every method the same small tuning budget (a few
learning rates each, chosen on prompts apart from the reported ones), use `loop.tuning.compare_tuned`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.inputs import is_number, is_whole, prompt_list
from rlhf_lab.core.memory import PeakMemory
from rlhf_lab.core.seeding import seed_for
from rlhf_lab.loop.evaluation import paired_gain, replies_with_kl
from rlhf_lab.loop.plots import plot_costs, plot_frontier
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.reward.sources import as_reward
from rlhf_lab.train.best_of_n import best_of_n, best_of_n_kl
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.ppo import PPOConfig, PPOTrainer
from rlhf_lab.train.rloo import RLOOConfig, RLOOTrainer

__all__ = ["TABLE_COLUMNS", "VERSUS_INITIAL", "Budget", "Method", "PPO", "RLOO", "DPO", "BestOfN", "Comparison",
           "compare_methods", "as_budget"]

VERSUS_INITIAL = ["gold_gain", "gold_gain_ci_low", "gold_gain_ci_high", "verdict", "win_rate_vs_initial"]
TABLE_COLUMNS = ["method", "rounds", "stopped", "gold_reward", "proxy_reward", "kl", *VERSUS_INITIAL,
                 "samples_generated", "tokens_generated", "judgments_used", "wall_time_s", "peak_memory_mb"]


@dataclass
class Budget:
    """What each method may spend; a method stops before a round that would exceed any limit given."""

    samples: int | None = None
    """Replies sampled for training (PPO/RLOO rollouts, iterative DPO's new pairs: 2 per pair)."""
    judgments: int | None = None
    """Preference judgments consumed (offline DPO: distinct pairs read; iterative DPO: new judgments)."""
    seconds: float | None = None
    """Wall-clock seconds of training per method (evaluations excluded)."""
    max_rounds: int = 1000
    """A guard: never more rounds than this."""

    def __post_init__(self):
        if self.samples is None and self.judgments is None and self.seconds is None:
            raise ValueError("Give a budget: Budget(samples=...), Budget(judgments=...) or Budget(seconds=...).")
        given = {k: v for k, v in (("samples", self.samples), ("judgments", self.judgments), ("seconds", self.seconds),
                                   ("max_rounds", self.max_rounds)) if v is not None}
        for name, value in given.items():
            if not (is_number(value) and value > 0):
                raise ValueError(f"Budget's {name} must be a number > 0, got {value!r}.")


def as_budget(budget) -> Budget:
    """`budget` as a Budget: a dict of its fields is read as one; anything else is refused in one line."""
    if isinstance(budget, dict):
        unknown = sorted(set(budget) - {"samples", "judgments", "seconds", "max_rounds"})
        if unknown:
            raise ValueError(f"Unknown Budget fields {unknown}: use samples, judgments, seconds or max_rounds.")
        return Budget(**budget)
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, e.g. Budget(samples=64), got {type(budget).__name__}")
    return budget


@dataclass
class _Setup:
    """What every method shares."""

    initial: torch.nn.Module  # the untouched policy: reference and opponent
    tokenizer: object
    prompts: list[str]
    eval_prompts: list[str]
    reward: object  # rewards.Reward (the proxy)
    gold: object  # rewards.Reward
    pairs: pd.DataFrame | None
    judge: object
    sampling: SamplingConfig
    seed: int
    eval_samples: int = 1  # replies per eval prompt
    initial_gold: np.ndarray | None = None  # (P,) mean gold of the initial policy's replies to each eval prompt


# ---- methods ------------------------------------------------------------------------------------------------------
def config_of(method, config, config_class):
    """`config`, or `config_class()` when None; another kind of config is refused now, not after the methods
    before it in a comparison have run."""
    if config is None:
        return config_class()
    if not isinstance(config, config_class):
        raise TypeError(f"{type(method).__name__}(...) takes a {config_class.__name__}, got "
                        f"{type(config).__name__}: give each method its own config, e.g. "
                        f"{type(method).__name__}({config_class.__name__}(learning_rate=...)).")
    return config


class Method:
    """One contender. `start` builds it on a fresh policy copy; `round` trains one round and returns the
    (samples, judgments) it spent; `next_cost` says what the next round would spend; `evaluate` yields frontier rows."""

    name = "method"
    done = False

    def start(self, setup: _Setup, policy) -> None:
        raise NotImplementedError

    def next_cost(self) -> tuple[int, int]:
        return 0, 0

    def round(self) -> None:
        raise NotImplementedError

    def counters(self) -> dict:
        raise NotImplementedError

    def evaluate(self, setup: _Setup) -> list[dict]:
        return [_evaluate_policy(self.policy, setup)]

    def close(self) -> None:
        """Drop the trained model and shared state (called once the method's rows are taken)."""
        for name in ("trainer", "setup", "data"):
            self.__dict__.pop(name, None)


class _RolloutMethod(Method):
    """PPO or RLOO: a round is one update; judgments are those behind the reward model (`reward_judgments`)."""

    trainer_class, config_class = PPOTrainer, PPOConfig

    def __init__(self, config=None, name: str | None = None, reward_judgments: int = 0):
        self.config = config_of(self, config, self.config_class)
        self.name = name or self.name
        self.reward_judgments = reward_judgments

    def start(self, setup, policy):
        config = dataclasses.replace(self.config, seed=setup.seed, log_samples_every=0)
        self.setup = setup
        self.trainer = self.trainer_class(policy, setup.tokenizer, setup.reward, config,
                                          **({} if config.lora else {"ref_policy": setup.initial}), callbacks=[])
        self.samples = self.tokens = 0

    @property
    def policy(self):
        return self.trainer.policy

    def next_cost(self):
        return self.trainer.config.rollouts_per_update, 0

    def round(self):
        metrics = self.trainer.step(self.trainer.prompt_batch(self.setup.prompts, self.trainer.update_ + 1))
        self.samples += self.trainer.config.rollouts_per_update
        self.tokens += round(metrics["val/response_length"] * self.trainer.config.rollouts_per_update)

    def counters(self):
        return dict(samples_generated=self.samples, tokens_generated=self.tokens, judgments_used=self.reward_judgments)


class PPO(_RolloutMethod):
    """PPO (`ppo.PPOTrainer`) against the proxy reward."""

    name = "ppo"


class RLOO(_RolloutMethod):
    """RLOO or GRPO (`rloo.RLOOTrainer`) against the proxy reward."""

    name, trainer_class, config_class = "rloo", RLOOTrainer, RLOOConfig


class DPO(Method):
    """DPO on the shared pairs (mode="offline": `pairs_per_round` of them per round, for config.epochs passes) or
    on new pairs judged each round (mode="iterative", by the comparison's `judge`)."""

    def __init__(self, config: DPOConfig | None = None, mode: str = "offline", pairs_per_round: int = 32,
                 name: str | None = None):
        if mode not in ("offline", "iterative"):
            raise ValueError(f"DPO mode must be 'offline' or 'iterative', got {mode!r}.")
        self.config, self.mode, self.pairs_per_round = config_of(self, config, DPOConfig), mode, pairs_per_round
        self.name = name or ("dpo" if mode == "offline" else "dpo_iterative")

    def start(self, setup, policy):
        config = dataclasses.replace(self.config, seed=setup.seed)
        self.setup, self.done = setup, False
        self.trainer = DPOTrainer(policy, setup.tokenizer, config, callbacks=[],
                                  **({} if config.lora else {"ref_policy": setup.initial}))
        if self.mode == "offline":
            if setup.pairs is None or len(setup.pairs) == 0:
                raise ValueError("Offline DPO needs preference pairs: pass pairs=store.preference_pairs().")
            self.data = self.trainer.prepare(setup.pairs)
            order = np.random.default_rng(setup.seed).permutation(len(self.data))
            self.order = np.concatenate([order] * config.epochs)
            self.position = 0

    @property
    def policy(self):
        return self.trainer.policy

    def next_cost(self):
        if self.mode == "iterative":
            return 2 * self.pairs_per_round, self.pairs_per_round
        new = min(self.position + self.pairs_per_round, len(self.data)) - min(self.position, len(self.data))
        return 0, max(new, 0)

    def round(self):
        if self.mode == "iterative":
            judge = self.setup.judge if self.setup.judge is not None else self.setup.reward
            self.trainer.train_iterative(self.setup.prompts, judge, self.trainer.round_ + 1, self.pairs_per_round)
            return
        chunk = self.order[self.position:self.position + self.pairs_per_round].tolist()
        self.trainer.fit(self.data.subset(chunk), epochs=1)
        self.position += len(chunk)
        self.done = self.position >= len(self.order)

    def counters(self):
        t = self.trainer
        judgments = t.judgments_used_ if self.mode == "iterative" else min(self.position, len(self.data))
        return dict(samples_generated=t.samples_generated_, tokens_generated=t.tokens_generated_,
                    judgments_used=judgments)


class BestOfN(Method):
    """Best-of-n against the proxy reward, no training: one frontier point per n (the table row is the largest).
    pool: candidates per prompt for the measured KL (default 4·max n)."""

    def __init__(self, n=(1, 2, 4, 8, 16), pool: int | None = None, missing_eos_penalty: float | None = 1.0,
                 reward_judgments: int = 0, name: str | None = None):
        self.n = sorted((n,) if isinstance(n, int) else n)
        if not self.n or any(not (is_whole(k) and k >= 1) for k in self.n):
            raise ValueError(f"n must be whole numbers >= 1 (replies drawn per prompt), e.g. (1, 2, 4); got {n!r}.")
        self.pool = pool or 4 * self.n[-1]
        self.missing_eos_penalty, self.reward_judgments = missing_eos_penalty, reward_judgments
        self.name = name or f"best_of_{self.n[-1]}"

    def start(self, setup, policy):
        self.setup, self.done, self.rows, self.samples, self.tokens = setup, False, [], 0, 0

    def round(self):
        """Sample the pool once. Pick j (of `eval_samples`) of each n takes the best of the first n candidates in
        block j (candidates j·N … j·N + N − 1, N the largest n) of every prompt: the picks never share a candidate."""
        s, big, m = self.setup, self.n[-1], self.setup.eval_samples
        pool = best_of_n(s.initial, s.tokenizer, s.eval_prompts, s.reward, big, pool=max(self.pool, m * big),
                         sampling=s.sampling, seed=seed_for(s.seed, 6), missing_eos_penalty=self.missing_eos_penalty)
        gold, proxy = s.gold(pool.candidates).numpy(), s.reward(pool.candidates).numpy()  # (P·pool,) each
        offsets = np.arange(len(s.eval_prompts))[:, None] * pool.pool
        for n in self.n:
            picks = np.stack([pool.scores[:, j * big:j * big + n].argmax(dim=1).numpy() + j * big
                              for j in range(m)], axis=1)  # (P, m) candidate index within each prompt's pool
            rows = offsets + picks  # (P, m) rows of `candidates`
            self.rows.append(dict(n=n, gold_reward=float(gold[rows].mean()), proxy_reward=float(proxy[rows].mean()),
                                  kl=pool.with_n(n).kl_measured, kl_analytic=best_of_n_kl(n),
                                  **_versus_initial(gold[rows].mean(1), s)))
        self.samples = m * big * len(s.eval_prompts)
        self.tokens = pool.with_n(m * big).tokens_generated  # the first m·N candidates of each prompt
        self.done = True

    def counters(self):
        return dict(samples_generated=self.samples, tokens_generated=self.tokens, judgments_used=self.reward_judgments)

    def evaluate(self, setup):
        return self.rows or [_evaluate_policy(setup.initial, setup)]


# ---- evaluation ---------------------------------------------------------------------------------------------------
def _eval_replies(policy, setup: _Setup):
    """`eval_samples` replies per eval prompt, a prompt's replies adjacent, with one seed for every method, and
    their KL to the initial policy (`replies_with_kl`): (batch, kl (B,))."""
    return replies_with_kl(policy, setup.initial, setup.tokenizer, setup.eval_prompts, setup.sampling,
                           seed=seed_for(setup.seed, 7), n_per_prompt=setup.eval_samples)


def _per_prompt(values: np.ndarray, setup: _Setup) -> np.ndarray:
    """(P,) mean over each eval prompt's `eval_samples` adjacent replies."""
    return values.reshape(len(setup.eval_prompts), setup.eval_samples).mean(1)


def _evaluate_policy(policy, setup: _Setup, replies=None) -> dict:
    """Mean gold, proxy and KL to the initial policy over the eval replies (`replies`: `_eval_replies`'s (batch, kl),
    default sampled now); win rate by each prompt's mean gold against the initial policy's."""
    batch, kls = _eval_replies(policy, setup) if replies is None else replies
    gold = setup.gold(batch).numpy()
    kl = kls.mean().item()
    return dict(gold_reward=float(gold.mean()), proxy_reward=float(setup.reward(batch).mean()), kl=kl,
                **_versus_initial(_per_prompt(gold, setup), setup))


def _versus_initial(gold_per_prompt: np.ndarray, setup: _Setup) -> dict:
    """The gold change from the initial policy, paired by eval prompt (`paired_gain`: gain, 95 % interval,
    verdict), and the win rate by each prompt's mean gold."""
    paired = paired_gain(setup.initial_gold, gold_per_prompt, seed=setup.seed)
    return dict(gold_gain=paired.gain, gold_gain_ci_low=paired.ci_low, gold_gain_ci_high=paired.ci_high,
                verdict=paired.verdict, win_rate_vs_initial=paired.win_rate)


# ---- the entry point ----------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """The result of `compare_methods`: `table` (one row per method) and `frontier` (one row per evaluation)."""

    table: pd.DataFrame
    frontier: pd.DataFrame

    def plot_frontier(self) -> Figure:
        return plot_frontier(self.frontier)

    def plot_costs(self) -> Figure:
        return plot_costs(self.table)


def compare_methods(methods: list[Method], policy, tokenizer, prompts: list[str], eval_prompts: list[str], *,
                    reward, budget: Budget, gold="gold", pairs: pd.DataFrame | None = None, judge=None,
                    sampling: SamplingConfig | None = None, seed: int = 0, eval_every: int = 1,
                    eval_samples: int = 1) -> Comparison:
    """Run each method from its own copy of `policy` on the same prompts and seed within `budget`; evaluate every
    `eval_every` rounds and at the end.

    reward: the proxy every method optimises or picks by (anything `rewards.as_reward` takes: a reward model).
    gold: the utility the table reports (default the simulated crowd's gold). pairs: the preference pairs offline
    DPO trains on (those the reward model was fitted on, for a fair match). judge: who judges iterative DPO's new
    pairs (a SimulatedCrowd, or a reward source; default the proxy reward). sampling: evaluation sampling (default
    temperature 0.7, 32 new tokens). Each method's config seed is set to `seed`. eval_samples: replies per eval
    prompt in every evaluation (more: a less noisy frontier, at that many times the evaluation cost).
    """
    if not methods:
        raise ValueError("compare_methods needs at least one method, e.g. [BestOfN(), PPO(), RLOO(), DPO()].")
    unknown = [m for m in methods if not isinstance(m, Method)]
    if unknown:
        raise TypeError(f"Unknown method {unknown[0]!r}: use BestOfN, PPO, RLOO or DPO from rlhf_lab.loop.compare.")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"Method names must differ, got {names}: pass name=... to tell them apart.")
    prompts, eval_prompts = prompt_list(prompts, "prompts"), prompt_list(eval_prompts, "eval_prompts")
    if not prompts or len(eval_prompts) < 2:
        raise ValueError(f"compare_methods needs training prompts and 2 or more eval prompts (gains are paired by "
                         f"prompt); got {len(prompts)} and {len(eval_prompts)}.")
    budget = as_budget(budget)
    if (pairs is None or len(pairs) == 0) and any(isinstance(m, DPO) and m.mode == "offline" for m in methods):
        raise ValueError("Offline DPO needs preference pairs: pass pairs=store.preference_pairs() (or "
                         "DPO(mode='iterative')).")
    if eval_samples < 1:
        raise ValueError(f"eval_samples must be at least 1 (replies per eval prompt), got {eval_samples}.")
    initial = copy.deepcopy(policy).eval().requires_grad_(False)
    setup = _Setup(initial, tokenizer, prompts, eval_prompts, as_reward(reward, tokenizer),
                   as_reward(gold, tokenizer), pairs, judge, sampling or SamplingConfig(), seed, eval_samples)
    initial_replies = _eval_replies(initial, setup)  # sampled once: the opponent, and the frontier's start
    setup.initial_gold = _per_prompt(setup.gold(initial_replies[0]).numpy(), setup)
    start_row = _evaluate_policy(initial, setup, initial_replies)  # win rate ½: every prompt ties with itself
    frontier, table = [], []
    for method in methods:
        torch.manual_seed(seed)
        with PeakMemory() as memory:
            method.start(setup, copy.deepcopy(policy))
            rounds, seconds = 0, 0.0
            rows = [] if isinstance(method, BestOfN) else [dict(start_row, round=0, **method.counters())]
            while not (stopped := _stop_reason(method, budget, rounds, seconds)):
                began = time.perf_counter()
                try:
                    method.round()
                except TrainingDivergedError as err:  # keep the other methods' results
                    stopped = f"diverged in round {rounds + 1}"
                    warnings.warn(f"compare_methods: {method.name} stopped, {err} Its rows end at its last "
                                  f"evaluation (round {rows[-1]['round'] if rows else 0}); the other methods go on.")
                    break
                finally:
                    seconds += time.perf_counter() - began
                rounds += 1
                if not isinstance(method, BestOfN) and (rounds % eval_every == 0):
                    rows.append(dict(method.evaluate(setup)[0], round=rounds, **method.counters()))
            if isinstance(method, BestOfN):
                rows = [dict(r, round=rounds, **method.counters()) for r in method.evaluate(setup)]
            elif rows[-1]["round"] != rounds and not stopped.startswith("diverged"):
                rows.append(dict(method.evaluate(setup)[0], round=rounds, **method.counters()))
        frontier += [dict(method=method.name, **r) for r in rows]
        table.append(dict(method=method.name, rounds=rounds, stopped=stopped, **{k: rows[-1][k] for k in
                     ("gold_reward", "proxy_reward", "kl", *VERSUS_INITIAL)}, **method.counters(),
                     wall_time_s=seconds, peak_memory_mb=memory.mb))
        method.close()  # free the trained model before the next method
    return Comparison(pd.DataFrame(table, columns=TABLE_COLUMNS), pd.DataFrame(frontier))


def _stop_reason(method: Method, budget: Budget, rounds: int, seconds: float) -> str | None:
    """Why the method stops before its next round ("done", "budget", "max_rounds"), or None to go on."""
    if method.done:
        return "done"
    if _spent(method, budget, seconds):
        return "budget"
    return "max_rounds" if rounds >= budget.max_rounds else None


def _spent(method: Method, budget: Budget, seconds: float) -> bool:
    """True when the next round would go over a limit (or the time is up)."""
    used = method.counters()
    samples, judgments = method.next_cost()
    return ((budget.samples is not None and samples and used["samples_generated"] + samples > budget.samples)
            or (budget.judgments is not None and judgments and used["judgments_used"] + judgments > budget.judgments)
            or (budget.seconds is not None and seconds >= budget.seconds))
