"""Assignment 5 (`gold_gain`): improve a policy with a fixed number of crowd ratings, graded on the gold it gains.

A task is a categorical policy over `REPLIES` candidate replies for each of `PROMPTS` prompts. The reference policy
is known; the gold utility of each reply (the lab's `GOLD_WEIGHTS` on six reply features) is not. The only way to
learn about it is `rate(prompt, reply)`: one annotator's rating, gold plus noise (sd `NOISE`), at most `BUDGET`
times per task. A student's `improve_policy(reference, rate, budget, kl_bound)` returns a new policy; its outcome is
the gold it gains over the reference, exactly (an expectation, not a sample), as long as its mean KL to the reference
stays within `KL_BOUND`.

The practice task in the notebook comes from the student id (`practice_task`) and shows its gold. The graded tasks
(`graded_tasks`) come from HMAC(grader_secret, student id, seed) for the fixed `SEEDS` and live in the grader's
process: the notebook gets `rate` as a `wire.Callback`, so each rating is a call back to the grader, which counts it,
refuses it past the budget, and never sends anything but the rating. `graded_outcome` runs a routine on them once per
grading and reports the gains, the share of what the gold-tilted policy gains within the same KL bound, and every
problem (budget overrun, refused requests, a policy that is not one, a KL over the bound).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import operator
from dataclasses import dataclass, field

import torch

from rlhf_lab.teach.assignment_data import GOLD_WEIGHTS, check_student_id, reply_features, student_seed
from rlhf_lab.teach.wire import Callback

__all__ = ["PROMPTS", "REPLIES", "BUDGET", "KL_BOUND", "NOISE", "SEEDS", "BudgetExceeded", "RatingTask",
           "mean_kl", "practice_task", "graded_tasks", "Outcome", "graded_outcome"]

PROMPTS, REPLIES = 16, 8
BUDGET = 256          # ratings per task: two per reply if spread evenly
KL_BOUND = 1.0        # nats, mean over prompts of KL(policy || reference)
NOISE = 1.5           # sd of one rating around the reply's gold utility (the gold's own sd is about 0.9)
SEEDS = (0, 1, 2, 3, 4)  # the graded tasks of each student


class BudgetExceeded(RuntimeError):
    """A rating asked for after the task's budget was spent."""


