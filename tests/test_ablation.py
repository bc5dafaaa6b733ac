"""Ablation sweeps on the tiny model: one row per grid point and seed, resumable, reproducible."""

import json

import numpy as np
import pandas as pd
import pytest

from rlhf_lab.cli import demo_config
from rlhf_lab.loop.ablation import contrasts, grid_points, run_name, sweep, sweep_history, with_fields
from rlhf_lab.loop.plots import plot_sweep


def test_with_fields_sets_dotted_fields_and_seeds_everything():
    config = with_fields(demo_config(smoke=True), {"ppo.kl_coef": 0.3, "feedback.strategy": "temperatures", "seed": 7})
    assert config.ppo.kl_coef == 0.3 and config.feedback.strategy == "temperatures"
    assert config.seed == 7 and config.seeded(config.ppo).seed == config.seeded(config.reward).seed == 7
    with pytest.raises(KeyError, match="not a config field"):
        with_fields(demo_config(smoke=True), {"ppo.kl_coeff": 0.3})
    with pytest.raises(KeyError, match="not a config section"):
        with_fields(demo_config(smoke=True), {"seed.x": 1})
    # the demo fits the embedding reward model: the network's section would change nothing, and is refused
    with pytest.raises(ValueError, match=r"^'reward.epochs' would change nothing: with reward_kind='embedding' the "
                                         r"reward model reads the 'embedding' section"):
        with_fields(demo_config(smoke=True), {"reward.epochs": 2})
    assert with_fields(demo_config(smoke=True), {"reward_kind": "network", "reward.epochs": 2}).reward.epochs == 2
    assert with_fields(demo_config(smoke=True), {"embedding.l2": 2.0}).embedding.l2 == 2.0
    with pytest.raises(ValueError, match="'embedding.l2' would change nothing: with reward_kind='network'"):
        with_fields(demo_config(smoke=True), {"reward_kind": "network", "embedding.l2": 2.0})


def test_grid_points_cover_the_product_in_order():
    points = grid_points({"a.x": [1, 2], "b.y": ["p", "q", "r"]})
    assert len(points) == 6 and points[0] == {"a.x": 1, "b.y": "p"} and points[-1] == {"a.x": 2, "b.y": "r"}
    with pytest.raises(ValueError, match="non-empty list"):
        grid_points({"a.x": []})
    assert run_name({"ppo.kl_coef": 0.05, "reward.backbone": "a/b c"}) == "ppo.kl_coef=0.05,reward.backbone=a_b_c"


@pytest.mark.parametrize("seeds", [[], (), 0, "0"])
def test_a_sweep_without_seeds_is_refused_and_keeps_the_previous_table(tmp_path, seeds):
    (tmp_path / "sweep.csv").write_text("seed,gold_reward\n0,0.5\n")
    with pytest.raises(ValueError, match=r"^seeds must be a non-empty list of seeds, e\.g\. seeds=\(0, 1\)"):
        sweep(demo_config(smoke=True), {"ppo.kl_coef": [0.1]}, tmp_path, seeds=seeds)
    assert (tmp_path / "sweep.csv").read_text() == "seed,gold_reward\n0,0.5\n" and len(list(tmp_path.iterdir())) == 1


def test_a_bad_value_or_a_changed_run_anywhere_in_the_grid_is_refused_before_any_run(tmp_path, monkeypatch):
    """A bad last value (kl_coef -1, eval_prompts 1, a strategy misspelt) stopped the sweep only after every run
    before it had run: hours with SmolLM2."""
    import rlhf_lab.loop.ablation as ablation

    started = []
    monkeypatch.setattr(ablation.RLHFRun, "create", classmethod(lambda cls, path, *a, **k: started.append(path)))
    for grid, message in (({"ppo.kl_coef": [0.05, -1.0]}, "kl_coef"), ({"eval_prompts": [4, 1]}, "eval_prompts"),
                          ({"feedback.strategy": ["random", "bogus"]}, "strategy must be one of")):
        with pytest.raises(ValueError, match=message):
            sweep(demo_config(smoke=True), grid, tmp_path / "bad", seeds=(0, 1))
    assert started == [] and not (tmp_path / "bad").exists()
    base, grid = demo_config(smoke=True), {"ppo.kl_coef": [0.05, 0.2]}
    changed = tmp_path / "changed" / run_name({"ppo.kl_coef": 0.2, "seed": 0})
    changed.mkdir(parents=True)  # the last point's run, made with another config
    (changed / "config.json").write_text(json.dumps(with_fields(base, {"ppo.lam": 0.5}).to_dict()))
    with pytest.raises(ValueError, match="holds a run with another config"):
        sweep(base, grid, tmp_path / "changed", seeds=(0,))
    assert started == []


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    base = with_fields(demo_config(smoke=True, iterations=1), {"ppo_updates": 1})
    return out, base, sweep(base, {"feedback.strategy": ["random", "temperatures"]}, out, seeds=(0, 1), callbacks=[])


