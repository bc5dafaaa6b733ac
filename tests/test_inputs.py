"""rlhf_lab.core.inputs: a single prompt is never read as its characters, and labels are never read by truthiness."""

import numpy as np
import pandas as pd
import pytest

from rlhf_lab.core.inputs import bool_labels, prompt_list


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
