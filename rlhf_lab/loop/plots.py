"""Every plot of the lab: functions from data to a matplotlib Figure, built without pyplot (no global state, no
display side effects; Jupyter displays the returned Figure, `fig.savefig` writes it).

Organised by stage; each section takes the plain data its stage produces (lists of dicts, DataFrames, arrays), or
the stage's report object, which carries the same data. (The live training view is `train.callbacks.LiveView`.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter

from rlhf_lab.core.figures import Figure

__all__ = ["plot_sampling_sweep", "plot_reward_training", "plot_calibration", "plot_reward_histograms",
           "plot_ppo_curves", "plot_overoptimisation", "plot_rm_accuracy", "plot_round_gains", "plot_proxy_vs_gold",
           "plot_sweep",
           "plot_frontier", "plot_costs", "plot_taste"]

CHOSEN_COLOR, REJECTED_COLOR, TRAIN_COLOR, VAL_COLOR = "#0072B2", "#D55E00", "tab:blue", "tab:orange"
"""Chosen and rejected: Okabe–Ito blue and vermillion, apart for red–green colour-blind readers too."""


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A Figure built without pyplot (no global state, no display side effects) and its axes."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, np.atleast_1d(axes)


def _legend_below(fig, handles=None, title=None, ncols=None):
    """One legend for the figure, under its axes (constrained layout makes room), so it covers no data however many
    entries it has or however long they are; the figure grows by its rows. handles: default, every axes' labelled
    artists (a name drawn on two panels listed once)."""
    if handles is None:
        named = {}
        for h in (h for ax in fig.axes for h in ax.get_legend_handles_labels()[0]):
            named.setdefault(h.get_label(), h)
        handles = list(named.values())
    if not handles:
        return None
    if ncols is None:
        ncols = 1 if max(len(h.get_label()) for h in handles) > 45 else min(len(handles), 2 + (len(fig.axes) > 1))
    rows = -(-len(handles) // ncols) + (title is not None)
    fig.set_figheight(fig.get_figheight() + 0.2 * rows)
    return fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, title=title,
                      title_fontsize=8, frameon=False)


def _nothing_to_draw(ax, message: str) -> None:
    """An empty axes that says why it is empty (instead of bare 0–1 axes)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey", wrap=True)
    ax.set(xticks=[], yticks=[])


# ----------------------------------------------------------------------------------------------------------------------
# sampling (lesson 1)


def plot_sampling_sweep(table: pd.DataFrame, diversity: str = "distinct_2", quality: str = "gold") -> Figure:
    """Quality against diversity, one point per sampling setting, labelled with its temperature and top_p."""
    if not len(table):
        raise ValueError("the sweep table is empty: give lessons.sampling_sweep at least one SamplingConfig")
    fig, (ax,) = _figure(width=5.5, height=4)
    ax.plot(table[diversity], table[quality], "o", color="tab:blue")
    for row in table.itertuples():
        ax.annotate(f"T={row.temperature:g}, p={row.top_p:g}", (getattr(row, diversity), getattr(row, quality)),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=f"diversity ({diversity})", ylabel=f"quality ({quality})",
           title="Exploration vs exploitation: diversity against quality")
    return fig


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
        ax.plot(df["step"], train.rolling(smooth, min_periods=1).mean(), color=TRAIN_COLOR, label="train",
                marker="o" if len(df) == 1 else None)  # one step: a point, not an invisible line
        ax.xaxis.set_major_locator(MaxNLocator(integer=True) if len(df) > 1 else FixedLocator(df["step"]))
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
    counts.yaxis.set_major_locator(MaxNLocator(integer=True))  # pairs are whole (no 0.25 pair with few of them)
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
    if not len(rewards["chosen"]) or not len(rewards["rejected"]):
        raise ValueError("no rewards of chosen or of rejected replies to plot: evaluate on at least one pair")
    edges = np.histogram_bin_edges(both, bins=bins)
    fig, (ax,) = _figure()
    for role, color in (("chosen", CHOSEN_COLOR), ("rejected", REJECTED_COLOR)):
        values = np.asarray(rewards[role])
        ax.hist(values, bins=edges, color=color, alpha=0.5, label=f"{role} (mean {values.mean():.2f})")
    ax.set(xlabel="reward", ylabel="replies", title="Rewards of chosen vs rejected replies")
    ax.legend(fontsize="small")
    return fig

# ----------------------------------------------------------------------------------------------------------------------
# runs: PPO curves, over-optimisation, reward-model accuracy


def _iteration_boundaries(ax, metrics: pd.DataFrame, updates_per_iteration: int) -> None:
    last = int(metrics["update"].max()) if len(metrics) else 0
    for b in range(updates_per_iteration, last, updates_per_iteration):
        ax.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1)