def test_sweep_returns_one_full_row_per_point_and_seed(small_sweep):
    out, _, df = small_sweep
    assert len(df) == 4
    assert df[["feedback.strategy", "seed"]].values.tolist() == [["random", 0], ["random", 1],
                                                                  ["temperatures", 0], ["temperatures", 1]]
    for column in ("gold_reward", "proxy_reward", "kl", "rm/pairs", "judgments", "iteration"):
        assert df[column].notna().all(), column
    assert (df["iteration"] == 1).all()
    assert (df["judgments"] == 16).all()  # 8 pairs x 2 annotators
    assert pd.read_csv(out / "sweep.csv")["gold_reward"].tolist() == pytest.approx(df["gold_reward"].tolist())
    # different seeds are different runs; the same seed rerun in a fresh directory gives the same figures
    assert df.loc[0, "gold_reward"] != df.loc[1, "gold_reward"]


def test_sweep_resumes_instead_of_redoing(small_sweep):
    out, base, df = small_sweep
    marker = out / df.loc[0, "run"] / "iter_001" / "DONE"
    stamp = marker.stat().st_mtime_ns
    again = sweep(base, {"feedback.strategy": ["random", "temperatures"]}, out, seeds=(0, 1), callbacks=[])
    assert marker.stat().st_mtime_ns == stamp
    assert again["gold_reward"].tolist() == pytest.approx(df["gold_reward"].tolist())
    with pytest.raises(ValueError, match="another config"):
        sweep(with_fields(base, {"ppo.kl_coef": 0.5}), {"feedback.strategy": ["random"]}, out, callbacks=[])


def test_history_and_plot(small_sweep):
    out, _, df = small_sweep
    history = sweep_history(out)
    assert len(history) == 8 and sorted(history["iteration"].unique()) == [0, 1]
    assert history.loc[history["iteration"] == 0, "judgments"].eq(0).all()
    assert set(history["feedback.strategy"]) == {"random", "temperatures"}
    fig = plot_sweep(history, x="judgments", y="gold_reward", hue="feedback.strategy")
    assert len(fig.legends[0].get_texts()) == 2
    assert fig.axes[0].get_title() == "gold_reward by judgments\n(2 runs per point; bars: min–max)"
    one = df[df["seed"] == 0]
    fig = plot_sweep(one, x="feedback.strategy")  # one run per point: the bars are each run's gain interval
    assert fig.axes[0].get_title() == ("gold_reward by feedback.strategy\n"
                                       "(1 run per point; bars: 95 % interval of its gain)")
    (bars,) = fig.axes[0].collections  # the vertical error-bar segments, one per point
    ends = [y for segment in bars.get_segments() for y in sorted(y for _, y in segment)]
    start = one["gold_reward"] - one["gold_gain_vs_initial"]  # the initial policy's gold reward
    lows, highs = start + one["gold_gain_vs_initial_ci_low"], start + one["gold_gain_vs_initial_ci_high"]
    expected = [v for low, high in zip(lows, highs) for v in (low, high)]  # `one` is in the strategies' order
    assert ends == pytest.approx(expected)
    fig = plot_sweep(one, x="feedback.strategy", y="kl")
    assert fig.axes[0].get_title() == "kl by feedback.strategy\n(1 run per point; no bars)"
    with pytest.raises(KeyError, match="not a column"):
        plot_sweep(df, x="nope")


def test_contrasts_pair_seeds_with_a_t_interval(small_sweep, tmp_path):
    out, _, df = small_sweep
    table = pd.read_csv(out / "sweep.csv")  # the smoke runs' gold can tie at both seeds: give the seeds a spread
    table.loc[table["feedback.strategy"] == "temperatures", "gold_reward"] += [0.3, 0.1]
    table.to_csv(tmp_path / "sweep.csv", index=False)
    out = tmp_path
    table = contrasts(out, "feedback.strategy")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["feedback.strategy"], row["baseline"], row["seeds"]) == ("temperatures", "random", 2)
    gold = pd.read_csv(out / "sweep.csv").set_index(["feedback.strategy", "seed"])["gold_reward"]
    d = np.array([gold["temperatures", s] - gold["random", s] for s in (0, 1)])
    half = 12.7062 * abs(d[0] - d[1]) / np.sqrt(2) / np.sqrt(2)  # t_{1, 0.975} · sd / √2, sd = |d0 − d1| / √2
    assert row["difference"] == pytest.approx(d.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-4)
    assert row["interval"] == "2 seeds (t)"
    expected = "higher" if d.mean() - half > 0 else "lower" if d.mean() + half < 0 else "no detectable difference"
    assert row["verdict"] == expected
    flipped = contrasts(out, "feedback.strategy", baseline="temperatures").iloc[0]
    assert flipped["feedback.strategy"] == "random" and flipped["difference"] == pytest.approx(-d.mean())


