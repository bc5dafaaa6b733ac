"""Plots return Figures built from plain data (no pyplot state, nothing shown) with the expected content."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from rlhf_lab.loop.plots import plot_calibration, plot_reward_histograms, plot_reward_training
from rlhf_lab.reward.evaluation import evaluate_rewards


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


def test_ppo_curves_smooth_within_each_iteration_only():
    from rlhf_lab.loop.plots import plot_ppo_curves

    # iteration 1 scores 0, 0, 0; iteration 2 (a new reward model's scale) 10, 10, 10
    metrics = pd.DataFrame({"update": range(1, 7), "objective/scores": [0.0, 0, 0, 10, 10, 10],
                            "objective/kl": [0.0, 1, 2, 3, 4, 5]})
    fig = plot_ppo_curves(metrics, updates_per_iteration=3, kl_target=4.0, smooth=2)
    ax_r, ax_kl = fig.axes
    raw, smooth = ax_r.lines[0], ax_r.lines[1]
    assert list(raw.get_ydata()) == [0, 0, 0, 10, 10, 10]
    assert list(smooth.get_ydata()) == [0, 0, 0, 10, 10, 10], "a running mean must not mix two reward models"
    assert list(ax_kl.lines[1].get_ydata()) == [0, 0.5, 1.5, 3, 3.5, 4.5]
    assert [ln.get_xdata()[0] for ln in ax_r.lines if ln.get_linestyle() == ":"] == [3.5]
    assert any(ln.get_label() == "KL target" and ln.get_ydata()[0] == 4.0 for ln in ax_kl.lines)
    assert "dotted: new iteration" in ax_r.get_title()
    one = plot_ppo_curves(metrics.head(3), updates_per_iteration=3).axes[0]  # one iteration: no dotted line to name
    assert one.get_title() == "Reward during PPO" and not [ln for ln in one.lines if ln.get_linestyle() == ":"]

    evaluation = pd.DataFrame({"iteration": [0, 1, 2], "update": [0, 3, 6], "gold_reward": [1.0, 1.2, 1.3],
                               "kl": [0.0, 2.0, 4.5]})
    fig = plot_ppo_curves(metrics, updates_per_iteration=3, evaluation=evaluation)
    ax_r, ax_kl, ax_gold = fig.axes
    (gold,) = ax_gold.lines
    assert list(gold.get_xdata()) == [0, 3, 6] and list(gold.get_ydata()) == [1.0, 1.2, 1.3]
    assert [list(ln.get_ydata()) for ln in ax_kl.lines if ln.get_label() == "KL on eval prompts"] == [[0, 2, 4.5]]


def test_ppo_curves_draw_an_adaptive_beta_beside_the_kl():
    """With a KL target the β that steers it is drawn on the KL panel's right axis, named in its legend; a fixed β
    (no target) adds nothing."""
    from rlhf_lab.loop.plots import plot_ppo_curves

    metrics = pd.DataFrame({"update": [1, 2, 3, 4], "objective/scores": [0.0, 0.1, 0.2, 0.3],
                            "objective/kl": [0.0, 2.0, 7.0, 8.0], "objective/beta": [0.1, 0.098, 0.096, 0.098]})
    evaluation = pd.DataFrame({"iteration": [0, 1], "update": [0, 4], "gold_reward": [1.0, 1.2], "kl": [0.0, 7.5]})
    ax_r, ax_kl, ax_gold, ax_beta = plot_ppo_curves(metrics, 4, kl_target=6.0, evaluation=evaluation).axes
    (beta,) = ax_beta.lines
    assert list(beta.get_ydata()) == [0.1, 0.098, 0.096, 0.098] and ax_beta.get_ylim() == (0, 0.2)
    (legend,) = ax_beta.figure.legends  # one legend, under the panels: the KL panel's names in its right column
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[4:] == ["KL(π‖π_ref) per reply (mean of 4)", "KL target", "KL on eval prompts",
                          "β, adaptive (right axis)"]
    assert not [ax for ax in ax_beta.figure.axes if ax.get_legend()]
    fixed = plot_ppo_curves(metrics, 4, evaluation=evaluation)
    assert len(fixed.axes) == 3 and "KL target" not in [t.get_text() for t in fixed.legends[0].get_texts()]


def test_sample_table_shows_distinct_prompts_with_their_first_reply(tmp_path):
    import json

    from rlhf_lab.loop.report import sample_table

    for k in (0, 1):  # two replies per eval prompt, as with eval_samples=2
        rows = [{"prompt": p, "response": f"{p}-it{k}-reply{j}", "gold": 0.0} for p in ("hi", "why?", "bye")
                for j in (0, 1)]
        (tmp_path / f"iter_{k:03d}").mkdir()
        (tmp_path / f"iter_{k:03d}" / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = sample_table(tmp_path, n_prompts=2)
    assert table.to_dict("list") == {"prompt": ["hi", "why?"], "iteration 0": ["hi-it0-reply0", "why?-it0-reply0"],
                                     "iteration 1": ["hi-it1-reply0", "why?-it1-reply0"]}


def test_sample_table_of_a_path_with_no_run_says_so_and_of_a_new_run_is_empty(tmp_path):
    import json

    from rlhf_lab.loop.report import sample_table

    with pytest.raises(FileNotFoundError, match=r"^No run at runs/lesons/iterate \(no config.json\): .*RLHFRun.create"):
        sample_table("runs/lesons/iterate")
    (tmp_path / "config.json").write_text(json.dumps({}))  # a run not evaluated yet
    assert sample_table(tmp_path).empty


def test_a_returned_plot_shows_in_jupyter_without_pyplot():
    """A bare matplotlib Figure displays as "<Figure size ...>" text in a kernel that never imported pyplot (lessons
    3, 5, 8); the lab's figures render themselves as PNG through IPython's own formatter."""
    from IPython.core.formatters import PNGFormatter

    from rlhf_lab.train.callbacks import plot_history

    history = [{"step": 1, "train/loss": 0.7, "train/accuracy": 0.5}, {"step": 2, "train/loss": 0.6,
                                                                        "train/accuracy": 0.6}]
    for fig in (plot_reward_training(history), plot_history([{"update": 1, "objective/kl": 0.1}])):
        png = PNGFormatter()(fig)
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    assert PNGFormatter()(Figure()) is None  # what a bare Figure gave: no image


def test_report_plots_show_every_value_whole_ticks_and_no_false_curves():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rlhf_lab.loop.plots import plot_overoptimisation, plot_ppo_curves, plot_rm_accuracy

    evaluation = pd.DataFrame({"iteration": [0, 1, 2], "update": [0, 2, 4], "gold_reward": [1.0, 1.1, 1.15],
                               "proxy_reward": [0.0, 0.8, 0.3], "kl": [0.0, 1.0, 1.05],
                               "rm/val_accuracy": [None, 0.22, 0.6], "rm/gold_accuracy": [None, 0.85, 0.9]})
    (ax,) = plot_rm_accuracy(evaluation).axes
    low, high = ax.get_ylim()
    assert low < 0.22 and high > 0.9  # an accuracy of 0.22 is on the plot, not cut off
    assert all(float(t).is_integer() for t in ax.get_xticks())  # iterations 1, 2: no 1.25, 1.5
    (ax,) = plot_overoptimisation(evaluation).axes
    proxy = [ln for ln in ax.lines if ln.get_label().startswith("proxy")][0]
    assert proxy.get_linestyle() == "None"  # different reward models' scores are not joined into one curve
    offsets = [t.xyann for t in ax.texts]  # labels of close points (it 1, it 2) go to opposite sides
    assert [t.get_text() for t in ax.texts] == ["it 0", "it 1", "it 2"] and offsets[1][1] != offsets[2][1]
    canvas = FigureCanvasAgg(ax.figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    for text in ax.texts:  # the rightmost label used to run past the frame
        box = text.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (text.get_text(), box, frame)
    metrics = pd.DataFrame({"update": [1, 2, 3, 4], "objective/scores": [0.1, 0.2, 0.3, 0.4],
                            "objective/rlhf_reward": [0.1, 0.2, 0.3, 0.4], "objective/kl": [0.0, 0.1, 0.2, 0.3]})
    ax_r, ax_kl, _ = plot_ppo_curves(metrics, 2, evaluation=evaluation).axes
    labels = [t.get_text() for t in ax_r.figure.legends[0].get_texts()]
    assert "each update (faint)" in labels and "reward-model score (mean of 4)" in labels
    score = [ln for ln in ax_r.lines if ln.get_label() == "reward-model score (mean of 4)"][0]
    other = [ln for ln in ax_r.lines if ln.get_label() == "score − β·KL (mean of 4)"][0]
    assert other.get_zorder() > score.get_zorder() and other.get_linestyle() == "--"  # both visible when equal
    assert all(float(t).is_integer() for t in ax_kl.get_xticks())
    ax_r = plot_ppo_curves(metrics, 2, score_label="score − 1 × spread").axes[0]  # the reward PPO was paid, named
    assert "score − 1 × spread (mean of 4)" in [t.get_text() for t in ax_r.figure.legends[0].get_texts()]


def test_round_gains_show_each_measure_with_its_interval_in_its_own_panel():
    from rlhf_lab.loop.plots import plot_round_gains

    evaluation = pd.DataFrame({"iteration": [0, 1, 2], "gold_gain_vs_initial": [None, 0.1, 0.3],
                               "gold_gain_vs_initial_ci_low": [None, -0.1, 0.2],
                               "gold_gain_vs_initial_ci_high": [None, 0.2, 0.5],
                               "rm_gain_vs_initial": [None, 1.0, 2.0], "rm_gain_vs_initial_ci_low": [None, 0.5, 1.0],
                               "rm_gain_vs_initial_ci_high": [None, 1.5, 2.5]})
    axes = plot_round_gains(evaluation).axes
    assert [ax.get_title() for ax in axes] == ["your reward model's score\n(the latest model, scoring both)",
                                               "gold (the crowd's hidden utility)"]  # no taste columns: no panel
    gold = axes[1]
    assert gold.lines[0].get_ydata().tolist() == [0.1, 0.3] and gold.lines[0].get_xdata().tolist() == [1, 2]
    bars = [seg[:, 1].tolist() for seg in gold.collections[0].get_segments()]
    assert bars == [[-0.1, 0.2], [0.2, 0.5]]  # each bar spans its 95 % interval
    with pytest.raises(ValueError, match="no gains vs 'previous'"):
        plot_round_gains(evaluation, since="previous")


def _legends_clear_of_the_axes(fig):
    """Every legend's box on the drawn figure, and whether each lies outside every axes' frame (covers no data)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    frames = [ax.get_window_extent(renderer) for ax in fig.axes]
    return [(legend, not any(legend.get_window_extent(renderer).overlaps(f) for f in frames)) for legend in legends]


