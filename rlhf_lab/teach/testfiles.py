"""Read and run otter-grader's exception-style test files without importing otter (whose import takes seconds).

A test file, as `otter assign` writes it:

    from otter.test_files import test_case
    OK_FORMAT = False
    name = "q3_gae"
    points = 3
    @test_case(points=1, hidden=False)
    def test_gae_by_hand(gae): ...

`load_test_file` runs the file with `otter.test_files` answered by a stand-in `test_case`, resolves each case's points
by otter's rules (a list of points per case; else the points given per case, the rest of the question's total
shared among cases without; without a total, cases without points get 0, or share 1 point when none has any), and
`run_test_file` calls each case with its parameters looked up by name in an environment, as otter does (`env` gets
the environment itself), scoring `all_or_nothing` files all or nothing.
"""

from __future__ import annotations

import builtins
import inspect
import types
from dataclasses import dataclass, field

__all__ = ["test_case", "Case", "TestFile", "resolve_points", "load_test_file", "run_test_file"]


class test_case:  # noqa: N801 - the name otter's test files import
    """Stand-in for `otter.test_files.test_case`: records the case's settings and its function."""

    def __init__(self, name=None, points=None, hidden=False, success_message=None, failure_message=None):
        self.name, self.points, self.hidden, self.func = name, points, hidden, None

    def __call__(self, func):
        self.func = func
        return self


@dataclass
class Case:
    """One test case: its function (named after what it checks), points and visibility."""

    func: object
    points: float
    hidden: bool

    @property
    def name(self) -> str:
        return self.func.__name__


@dataclass
class TestFile:
    """A question's test cases, in file order."""

    name: str
    cases: list[Case] = field(default_factory=list)
    all_or_nothing: bool = False


def resolve_points(total, given: list) -> list[float]:
    """Each case's points by otter's rules, from the file's `points` (a number, a list or None) and each case's own."""
    if isinstance(total, list):
        if len(total) != len(given):
            raise ValueError("the test file's points list and its test cases differ in length")
        given, total = list(total), None
    specified = sum(p for p in given if p is not None)
    missing = sum(p is None for p in given)
    if total is not None:
        if specified > total:
            raise ValueError("more points specified in test cases than allowed for the question")
        rest = (total - specified) / missing if missing else 0.0
    else:
        rest = (1 / missing if missing else 0.0) if all(p in (0, None) for p in given) else 0.0
    return [float(rest if p is None else p) for p in given]


def load_test_file(source: str, path: str = "<test>") -> TestFile:
    """Run a test file's source (trusted: it comes from the verified bundle) and collect its test cases."""
    stand_in = types.ModuleType("otter.test_files")
    stand_in.test_case = test_case

    def importer(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "otter.test_files" and level == 0:
            return stand_in
        return builtins.__import__(name, globals, locals, fromlist, level)

    env = {"__builtins__": {**vars(builtins), "__import__": importer}, "__name__": path}
    exec(compile(source, path, "exec"), env)
    if "name" not in env:
        raise ValueError(f"test file {path} does not define 'name'")
    cases = [v for v in env.values() if isinstance(v, test_case)]
    points = resolve_points(env.get("points"), [c.points for c in cases])
    return TestFile(env["name"], [Case(c.func, p, bool(c.hidden)) for c, p in zip(cases, points)],
                    bool(env.get("all_or_nothing", False)))


def run_test_file(test_file: TestFile, env) -> dict:
    """Run every case against `env` (anything with `.get(name)`); score, possible and the failing cases."""
    failed, score = [], 0.0
    for case in test_file.cases:
        try:
            kwargs = {arg: env if arg == "env" else env.get(arg)
                      for arg in inspect.signature(case.func).parameters}
            case.func(**kwargs)
            score += case.points
        except Exception as err:  # a failing assert, or the student's code raising in the sandbox
            failed.append({"name": f"{test_file.name}/{case.name}", "hidden": case.hidden,
                           "message": (str(err) or type(err).__name__).splitlines()[0][:300]})
    possible = sum(case.points for case in test_file.cases)
    if test_file.all_or_nothing and failed:
        score = 0.0
    return {"score": float(score), "possible": float(possible), "failed": failed}
