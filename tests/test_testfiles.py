"""Otter's test files read and scored without otter: the points rules checked against otter's own resolver."""

import pytest

from rlhf_lab.teach.testfiles import load_test_file, resolve_points, run_test_file

SOURCE = '''from otter.test_files import test_case

OK_FORMAT = False

name = "q1_double"
points = 3

@test_case(points=1, hidden=False)
def test_double_by_hand(double):
    assert double(2) == 4, "2 doubled is 4"

@test_case(hidden=True)
def test_double_of_a_negative(double, env):
    assert double(-3) == -6 and "double" in env, "-3 doubled is -6"
'''


@pytest.mark.parametrize("total, given", [(4, [1, 2, 1]), (4, [1, None, None]), (None, [None, None]),
                                          (None, [0, None]), (None, [1, None]), ([1, 2], [None, 5]), (3, [None] * 3)])
def test_points_follow_otters_rules(total, given):
    abstract = pytest.importorskip("otter.test_files.abstract_test")
    cases = [abstract.TestCase(name=str(i), body=None, hidden=False, points=p, success_message=None,
                               failure_message=None) for i, p in enumerate(given)]
    expected = [case.points for case in abstract.TestFile.resolve_test_file_points(total, cases)]
    assert resolve_points(total, given) == pytest.approx(expected)


def test_too_many_points_are_refused():
    with pytest.raises(ValueError, match="more points"):
        resolve_points(2, [1, 2])


def test_a_test_file_is_read_and_scored_like_otter_does():
    test_file = load_test_file(SOURCE, "tests/q1_double.py")
    assert test_file.name == "q1_double" and not test_file.all_or_nothing
    assert [(c.name, c.points, c.hidden) for c in test_file.cases] == [
        ("test_double_by_hand", 1.0, False), ("test_double_of_a_negative", 2.0, True)]
    assert run_test_file(test_file, {"double": lambda x: 2 * x}) == {"score": 3.0, "possible": 3.0, "failed": []}
    half = run_test_file(test_file, {"double": lambda x: 2 * abs(x)})
    assert half == {"score": 1.0, "possible": 3.0, "failed": [
        {"name": "q1_double/test_double_of_a_negative", "hidden": True, "message": "-3 doubled is -6"}]}
    missing = run_test_file(test_file, {})
    assert missing["score"] == 0.0 and missing["failed"][0]["message"] == "'NoneType' object is not callable"
