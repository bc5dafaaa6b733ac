"""The raters when things go wrong or the learner is quick: a read-only, locked or vanished store, a double click on
save flags, undo or skip, a kernel restart with flags saved, items of another kind, an undo already taken back
elsewhere, a complete answer left unsubmitted, nothing to judge, and a reply that made the markdown slow.

Fixtures come from `test_raters`: a real store on a temporary SQLite file, and `callback_errors`, which makes an
exception inside any widget callback fail the test (ipywidgets would swallow it: the learner would see nothing).
"""

from __future__ import annotations

import random
import re
import time

import test_raters

from rlhf_lab.ui.parts import embolden, reply_html

callback_errors = test_raters.callback_errors


# ---- long replies ----------------------------------------------------------------------------------------------------
def test_bold_is_found_in_linear_time_as_the_old_regex_found_it():
    old = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
    rng = random.Random(0)
    pieces = ["*", "**", "***", " ", "\n", "a", "b c", "\t", "\u00a0", "<"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert embolden(text) == old.sub(r"<strong>\1</strong>", text), repr(text)
    start = time.perf_counter()
    shown = reply_html("**a " * 10000)  # 40k characters of openings that never close: 6.7 s with the regex
    assert time.perf_counter() - start < 0.5 and "<strong>" not in shown