def test_contrasts_with_one_seed_pair_the_eval_prompts_and_say_what_noise_is_left_out(small_sweep):
    out, _, df = small_sweep
    row = contrasts(out, "feedback.strategy", seeds=[1]).iloc[0]
    per_prompt = []
    for strategy in ("random", "temperatures"):
        run = df[(df["feedback.strategy"] == strategy) & (df["seed"] == 1)].iloc[0]
        lines = (out / run["run"] / f"iter_{int(run['iteration']):03d}" / "eval_samples.jsonl").read_text().splitlines()
        sums = {}
        for record in map(json.loads, lines):
            sums.setdefault(record["prompt"], []).append(record["gold"])
        per_prompt.append({prompt: np.mean(golds) for prompt, golds in sums.items()})
    assert per_prompt[0].keys() == per_prompt[1].keys() and len(per_prompt[0]) >= 2
    d = [per_prompt[1][p] - per_prompt[0][p] for p in per_prompt[0]]
    assert row["seeds"] == 1 and row["difference"] == pytest.approx(np.mean(d))
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert row["interval"] == f"seed 1's {len(d)} eval prompts only"


def test_contrasts_of_another_figure_pair_seeds_and_have_no_interval_with_one(small_sweep):
    out, _, df = small_sweep
    row = contrasts(out, "feedback.strategy", y="kl").iloc[0]
    kl = df.set_index(["feedback.strategy", "seed"])["kl"]
    d = np.array([kl["temperatures", s] - kl["random", s] for s in (0, 1)])
    half = 12.7062 * abs(d[0] - d[1]) / 2
    assert row["difference"] == pytest.approx(d.mean()) and row["ci_high"] == pytest.approx(d.mean() + half, rel=1e-4)
    one = contrasts(out, "feedback.strategy", y="kl", seeds=[0]).iloc[0]
    assert one["difference"] == pytest.approx(d[0]) and np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])
    assert (one["interval"], one["verdict"]) == ("seed 0 only", "one seed: no interval")  # never "higher"
    with pytest.raises(KeyError, match=r"'verdict_vs_initial' is not a figure of the sweep table"):
        contrasts(out, "feedback.strategy", y="verdict_vs_initial")


def test_a_nan_figure_gives_an_undefined_contrast_not_one_seed(small_sweep, tmp_path):
    out, _, df = small_sweep
    table = pd.read_csv(out / "sweep.csv")
    table.loc[(table["feedback.strategy"] == "temperatures") & (table["seed"] == 1), "kl"] = np.nan
    table.to_csv(tmp_path / "sweep.csv", index=False)
    row = contrasts(tmp_path, "feedback.strategy", y="kl").iloc[0]
    assert (row["seeds"], row["interval"], row["verdict"]) == (2, "2 seeds (t)", "undefined: a run's figure is NaN")
    assert np.isnan(row["difference"])


def test_the_same_difference_at_every_seed_has_no_interval_and_is_never_higher(small_sweep, tmp_path):
    out, _, df = small_sweep
    table = pd.read_csv(out / "sweep.csv")
    base = table["feedback.strategy"] == "random"
    table.loc[base, "kl"] = [1.0, 2.0]
    table.loc[~base, "kl"] = [1.5, 2.5]  # +0.5 at both seeds: a zero-width t interval would say "higher"
    table.to_csv(tmp_path / "sweep.csv", index=False)
    row = contrasts(tmp_path, "feedback.strategy", y="kl").iloc[0]
    assert row["difference"] == pytest.approx(0.5) and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    assert (row["seeds"], row["verdict"]) == (2, "same difference at every seed: no interval")


def test_runs_that_ended_at_different_iterations_are_not_paired(small_sweep, tmp_path):
    out, _, df = small_sweep
    table = pd.read_csv(out / "sweep.csv")
    later = (table["feedback.strategy"] == "temperatures") & (table["seed"] == 1)
    table.loc[later, "iteration"] += 2  # as if that run had been extended by hand
    table.to_csv(tmp_path / "sweep.csv", index=False)
    name, base = table.loc[later, "run"].item(), table.loc[~later & (table["seed"] == 1), "run"].item()
    end = int(table.loc[~later & (table["seed"] == 1), "iteration"].item())
    with pytest.raises(ValueError, match=f"{base} ended at iteration {end} and {name} at {end + 2}: they cannot be"):
        contrasts(tmp_path, "feedback.strategy", y="kl")


def test_contrasts_refuse_what_the_sweep_does_not_hold(small_sweep, tmp_path):
    out, _, _ = small_sweep
    with pytest.raises(KeyError, match=r"'ppo.kl_coef' is not a field of the sweep .*\['feedback.strategy'\]"):
        contrasts(out, "ppo.kl_coef")
    with pytest.raises(ValueError, match=r"baseline 'greedy' is not a value of 'feedback.strategy'"):
        contrasts(out, "feedback.strategy", baseline="greedy")
    with pytest.raises(FileNotFoundError, match="No sweep at"):
        contrasts(tmp_path, "feedback.strategy")