def test_legends_sit_under_the_axes_and_cover_no_data():
    """A tiny run's gold reward fell to the bottom right, under the reward panel's legend, and its twin axis drew
    the gold line over the other legend; overoptimisation's legend hid a proxy point; nine long setting names
    buried both proxy-vs-gold panels. Now each figure has one legend, under its axes."""
    from rlhf_lab.loop.plots import plot_overoptimisation, plot_ppo_curves, plot_proxy_vs_gold, plot_sweep

    metrics = pd.DataFrame({"update": range(1, 25), "objective/scores": np.linspace(-1.5, 1.3, 24),
                            "objective/rlhf_reward": np.linspace(-1.5, 1.3, 24), "objective/kl": np.linspace(0, .8, 24),
                            "objective/beta": np.linspace(.05, .03, 24)})
    evaluation = pd.DataFrame({"iteration": [0, 1, 2, 3], "update": [0, 8, 16, 24], "gold_reward": [.49, .49, .41, .41],
                               "proxy_reward": [None, .76, .05, .78], "kl": [0, .12, .14, .16]})
    settings = [f"β={b}, conservative ensemble of 5 reward models, min over members" for b in range(9)]
    curves = pd.DataFrame({"update": [0, 5] * 9, "kl": [0, 1.0] * 9, "proxy": [0, 1.0] * 9, "gold": [0, .1] * 9,
                           "setting": [s for s in settings for _ in (0, 1)]})
    sweep = pd.DataFrame({"ppo.kl_coef": [.02, .2] * 9, "gold_reward": np.linspace(1.1, 1.3, 18),
                          "feedback.rationality": [r for r in range(9) for _ in (0, 1)]})
    from rlhf_lab.loop.plots import plot_taste

    rose = [{"taste_before": -1.0, "taste_after": 2.0, "reward_before": -1.0, "reward_after": 2.0},  # upper left
            {"taste_before": 0.0, "taste_after": 0.0, "reward_before": 0.0, "reward_after": 0.0}]
    for fig in (plot_ppo_curves(metrics, 8, 2.0, evaluation=evaluation), plot_overoptimisation(evaluation),
                plot_proxy_vs_gold(curves), plot_sweep(sweep, x="ppo.kl_coef", hue="feedback.rationality"),
                plot_taste(rose)):
        placed = _legends_clear_of_the_axes(fig)
        assert len(placed) == 1 and placed[0][1], fig.axes[0].get_title()
    (legend,) = plot_proxy_vs_gold(curves).legends  # one key for both panels, each setting once
    assert [t.get_text() for t in legend.get_texts()] == settings and legend.get_title().get_text() == "setting"