def _smoothed(metrics: pd.DataFrame, column: str, updates_per_iteration: int, window: int) -> pd.Series:
    """Running mean of `column` over `window` updates, restarted at each iteration (a new reward model's scale)."""
    iteration = (metrics["update"] - 1) // max(updates_per_iteration, 1)
    return metrics.groupby(iteration)[column].transform(lambda s: s.rolling(window, min_periods=1).mean())


def plot_ppo_curves(metrics: pd.DataFrame, updates_per_iteration: int, kl_target: float | None = None,
                    smooth: int = 4, evaluation: pd.DataFrame | None = None,
                    score_label: str = "reward-model score") -> Figure:
    """Reward and KL on one time axis (PPO update), iteration boundaries dotted. metrics: one row per update.

    Each curve is drawn raw (faint, thin) and as a running mean over `smooth` updates within an iteration (bold):
    with a handful of replies per update the raw score is noisy, and it moves with how easy each batch's prompts
    are. score − β·KL is dashed, over the reward-model score (they nearly coincide while KL is small).
    evaluation (one row per iteration, `RLHFRun.evaluation()`): the fixed eval prompts' gold reward (right axis) and
    KL after each iteration, the across-iteration view. score_label names the score the trainer was paid (e.g.
    "score − spread" for `pessimistic_reward`)."""
    fig, (ax_r, ax_kl) = _figure(ncols=2, width=5.5, height=3.8)
    metrics = metrics.sort_values("update") if len(metrics) else metrics
    curves = [(ax_r, "objective/scores", score_label, "tab:blue", "-", 2.5, 2),
              (ax_r, "objective/rlhf_reward", "score − β·KL", "tab:green", "--", 1.5, 3),
              (ax_kl, "objective/kl", "KL(π‖π_ref) per reply", "tab:red", "-", 2, 2)]
    for ax, column, label, color, style, width, z in curves:
        if column in metrics and len(metrics):
            ax.plot(metrics["update"], metrics[column], color=color, alpha=0.3, linewidth=0.8, zorder=1)
            ax.plot(metrics["update"], _smoothed(metrics, column, updates_per_iteration, smooth), color=color,
                    linestyle=style, linewidth=width, zorder=z, label=f"{label} (mean of {smooth})",
                    marker="o" if len(metrics) == 1 else None)  # one update: a point, not an invisible line
    if len(metrics):  # one legend entry for the faint raw lines of every curve
        ax_r.plot([], [], color="grey", alpha=0.4, linewidth=0.8, label="each update (faint)")
    if len(metrics):
        for ax in (ax_r, ax_kl):
            _iteration_boundaries(ax, metrics, updates_per_iteration)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates are whole numbers
    if kl_target is not None:
        ax_kl.axhline(kl_target, color="tab:red", linestyle="--", linewidth=1, label="KL target")
    if evaluation is not None and len(evaluation):
        ev = evaluation.sort_values("update")
        ax_gold = ax_r.twinx()
        ax_gold.plot(ev["update"], ev["gold_reward"], "o-", color="tab:orange", label="gold reward, eval prompts")
        ax_gold.set_ylabel("gold reward (eval prompts)", color="tab:orange")
        ax_kl.plot(ev["update"], ev["kl"], "s", color="black", label="KL on eval prompts")
    legend_ax = ax_kl
    if kl_target is not None and "objective/beta" in metrics and len(metrics):  # the adaptive β, steering the KL
        legend_ax = ax_kl.twinx()
        legend_ax.plot(metrics["update"], metrics["objective/beta"], color="tab:purple", linewidth=1.2,
                       label="β, adaptive (right axis)")
        legend_ax.set_ylim(0, 2 * metrics["objective/beta"].max())  # from 0: how far β moved, in proportion
        legend_ax.set_ylabel("β (weight of the KL penalty)", color="tab:purple")
    several = len(metrics) and metrics["update"].max() > updates_per_iteration  # more than one iteration drawn
    ax_r.set(title="Reward during PPO" + (" (dotted: new iteration, new reward model)" if several else ""),
             xlabel="PPO update", ylabel="reward")
    ax_kl.set(title="KL to the reference policy", xlabel="PPO update", ylabel="nats")
    if not len(metrics):
        for ax in (ax_r, ax_kl):
            _nothing_to_draw(ax, "no PPO updates yet")
    # under the panels, the reward panel's names in the left column and the KL panel's in the right
    left, right = ([h for ax in dict.fromkeys(axes) for h in ax.get_legend_handles_labels()[0]]
                   for axes in ((ax_r, *ax_r.get_shared_x_axes().get_siblings(ax_r)), (ax_kl, legend_ax)))  # + twins
    pad = [Line2D([], [], alpha=0, label=" ")] * abs(len(left) - len(right))
    _legend_below(fig, left + pad * (len(left) < len(right)) + right + pad * (len(right) < len(left)), ncols=2)
    return fig


