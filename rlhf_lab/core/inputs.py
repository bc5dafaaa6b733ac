"""Checks on what a learner passes in, shared by every stage: each returns the value in the form the code uses, or
raises one line that names the bad value and says what to give instead (never a silent reading of it).

    prompt_list("How do I make tea?")       # TypeError: ... wrap a single prompt in a list: ["How do I make tea?"]
    bool_labels(["yes", "no"], "label")     # ValueError: label must be true/false (or 1/0); row 0 is 'yes'
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["prompt_list", "bool_labels"]


def prompt_list(prompts, what: str = "prompts") -> list[str]:
    """`prompts` as a list of strings. A single string is refused (iterating it would give its characters, one
    "prompt" each), as is anything that is not a list, tuple or other sequence of strings."""
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"{what} must be a list of prompts, got one string ({prompts[:40]!r}): wrap a single prompt "
                        f"in a list: [{prompts[:40]!r}]")
    if hasattr(prompts, "tolist") and not isinstance(prompts, list):  # a pandas Series or NumPy array of strings
        prompts = prompts.tolist()
    try:
        out = list(prompts)
    except TypeError:
        raise TypeError(f"{what} must be a list of prompts (strings), got {type(prompts).__name__}") from None
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(f"{what} must be strings; item {i} is {type(p).__name__} {p!r:.40}")
    return out


def bool_labels(values, what: str) -> np.ndarray:
    """`values` (booleans, or the numbers 0 and 1) as a bool array. Anything else (a string such as "false" or
    "no", which `bool()` would read as True; a missing value; 2 or 0.5) raises a ValueError naming its row."""
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v)
        elif isinstance(v, numbers.Real) and not (isinstance(v, float) and math.isnan(v)) and v in (0, 1):
            out[i] = v == 1
        else:
            raise ValueError(f"{what} must be true/false (or 1/0); row {i} is {v!r:.40}")
    return out
