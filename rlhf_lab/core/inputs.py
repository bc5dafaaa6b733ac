"""Checks on what a learner passes in, shared by every stage: each returns the value in the form the code uses, or
raises one line that names the bad value and says what to give instead (never a silent reading of it).

    prompt_list("How do I make tea?")       # TypeError: ... wrap a single prompt in a list: ["How do I make tea?"]
    bool_labels(["yes", "no"], "label")     # ValueError: label must be true/false (or 1/0); row 0 is 'yes'
    whole_number(2.0, "epochs", least=1)     # ValueError: epochs must be a whole number, got 2.0.
    masked_mean([1.0, 2.0], mask)            # TypeError: masked_mean: x must be a torch tensor, got list; ...
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers

import numpy as np

__all__ = ["prompt_list", "bool_labels", "is_whole", "is_number", "whole_number", "tensor_arguments"]


def is_whole(x) -> bool:
    """An int (NumPy's included), not a bool and not a float such as 1.0."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x) -> bool:
    """A real number (int or float, NumPy's included), not a bool; NaN and the infinities are numbers here."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def whole_number(value, what: str, least: float | None = None) -> int:
    """`value` as an int of at least `least` (None: any), or a ValueError naming `what`: a bool, a float such as
    2.5 or 32.0, or a string such as "32" is refused, never rounded or read."""
    if not is_whole(value):
        raise ValueError(f"{what} must be a whole number, got {value!r:.40}.")
    if least is not None and value < least:
        raise ValueError(f"{what} must be at least {least}, got {value}.")
    return int(value)


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


def tensor_arguments(function):
    """Decorate a maths function so that each parameter annotated `Tensor` (or `Tensor | None`, which may be None)
    is checked to be a torch tensor, raising one TypeError that names the function and the parameter instead of an
    error from deep inside torch ("'list' object has no attribute 'bool'"). Parameters that may also be numbers
    (`Tensor | float`) are not checked."""
    import torch  # here, not at the top: checks on prompts and labels (the store's) need no torch

    parameters = inspect.signature(function).parameters
    names = []
    for name, parameter in parameters.items():
        parts = [part.strip() for part in str(parameter.annotation).split("|")]
        if "Tensor" in parts and set(parts) <= {"Tensor", "None"}:
            names.append(name)
    positions = {name: i for i, name in enumerate(parameters)}

    @functools.wraps(function)
    def checked(*args, **kwargs):
        for name in names:
            i = positions[name]
            value = args[i] if i < len(args) else kwargs.get(name)
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"{function.__name__}: {name} must be a torch tensor, got {type(value).__name__}; "
                                f"make one with torch.tensor({name}, dtype=torch.float32)")
        return function(*args, **kwargs)

    return checked