def plot_overoptimisation(evaluation: pd.DataFrame) -> Figure:
    """Gold reward of each iteration's policy against its KL to the reference (one curve: one hidden utility), and
    each iteration's proxy score (its own reward model's, so points of different models are not joined)."""
    fig, (ax,) = _figure(width=5.5, height=3.8)
    ev = evaluation.sort_values("iteration")
    ax.plot(ev["kl"], ev["gold_reward"], "o-", color="tab:orange", label="gold (the crowd's hidden utility)")
    if "proxy_reward" in ev:
        ax.plot(ev["kl"], ev["proxy_reward"], "s", color="tab:blue",
                label="proxy (that iteration's reward model; not comparable across iterations)")
    for n, (_, row) in enumerate(ev.iterrows()):  # labels alternate above and below: close points do not overlap
        last = row["kl"] == ev["kl"].max() and n > 0  # the rightmost label left of its point, inside the axes
        ax.annotate(f"it {int(row['iteration'])}", (row["kl"], row["gold_reward"]), textcoords="offset points",
                    xytext=(-5 if last else 5, 7 if n % 2 == 0 else -13), ha="right" if last else "left", fontsize=8)
    ax.set(title="Proxy vs gold reward as KL grows", xlabel="KL to the reference (nats per reply)", ylabel="reward")
    _legend_below(fig)
    return fig


def plot_rm_accuracy(evaluation: pd.DataFrame) -> Figure:
    """Reward-model accuracy on held-out judgments per iteration, beside the gold utility's on the same judgments (the
    best achievable when the judges follow the gold utility, as the simulated crowd does; for a learner with a taste
    of their own, how often the crowd's taste agrees with theirs).
    The y-axis shows every value (and at least 0.4–1)."""
    fig, (ax,) = _figure(width=5.5, height=3.8)
    ev = evaluation[evaluation["iteration"] > 0].sort_values("iteration")
    values = [0.4, 1.0]
    if "rm/val_accuracy" in ev:
        ax.plot(ev["iteration"], ev["rm/val_accuracy"], "o-", label="reward model")
        ax.plot(ev["iteration"], ev["rm/gold_accuracy"], "s--", label="gold utility on the same judgments")
        values += [v for v in pd.concat([ev["rm/val_accuracy"], ev["rm/gold_accuracy"]]) if pd.notna(v)]
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set(title="Reward-model accuracy on held-out pairs", xlabel="iteration", ylabel="accuracy",
           ylim=(min(values) - 0.05, max(values) + 0.03))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    if len(ev):
        ax.legend(fontsize=8)
    else:
        _nothing_to_draw(ax, "no reward model yet: it is fitted in iteration 1")
    return fig


_ROUND_GAINS = {"rm": "your reward model's score\n(the latest model, scoring both)", "taste": "the stand-in's taste",
               "gold": "gold (the crowd's hidden utility)"}
"""The measures of `plot_round_gains`: the prefix of their evaluation columns and a title."""


def plot_round_gains(evaluation: pd.DataFrame, since: str = "initial") -> Figure:
    """The change since the initial policy (or the "previous" iteration) of each measure in the evaluation table
    (`RLHFRun.changes`), per iteration, paired by prompt, with its 95 % interval: one panel per measure, since their
    scales differ. A bar that crosses the dotted zero line is "no detectable change"."""
    ev = evaluation[evaluation["iteration"] > 0].sort_values("iteration")
    measures = [m for m in _ROUND_GAINS if f"{m}_gain_vs_{since}" in ev and ev[f"{m}_gain_vs_{since}"].notna().any()]
    if not measures:
        raise ValueError(f"the evaluation table has no gains vs {since!r}: evaluate iteration 1 first")
    fig, axes = _figure(ncols=len(measures), width=3.8, height=3.4)
    for ax, m in zip(axes, measures):
        rows = ev[ev[f"{m}_gain_vs_{since}"].notna()]
        gain, low, high = (rows[f"{m}_gain_vs_{since}{end}"] for end in ("", "_ci_low", "_ci_high"))
        line = ax.errorbar(rows["iteration"], gain, yerr=[gain - low, high - gain], fmt="-", capsize=4).lines[0]
        seen = (low > 0) | (high < 0)  # the interval excludes 0; else (or with no interval) no detectable change
        for where, face in ((seen, line.get_color()), (~seen, "white")):
            ax.plot(rows["iteration"][where], gain[where], "o", color=line.get_color(), mfc=face, zorder=3)
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set(title=_ROUND_GAINS[m], xlabel="iteration", ylabel=f"change since the {since} policy" if
               ax is axes[0] else None)
        ax.title.set_fontsize(9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Change since the {since} policy (bars: 95 % interval, paired by prompt)\n"
                 "filled: a detectable change; hollow: no detectable change (the interval includes 0)", fontsize=9)
    return fig