def test_ppo_curves_of_one_update_show_a_point_and_of_none_say_so():
    from rlhf_lab.loop.plots import plot_ppo_curves

    one = pd.DataFrame({"update": [1], "objective/scores": [0.2], "objective/kl": [0.5]})
    ax_r, ax_kl = plot_ppo_curves(one, 4).axes
    score = [ln for ln in ax_r.lines if ln.get_label().startswith("reward-model score")][0]
    assert score.get_marker() == "o"  # a line through one point draws nothing
    ax_r, ax_kl = plot_ppo_curves(one.head(0), 4).axes
    assert [t.get_text() for t in ax_r.texts] == ["no PPO updates yet"] and not ax_r.get_yticks().size


def test_round_gains_draw_no_detectable_change_hollow_and_say_what_the_bars_are():
    from rlhf_lab.loop.plots import plot_round_gains

    evaluation = pd.DataFrame({"iteration": [0, 1, 2, 3], "gold_gain_vs_initial": [None, 0.1, 0.3, -0.2],
                               "gold_gain_vs_initial_ci_low": [None, -0.1, 0.2, -0.3],
                               "gold_gain_vs_initial_ci_high": [None, 0.2, 0.5, -0.1]})
    fig = plot_round_gains(evaluation)
    (ax,) = fig.axes
    points = {(tuple(ln.get_xdata()), ln.get_markerfacecolor()) for ln in ax.lines if ln.get_marker() == "o"}
    assert points == {((2, 3), ax.lines[0].get_color()), ((1,), "white")}  # rose and fell filled; inside: hollow
    assert "95 % interval" in fig.get_suptitle() and "hollow: no detectable change" in fig.get_suptitle()
    nan = evaluation.assign(gold_gain_vs_initial_ci_low=np.nan, gold_gain_vs_initial_ci_high=np.nan)
    ax = plot_round_gains(nan).axes[0]  # no interval: no bar, and no claim of a change
    assert not [s for s in ax.collections[0].get_segments() if len(s)]
    assert [ln.get_markerfacecolor() for ln in ax.lines if ln.get_marker() == "o" and len(ln.get_xdata())] == ["white"]


