"""Pictures and a summary of an RLHF run: what a learner looks at between iterations.

    figs = run_figures(run)        # dict name -> matplotlib Figure (nothing is shown or saved)
    write_report(run)              # run_dir/report/: the figures as PNG, metrics CSVs, summary.md with the sample table
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from rlhf_lab.core.figures import png_bytes
from rlhf_lab.core.files import write_atomic
from rlhf_lab.loop.plots import (
    plot_overoptimisation,
    plot_ppo_curves,
    plot_rm_accuracy,
    plot_taste,
)
from rlhf_lab.train.ppo_math import AdaptiveKLController

__all__ = ["sample_table", "run_figures", "markdown_text", "markdown_table", "kl_sentence", "write_report",
           "write_taste_report"]


def sample_table(run_dir: str | Path, n_prompts: int = 5) -> pd.DataFrame:
    """The same eval prompts' replies across iterations, side by side (rows: prompts; columns: iterations).

    With several replies per eval prompt (`eval_samples`), each cell shows the prompt's first reply. A path that
    holds no run (no config.json, no iteration's replies) raises FileNotFoundError; a run not evaluated yet gives an
    empty table."""
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
    if not columns and not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"No run at {run_dir} (no config.json): give a run's folder (run.path), or make a run "
                                f"with RLHFRun.create({str(run_dir)!r}).run()")
    return pd.DataFrame(columns)


COLUMN_WORDS = {
    "gold_reward": "gold reward", "proxy_reward": "reward model's score", "kl": "KL (nats/reply)",
    "rm/val_accuracy": "reward model accuracy (held out)", "gold_gain_vs_initial": "gold gain vs start",
    "gold_gain_vs_initial_ci_low": "95 % low", "gold_gain_vs_initial_ci_high": "95 % high",
    "verdict_vs_initial": "verdict", "win_rate_gold_vs_initial": "win rate vs start",
    "response_length": "reply length (tokens)", "eos_rate": "replies that end", "distinct_2": "distinct bigrams"}
"""The report table's column names in words (the CSV files keep the names code uses)."""
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]()#!|~]")
_CUT_CHARACTER = re.compile("\ufffd+$")


def run_figures(run) -> dict:
    """The figures of a run (an RLHFRun): ppo_curves, over_optimisation, rm_accuracy."""
    evaluation = run.evaluation()
    return {
        "ppo_curves": plot_ppo_curves(run.ppo_metrics(), run.config.ppo_updates, run.config.ppo.kl_target,
                                      evaluation=evaluation),
        "over_optimisation": plot_overoptimisation(evaluation),
        "rm_accuracy": plot_rm_accuracy(evaluation),
    }


def markdown_text(v) -> str:
    """`v` as Markdown that shows as the text itself: model replies and folder names can hold anything, so HTML
    (`<script>`, `<img onerror=...>`), Markdown links and images, emphasis, code and table pipes are escaped; a
    newline becomes a space; a float has 3 decimals; a missing value (NaN, None) is "–"."""
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    text = f"{v:.3f}" if isinstance(v, float) else str(v)
    text = _CUT_CHARACTER.sub("…", text)  # a reply cut mid-character (an emoji's first bytes) ends in "…"
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", html.escape(text, quote=False)).replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A Markdown table whose cells are shown as text (`markdown_text`: e.g. iteration 0 has no reward model yet,
    shown as "–")."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _gold_change(first, last, config) -> str:
    """The run's gold change in words, paired by eval prompt with its 95 % interval and verdict."""
    text = f"Gold reward {first['gold_reward']:.3f} → {last['gold_reward']:.3f}"
    if "gold_gain_vs_initial" not in last or pd.isna(last["gold_gain_vs_initial"]):
        return text + "."
    low, high = last["gold_gain_vs_initial_ci_low"], last["gold_gain_vs_initial_ci_high"]
    return (f"{text}: gain {last['gold_gain_vs_initial']:+.3f} (95 % interval {low:+.3f} to {high:+.3f}, paired over "
            f"{config.eval_prompts} eval prompts × {config.eval_samples} replies): {last['verdict_vs_initial']}.")