def plot_proxy_vs_gold(curves: pd.DataFrame, hue: str = "setting") -> Figure:
    """Proxy (dashed) and gold (solid) reward against KL, one colour per value of `hue`, each curve shifted to start
    at 0 so that settings compare by how much they gained."""
    if not len(curves):
        raise ValueError("no curves to plot: the table is empty (run lessons.overoptimisation_curve first)")
    fig, (ax_proxy, ax_gold) = _figure(ncols=2, height=3.8)
    ax_gold.sharex(ax_proxy)
    groups = curves.groupby(hue, sort=False) if hue in curves else [("", curves)]
    for i, (label, group) in enumerate(groups):
        group = group.sort_values("update")
        color = f"C{i}"
        ax_proxy.plot(group["kl"], group["proxy"] - group["proxy"].iloc[0], "o--", color=color, label=str(label))
        ax_gold.plot(group["kl"], group["gold"] - group["gold"].iloc[0], "o-", color=color, label=str(label))
    for ax, name in ((ax_proxy, "proxy (reward model)"), (ax_gold, "gold (the crowd's hidden utility)")):
        ax.axhline(0, color="grey", lw=1, ls=":")
        ax.set(xlabel="KL to the reference (nats per reply)", ylabel="gain since the start", title=name)
    _legend_below(fig, title=hue if hue in curves else None)
    return fig

# ----------------------------------------------------------------------------------------------------------------------
# ablations and method comparisons


def plot_sweep(df: pd.DataFrame, x: str, y: str = "gold_reward", hue: str | None = None) -> Figure:
    """y against x, one line per value of `hue`; points of the same (x, hue) are averaged over seeds, with the
    spread (min–max) as error bars. With one run per point, gold_reward's bars are that run's 95 % interval of its
    gain over the policy it started from (paired by prompt: the eval replies' noise, not the training's); other
    figures get none. The title says which. Whether two points differ is `ablation.contrasts`'s question."""
    for column in (x, y, hue):
        if column is not None and column not in df:
            raise KeyError(f"{column!r} is not a column of the sweep table; columns: {list(df.columns)}.")
    counts = df.groupby([x, hue] if hue else [x]).size()
    gain = [f"gold_gain_vs_initial{end}" for end in ("", "_ci_low", "_ci_high")]
    own = counts.max() == 1 and y == "gold_reward" and set(gain) <= set(df.columns)
    fig, (ax,) = _figure(width=5.5, height=3.8)
    values = pd.to_numeric(pd.Series(df[x].unique()), errors="coerce")
    log = values.notna().all() and values.min() > 0 and values.max() >= 10 * values.min()  # a decade or more
    groups = df.groupby(hue, sort=True) if hue else [(None, df)]
    span = (np.log10(values.max() / values.min()) if log else values.max() - values.min()) or 1.0
    step = 0.3 * span / max(len(values) - 1, 1) / max(len(groups) - 1, 1)  # hues side by side: 30 % of a gap
    for k, (label, group) in enumerate(groups):
        if own:  # the run's gain interval, moved to its gold reward (NaN at a round without one: no bar)
            stats = group.assign(low=group[gain[0]] - group[gain[1]], high=group[gain[2]] - group[gain[0]]) \
                .groupby(x, sort=True)[[y, "low", "high"]].mean()
            mean, yerr = stats[y], [stats["low"], stats["high"]]
        else:
            stats = group.groupby(x, sort=True)[y].agg(["mean", "min", "max"])
            mean, yerr = stats["mean"], [stats["mean"] - stats["min"], stats["max"] - stats["mean"]]
        at = stats.index.astype(str) if stats.index.dtype == object else stats.index
        if hue and values.notna().all():  # side by side, so that one hue's bars do not hide another's
            offset = (k - (len(groups) - 1) / 2) * step
            at = at * 10 ** offset if log else at + offset
        ax.errorbar(at, mean, yerr=yerr, marker="o", capsize=3, label=None if hue is None else f"{hue} = {label}")
    n = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
    missing = own and df[gain[1]].isna()
    if own and missing.all():  # one seed and no interval (a round without one): no bar, and the title says none
        own = None
    bars = "bars: min–max" if counts.max() > 1 else "bars: 95 % interval of its gain" if own else \
        "no interval, no bars" if own is None else "no bars"
    bars += " where it has one" if own and missing.any() else ""
    ax.set(xlabel=x, ylabel=y, title=f"{y} by {x}\n({n} run{'s' if counts.max() > 1 else ''} per point; {bars})")
    if log:
        ax.set_xscale("log")
        ax.set_xticks(sorted(values), labels=[f"{v:g}" for v in sorted(values)], minor=False)
        ax.xaxis.set_minor_formatter(NullFormatter())
    if hue:
        _legend_below(fig)
    return fig


