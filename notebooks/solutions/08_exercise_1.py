# Solution to lesson 8's exercise: feedback strategy × pairs per round, two rounds a run.
grid = {"feedback.strategy": ["random", "disagreement"], "feedback.pairs_per_iteration": [4, 8] if smoke else [8, 24]}
iterations, x, hue, out = 2, "feedback.pairs_per_iteration", "feedback.strategy", "runs/ablation_strategy"
base = ablation.with_fields(demo_config(smoke=smoke, iterations=iterations), {"ppo_updates": ppo_updates})
df = sweep(base, grid, out, seeds=seeds)
display(df[[*grid, "seed", "judgments", "gold_reward", "gold_gain_vs_initial", "verdict_vs_initial"]].round(3))
display(plots.plot_sweep(df, x=x, y="gold_reward", hue=hue))
ablation.contrasts(out, "feedback.strategy").round(3)
# One row per number of pairs: disagreement minus random in final gold reward, paired by seed. With one seed its
# interval holds only the noise of the eval replies (the `interval` column says so): it leaves out how much the
# training itself varies from seed to seed, so even a "higher" says little. Rerun with seeds = [0, 1, 2] for a t
# interval over seeds. Gold per judgment: `ablation.sweep_history(out)` has gold_reward against `judgments`.
