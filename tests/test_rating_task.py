"""Assignment 5's tasks: ratings counted against a budget, gold that stays in the grader, outcomes scored fairly; and
the grader function that carries `rate` into a real sandbox process and nothing else."""

import math
import tempfile
import time

import pytest
import torch

from rlhf_lab.teach.grading import NotebookValues, SandboxLink
from rlhf_lab.teach.isolation import sandbox_command, sandbox_env
from rlhf_lab.teach.rating_task import (BUDGET, KL_BOUND, PROMPTS, REPLIES, SEEDS, BudgetExceeded, RatingTask,
                                        graded_outcome, graded_tasks, mean_kl, practice_task)

STUDENT = "s1234567"


def spread_and_tilt(reference, rate, budget, kl_bound):
    """The master's routine: ratings spread evenly, the reference tilted by their means to just under the bound."""
    P, K = reference.shape
    per_reply = budget // (P * K)
    means = torch.tensor([[sum(rate(p, k) for _ in range(per_reply)) / per_reply for k in range(K)]
                          for p in range(P)])
    lo, hi = math.log(0.1), math.log(100.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        kl = mean_kl(torch.softmax(reference.log() + means / math.exp(mid), -1), reference)
        lo, hi = (mid, hi) if kl > 0.95 * kl_bound else (lo, mid)
    return torch.softmax(reference.log() + means / math.exp(hi), -1)


def test_a_task_counts_ratings_and_refuses_them_past_the_budget():
    task, twin = RatingTask(seed=3, budget=4), RatingTask(seed=3, budget=4)
    assert torch.equal(task.reference, twin.reference) and task.reference.shape == (PROMPTS, REPLIES)
    assert torch.allclose(task.reference.sum(-1), torch.ones(PROMPTS)) and (task.reference > 0).all()
    ratings = [task.rate(1, 2), task.rate(1, 2), task.rate(torch.tensor(0), 7), task.rate(15, 0)]
    assert ratings == [twin.rate(1, 2), twin.rate(1, 2), twin.rate(0, 7), twin.rate(15, 0)], "seeded"
    assert ratings[0] != ratings[1], "each rating draws fresh noise"
    with pytest.raises(BudgetExceeded, match="budget of 4 ratings is spent"):
        task.rate(0, 0)
    assert (task.used, task.over_budget) == (4, 1)
    fresh = RatingTask(seed=3, budget=10)
    with pytest.raises(IndexError, match="prompt must be in 0..15 and reply in 0..7"):
        fresh.rate(16, 0)
    with pytest.raises(TypeError, match="takes two integers"):
        fresh.rate(0.5, 1)
    assert (fresh.used, fresh.over_budget) == (0, 0), "a malformed request costs nothing"
    many = RatingTask(seed=3, budget=4000)
    mean = sum(many.rate(2, 5) for _ in range(4000)) / 4000
    assert abs(mean - float(many.gold[2, 5])) < 0.1, "ratings are the gold plus noise with mean 0"


def test_tasks_differ_per_student_and_per_secret_and_the_practice_task_is_not_a_graded_one():
    tasks = graded_tasks(STUDENT, "key-a")
    assert len(tasks) == len(SEEDS) and all(t.budget == BUDGET for t in tasks)
    assert torch.equal(tasks[0].gold, graded_tasks(STUDENT, "key-a")[0].gold), "the same id and secret, the same task"
    others = [graded_tasks(STUDENT, "key-b")[0], graded_tasks("s7654321", "key-a")[0], practice_task(STUDENT)]
    assert all((t.gold - tasks[0].gold).abs().max() > 0.5 for t in others)
    assert (tasks[0].gold - tasks[1].gold).abs().max() > 0.5, "the seeds give different tasks"
    with pytest.raises(ValueError, match="set it to your student id"):
        graded_tasks(Ellipsis, "key-a")


def test_outcomes_score_the_gold_gained_and_void_overruns_and_broken_policies():
    def do_nothing(reference, rate, budget, kl_bound):
        return reference.clone()

    def uniform(reference, rate, budget, kl_bound):
        return torch.full_like(reference, 1 / reference.shape[1])

    def greedy(reference, rate, budget, kl_bound):  # all on the best average: over the KL bound
        means = torch.tensor([[(rate(p, k) + rate(p, k)) / 2 for k in range(REPLIES)] for p in range(PROMPTS)])
        return torch.nn.functional.one_hot(means.argmax(-1), REPLIES).double()

    def over_budget(reference, rate, budget, kl_bound):
        policy = spread_and_tilt(reference, rate, budget, kl_bound)
        for _ in range(3):
            try:
                rate(0, 0)
            except BudgetExceeded:
                pass
        return policy

    def not_a_policy(reference, rate, budget, kl_bound):
        return reference * 2

    good = graded_outcome(spread_and_tilt, STUDENT, "key-a")
    assert good.problems == [] and good.used == [BUDGET] * len(SEEDS)
    assert all(kl <= KL_BOUND for kl in good.kls) and 0.35 <= good.share < 1.0
    assert good.share == pytest.approx(sum(good.gains) / sum(good.best)) and min(good.best) > 0.3
    assert graded_outcome(spread_and_tilt, STUDENT, "key-a") is good, "the tests of one grading share one run"
    nothing = graded_outcome(do_nothing, STUDENT, "key-a")
    assert (nothing.problems, nothing.share) == ([], 0.0)
    assert graded_outcome(uniform, STUDENT, "key-a").share < 0
    for routine, problem in ((greedy, "over the bound of 1.0"), (over_budget, "asked for 259 ratings, over the "
                             "budget of 256"), (not_a_policy, "each row of the policy must sum to 1")):
        outcome = graded_outcome(routine, STUDENT, "key-a")
        assert outcome.share == 0.0 and problem in outcome.problems[0], (routine.__name__, outcome.problems)


NOTEBOOK = '''
import math, torch

def collect(rate, n):
    return [rate(i % 16, 0) for i in range(n)]

def probe(rate):
    found = {}
    for name in ("__self__", "func", "_gold", "gold", "reference", "__closure__", "__globals__", "__wrapped__"):
        try:
            found[name] = repr(getattr(rate, name))
        except AttributeError:
            pass
    return found

def forge(rate):
    return [rate.channel.ask({"id": rate.wire_callback_id, "op": "attr", "name": "_gold"}),
            rate.channel.ask({"id": rate.wire_callback_id + 64, "args": [0, 0], "kwargs": {}})]

def over(rate):
    out = []
    for _ in range(6):
        try:
            out.append(rate(0, 0))
        except RuntimeError as err:
            out.append(str(err))
    return out
'''
HONEST_AND_FORGING = '''
def honest(reference, rate, budget, kl_bound):
    P, K = reference.shape
    means = torch.tensor([[(rate(p, k) + rate(p, k)) / 2 for k in range(K)] for p in range(P)])
    lo, hi = math.log(0.1), math.log(100.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        tilted = torch.softmax(reference.log() + means / math.exp(mid), -1)
        kl = float((tilted * (tilted.log() - reference.log())).sum(-1).mean())
        lo, hi = (mid, hi) if kl > 0.95 * kl_bound else (lo, mid)
    return torch.softmax(reference.log() + means / math.exp(hi), -1)

def forging(reference, rate, budget, kl_bound):
    try:
        rate.channel.ask({"id": rate.wire_callback_id, "op": "attr", "name": "_gold"})
    except Exception:
        pass
    return honest(reference, rate, budget, kl_bound)
'''


def test_a_grader_function_reaches_the_sandbox_as_calls_and_nothing_else():
    with tempfile.TemporaryDirectory() as scratch:
        link = SandboxLink(sandbox_command("process", []), sandbox_env(f"{scratch}/.home", 1),
                           {"workdir": scratch, "files": {}, "cells": [NOTEBOOK, HONEST_AND_FORGING]},
                           time.monotonic() + 120)
        try:
            assert link.wait_ready() == {"ready": True, "errors": []}
            env = NotebookValues(link)
            task, twin = RatingTask(seed=1, budget=4), RatingTask(seed=1, budget=4)
            rate = task.rater()
            assert env.get("collect")(rate, 3) == [twin.rate(i, 0) for i in range(3)] and task.used == 3
            assert env.get("probe")(rate) == {}, "nothing of the task is reachable from the notebook"
            assert env.get("forge")(rate) == [{"error": "refused: the grader only answers calls of the functions it "
                                                        "handed over"}] * 2
            assert len(rate.refused) == 2 and '"op": "attr"' in rate.refused[0]
            spent = RatingTask(seed=1, budget=4)
            answers = env.get("over")(spent.rater())
            assert all(isinstance(a, float) for a in answers[:4]) and answers[0] == RatingTask(seed=1).rate(0, 0)
            assert answers[4:] == ["rate: BudgetExceeded: the budget of 4 ratings is spent"] * 2
            assert (spent.used, spent.over_budget) == (4, 2)
            honest = graded_outcome(env.get("honest"), STUDENT, "key-a")
            assert honest.problems == [] and honest.share >= 0.35
            forging = graded_outcome(env.get("forging"), STUDENT, "key-a")
            assert forging.share == 0.0 and "sent requests the grader refused" in forging.problems[0]
        finally:
            link.stop()
