"""The instructor's dashboard: a class store watched live while the students rate.

    dashboard = InstructorDashboard(FeedbackStore(INSTRUCTOR_URL), refresh_s=5)
    dashboard            # display it (a notebook or a Voila page); it refreshes itself until dashboard.stop()

It shows `classroom.class_overview` (totals, progress per student, agreement per item group, raters flagged as
often against the others' majority or very fast) and, every `model_every_s`, the class reward model's accuracy on
held-out prompts (`class_model.class_model_accuracy`). Refreshes run in a background thread; an error is shown on
the page (until that refresh works again) and kept in `errors` (a callback's exception would otherwise vanish).
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as w
import pandas as pd

from rlhf_lab.feedback.classroom import class_overview
from rlhf_lab.loop.class_model import class_model_accuracy

__all__ = ["InstructorDashboard"]


def _table(df: pd.DataFrame, empty: str) -> str:
    if df.empty:
        return f"<p><i>{html.escape(empty)}</i></p>"
    return df.to_html(index=False, escape=True, na_rep="–", float_format=lambda x: f"{x:.2f}", border=0,
                      classes="rlhf-dashboard-table")


class InstructorDashboard:
    """See the module docstring. `refresh()` updates the page once (the thread calls it every `refresh_s`)."""

    def __init__(self, store, refresh_s: float = 5.0, model_every_s: float = 60.0, live: bool = True):
        self.store, self.refresh_s, self.model_every_s = store, float(refresh_s), float(model_every_s)
        self.errors: list[str] = []
        self._failures: dict[str, str] = {}  # what failed last time -> its message (cleared once it works again)
        self._lock = threading.Lock()
        self.refreshes = 0
        self.header = w.HTML()
        self.progress = w.HTML()
        self.agreement = w.HTML()
        self.raters = w.HTML()
        self.model = w.HTML("<p><i>The class model is fitted once there are 8 or more pairs.</i></p>")
        self.message = w.HTML()
        self.refit = w.Button(description="refit the class model now")
        self.refit.on_click(lambda _: self._safely(self.refresh_model))
        self.widget = w.VBox([
            self.header, w.HTML("<h4>Progress per student</h4>"), self.progress,
            w.HTML("<h4>Agreement per item group</h4>"), self.agreement,
            w.HTML("<h4>Raters to look at</h4>"), self.raters,
            w.HTML("<h4>The class reward model</h4>"), w.HBox([self.model, self.refit]), self.message])
        self._stop = threading.Event()
        self._last_model = 0.0
        self.refresh()
        self._thread = None
        if live:
            self._thread = threading.Thread(target=self._loop, name="rlhf-dashboard", daemon=True)
            self._thread.start()

    # ---- updating ------------------------------------------------------------------------------------------------
    def refresh(self) -> dict:
        """Read the store and update every table; returns the overview it showed."""
        view = class_overview(self.store)
        t = view["totals"]
        self.refreshes += 1
        self.header.value = (
            f"<h3>{t['judged']} of {t['assigned']} assigned judgments made</h3>"
            f"<p>{t['students']} students ({t['done']} done) · {t['items']} items · {t['judgments']} judgments in "
            f"all · updated {time.strftime('%H:%M:%S')} (every {self.refresh_s:g} s)</p>")
        self.progress.value = _table(view["progress"], "No students enrolled yet (classroom.enroll).")
        self.agreement.value = _table(view["agreement"], "No pairwise judgments yet.")
        flagged = view["raters"][view["raters"]["flag"] != ""] if len(view["raters"]) else view["raters"]
        self.raters.value = _table(flagged, "Nobody stands out (yet).")
        return view

    def refresh_model(self) -> dict:
        """Refit the class reward model and show its held-out accuracy."""
        acc = class_model_accuracy(self.store)
        self._last_model = time.monotonic()
        if acc["val_pairs"] == 0:
            self.model.value = "<p><i>Too few pairs yet to fit and check a class model (8 or more).</i></p>"
        else:
            self.model.value = (f"<p>Accuracy on {acc['val_pairs']} pairs of held-out prompts: "
                                f"<b>{acc['accuracy']:.0%}</b> [95 % interval {acc['ci_low']:.0%} to "
                                f"{acc['ci_high']:.0%}], fitted on {acc['train_pairs']} pairs.</p>")
        return acc

    def _safely(self, fn) -> None:
        """Run `fn` (refresh or refresh_model); its failure is shown on the page and kept in `errors`, and taken off
        the page once it succeeds again."""
        what = "Refitting the class model failed" if fn == self.refresh_model else "Refresh failed"
        try:
            fn()
        except Exception as err:  # shown on the page and kept: never swallowed
            self.errors.append(repr(err))
            failure = f"{what} at {time.strftime('%H:%M:%S')}: {repr(err)}"
        else:
            failure = None
        with self._lock:
            self._failures.pop(what, None)
            if failure:
                self._failures[what] = failure
            self.message.value = "".join(f'<p style="color: #b00020">{html.escape(text)}</p>'
                                         for text in self._failures.values())

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self._safely(self.refresh)
            if time.monotonic() - self._last_model >= self.model_every_s:
                self._safely(self.refresh_model)

    def stop(self) -> None:
        """Stop refreshing (the page keeps its last figures)."""
        self._stop.set()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
