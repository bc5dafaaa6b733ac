"""A taste the loop has never seen, for `bench/taste.py` (given as module:function, like a learner's own):

    PYTHONPATH=bench python bench/taste.py --tastes unseen_taste:about_you --no-curve

It likes replies that talk to the person: one unit per "you", "your", "yours", "yourself" (at most 3). None of the
shipped tastes or the gold utility scores this word.
"""

from __future__ import annotations

import re

_YOU = re.compile(r"\b(you|your|yours|yourself|you're|you've|you'll)\b", re.I)


def about_you(prompt: str, reply: str) -> float:
    """min(number of second-person words, 3)."""
    return float(min(len(_YOU.findall(reply)), 3))