def plot_frontier(frontier: pd.DataFrame) -> Figure:
    """Gold and proxy reward against KL to the initial policy, one line per method (the reward–KL frontier);
    best-of-n's analytic KL, log n − (n−1)/n, as a dotted line beside its measured one."""
    fig, axes = _figure(ncols=2, height=3.8)
    for ax, key, title in zip(axes, ("gold_reward", "proxy_reward"), ("gold reward", "proxy reward")):
        for name, rows in frontier.groupby("method", sort=False):
            rows = rows.sort_values("kl")
            line, = ax.plot(rows["kl"], rows[key], marker="o", label=name)
            if "kl_analytic" in rows and rows["kl_analytic"].notna().all():
                ax.plot(rows["kl_analytic"], rows[key], ls=":", color=line.get_color(), label=f"{name} (analytic KL)")
            if key == "gold_reward" and "gold_gain_ci_low" in rows:  # the gain's interval (at the start: exactly 0)
                low, high = (rows["gold_gain"] - rows[f"gold_gain_ci_{e}"] for e in ("low", "high"))
                ax.errorbar(rows["kl"], rows[key], yerr=[low, -high], fmt="none", color=line.get_color(), capsize=3)
        ax.set(xlabel="KL to the initial policy (nats per reply)", ylabel=title, title=f"{title} vs KL")
    if "gold_gain_ci_low" in frontier:
        axes[0].set_title("gold reward vs KL\n(bars: 95 % interval of the gain over the initial policy)", fontsize=10)
    _legend_below(fig)
    return fig


def plot_costs(table: pd.DataFrame) -> Figure:
    """Win rate against the initial policy, tokens generated, wall time and peak memory per method (bars)."""
    fig, axes = _figure(ncols=4, width=3.0, height=1.4 + 0.25 * len(table))
    for ax, (key, title) in zip(axes, _COSTS.items()):
        ax.barh(table["method"].astype(str), table[key], color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelleft=ax is axes[0], labelsize=8)
        ax.invert_yaxis()  # the table's first method on top
    axes[0].axvline(0.5, color="grey", lw=0.8, ls="--")
    return fig


_COSTS = {"win_rate_vs_initial": "win rate vs the initial policy\n(gold; dashed: 0.5, no change)",
          "tokens_generated": "tokens generated", "wall_time_s": "wall time (s)", "peak_memory_mb": "peak memory (MB)"}
"""The columns of `plot_costs` and their titles."""


# ----------------------------------------------------------------------------------------------------------------------
# the taste loop


def plot_taste(samples, taste_result=None, reward_result=None) -> Figure:
    """Each held-out prompt's mean before (x) and after (y), for the taste (left, simulated learners) and the
    learner's reward model (right): points above the diagonal rose. The title carries the paired gain and its
    interval. samples: `TasteResult.samples`."""
    df = pd.DataFrame(samples)
    panels = [("taste", taste_result, "the taste's utility"), ("reward", reward_result, "your reward model's score")]
    panels = [p for p in panels if f"{p[0]}_before" in df]
    if not panels:
        raise ValueError("no before/after scores to plot: pass TasteResult.samples (what run_taste returns)")
    fig, axes = _figure(ncols=len(panels), width=4.6, height=4.2)
    for ax, (key, result, label) in zip(axes, panels):
        x, y = df[f"{key}_before"], df[f"{key}_after"]
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", ls=":", lw=1, label="no change")
        ax.scatter(x, y, s=18, color="tab:blue", alpha=0.7, label="one held-out prompt (mean of its replies)")
        title = label
        if result is not None:
            title += f"\ngain {result.gain:+.3f} [{result.ci_low:+.3f}, {result.ci_high:+.3f}]\n{result.verdict}"
        ax.set(xlabel="before", ylabel="after", title=title, xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad))
    _legend_below(fig)  # the upper left is where a prompt that rose a lot lands
    return fig