def mean_kl(policy: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over prompts of KL(policy || reference) for (P, K) row-stochastic tensors; 0 log 0 counts as 0."""
    policy, reference = policy.double(), reference.double()
    terms = torch.where(policy > 0, policy * (policy.clamp_min(1e-300).log() - reference.log()), 0.0)
    return float(terms.sum(-1).mean())


def _tilt_to_kl(reference: torch.Tensor, utility: torch.Tensor, kl: float) -> torch.Tensor:
    """softmax(log reference + utility / beta) with beta found by bisection so that the mean KL is `kl`."""
    lo, hi = math.log(1e-3), math.log(1e3)
    for _ in range(60):
        mid = (lo + hi) / 2
        tilted = torch.softmax(reference.double().log() + utility.double() / math.exp(mid), dim=-1)
        lo, hi = (mid, hi) if mean_kl(tilted, reference) > kl else (lo, mid)
    return torch.softmax(reference.double().log() + utility.double() / math.exp(hi), dim=-1)


class RatingTask:
    """One task: `reference` (P, K), `budget`, `rate(prompt, reply)`; the gold stays here (`gold_gain` scores)."""

    def __init__(self, seed: int, budget: int = BUDGET, noise: float = NOISE):
        g = torch.Generator().manual_seed(seed)
        features = reply_features(PROMPTS * REPLIES, g)
        self._gold = (features @ torch.tensor(GOLD_WEIGHTS)).reshape(PROMPTS, REPLIES).double()
        z = (self._gold - self._gold.mean()) / self._gold.std()
        # a reference that already leans a little towards gold, as a supervised model would
        self.reference = torch.softmax(0.3 * z.float() + torch.randn(PROMPTS, REPLIES, generator=g), dim=-1)
        self._noise = torch.Generator().manual_seed(seed + 1)
        self.budget, self.noise, self.used, self.over_budget = int(budget), float(noise), 0, 0

    def rate(self, prompt, reply) -> float:
        """One annotator's rating of reply `reply` (0..K-1) to prompt `prompt` (0..P-1): gold plus noise."""
        try:
            p, k = operator.index(prompt), operator.index(reply)
        except TypeError:
            raise TypeError(f"rate(prompt, reply) takes two integers, got {prompt!r}, {reply!r}") from None
        if not (0 <= p < PROMPTS and 0 <= k < REPLIES):
            raise IndexError(f"prompt must be in 0..{PROMPTS - 1} and reply in 0..{REPLIES - 1}, got {p}, {k}")
        if self.used >= self.budget:
            self.over_budget += 1
            raise BudgetExceeded(f"the budget of {self.budget} ratings is spent")
        self.used += 1
        return round(float(self._gold[p, k]) + self.noise * float(torch.randn((), generator=self._noise)), 4)

    def rater(self) -> Callback:
        """`rate` as a function the grader can hand to a sandboxed notebook (a call back, counted here)."""
        return Callback(self.rate, "rate")

    @property
    def gold(self) -> torch.Tensor:
        """(P, K) gold utilities: for the practice task in the notebook; graded tasks never leave the grader."""
        return self._gold.float().clone()

    def gold_gain(self, policy: torch.Tensor) -> float:
        """Mean over prompts of E_policy[gold] - E_reference[gold]: exact, not sampled."""
        return float(((torch.as_tensor(policy).double() - self.reference.double()) * self._gold).sum(-1).mean())

    def best_gain(self, kl_bound: float = KL_BOUND) -> float:
        """What the gold-tilted policy (the best policy within the KL bound, knowing the gold) gains."""
        return self.gold_gain(_tilt_to_kl(self.reference, self._gold, kl_bound))


def practice_task(student_id: str) -> RatingTask:
    """The student's practice task, made from their id (its gold is theirs to look at)."""
    return RatingTask(student_seed(student_id, "gold_gain/practice"))


def graded_tasks(student_id: str, grader_secret: str | None) -> list[RatingTask]:
    """The graded tasks: one per seed in SEEDS, from HMAC(grader_secret, student id and seed). Without a secret
    (otter's own runner, a build's check) a fixed public stand-in key is used, which real grading never uses."""
    key = (grader_secret or "no-grader-secret").encode()
    tasks = []
    for seed in SEEDS:
        digest = hmac.new(key, f"gold_gain:{check_student_id(student_id)}:{seed}".encode(), hashlib.sha256).digest()
        tasks.append(RatingTask(int.from_bytes(digest[:8], "big") >> 1))
    return tasks


@dataclass
class Outcome:
    """What a routine achieved on the graded tasks: gold gains, the best gains within the KL bound, KLs, ratings
    used, and every problem that voids the outcome (none for a fair run)."""

    gains: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        """Gold gained, as a share of what the gold-tilted policies gain (0 with any problem)."""
        return 0.0 if self.problems or not self.gains else sum(self.gains) / sum(self.best)


def _check_policy(policy, reference: torch.Tensor) -> str | None:
    if not isinstance(policy, torch.Tensor) or policy.shape != reference.shape:
        return f"improve_policy must return a tensor of shape {tuple(reference.shape)}, got {type(policy).__name__}" \
               + (f" of shape {tuple(policy.shape)}" if isinstance(policy, torch.Tensor) else "")
    if not torch.isfinite(policy).all() or (policy < 0).any():
        return "the policy holds negative or non-finite probabilities"
    if not torch.allclose(policy.double().sum(-1), torch.ones(policy.shape[0], dtype=torch.float64), atol=1e-4):
        return "each row of the policy must sum to 1"
    return None


@functools.lru_cache(maxsize=8)
def graded_outcome(improve_policy, student_id: str, grader_secret: str | None = None) -> Outcome:
    """Run `improve_policy(reference, rate, budget, kl_bound)` on each graded task (once per routine, id and secret:
    the tests of one grading share it) and score it."""
    outcome = Outcome()
    for seed, task in zip(SEEDS, graded_tasks(student_id, grader_secret)):
        rate = task.rater()
        try:
            policy = improve_policy(task.reference.clone(), rate, task.budget, KL_BOUND)
        except Exception as err:  # the student's routine raised (in the sandbox or here)
            outcome.problems.append(f"task {seed}: improve_policy raised {str(err).splitlines()[0][:200]}")
            continue
        problem = _check_policy(policy, task.reference)
        kl = mean_kl(policy, task.reference) if problem is None else math.inf
        if problem is None and kl > KL_BOUND + 1e-4:
            problem = f"mean KL to the reference is {kl:.3f}, over the bound of {KL_BOUND}"
        if task.over_budget:
            problem = f"asked for {task.budget + task.over_budget} ratings, over the budget of {task.budget}"
        if rate.refused:
            problem = f"sent requests the grader refused: {rate.refused[0]}"
        if problem is not None:
            outcome.problems.append(f"task {seed}: {problem}")
            continue
        outcome.gains.append(task.gold_gain(policy))
        outcome.best.append(task.best_gain())
        outcome.kls.append(kl)
        outcome.used.append(task.used)
    return outcome
