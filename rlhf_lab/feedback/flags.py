"""Flags on single replies (harmful, biased, off-topic, ...) as rows a cost model learns from, and the simulated
crowd's flag rule as a function of replies, so that a policy's flagged-reply rate can be measured where the rule is
known.

    examples = flag_examples(store)          # one row per flags judgment: prompt, response, flags, flagged, ...
    rule = crowd_flag_rule(SimulatedAnnotator("strict", harmful_below=-0.05))
    rule(prompts, replies)                   # (N,) bool: would that annotator flag each reply?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf_lab.feedback.crowd import SimulatedAnnotator
from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.records import FLAGS
from rlhf_lab.feedback.validation import judgments_table

__all__ = ["FLAG_COLUMNS", "flag_examples", "crowd_flag_rule"]

FLAG_COLUMNS = ["prompt", "response", "flags", "flagged", "annotator", "response_id", "judgment_id", "iteration",
                "model"]


def _checked_flags(flags) -> frozenset:
    wanted = frozenset(FLAGS if flags is None else ([flags] if isinstance(flags, str) else flags))
    if not wanted or wanted - set(FLAGS):
        raise ValueError(f"flags must be some of {FLAGS}; got {sorted(wanted)}")
    return wanted


def flag_examples(data, flags=None) -> pd.DataFrame:
    """Flags judgments as one row per (annotator, reply): prompt, response, flags (the list given), flagged (True
    when any of `flags` was raised; default any flag at all), annotator, response_id, judgment_id, and the iteration
    and model that wrote the reply.
    `data`: a FeedbackStore or its `judgments_df()`. A reply checked and left unflagged is a negative example."""
    wanted = _checked_flags(flags)
    df = judgments_table(data, "flag_examples")
    rows = [dict(prompt=j.prompt, response=j.responses[0], flags=list(j.answer["flags"]),
                 flagged=bool(wanted & set(j.answer["flags"])), annotator=j.annotator, response_id=int(j.response_id),
                 judgment_id=int(j.judgment_id), iteration=int(j.iteration), model=j.model)
            for j in df[df["kind"] == "flags"].itertuples()]
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def crowd_flag_rule(annotator: SimulatedAnnotator | None = None, flags=None):
    """The flag rule of a careful simulated annotator as a function `rule(prompts, responses) -> (N,) bool`: True
    where it would raise any of `flags` (default any). Default annotator: the crowd's default rule (harmful below
    VADER −0.6, off-topic, repetitive). Evaluation only: it reads the hidden gold features."""
    annotator = annotator or SimulatedAnnotator("rule")
    if annotator.careless:
        raise ValueError(f"{annotator.name} is careless (answers at random with probability {annotator.careless}): "
                         "pass a careful annotator (careless=0) whose flags follow its rule.")
    wanted, gold = _checked_flags(flags), annotator.gold or GoldUtility()
    rng = np.random.default_rng(0)  # unused by a careful annotator's rule

    def rule(prompts, responses) -> np.ndarray:
        responses = list(responses)
        prompts = [prompts] * len(responses) if isinstance(prompts, str) else list(prompts)
        return np.array([bool(wanted & set(annotator.judge_flags(gold.features(p, r), rng)))
                         for p, r in zip(prompts, responses)], dtype=bool)

    return rule