def kl_sentence(last, ppo, metrics: pd.DataFrame) -> str:
    """The run's last KL in words, with the β that weighed it: fixed, or adapting towards the target (start → end)."""
    text = f" KL to the reference {last['kl']:.2f} nats per reply"
    if "objective/beta" not in metrics or not len(metrics):
        return text + "."
    beta = metrics.sort_values("update")["objective/beta"]
    if ppo.kl_target is None:
        return text + f" (β fixed at {beta.iloc[-1]:.3g})."
    step = 100 * AdaptiveKLController.largest_step(ppo.rollouts_per_update, ppo.adaptive_kl_horizon())  # %
    return text + (f"; β adapted towards a KL of {ppo.kl_target:g} per reply, by at most {step:.2g} % an update: "
                   f"{beta.iloc[0]:.3g} in the first update, {beta.iloc[-1]:.3g} in the last.")


def write_report(run, out: str | Path | None = None) -> Path:
    """PNG figures, metrics CSVs and summary.md into `out` (default run_dir/report); returns the folder. Each file is
    written whole (atomically) or not at all. `run`: an RLHFRun (a run's folder: `RLHFRun.open(path)`)."""
    if not hasattr(run, "evaluation"):
        how = f": open it first, RLHFRun.open({str(run)!r})" if isinstance(run, (str, Path)) else ""
        raise TypeError(f"write_report needs an RLHFRun, got {type(run).__name__} {run!r:.60}{how}")
    out = Path(out or run.path / "report")
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in run_figures(run).items():
        write_atomic(out / f"{name}.png", png_bytes(fig, dpi=110))
    evaluation = run.evaluation()
    write_atomic(out / "evaluation.csv", evaluation.to_csv(index=False))
    metrics = run.ppo_metrics()
    write_atomic(out / "ppo_metrics.csv", metrics.to_csv(index=False))
    first, last = evaluation.iloc[0], evaluation.iloc[-1]
    keep = [c for c in ("iteration", "update", "gold_reward", "proxy_reward", "kl", "rm/val_accuracy",
                        "gold_gain_vs_initial", "gold_gain_vs_initial_ci_low", "gold_gain_vs_initial_ci_high",
                        "verdict_vs_initial", "win_rate_gold_vs_initial", "response_length", "eos_rate", "distinct_2")
            if c in evaluation]
    random_model = run.config.policy == "tiny"
    summary = [
        f"# RLHF run: {markdown_text(run.path.name)}", "",
        *(["**A smoke run**: the policy is a tiny *random* model and it ran a few steps, to check that the loop "
           "runs end to end. Its numbers mean nothing; `rlhf-lab demo` without `--smoke` is the real run.", ""]
          if random_model else []),
        f"Policy {markdown_text(run.config.policy)}, {run.iteration} iteration(s) of {run.config.ppo_updates} PPO "
        f"updates, "
        f"{run.store.counts()['total']} judgments in the store.", "",
        _gold_change(first, last, run.config) + kl_sentence(last, run.config.ppo, metrics), "",
        "## Evaluation per iteration", "", markdown_table(evaluation[keep].rename(columns=COLUMN_WORDS)), "",
        "## Figures", "", "![PPO curves](ppo_curves.png)", "", "![Over-optimisation](over_optimisation.png)", "",
        "![Reward-model accuracy](rm_accuracy.png)", "",
        "## The same eval prompts across iterations", "", markdown_table(sample_table(run.path)), "",
    ]
    write_atomic(out / "summary.md", "\n".join(summary))
    return out


def write_taste_report(result, out: str | Path, origin: dict | None = None) -> Path:
    """The taste loop's report in `out`: result.json (the figures, and `origin`: what made them, e.g. the policy,
    whose judgments, the store and the seed), before_after.png and summary.md with the replies side by side.
    result: a `TasteResult`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "result.json", json.dumps({**result.to_json(), "taste": result.taste and result.taste.to_dict(),
                                                  "reward": result.reward.to_dict(), "origin": origin or {}},
                                                 indent=2))
    write_atomic(out / "before_after.png", png_bytes(plot_taste(result.samples, result.taste, result.reward), dpi=110))
    table = pd.DataFrame(result.samples)
    summary = ["# Your taste, before and after", "", "```", str(result), "```", "",
               "![before and after](before_after.png)", "", "## The same held-out prompts, before and after", "",
               markdown_table(table[[c for c in ("prompt", "before", "after", "taste_before", "taste_after",
                                            "reward_before", "reward_after") if c in table]]), ""]
    write_atomic(out / "summary.md", "\n".join(summary))
    return out
