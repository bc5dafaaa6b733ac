"""Plots: functions from data to a matplotlib Figure. They never call plt.show(); Jupyter displays the returned Figure.

Organised by lab stage; each section takes the plain data its stage produces (lists of dicts, DataFrames, arrays),
or the stage's report object, which carries the same data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

CHOSEN_COLOR, REJECTED_COLOR, TRAIN_COLOR, VAL_COLOR = "tab:green", "tab:red", "tab:blue", "tab:orange"


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A Figure built without pyplot (no global state, no display side effects) and its axes."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, np.atleast_1d(axes)


# ----------------------------------------------------------------------------------------------------------------------
# reward model


def plot_reward_training(history, smooth: int = 5) -> Figure:
    """Loss and pairwise accuracy per step: train (raw and a running mean over `smooth` steps) and validation.

    history: `RewardModel.history_` (a list of dicts with step, train/loss, train/accuracy and, at evaluation
    steps, val/loss, val/accuracy) or the same as a DataFrame.
    """
    df = pd.DataFrame(history)
    if df.empty:
        raise ValueError("the history is empty: fit the reward model first")
    fig, (ax_loss, ax_acc) = _figure(ncols=2)
    for ax, name, chance in ((ax_loss, "loss", np.log(2)), (ax_acc, "accuracy", 0.5)):
        train = df[f"train/{name}"]
        ax.plot(df["step"], train, color=TRAIN_COLOR, alpha=0.3, lw=1)
        ax.plot(df["step"], train.rolling(smooth, min_periods=1).mean(), color=TRAIN_COLOR, label="train")
        if f"val/{name}" in df:
            val = df.dropna(subset=[f"val/{name}"])
            ax.plot(val["step"], val[f"val/{name}"], "o-", color=VAL_COLOR, label="validation")
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set(xlabel="step", ylabel=name, title=f"Bradley–Terry {name}")
        ax.legend(loc="best", fontsize="small")
    ax_acc.set_ylim(0, 1.02)
    return fig


def plot_calibration(calibration) -> Figure:
    """Reliability diagram: observed frequency of "chosen" vs predicted P(chosen) = σ(r_c − r_r), per bin.

    calibration: a `RewardReport` or its `calibration` table (bin_lo, bin_hi, count, predicted, observed).
    Points on the diagonal are calibrated; below it the model is over-confident for P > ½. Bars: pairs per bin.
    """
    table = getattr(calibration, "calibration", calibration)
    used = table[table["count"] > 0]
    fig, (ax,) = _figure(width=4.6, height=4.2)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfectly calibrated")
    ax.plot(used["predicted"], used["observed"], "o-", color=TRAIN_COLOR, label="reward model")
    counts = ax.twinx()
    counts.bar((table["bin_lo"] + table["bin_hi"]) / 2, table["count"], width=table["bin_hi"] - table["bin_lo"],
               color="grey", alpha=0.15)
    counts.set_ylabel("pairs per bin (both orders)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(chosen)", ylabel="observed frequency", title="Calibration")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left", fontsize="small")
    return fig


def plot_reward_histograms(rewards, bins: int = 30) -> Figure:
    """Distributions of the rewards of chosen and of rejected replies (well separated = a discriminating model).

    rewards: a `RewardReport`, its `rewards` table (columns role, reward), or a dict {"chosen": array,
    "rejected": array}.
    """
    rewards = getattr(rewards, "rewards", rewards)
    if isinstance(rewards, pd.DataFrame):
        rewards = {role: rewards.loc[rewards["role"] == role, "reward"].to_numpy() for role in ("chosen", "rejected")}
    both = np.concatenate([rewards["chosen"], rewards["rejected"]])
    edges = np.histogram_bin_edges(both, bins=bins)
    fig, (ax,) = _figure()
    for role, color in (("chosen", CHOSEN_COLOR), ("rejected", REJECTED_COLOR)):
        values = np.asarray(rewards[role])
        ax.hist(values, bins=edges, color=color, alpha=0.5, label=f"{role} (mean {values.mean():.2f})")
    ax.set(xlabel="reward", ylabel="replies", title="Rewards of chosen vs rejected replies")
    ax.legend(fontsize="small")
    return fig
