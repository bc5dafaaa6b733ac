# Solution to lesson 5, exercise 1: what each round bought.
ev = run.evaluation()
columns = ["iteration", "rm/learner_pairs", "rm/val_accuracy", "rm_gain_vs_previous", "rm_verdict_vs_previous",
           "gold_gain_vs_previous", "verdict_vs_previous"]
columns += [c for c in ("taste_gain_vs_previous", "taste_verdict_vs_previous") if c in ev]  # a stand-in judged
ev.loc[ev["iteration"] > 0, columns].round(3)
# A gain whose interval contains 0 reads "no detectable change": one round of a few PPO updates rarely moves more
# than the noise of 32 prompts x 4 replies, and the reward model's score is its own opinion, not your taste.
