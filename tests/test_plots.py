"""Plots return Figures built from plain data (no pyplot state, nothing shown) with the expected content."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from rlhf_lab.plots import plot_calibration, plot_reward_histograms, plot_reward_training
from rlhf_lab.reward_eval import evaluate_rewards


def report(n=200, seed=0):
    rng = np.random.default_rng(seed)
    pairs = pd.DataFrame({"prompt": [f"p{i % 7}" for i in range(n)], "chosen": [f"c{i}" for i in range(n)],
                          "rejected": [f"r{i}" for i in range(n)], "tie": [False] * n})
    return evaluate_rewards(pairs, rng.normal(1, 1, n), rng.normal(0, 1, n))


def test_training_curves_show_train_and_validation():
    history = [{"step": s, "train/loss": 0.7 - 0.01 * s, "train/accuracy": 0.5 + 0.01 * s} for s in range(1, 21)]
    history[9].update({"val/loss": 0.6, "val/accuracy": 0.6})
    history[19].update({"val/loss": 0.5, "val/accuracy": 0.7})
    fig = plot_reward_training(history)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss_ax = fig.axes[0]
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert "train" in labels and "validation" in labels
    val = loss_ax.get_lines()[labels.index("validation")]
    assert list(val.get_xdata()) == [10, 20] and list(val.get_ydata()) == [0.6, 0.5]
    with pytest.raises(ValueError, match="empty"):
        plot_reward_training([])


def test_calibration_plot_from_report_or_table():
    rep = report()
    for source in (rep, rep.calibration):
        fig = plot_calibration(source)
        ax = fig.axes[0]
        model_line = [ln for ln in ax.get_lines() if ln.get_label() == "reward model"][0]
        used = rep.calibration[rep.calibration["count"] > 0]
        assert np.allclose(model_line.get_ydata(), used["observed"])
        assert sum(p.get_height() for p in fig.axes[1].patches) == 2 * 200


def test_reward_histograms_count_every_reply():
    rep = report()
    fig = plot_reward_histograms(rep)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 400
    assert [t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()] == ["chosen", "rejected"]
    fig = plot_reward_histograms({"chosen": np.array([1.0, 2.0]), "rejected": np.array([0.0])}, bins=3)
    assert sum(p.get_height() for p in fig.axes[0].patches) == 3
