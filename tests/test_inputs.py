"""rlhf_lab.core.inputs: a single prompt is never read as its characters, labels are never read by truthiness, and a
count is never rounded (2.0, "2" and True are not whole numbers)."""

import numpy as np
import pandas as pd
import pytest

from rlhf_lab.core.inputs import bool_labels, is_number, is_whole, prompt_list, whole_number


def test_prompt_list_takes_sequences_of_strings_and_refuses_one_string():
    assert prompt_list(("a", "b")) == ["a", "b"] and prompt_list(pd.Series(["x"])) == ["x"]
    assert prompt_list(np.array(["p", "q"])) == ["p", "q"] and prompt_list([]) == []
    with pytest.raises(TypeError, match=r"got one string \('Hi'\): wrap a single prompt in a list: \['Hi'\]"):
        prompt_list("Hi")
    with pytest.raises(TypeError, match="item 1 is int 2"):
        prompt_list(["a", 2])
    with pytest.raises(TypeError, match="eval_prompts must be a list of prompts .strings., got int"):
        prompt_list(5, "eval_prompts")


def test_bool_labels_read_booleans_and_zero_one_and_refuse_the_rest():
    assert bool_labels([True, False, 1, 0, 1.0, np.bool_(True)], "label").tolist() == [True, False, True, False,
                                                                                       True, True]
    assert bool_labels(pd.Series([0, 1]), "tie").dtype == bool
    for bad, shown in (("false", "'false'"), ("yes", "'yes'"), (float("nan"), "nan"), (None, "None"), (2, "2")):
        with pytest.raises(ValueError, match=rf"tie must be true/false \(or 1/0\); row 1 is {shown}"):
            bool_labels([True, bad], "tie")


def test_whole_numbers_and_numbers_refuse_bools_floats_and_strings():
    assert [is_whole(x) for x in (3, np.int64(3), 0, -2)] == [True] * 4
    assert [is_whole(x) for x in (True, 3.0, "3", None, np.float32(3))] == [False] * 5
    assert [is_number(x) for x in (3, 2.5, np.float32(1), float("nan"))] == [True] * 4
    assert [is_number(x) for x in (False, "1", None)] == [False] * 3
    assert whole_number(np.int64(4), "epochs", least=1) == 4 and type(whole_number(np.int64(4), "epochs")) is int
    assert whole_number(-7, "offset") == -7  # no bound given: any whole number
    with pytest.raises(ValueError, match=r"^epochs must be a whole number, got 2.0\.$"):
        whole_number(2.0, "epochs", least=1)
    with pytest.raises(ValueError, match=r"^epochs must be a whole number, got True\.$"):
        whole_number(True, "epochs", least=1)
    with pytest.raises(ValueError, match=r"^epochs must be at least 1, got 0\.$"):
        whole_number(0, "epochs", least=1)


def test_the_store_and_the_feedback_commands_start_without_torch():
    """Checks on what a learner passes in are shared with the store, which a class's `rlhf-lab class` and
    `feedback` commands open: importing them must not pull in torch (about a second of start-up per command)."""
    import subprocess
    import sys

    code = ("import sys, rlhf_lab.feedback.store, rlhf_lab.feedback.class_cli, rlhf_lab.core.inputs; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip() == "[]"
