# Solution to lesson 5, exercise 1: gold reward bought per judgment.
ev = run.evaluation()[["iteration", "judgments", "gold_reward"]].copy()
ev["new judgments"] = ev["judgments"].diff()
ev["gold gained"] = ev["gold_reward"].diff()
ev["gold per 100 judgments"] = 100 * ev["gold gained"] / ev["new judgments"]
ev.round(4)
