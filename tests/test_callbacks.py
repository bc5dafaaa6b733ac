"""rlhf_lab.train.callbacks: history in memory and JSONL, plain log lines, the notebook view (headless)."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import pytest

from rlhf_lab.train.callbacks import LiveView, MetricsHistory, PrintLogger, format_line, plot_history


def metrics(update: int) -> dict:
    return {"update": update, "objective/scores": 0.5 * update, "objective/kl": 0.1 * update, "objective/beta": 0.05,
            "val/explained_variance": float("nan"), "time/update_s": 1.25}


def fake_trainer(history=None):
    return SimpleNamespace(n_updates_=3, history=history or MetricsHistory())


def test_history_keeps_rows_and_appends_jsonl(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    history = MetricsHistory(path)
    for u in (1, 2):
        history.on_step_end(None, metrics(u))
    history.on_samples(None, [{"update": 2, "prompt": "p", "response": "r", "score": 1.0}])
    assert [r["update"] for r in history.rows] == [1, 2]
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["objective/scores"] == 1.0
    assert json.loads(lines[0])["val/explained_variance"] is None  # JSON has no NaN
    back = MetricsHistory.read_jsonl(path)
    assert back[1]["objective/kl"] == pytest.approx(0.2) and math.isnan(back[0]["val/explained_variance"])
    assert json.loads((tmp_path / "run" / "samples.jsonl").read_text())["response"] == "r"
    frame = history.to_frame()
    assert list(frame["update"]) == [1, 2]


def test_history_state_round_trip():
    history = MetricsHistory()
    history.on_step_end(None, metrics(1))
    other = MetricsHistory()
    other.load_state_dict(json.loads(json.dumps(history.state_dict())))
    assert other.rows[0]["objective/scores"] == 0.5 and other.samples == []


def test_format_line_and_print_logger():
    line = format_line(metrics(2), 3)
    assert line.startswith("update 2/3 | score 1 | kl 0.2 | beta 0.05") and line.endswith("1.2 s")
    out = io.StringIO()
    logger = PrintLogger(every=2, file=out)
    for u in (1, 2, 3):
        logger.on_step_end(fake_trainer(), metrics(u))
    logger.on_samples(fake_trainer(), [{"prompt": "hi", "response": "hello", "score": 0.5}])
    lines = out.getvalue().splitlines()
    assert lines == ["update 2/3 | score 1 | kl 0.2 | beta 0.05 | 1.2 s", "  [+0.50] 'hi' -> 'hello'"]


def test_plot_history_has_one_panel_per_key():
    rows = [metrics(u) for u in (1, 2, 3)]
    fig = plot_history(rows, keys=("objective/scores", "objective/kl"))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["objective/scores", "objective/kl"]
    assert list(visible[0].lines[0].get_ydata()) == [0.5, 1.0, 1.5]
    fig = plot_history(rows[:2], keys=("objective/kl",))
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
    assert ticks and all(t == int(t) for t in ticks)  # two updates: no tick at 1.5


def test_plot_history_redraws_its_own_figure_as_a_fresh_one_would_draw():
    rows = [metrics(u) for u in (1, 2, 3)]
    keys = ("objective/scores", "objective/kl")
    fig = plot_history(rows[:1], keys=keys)
    axes = list(fig.axes)
    assert plot_history(rows, keys=keys, figure=fig) is fig and fig.axes == axes  # the same axes, lines moved
    fresh = plot_history(rows, keys=keys)
    for ax, new in zip(fig.axes, fresh.axes):
        assert list(ax.lines[0].get_ydata()) == list(new.lines[0].get_ydata())
        assert ax.get_ylim() == new.get_ylim() and ax.get_xlim() == new.get_xlim()
    other = plot_history(rows, keys=("objective/kl",), figure=fig)  # other keys: drawn anew
    assert [ax.get_title() for ax in other.axes if ax.get_visible()] == ["objective/kl"]


def test_live_view_without_a_frontend_prints_lines(capsys):
    view = LiveView(notebook=False)
    view.on_train_begin(fake_trainer())
    view.on_step_end(fake_trainer(), metrics(1))
    assert capsys.readouterr().out.startswith("update 1/3 | score 0.5")


def test_live_view_updates_display_handles_in_place(monkeypatch):
    import IPython
    import IPython.display

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)

    handles = []

    class Handle:
        def __init__(self, obj):
            self.objects = [obj]

        def update(self, obj):
            self.objects.append(obj)

    def display(obj, display_id=False):
        handles.append(Handle(obj))
        return handles[-1]

    monkeypatch.setattr(IPython.display, "display", display)
    trainer = fake_trainer()
    view = LiveView(notebook=True, keys=("objective/scores",))
    view.on_train_begin(trainer)
    for u in (1, 2):
        trainer.history.on_step_end(trainer, metrics(u))
        view.on_step_end(trainer, metrics(u))
    view.on_samples(trainer, [{"prompt": "hi", "response": "hello", "score": 0.5}])
    progress, plot, samples = handles  # three handles made once, then only updated
    assert len(progress.objects) == 3 and "update 2/3" in progress.objects[-1].data
    assert [type(x).__name__ for x in plot.objects[1:]] == ["Image", "Image"]  # the figure drawn as PNG
    assert plot.objects[2].data.startswith(b"\x89PNG") and plot.objects[2].data != plot.objects[1].data
    assert list(view._figure.axes[0].lines[0].get_ydata()) == [0.5, 1.0]  # one figure, its line moved
    assert samples.objects[-1]["response"].tolist() == ["hello"]

    # the next RLHF iteration's `train` from the same cell keeps the same view; a new cell gets a new one
    import IPython

    shell = type("Shell", (), {"execution_count": None})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    view.on_train_begin(trainer)
    assert len(handles) == 3
    shell.execution_count = 7
    view.on_train_begin(trainer)
    assert len(handles) == 6


def test_tensorboard_logger_writes_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlhf_lab.train.callbacks import TensorBoardLogger, tracker_callbacks

    [logger] = tracker_callbacks("tensorboard", tmp_path)
    assert isinstance(logger, TensorBoardLogger)
    trainer = fake_trainer()
    for u in (1, 2):
        logger.on_step_end(trainer, metrics(u))
    logger.log_scalars({"gold_reward": 0.25, "note": "text", "nan": float("nan")}, step=2, prefix="eval/")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("objective/scores")] == [(1, 0.5), (2, 1.0)]
    assert [e.value for e in events.Scalars("eval/gold_reward")] == [0.25]
    assert "eval/nan" not in events.Tags()["scalars"]
    assert tracker_callbacks((), tmp_path) == [] and tracker_callbacks("none", tmp_path) == []
    with pytest.raises(ValueError, match="supported: \\['tensorboard'\\]"):
        tracker_callbacks(["wandb"], tmp_path)


def test_a_line_a_killed_writer_left_half_written_is_dropped_not_glued_to_the_next(tmp_path):
    path = tmp_path / "ppo_metrics.jsonl"
    MetricsHistory(path).on_step_end(None, {"update": 1})
    with path.open("a") as f:
        f.write('{"update": 2, "objective/sc')  # SIGKILL mid-append: no newline
    assert [r["update"] for r in MetricsHistory.read_jsonl(path)] == [1]  # what was whole still reads
    resumed = MetricsHistory(path)  # the trainer resumed from its checkpoint after update 1
    resumed.on_step_end(None, {"update": 2})
    resumed.on_samples(None, [{"update": 2, "response": "é"}])
    assert [json.loads(line)["update"] for line in path.read_text().splitlines()] == [1, 2]
    assert MetricsHistory.read_jsonl(tmp_path / "samples.jsonl") == [{"update": 2, "response": "é"}]
    path.write_text('{"update": 1}\n{"upd\n{"update": 3}\n')  # damage inside the file is named, not skipped
    with pytest.raises(ValueError, match=r"ppo_metrics.jsonl line 2 is not JSON"):
        MetricsHistory.read_jsonl(path)