def test_sweep_without_an_interval_draws_no_bar_and_a_decade_of_x_on_a_log_axis():
    from rlhf_lab.loop.plots import plot_sweep

    one = pd.DataFrame({"ppo.kl_coef": [0.02, 0.2], "seed": [0, 0], "gold_reward": [1.168, 1.108],
                        "gold_gain_vs_initial": [0.046, -0.014], "gold_gain_vs_initial_ci_low": [np.nan, -0.113],
                        "gold_gain_vs_initial_ci_high": [np.nan, 0.090]})
    (ax,) = plot_sweep(one, x="ppo.kl_coef").axes
    assert [len(s) for s in ax.collections[0].get_segments()] == [0, 2]  # not a zero-width bar at 0.02
    assert ax.get_title().endswith("bars: 95 % interval of its gain where it has one)")
    (ax,) = plot_sweep(one.assign(gold_gain_vs_initial_ci_low=np.nan), x="ppo.kl_coef").axes
    assert ax.get_title().endswith("(1 run per point; no interval, no bars)")
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["0.02", "0.2"]
    hues = pd.concat([one.assign(lr=v) for v in (1, 2, 3)])
    (ax,) = plot_sweep(hues, x="ppo.kl_coef", hue="lr").axes
    xs = [bars.lines[0].get_xdata()[0] for bars in ax.containers]
    assert len(set(xs)) == 3 and xs == sorted(xs)  # side by side, not on top of each other
    assert plot_sweep(one.assign(**{"ppo.kl_coef": [0.1, 0.2]}), x="ppo.kl_coef").axes[0].get_xscale() == "linear"


