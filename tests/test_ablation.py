"""Ablation sweeps on the tiny model: one row per grid point and seed, resumable, reproducible."""

import pandas as pd
import pytest

from rlhf_lab.cli import demo_config
from rlhf_lab.loop.ablation import grid_points, run_name, sweep, sweep_history, with_fields
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
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    with pytest.raises(KeyError, match="not a column"):
        plot_sweep(df, x="nope")
