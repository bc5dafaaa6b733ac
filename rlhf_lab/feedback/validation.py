"""Checks on what goes into a feedback store: every bad value raises a `ValueError` that names it and says what to
give instead, before anything is written (a ValueError even for a wrong type: the raters show a ValueError's
message). Used by `FeedbackStore.add_*`/`record_*` and `exchange.import_jsonl`."""

from __future__ import annotations

import math
import numbers
import os

from rlhf_lab.core.inputs import whole_number

__all__ = ["MAX_NAME", "MAX_TEXT", "as_list", "pair_row", "response_row", "text", "need_store",
           "kinds_of", "judgments_table"]

MAX_NAME = 4096  # model and annotator names (a model may be named by its folder's path)
MAX_TEXT = 1_000_000  # prompts and replies, in characters


def text(x, what: str, max_len: int = MAX_TEXT) -> str:
    """`x` if it is a string of at most `max_len` characters (None is never stored as "None")."""
    if not isinstance(x, str):
        raise ValueError(f"{what} must be a string, got {x!r:.40}")  # noqa: TRY004
    if len(x) > max_len:
        raise ValueError(f"{what} is {len(x)} characters long; at most {max_len} fit")
    return x


def as_list(x, what: str) -> list:
    """A list from a list, tuple or other iterable; None or a number raises a ValueError naming `what`."""
    if x is None or isinstance(x, (str, bytes, numbers.Number)) or not hasattr(x, "__iter__"):
        raise ValueError(f"{what} must be a list, got {x!r}")
    return list(x)


def response_row(r: dict, i: int) -> dict:
    """One `add_responses` record checked: prompt and response strings, model a short string, iteration whole, eos
    a bool or None, sampling a dict or None."""
    missing = {"prompt", "response", "model", "iteration"} - set(r)
    if missing:
        raise ValueError(f"record {i} lacks {sorted(missing)}; each record needs prompt, response, model, "
                         "iteration (and optionally sampling, eos)")
    eos, sampling = r.get("eos"), r.get("sampling")
    if eos is not None and eos not in (True, False):  # NumPy and torch booleans too
        raise ValueError(f"record {i}: eos must be True, False or None, got {eos!r}")
    if sampling is not None and not isinstance(sampling, dict):
        raise ValueError(f"record {i}: sampling must be a dict of settings or None, got {sampling!r}")
    return {"prompt": text(r["prompt"], f"record {i}: prompt"), "text": text(r["response"], f"record {i}: response"),
            "model": text(r["model"], f"record {i}: model", MAX_NAME),
            "iteration": whole_number(r["iteration"], f"record {i}: iteration"), "sampling": sampling or {},
            "eos": None if eos is None else bool(eos)}


def pair_row(row, where: str, annotator: str, model: str, iteration: int) -> dict:
    """One imported preference line checked (`where` names the file and line): prompt, chosen, rejected strings;
    tie a bool; margin a finite number; annotator and model (chosen_model and rejected_model, default model) short
    strings; iteration whole."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object (prompt, chosen, rejected), got {row!r:.40}")  # noqa: TRY004
    out = {k: text(row.get(k), f"{where}: {k}") for k in ("prompt", "chosen", "rejected")}
    tie, margin = row.get("tie", False), row.get("margin")
    if not isinstance(tie, bool):
        raise ValueError(f"{where}: tie must be true or false (JSON booleans), got {tie!r}")  # noqa: TRY004
    if margin is not None and (not isinstance(margin, numbers.Real) or isinstance(margin, bool)
                               or not math.isfinite(margin)):
        raise ValueError(f"{where}: margin must be a finite number, got {margin!r}")
    both = text(row.get("model", model), f"{where}: model", MAX_NAME)
    return dict(out, tie=tie, margin=None if margin is None else float(margin),
                annotator=text(row.get("annotator", annotator), f"{where}: annotator", MAX_NAME), model=both,
                **{k: text(row.get(k, both), f"{where}: {k}", MAX_NAME) for k in ("chosen_model", "rejected_model")},
                iteration=whole_number(row.get("iteration", iteration), f"{where}: iteration"))


def need_store(store, what: str) -> None:
    """TypeError, in one line, when `store` is not a FeedbackStore (a store's path is the usual slip: say to open
    it)."""
    if hasattr(store, "judgments_df") and hasattr(store, "register_annotator"):
        return
    how = f"open it first: FeedbackStore({str(store)!r})" if isinstance(store, (str, bytes, os.PathLike)) else \
        "pass a FeedbackStore"
    raise TypeError(f"{what} needs a FeedbackStore, got {type(store).__name__} {store!r:.60}: {how}")


def kinds_of(kinds, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """`kinds` as a tuple of names from `allowed`: one name may be given alone ("thumbs"); an unknown one is
    refused, naming what is allowed."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds or ())
    unknown = [k for k in kinds if k not in allowed]
    if unknown:
        raise ValueError(f"kinds may hold {' and '.join(map(repr, allowed))}, got {unknown}")
    return kinds


def judgments_table(data, what: str):
    """The store's judgments: `data.judgments_df()` for a FeedbackStore, or `data` itself when it is such a table (a
    DataFrame with kind and answer columns). A table of something else (preference pairs) or a store's path is
    refused in one line that says what to pass."""
    if hasattr(data, "judgments_df"):
        return data.judgments_df()
    if hasattr(data, "columns"):
        missing = sorted({"kind", "answer"} - set(data.columns))
        if missing:
            raise ValueError(f"{what} reads a store's judgments (a FeedbackStore, or store.judgments_df()); this table "
                             f"has no {' or '.join(missing)} column (preference pairs, say): pass the store")
        return data
    need_store(data, what)