def test_empty_inputs_say_what_to_do_instead_of_a_crash_or_bare_axes():
    from rlhf_lab.loop.plots import plot_proxy_vs_gold, plot_rm_accuracy, plot_sampling_sweep, plot_taste

    with pytest.raises(ValueError, match="sweep table is empty"):
        plot_sampling_sweep(pd.DataFrame(columns=["temperature", "top_p", "distinct_2", "gold"]))
    with pytest.raises(ValueError, match="no rewards of chosen or of rejected"):
        plot_reward_histograms({"chosen": np.array([]), "rejected": np.array([])})
    with pytest.raises(ValueError, match="no before/after scores"):  # was "Number of columns must be ... not 0"
        plot_taste([])
    with pytest.raises(ValueError, match="no curves to plot"):
        plot_proxy_vs_gold(pd.DataFrame(columns=["update", "kl", "proxy", "gold", "setting"]))
    (ax,) = plot_rm_accuracy(pd.DataFrame({"iteration": [0], "rm/val_accuracy": [None],
                                           "rm/gold_accuracy": [None]})).axes
    assert [t.get_text() for t in ax.texts] == ["no reward model yet: it is fitted in iteration 1"]
    assert ax.get_legend() is None and not ax.get_xticks().size  # no legend of nothing, no iteration −0.045


def test_reward_training_of_one_step_shows_a_point_at_a_whole_step():
    ax = plot_reward_training([{"step": 1, "train/loss": 0.74, "train/accuracy": 0.54}]).axes[0]
    train = [ln for ln in ax.lines if ln.get_label() == "train"][0]
    assert train.get_marker() == "o" and list(ax.get_xticks()) == [1]


def test_chosen_and_rejected_stay_apart_for_red_green_colour_blind_readers():
    """tab:green and tab:red (the old pair) differ by 0.07 under a deuteranopia simulation (Machado et al. 2009,
    severity 1, linear RGB); the histograms' pair must differ by far more."""
    from matplotlib.colors import to_rgb

    machado = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                        [-0.011820, 0.042940, 0.968881]])

    def seen(color):
        c = np.array(to_rgb(color))
        return np.clip(machado @ np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4), 0, 1)

    ax = plot_reward_histograms({"chosen": np.array([1.0, 2.0]), "rejected": np.array([0.0])}).axes[0]
    chosen, rejected = ax.patches[0].get_facecolor(), ax.patches[-1].get_facecolor()  # first: chosen, last: rejected
    assert np.linalg.norm(seen(chosen[:3]) - seen(rejected[:3])) > 0.15
    assert np.linalg.norm(seen("tab:green") - seen("tab:red")) < 0.1  # the check tells the old pair apart


def test_costs_name_units_and_keep_long_method_names_readable():
    from rlhf_lab.loop.plots import plot_costs

    table = pd.DataFrame({"method": [f"ppo learning_rate={k}e-05, a long setting name" for k in range(8)],
                          "win_rate_vs_initial": 0.6, "tokens_generated": 2000, "wall_time_s": 120.0,
                          "peak_memory_mb": 2900.0})
    axes = plot_costs(table).axes
    assert [ax.get_title() for ax in axes] == ["win rate vs the initial policy\n(gold; dashed: 0.5, no change)",
                                               "tokens generated", "wall time (s)", "peak memory (MB)"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == list(table["method"])  # horizontal, unrotated
    assert all(not [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()] for ax in axes[1:])


def test_frontier_draws_the_gold_gain_interval():
    from rlhf_lab.loop.plots import plot_frontier

    frontier = pd.DataFrame({"method": ["ppo", "ppo"], "kl": [0.0, 0.07], "gold_reward": [1.07, 1.18],
                             "proxy_reward": [0.06, 0.10], "gold_gain": [0.0, 0.107], "gold_gain_ci_low": [0.0, 0.017],
                             "gold_gain_ci_high": [0.0, 0.205]})
    gold, proxy = plot_frontier(frontier).axes
    (bars,) = gold.collections
    assert [sorted(y for _, y in seg) for seg in bars.get_segments()][1] == pytest.approx([1.18 - 0.09, 1.18 + 0.098])
    assert "95 % interval" in gold.get_title() and not proxy.collections  # the proxy has no interval to draw


def test_calibration_counts_pairs_in_whole_numbers():
    counts = plot_calibration(report(n=6)).axes[1]  # 12 pairs in both orders: the default ticks were 0.25 apart
    assert all(float(t).is_integer() for t in counts.get_yticks())
