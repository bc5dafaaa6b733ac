"""Pictures and a summary of an RLHF run: what a learner looks at between iterations.

    figs = run_figures(run)        # dict name -> matplotlib Figure (nothing is shown or saved)
    write_report(run)              # run_dir/report/: the figures as PNG, metrics CSVs, summary.md with the sample table
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd


def _iteration_boundaries(ax, metrics: pd.DataFrame, updates_per_iteration: int) -> None:
    last = int(metrics["update"].max()) if len(metrics) else 0
    for b in range(updates_per_iteration, last, updates_per_iteration):
        ax.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1)


def _smoothed(metrics: pd.DataFrame, column: str, updates_per_iteration: int, window: int) -> pd.Series:
    """Running mean of `column` over `window` updates, restarted at each iteration (a new reward model's scale)."""
    iteration = (metrics["update"] - 1) // max(updates_per_iteration, 1)
    return metrics.groupby(iteration)[column].transform(lambda s: s.rolling(window, min_periods=1).mean())


def plot_ppo_curves(metrics: pd.DataFrame, updates_per_iteration: int, kl_target: float | None = None,
                    smooth: int = 4, evaluation: pd.DataFrame | None = None):
    """Reward and KL on one time axis (PPO update), iteration boundaries dotted. metrics: one row per update.

    Each curve is drawn raw (faint) and as a running mean over `smooth` updates within an iteration (bold): with a
    handful of replies per update the raw score is noisy, and it moves with how easy each batch's prompts are.
    evaluation (one row per iteration, `RLHFRun.evaluation()`): the fixed eval prompts' gold reward (right axis) and
    KL after each iteration, the across-iteration view."""
    fig, (ax_r, ax_kl) = plt.subplots(1, 2, figsize=(11, 3.8))
    metrics = metrics.sort_values("update") if len(metrics) else metrics
    curves = [(ax_r, "objective/scores", "reward-model score", "tab:blue"),
              (ax_r, "objective/rlhf_reward", "score − β·KL", "tab:green"),
              (ax_kl, "objective/kl", "KL(π‖π_ref) per reply", "tab:red")]
    for ax, column, label, color in curves:
        if column in metrics and len(metrics):
            ax.plot(metrics["update"], metrics[column], color=color, alpha=0.3, linewidth=1)
            ax.plot(metrics["update"], _smoothed(metrics, column, updates_per_iteration, smooth), color=color,
                    label=f"{label} (mean of {smooth})")
    if len(metrics):
        for ax in (ax_r, ax_kl):
            _iteration_boundaries(ax, metrics, updates_per_iteration)
    if kl_target is not None:
        ax_kl.axhline(kl_target, color="tab:red", linestyle="--", linewidth=1, label="KL target")
    if evaluation is not None and len(evaluation):
        ev = evaluation.sort_values("update")
        ax_gold = ax_r.twinx()
        ax_gold.plot(ev["update"], ev["gold_reward"], "o-", color="tab:orange", label="gold reward, eval prompts")
        ax_gold.set_ylabel("gold reward (eval prompts)", color="tab:orange")
        ax_gold.legend(loc="lower right", fontsize=8)
        ax_kl.plot(ev["update"], ev["kl"], "s", color="black", label="KL on eval prompts")
    ax_r.set(title="Reward during PPO (dotted: new iteration, new reward model)", xlabel="PPO update", ylabel="reward")
    ax_kl.set(title="KL to the reference policy", xlabel="PPO update", ylabel="nats")
    ax_r.legend(loc="upper left", fontsize=8)
    ax_kl.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_overoptimisation(evaluation: pd.DataFrame):
    """Proxy (reward model) and gold reward of each iteration's policy against its KL to the reference."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ev = evaluation.sort_values("iteration")
    ax.plot(ev["kl"], ev["gold_reward"], "o-", color="tab:orange", label="gold (the crowd's hidden utility)")
    if "proxy_reward" in ev:
        ax.plot(ev["kl"], ev["proxy_reward"], "s--", color="tab:blue", label="proxy (reward model)")
    for _, row in ev.iterrows():
        ax.annotate(f"it {int(row['iteration'])}", (row["kl"], row["gold_reward"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set(title="Proxy vs gold reward as KL grows", xlabel="KL to the reference (nats per reply)", ylabel="reward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rm_accuracy(evaluation: pd.DataFrame):
    """Reward-model accuracy on held-out judgments per iteration, beside the best achievable (the gold utility's)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ev = evaluation[evaluation["iteration"] > 0].sort_values("iteration")
    if "rm/val_accuracy" in ev:
        ax.plot(ev["iteration"], ev["rm/val_accuracy"], "o-", label="reward model")
        ax.plot(ev["iteration"], ev["rm/gold_accuracy"], "s--", label="gold utility (best achievable)")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set(title="Reward-model accuracy on held-out pairs", xlabel="iteration", ylabel="accuracy", ylim=(0.3, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sample_table(run_dir: str | Path, n_prompts: int = 5) -> pd.DataFrame:
    """The same eval prompts' replies across iterations, side by side (rows: prompts; columns: iterations).

    With several replies per eval prompt (`eval_samples`), each cell shows the prompt's first reply."""
    run_dir = Path(run_dir)
    columns = {}
    for path in sorted(run_dir.glob("iter_*/eval_samples.jsonl")):
        first = {}  # prompt -> its first reply, in file order
        for line in path.read_text().splitlines():
            row = json.loads(line)
            first.setdefault(row["prompt"], row)
        rows = list(first.values())[:n_prompts]
        columns["prompt"] = [r["prompt"] for r in rows]
        columns[f"iteration {int(path.parent.name.split('_')[1])}"] = [r["response"] for r in rows]
    return pd.DataFrame(columns)


def run_figures(run) -> dict:
    """The figures of a run (an RLHFRun): ppo_curves, over_optimisation, rm_accuracy."""
    evaluation = run.evaluation()
    return {
        "ppo_curves": plot_ppo_curves(run.ppo_metrics(), run.config.ppo_updates, run.config.ppo.kl_target,
                                      evaluation=evaluation),
        "over_optimisation": plot_overoptimisation(evaluation),
        "rm_accuracy": plot_rm_accuracy(evaluation),
    }


def _markdown(df: pd.DataFrame) -> str:
    def cell(v):
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_report(run, out: str | Path | None = None) -> Path:
    """PNG figures, metrics CSVs and summary.md into `out` (default run_dir/report); returns the folder."""
    out = Path(out or run.path / "report")
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in run_figures(run).items():
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
    evaluation = run.evaluation()
    evaluation.to_csv(out / "evaluation.csv", index=False)
    run.ppo_metrics().to_csv(out / "ppo_metrics.csv", index=False)
    first, last = evaluation.iloc[0], evaluation.iloc[-1]
    keep = [c for c in ("iteration", "update", "gold_reward", "proxy_reward", "kl", "rm/val_accuracy",
                        "win_rate_gold_vs_initial", "response_length", "eos_rate", "distinct_2") if c in evaluation]
    summary = [
        f"# RLHF run: {run.path.name}", "",
        f"Policy `{run.config.policy}`, {run.iteration} iteration(s) of {run.config.ppo_updates} PPO updates, "
        f"{run.store.counts()['total']} judgments in the store.", "",
        f"Gold reward {first['gold_reward']:.3f} → {last['gold_reward']:.3f} "
        f"(change {last['gold_reward'] - first['gold_reward']:+.3f}); KL to the reference {last['kl']:.2f} nats per reply.", "",
        "## Evaluation per iteration", "", _markdown(evaluation[keep]), "",
        "## Figures", "", "![PPO curves](ppo_curves.png)", "", "![Over-optimisation](over_optimisation.png)", "",
        "![Reward-model accuracy](rm_accuracy.png)", "",
        "## The same eval prompts across iterations", "", _markdown(sample_table(run.path)), "",
    ]
    (out / "summary.md").write_text("\n".join(summary))
    return out
