# Solution to lesson 5, exercise 2: one more round, judged by you.
items = run.propose_items(run.iteration + 1)  # pairs from the policy of the last round (the same ones when rerun)
display(PairwiseRater(run.store, annotator, items))
# Judge the pairs above before running the rest: split the cell here (JupyterLab: Ctrl+Shift+-). Run at once, the
# rest finds nobody's judgments and the simulated learner judges the round (it says so).
run.run(iterations=run.iteration + 1)
for what, change in run.changes(since=run.iteration - 1).items():
    print(f"{what}, round {run.iteration} over round {run.iteration - 1}: {change}")
display(plots.plot_ppo_curves(run.ppo_metrics(), config.ppo_updates, config.ppo.kl_target,
                              score_label=f"score − {pessimism:g} × spread" if pessimism else "reward-model score"))
plots.plot_round_gains(run.evaluation())
# Read the new round's changes over the one before: does its reward model's score still rise, and does the taste (or
# your own reading of the replies, `sample_table(run.path)`) follow it, or is the verdict "no detectable change"?
