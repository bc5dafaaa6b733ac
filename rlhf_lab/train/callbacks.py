"""What a training run does besides training: keep its metrics, print them, plot them live.

    trainer = PPOTrainer(..., callbacks=[PrintLogger()])    # plain lines (terminals, CI logs)
    trainer = PPOTrainer(..., callbacks=[LiveView()])       # a figure and a progress line updated in place (Jupyter)
    trainer.history.to_frame()                               # every update's metrics as a DataFrame

`MetricsHistory` is always there: every update's metrics in memory and, when given a path, appended to a JSONL file
(one flushed line per update) so plots work offline and after a crash. A callback is any object with some of
`on_train_begin(trainer)`, `on_step_end(trainer, metrics)`, `on_samples(trainer, samples)`, `on_train_end(trainer)`;
the `Callback` base class supplies no-op defaults. The notebook view imports IPython and matplotlib only when used.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rlhf_lab.core.files import write_atomic
from rlhf_lab.core.inputs import is_number

__all__ = ["DEFAULT_PLOT_KEYS", "DEFAULT_PRINT_KEYS", "Callback", "MetricsHistory", "format_line", "PrintLogger",
           "plot_history", "in_notebook", "LiveView", "TensorBoardLogger", "TRACKERS", "tracker_callbacks",
           "default_callbacks"]

DEFAULT_PLOT_KEYS = ("objective/scores", "objective/kl", "objective/rlhf_reward", "objective/beta",
                     "policy/clipfrac_avg", "val/response_length")
DEFAULT_PRINT_KEYS = (("objective/scores", "score"), ("objective/kl", "kl"), ("objective/beta", "beta"),
                      ("objective/rlhf_reward", "rlhf"), ("policy/clipfrac_avg", "clip"),
                      ("val/eos_rate", "eos"), ("val/response_length", "len"))


class Callback:
    """Hooks a trainer calls; override the ones you need."""

    def on_train_begin(self, trainer) -> None:
        """Before the first update of `train`."""

    def on_step_end(self, trainer, metrics: dict) -> None:
        """After every update, with that update's metrics (flat dict of floats, TRL's names where they exist)."""

    def on_samples(self, trainer, samples: list[dict]) -> None:
        """Every `log_samples_every` updates, with rows of update, prompt, response, score."""

    def on_train_end(self, trainer) -> None:
        """After the last update of `train` (also when it stops with an error)."""


def _jsonl(rows: list[dict]) -> str:
    """Rows as JSON Lines, each value made JSON-able (`_jsonable`)."""
    return "".join(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n" for row in rows)


def _jsonable(value):
    """Floats as JSON numbers; NaN and inf as null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsHistory(Callback):
    """Every update's metrics, in memory (`rows`) and appended to `path` (JSONL) when given; samples likewise
    to `samples_path` (default: next to `path`, named samples.jsonl)."""

    def __init__(self, path: str | Path | None = None, samples_path: str | Path | None = None):
        self.rows: list[dict] = []
        self.samples: list[dict] = []
        self.path = Path(path) if path else None
        self.samples_path = Path(samples_path) if samples_path else (self.path.with_name("samples.jsonl")
                                                                      if self.path else None)

    def _append(self, path: Path | None, rows: list[dict]) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as f:
            if f.seek(0, 2) and (f.seek(-1, 2), f.read(1))[1] != b"\n":  # a line a killed process left half written
                f.seek(0)
                whole = f.read()
                f.truncate(whole.rfind(b"\n") + 1)  # goes, so this row does not run on from it
            f.write(_jsonl(rows).encode("utf-8"))

    def on_step_end(self, trainer, metrics: dict) -> None:
        self.rows.append(dict(metrics))
        self._append(self.path, [metrics])

    def on_samples(self, trainer, samples: list[dict]) -> None:
        self.samples.extend(samples)
        self._append(self.samples_path, samples)

    def rewrite(self) -> None:
        """Write the files anew from `rows` and `samples`, atomically (main process, after a resume: the files hold
        what the checkpoint holds; rows of updates made after it, which the run makes again, leave them)."""
        for path, rows in ((self.path, self.rows), (self.samples_path, self.samples)):
            if path is not None and (rows or path.exists()):
                write_atomic(path, _jsonl(rows))

    def to_frame(self):
        """The metrics as a pandas DataFrame, one row per update."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def state_dict(self) -> dict:
        return {"rows": self.rows, "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        """Restore rows and samples from a checkpoint; the JSONL file, if any, is left as it is."""
        self.rows, self.samples = list(state["rows"]), list(state["samples"])

    @staticmethod
    def read_jsonl(path: str | Path) -> list[dict]:
        """Rows from a metrics JSONL file (null read back as NaN). A last line without its newline that does not
        parse (the writer was killed mid-line) is left out; a line that does not parse elsewhere is a ValueError
        naming the file and the line."""
        rows, text = [], Path(path).read_text()
        lines = text.splitlines()
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    if n == len(lines) and not text.endswith("\n"):
                        break
                    raise ValueError(f"{path} line {n} is not JSON ({err}): the file was edited or damaged") from None
                rows.append({k: float("nan") if v is None else v for k, v in row.items()})
        return rows


def format_line(metrics: dict, n_updates: int | None = None, keys=DEFAULT_PRINT_KEYS, offset: int = 0) -> str:
    """One plain log line: `update 3/30 | score 0.120 | kl 0.041 | ... | 3.2 s`. With `offset` (the updates of
    earlier iterations of a run) the count starts again in each iteration: `update 1/12 (13/24 in the run)`. A KL
    estimate below 0 (the per-token estimator is noisy; the true KL is never negative) says so."""
    update = int(metrics.get("update", 0))
    if n_updates and offset:
        parts = [f"update {update - offset}/{n_updates - offset} ({update}/{n_updates} in the run)"]
    else:
        parts = [f"update {update}/{n_updates}" if n_updates else f"update {update}"]
    for key, label in keys:
        if key in metrics:
            value = metrics[key]
            note = " (≈ 0: noise)" if key == "objective/kl" and value < 0 else ""
            parts.append(f"{label} {value:.3g}{note}")
    if "time/update_s" in metrics:
        parts.append(f"{metrics['time/update_s']:.1f} s")
    return " | ".join(parts)


class PrintLogger(Callback):
    """Print one plain line every `every` updates (to `file`, default stdout), and the samples tables."""

    def __init__(self, every: int = 1, keys=DEFAULT_PRINT_KEYS, file=None, samples: bool = True):
        self.every, self.keys, self.file, self.print_samples = every, keys, file, samples

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def on_step_end(self, trainer, metrics: dict) -> None:
        if int(metrics.get("update", 0)) % self.every == 0:
            self._print(format_line(metrics, getattr(trainer, "n_updates_", None), self.keys,
                                    getattr(trainer, "update_offset_", 0)))

    def on_samples(self, trainer, samples: list[dict]) -> None:
        if self.print_samples:
            for row in samples:
                self._print(f"  [{row['score']:+.2f}] {row['prompt'][:40]!r} -> {row['response'][:80]!r}")


def plot_history(rows: list[dict], keys=DEFAULT_PLOT_KEYS, figure=None):
    """A matplotlib Figure with one small panel per metric key, x = update (a pure function of the rows). Given the
    figure it drew before for the same keys, it moves that figure's lines to the rows (a live view's redraw makes no
    new axes)."""
    from matplotlib.ticker import MaxNLocator

    from rlhf_lab.core.figures import Figure

    keys = [k for k in keys if any(k in r for r in rows)] or list(keys)
    drawn = figure is not None and getattr(figure, "history_keys", None) == keys
    fig = figure or Figure(figsize=(3.2 * min(len(keys), 3), 2.4 * math.ceil(len(keys) / 3)), layout="constrained")
    if not drawn:
        fig.clear()
        axes = fig.subplots(math.ceil(len(keys) / 3), min(len(keys), 3), squeeze=False).ravel()
        for ax, key in zip(axes, keys):
            ax.plot([], [])
            ax.set_title(key, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.locator_params(axis="y", nbins=4)  # few tick labels: drawing them is most of a redraw (0.59 → 0.31 s)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # updates are whole numbers
        for ax in axes[len(keys):]:
            ax.set_visible(False)
        fig.history_keys = keys
    for ax, key in zip(fig.axes, keys):
        points = [(r.get("update"), r[key]) for r in rows if key in r]
        line = ax.lines[0]
        line.set_data([p[0] for p in points], [p[1] for p in points])
        line.set_marker("." if len(points) < 30 else "None")
        ax.relim()
        ax.autoscale_view()
    return fig


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a frontend that can update displays in place)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class LiveView(Callback):
    """A notebook view updated in place: a progress line and a figure of `keys` (through IPython display
    handles). Without a notebook frontend (a terminal, papermill with no display) it prints plain lines instead."""

    def __init__(self, keys=DEFAULT_PLOT_KEYS, every: int = 1, notebook: bool | None = None):
        self.keys, self.every = keys, every
        self.notebook = in_notebook() if notebook is None else notebook
        self._fallback = PrintLogger(every=every)
        self._progress = self._plot = self._samples = self._figure = self._cell = None

    def on_train_begin(self, trainer) -> None:
        if not self.notebook:
            return
        from IPython import get_ipython
        from IPython.display import display

        cell = getattr(get_ipython(), "execution_count", None)
        if self._progress is not None and cell == self._cell:
            return  # another `train` call from the same cell (the next RLHF iteration): keep updating one view
        self._cell = cell
        self._progress = display("starting PPO ...", display_id=True)
        self._plot = display("", display_id=True)
        self._samples = display("", display_id=True)

    def on_step_end(self, trainer, metrics: dict) -> None:
        if not self.notebook or self._progress is None:
            self._fallback.on_step_end(trainer, metrics)
            return
        from IPython.display import HTML, Image

        from rlhf_lab.core.figures import png_bytes

        n = getattr(trainer, "n_updates_", None) or 0
        done = int(metrics.get("update", 0))
        bar = f"<progress value='{done}' max='{max(n, done)}' style='width:30em'></progress> " if n else ""
        self._progress.update(HTML(bar + format_line(metrics, n, DEFAULT_PRINT_KEYS,
                                                     getattr(trainer, "update_offset_", 0))))
        if done % self.every == 0:
            self._figure = plot_history(trainer.history.rows, self.keys, self._figure)
            self._plot.update(Image(data=png_bytes(self._figure)))  # drawn once (a figure's display draws twice)

    def on_samples(self, trainer, samples: list[dict]) -> None:
        if not self.notebook or self._samples is None:
            self._fallback.on_samples(trainer, samples)
            return
        import pandas as pd

        self._samples.update(pd.DataFrame(samples))


class TensorBoardLogger(Callback):
    """Every update's metrics as TensorBoard scalars (step = update) in `log_dir`; `log_scalars` adds others
    (e.g. an RLHF run's evaluation rows). Needs the `tensorboard` package (`pip install tensorboard`)."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError("report_to='tensorboard' needs the tensorboard package: pip install tensorboard "
                              "(or pip install 'rlhf-lab[tracking]').") from error
        self.writer = SummaryWriter(str(log_dir))

    def log_scalars(self, values: dict, step: int, prefix: str = "") -> None:
        for key, value in values.items():
            if is_number(value) and math.isfinite(value):
                self.writer.add_scalar(prefix + key, value, step)
        self.writer.flush()

    def on_step_end(self, trainer, metrics: dict) -> None:
        self.log_scalars({k: v for k, v in metrics.items() if k != "update"}, int(metrics["update"]))

    def on_samples(self, trainer, samples: list[dict]) -> None:
        rows = "\n".join(f"| {s.get('prompt', '')} | {s.get('response', '')} | {s.get('score', '')} |" for s in samples)
        self.writer.add_text("samples", "| prompt | response | score |\n|---|---|---|\n" + rows,
                             int(samples[0].get("update", 0)) if samples else 0)


TRACKERS = {"tensorboard": TensorBoardLogger}


def tracker_callbacks(report_to, log_dir: str | Path) -> list[Callback]:
    """Callbacks for the optional experiment trackers named in `report_to` ("tensorboard"; () or "none": none)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or ())
    unknown = sorted(set(names) - set(TRACKERS) - {"none"})
    if unknown:
        raise ValueError(f"Unknown report_to {unknown}; supported: {sorted(TRACKERS)} (the built-in metrics log is "
                         "always written).")
    return [TRACKERS[name](Path(log_dir) / name) for name in names if name != "none"]


def default_callbacks() -> list[Callback]:
    """A live view in a notebook, plain lines anywhere else."""
    return [LiveView()] if in_notebook() else [PrintLogger()]
